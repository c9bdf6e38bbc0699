//! How long this machine takes a core away from a thread that never yields.
//!
//! Each of N threads reads the clock in a tight loop for a few seconds and
//! counts the gaps between two reads longer than 1 ms: time the thread was
//! not running. On a VM whose vCPUs share physical cores with other
//! tenants, such gaps appear when every vCPU is busy, and they bound the
//! tail latency any engine can show there (docs/benchmarks.md).
//!
//! ```sh
//! cargo run --release -p millrace-runtime --example cpu_gaps -- 2 3   # threads, seconds
//! ```

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let run_for = Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut last = start;
                let mut gaps = Vec::new();
                while last - start < run_for {
                    let now = Instant::now();
                    let gap = now - last;
                    if gap > Duration::from_millis(1) {
                        gaps.push(gap);
                    }
                    last = now;
                }
                (t, gaps)
            })
        })
        .collect();
    for h in handles {
        let (t, mut gaps) = h.join().expect("spinning thread");
        gaps.sort();
        let longest = gaps.last().copied().unwrap_or_default();
        println!(
            "thread {t}: {} gaps over 1 ms in {seconds} s, longest {:.2} ms",
            gaps.len(),
            longest.as_secs_f64() * 1e3
        );
    }
}
