//! How much of its core this machine takes from a thread that never yields.
//!
//! Each of N threads repeats a fixed unit of arithmetic (~1.5 µs) for a few
//! seconds and reports two things:
//!
//! * **gaps**: two consecutive units more than 1 ms apart, time the thread
//!   was not running at all (another guest thread had its vCPU, or the host
//!   had descheduled the vCPU; `perf record -e sched:sched_switch -a` tells
//!   the two apart);
//! * **slow slots**: 5 ms slots in which it finished fewer than half the
//!   units of its median slot, time it ran at under half speed (on a VM: its
//!   vCPU descheduled in short slices, or sharing a physical core).
//!
//! On a VM whose vCPUs share physical cores with other tenants, both appear
//! when every vCPU is busy, and they bound the tail latency any engine can
//! show there (docs/benchmarks.md).
//!
//! ```sh
//! cargo run --release -p millrace-runtime --example cpu_gaps -- 2 3   # threads, seconds
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

const SLOT: Duration = Duration::from_millis(5);
const GAP: Duration = Duration::from_millis(1);

/// A fixed amount of work that the optimizer cannot remove or shorten.
fn unit(seed: u64) -> u64 {
    let mut h = seed;
    for i in 0..1000u64 {
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ i;
    }
    h
}

struct Report {
    gaps: Vec<Duration>,
    /// Units finished in each slot, in order (0 for slots slept through).
    slots: Vec<u32>,
}

fn measure(seed: u64, run_for: Duration) -> Report {
    let start = Instant::now();
    let mut last = start;
    let mut slot_end = start + SLOT;
    let mut in_slot = 0u32;
    let mut report = Report {
        gaps: Vec::new(),
        slots: Vec::new(),
    };
    let mut h = seed;
    while last - start < run_for {
        h = black_box(unit(h));
        let now = Instant::now();
        if now - last > GAP {
            report.gaps.push(now - last);
        }
        last = now;
        in_slot += 1;
        while now >= slot_end {
            report.slots.push(std::mem::take(&mut in_slot));
            slot_end += SLOT;
        }
    }
    report
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let run_for = Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|t| std::thread::spawn(move || measure(t as u64, run_for)))
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let Report { mut gaps, slots } = h.join().expect("spinning thread");
        gaps.sort();
        let longest = gaps.last().copied().unwrap_or_default();
        let mut sorted = slots.clone();
        sorted.sort_unstable();
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
        let slow = slots.iter().filter(|&&n| 2 * n < median).count();
        let slowest = sorted.first().copied().unwrap_or(0) as f64 / median.max(1) as f64;
        println!(
            "thread {t}: {} gaps over 1 ms in {seconds} s, longest {:.2} ms; \
             {slow} of {} 5 ms slots at under half the median's {median} units ({} ms), \
             slowest at {:.2}×",
            gaps.len(),
            longest.as_secs_f64() * 1e3,
            slots.len(),
            slow * SLOT.as_millis() as usize,
            slowest,
        );
    }
}
