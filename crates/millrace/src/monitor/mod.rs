//! The live endpoint of a running pipeline (`SET http`, `millrace run
//! --http`, docs/observability.md): `/metrics` in the Prometheus text
//! format, the dashboard at `/` (one page embedded in the binary, plain SVG)
//! and the JSON it draws from at `/api/state`. It runs on two threads of its
//! own, never on a worker: one serves HTTP, one samples the run every second
//! (recent latency percentiles, the dashboard's history). Both only read
//! what the workers publish (`millrace_runtime::live`).

pub mod alerts;
mod history;
mod prometheus;

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use hdrhistogram::Histogram;
use history::History;

use crate::runtime::trace::LatencyBreakdown;
use crate::runtime::{LiveAttempt, LiveRun, OperatorSummary, RunSummary};
use crate::summary_json::breakdown_json;
use alerts::{Event, Rule, Signals};

/// How often the sampler reads the latency histogram.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The window of the recent latency percentiles.
pub const RECENT_WINDOW: Duration = Duration::from_secs(10);
const RECENT_QUANTILES: [f64; 3] = [0.5, 0.99, 0.999];

/// Latency percentiles over the last `window` (ns; empty without rows),
/// and what the traces of the window say the p50 and p99 were made of.
#[derive(Debug, Clone)]
pub struct RecentLatency {
    pub window: Duration,
    pub quantiles: Vec<(f64, u64)>,
    pub breakdown: Option<LatencyBreakdown>,
}

/// Alert rules and where their events go (`alerts.rs`).
#[derive(Default, Clone)]
pub struct Alerting {
    pub rules: Vec<Rule>,
    /// `http://HOST:PORT/PATH`: each event is POSTed there as JSON.
    pub webhook: Option<String>,
}

/// The rules as they stand and their last events, for `/metrics` and the
/// dashboard.
#[derive(Default)]
struct AlertBoard {
    rules: Vec<(String, String, bool)>,
    events: VecDeque<Event>,
}

/// Events the dashboard lists.
const ALERT_EVENTS_KEPT: usize = 50;

struct Shared {
    pipeline: String,
    /// The sampler has read the current attempt after it ended: nothing
    /// it shows changes any more.
    ended: AtomicBool,
    live: LiveRun,
    recent: Mutex<RecentLatency>,
    history: Mutex<History>,
    alerts: Mutex<AlertBoard>,
}

/// A running endpoint; dropping it stops it.
pub struct Monitor {
    addr: SocketAddr,
    stop_sampler: Option<mpsc::Sender<()>>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Monitor {
    /// Serves `live` at `addr` (port 0: any free port) under the name
    /// `pipeline`, and evaluates `alerting`'s rules. A taken address is an
    /// error naming it.
    pub fn start(
        addr: &str,
        pipeline: &str,
        live: LiveRun,
        alerting: Alerting,
    ) -> Result<Monitor, String> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("cannot serve the live endpoint on {addr}: {e}"))?;
        let bound = listener
            .local_addr()
            .and_then(|a| listener.set_nonblocking(true).map(|()| a))
            .map_err(|e| format!("live endpoint on {addr}: {e}"))?;
        let shared = Arc::new(Shared {
            pipeline: pipeline.to_string(),
            ended: AtomicBool::new(false),
            live,
            recent: Mutex::new(RecentLatency {
                window: RECENT_WINDOW,
                quantiles: Vec::new(),
                breakdown: None,
            }),
            history: Mutex::new(History::default()),
            alerts: Mutex::new(AlertBoard {
                rules: (alerting.rules.iter())
                    .map(|r| (r.name.clone(), r.text.clone(), false))
                    .collect(),
                events: VecDeque::new(),
            }),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| format!("live endpoint: {e}"))?;
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/", get(dashboard))
            .route("/api/state", get(state))
            .route("/metrics", get(metrics))
            .with_state(shared.clone());
        let server = std::thread::Builder::new()
            .name("millrace-http".into())
            .spawn(move || {
                keep_sigpipe_from_this_thread();
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .map_err(|e| format!("live endpoint: {e}"))?;
        let (stop_sampler, stop) = mpsc::channel();
        let sampler = std::thread::Builder::new()
            .name("millrace-sampler".into())
            .spawn(move || sample(&shared, alerting, &stop))
            .map_err(|e| format!("live endpoint: {e}"))?;
        Ok(Monitor {
            addr: bound,
            stop_sampler: Some(stop_sampler),
            stop_server: Some(stop_server),
            threads: vec![server, sampler],
        })
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop_sampler.take();
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A client that hangs up while this thread writes to it must cost an
/// error, not the process: `millrace run` lets SIGPIPE end it (a closed
/// stdout), and vectored socket writes (`writev`, as HTTP responses use)
/// raise SIGPIPE where `send` would not. Blocked here, the signal stays
/// pending on this thread and the write fails with `EPIPE`.
fn keep_sigpipe_from_this_thread() {
    #[cfg(unix)]
    // SAFETY: only changes this thread's signal mask, with a set built here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Every `SAMPLE_EVERY` until told to stop: keeps the cumulative latency
/// histograms of the last `RECENT_WINDOW` and publishes the percentiles of
/// their difference (the rows of the window alone) and their breakdown,
/// adds a reading to the dashboard's history, and evaluates the alert
/// rules. Once an attempt has ended and been read once more, what it
/// showed last stays: the last window of the run, not an empty one.
fn sample(shared: &Shared, mut alerting: Alerting, stop: &mpsc::Receiver<()>) {
    let mut kept: VecDeque<(Arc<LiveAttempt>, Histogram<u64>)> = VecDeque::new();
    let samples = (RECENT_WINDOW.as_millis() / SAMPLE_EVERY.as_millis()) as usize + 1;
    let mut previous: Option<RunSummary> = None;
    // The last attempt read had ended by then.
    let mut ended_when_read = false;
    let webhook = alerting
        .webhook
        .clone()
        .and_then(|url| Webhook::start(url, &shared.pipeline));
    loop {
        let attempt = shared.live.attempt();
        let read_since_end = |a: &Arc<LiveAttempt>| {
            kept.back().is_some_and(|(k, _)| Arc::ptr_eq(k, a)) && ended_when_read
        };
        if let Some(attempt) = attempt.filter(|a| !read_since_end(a)) {
            ended_when_read = attempt.has_ended();
            // A restart starts its counters again: so does the window.
            let mut history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
            if kept.back().is_some_and(|(a, _)| !Arc::ptr_eq(a, &attempt)) {
                kept.clear();
                history.clear();
                previous = None;
                alerting.rules.iter_mut().for_each(Rule::reset);
            }
            let summary = attempt.summary();
            let now = attempt.latency();
            kept.push_back((attempt.clone(), now));
            while kept.len() > samples {
                kept.pop_front();
            }
            let quantiles = recent(&kept);
            history.push(history::read(&attempt, &summary, &quantiles));
            drop(history);
            let signals = signals(&attempt, &summary, previous.as_ref(), &quantiles);
            for rule in &mut alerting.rules {
                if let Some(event) = rule.observe(&signals) {
                    announce(shared, &event, webhook.as_ref());
                }
            }
            previous = Some(summary);
            let breakdown = recent_breakdown(&attempt, &quantiles);
            let mut recent = shared.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.quantiles = quantiles;
            recent.breakdown = breakdown;
            drop(recent);
            // Last: a reader that sees it sees everything read before.
            shared.ended.store(ended_when_read, Release);
        }
        match stop.recv_timeout(SAMPLE_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// `read` added up over every operator of `summary`.
fn operator_total(summary: &RunSummary, read: fn(&OperatorSummary) -> u64) -> u64 {
    summary.operators.iter().map(read).sum()
}

/// What the alert rules read: `summary` against the one a sample before.
fn signals(
    attempt: &LiveAttempt,
    summary: &RunSummary,
    previous: Option<&RunSummary>,
    quantiles: &[(f64, u64)],
) -> Signals {
    let quantile = |q: f64| {
        (quantiles.iter())
            .find(|(k, _)| *k == q)
            .map(|(_, ns)| *ns as f64 / 1e9)
    };
    let t = summary.elapsed_ns as f64 / 1e9;
    // How fast a count of the summary grew since the sample before.
    let per_second = |count: fn(&RunSummary) -> u64| {
        previous.and_then(|p| {
            let dt = (summary.elapsed_ns as f64 - p.elapsed_ns as f64) / 1e9;
            (dt > 0.0).then(|| count(summary).saturating_sub(count(p)) as f64 / dt)
        })
    };
    let watermark_ms = attempt.slowest_watermark_ms();
    let checkpoints = attempt.checkpoints.as_ref();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Signals {
        t,
        p50: quantile(0.5),
        p99: quantile(0.99),
        p999: quantile(0.999),
        watermark_lag: watermark_ms.map(history::lag_s),
        watermark_ms,
        input_rate: per_second(|s| s.events),
        late_rate: per_second(|s| operator_total(s, |o| o.late_rows)),
        skipped_rate: per_second(|s| operator_total(s, |o| o.source_stats.skipped)),
        dead_letter_rate: per_second(|s| operator_total(s, |o| o.source_stats.dead_lettered)),
        backpressure_rate: per_second(RunSummary::backpressure_events),
        checkpoints_bad: checkpoints.map_or(0, |c| load(&c.failed) + load(&c.aborted)),
        checkpoints_done: checkpoints.map_or(0, |c| load(&c.completed)),
    }
}

/// Posts alert events to a URL from a thread of its own, in order, so that
/// a slow receiver never delays sampling. At most `WEBHOOK_QUEUE` events
/// wait; one more is dropped with a message saying so.
struct Webhook {
    url: String,
    queue: mpsc::SyncSender<String>,
}

const WEBHOOK_QUEUE: usize = 64;

impl Webhook {
    fn start(url: String, pipeline: &str) -> Option<Webhook> {
        let (queue, bodies) = mpsc::sync_channel::<String>(WEBHOOK_QUEUE);
        let target = url.clone();
        let spawned = std::thread::Builder::new()
            .name("millrace-webhook".into())
            .spawn(move || {
                keep_sigpipe_from_this_thread();
                for body in bodies {
                    if let Err(e) = post(&target, &body) {
                        eprintln!("alert webhook {target}: {e}");
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Webhook { url, queue }),
            Err(e) => {
                eprintln!("{pipeline}: alert webhook {url}: {e}");
                None
            }
        }
    }

    fn send(&self, body: String) {
        if self.queue.try_send(body).is_err() {
            eprintln!(
                "alert webhook {}: {WEBHOOK_QUEUE} events already wait; this one is dropped",
                self.url
            );
        }
    }
}

/// An alert fired or resolved: to the log, the board (`/metrics`, the
/// dashboard) and the webhook.
fn announce(shared: &Shared, event: &Event, webhook: Option<&Webhook>) {
    let state = if event.firing { "firing" } else { "resolved" };
    eprintln!(
        "alert {state}: {} ({}): {}",
        event.rule, event.text, event.observed
    );
    let mut board = shared.alerts.lock().unwrap_or_else(|e| e.into_inner());
    for (name, _, firing) in &mut board.rules {
        if *name == event.rule {
            *firing = event.firing;
        }
    }
    if board.events.len() == ALERT_EVENTS_KEPT {
        board.events.pop_front();
    }
    board.events.push_back(event.clone());
    drop(board);
    if let Some(webhook) = webhook {
        let body = serde_json::json!({
            "pipeline": shared.pipeline,
            "alert": event.rule,
            "rule": event.text,
            "state": state,
            "observed": event.observed,
            "run_seconds": event.t,
        });
        webhook.send(body.to_string());
    }
}

/// POSTs `body` (JSON) to an `http://` URL with HTTP/1.1; an answer other
/// than 2xx is an error. Connecting, sending and reading the answer wait at
/// most 3 s each.
fn post(url: &str, body: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// webhooks are supported")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let timeout = Duration::from_secs(3);
    let with_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&status);
    if !status.starts_with("HTTP/1.1 2") && !status.starts_with("HTTP/1.0 2") {
        return Err(format!("answered {}", status.trim()));
    }
    Ok(())
}

/// The recent p50 and p99 explained by the traces that finished in the
/// recent window (`None` when the run does not trace or had no rows).
fn recent_breakdown(attempt: &LiveAttempt, quantiles: &[(f64, u64)]) -> Option<LatencyBreakdown> {
    let log = attempt.traces.as_ref()?;
    let at = |q: f64| quantiles.iter().find(|(k, _)| *k == q).map(|(_, ns)| *ns);
    let (p50, p99) = (at(0.5)?, at(0.99)?);
    let window = RECENT_WINDOW.as_nanos() as i64;
    let traces = log.since(attempt.now_ns().saturating_sub(window));
    Some(LatencyBreakdown::new(log, &traces, p50, p99))
}

/// Percentiles of the newest cumulative histogram minus the oldest kept.
fn recent(kept: &VecDeque<(Arc<LiveAttempt>, Histogram<u64>)>) -> Vec<(f64, u64)> {
    let (Some((_, oldest)), Some((_, newest))) = (kept.front(), kept.back()) else {
        return Vec::new();
    };
    let mut window = newest.clone();
    if kept.len() > 1 && window.subtract(oldest).is_err() {
        return Vec::new();
    }
    if window.is_empty() {
        return Vec::new();
    }
    RECENT_QUANTILES
        .iter()
        .map(|&q| (q, window.value_at_quantile(q)))
        .collect()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let recent = shared
        .recent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let attempt = shared.live.attempt();
    let alerts = shared
        .alerts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .rules
        .clone();
    let text = prometheus::render(
        &shared.pipeline,
        attempt.as_deref(),
        shared.live.restarts(),
        &recent,
        &alerts,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The dashboard: one page, no outside assets; it polls `/api/state`.
async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("dashboard.html"),
    )
}

/// The pipeline's name, graph, restarts and the readings of the current
/// attempt (oldest first), as JSON.
async fn state(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // First: when it says ended, what follows is the ended run's last read.
    let ended = shared.ended.load(Acquire);
    let graph = shared.live.attempt().map(|a| history::graph(&a));
    let readings = shared
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .to_json();
    let alerts = {
        let board = shared.alerts.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "rules": (board.rules.iter())
                .map(|(name, rule, firing)| serde_json::json!({"name": name, "rule": rule, "firing": firing}))
                .collect::<Vec<_>>(),
            "events": (board.events.iter().rev())
                .map(|e| serde_json::json!({
                    "t": e.t, "alert": e.rule, "rule": e.text,
                    "state": if e.firing { "firing" } else { "resolved" }, "observed": e.observed,
                }))
                .collect::<Vec<_>>(),
        })
    };
    let breakdown = {
        let recent = shared.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = recent.breakdown.as_ref().map(breakdown_json);
        if let Some(serde_json::Value::Object(fields)) = &mut b {
            fields.insert("window_s".into(), RECENT_WINDOW.as_secs().into());
        }
        b
    };
    let body = serde_json::json!({
        "pipeline": shared.pipeline,
        "graph": graph,
        "restarts": shared.live.restarts(),
        "readings": readings,
        "alerts": alerts,
        "ended": ended,
        "breakdown": breakdown,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
