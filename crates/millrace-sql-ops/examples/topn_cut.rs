//! Times the top-N's batch cut on one firing's worth of counts (3 k Int64
//! values, ties at the top): arrow's sort with a limit followed by a
//! comparator pass (the first version of the cut) against
//! `no_worse_than_limit_th`, warm, at a few limits:
//! `cargo run --release -p millrace-sql-ops --example topn_cut`. Prints
//! microseconds per call (median of 2000 calls); a check of the choice made
//! in `topn/batch_best.rs`, not a benchmark of the engine.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int64Array, make_comparator};
use arrow::compute::{SortOptions, sort_to_indices};
use millrace_sql_ops::topn::no_worse_than_limit_th;

fn median_us(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut kept = 0;
    let mut times: Vec<f64> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            kept = std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], kept)
}

fn main() {
    // Counts of ~3 k auctions in a window: small numbers, many ties.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let counts: ArrayRef = Arc::new(Int64Array::from_iter_values((0..3000).map(|_| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % 97) as i64
    })));
    let options = SortOptions {
        descending: true,
        nulls_first: false,
    };
    println!("limit  sort+comparator µs  one pass µs  rows kept");
    for limit in [1, 10, 50] {
        let (sorted, kept_sorted) = median_us(|| {
            let best = sort_to_indices(&counts, Some(options), Some(limit)).unwrap();
            let worst = best.value(best.len() - 1) as usize;
            let order = make_comparator(&counts, &counts, options).unwrap();
            (0..counts.len())
                .filter(|&i| order(i, worst).is_le())
                .count()
        });
        let (pass, kept) = median_us(|| {
            no_worse_than_limit_th(&counts, options, limit)
                .unwrap()
                .len()
        });
        assert_eq!(kept, kept_sorted, "both keep the same rows");
        println!("{limit:>5}  {sorted:>18.1}  {pass:>11.1}  {kept:>9}");
    }
}
