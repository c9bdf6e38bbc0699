//! Where a Kafka reader is, as a checkpoint keeps it.
//!
//! Table `partitions`, one row per partition of the instance: `partition`,
//! `next` (the offset of the next message to read), `stop` (the offset a
//! bounded read ends at; null when unbounded) and `max_event_time` (ms,
//! null before the first row). Table `counters` (`scalars`): `skipped`,
//! `dead_lettered`. The counters table is always there, so an instance
//! without partitions still has a position.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use millrace_core::Snapshot;
use millrace_core::state::{scalar, scalars};

/// One partition's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionProgress {
    pub partition: i32,
    pub next: i64,
    pub stop: Option<i64>,
    /// `i64::MIN` before the first row.
    pub max_event_time: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KafkaPosition {
    pub partitions: Vec<PartitionProgress>,
    pub skipped: u64,
    pub dead_lettered: u64,
}

impl KafkaPosition {
    pub fn to_snapshot(&self) -> Snapshot {
        let column = |f: &dyn Fn(&PartitionProgress) -> Option<i64>| {
            Arc::new(Int64Array::from_iter(self.partitions.iter().map(f))) as Arc<dyn Array>
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Int64, false),
            Field::new("next", DataType::Int64, false),
            Field::new("stop", DataType::Int64, true),
            Field::new("max_event_time", DataType::Int64, true),
        ]));
        let table = RecordBatch::try_new(
            schema,
            vec![
                column(&|p| Some(p.partition as i64)),
                column(&|p| Some(p.next)),
                column(&|p| p.stop),
                column(&|p| (p.max_event_time != i64::MIN).then_some(p.max_event_time)),
            ],
        )
        .expect("four Int64 columns of one length");
        Snapshot::none().with("partitions", table).with(
            "counters",
            scalars(&[
                ("skipped", Some(self.skipped as i64)),
                ("dead_lettered", Some(self.dead_lettered as i64)),
            ]),
        )
    }

    pub fn from_snapshot(snapshot: &Snapshot) -> Result<Self, String> {
        let table = snapshot.table("partitions").map_err(|e| e.to_string())?;
        let column = |name: &str| {
            table
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| format!("the position has no Int64 column '{name}'"))
        };
        let (partition, next, stop, max) = (
            column("partition")?,
            column("next")?,
            column("stop")?,
            column("max_event_time")?,
        );
        let partitions = (0..table.num_rows())
            .map(|i| {
                Ok(PartitionProgress {
                    partition: i32::try_from(partition.value(i))
                        .map_err(|_| format!("partition {} is out of range", partition.value(i)))?,
                    next: next.value(i),
                    stop: stop.is_valid(i).then(|| stop.value(i)),
                    max_event_time: if max.is_valid(i) {
                        max.value(i)
                    } else {
                        i64::MIN
                    },
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let counters = snapshot.table("counters").map_err(|e| e.to_string())?;
        let count = |name: &str| -> Result<u64, String> {
            Ok(scalar(counters, name)
                .map_err(|e| e.to_string())?
                .unwrap_or(0)
                .max(0) as u64)
        };
        Ok(KafkaPosition {
            partitions,
            skipped: count("skipped")?,
            dead_lettered: count("dead_lettered")?,
        })
    }
}

/// The positions of `parallelism` new readers continuing from `old` (every
/// instance of the old run): each partition's progress goes to the
/// instance that now reads it (`partition mod parallelism`), the counters,
/// added up, to instance 0. A partition found twice is an error: two old
/// readers cannot both have read it.
pub(crate) fn rescale(
    old: &[KafkaPosition],
    parallelism: usize,
) -> Result<Vec<KafkaPosition>, String> {
    let mut new = vec![KafkaPosition::default(); parallelism];
    let mut seen = std::collections::HashSet::new();
    for position in old {
        for p in &position.partitions {
            if !seen.insert(p.partition) {
                return Err(format!(
                    "partition {} is in the position of two instances",
                    p.partition
                ));
            }
            new[p.partition as usize % parallelism].partitions.push(*p);
        }
        new[0].skipped += position.skipped;
        new[0].dead_lettered += position.dead_lettered;
    }
    for position in &mut new {
        position.partitions.sort_by_key(|p| p.partition);
    }
    Ok(new)
}

/// The first row's value of an Int64 column, for tests.
#[cfg(test)]
fn first(batch: &RecordBatch, name: &str) -> i64 {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(partition: i32, next: i64) -> PartitionProgress {
        PartitionProgress {
            partition,
            next,
            stop: (partition % 2 == 0).then_some(100),
            max_event_time: if partition == 1 { i64::MIN } else { 5 },
        }
    }

    #[test]
    fn round_trips_including_an_instance_without_partitions() {
        for position in [
            KafkaPosition {
                partitions: vec![progress(0, 7), progress(1, 0)],
                skipped: 3,
                dead_lettered: 1,
            },
            KafkaPosition::default(),
        ] {
            let snapshot = position.to_snapshot();
            assert!(!snapshot.is_empty());
            assert_eq!(KafkaPosition::from_snapshot(&snapshot).unwrap(), position);
        }
        let snapshot = KafkaPosition::default().to_snapshot();
        assert_eq!(first(snapshot.table("counters").unwrap(), "skipped"), 0);
    }

    #[test]
    fn rescale_moves_each_partition_to_its_new_reader() {
        let old = vec![
            KafkaPosition {
                partitions: vec![progress(0, 10), progress(2, 12), progress(4, 14)],
                skipped: 1,
                dead_lettered: 2,
            },
            KafkaPosition {
                partitions: vec![progress(1, 11), progress(3, 13)],
                skipped: 4,
                dead_lettered: 0,
            },
        ];
        let new = rescale(&old, 3).unwrap();
        let parts = |i: usize| -> Vec<(i32, i64)> {
            new[i]
                .partitions
                .iter()
                .map(|p| (p.partition, p.next))
                .collect()
        };
        assert_eq!(parts(0), vec![(0, 10), (3, 13)]);
        assert_eq!(parts(1), vec![(1, 11), (4, 14)]);
        assert_eq!(parts(2), vec![(2, 12)]);
        assert_eq!((new[0].skipped, new[0].dead_lettered), (5, 2));
        assert_eq!((new[1].skipped, new[2].dead_lettered), (0, 0));
        // And back to one reader: everything in one position, in order.
        let one = rescale(&new, 1).unwrap();
        assert_eq!(one[0].partitions.len(), 5);
        assert_eq!(one[0].skipped, 5);
        assert!(rescale(&[old[0].clone(), old[0].clone()], 2).is_err());
    }
}
