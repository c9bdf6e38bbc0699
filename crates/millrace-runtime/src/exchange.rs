//! How rows move from the instances of one operator to those of the next.
//!
//! * `Forward`: instance i to instance i (same parallelism; fused when possible).
//! * `Hash(keys)`: every row to the instance owning its key. Keys are hashed a
//!   column at a time (vectorized), mapped to one of [`KEY_GROUPS`] key groups
//!   and the group to an instance, then each target gets one `take`. Key
//!   groups are the unit a later rescale moves, as in Flink.
//! * `Broadcast`: every row to every instance.
//! * `RoundRobin`: whole batches to instances in turn.
//!
//! Control messages (watermarks, barriers, idle, end) always go to every
//! target: each downstream instance must see every input's progress.

use std::hash::{BuildHasher, Hasher};

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::*;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use millrace_core::{Error, Result};

/// Number of key groups; an upper bound on a keyed operator's parallelism.
pub const KEY_GROUPS: usize = 128;

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

/// The instance that owns `key_group` among `parallelism` instances
/// (contiguous ranges of groups, so rescaling moves whole ranges).
#[inline]
pub fn instance_of_key_group(key_group: usize, parallelism: usize) -> usize {
    key_group * parallelism / KEY_GROUPS
}

#[inline]
fn mix(mut h: u64) -> u64 {
    // Finalizer of MurmurHash3: every input bit affects every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

const NULL_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

fn hash_bytes(state: &foldhash::fast::FixedState, bytes: &[u8]) -> u64 {
    let mut h = state.build_hasher();
    h.write(bytes);
    h.finish()
}

/// Combines the hash of every row of `array` into `hashes`.
fn hash_column(array: &ArrayRef, hashes: &mut [u64]) -> Result<()> {
    macro_rules! ints {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            for (i, h) in hashes.iter_mut().enumerate() {
                let v = if a.is_null(i) {
                    NULL_HASH
                } else {
                    a.value(i) as u64
                };
                *h = mix(*h ^ mix(v));
            }
        }};
    }
    let state = foldhash::fast::FixedState::with_seed(0x6d69_6c6c_7261_6365);
    match array.data_type() {
        DataType::Int64 => ints!(Int64Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int8 => ints!(Int8Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::Date32 => ints!(Date32Type),
        DataType::Timestamp(TimeUnit::Millisecond, _) => ints!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => ints!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => ints!(TimestampNanosecondType),
        DataType::Timestamp(TimeUnit::Second, _) => ints!(TimestampSecondType),
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            for (i, h) in hashes.iter_mut().enumerate() {
                let v = if a.is_null(i) {
                    NULL_HASH
                } else {
                    hash_bytes(&state, a.value(i).as_bytes())
                };
                *h = mix(*h ^ v);
            }
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            for (i, h) in hashes.iter_mut().enumerate() {
                let v = if a.is_null(i) {
                    NULL_HASH
                } else {
                    hash_bytes(&state, a.value(i).as_bytes())
                };
                *h = mix(*h ^ v);
            }
        }
        DataType::Struct(_) => {
            // Field by field (a window column is a struct of two
            // timestamps); a null struct hashes alike whatever its fields
            // hold underneath.
            let a = array.as_struct();
            let mut fields = vec![0u64; hashes.len()];
            for column in a.columns() {
                hash_column(column, &mut fields)?;
            }
            for (i, h) in hashes.iter_mut().enumerate() {
                let v = if a.is_null(i) { NULL_HASH } else { fields[i] };
                *h = mix(*h ^ v);
            }
        }
        other => {
            // Any other type: hash its row encoding (slower, fully general).
            let converter = RowConverter::new(vec![SortField::new(other.clone())])?;
            let rows = converter.convert_columns(std::slice::from_ref(array))?;
            for (i, h) in hashes.iter_mut().enumerate() {
                *h = mix(*h ^ hash_bytes(&state, rows.row(i).as_ref()));
            }
        }
    }
    Ok(())
}

/// Hash of the key columns `key_indices` for every row of `batch`.
pub fn hash_rows(batch: &RecordBatch, key_indices: &[usize]) -> Result<Vec<u64>> {
    let mut hashes = vec![0u64; batch.num_rows()];
    for &k in key_indices {
        hash_column(batch.column(k), &mut hashes)?;
    }
    Ok(hashes)
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
        let target = instance_of_key_group((*h % KEY_GROUPS as u64) as usize, targets);
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

    use arrow::array::{Int64Array, StringArray, StructArray};
    use arrow::buffer::NullBuffer;

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
    fn hashes_are_stable_and_nulls_hash_alike() {
        let a = batch(vec![1, 2, 3], vec!["x", "y", "z"]);
        let b = batch(vec![3, 2, 1], vec!["z", "y", "x"]);
        let (ha, hb) = (
            hash_rows(&a, &[0, 1]).unwrap(),
            hash_rows(&b, &[0, 1]).unwrap(),
        );
        assert_eq!(ha[0], hb[2]);
        assert_ne!(ha[0], ha[1]);
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let n = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![None, Some(1), None]))],
        )
        .unwrap();
        let h = hash_rows(&n, &[0]).unwrap();
        assert_eq!(h[0], h[2]);
    }

    #[test]
    fn struct_keys_hash_by_their_fields() {
        let fields = Fields::from(vec![
            Field::new("start", DataType::Int64, true),
            Field::new("end", DataType::Int64, true),
        ]);
        let windows = StructArray::new(
            fields.clone(),
            vec![
                Arc::new(Int64Array::from(vec![0, 10, 0, 7, 8])) as ArrayRef,
                Arc::new(Int64Array::from(vec![10, 20, 10, 9, 9])),
            ],
            Some(NullBuffer::from(vec![true, true, true, false, false])),
        );
        let schema = Arc::new(Schema::new(vec![Field::new(
            "w",
            DataType::Struct(fields),
            true,
        )]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(windows)]).unwrap();
        let h = hash_rows(&b, &[0]).unwrap();
        assert_eq!(h[0], h[2], "equal windows");
        assert_ne!(h[0], h[1], "different windows");
        assert_eq!(h[3], h[4], "null windows, whatever their fields hold");
        assert_ne!(h[3], h[0]);
    }

    #[test]
    fn key_groups_cover_every_instance_in_contiguous_ranges() {
        for p in 1..=8 {
            let owners: Vec<usize> = (0..KEY_GROUPS)
                .map(|g| instance_of_key_group(g, p))
                .collect();
            assert!(owners.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(owners[0], 0);
            assert_eq!(*owners.last().unwrap(), p - 1);
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
