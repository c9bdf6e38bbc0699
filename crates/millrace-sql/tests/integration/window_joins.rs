//! Window joins of two windowed counts: inner, left, right and full, on
//! equal windows or on equal window bounds, each compared with the same join
//! computed by hand in plain Rust (counts per key and window in hash maps,
//! then the join's pairs and null padding).
//!
//! The counts are non-null (`count(*)`), so an outer join must declare the
//! side it pads nullable in its output.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use crate::common::{late_rows, rows, run_sql};

/// 10 s tumbling windows.
const SIZE_MS: i64 = 10_000;

/// A seeded row generator (a 64-bit LCG), so the inputs are the same on
/// every run without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `n` rows `(k, ts)`: keys `first_key .. first_key + 20`, times from
/// `start_ms` about 200 ms apart, out of order by up to 400 ms (within the
/// tables' 1 s watermark bound, so no row is late).
fn generate(seed: u64, n: usize, first_key: i64, start_ms: i64) -> Vec<(i64, i64)> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|i| {
            let k = first_key + rng.next(20) as i64;
            let ts = start_ms + i as i64 * 200 + rng.next(400) as i64;
            (k, ts)
        })
        .collect()
}

fn write_jsonl(dir: &tempfile::TempDir, name: &str, data: &[(i64, i64)]) -> String {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for (k, ts) in data {
        writeln!(f, r#"{{"k":{k},"ts":{ts}}}"#).unwrap();
    }
    path.display().to_string()
}

/// Rows per key and window start.
fn counts(data: &[(i64, i64)]) -> HashMap<(i64, i64), i64> {
    let mut out = HashMap::new();
    for &(k, ts) in data {
        *out.entry((k, ts - ts.rem_euclid(SIZE_MS))).or_insert(0) += 1;
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Inner,
    Left,
    Right,
    Full,
}

impl Kind {
    fn sql(self) -> &'static str {
        match self {
            Kind::Inner => "JOIN",
            Kind::Left => "LEFT JOIN",
            Kind::Right => "RIGHT JOIN",
            Kind::Full => "FULL JOIN",
        }
    }
}

/// The join by hand: rows `c.k | c.n | v.k | v.n | c's start | v's start`,
/// `NULL` on a padded side, sorted as [`rows`] sorts.
fn expected(
    kind: Kind,
    left: &HashMap<(i64, i64), i64>,
    right: &HashMap<(i64, i64), i64>,
) -> Vec<String> {
    let side = |cell: Option<(&(i64, i64), &i64)>| match cell {
        Some(((k, ws), n)) => (format!("{k} | {n}"), ws.to_string()),
        None => ("NULL | NULL".to_string(), "NULL".to_string()),
    };
    let row = |l: Option<(&(i64, i64), &i64)>, r: Option<(&(i64, i64), &i64)>| {
        let ((lc, lw), (rc, rw)) = (side(l), side(r));
        format!("{lc} | {rc} | {lw} | {rw}")
    };
    let mut out = Vec::new();
    for (cell, n) in left {
        match right.get_key_value(cell) {
            Some(r) => out.push(row(Some((cell, n)), Some(r))),
            None if matches!(kind, Kind::Left | Kind::Full) => out.push(row(Some((cell, n)), None)),
            None => {}
        }
    }
    if matches!(kind, Kind::Right | Kind::Full) {
        for (cell, n) in right {
            if !left.contains_key(cell) {
                out.push(row(None, Some((cell, n))));
            }
        }
    }
    out.sort();
    out
}

/// Clicks (keys 0..20, from 0 s) and views (keys 10..30, from 12 s): some
/// keys only ever on one side, some windows only on one side, and within
/// shared keys and windows cells that only one side has.
struct Inputs {
    _dir: tempfile::TempDir,
    clicks: Vec<(i64, i64)>,
    views: Vec<(i64, i64)>,
    prelude: String,
}

fn inputs(left_size: &str, right_size: &str) -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let clicks = generate(7, 300, 0, 0);
    let views = generate(11, 300, 10, 12_000);
    let clicks_path = write_jsonl(&dir, "clicks.jsonl", &clicks);
    let views_path = write_jsonl(&dir, "views.jsonl", &views);
    let prelude = format!(
        "CREATE TABLE clicks (k BIGINT, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH (connector = 'file', path = '{clicks_path}');
        CREATE TABLE views (k BIGINT, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH (connector = 'file', path = '{views_path}');
        CREATE TABLE out WITH (connector = 'console');
        CREATE VIEW c AS SELECT k, tumble(ts, INTERVAL {left_size}) AS w, count(*) AS n
            FROM clicks GROUP BY k, tumble(ts, INTERVAL {left_size});
        CREATE VIEW v AS SELECT k, tumble(ts, INTERVAL {right_size}) AS w, count(*) AS n
            FROM views GROUP BY k, tumble(ts, INTERVAL {right_size});
        "
    );
    Inputs {
        _dir: dir,
        clicks,
        views,
        prelude,
    }
}

fn join_sql(inputs: &Inputs, kind: Kind, on_window: &str) -> String {
    format!(
        "{}INSERT INTO out
        SELECT c.k, c.n, v.k, v.n, CAST(c.w['start'] AS BIGINT) AS cws, CAST(v.w['start'] AS BIGINT) AS vws
        FROM c {} v ON c.k = v.k AND {on_window};",
        inputs.prelude,
        kind.sql()
    )
}

fn explain(sql: &str) -> String {
    millrace_sql::SqlPipeline::plan_with(sql, &Default::default())
        .unwrap_or_else(|e| panic!("plan failed: {e}"))
        .explain()
        .unwrap()
}

/// Runs `sql` at parallelism 1 and 2; the rows of both runs (which must
/// agree), after checking no row was late.
fn run(sql: &str) -> Vec<String> {
    let mut results = Vec::new();
    for parallelism in ["1", "2"] {
        let (batches, summary) = run_sql(sql, &[("parallelism", parallelism)]);
        assert_eq!(
            late_rows(&summary),
            0,
            "late rows at parallelism {parallelism}"
        );
        results.push(rows(&batches));
    }
    assert_eq!(results[0], results[1], "parallelism 1 and 2 disagree");
    results.pop().unwrap()
}

/// The inputs hold every case an outer join pads: checked so that the
/// comparisons below cannot pass on inputs where the kinds coincide.
#[test]
fn the_inputs_have_matched_and_unmatched_cells_on_both_sides() {
    let i = inputs("'10' SECOND", "'10' SECOND");
    let (l, r) = (counts(&i.clicks), counts(&i.views));
    let both = l.keys().filter(|c| r.contains_key(c)).count();
    let left_only = l.keys().filter(|c| !r.contains_key(c)).collect::<Vec<_>>();
    let right_only = r.keys().filter(|c| !l.contains_key(c)).collect::<Vec<_>>();
    assert!(both > 20, "{both} matched cells");
    // Unmatched cells of keys both sides have (10..20), not only other keys.
    assert!(left_only.iter().any(|(k, _)| (10..20).contains(k)));
    assert!(right_only.iter().any(|(k, _)| (10..20).contains(k)));
    // Windows only one side has: the clicks' first, the views' last.
    let windows = |m: &HashMap<(i64, i64), i64>| {
        m.keys()
            .map(|(_, w)| *w)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(windows(&l).difference(&windows(&r)).next().is_some());
    assert!(windows(&r).difference(&windows(&l)).next().is_some());
}

/// Inner, left, right and full joins of the two counts on key and window
/// give exactly the hand-computed rows, nulls where a side is padded.
#[test]
fn outer_window_joins_of_counts_pad_the_other_side_with_nulls() {
    let i = inputs("'10' SECOND", "'10' SECOND");
    let (l, r) = (counts(&i.clicks), counts(&i.views));
    let mut sizes = BTreeMap::new();
    for kind in [Kind::Inner, Kind::Left, Kind::Right, Kind::Full] {
        let sql = join_sql(&i, kind, "c.w = v.w");
        let got = run(&sql);
        let want = expected(kind, &l, &r);
        assert_eq!(got, want, "{kind:?} join");
        sizes.insert(format!("{kind:?}"), got.len());
    }
    // The kinds differ on these inputs: inner < left, right < full.
    assert!(sizes["Inner"] < sizes["Left"] && sizes["Left"] < sizes["Full"]);
    assert!(sizes["Inner"] < sizes["Right"] && sizes["Right"] < sizes["Full"]);
}

/// Equal starts, equal ends, or both, of equally sized windows are the same
/// window: planned as the window join of `c.w = v.w`, with its rows.
#[test]
fn equal_window_bounds_join_like_equal_windows() {
    let i = inputs("'10' SECOND", "'10' SECOND");
    let (l, r) = (counts(&i.clicks), counts(&i.views));
    for kind in [Kind::Inner, Kind::Left, Kind::Full] {
        let whole = join_sql(&i, kind, "c.w = v.w");
        let want = expected(kind, &l, &r);
        assert_eq!(run(&whole), want, "{kind:?} join on c.w = v.w");
        for bounds in [
            "c.w['start'] = v.w['start']",
            "c.w['end'] = v.w['end']",
            "c.w['start'] = v.w['start'] AND c.w['end'] = v.w['end']",
            "v.w['start'] = c.w['start']",
        ] {
            let sql = join_sql(&i, kind, bounds);
            let plan = explain(&sql);
            assert!(
                plan.contains("window_join["),
                "{kind:?} join on {bounds}: {plan}"
            );
            assert_eq!(run(&sql), want, "{kind:?} join on {bounds}");
        }
    }
    // Without a key: every pair of counts in the same window (rows routed
    // by the window column).
    let keyless = |on: &str| {
        format!(
            "{}INSERT INTO out
            SELECT c.k, c.n, v.k, v.n, CAST(c.w['start'] AS BIGINT) AS cws, CAST(v.w['start'] AS BIGINT) AS vws
            FROM c JOIN v ON {on};",
            i.prelude
        )
    };
    let mut want = Vec::new();
    for ((ck, cw), cn) in &l {
        for ((vk, vw), vn) in &r {
            if cw == vw {
                want.push(format!("{ck} | {cn} | {vk} | {vn} | {cw} | {vw}"));
            }
        }
    }
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(run(&keyless("c.w = v.w")), want, "keyless on c.w = v.w");
    let starts = keyless("c.w['start'] = v.w['start']");
    assert!(explain(&starts).contains("window_join["));
    assert_eq!(run(&starts), want, "keyless on equal starts");
}

/// Bounds of window function calls work as the calls do: the raw clicks
/// and views joined within equal 10 s windows by their starts.
#[test]
fn equal_bounds_of_window_calls_join_like_equal_calls() {
    let i = inputs("'10' SECOND", "'10' SECOND");
    let sql = |on: &str| {
        format!(
            "{}INSERT INTO out
            SELECT c.k, c.ts, v.ts FROM clicks c JOIN views v ON c.k = v.k AND {on};",
            i.prelude
        )
    };
    let calls = sql("tumble(c.ts, INTERVAL '10' SECOND) = tumble(v.ts, INTERVAL '10' SECOND)");
    let starts = sql(
        "tumble(c.ts, INTERVAL '10' SECOND)['start'] = tumble(v.ts, INTERVAL '10' SECOND)['start']",
    );
    let mut want = Vec::new();
    for &(ck, cts) in &i.clicks {
        for &(vk, vts) in &i.views {
            if ck == vk && cts.div_euclid(SIZE_MS) == vts.div_euclid(SIZE_MS) {
                want.push(format!("{ck} | {cts} | {vts}"));
            }
        }
    }
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(run(&calls), want);
    assert!(explain(&starts).contains("window_join["));
    assert_eq!(run(&starts), want);
}

/// Equal starts of a 10 s window and a 5 s window are not the same window
/// (`[0, 10 s)` and `[0, 5 s)` share a start): refused, naming both windows
/// and the fix; equal ends likewise, and a start matched with an end.
#[test]
fn equal_bounds_of_differently_sized_windows_are_refused() {
    let i = inputs("'10' SECOND", "'5' SECOND");
    let refused = |on: &str| {
        let sql = join_sql(&i, Kind::Inner, on);
        match millrace_sql::SqlPipeline::plan_with(&sql, &Default::default()) {
            Ok(_) => panic!("planning should fail: ON ... {on}"),
            Err(e) => e.message,
        }
    };
    for on in ["c.w['start'] = v.w['start']", "c.w['end'] = v.w['end']"] {
        let e = refused(on);
        assert!(e.contains("tumble 10s and tumble 5s"), "{e}");
        assert!(e.contains("same window"), "{e}");
    }
    let e = refused("c.w = v.w");
    assert!(e.contains("tumble 10s and tumble 5s"), "{e}");

    let same = inputs("'10' SECOND", "'10' SECOND");
    let sql = join_sql(&same, Kind::Inner, "c.w['start'] = v.w['end']");
    let e = match millrace_sql::SqlPipeline::plan_with(&sql, &Default::default()) {
        Ok(_) => panic!("planning should fail: a start matched with an end"),
        Err(e) => e.message,
    };
    assert!(
        e.contains("compares the start of one window with the end"),
        "{e}"
    );
}

/// After a left join, the left window is still a window (a later query can
/// group by it); the right one, null in padded rows, is not.
#[test]
fn a_padded_sides_window_is_no_longer_a_window() {
    let i = inputs("'10' SECOND", "'10' SECOND");
    let sql = |by: &str| {
        format!(
            "{}CREATE VIEW j AS SELECT c.w AS cw, v.w AS vw, c.n AS cn
                FROM c LEFT JOIN v ON c.k = v.k AND c.w = v.w;
            INSERT INTO out SELECT CAST({by}['start'] AS BIGINT) AS ws, sum(cn) AS n FROM j GROUP BY {by};",
            i.prelude
        )
    };
    // Per left window, the sum of its counts: every click in it.
    let mut want: BTreeMap<i64, i64> = BTreeMap::new();
    for &(_, ts) in &i.clicks {
        *want.entry(ts - ts.rem_euclid(SIZE_MS)).or_insert(0) += 1;
    }
    let mut want: Vec<String> = want.iter().map(|(w, n)| format!("{w} | {n}")).collect();
    want.sort();
    assert_eq!(run(&sql("cw")), want);
    let e = match millrace_sql::SqlPipeline::plan_with(&sql("vw"), &Default::default()) {
        Ok(_) => panic!("grouping by the padded side's window should be refused"),
        Err(e) => e.message,
    };
    assert!(e.contains("needs a window"), "{e}");
}

/// Keys computed on both sides (`c.k * 2 = v.k * 2`) of inputs of the same
/// width: the same rows as the plain keys (the computed key columns of the
/// two sides are told apart, and dropped from the output).
#[test]
fn computed_keys_on_both_sides_join_like_plain_keys() {
    let i = inputs("'10' SECOND", "'10' SECOND");
    let (l, r) = (counts(&i.clicks), counts(&i.views));
    for kind in [Kind::Inner, Kind::Left, Kind::Full] {
        let sql = format!(
            "{}INSERT INTO out
            SELECT c.k, c.n, v.k, v.n, CAST(c.w['start'] AS BIGINT) AS cws, CAST(v.w['start'] AS BIGINT) AS vws
            FROM c {} v ON c.k * 2 = v.k * 2 AND c.w = v.w;",
            i.prelude,
            kind.sql()
        );
        assert_eq!(run(&sql), expected(kind, &l, &r), "{kind:?} join");
    }
}
