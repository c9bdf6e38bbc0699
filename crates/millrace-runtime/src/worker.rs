//! Worker threads: one per core, pinned, each running many tasks cooperatively.
//!
//! A worker polls its tasks round-robin, except that a task sent window
//! results (or what follows from them downstream) is polled as soon as the
//! current poll ends, ahead of the rest of the round: a window's results
//! are what its latency is measured on, and a hop to the other worker
//! would otherwise wait for every task polled before the consumer. When a
//! whole round makes no progress it keeps polling for a short spin window
//! (a hand-off between cores then costs well under a microsecond), and
//! after that parks until a channel wakes it or the earliest timer of its
//! tasks is due; a timer due within the spin window is waited for by
//! polling, not parking. A task that waits for input therefore costs no CPU
//! once the spin window has passed. The spin window shrinks as the load of
//! the busiest worker grows (`IdleStrategy::spin_for_load`): a long spin
//! saves a wake-up when work is sparse, but on a busy machine the spinning
//! vCPU slows its sibling, which is then the one behind.
//!
//! Errors and panics of a task stop the whole pipeline: the first one is kept
//! (named by the operator that failed), every worker is woken and exits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use millrace_core::Error;
use millrace_core::time::now_ns;

use crate::task::{Task, TaskPoll};

/// Wakes the worker thread that runs a task (cheap when it is not parked).
#[derive(Clone, Default)]
pub struct WorkerWaker {
    thread: Arc<OnceLock<Thread>>,
    /// Set when one of the worker's tasks was sent window results (see
    /// [`Worker::run`]).
    hurry: Arc<AtomicBool>,
}

impl WorkerWaker {
    pub fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Asks the worker to poll its urgent tasks as soon as its current poll
    /// ends, before the rest of its round.
    pub fn hurry(&self) {
        self.hurry.store(true, Ordering::Release);
    }

    fn take_hurry(&self) -> bool {
        self.hurry.load(Ordering::Relaxed) && self.hurry.swap(false, Ordering::Acquire)
    }
}

/// Asks the sources of a running pipeline to stop reading: each source then
/// ends its stream as if its input were exhausted, so windows fire, sinks
/// flush and the run ends with its summary (a graceful drain, e.g. on Ctrl-C).
#[derive(Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// State every worker of one run shares.
#[derive(Default)]
pub struct RunControl {
    cancelled: AtomicBool,
    first_error: Mutex<Option<Error>>,
    wakers: Mutex<Vec<WorkerWaker>>,
    /// Each worker's latest load (`LoadMeter`), by worker index.
    loads: Mutex<Vec<f64>>,
}

impl RunControl {
    /// Records `error` (the first one wins) and stops every worker.
    pub fn fail(&self, error: Error) {
        {
            let mut slot = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(error);
            }
        }
        self.cancel();
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    /// Wakes every worker (a parked one polls its tasks again).
    pub fn wake_all(&self) {
        for w in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            w.wake();
        }
    }

    /// Records worker `index`'s load and returns the busiest worker's.
    fn publish_load(&self, index: usize, load: f64) -> f64 {
        let mut loads = self.loads.lock().unwrap_or_else(|e| e.into_inner());
        if loads.len() <= index {
            loads.resize(index + 1, 0.0);
        }
        loads[index] = load;
        loads.iter().copied().fold(0.0, f64::max)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn take_error(&self) -> Option<Error> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn register(&self, waker: WorkerWaker) {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waker);
    }
}

/// How a worker waits when it has nothing to do.
#[derive(Debug, Clone, Copy)]
pub struct IdleStrategy {
    /// Keep polling this long after the last progress before parking, while
    /// the worker is mostly idle.
    pub spin: Duration,
    /// The spin once the workers are busy (`spin_for_load`, which caps it
    /// at `spin`).
    pub busy_spin: Duration,
    /// Longest park without a timer (a safety net; wake-ups are explicit).
    pub max_park: Duration,
}

impl Default for IdleStrategy {
    fn default() -> Self {
        IdleStrategy {
            spin: Duration::from_micros(50),
            busy_spin: Duration::from_micros(5),
            max_park: Duration::from_millis(100),
        }
    }
}

impl IdleStrategy {
    /// Up to this load of the busiest worker (the share of its time in
    /// rounds that did work) a worker spins for the whole `spin`.
    pub const LOAD_FULL_SPIN: f64 = 0.8;
    /// From this load on it spins for `busy_spin` only; in between, the
    /// spin falls linearly, so a load near a bound does not flip it.
    pub const LOAD_BUSY_SPIN: f64 = 0.95;

    /// How to wait when the pipeline has a latency target. Waking a parked
    /// thread costs tens of microseconds typically and milliseconds at the
    /// tail, so a tight target keeps polling longer before parking; a loose
    /// one parks almost at once and leaves the cores to other work.
    pub fn for_latency_target(target: Duration) -> Self {
        let spin = if target <= Duration::from_millis(2) {
            Duration::from_micros(200)
        } else if target <= Duration::from_millis(20) {
            Duration::from_micros(50)
        } else {
            Duration::from_micros(5)
        };
        IdleStrategy {
            spin,
            ..IdleStrategy::default()
        }
    }

    /// The spin window when the busiest worker's recent load is `load` (0
    /// to 1). Near saturation a long spin costs: the spinning vCPU slows its
    /// sibling, and the busiest worker falls behind. Below `LOAD_FULL_SPIN`
    /// a worker spins the whole window: there the spin costs the others
    /// little and saves wake-ups (docs/benchmarks.md, "Workers: spin, timers
    /// and urgent results").
    pub fn spin_for_load(&self, load: f64) -> Duration {
        let busy_spin = self.busy_spin.min(self.spin);
        let span = Self::LOAD_BUSY_SPIN - Self::LOAD_FULL_SPIN;
        let idle_share = ((Self::LOAD_BUSY_SPIN - load) / span).clamp(0.0, 1.0);
        busy_spin + (self.spin - busy_spin).mul_f64(idle_share)
    }
}

/// A worker's load: the share of its time spent in rounds that did work,
/// over periods of `PERIOD_NS`, smoothed across periods so that one burst
/// (a window firing) does not flip the spin.
struct LoadMeter {
    period_start: i64,
    busy_ns: i64,
    load: f64,
}

impl LoadMeter {
    const PERIOD_NS: i64 = 10_000_000;

    fn new(now: i64) -> Self {
        LoadMeter {
            period_start: now,
            busy_ns: 0,
            load: 0.0,
        }
    }

    /// Counts a round that did work and took `ns`.
    fn busy(&mut self, ns: i64) {
        self.busy_ns += ns;
    }

    /// Closes the period if it has run its length and updates the load;
    /// true if it did.
    fn tick(&mut self, now: i64) -> bool {
        let elapsed = now - self.period_start;
        if elapsed < Self::PERIOD_NS {
            return false;
        }
        let share = (self.busy_ns as f64 / elapsed as f64).min(1.0);
        self.load = 0.5 * self.load + 0.5 * share;
        self.period_start = now;
        self.busy_ns = 0;
        true
    }
}

pub struct Worker {
    pub index: usize,
    pub core: Option<core_affinity::CoreId>,
    pub waker: WorkerWaker,
    pub tasks: Vec<Box<dyn Task>>,
    pub idle: IdleStrategy,
    pub control: Arc<RunControl>,
}

impl Worker {
    /// Runs the worker on the current thread until its tasks are done or the
    /// run is cancelled.
    pub fn run(mut self) {
        let _ = self.waker.thread.set(std::thread::current());
        if let Some(core) = self.core {
            // Pinning is an optimisation; a refusal (e.g. a restricted cpuset)
            // must not stop the pipeline.
            let _ = core_affinity::set_for_current(core);
        }
        let mut last_progress = now_ns();
        let mut round_start = last_progress;
        let mut load = LoadMeter::new(last_progress);
        let mut spin = self.idle.spin_for_load(load.load).as_nanos() as i64;
        while !self.tasks.is_empty() && !self.control.is_cancelled() {
            let mut progressed = false;
            let mut next_timer: Option<i64> = None;
            let mut i = 0;
            while i < self.tasks.len() {
                match self.poll_task(i) {
                    Some(TaskPoll::Progress) => progressed = true,
                    Some(TaskPoll::Idle { wake_at_ns }) => {
                        if let Some(t) = wake_at_ns {
                            next_timer = Some(next_timer.map_or(t, |n: i64| n.min(t)));
                        }
                    }
                    Some(TaskPoll::Backpressured) => {}
                    Some(TaskPoll::Done) => {
                        let mut task = self.tasks.swap_remove(i);
                        task.finish_metrics();
                        // Progress: the loop checks for the last task
                        // before it would park.
                        progressed = true;
                        continue;
                    }
                    None => return, // failed; control is cancelled
                }
                i += 1;
                if self.waker.take_hurry() {
                    match self.poll_urgent() {
                        Some(p) => progressed |= p,
                        None => return, // failed; control is cancelled
                    }
                }
            }
            let now = now_ns();
            if progressed {
                load.busy(now - round_start);
            }
            if load.tick(now) {
                // The busiest worker's load: a spinning vCPU slows its
                // sibling, and the busiest worker is the one that cannot
                // spare it (near saturation a source's worker, held back
                // by a full channel, looks idle while the other is the
                // bottleneck).
                let busiest = self.control.publish_load(self.index, load.load);
                spin = self.idle.spin_for_load(busiest).as_nanos() as i64;
            }
            round_start = now;
            if progressed {
                last_progress = now;
                continue;
            }
            // Keep polling while work was seen recently, and through a timer
            // due within the spin window: a parked thread wakes tens of µs
            // late (milliseconds at the tail), longer than the wait itself.
            if now - last_progress < spin || next_timer.is_some_and(|t| t - now <= spin) {
                std::hint::spin_loop();
                continue;
            }
            let max_park = self.idle.max_park.as_nanos() as i64;
            let park_ns = next_timer.map_or(max_park, |t| t.saturating_sub(now).clamp(0, max_park));
            if park_ns > 0 {
                std::thread::park_timeout(Duration::from_nanos(park_ns as u64));
                round_start = now_ns();
            }
        }
        for task in &mut self.tasks {
            task.finish_metrics();
        }
    }

    /// Polls task `i`; on error or panic records it and returns `None`.
    /// Polls, once each, the tasks that were sent window results (or what
    /// follows from them), ahead of the rest of the round: the result of a
    /// window is what the pipeline's latency is measured on, and otherwise
    /// it waits for every task polled before its consumer. True if one made
    /// progress, `None` if one failed. A task that finishes here is removed
    /// on its next regular poll.
    fn poll_urgent(&mut self) -> Option<bool> {
        let mut progressed = false;
        for j in 0..self.tasks.len() {
            if self.tasks[j].is_urgent() {
                progressed |= matches!(self.poll_task(j)?, TaskPoll::Progress);
            }
        }
        Some(progressed)
    }

    fn poll_task(&mut self, i: usize) -> Option<TaskPoll> {
        let task = &mut self.tasks[i];
        match catch_unwind(AssertUnwindSafe(|| task.poll())) {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                self.control.fail(e);
                None
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let name = task.current_operator();
                self.control.fail(Error::Panic(msg).in_operator(&name));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_core::Result;

    /// Logs each poll; makes progress on its first poll and is done after.
    /// `on_first` runs during the first poll (to flag another task urgent).
    struct Logged {
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
        polls: usize,
        urgent: Arc<AtomicBool>,
        on_first: Option<Box<dyn Fn() + Send>>,
    }

    impl Task for Logged {
        fn poll(&mut self) -> Result<TaskPoll> {
            self.log.lock().unwrap().push(self.name);
            self.urgent.store(false, Ordering::Relaxed);
            self.polls += 1;
            if self.polls == 1 {
                if let Some(f) = &self.on_first {
                    f();
                }
                return Ok(TaskPoll::Progress);
            }
            Ok(TaskPoll::Done)
        }
        fn current_operator(&self) -> String {
            self.name.into()
        }
        fn finish_metrics(&mut self) {}
        fn is_urgent(&self) -> bool {
            self.urgent.load(Ordering::Relaxed)
        }
    }

    fn run_order(hurry: bool) -> Vec<&'static str> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let waker = WorkerWaker::default();
        let c_urgent = Arc::new(AtomicBool::new(false));
        let task = |name, urgent: Arc<AtomicBool>, on_first: Option<Box<dyn Fn() + Send>>| {
            Box::new(Logged {
                name,
                log: log.clone(),
                polls: 0,
                urgent,
                on_first,
            }) as Box<dyn Task>
        };
        // `a` sends window results to `c` during its first poll.
        let flag = c_urgent.clone();
        let w = waker.clone();
        let send: Box<dyn Fn() + Send> = Box::new(move || {
            flag.store(true, Ordering::Relaxed);
            if hurry {
                w.hurry();
            }
        });
        let tasks = vec![
            task("a", Arc::new(AtomicBool::new(false)), Some(send)),
            task("b", Arc::new(AtomicBool::new(false)), None),
            task("c", c_urgent, None),
        ];
        Worker {
            index: 0,
            core: None,
            waker,
            tasks,
            idle: IdleStrategy::default(),
            control: Arc::new(RunControl::default()),
        }
        .run();
        log.lock().unwrap().clone()
    }

    #[test]
    fn the_spin_shrinks_from_the_idle_to_the_busy_window_as_the_load_grows() {
        let idle = IdleStrategy {
            spin: Duration::from_micros(200),
            busy_spin: Duration::from_micros(5),
            max_park: Duration::from_millis(100),
        };
        let us = |load| idle.spin_for_load(load).as_nanos() as f64 / 1e3;
        // Mostly idle: the whole spin; busy: the short one; halfway between
        // the bounds: halfway between the windows.
        let (full, busy) = (IdleStrategy::LOAD_FULL_SPIN, IdleStrategy::LOAD_BUSY_SPIN);
        assert!(0.0 < full && full < busy && busy < 1.0);
        assert_eq!(us(0.0), 200.0);
        assert_eq!(us(full), 200.0);
        let mid = us((full + busy) / 2.0);
        assert!((mid - 102.5).abs() < 1e-3, "{mid}");
        assert_eq!(us(busy), 5.0);
        assert_eq!(us(1.0), 5.0);
        let spins: Vec<f64> = (0..=20).map(|i| us(i as f64 / 20.0)).collect();
        assert!(spins.windows(2).all(|w| w[0] >= w[1]), "{spins:?}");
        // A busy spin longer than the spin never lengthens it (a loose
        // target spins 5 µs at any load).
        let loose = IdleStrategy::for_latency_target(Duration::from_secs(1));
        assert_eq!(loose.spin_for_load(0.0), Duration::from_micros(5));
        assert_eq!(loose.spin_for_load(1.0), Duration::from_micros(5));
        let odd = IdleStrategy {
            busy_spin: Duration::from_micros(80),
            ..IdleStrategy::default()
        };
        assert_eq!(odd.spin_for_load(1.0), Duration::from_micros(50));
    }

    #[test]
    fn the_spin_follows_the_busiest_worker() {
        let control = RunControl::default();
        assert_eq!(control.publish_load(1, 0.3), 0.3);
        assert_eq!(control.publish_load(0, 0.9), 0.9);
        assert_eq!(control.publish_load(1, 0.5), 0.9);
        // Worker 0 calms down: its new load replaces the old.
        assert_eq!(control.publish_load(0, 0.1), 0.5);
    }

    #[test]
    fn a_worker_whose_last_task_finished_exits_without_parking() {
        // Parking now would last an hour: with no task left nothing wakes it.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let log = Arc::new(Mutex::new(Vec::new()));
            let task = Logged {
                name: "a",
                log,
                polls: 0,
                urgent: Arc::new(AtomicBool::new(false)),
                on_first: None,
            };
            Worker {
                index: 0,
                core: None,
                waker: WorkerWaker::default(),
                tasks: vec![Box::new(task)],
                idle: IdleStrategy {
                    spin: Duration::ZERO,
                    busy_spin: Duration::ZERO,
                    max_park: Duration::from_secs(3600),
                },
                control: Arc::new(RunControl::default()),
            }
            .run();
            let _ = done.send(());
        });
        // A deadlock guard, not a timing assert: the worker needs microseconds.
        finished
            .recv_timeout(Duration::from_secs(120))
            .expect("the worker parked after its last task finished");
    }

    #[test]
    fn the_load_is_the_busy_share_of_each_period_smoothed_across_periods() {
        let period = LoadMeter::PERIOD_NS;
        let mut m = LoadMeter::new(0);
        m.busy(period / 2);
        // The period is not over: nothing changes.
        assert!(!m.tick(period - 1));
        assert_eq!(m.load, 0.0);
        // Half busy: halfway from 0 to 0.5.
        assert!(m.tick(period));
        assert_eq!(m.load, 0.25);
        // Fully busy over a period and a half: the share is capped at 1.
        m.busy(2 * period);
        assert!(m.tick(period + period * 3 / 2));
        assert_eq!(m.load, 0.625);
        // An idle period (a long park) halves it; the busy time was reset.
        assert!(m.tick(period * 4));
        assert_eq!(m.load, 0.3125);
    }

    #[test]
    fn a_task_sent_window_results_is_polled_before_the_rest_of_the_round() {
        // Without a hurry the round goes in order; with one, `c` right after
        // `a`, then the round goes on as usual.
        assert_eq!(run_order(false)[..3], ["a", "b", "c"]);
        assert_eq!(run_order(true)[..4], ["a", "c", "b", "c"]);
    }
}
