#!/usr/bin/env bash
# Tools some tests use besides the services (scripts/services/), from
# Debian's packages: the Prometheus project's own text parser (Python
# prometheus_client), which the live endpoint's tests read /metrics with,
# and Chromium, which loads the dashboard headless.
#
#   scripts/test-tools.sh install    # apt-get (sudo unless root); quick when present
#   scripts/test-tools.sh check      # exit 1, naming what is missing
set -euo pipefail

has_parser() {
    for python in ${MILLRACE_PYTHON:-} python3 /usr/bin/python3; do
        if "$python" -c 'import prometheus_client.parser' 2>/dev/null; then
            return 0
        fi
    done
    return 1
}

has_chromium() {
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null ||
        command -v google-chrome >/dev/null
}

# Debian packages of what is missing.
missing() {
    has_parser || echo python3-prometheus-client
    has_chromium || echo chromium
}

case ${1:-} in
install)
    packages=$(missing)
    if [ -z "$packages" ]; then
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt=(apt-get)
    if [ "$(id -u)" != 0 ]; then
        apt=(sudo -E apt-get)
    fi
    # The package lists of a fresh machine may be missing or stale.
    # shellcheck disable=SC2086
    "${apt[@]}" install -y -q $packages >/dev/null 2>&1 || {
        "${apt[@]}" update -q >/dev/null
        "${apt[@]}" install -y -q $packages >/dev/null
    }
    if [ -n "$(missing)" ]; then
        echo "test-tools.sh: still missing after install: $(missing | xargs)" >&2
        exit 1
    fi
    echo "test-tools.sh: installed $(echo "$packages" | xargs)" >&2
    ;;
check)
    if [ -n "$(missing)" ]; then
        echo "test-tools.sh: missing: $(missing | xargs) (scripts/test-tools.sh install)" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: $0 install|check" >&2
    exit 2
    ;;
esac
