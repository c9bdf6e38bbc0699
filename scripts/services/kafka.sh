#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft: broker and controller in one
# JVM, no ZooKeeper) on 127.0.0.1 for millrace's tests and benchmarks.
#
# Usage: scripts/services/kafka.sh COMMAND [args]
#   install                 fetch the broker and tool jars with Maven (once per version)
#   start                   install if needed, start the broker (or find it running) and
#                           print one line to stdout: MILLRACE_KAFKA_BOOTSTRAP=127.0.0.1:<port>
#                           so callers can:  eval "$(scripts/services/kafka.sh start)"
#   stop [--clean]          SIGTERM (SIGKILL after KAFKA_STOP_TIMEOUT s); keeps the data
#                           unless --clean, which also deletes the state dir
#   clean                   same as stop --clean
#   restart                 stop, then start on the same ports with the same data
#   status                  print the MILLRACE_KAFKA_BOOTSTRAP=... line and exit 0 if the
#                           broker runs and answers, exit 1 otherwise
#   topic-create NAME PARTS create a topic (replication 1) unless it exists
#   run-class CLASS [args]  run a Java class on the installed classpath, e.g.
#       org.apache.kafka.tools.TopicCommand --bootstrap-server B --list
#       org.apache.kafka.tools.ProducerPerformance --bootstrap-server B --topic T
#           --num-records N --record-size 100 --throughput -1
#           [--transactional-id ID --transaction-duration-ms MS]
#           (4.1 has no --bootstrap-server here: --producer-props bootstrap.servers=B)
#       org.apache.kafka.tools.ConsumerPerformance --bootstrap-server B --topic T
#           --num-records N [--group G]      (4.1: --messages N)
#       org.apache.kafka.tools.consumer.group.ConsumerGroupCommand   (kafka-consumer-groups)
#       org.apache.kafka.tools.TransactionsCommand                   (kafka-transactions)
#       org.apache.kafka.tools.ConsoleProducer                       (kafka-console-producer)
#       org.apache.kafka.tools.consumer.ConsoleConsumer              (kafka-console-consumer)
#       org.apache.kafka.tools.GetOffsetShell                        (kafka-get-offsets)
#       org.apache.kafka.tools.EndToEndLatency                       (kafka-e2e-latency)
#       org.apache.kafka.tools.MetadataQuorumCommand                 (kafka-metadata-quorum)
#       kafka.tools.StorageTool                                      (kafka-storage)
#
# Environment:
#   KAFKA_VERSION          Kafka release (default below); each version installs separately
#   XDG_CACHE_HOME         jars go to ${XDG_CACHE_HOME:-$HOME/.cache}/millrace/kafka-<version>/libs
#   MILLRACE_SERVICES_DIR  state (config, data, log, pid, ports) goes to
#                          ${MILLRACE_SERVICES_DIR:-/tmp/millrace-services}/kafka
#   KAFKA_HEAP_OPTS        broker heap (default -Xms256m -Xmx512m)
#   KAFKA_TOOL_HEAP_OPTS   heap of run-class tools (default -Xmx512m)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#   KAFKA_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL (default 30)
#
# Only the start/status line goes to stdout; all messages go to stderr.
# Needs java 17+, mvn (first install only; it reaches Maven Central), python3.
set -euo pipefail

# 4.3.2: the newest patch release of the newest 4.x line that has one (4.4.0
# also resolves, but is a .0 release); everything it needs is on Maven Central.
VERSION="${KAFKA_VERSION:-4.3.2}"
# Kafka logs through SLF4J 1.7 (slf4j-api 1.7.36 comes with kafka_2.13), whose
# log4j2 binding is log4j-slf4j-impl (not -slf4j2-impl). Its version is forced
# onto log4j-api/-core too (via the BOM) so the three always match; 2.25.5 is
# what kafka 4.3.2 itself depends on.
LOG4J_VERSION="${KAFKA_LOG4J_VERSION:-2.25.5}"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/millrace"
INSTALL_DIR="$CACHE_ROOT/kafka-$VERSION"
LIBS="$INSTALL_DIR/libs"
INSTALLED_MARKER="$INSTALL_DIR/.installed"
TOOLS_LOG4J="$INSTALL_DIR/tools-log4j2.properties"

# Absolute, so the broker's config does not depend on the caller's cwd.
SERVICES_DIR=$(realpath -m "${MILLRACE_SERVICES_DIR:-/tmp/millrace-services}")
STATE="$SERVICES_DIR/kafka"
DATA="$STATE/data"
CONFIG="$STATE/server.properties"
BROKER_LOG4J="$STATE/log4j2.properties"
LOG="$STATE/broker.log"
PIDFILE="$STATE/kafka.pid"
PORTSFILE="$STATE/ports"
BOOTSTRAP_FILE="$STATE/bootstrap"

START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
# Word-split on purpose: these hold several JVM options.
read -r -a BROKER_HEAP <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
read -r -a TOOL_HEAP <<<"${KAFKA_TOOL_HEAP_OPTS:--Xmx512m}"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

need() {
  command -v "$1" >/dev/null || die "$1 not found: $2"
}

# Writes stdin to $1 only if the content differs, through a temp file and a
# rename, so a JVM reading the file never sees it half-written.
write_file() {
  local path=$1 tmp
  tmp=$(mktemp "$path.XXXXXX")
  cat >"$tmp"
  if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$path"
  fi
}

# ---------------------------------------------------------------- install

install_kafka() {
  [[ -f $INSTALLED_MARKER ]] && return 0
  need java "install a JDK 17+ (apt-get install openjdk-17-jdk-headless)"
  need mvn "install Maven (apt-get install maven)"
  mkdir -p "$CACHE_ROOT"
  # Parallel callers (several test binaries) must not download into the same
  # directory at once: the second one waits, then finds the marker.
  exec 8>"$CACHE_ROOT/kafka-$VERSION.lock"
  flock -w 900 8 || die "timed out waiting for another install of kafka $VERSION"
  if [[ -f $INSTALLED_MARKER ]]; then
    exec 8>&-
    return 0
  fi

  log "installing kafka $VERSION into $INSTALL_DIR (Maven, first time only)"
  local started=$SECONDS work
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $work now: it is local to this function
  trap "rm -rf '$work'" EXIT
  # A throwaway project whose only purpose is its dependency list. Outside
  # the clone, so no Maven config of the project (if any) can interfere.
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>millrace.services</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$VERSION</version>
  <packaging>pom</packaging>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>org.apache.logging.log4j</groupId>
        <artifactId>log4j-bom</artifactId>
        <version>$LOG4J_VERSION</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <!-- the broker (kafka.Kafka) and kafka.tools.StorageTool -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$VERSION</version>
    </dependency>
    <!-- TopicCommand, ProducerPerformance, ConsumerPerformance, ... -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$VERSION</version>
    </dependency>
    <!-- Without an SLF4J binding the broker logs nothing at all. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
    </dependency>
  </dependencies>
</project>
EOF
  # Copy into a fresh directory and move it into place only when complete,
  # so an interrupted download never looks installed.
  rm -rf "$INSTALL_DIR"
  mkdir -p "$INSTALL_DIR"
  # The sed drops the stray ANSI resets that Debian's Maven 3.8 prints even
  # with -q -B (no flag turns them off); pipefail keeps mvn's exit status.
  if ! mvn -q -B -f "$work/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="$work/libs" 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g' >&2; then
    die "mvn could not fetch kafka $VERSION (is org.apache.kafka:kafka_2.13:$VERSION on Maven Central?)"
  fi
  [[ -f $work/libs/kafka_2.13-$VERSION.jar ]] || die "mvn ran but kafka_2.13-$VERSION.jar is missing"
  mv "$work/libs" "$LIBS"
  write_tools_log4j
  date -u +%FT%TZ >"$INSTALLED_MARKER"
  rm -rf "$work"
  trap - EXIT
  exec 8>&-
  log "installed kafka $VERSION: $(find "$LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$LIBS" | cut -f1), $((SECONDS - started)) s"
}

# Tools (run-class) log warnings and errors to stderr, so that their stdout
# (e.g. ProducerPerformance's summary) stays clean. Without any config log4j2
# would print only errors, and on stdout.
write_tools_log4j() {
  write_file "$TOOLS_LOG4J" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
EOF
}

classpath() { printf '%s/*' "$LIBS"; }

# The java command line for a tool class from the installed classpath, as an
# array (usable under `timeout`, which cannot run a shell function).
tool_cmd() {
  [[ -f $TOOLS_LOG4J ]] || write_tools_log4j
  TOOL_CMD=(java "${TOOL_HEAP[@]}" -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$(classpath)")
}

java_tool() {
  tool_cmd
  "${TOOL_CMD[@]}" "$@"
}

# ---------------------------------------------------------------- helpers

# True if something accepts TCP connections on 127.0.0.1:$1.
port_answers() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Prints two free ports, "BROKER CONTROLLER". They are taken below the
# kernel's ephemeral range: an outgoing connection (e.g. a test's client
# reconnecting while the broker is restarted) can never be handed one of them
# as its local port, so a restart on the same ports cannot find them taken.
pick_ports() {
  python3 - <<'EOF'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
low = max(low, 12000)
chosen = []
for _ in range(1000):
    port = random.randrange(10000, low)
    if port in chosen:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    chosen.append(port)
    if len(chosen) == 2:
        print(*chosen)
        break
else:
    raise SystemExit("no free ports found")
EOF
}

# Sets BROKER_PORT and CONTROLLER_PORT: the saved ones (restart keeps the
# address, and the KRaft voter record holds the controller port), or new ones.
load_ports() {
  if [[ -f $PORTSFILE ]]; then
    # shellcheck source=/dev/null
    source "$PORTSFILE"
  else
    read -r BROKER_PORT CONTROLLER_PORT < <(pick_ports)
    printf 'BROKER_PORT=%s\nCONTROLLER_PORT=%s\n' "$BROKER_PORT" "$CONTROLLER_PORT" >"$PORTSFILE"
  fi
  [[ ${BROKER_PORT:-} =~ ^[0-9]+$ && ${CONTROLLER_PORT:-} =~ ^[0-9]+$ ]] ||
    die "bad $PORTSFILE; run '$0 clean'"
}

bootstrap() { printf '127.0.0.1:%s' "$BROKER_PORT"; }

# Prints the pid of our broker if it is alive. A pid file alone is not enough:
# after a reboot or crash the pid may belong to some other process.
broker_pid() {
  [[ -f $PIDFILE ]] || return 1
  local pid
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $CONFIG" || return 1
  printf '%s' "$pid"
}

log_tail() {
  log "last lines of $LOG:"
  tail -n 60 "$LOG" >&2 2>/dev/null || true
}

# Ready = a client can list topics: the broker has caught up with the
# metadata log, is unfenced and serves requests (an open port is not enough).
# With "launched" as $2, a broker that never becomes ready is killed, so no
# half-started JVM is left behind for the next start to find.
wait_ready() {
  local pid=$1 launched=${2:-} deadline=$((SECONDS + START_TIMEOUT))
  tool_cmd
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker (pid $pid) exited during startup"
      log_tail
      exit 1
    fi
    if port_answers "$BROKER_PORT" &&
      timeout 30 "${TOOL_CMD[@]}" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$(bootstrap)" --list >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  log "broker (pid $pid) not ready after ${START_TIMEOUT} s"
  log_tail
  if [[ $launched == launched ]]; then
    log "killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
  exit 1
}

# Serializes start/stop/restart/clean of the one broker per state dir.
# Idempotent, so restart holds it across its stop and start halves.
STATE_LOCKED=
lock_state() {
  [[ -n $STATE_LOCKED ]] && return 0
  mkdir -p "$SERVICES_DIR"
  exec 9>"$SERVICES_DIR/kafka.lock"
  flock -w 300 9 || die "timed out waiting for another kafka.sh start/stop"
  STATE_LOCKED=1
}

# ---------------------------------------------------------------- config

write_config() {
  write_file "$CONFIG" <<EOF
# Written by scripts/services/kafka.sh on every start; edits are overwritten.
# One JVM is both the KRaft controller and the broker.
process.roles=broker,controller
node.id=1
# Dynamic quorum (KIP-853, the 4.x way): one voter, recorded by
# 'kafka-storage format --standalone'; controller.quorum.voters must not be set.
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$BROKER_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$BROKER_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA

# Tests create their topics explicitly (a typo must fail, not create a topic).
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics on one node: replication 1. One partition each is plenty
# for tests and makes the first consumer group / transaction and a restart
# (the coordinators reload these topics) faster than the default 50.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

# Consumer groups: no 3 s wait for more members before the first rebalance.
group.initial.rebalance.delay.ms=0
# Transactions: a producer may ask for a transaction.timeout.ms of up to 1 h
# (e.g. one open transaction per checkpoint interval); the default cap is 15 min.
transaction.max.timeout.ms=3600000

# Small machine (2 cores): fewer threads than the defaults.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF

  # The broker logs INFO and up to stdout, which goes to $LOG (so a JVM crash
  # message lands in the same file). Kafka's own log4j2.yaml is not in the
  # Maven jars, and without a config log4j2 prints only errors.
  write_file "$BROKER_LOG4J" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = STDOUT
# Per-request and per-partition chatter, as Kafka's shipped config has it.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
EOF
}

# Formats the data dir once; afterwards meta.properties exists and the data
# (topics, offsets, transactions) survives restarts.
format_storage() {
  [[ -f $DATA/meta.properties ]] && return 0
  local cluster_id
  cluster_id=$(java_tool kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  [[ -n $cluster_id ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
  log "formatting $DATA (cluster id $cluster_id)"
  # Its long report goes to the broker log, and to the terminal only on failure.
  if ! java_tool kafka.tools.StorageTool format --config "$CONFIG" \
    --cluster-id "$cluster_id" --standalone >>"$LOG" 2>&1; then
    log_tail
    die "kafka.tools.StorageTool format failed"
  fi
}

# ---------------------------------------------------------------- commands

cmd_install() {
  install_kafka
  log "kafka $VERSION is installed in $INSTALL_DIR"
}

cmd_start() {
  need java "install a JDK 17+"
  need python3 "needed to pick free ports"
  install_kafka
  lock_state
  mkdir -p "$STATE"
  load_ports

  local pid
  if pid=$(broker_pid); then
    # Running (perhaps still starting, from a parallel caller): just make sure
    # it answers.
    wait_ready "$pid"
    log "already running (pid $pid) at $(bootstrap)"
  else
    rm -f "$PIDFILE"
    local port
    for port in "$BROKER_PORT" "$CONTROLLER_PORT"; do
      if port_answers "$port"; then
        die "port $port (saved in $PORTSFILE) is in use by another process; stop it or run '$0 clean'"
      fi
    done
    write_config
    format_storage
    printf '\n==== %s: starting kafka %s at %s\n' "$(date -u +%FT%TZ)" "$VERSION" "$(bootstrap)" >>"$LOG"
    # setsid + nohup: the broker outlives this script and its terminal/session.
    # The inner shell writes its own pid, then becomes java (exec), so the pid
    # file names the JVM even if setsid forks. fds 8/9 (our locks) are closed
    # for it, or the broker would hold the locks forever. stdout is redirected,
    # or a caller's $(...) would wait for the broker to exit.
    # shellcheck disable=SC2016 # $$, $1 and $@ are the inner shell's
    nohup setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launch "$PIDFILE" \
      java "${BROKER_HEAP[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$BROKER_LOG4J" \
      -cp "$(classpath)" kafka.Kafka "$CONFIG" \
      >>"$LOG" 2>&1 </dev/null 8>&- 9>&- &
    local tries=50
    while [[ ! -s $PIDFILE ]] && ((tries-- > 0)); do
      sleep 0.1
    done
    [[ -s $PIDFILE ]] || die "broker launch wrote no pid file"
    pid=$(<"$PIDFILE")
    log "started kafka $VERSION (pid $pid), waiting up to ${START_TIMEOUT} s; log: $LOG"
    wait_ready "$pid" launched
    log "ready at $(bootstrap)"
  fi
  bootstrap >"$BOOTSTRAP_FILE"
  echo "MILLRACE_KAFKA_BOOTSTRAP=$(bootstrap)"
}

cmd_stop() {
  local clean=${1:-}
  [[ -z $clean || $clean == --clean ]] || die "usage: $0 stop [--clean]"
  lock_state
  local pid
  if pid=$(broker_pid); then
    log "stopping kafka (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      # Data survives, but the next start takes ~10 s longer: the controller
      # only accepts the new broker once the old one's session (9 s) expired.
      log "still running after ${STOP_TIMEOUT} s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    log "stopped"
  else
    log "not running"
  fi
  rm -f "$PIDFILE"
  if [[ $clean == --clean ]]; then
    # Guard against a surprising MILLRACE_SERVICES_DIR: only ever .../kafka.
    [[ $STATE == */kafka && -n ${SERVICES_DIR} ]] || die "refusing to delete $STATE"
    rm -rf "$STATE"
    log "deleted $STATE"
  fi
}

cmd_status() {
  [[ -f $PORTSFILE ]] || {
    log "not running (no state in $STATE)"
    exit 1
  }
  load_ports
  local pid
  if pid=$(broker_pid) && port_answers "$BROKER_PORT"; then
    log "running (pid $pid)"
    echo "MILLRACE_KAFKA_BOOTSTRAP=$(bootstrap)"
  else
    log "not running"
    exit 1
  fi
}

cmd_topic_create() {
  (($# == 2)) || die "usage: $0 topic-create NAME PARTITIONS"
  [[ $2 =~ ^[0-9]+$ ]] || die "partitions must be a number: $2"
  if [[ ! -f $PORTSFILE ]] || ! broker_pid >/dev/null; then
    die "kafka is not running; run '$0 start'"
  fi
  load_ports
  install_kafka
  java_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" \
    --create --if-not-exists --topic "$1" --partitions "$2" --replication-factor 1 >&2
}

cmd_run_class() {
  (($# >= 1)) || die "usage: $0 run-class CLASS [args...]"
  need java "install a JDK 17+"
  install_kafka
  java_tool "$@"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

main() {
  local cmd=${1:-}
  (($# > 0)) && shift
  case $cmd in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop "$@" ;;
    clean) cmd_stop --clean ;;
    restart)
      cmd_stop
      cmd_start
      ;;
    status) cmd_status ;;
    topic-create) cmd_topic_create "$@" ;;
    run-class) cmd_run_class "$@" ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
  esac
}

main "$@"
