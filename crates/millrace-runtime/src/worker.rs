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
//! once the spin window has passed.
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
        for w in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            w.wake();
        }
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
    /// Keep polling this long after the last progress before parking.
    pub spin: Duration,
    /// Longest park without a timer (a safety net; wake-ups are explicit).
    pub max_park: Duration,
}

impl Default for IdleStrategy {
    fn default() -> Self {
        IdleStrategy {
            spin: Duration::from_micros(50),
            max_park: Duration::from_millis(100),
        }
    }
}

impl IdleStrategy {
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
                last_progress = now;
                continue;
            }
            // Keep polling while work was seen recently, and through a timer
            // due within the spin window: a parked thread wakes tens of µs
            // late (milliseconds at the tail), longer than the wait itself.
            let spin = self.idle.spin.as_nanos() as i64;
            if now - last_progress < spin || next_timer.is_some_and(|t| t - now <= spin) {
                std::hint::spin_loop();
                continue;
            }
            let max_park = self.idle.max_park.as_nanos() as i64;
            let park_ns = next_timer.map_or(max_park, |t| t.saturating_sub(now).clamp(0, max_park));
            if park_ns > 0 {
                std::thread::park_timeout(Duration::from_nanos(park_ns as u64));
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
    fn a_task_sent_window_results_is_polled_before_the_rest_of_the_round() {
        // Without a hurry the round goes in order; with one, `c` right after
        // `a`, then the round goes on as usual.
        assert_eq!(run_order(false)[..3], ["a", "b", "c"]);
        assert_eq!(run_order(true)[..4], ["a", "c", "b", "c"]);
    }
}
