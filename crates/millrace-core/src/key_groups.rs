//! Key groups: which instance of a keyed operator owns a row, in one place.
//!
//! A row's key columns are hashed a column at a time (vectorized), the hash
//! picks one of [`KEY_GROUPS`] key groups, and each instance of a parallel
//! operator owns a contiguous range of groups ([`instance_of_key_group`]).
//! Two users must agree on it bit for bit:
//!
//! * the runtime's hash exchange, which routes every row to the instance
//!   owning its key;
//! * [`OperatorFactory::rescale`](crate::OperatorFactory::rescale), which
//!   moves keyed state to the instance that will receive that key's rows at
//!   another parallelism.
//!
//! So the hash depends only on the values and Arrow types of the key
//! columns, is the same on every machine and build, and never changes:
//! checkpoints written by one build are rescaled by the next. Key groups are
//! the unit a rescale moves, as in Flink.

use std::hash::{BuildHasher, Hasher};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::*;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use crate::Result;

/// Number of key groups; an upper bound on a keyed operator's parallelism.
pub const KEY_GROUPS: usize = 128;

/// The instance that owns `key_group` among `parallelism` instances
/// (contiguous ranges of groups, so rescaling moves whole ranges).
#[inline]
pub fn instance_of_key_group(key_group: usize, parallelism: usize) -> usize {
    key_group * parallelism / KEY_GROUPS
}

/// The key group of a row whose key hashes to `hash` ([`hash_rows`]).
#[inline]
pub fn key_group_of_hash(hash: u64) -> usize {
    (hash % KEY_GROUPS as u64) as usize
}

/// Hash of the key columns `key_indices` for every row of `batch`.
pub fn hash_rows(batch: &RecordBatch, key_indices: &[usize]) -> Result<Vec<u64>> {
    let columns: Vec<&ArrayRef> = key_indices.iter().map(|&k| batch.column(k)).collect();
    hash_columns(&columns, batch.num_rows())
}

/// Hash of every row of `columns` (the key columns, in key order, each of
/// `rows` rows). No columns hash every row alike.
pub fn hash_columns(columns: &[&ArrayRef], rows: usize) -> Result<Vec<u64>> {
    let mut hashes = vec![0u64; rows];
    for column in columns {
        hash_column(column, &mut hashes)?;
    }
    Ok(hashes)
}

/// For every row of `columns` (the key columns, in the order and with the
/// Arrow types the exchange hashes), the instance of `parallelism` that owns
/// its key.
pub fn instances_of_rows(
    columns: &[&ArrayRef],
    rows: usize,
    parallelism: usize,
) -> Result<Vec<usize>> {
    Ok(hash_columns(columns, rows)?
        .into_iter()
        .map(|h| instance_of_key_group(key_group_of_hash(h), parallelism))
        .collect())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Float64Array, Int64Array, StringArray, StructArray, TimestampMillisecondArray,
    };
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

    /// Pinned: checkpoints written by one build are rescaled by the next,
    /// and the exchange must route as the rescale placed the state.
    #[test]
    fn the_hash_never_changes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("f", DataType::Float64, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(0),
                    Some(-7),
                    None,
                    Some(i64::MAX),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some(""),
                    None,
                    Some("millrace"),
                ])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(10),
                    Some(-10),
                    None,
                    Some(1_700_000_000_000),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(0.5),
                    Some(-0.0),
                    None,
                    Some(1e300),
                ])),
            ],
        )
        .unwrap();
        let pinned: [(&[usize], [u64; 4]); 5] = [
            (
                &[0],
                [
                    0,
                    0xae9e_b410_09de_88b7,
                    0x6393_d51c_06c6_18dc,
                    0xe723_0606_8b6e_596a,
                ],
            ),
            (
                &[1],
                [
                    0x8c6f_c075_be35_bd77,
                    0xde9d_69bd_cc72_6999,
                    0x9ca0_66f1_a4ab_2eea,
                    0x7f9d_3004_f477_d330,
                ],
            ),
            (
                &[2],
                [
                    0x3ca0_27e0_82c8_54b4,
                    0x89f4_e7aa_e98a_a5c9,
                    0x6393_d51c_06c6_18dc,
                    0x0f8d_e867_5058_acd4,
                ],
            ),
            (
                &[3],
                [
                    0x9c09_3eb4_df98_c11d,
                    0x730a_1597_0051_468a,
                    0xe8ef_b942_6017_7733,
                    0x693e_5fda_7943_df9d,
                ],
            ),
            (
                &[0, 1, 2, 3],
                [
                    0xeb74_2ac5_71a3_cbfd,
                    0x891c_22d7_01a8_e99a,
                    0x00a1_ce3a_d998_2baa,
                    0xe5e0_3690_362e_b983,
                ],
            ),
        ];
        for (keys, want) in pinned {
            assert_eq!(hash_rows(&b, keys).unwrap(), want, "keys {keys:?}");
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
    fn rows_go_to_the_instance_owning_their_key_group() {
        let b = batch((0..500).map(|i| i % 37).collect(), vec!["x"; 500]);
        let hashes = hash_rows(&b, &[0]).unwrap();
        for p in [1, 2, 3, 7] {
            let owners = instances_of_rows(&[b.column(0)], b.num_rows(), p).unwrap();
            for (h, owner) in hashes.iter().zip(&owners) {
                assert_eq!(*owner, instance_of_key_group(key_group_of_hash(*h), p));
                assert!(*owner < p);
            }
        }
        let none = instances_of_rows(&[], 3, 4).unwrap();
        assert_eq!(none, [0, 0, 0], "no keys: every row in key group 0");
    }
}
