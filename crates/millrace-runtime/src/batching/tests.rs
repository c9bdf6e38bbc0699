use super::linger::{HIGH, LINGER_STEPS};
use super::read_size::{MIN_READ, SIZE_SLACK};
use super::*;

/// A source fed `rate` rows/s whose batches cost `overhead + per_row·s`
/// ns: with linger `L` a batch holds the rows that arrive meanwhile,
/// `max(1, rate·L)`. Runs `intervals` decision intervals and returns the
/// linger after each.
fn simulate(
    c: &mut BatchController,
    rate: f64,
    overhead: f64,
    per_row: f64,
    intervals: usize,
    now: &mut i64,
) -> Vec<i64> {
    simulate_pipeline(c, rate, (overhead, per_row), (0.0, 0.0), intervals, now)
}

/// As `simulate`, with a downstream task whose batches cost
/// `downstream.0 + downstream.1·s` ns: when its work exceeds the
/// interval, the source is held back (backpressured) for the excess.
fn simulate_pipeline(
    c: &mut BatchController,
    rate: f64,
    source: (f64, f64),
    downstream: (f64, f64),
    intervals: usize,
    now: &mut i64,
) -> Vec<i64> {
    let mut lingers = Vec::new();
    // A fixed policy never decides; simulate it in 10 ms steps.
    let interval = c.interval_ns.min(10_000_000);
    for _ in 0..intervals {
        let rows = (rate * interval as f64 / 1e9).max(1.0);
        let per_batch = (rate * c.linger_ns() as f64 / 1e9).clamp(1.0, c.size() as f64);
        let batches = (rows / per_batch).ceil().max(1.0) as i64;
        let held = (batches as f64 * downstream.0 + rows * downstream.1 - interval as f64).max(0.0);
        for b in 1..=batches {
            // Real batches vary around the mean (arrivals are uneven):
            // alternately a third smaller and larger.
            let n = if b % 2 == 0 {
                per_batch * 4.0 / 3.0
            } else {
                per_batch * 2.0 / 3.0
            };
            let n = n.round().max(1.0);
            c.observe(
                n as usize,
                (source.0 + n * source.1) as u64,
                (held / batches as f64) as u64,
                *now + b * interval / batches,
            );
        }
        *now += interval;
        lingers.push(c.linger_ns());
    }
    lingers
}

fn adaptive(target_ms: u64) -> BatchController {
    adaptive_up_to(target_ms, 8192)
}

fn adaptive_up_to(target_ms: u64, max: usize) -> BatchController {
    BatchController::new(
        BatchPolicy::Adaptive {
            latency_target: Duration::from_millis(target_ms),
            max,
        },
        0,
    )
}

/// Busy fraction of the simulated source at linger `l`.
fn utilization(rate: f64, overhead: f64, per_row: f64, l: i64) -> f64 {
    let per_batch = (rate * l as f64 / 1e9).max(1.0);
    rate * (overhead / per_batch + per_row) / 1e9
}

#[test]
fn light_load_keeps_rows_alone() {
    let mut c = adaptive(1);
    let mut now = 0;
    // 10k rows/s, 2 µs per batch + 0.1 µs per row: 2% busy.
    let lingers = simulate(&mut c, 10_000.0, 2_000.0, 100.0, 50, &mut now);
    assert!(lingers.iter().all(|l| *l == 0), "{lingers:?}");
    assert_eq!(c.size(), 8192, "reads take whatever is there");
}

#[test]
fn rows_faster_than_one_per_step_wait_one_step() {
    let step = adaptive(1).budget_ns / LINGER_STEPS;
    // Barely busy, no pressure: nothing else asks for a linger. At
    // 800k rows/s (2.5 rows per step) the source lingers one step; at
    // 100k rows/s (0.3 rows per step) waiting would gather nothing.
    for (rate, want) in [(800_000.0, step), (100_000.0, 0)] {
        let mut c = adaptive(1);
        let mut now = 0;
        let lingers = simulate(&mut c, rate, 300.0, 20.0, 50, &mut now);
        assert!(
            lingers[5..].iter().all(|l| *l == want),
            "{rate}: {lingers:?}"
        );
    }
}

#[test]
fn heavy_load_lingers_until_the_task_keeps_up() {
    let mut c = adaptive(1);
    let mut now = 0;
    // 1M rows/s with 2 µs per batch: rows alone would need 2.1 s of work
    // per second; the linger must grow until utilization is in the band.
    let lingers = simulate(&mut c, 1_000_000.0, 2_000.0, 100.0, 100, &mut now);
    let last = *lingers.last().unwrap();
    let u = utilization(1e6, 2_000.0, 100.0, last);
    assert!(u <= HIGH, "final linger {last} ns leaves utilization {u}");
    assert!(
        lingers.windows(2).all(|w| w[0] <= w[1]),
        "grew monotonically: {lingers:?}"
    );
    // Only as much as needed: 3 rows per batch suffice here, far below
    // the 100 µs budget.
    assert!(last <= 4 * c.budget_ns / LINGER_STEPS, "{lingers:?}");
}

#[test]
fn a_source_without_hops_never_lingers() {
    // The load under which a source with hops lingers (the test above),
    // and one fast enough for the rate floor: reads take what is there.
    for (rate, overhead) in [(1_000_000.0, 2_000.0), (800_000.0, 300.0)] {
        let mut c = adaptive(1).without_hops();
        let mut now = 0;
        let lingers = simulate(&mut c, rate, overhead, 100.0, 50, &mut now);
        assert!(lingers.iter().all(|l| *l == 0), "{rate}: {lingers:?}");
        assert_eq!(c.size(), 8192);
        assert!(c.utilization().is_some(), "it still measures its load");
    }
}

#[test]
fn a_source_busy_with_its_rows_does_not_linger() {
    let mut c = adaptive(1);
    let mut now = 0;
    // 90% busy, but 0.2 µs per batch against 0.9 µs per row: waiting for
    // bigger batches would save almost nothing. Rows alone all have the
    // same size, so the first step is a probe; once batch sizes vary the
    // fit shows the cost is per row and the linger grows no further.
    let lingers = simulate(&mut c, 1_000_000.0, 200.0, 900.0, 50, &mut now);
    let first_step = c.budget_ns / LINGER_STEPS;
    assert!(lingers.iter().all(|l| *l <= first_step), "{lingers:?}");
}

#[test]
fn a_backpressured_source_lingers_until_downstream_keeps_up() {
    let mut c = adaptive(1);
    let mut now = 0;
    // The source itself is barely busy (0.3 µs per batch), but each
    // batch costs its consumer 5 µs: at 500k rows/s rows alone need 2.5 s
    // of downstream work per second.
    let lingers = simulate_pipeline(
        &mut c,
        500_000.0,
        (300.0, 20.0),
        (5_000.0, 100.0),
        100,
        &mut now,
    );
    assert!(
        lingers.windows(2).all(|w| w[0] <= w[1]),
        "grew monotonically: {lingers:?}"
    );
    let last = *lingers.last().unwrap();
    // Downstream at the final linger: batches of 500k·L rows.
    let per_batch = (500_000.0 * last as f64 / 1e9).max(1.0);
    let downstream = 500_000.0 * (5_000.0 / per_batch + 100.0) / 1e9;
    assert!(downstream <= 1.0, "downstream still saturated at {last} ns");
    assert!(
        last < c.budget_ns,
        "needed only part of the budget: {lingers:?}"
    );
    // At 10k rows/s rows come alone even at that linger: back to none.
    let down = simulate_pipeline(
        &mut c,
        10_000.0,
        (300.0, 20.0),
        (5_000.0, 100.0),
        100,
        &mut now,
    );
    assert!(down.windows(2).all(|w| w[0] >= w[1]), "{down:?}");
    assert_eq!(*down.last().unwrap(), 0);
}

#[test]
fn the_linger_never_exceeds_its_share_of_the_target() {
    for rate in [1.0, 1e3, 1e5, 1e7, 1e8] {
        for target_ms in [1, 10] {
            let mut c = adaptive(target_ms);
            let mut now = 0;
            for l in simulate(&mut c, rate, 5_000.0, 50.0, 60, &mut now) {
                assert!(
                    (0..=target_ms as i64 * 100_000).contains(&l),
                    "rate {rate}, target {target_ms} ms: linger {l}"
                );
            }
        }
    }
}

#[test]
fn a_step_change_moves_the_linger_once_and_it_holds() {
    let mut c = adaptive(1);
    let mut now = 0;
    simulate(&mut c, 10_000.0, 7_000.0, 50.0, 20, &mut now);
    assert_eq!(c.linger_ns(), 0);
    // Step up to 1M rows/s with 7 µs per batch.
    let up = simulate(&mut c, 1_000_000.0, 7_000.0, 50.0, 200, &mut now);
    assert!(
        up.windows(2).all(|w| w[0] <= w[1]),
        "oscillated after step up: {up:?}"
    );
    let settled = *up.last().unwrap();
    assert!(settled > 0);
    assert!(up[up.len() - 50..].iter().all(|l| *l == settled), "{up:?}");
    // Step down: the linger may only shrink, back to rows alone.
    let down = simulate(&mut c, 10_000.0, 7_000.0, 50.0, 200, &mut now);
    assert!(
        down.windows(2).all(|w| w[0] >= w[1]),
        "oscillated after step down: {down:?}"
    );
    assert_eq!(*down.last().unwrap(), 0);
}

#[test]
fn a_short_burst_does_not_move_the_linger() {
    let mut c = adaptive(1);
    let mut now = 0;
    simulate(&mut c, 10_000.0, 2_000.0, 100.0, 20, &mut now);
    // One interval at a rate that keeps the task 90% busy with rows
    // alone: the smoothed utilization stays under HIGH.
    let burst = simulate(&mut c, 430_000.0, 2_000.0, 100.0, 1, &mut now);
    assert_eq!(burst, vec![0]);
}

/// A source reading a backlog that it clears once an interval: the
/// first read of each interval takes half the size, every other one
/// comes back full, `size()` rows costing `overhead + per_row(i)·rows`
/// ns in interval `i`, reads back to back. Returns the read size after
/// each interval.
fn full_reads(
    c: &mut BatchController,
    overhead: f64,
    per_row: impl Fn(usize) -> f64,
    intervals: usize,
    now: &mut i64,
) -> Vec<usize> {
    reads(c, overhead, per_row, intervals, now, true)
}

/// A source that is behind its input: every read comes back full.
fn behind_reads(
    c: &mut BatchController,
    overhead: f64,
    per_row: f64,
    intervals: usize,
    now: &mut i64,
) -> Vec<usize> {
    reads(c, overhead, |_| per_row, intervals, now, false)
}

fn reads(
    c: &mut BatchController,
    overhead: f64,
    per_row: impl Fn(usize) -> f64,
    intervals: usize,
    now: &mut i64,
    clears_once: bool,
) -> Vec<usize> {
    let mut sizes = Vec::new();
    for i in 0..intervals {
        // A fixed policy never decides; simulate it in 10 ms steps.
        let end = *now + c.interval_ns.min(10_000_000);
        let mut first = clears_once;
        while *now < end {
            let rows = if std::mem::take(&mut first) {
                c.size() / 2
            } else {
                c.size()
            };
            let busy = (overhead + per_row(i) * rows as f64) as i64;
            *now += busy.max(1);
            c.observe(rows, busy as u64, 0, *now);
        }
        sizes.push(c.size());
    }
    sizes
}

/// The read size's rule: at most `SIZE_SLACK` over the rows a budget
/// buys at what a row of a full read costs (its share of the read's
/// overhead included), and too small to double.
fn settled(size: usize, overhead: f64, per_row: f64, budget_ns: i64) -> bool {
    let ideal = budget_ns as f64 / (per_row + overhead / size as f64);
    size as f64 <= ideal * SIZE_SLACK && (size * 2) as f64 * SIZE_SLACK > ideal
}

#[test]
fn full_reads_shrink_until_one_fits_its_share_of_the_target() {
    for (target_ms, per_row) in [(1, 200.0), (1, 60.0), (10, 200.0)] {
        let mut c = adaptive(target_ms);
        let mut now = 0;
        let sizes = full_reads(&mut c, 2_000.0, |_| per_row, 20, &mut now);
        let size = *sizes.last().unwrap();
        assert!(
            settled(size, 2_000.0, per_row, c.read_budget_ns),
            "{target_ms} ms at {per_row} ns a row: {sizes:?}"
        );
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    }
    // 1 ms, 200 ns a row: 100 µs buys 500 rows, and the first decision
    // halves 8192 four times to get there.
    let mut c = adaptive(1);
    let mut now = 0;
    let sizes = full_reads(&mut c, 2_000.0, |_| 200.0, 20, &mut now);
    assert!(sizes.iter().all(|s| *s == 512), "{sizes:?}");
}

#[test]
fn one_dear_interval_does_not_move_the_read_size() {
    let mut c = adaptive(1);
    let mut now = 0;
    // 100 ns a row: 1024 rows. Then one interval at 150 ns (a cold
    // moment), which alone would ask for 512, and back.
    let settled = full_reads(&mut c, 2_000.0, |_| 100.0, 20, &mut now);
    assert_eq!(settled[19], 1024, "{settled:?}");
    let dear = full_reads(
        &mut c,
        2_000.0,
        |i| if i == 0 { 150.0 } else { 100.0 },
        20,
        &mut now,
    );
    assert!(dear.iter().all(|s| *s == 1024), "{dear:?}");
}

#[test]
fn a_source_without_hops_sizes_its_reads_too() {
    let mut c = adaptive(1).without_hops();
    let mut now = 0;
    let sizes = full_reads(&mut c, 2_000.0, |_| 200.0, 5, &mut now);
    assert_eq!(sizes, vec![512; 5]);
    assert_eq!(c.linger_ns(), 0);
}

#[test]
fn the_read_size_moves_one_way_on_a_step_change_and_holds_through_noise() {
    let mut c = adaptive(1);
    let mut now = 0;
    // Rows at 400 ns (±20%, alternating): the size settles and holds.
    let noisy = |base: f64| {
        move |i: usize| {
            if i.is_multiple_of(2) {
                base * 0.8
            } else {
                base * 1.2
            }
        }
    };
    let slow = full_reads(&mut c, 2_000.0, noisy(400.0), 60, &mut now);
    assert!(slow[20..].iter().all(|s| *s == slow[20]), "{slow:?}");
    // Rows 8× cheaper: the size only grows, then holds.
    let fast = full_reads(&mut c, 2_000.0, noisy(50.0), 60, &mut now);
    assert!(fast.windows(2).all(|w| w[0] <= w[1]), "{fast:?}");
    assert!(fast[59] > slow[59], "{fast:?}");
    assert!(fast[30..].iter().all(|s| *s == fast[59]), "{fast:?}");
    assert!(
        settled(fast[59], 2_000.0, 50.0, c.read_budget_ns),
        "{fast:?}"
    );
    // And back: it only shrinks.
    let back = full_reads(&mut c, 2_000.0, noisy(400.0), 60, &mut now);
    assert!(back.windows(2).all(|w| w[0] >= w[1]), "{back:?}");
    assert_eq!(back[59], slow[59]);
}

#[test]
fn the_read_size_stays_within_its_bounds() {
    for per_row in [0.01, 1.0, 100.0, 10_000.0, 1e6] {
        let mut c = adaptive(1);
        let mut now = 0;
        for size in full_reads(&mut c, 2_000.0, |_| per_row, 30, &mut now) {
            assert!((MIN_READ..=8192).contains(&size), "{per_row}: {size}");
        }
    }
    // A maximum under the floor is the size, whatever a row costs.
    let mut c = adaptive_up_to(1, 16);
    let mut now = 0;
    let sizes = full_reads(&mut c, 2_000.0, |_| 1e6, 10, &mut now);
    assert!(sizes.iter().all(|s| *s == 16), "{sizes:?}");
}

#[test]
fn short_reads_leave_the_read_size_alone() {
    // Rows alone at 5 µs each (the cost of a row read after an idle
    // moment): no read comes back full, so nothing says what a full
    // read costs, and the size changes nothing anyway.
    let mut c = adaptive(1);
    let mut now = 0;
    simulate(&mut c, 50_000.0, 2_000.0, 5_000.0, 30, &mut now);
    assert_eq!(c.size(), 8192);
}

/// A source fed `rate` rows/s that reads back to back whatever has
/// arrived, up to `size()` rows, each read costing `overhead +
/// per_row·rows` ns. Returns the read size after each interval.
fn queue_reads(
    c: &mut BatchController,
    rate: f64,
    overhead: f64,
    per_row: f64,
    intervals: usize,
    now: &mut i64,
) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut arrived = 0.0;
    let mut read = 0.0;
    let mut last = *now;
    for _ in 0..intervals {
        let end = *now + c.interval_ns;
        while *now < end {
            arrived += rate * (*now - last) as f64 / 1e9;
            last = *now;
            let rows = (arrived - read).floor().min(c.size() as f64);
            if rows < 1.0 {
                *now += (1e9 / rate).ceil() as i64; // wait for a row
                continue;
            }
            read += rows;
            let busy = (overhead + per_row * rows) as i64;
            *now += busy;
            c.observe(rows as usize, busy as u64, 0, *now);
        }
        sizes.push(c.size());
    }
    sizes
}

#[test]
fn a_source_behind_its_input_reads_more_until_it_keeps_up() {
    // 200 ns a row: the latency rule alone allows 512 rows a read, but
    // every read comes back full: the reads double, up to the maximum.
    let mut c = adaptive(1);
    let mut now = 0;
    let sizes = behind_reads(&mut c, 2_000.0, 200.0, 8, &mut now);
    assert_eq!(sizes, vec![512, 1024, 2048, 4096, 8192, 8192, 8192, 8192]);
    assert_eq!(c.share_size, 512);
    // Input that comes in amounts under a quarter of the read (a
    // source that caught up): they halve back to the latency rule's
    // size, and hold there.
    let back = queue_reads(&mut c, 1e6, 2_000.0, 200.0, 10, &mut now);
    assert_eq!(back[..4], [4096, 2048, 1024, 512], "{back:?}");
    assert!(back[4..].iter().all(|s| *s == 512), "{back:?}");
}

#[test]
fn a_source_without_hops_does_not_catch_up() {
    let mut c = adaptive(1).without_hops();
    let mut now = 0;
    let sizes = behind_reads(&mut c, 2_000.0, 200.0, 5, &mut now);
    assert_eq!(sizes, vec![512; 5]);
}

/// A source without hops settled by full reads at 100 ns a row: 1024
/// rows (1024 and 512 both lie within the rule's slack at that cost).
fn fused_at_1024() -> (BatchController, i64) {
    let mut c = adaptive(1).without_hops();
    let mut now = 0;
    let settled = full_reads(&mut c, 2_000.0, |_| 100.0, 10, &mut now);
    assert_eq!(settled[9], 1024, "{settled:?}");
    (c, now)
}

#[test]
fn a_source_behind_its_input_never_reads_less() {
    // A slow phase at 131 ns a row with every read full: alone, the
    // rule would halve to 512 (1024 rows now cost over 1.25 × its 100
    // µs), which adds per-read costs to the backlog and saves no row
    // any wait. The size holds...
    let (mut c, mut now) = fused_at_1024();
    let slow = behind_reads(&mut c, 2_000.0, 131.0, 10, &mut now);
    assert!(slow.iter().all(|s| *s == 1024), "{slow:?}");
    // ... until the source keeps up at that cost: then it halves.
    let kept_up = full_reads(&mut c, 2_000.0, |_| 131.0, 10, &mut now);
    assert!(kept_up.iter().all(|s| *s == 512), "{kept_up:?}");
}

#[test]
fn a_source_behind_from_its_start_still_sizes_its_reads() {
    // As fast as possible every read is full from the first on, and the
    // size it starts from is the policy's maximum, not the rule's
    // choice: the first estimate sizes the reads (8192 rows at 100 ns
    // cost 8 × the 100 µs).
    let mut c = adaptive(1).without_hops();
    let mut now = 0;
    let sizes = behind_reads(&mut c, 2_000.0, 100.0, 5, &mut now);
    assert_eq!(sizes, vec![1024; 5]);
}

#[test]
fn a_source_behind_its_input_reads_the_most_the_rule_tolerates() {
    // One dear interval (a stall inside the full reads) takes 1024 rows
    // to 512, and reads that keep up at 100 ns a row leave it there.
    let (mut c, mut now) = fused_at_1024();
    let dear = full_reads(&mut c, 2_000.0, |_| 250.0, 1, &mut now);
    assert_eq!(dear, vec![512]);
    let kept_up = full_reads(&mut c, 2_000.0, |_| 100.0, 10, &mut now);
    assert!(kept_up.iter().all(|s| *s == 512), "{kept_up:?}");
    // Behind at that cost, it reads 1024 rows, not past the rule
    // (2048 rows would cost 2 × its 100 µs), and keeps them after.
    let behind = behind_reads(&mut c, 2_000.0, 100.0, 10, &mut now);
    assert!(behind.iter().all(|s| *s == 1024), "{behind:?}");
    let after = full_reads(&mut c, 2_000.0, |_| 100.0, 10, &mut now);
    assert!(after.iter().all(|s| *s == 1024), "{after:?}");
}

#[test]
fn catching_up_settles_near_capacity_without_oscillating() {
    // 20 µs a read, 150 ns a row: the latency rule allows 512 rows
    // (~190 ns a row with the read's share), at most 5.3 M rows/s; 1024
    // rows a read keep up with 5.6 M rows/s.
    let primed = || {
        let mut c = adaptive(1);
        let mut now = 0;
        full_reads(&mut c, 20_000.0, |_| 150.0, 3, &mut now);
        assert_eq!(c.size(), 512);
        (c, now)
    };
    let (mut c, mut now) = primed();
    let sizes = queue_reads(&mut c, 5.6e6, 20_000.0, 150.0, 60, &mut now);
    assert_eq!(c.share_size, 512, "{sizes:?}");
    assert!(sizes[10..].iter().all(|s| *s == sizes[10]), "{sizes:?}");
    assert!(sizes[10] >= 1024, "{sizes:?}");
    // Just under 512's capacity it never grows past the latency rule.
    let (mut c, mut now) = primed();
    let sizes = queue_reads(&mut c, 4.5e6, 20_000.0, 150.0, 60, &mut now);
    assert!(sizes.iter().all(|s| *s == 512), "{sizes:?}");
}

#[test]
fn fixed_policy_never_changes() {
    let mut c = BatchController::new(BatchPolicy::Fixed(64), 0);
    let mut now = 0;
    for rate in [1e3, 1e7] {
        assert!(
            simulate(&mut c, rate, 2_000.0, 100.0, 10, &mut now)
                .iter()
                .all(|l| *l == 0)
        );
        assert_eq!(c.size(), 64);
    }
}
