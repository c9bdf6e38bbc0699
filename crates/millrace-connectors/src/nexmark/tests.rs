//! Tests of the per-kind and combined Nexmark sources.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter;
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
use arrow::util::display::array_value_to_string;
use millrace_core::ENTERED_COLUMN;
use millrace_core::batch::strip_entered;
use millrace_core::state::{scalar, scalars};

use super::*;
use crate::resume_check::check_resume_everywhere;

fn cfg(events: u64) -> NexmarkConfig {
    NexmarkConfig {
        events: Some(events),
        ..NexmarkConfig::default()
    }
}

/// Every batch of one reader, polled with `max_rows` until exhausted.
fn drain(factory: &NexmarkSource, instance: usize, p: usize, max_rows: usize) -> Vec<RecordBatch> {
    let mut reader = factory.create(instance, p).unwrap();
    let mut out = Vec::new();
    loop {
        match reader.poll_batch(max_rows).unwrap() {
            SourcePoll::Batch(b) => {
                assert!(b.num_rows() > 0 && b.num_rows() <= max_rows);
                out.push(b);
            }
            SourcePoll::Exhausted => return out,
            SourcePoll::Pending { .. } => panic!("unpaced reader returned Pending"),
        }
    }
}

/// Rows as strings (without the entered column), for exact comparison.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let b = strip_entered(b);
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, r).unwrap())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

fn i64s(batches: &[RecordBatch], col: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(col).unwrap();
            match c.data_type() {
                DataType::Int64 => c.as_primitive::<Int64Type>().values().to_vec(),
                _ => c
                    .as_primitive::<TimestampMillisecondType>()
                    .values()
                    .to_vec(),
            }
        })
        .collect()
}

/// Event number of the k-th bid (k from 0).
fn bid_n(k: u64) -> u64 {
    k / 46 * 50 + 4 + k % 46
}

/// Event number of the k-th auction (k from 0).
fn auction_n(k: u64) -> u64 {
    k / 3 * 50 + 1 + k % 3
}

#[test]
fn batches_have_schema_and_entered_column_last() {
    for kind in [NexmarkKind::Bid, NexmarkKind::Person, NexmarkKind::Auction] {
        let f = NexmarkSource::new(kind, cfg(500));
        let batches = drain(&f, 0, 1, 64);
        let b = &batches[0];
        let schema = b.schema();
        let last = schema.fields().last().unwrap();
        assert_eq!(last.name(), ENTERED_COLUMN);
        assert_eq!(last.data_type(), &DataType::Int64);
        assert_eq!(strip_entered(b).schema(), NexmarkSource::schema_of(kind));
        assert!(b.columns().iter().all(|c| c.null_count() == 0));
    }
}

#[test]
fn same_seed_same_rows_whatever_the_batch_size() {
    let a = rows(&drain(&NexmarkSource::bids(cfg(3000)), 0, 1, 1000));
    let b = rows(&drain(&NexmarkSource::bids(cfg(3000)), 0, 1, 7));
    assert_eq!(a.len(), 2760);
    assert_eq!(a, b);
    let a = rows(&drain(&NexmarkSource::auctions(cfg(3000)), 0, 1, 13));
    let b = rows(&drain(&NexmarkSource::auctions(cfg(3000)), 0, 1, 500));
    assert_eq!(a, b);
}

#[test]
fn different_seed_different_rows() {
    let other = NexmarkConfig {
        seed: 43,
        ..cfg(1000)
    };
    for kind in [NexmarkKind::Bid, NexmarkKind::Person, NexmarkKind::Auction] {
        let a = rows(&drain(&NexmarkSource::new(kind, cfg(1000)), 0, 1, 100));
        let b = rows(&drain(&NexmarkSource::new(kind, other.clone()), 0, 1, 100));
        assert_eq!(a.len(), b.len());
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(
            same < a.len() / 10,
            "{kind:?}: {same} of {} rows equal",
            a.len()
        );
    }
}

#[test]
fn instances_together_equal_the_single_sequence() {
    for kind in [NexmarkKind::Bid, NexmarkKind::Person, NexmarkKind::Auction] {
        let f = NexmarkSource::new(kind, cfg(5000));
        let mut single = rows(&drain(&f, 0, 1, 256));
        single.sort();
        for p in [2usize, 3] {
            let mut union = Vec::new();
            for i in 0..p {
                let batches = drain(&f, i, p, 100);
                // Each instance's event time never decreases.
                let times = i64s(&batches, "date_time");
                assert!(times.windows(2).all(|w| w[0] <= w[1]));
                union.extend(rows(&batches));
            }
            union.sort();
            assert_eq!(union, single, "{kind:?} at parallelism {p}");
        }
    }
}

#[test]
fn mix_is_2_6_92_per_50_events() {
    let n = 50 * 37;
    let persons = count(&drain(&NexmarkSource::persons(cfg(n)), 0, 1, 100));
    let auctions = count(&drain(&NexmarkSource::auctions(cfg(n)), 0, 1, 100));
    let bids = count(&drain(&NexmarkSource::bids(cfg(n)), 0, 1, 100));
    assert_eq!((persons, auctions, bids), (37, 111, 1702));
    // A bound inside an epoch cuts the kinds at the right places.
    let n = 50 * 37 + 3;
    let persons = count(&drain(&NexmarkSource::persons(cfg(n)), 0, 1, 100));
    let auctions = count(&drain(&NexmarkSource::auctions(cfg(n)), 0, 1, 100));
    let bids = count(&drain(&NexmarkSource::bids(cfg(n)), 0, 1, 100));
    assert_eq!((persons, auctions, bids), (38, 113, 1702));
}

#[test]
fn ids_are_dense_from_1000() {
    let persons = i64s(&drain(&NexmarkSource::persons(cfg(10_000)), 0, 1, 64), "id");
    let want: Vec<i64> = (1000..1200).collect();
    assert_eq!(persons, want);
    let auctions = i64s(
        &drain(&NexmarkSource::auctions(cfg(10_000)), 0, 1, 64),
        "id",
    );
    let want: Vec<i64> = (1000..1600).collect();
    assert_eq!(auctions, want);
}

#[test]
fn auction_fields_follow_the_rules() {
    let batches = drain(&NexmarkSource::auctions(cfg(50_000)), 0, 1, 500);
    let cats = i64s(&batches, "category");
    assert!(cats.iter().all(|c| (10..=14).contains(c)));
    let distinct: HashSet<i64> = cats.iter().copied().collect();
    assert_eq!(distinct.len(), 5);
    let initial = i64s(&batches, "initial_bid");
    let reserve = i64s(&batches, "reserve");
    assert!(initial.iter().all(|p| (100..=100_000_000).contains(p)));
    assert!(initial.iter().zip(&reserve).all(|(i, r)| r > i));
    // Expiry: after the auction opens, within twice the time of 100 auctions
    // (1666 events = 166.6 ms at 10k events/s, so at most 1 + 2 * 167 ms).
    let opened = i64s(&batches, "date_time");
    let expires = i64s(&batches, "expires");
    assert!(
        opened
            .iter()
            .zip(&expires)
            .all(|(o, e)| *e > *o && *e <= *o + 1 + 2 * 167)
    );
    // Sellers exist or are about to register (at most 10 ahead).
    for (k, seller) in i64s(&batches, "seller").iter().enumerate() {
        let last_person = 1000 + last_base0_person_id(auction_n(k as u64));
        assert!(*seller >= 1000 && *seller <= last_person + 10);
    }
    for b in &batches {
        let names = b.column_by_name("item_name").unwrap().as_string::<i32>();
        let descs = b.column_by_name("description").unwrap().as_string::<i32>();
        for r in 0..b.num_rows() {
            assert!((3..20).contains(&names.value(r).len()));
            assert!((3..100).contains(&descs.value(r).len()));
        }
    }
}

#[test]
fn bid_prices_are_log_uniform_in_range() {
    let batches = drain(&NexmarkSource::bids(cfg(100_000)), 0, 1, 4096);
    let prices = i64s(&batches, "price");
    assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
    // Log-uniform: each decade 10^2..10^8 gets about 1/6 of the bids.
    let mut decades = [0usize; 6];
    for p in &prices {
        let d = ((*p as f64).log10().floor() as usize).clamp(2, 7) - 2;
        decades[d] += 1;
    }
    for d in decades {
        let share = d as f64 / prices.len() as f64;
        assert!((0.14..0.19).contains(&share), "decade share {share}");
    }
}

#[test]
fn event_time_follows_the_formula() {
    let config = NexmarkConfig {
        event_rate: 3000.0,
        base_time_ms: 5,
        ..cfg(20_000)
    };
    let times = i64s(
        &drain(&NexmarkSource::bids(config.clone()), 0, 1, 999),
        "date_time",
    );
    for (k, t) in times.iter().enumerate() {
        let n = bid_n(k as u64) as i64;
        assert_eq!(*t, 5 + n * 1000 / 3000, "bid {k}");
    }
    let times = i64s(
        &drain(&NexmarkSource::persons(config), 0, 1, 999),
        "date_time",
    );
    for (k, t) in times.iter().enumerate() {
        assert_eq!(*t, 5 + (k as i64 * 50) / 3, "person {k}");
    }
}

#[test]
fn events_bound_is_exact() {
    let f = NexmarkSource::bids(cfg(1004));
    let mut reader = f.create(0, 1).unwrap();
    let SourcePoll::Batch(b) = reader.poll_batch(10_000).unwrap() else {
        panic!("expected a batch");
    };
    // Events 0..1004: 20 full epochs (920 bids) and none of event 1000..1003.
    assert_eq!(b.num_rows(), 920);
    assert!(matches!(
        reader.poll_batch(10).unwrap(),
        SourcePoll::Exhausted
    ));
    assert!(matches!(
        reader.poll_batch(10).unwrap(),
        SourcePoll::Exhausted
    ));
    let f = NexmarkSource::bids(cfg(1005));
    assert_eq!(count(&drain(&f, 0, 1, 100)), 921);
    assert_eq!(count(&drain(&NexmarkSource::bids(cfg(0)), 0, 1, 100)), 0);
}

#[test]
fn hot_ids_have_their_share() {
    let batches = drain(&NexmarkSource::bids(cfg(200_000)), 0, 1, 4096);
    let auctions = i64s(&batches, "auction");
    let bidders = i64s(&batches, "bidder");
    let (mut hot_auction, mut hot_bidder) = (0usize, 0usize);
    for (k, (a, b)) in auctions.iter().zip(&bidders).enumerate() {
        let n = bid_n(k as u64);
        if *a == 1000 + last_base0_auction_id(n) / 100 * 100 {
            hot_auction += 1;
        }
        if *b == 1000 + last_base0_person_id(n) / 100 * 100 + 1 {
            hot_bidder += 1;
        }
        // Non-hot auctions are among the newest (last - 100 .. last + 10).
        let last = 1000 + last_base0_auction_id(n);
        assert!(*a >= 1000 && *a <= last + 10);
    }
    let total = auctions.len() as f64;
    let a = hot_auction as f64 / total;
    let b = hot_bidder as f64 / total;
    assert!((0.49..0.53).contains(&a), "hot auction share {a}");
    assert!((0.74..0.77).contains(&b), "hot bidder share {b}");

    let sellers = drain(&NexmarkSource::auctions(cfg(200_000)), 0, 1, 4096);
    let hot = i64s(&sellers, "seller")
        .iter()
        .enumerate()
        .filter(|(k, s)| **s == 1000 + last_base0_person_id(auction_n(*k as u64)) / 100 * 100)
        .count();
    let s = hot as f64 / sellers.iter().map(|b| b.num_rows()).sum::<usize>() as f64;
    assert!((0.74..0.77).contains(&s), "hot seller share {s}");
}

#[test]
fn channels_and_urls_follow_the_rules() {
    let batches = drain(&NexmarkSource::bids(cfg(50_000)), 0, 1, 4096);
    let mut hot = 0usize;
    let mut with_id = 0usize;
    let mut other = 0usize;
    for b in &batches {
        let ch = b.column_by_name("channel").unwrap().as_string::<i32>();
        let url = b.column_by_name("url").unwrap().as_string::<i32>();
        let extra = b.column_by_name("extra").unwrap().as_string::<i32>();
        for r in 0..b.num_rows() {
            let (c, u) = (ch.value(r), url.value(r));
            assert!(u.starts_with("https://www.nexmark.com/"));
            assert_eq!(u.split('/').count(), 7, "{u}");
            if let Some(i) = HOT_CHANNELS.iter().position(|h| *h == c) {
                assert_eq!(u, HOT_URLS[i]);
                hot += 1;
            } else {
                let i: u64 = c.strip_prefix("channel-").unwrap().parse().unwrap();
                assert!(i < CHANNELS_NUMBER);
                other += 1;
                if u.contains("&channel_id=") {
                    with_id += 1;
                }
            }
            // Bids pad to ~100 bytes: 68 bytes of extra ±20%.
            assert!((54..83).contains(&extra.value(r).len()));
        }
    }
    let share = hot as f64 / (hot + other) as f64;
    assert!((0.48..0.52).contains(&share), "hot channel share {share}");
    let share = with_id as f64 / other as f64;
    assert!((0.85..0.95).contains(&share), "channel_id share {share}");
}

#[test]
fn persons_follow_the_rules() {
    let batches = drain(&NexmarkSource::persons(cfg(100_000)), 0, 1, 512);
    let mut states = HashSet::new();
    for b in &batches {
        let name = b.column_by_name("name").unwrap().as_string::<i32>();
        let email = b
            .column_by_name("email_address")
            .unwrap()
            .as_string::<i32>();
        let card = b.column_by_name("credit_card").unwrap().as_string::<i32>();
        let city = b.column_by_name("city").unwrap().as_string::<i32>();
        let state = b.column_by_name("state").unwrap().as_string::<i32>();
        let extra = b.column_by_name("extra").unwrap().as_string::<i32>();
        for r in 0..b.num_rows() {
            let (first, last) = name.value(r).split_once(' ').unwrap();
            assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last));
            let e = email.value(r);
            assert!(e.ends_with(".com") && e.contains('@'), "{e}");
            let c = card.value(r);
            assert_eq!(c.len(), 19);
            assert!(
                c.split(' ')
                    .all(|g| g.len() == 4 && g.bytes().all(|d| d.is_ascii_digit()))
            );
            assert!(CITIES.contains(&city.value(r)));
            assert!(STATES.contains(&state.value(r)));
            states.insert(state.value(r).to_string());
            // The whole record comes to about 200 bytes.
            let size = 8
                + name.value(r).len()
                + e.len()
                + c.len()
                + city.value(r).len()
                + state.value(r).len()
                + extra.value(r).len();
            assert!((150..=250).contains(&size), "person of {size} bytes");
        }
    }
    assert_eq!(states.len(), 6);
}

#[test]
fn paced_reader_waits_for_due_time() {
    // 1e-3 events/s: event n is due n * 1e12 ns after the start.
    let config = NexmarkConfig {
        emit_rate: Some(1e-3),
        ..NexmarkConfig::default()
    };
    let bids = NexmarkSource::bids(config.clone());
    let mut reader = bids.create(0, 1).unwrap();
    let poll = reader.poll_batch(100).unwrap();
    let start = *bids.start_ns.get().unwrap();
    // The first bid is event 4, due 4000 s after the start.
    match poll {
        SourcePoll::Pending { wake_at_ns } => {
            assert_eq!(wake_at_ns, Some(start + 4_000_000_000_000));
        }
        other => panic!("expected Pending, got {other:?}"),
    }

    let persons = NexmarkSource::persons(config);
    let mut r0 = persons.create(0, 2).unwrap();
    let mut r1 = persons.create(1, 2).unwrap();
    // Event 0 is due at the start: it comes out, stamped with its due time.
    let SourcePoll::Batch(b) = r0.poll_batch(100).unwrap() else {
        panic!("event 0 is due at once");
    };
    let start = *persons.start_ns.get().unwrap();
    assert_eq!(b.num_rows(), 1);
    let entered = millrace_core::entered_column(&b).unwrap();
    assert_eq!(entered.value(0), start);
    match r0.poll_batch(100).unwrap() {
        SourcePoll::Pending { wake_at_ns } => {
            assert_eq!(wake_at_ns, Some(start + 50_000_000_000_000));
        }
        other => panic!("expected Pending, got {other:?}"),
    }
    // Persons are the even events 0, 50, 100...: instance 1 of 2 has none
    // and shares the same start.
    assert!(matches!(r1.poll_batch(100).unwrap(), SourcePoll::Exhausted));
}

#[test]
fn unpaced_entered_is_the_build_time() {
    let before = millrace_core::time::now_ns();
    let batches = drain(&NexmarkSource::bids(cfg(200)), 0, 1, 1000);
    let after = millrace_core::time::now_ns();
    let entered = millrace_core::entered_column(&batches[0]).unwrap();
    let first = entered.value(0);
    assert!(first >= before && first <= after);
    assert!(entered.values().iter().all(|v| *v == first));
}

#[test]
fn bad_configs_are_errors() {
    let f = NexmarkSource::bids(NexmarkConfig::default());
    assert!(f.create(0, 0).is_err());
    assert!(f.create(2, 2).is_err());
    for (rate, emit) in [
        (0.0, None),
        (f64::NAN, None),
        (1.0, Some(-1.0)),
        (1.0, Some(f64::INFINITY)),
    ] {
        let f = NexmarkSource::bids(NexmarkConfig {
            event_rate: rate,
            emit_rate: emit,
            ..NexmarkConfig::default()
        });
        assert!(f.create(0, 1).is_err(), "rate {rate} emit {emit:?}");
    }
}

#[test]
fn event_time_declaration() {
    let f = NexmarkSource::auctions(NexmarkConfig {
        max_out_of_orderness_ms: 1234,
        ..NexmarkConfig::default()
    });
    assert_eq!(f.event_time(), Some(EventTime::new("date_time", 1234)));
    assert_eq!(f.name(), "nexmark-auctions");
}

// ---- The combined source ------------------------------------------------------

fn event_types(batches: &[RecordBatch]) -> Vec<i32> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("event_type")
                .unwrap()
                .as_primitive::<Int32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// The rows of `kind` in combined batches, as a flat batch per input batch
/// (what a `bid` view over the combined source would give).
fn extract(batches: &[RecordBatch], kind: NexmarkKind) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let types = b
                .column_by_name("event_type")
                .unwrap()
                .as_primitive::<Int32Type>();
            let mask: BooleanArray = types
                .iter()
                .map(|t| Some(t == Some(kind.event_type())))
                .collect();
            let column = b.column_by_name(kind.column_name()).unwrap();
            let picked = filter(column, &mask).unwrap();
            RecordBatch::from(picked.as_struct().clone())
        })
        .collect()
}

#[test]
fn combined_schema_and_declarations() {
    let f = NexmarkSource::all(NexmarkConfig {
        max_out_of_orderness_ms: 4321,
        ..cfg(500)
    });
    assert_eq!(f.name(), "nexmark");
    assert_eq!(f.kind(), None);
    assert_eq!(NexmarkSource::bids(cfg(1)).kind(), Some(NexmarkKind::Bid));
    assert_eq!(f.event_time(), Some(EventTime::new("date_time", 4321)));
    let schema = f.schema();
    assert_eq!(schema, NexmarkSource::combined_schema());
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["event_type", "person", "auction", "bid", "date_time"]
    );
    let event_type = schema.field(0);
    assert_eq!(event_type.data_type(), &DataType::Int32);
    assert!(!event_type.is_nullable());
    for (i, kind) in NexmarkKind::ALL.into_iter().enumerate() {
        assert_eq!(kind.event_type(), i as i32);
        assert_eq!(NexmarkKind::from_event_type(i as i32), Some(kind));
        let field = schema.field(1 + i);
        assert_eq!(field.name(), kind.column_name());
        assert!(field.is_nullable());
        assert_eq!(
            field.data_type(),
            &DataType::Struct(NexmarkSource::schema_of(kind).fields().clone())
        );
    }
    assert_eq!(NexmarkKind::from_event_type(3), None);
    assert_eq!(NexmarkKind::from_event_type(-1), None);
    let date_time = schema.field(4);
    assert_eq!(
        date_time.data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, None)
    );
    assert!(!date_time.is_nullable());

    for b in drain(&f, 0, 1, 64) {
        let last = b.schema().fields().last().unwrap().clone();
        assert_eq!(last.name(), ENTERED_COLUMN);
        assert_eq!(strip_entered(&b).schema(), NexmarkSource::combined_schema());
        for name in ["event_type", "date_time", ENTERED_COLUMN] {
            assert_eq!(b.column_by_name(name).unwrap().null_count(), 0);
        }
    }
}

#[test]
fn combined_rows_hold_exactly_their_kind() {
    let config = NexmarkConfig {
        event_rate: 3000.0,
        base_time_ms: 5,
        ..cfg(5000)
    };
    let batches = drain(&NexmarkSource::all(config), 0, 1, 333);
    assert_eq!(count(&batches), 5000);
    let mut n = 0u64;
    for b in &batches {
        let types = b
            .column_by_name("event_type")
            .unwrap()
            .as_primitive::<Int32Type>();
        let times = b
            .column_by_name("date_time")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        for r in 0..b.num_rows() {
            // At parallelism 1, row n of the output is event n.
            let kind = NexmarkKind::of_event(n);
            assert_eq!(types.value(r), kind.event_type(), "event {n}");
            assert_eq!(times.value(r), 5 + n as i64 * 1000 / 3000, "event {n}");
            for k in NexmarkKind::ALL {
                let s = b.column_by_name(k.column_name()).unwrap().as_struct();
                assert_eq!(s.is_valid(r), k == kind, "event {n}, {k:?}");
                // Children carry the struct's validity.
                for child in s.columns() {
                    assert_eq!(child.is_valid(r), k == kind, "event {n}, {k:?}");
                }
                if k == kind {
                    let dt = s.column_by_name("date_time").unwrap();
                    let dt = dt.as_primitive::<TimestampMillisecondType>();
                    assert_eq!(dt.value(r), times.value(r), "event {n}");
                }
            }
            n += 1;
        }
    }
}

#[test]
fn combined_equals_the_per_kind_sources() {
    for seed in [42u64, 7] {
        let config = NexmarkConfig {
            seed,
            ..cfg(10_007)
        };
        let all = NexmarkSource::all(config.clone());
        let coarse = drain(&all, 0, 1, 1000);
        // Batch boundaries do not matter.
        assert_eq!(rows(&coarse), rows(&drain(&all, 0, 1, 7)));
        for kind in NexmarkKind::ALL {
            let want = rows(&drain(&NexmarkSource::new(kind, config.clone()), 0, 1, 100));
            let got = extract(&coarse, kind);
            for b in &got {
                assert_eq!(b.schema(), NexmarkSource::schema_of(kind));
            }
            let got = rows(&got);
            assert!(!want.is_empty());
            assert_eq!(got.len(), want.len(), "seed {seed}, {kind:?}");
            assert_eq!(got, want, "seed {seed}, {kind:?}");
        }
    }
}

#[test]
fn combined_instances_together_equal_the_single_sequence() {
    let all = NexmarkSource::all(cfg(5003));
    let mut single = rows(&drain(&all, 0, 1, 256));
    single.sort();
    for p in [2usize, 3] {
        let mut union = Vec::new();
        for i in 0..p {
            let batches = drain(&all, i, p, 100);
            // Instance i emits exactly the events n % p == i, in order.
            let want: Vec<i32> = (i as u64..5003)
                .step_by(p)
                .map(|n| NexmarkKind::of_event(n).event_type())
                .collect();
            assert_eq!(event_types(&batches), want, "instance {i} of {p}");
            let times = i64s(&batches, "date_time");
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            union.extend(rows(&batches));
        }
        union.sort();
        assert_eq!(union, single, "parallelism {p}");
    }
}

#[test]
fn combined_events_bound_is_exact() {
    let f = NexmarkSource::all(cfg(1004));
    let mut reader = f.create(0, 1).unwrap();
    let SourcePoll::Batch(b) = reader.poll_batch(10_000).unwrap() else {
        panic!("expected a batch");
    };
    assert_eq!(b.num_rows(), 1004);
    let types = event_types(&[b]);
    let per_type = |t: i32| types.iter().filter(|x| **x == t).count();
    // 21 persons (0, 50, ..., 1000), 20 * 3 + 3 auctions, 20 * 46 bids.
    assert_eq!((per_type(0), per_type(1), per_type(2)), (21, 63, 920));
    for _ in 0..2 {
        assert!(matches!(
            reader.poll_batch(10).unwrap(),
            SourcePoll::Exhausted
        ));
    }
    assert_eq!(count(&drain(&f, 0, 2, 100)), 502);
    assert_eq!(count(&drain(&f, 1, 2, 100)), 502);
    let empty = NexmarkSource::all(cfg(0));
    assert!(matches!(
        empty.create(0, 1).unwrap().poll_batch(10).unwrap(),
        SourcePoll::Exhausted
    ));
}

#[test]
fn combined_paced_reader_waits_for_due_time() {
    // 1e-3 events/s: event n is due n * 1e12 ns after the start.
    let all = NexmarkSource::all(NexmarkConfig {
        emit_rate: Some(1e-3),
        ..NexmarkConfig::default()
    });
    let mut r0 = all.create(0, 2).unwrap();
    let mut r1 = all.create(1, 2).unwrap();
    let SourcePoll::Batch(b) = r0.poll_batch(100).unwrap() else {
        panic!("event 0 is due at once");
    };
    let start = *all.start_ns.get().unwrap();
    assert_eq!(b.num_rows(), 1);
    assert_eq!(millrace_core::entered_column(&b).unwrap().value(0), start);
    match r0.poll_batch(100).unwrap() {
        SourcePoll::Pending { wake_at_ns } => {
            assert_eq!(wake_at_ns, Some(start + 2_000_000_000_000));
        }
        other => panic!("expected Pending, got {other:?}"),
    }
    match r1.poll_batch(100).unwrap() {
        SourcePoll::Pending { wake_at_ns } => {
            assert_eq!(wake_at_ns, Some(start + 1_000_000_000_000));
        }
        other => panic!("expected Pending, got {other:?}"),
    }
}

#[test]
fn combined_bad_configs_are_errors() {
    let f = NexmarkSource::all(NexmarkConfig::default());
    assert!(f.create(0, 0).is_err());
    assert!(f.create(2, 2).is_err());
    let f = NexmarkSource::all(NexmarkConfig {
        event_rate: 0.0,
        ..NexmarkConfig::default()
    });
    assert!(f.create(0, 1).is_err());
}

// ---- positions --------------------------------------------------------------

/// Every exposure of the sequence.
fn all_exposures(config: NexmarkConfig) -> Vec<NexmarkSource> {
    vec![
        NexmarkSource::bids(config.clone()),
        NexmarkSource::persons(config.clone()),
        NexmarkSource::auctions(config.clone()),
        NexmarkSource::all(config),
    ]
}

#[test]
fn a_resumed_reader_continues_with_the_same_rows() {
    for source in all_exposures(cfg(2000)) {
        // Cuts: before the first batch, after a few, in the middle, after the
        // last batch of a single instance (not yet exhausted) and after
        // `Exhausted`; two instances reach their end about half way.
        let batches = drain(&source, 0, 1, 64).len();
        let cuts = [0, 1, 3, batches / 2, batches, batches + 1];
        let outcomes = check_resume_everywhere(&source, &[1, 2], 64, &cuts, &[]);
        // The last cut is past the end: its position says exhausted.
        for r in outcomes.iter().filter(|r| r.exhausted_at_cut) {
            let table = r.position.table(&source.name()).unwrap();
            assert_eq!(scalar(table, "exhausted").unwrap(), Some(1));
            assert_eq!(scalar(table, "next_event").unwrap(), None);
        }
        assert!(outcomes.iter().any(|r| r.exhausted_at_cut));
    }
}

#[test]
fn the_position_is_the_next_event_number() {
    let source = NexmarkSource::bids(cfg(2000));
    let mut reader = source.create(1, 2).unwrap();
    // Instance 1 of 2 emits the odd bids: events 5, 7, 9, then 11.
    let SourcePoll::Batch(first) = reader.poll_batch(3).unwrap() else {
        panic!("expected a batch");
    };
    assert_eq!(first.num_rows(), 3);
    let position = reader.position().unwrap().unwrap();
    let table = position.table("nexmark-bids").unwrap();
    assert_eq!(scalar(table, "next_event").unwrap(), Some(11));
    assert_eq!(scalar(table, "exhausted").unwrap(), Some(0));
    assert_eq!(scalar(table, "instance").unwrap(), Some(1));
    assert_eq!(scalar(table, "parallelism").unwrap(), Some(2));
}

#[test]
fn an_exhausted_position_gives_an_exhausted_reader() {
    let source = NexmarkSource::all(cfg(100));
    let mut reader = source.create(0, 1).unwrap();
    while !matches!(reader.poll_batch(1000).unwrap(), SourcePoll::Exhausted) {}
    let position = reader.position().unwrap().unwrap();
    let mut fresh = source.create(0, 1).unwrap();
    fresh.seek(&position).unwrap();
    assert!(matches!(
        fresh.poll_batch(1000).unwrap(),
        SourcePoll::Exhausted
    ));
}

#[test]
fn foreign_positions_are_refused_by_name() {
    let bids = NexmarkSource::bids(cfg(1000));
    let persons = NexmarkSource::persons(cfg(1000));
    let error = |source: &NexmarkSource, instance: usize, position: &Snapshot| {
        let mut reader = source.create(instance, 2).unwrap();
        reader.seek(position).unwrap_err().to_string()
    };

    let err = error(&bids, 0, &Snapshot::none());
    assert!(
        err.contains("nexmark-bids") && err.contains("no table"),
        "{err}"
    );

    let of_persons = persons.create(0, 2).unwrap().position().unwrap().unwrap();
    let err = error(&bids, 0, &of_persons);
    assert!(
        err.contains("'nexmark-bids'") && err.contains("nexmark-persons"),
        "{err}"
    );

    let of_instance_1 = bids.create(1, 2).unwrap().position().unwrap().unwrap();
    let err = error(&bids, 0, &of_instance_1);
    assert!(
        err.contains("instance 1 of 2") && err.contains("instance 0 of 2"),
        "{err}"
    );

    let broken = Snapshot::none().with(
        "nexmark-bids",
        scalars(&[("next_event", Some(4)), ("exhausted", Some(0))]),
    );
    let err = error(&bids, 0, &broken);
    assert!(err.contains("'instance' is missing"), "{err}");
}

#[test]
fn a_paced_reader_resumes_its_schedule_at_its_first_poll() {
    // One event per 1000 s: the first event of a schedule is due at once,
    // the next one far in the future, so nothing here depends on timing.
    let source = NexmarkSource::all(NexmarkConfig {
        emit_rate: Some(1e-3),
        ..NexmarkConfig::default()
    });
    // The factory's schedule started 10,000 s ago: events 0 to 10 are due.
    let long_ago = millrace_core::time::now_ns() - 10_000_000_000_000;
    source.start_ns.set(long_ago).unwrap();
    let mut original = source.create(0, 1).unwrap();
    let SourcePoll::Batch(first) = original.poll_batch(1).unwrap() else {
        panic!("event 0 is due");
    };
    assert_eq!(first.num_rows(), 1);
    let position = original.position().unwrap().unwrap();

    // The resumed reader does not inherit that schedule (it would emit
    // events 1 to 10 at once): its next event is due at its first poll, the
    // one after it 1000 s later.
    let mut resumed = source.create(0, 1).unwrap();
    resumed.seek(&position).unwrap();
    let SourcePoll::Batch(next) = resumed.poll_batch(10).unwrap() else {
        panic!("the resumed reader's next event is due at once");
    };
    assert_eq!(next.num_rows(), 1);
    assert_eq!(
        rows(std::slice::from_ref(&next)),
        rows(&drain(&NexmarkSource::all(cfg(2)), 0, 1, 10))[1..]
    );
    let restart = millrace_core::entered_column(&next).unwrap().value(0);
    match resumed.poll_batch(10).unwrap() {
        SourcePoll::Pending { wake_at_ns } => {
            assert_eq!(wake_at_ns, Some(restart + 1_000_000_000_000));
        }
        other => panic!("expected Pending, got {other:?}"),
    }
}

/// A generator's readers emit the event numbers of their instance from a
/// next number on; a split for another parallelism would need each new
/// reader to skip the numbers some old reader already emitted, which one
/// next number cannot say. So positions are refused, naming the source.
#[test]
fn positions_at_another_parallelism_are_refused_by_name() {
    let source = NexmarkSource::bids(cfg(1000));
    let positions: Vec<Snapshot> = (0..2)
        .map(|i| {
            let mut reader = source.create(i, 2).unwrap();
            reader.poll_batch(10 + i * 7).unwrap();
            reader.position().unwrap().unwrap()
        })
        .collect();
    let err = source.rescale(&positions, 3).unwrap_err().to_string();
    assert!(
        err.contains("source 'nexmark-bids' cannot be restored at another parallelism"),
        "{err}"
    );
    let fresh = source
        .rescale(&[Snapshot::none(), Snapshot::none()], 3)
        .unwrap();
    assert!(fresh.iter().all(Snapshot::is_empty));
}
