//! How rows move from the instances of one operator to those of the next.
//!
//! * `Forward`: instance i to instance i (same parallelism; fused when possible).
//! * `Hash(keys)`: every row to the instance owning its key. Keys are hashed a
//!   column at a time, mapped to a key group and the group to an instance
//!   (`millrace_core::key_groups`, shared with the rescale of keyed state),
//!   then each target gets one `take`.
//! * `Broadcast`: every row to every instance.
//! * `RoundRobin`: whole batches to instances in turn.
//!
//! Control messages (watermarks, barriers, idle, end) always go to every
//! target: each downstream instance must see every input's progress.

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use millrace_core::key_groups::{hash_rows, instance_of_key_group, key_group_of_hash};
use millrace_core::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    Forward,
    Hash(Vec<String>),
    Broadcast,
    RoundRobin,
}

impl std::fmt::Display for Partitioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Partitioning::Forward => write!(f, "forward"),
            Partitioning::Hash(k) => write!(f, "hash({})", k.join(", ")),
            Partitioning::Broadcast => write!(f, "broadcast"),
            Partitioning::RoundRobin => write!(f, "round-robin"),
        }
    }
}

/// Splits `batch` by key: one batch (possibly empty, then `None`) per target.
pub fn hash_partition(
    batch: &RecordBatch,
    key_indices: &[usize],
    targets: usize,
) -> Result<Vec<Option<RecordBatch>>> {
    if targets == 1 {
        return Ok(vec![Some(batch.clone())]);
    }
    let hashes = hash_rows(batch, key_indices)?;
    let mut indices: Vec<Vec<u32>> =
        vec![Vec::with_capacity(batch.num_rows() / targets + 8); targets];
    for (row, h) in hashes.iter().enumerate() {
        let target = instance_of_key_group(key_group_of_hash(*h), targets);
        indices[target].push(row as u32);
    }
    indices
        .into_iter()
        .map(|idx| {
            if idx.is_empty() {
                Ok(None)
            } else if idx.len() == batch.num_rows() {
                Ok(Some(batch.clone()))
            } else {
                take_record_batch(batch, &UInt32Array::from(idx))
                    .map(Some)
                    .map_err(Error::from)
            }
        })
        .collect()
}

/// Resolves key column names against `schema` with an error that lists the
/// columns there are.
pub fn key_indices(schema: &Schema, keys: &[String]) -> Result<Vec<usize>> {
    keys.iter()
        .map(|k| {
            schema.index_of(k).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                Error::plan(format!(
                    "unknown key column '{k}'; available columns: {}",
                    names.join(", ")
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type};

    use super::*;

    fn batch(keys: Vec<i64>, names: Vec<&str>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn every_row_goes_to_exactly_one_target_and_equal_keys_to_the_same_one() {
        let keys: Vec<i64> = (0..5000).map(|i| i % 97).collect();
        let names: Vec<String> = keys.iter().map(|k| format!("n{}", k % 13)).collect();
        let b = batch(keys, names.iter().map(|s| s.as_str()).collect());
        for key_cols in [vec![0], vec![1], vec![0, 1]] {
            let parts = hash_partition(&b, &key_cols, 3).unwrap();
            let total: usize = parts.iter().flatten().map(|p| p.num_rows()).sum();
            assert_eq!(total, 5000);
            let mut owner: HashMap<(i64, String), usize> = HashMap::new();
            for (t, part) in parts.iter().enumerate() {
                let Some(part) = part else { continue };
                let k = part.column(0).as_primitive::<Int64Type>();
                let s = part.column(1).as_string::<i32>();
                for i in 0..part.num_rows() {
                    let key = match key_cols.as_slice() {
                        [0] => (k.value(i), String::new()),
                        [1] => (0, s.value(i).to_string()),
                        _ => (k.value(i), s.value(i).to_string()),
                    };
                    assert_eq!(
                        *owner.entry(key).or_insert(t),
                        t,
                        "key split across targets"
                    );
                }
            }
            assert!(
                parts.iter().all(|p| p.is_some()),
                "97 keys should reach all 3 targets"
            );
        }
    }

    #[test]
    fn unknown_key_column_lists_the_columns() {
        let b = batch(vec![1], vec!["x"]);
        let err = key_indices(&b.schema(), &["nope".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown key column 'nope'; available columns: k, s"),
            "{err}"
        );
    }
}
