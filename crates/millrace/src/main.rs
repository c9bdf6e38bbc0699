//! The `millrace` command line.
//!
//! `millrace demo` runs a real pipeline on embedded defaults — the Nexmark
//! generator → keyed event-time window (or a stateless pass-through) → a
//! sink — and ends with the run summary. Errors print one line naming the
//! operator and the cause, and exit non-zero.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use millrace::connectors::nexmark::{NexmarkConfig, NexmarkKind, NexmarkSource};
use millrace::demo::{DemoOptions, DemoQuery, DemoSink};
use millrace::generate::{GenFormat, write_events};
#[cfg(feature = "kafka")]
use millrace::kafka_tools;

#[derive(Parser)]
#[command(
    name = "millrace",
    version,
    about = "A low-latency stream processing engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a built-in pipeline on the Nexmark generator and print a summary.
    Demo(DemoArgs),
    /// Run a SQL pipeline file (CREATE TABLE / CREATE VIEW / INSERT INTO / SET).
    Run(RunArgs),
    /// Print the dataflow a SQL pipeline file plans to, without running it.
    Explain(SqlArgs),
    /// Measure Nexmark SQL queries: throughput, then open-loop latency at
    /// fractions of the maximum rate, for fixed batch sizes and the adaptive
    /// controller. Prints Markdown tables; `--json` writes everything.
    ///
    /// With the defaults it takes about 45 minutes: per query, 6 batch
    /// policies × 5 runs × (4 s of throughput + 3 loads × 8 s of latency),
    /// plus the probes and the rate search; 3 queries. `--repeat 1 --batch
    /// adaptive --queries q7` takes about a minute.
    Bench(BenchArgs),
    /// Write generator events as JSON lines or CSV (to feed other engines the same input).
    Gen {
        #[command(subcommand)]
        generator: GenCommand,
    },
    /// Kafka tools for benchmarks: write a file to a topic (paced or not),
    /// measure how late a topic's messages become visible.
    #[cfg(feature = "kafka")]
    Kafka {
        #[command(subcommand)]
        tool: KafkaCommand,
    },
}

#[cfg(feature = "kafka")]
#[derive(Subcommand)]
enum KafkaCommand {
    /// Write each line of a file as one message (no key; Kafka spreads them).
    Produce {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        file: PathBuf,
        /// Messages per second, open loop (each message stamped with the
        /// time it was due); default: as fast as possible, stamped when sent.
        #[arg(long)]
        rate: Option<f64>,
        /// Set this field of each JSON line to the time it was due (ms since
        /// 1970), so event time follows the wall clock; needs --rate.
        #[arg(long)]
        event_time: Option<String>,
    },
    /// Read a topic (read_committed) from its end for a while; print
    /// percentiles of (time visible − a field of each JSON message, in ms).
    Latency {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        /// The field holding ms since 1970 (e.g. the input's Kafka timestamp).
        #[arg(long)]
        field: String,
        /// Read for at most this long.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Stop once this many messages have been read.
        #[arg(long)]
        expect: Option<u64>,
    },
}

#[derive(Parser)]
struct SqlArgs {
    /// The pipeline file; `-` reads it from standard input.
    file: PathBuf,
    /// Override a setting or a table option of the file (repeatable), e.g.
    /// `--set parallelism=1` or `--set bid.events=100000`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    settings: Vec<String>,
}

impl SqlArgs {
    /// `millrace run -`: the SQL comes on standard input.
    fn reads_stdin(&self) -> bool {
        self.file.as_os_str() == "-"
    }

    /// The pipeline's name: the file's, without `.sql`.
    fn stem(&self) -> String {
        match self.file.file_stem() {
            _ if self.reads_stdin() => "stdin".into(),
            Some(s) => s.to_string_lossy().into_owned(),
            None => "pipeline".into(),
        }
    }

    /// How messages name the file.
    fn name(&self) -> String {
        if self.reads_stdin() {
            "<stdin>".into()
        } else {
            self.file.display().to_string()
        }
    }
}

#[derive(Parser)]
struct RunArgs {
    #[command(flatten)]
    sql: SqlArgs,
    /// Print the summary as one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Stop the sources after this many seconds and drain, as Ctrl-C does.
    #[arg(long, value_name = "SECONDS")]
    max_seconds: Option<f64>,
    /// With checkpoints on: start over instead of resuming from the latest
    /// checkpoint (the old checkpoints stay until retention removes them).
    #[arg(long, conflicts_with = "from_checkpoint")]
    fresh: bool,
    /// With checkpoints on: resume from this checkpoint instead of the latest.
    #[arg(long, value_name = "ID")]
    from_checkpoint: Option<u64>,
    /// Serve live metrics (`/metrics`, Prometheus) on HOST:PORT, or `off`.
    /// Default: the file's `SET http`, else 127.0.0.1:9464 (any free port
    /// when that one is taken).
    #[cfg(feature = "http")]
    #[arg(long, value_name = "HOST:PORT|off", env = "MILLRACE_HTTP")]
    http: Option<String>,
    /// No progress line (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
}

#[derive(Parser)]
struct BenchArgs {
    /// Queries: names in `--dir` (q0) or paths to SQL files.
    #[arg(long, value_delimiter = ',', default_value = "q0,q5,q7")]
    queries: Vec<String>,
    /// Where query names are looked up.
    #[arg(long, default_value = "queries/nexmark")]
    dir: PathBuf,
    /// Batch policies to compare: fixed sizes, `adaptive`, and
    /// `adaptive-src` (adaptive with exchanges that never merge).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,64,1024,8192,adaptive-src,adaptive"
    )]
    batch: Vec<String>,
    /// Runs of each measurement, taking the policies in turn; the tables
    /// show medians (the lower middle one for an even count).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Open-loop loads, as fractions of each query's maximum rate.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,0.8")]
    fractions: Vec<f64>,
    /// Seconds each throughput run aims at, and each run of the
    /// sustained-rate search lasts.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Seconds per latency run (open loop at each fraction).
    #[arg(long, default_value_t = 8.0)]
    latency_seconds: f64,
    /// The adaptive policy's latency target.
    #[arg(long, default_value = "1ms", value_parser = millrace::demo::parse_duration)]
    latency_target: std::time::Duration,
    /// Rows entering this early in a run are processed but not measured.
    #[arg(long, default_value = "500ms", value_parser = millrace::demo::parse_duration)]
    warmup: std::time::Duration,
    /// The source table whose `events` and `rate` the bench sets.
    #[arg(long, default_value = "bid")]
    source: String,
    /// A setting or table option for every run (repeatable), e.g. `parallelism=1`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    settings: Vec<String>,
    /// Also write every number as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A query whose keyed window state is measured once.
    #[arg(long, default_value = "queries/bench/iot_window_state.sql")]
    state_query: PathBuf,
    /// Skip the state measurement.
    #[arg(long)]
    no_state: bool,
}

#[derive(Subcommand)]
enum GenCommand {
    /// Nexmark events of one kind.
    Nexmark {
        /// Which events.
        #[arg(long, value_enum, default_value_t = KindArg::Bid)]
        kind: KindArg,
        /// Total events of the global sequence (all kinds); e.g. bids are 92% of them.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Event-time rate, events per second of event time.
        #[arg(long, default_value_t = 10_000.0)]
        event_rate: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = FormatArg::Json)]
        format: FormatArg,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Bid,
    Person,
    Auction,
    /// Every event: `event_type` plus `person` / `auction` / `bid` objects (JSON only).
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Json,
    Csv,
}

#[derive(Parser)]
struct DemoArgs {
    /// What the pipeline computes.
    #[arg(long, value_enum, default_value_t = QueryArg::Tumble)]
    query: QueryArg,
    /// Total Nexmark events to generate (all kinds; bids are 92% of them).
    /// 0 = unbounded: run until Ctrl-C, which drains and prints the summary.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Event-time rate of the generator, events per second of event time.
    #[arg(long, default_value_t = 10_000.0)]
    event_rate: f64,
    /// Emit at this many events/s (open-loop, latency counts from each
    /// event's due time); 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Parallelism of sources and operators (default: one per core).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Do not pin worker threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// Rows per source batch (the most, with --latency-target).
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// Size batches adaptively to keep latency near this target (e.g. 1ms).
    #[arg(long, value_parser = millrace::demo::parse_duration)]
    latency_target: Option<std::time::Duration>,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where results go.
    #[arg(long, value_enum, default_value_t = SinkArg::Console)]
    sink: SinkArg,
    /// Output file for `--sink jsonl`.
    #[arg(long, default_value = "millrace-out.jsonl")]
    out: PathBuf,
    /// Console sink: rows shown at most.
    #[arg(long, default_value_t = 20)]
    max_rows: usize,
    /// Print the dataflow plan before running.
    #[arg(long)]
    explain: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum QueryArg {
    /// Bids per channel in 10 s tumbling windows: count, sum, min, max, avg price.
    Tumble,
    /// The same over 10 s windows sliding every 2 s.
    Hop,
    /// Every bid passed through unchanged (Nexmark q0).
    Passthrough,
}

#[derive(Clone, Copy, ValueEnum)]
enum SinkArg {
    Console,
    Jsonl,
    Discard,
}

/// Plans a SQL file; errors name the file, line and column.
fn plan_sql(args: &SqlArgs) -> Result<millrace::sql::SqlPipeline, String> {
    plan_sql_with(args, millrace::sql::PlanOptions::default())
}

/// Plans a SQL file to run: checkpoints (when the file turns them on) go
/// to `.millrace/<file stem>/` beside the file unless it sets
/// `checkpoint_dir`, and the run resumes as `args` say.
fn plan_run(args: &RunArgs) -> Result<millrace::sql::SqlPipeline, String> {
    use millrace::runtime::checkpoint::{Announce, StartFrom};
    let file = &args.sql.file;
    let stem = args.sql.stem();
    let beside = file.parent().unwrap_or(std::path::Path::new(""));
    let options = millrace::sql::PlanOptions {
        checkpoint_dir: Some(beside.join(".millrace").join(stem)),
        start_from: Some(match (args.fresh, args.from_checkpoint) {
            (true, _) => StartFrom::Fresh,
            (false, Some(id)) => StartFrom::Checkpoint(id),
            (false, None) => StartFrom::Latest,
        }),
        announce: Some(Announce(std::sync::Arc::new(|line: &str| {
            eprintln!("{line}")
        }))),
        ..Default::default()
    };
    let job = plan_sql_with(&args.sql, options)?;
    if (args.fresh || args.from_checkpoint.is_some()) && job.config().checkpoint.is_none() {
        return Err(format!(
            "{}: --fresh and --from-checkpoint need checkpoints (SET checkpoint_interval = '1s')",
            args.sql.name()
        ));
    }
    Ok(job)
}

fn plan_sql_with(
    args: &SqlArgs,
    options: millrace::sql::PlanOptions,
) -> Result<millrace::sql::SqlPipeline, String> {
    let path = args.name();
    let text = if args.reads_stdin() {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("{path}: {e}"))?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| format!("{path}: {e}"))?
    };
    let mut overrides = Vec::new();
    for s in &args.settings {
        let Some((name, value)) = s.split_once('=') else {
            return Err(format!("--set {s}: expected NAME=VALUE"));
        };
        overrides.push((name.trim().to_string(), value.trim().to_string()));
    }
    let options = millrace::sql::PlanOptions {
        overrides,
        ..options
    };
    millrace::sql::SqlPipeline::plan_with(&text, &options).map_err(|e| match (e.line, e.column) {
        (Some(l), Some(c)) => format!("{path}:{l}:{c}: {}", e.message),
        (Some(l), None) => format!("{path}:{l}: {}", e.message),
        _ => format!("{path}: {}", e.message),
    })
}

/// The address `millrace run` serves live metrics on when neither the
/// command line nor the file says.
#[cfg(feature = "http")]
const DEFAULT_HTTP: &str = "127.0.0.1:9464";

/// Starts the live endpoint as `--http`, else the file's `SET http`, else
/// on `DEFAULT_HTTP` or, when another process has it, any free port. An
/// address the user chose that is taken is an error.
#[cfg(feature = "http")]
fn live_endpoint(
    args: &RunArgs,
    job: &millrace::sql::SqlPipeline,
) -> Result<Option<millrace::monitor::Monitor>, String> {
    use millrace::monitor::alerts::Rule;
    use millrace::monitor::{Alerting, Monitor};
    use millrace::sql::HttpSetting;
    let chosen = match args.http.as_deref() {
        Some(a) if ["off", "none", "false"].contains(&a.to_lowercase().as_str()) => {
            Some(HttpSetting::Off)
        }
        Some(a) => Some(HttpSetting::At(a.to_string())),
        None => job.http().cloned(),
    };
    let name = args.sql.stem();
    let target = job.config().latency_target;
    let alerting = Alerting {
        rules: (job.alerts().iter())
            .map(|(name, rule)| Rule::parse(name, rule, target))
            .collect::<Result<_, _>>()?,
        webhook: job.alert_webhook().map(str::to_string),
    };
    let monitor = match chosen {
        Some(HttpSetting::Off) if !job.alerts().is_empty() => {
            return Err(
                "alerts run with the live endpoint: turn it on (--http or SET http)".into(),
            );
        }
        Some(HttpSetting::Off) => return Ok(None),
        Some(HttpSetting::At(addr)) => Monitor::start(&addr, &name, job.live(), alerting)?,
        None => Monitor::start(DEFAULT_HTTP, &name, job.live(), alerting.clone())
            .or_else(|_| Monitor::start("127.0.0.1:0", &name, job.live(), alerting))?,
    };
    eprintln!("live metrics: http://{}/metrics", monitor.addr());
    Ok(Some(monitor))
}

/// Ctrl-C once: stop the sources and drain (windows fire, the summary
/// prints). Twice: exit at once.
fn drain_on_ctrl_c(stop: millrace::runtime::StopHandle) {
    let pressed = std::sync::atomic::AtomicBool::new(false);
    let _ = ctrlc::set_handler(move || {
        if pressed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping: draining the pipeline (Ctrl-C again to quit at once)");
        stop.stop();
    });
}

/// `millrace bench`: runs the measurements, prints the tables.
fn bench(a: BenchArgs) -> Result<(), String> {
    use millrace::bench::{self, BenchOptions, Policy};
    let queries = a
        .queries
        .iter()
        .map(|q| {
            let path = PathBuf::from(q);
            if path.extension().is_some() || path.components().count() > 1 {
                path
            } else {
                a.dir.join(format!("{q}.sql"))
            }
        })
        .collect::<Vec<_>>();
    for q in &queries {
        if !q.is_file() {
            return Err(format!("{}: no such query file", q.display()));
        }
    }
    if let Some(f) = a.fractions.iter().find(|f| !(**f > 0.0 && f.is_finite())) {
        return Err(format!("--fractions: {f} is not a positive fraction"));
    }
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err("--seconds must be positive".into());
    }
    if !(a.latency_seconds > 0.0 && a.latency_seconds.is_finite()) {
        return Err("--latency-seconds must be positive".into());
    }
    let options = BenchOptions {
        queries,
        policies: a
            .batch
            .iter()
            .map(|p| Policy::parse(p))
            .collect::<Result<_, _>>()?,
        fractions: a.fractions,
        seconds: a.seconds,
        latency_seconds: a.latency_seconds,
        repeat: a.repeat.max(1),
        latency_target: a.latency_target,
        warmup: a.warmup,
        source: a.source,
        settings: a.settings,
        state_query: (!a.no_state).then_some(a.state_query),
        exe: std::env::current_exe()
            .map_err(|e| format!("cannot find the millrace binary: {e}"))?,
    };
    let machine = bench::machine();
    eprintln!("machine: {machine}");
    if let Some(q) = options.state_query.as_ref().filter(|q| !q.is_file()) {
        return Err(format!(
            "{}: no such query file (or pass --no-state)",
            q.display()
        ));
    }
    let results = bench::run(&options, |line| eprintln!("{line}"))?;
    let state = match &options.state_query {
        Some(q) => bench::measure_state(&options, q)?,
        None => Vec::new(),
    };
    println!("## Targets\n\n{}", bench::targets_table(&results, &state));
    println!(
        "## Batch policies compared (medians of {} runs: events/s as fast as possible; p99 open-loop at fractions of the query's maximum)\n\n{}",
        options.repeat,
        bench::comparison_table(&results)
    );
    println!(
        "## Adaptive against the best fixed size (medians of {} runs each)\n\n{}",
        options.repeat,
        bench::adaptive_table(&results)
    );
    if bench::has_few_rows(&results) {
        println!(
            "A p99 with rows beside it is over fewer than {} measured rows a run (the median of the runs' counts): each such run's p99 is its largest latency.\n",
            bench::FEW_ROWS
        );
    }
    println!("## Per query\n");
    for q in &results {
        println!("{}", bench::query_tables(q));
    }
    if !state.is_empty() {
        println!("## Keyed state\n\n{}", bench::state_table(&state));
    }
    if let Some(path) = &a.json {
        let report = bench::to_json(&options, &results, &state, &machine);
        std::fs::write(path, format!("{report:#}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

// mimalloc rather than the system allocator: glibc's returned Arrow's
// batch-sized buffers to the OS and faulted them back in on every batch
// once batch sizes had ramped up.
// `main` also has it keep freed memory, in 4 KiB pages (src/allocator.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `millrace run … | head`: when whoever reads the output goes away, end
/// as other command-line tools do, by the default action of SIGPIPE (Rust
/// ignores it, so a print to the closed pipe would panic or fail the run).
/// Sockets are not affected: Rust's and librdkafka's sends never raise it
/// (MSG_NOSIGNAL; librdkafka's threads block every signal), and the live
/// endpoint's threads block it (`monitor::keep_sigpipe_from_this_thread`).
/// An ended run is a crash to recovery: checkpoints and exactly-once sinks
/// are built for it.
fn end_quietly_when_the_reader_leaves() {
    #[cfg(unix)]
    // SAFETY: called first thing on the main thread, before any other
    // thread exists; it only resets one signal's disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    millrace::allocator::configure();
    end_quietly_when_the_reader_leaves();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let job = match plan_run(&args) {
                Ok(job) => job,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            drain_on_ctrl_c(job.stop_handle());
            if let Some(limit) = args.max_seconds {
                let stop = job.stop_handle();
                let limit = std::time::Duration::from_secs_f64(limit.max(0.0));
                std::thread::spawn(move || {
                    std::thread::sleep(limit);
                    stop.stop();
                });
            }
            #[cfg(feature = "http")]
            let _monitor = match live_endpoint(&args, &job) {
                Ok(monitor) => monitor,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let progress = (!args.quiet)
                .then(|| millrace::progress::Progress::start(job.live()))
                .flatten();
            let result = job.run();
            drop(progress);
            match result {
                Ok(summary) if args.json => {
                    println!("{}", millrace::summary_json::summary_json(&summary));
                    ExitCode::SUCCESS
                }
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain(args) => {
            match plan_sql(&args).and_then(|job| job.explain().map_err(|e| e.to_string())) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "kafka")]
        Command::Kafka { tool } => {
            let done = match tool {
                KafkaCommand::Produce {
                    bootstrap,
                    topic,
                    file,
                    rate,
                    event_time,
                } => kafka_tools::produce_file(
                    &bootstrap,
                    &topic,
                    &file,
                    rate,
                    event_time.as_deref(),
                )
                .map(|(n, secs)| {
                    eprintln!(
                        "{n} messages to {topic} in {secs:.2} s ({:.0}/s)",
                        n as f64 / secs.max(1e-9)
                    )
                }),
                KafkaCommand::Latency {
                    bootstrap,
                    topic,
                    field,
                    seconds,
                    expect,
                } => kafka_tools::print_latency(&bootstrap, &topic, &field, seconds, expect),
            };
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench(args) => match bench(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Gen {
            generator:
                GenCommand::Nexmark {
                    kind,
                    events,
                    event_rate,
                    seed,
                    format,
                    out,
                },
        } => {
            let config = NexmarkConfig {
                seed,
                events: Some(events),
                event_rate,
                ..NexmarkConfig::default()
            };
            let format = match format {
                FormatArg::Json => GenFormat::Json,
                FormatArg::Csv => GenFormat::Csv,
            };
            let source = match kind {
                KindArg::Bid => NexmarkSource::new(NexmarkKind::Bid, config),
                KindArg::Person => NexmarkSource::new(NexmarkKind::Person, config),
                KindArg::Auction => NexmarkSource::new(NexmarkKind::Auction, config),
                KindArg::All if format == GenFormat::Csv => {
                    eprintln!(
                        "error: --kind all has nested records; use --format json (or one kind for CSV)"
                    );
                    return ExitCode::FAILURE;
                }
                KindArg::All => NexmarkSource::all(config),
            };
            let result = match &out {
                Some(path) => std::fs::File::create(path)
                    .map_err(|e| millrace::core::Error::io(path, e))
                    .and_then(|f| write_events(&source, format, &mut std::io::BufWriter::new(f))),
                None => write_events(&source, format, &mut std::io::stdout().lock()),
            };
            match result {
                Ok(rows) => {
                    if let Some(path) = out {
                        eprintln!("wrote {rows} rows to {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo(a) => {
            let options = DemoOptions {
                query: match a.query {
                    QueryArg::Tumble => DemoQuery::Tumble,
                    QueryArg::Hop => DemoQuery::Hop,
                    QueryArg::Passthrough => DemoQuery::Passthrough,
                },
                events: a.events,
                event_rate: a.event_rate,
                emit_rate: (a.rate > 0.0).then_some(a.rate),
                parallelism: a.parallelism,
                workers: a.workers,
                batch_size: a.batch_size,
                latency_target: a.latency_target,
                pin_workers: !a.no_pin,
                seed: a.seed,
                sink: match a.sink {
                    SinkArg::Console => DemoSink::Console {
                        max_rows: a.max_rows,
                    },
                    SinkArg::Jsonl => DemoSink::JsonLines(a.out),
                    SinkArg::Discard => DemoSink::Discard,
                },
            };
            match millrace::demo::run(&options, a.explain, drain_on_ctrl_c) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
