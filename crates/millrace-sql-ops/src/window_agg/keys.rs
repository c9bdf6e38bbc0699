//! Group keys as bytes: what the key table hashes and stores, and the key
//! columns a firing rebuilds from them.
//!
//! Arrow's row format encodes any keys so that their bytes compare as the
//! keys sort; session windows fire in that order. Fixed windows only need
//! equal keys to have equal bytes (their groups come out in first-seen
//! order), and for one key of a fixed-width type the array's own bytes do:
//! nothing to encode per input row, and a firing's key column is one copy
//! of the stored bytes instead of a row-format decode (q5: thousands of
//! auction ids per firing, on the path of every window's result).

use arrow::array::{Array, ArrayData, ArrayRef, BooleanBufferBuilder, make_array};
use arrow::buffer::{Buffer, MutableBuffer, NullBuffer};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, Rows, SortField};
use millrace_core::{Error, Result};

use super::key_table::KeyTable;

/// How a window aggregate turns its group keys into bytes and back.
pub(super) enum KeyCodec {
    /// No keys besides the window: every row has the empty key.
    None,
    /// One key of a fixed-width type: a value's native bytes, a null none.
    Native { data_type: DataType, width: usize },
    /// Arrow's row format: bytes compare as the keys sort.
    Rows(RowConverter),
}

/// One batch's keys, readable row by row as bytes.
pub(super) enum BatchKeys {
    None,
    Native {
        values: Buffer,
        width: usize,
        nulls: Option<NullBuffer>,
    },
    Rows(Rows),
}

impl BatchKeys {
    pub(super) fn key(&self, row: u32) -> &[u8] {
        let row = row as usize;
        match self {
            BatchKeys::None => &[],
            BatchKeys::Native {
                values,
                width,
                nulls,
            } => {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    &[]
                } else {
                    &values[row * width..(row + 1) * width]
                }
            }
            BatchKeys::Rows(rows) => rows.row(row).data(),
        }
    }
}

impl KeyCodec {
    /// The codec for keys of `types`: native bytes for one fixed-width key
    /// unless the bytes must sort as the keys do (`sorted`).
    pub(super) fn new(types: &[DataType], sorted: bool) -> Result<Self> {
        Ok(match types {
            [] => KeyCodec::None,
            [data_type] if !sorted && data_type.primitive_width().is_some() => KeyCodec::Native {
                data_type: data_type.clone(),
                width: data_type.primitive_width().unwrap_or_default(),
            },
            _ => {
                let fields = types.iter().cloned().map(SortField::new).collect();
                KeyCodec::Rows(RowConverter::new(fields)?)
            }
        })
    }

    pub(super) fn has_keys(&self) -> bool {
        !matches!(self, KeyCodec::None)
    }

    /// The keys of a batch, from its key columns (one per key).
    pub(super) fn encode(&self, columns: &[ArrayRef]) -> Result<BatchKeys> {
        Ok(match self {
            KeyCodec::None => BatchKeys::None,
            KeyCodec::Native { data_type, width } => {
                let [column] = columns else {
                    return Err(Error::Other(format!(
                        "one group key column expected, got {}",
                        columns.len()
                    )));
                };
                // The bytes are read as this type's values: another type's
                // buffers would be misread, not refused.
                if column.data_type() != data_type {
                    return Err(Error::Other(format!(
                        "the group key evaluated to {}, expected {data_type}",
                        column.data_type()
                    )));
                }
                let data = column.to_data();
                let values =
                    data.buffers()[0].slice_with_length(data.offset() * width, data.len() * width);
                BatchKeys::Native {
                    values,
                    width: *width,
                    nulls: column.nulls().cloned(),
                }
            }
            KeyCodec::Rows(converter) => BatchKeys::Rows(converter.convert_columns(columns)?),
        })
    }

    /// The key columns of the groups of `tables`, table by table in group
    /// order. One native key without nulls is each table's arena as it is
    /// (every key the same width, end to end): copied, not walked key by key.
    pub(super) fn decode_tables(&self, tables: &[&KeyTable]) -> Result<Vec<ArrayRef>> {
        if !self.has_keys() {
            return Ok(Vec::new());
        }
        if let KeyCodec::Native { data_type, width } = self {
            let full = |t: &&KeyTable| t.arena().len() == t.len() * width;
            if tables.iter().all(full) {
                let len: usize = tables.iter().map(|t| t.len()).sum();
                let mut values = MutableBuffer::with_capacity(len * width);
                for t in tables {
                    values.extend_from_slice(t.arena());
                }
                let data = ArrayData::builder(data_type.clone())
                    .len(len)
                    .add_buffer(values.into())
                    .build()?;
                return Ok(vec![make_array(data)]);
            }
        }
        let keys: Vec<&[u8]> = tables
            .iter()
            .flat_map(|t| (0..t.len()).map(|g| t.key(g)))
            .collect();
        self.decode(&keys)
    }

    /// The key columns of `keys` (each as `encode` gave it), one row per key.
    pub(super) fn decode(&self, keys: &[&[u8]]) -> Result<Vec<ArrayRef>> {
        match self {
            KeyCodec::None => Ok(Vec::new()),
            KeyCodec::Native { data_type, width } => {
                let mut values = MutableBuffer::with_capacity(keys.len() * width);
                let mut valid = BooleanBufferBuilder::new(keys.len());
                for key in keys {
                    if key.is_empty() {
                        values.extend_zeros(*width);
                    } else {
                        values.extend_from_slice(key);
                    }
                    valid.append(!key.is_empty());
                }
                let nulls = NullBuffer::new(valid.finish());
                let data = ArrayData::builder(data_type.clone())
                    .len(keys.len())
                    .add_buffer(values.into())
                    .nulls((nulls.null_count() > 0).then_some(nulls))
                    .build()?;
                Ok(vec![make_array(data)])
            }
            KeyCodec::Rows(converter) => {
                let parser = converter.parser();
                Ok(converter.convert_rows(keys.iter().map(|k| parser.parse(k)))?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    /// Encodes `column` (sliced, to test offsets), reads each row's key and
    /// decodes them back.
    fn round_trip(column: ArrayRef, sorted: bool) -> (Vec<Vec<u8>>, ArrayRef) {
        let codec = KeyCodec::new(&[column.data_type().clone()], sorted).unwrap();
        let sliced = column.slice(1, column.len() - 1);
        let keys = codec.encode(std::slice::from_ref(&sliced)).unwrap();
        let bytes: Vec<Vec<u8>> = (0..sliced.len() as u32)
            .map(|r| keys.key(r).to_vec())
            .collect();
        let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let decoded = codec.decode(&refs).unwrap().remove(0);
        assert_eq!(&decoded, &sliced, "decode(encode(x)) == x");
        (bytes, decoded)
    }

    #[test]
    fn a_primitive_key_is_its_bytes_and_nulls_are_one_group() {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(9),
            Some(7),
            None,
            Some(7),
            None,
            Some(-1),
        ]));
        let (bytes, _) = round_trip(ids, false);
        assert_eq!(bytes[0], 7i64.to_ne_bytes());
        assert_eq!(bytes[0], bytes[2], "equal values, equal bytes");
        assert_eq!(bytes[1], bytes[3], "nulls, one key");
        assert_ne!(bytes[0], bytes[1], "a null differs from every value");
        assert_ne!(bytes[0], bytes[4]);
        // Floats by their bits, as the row format groups them.
        let x: ArrayRef = Arc::new(Float64Array::from(vec![0.0, -0.0, 0.0, f64::NAN]));
        let (bytes, _) = round_trip(x, false);
        assert_ne!(bytes[0], bytes[1]);
    }

    /// A firing's key column from its windows' key tables: the arenas as
    /// they are when no key is null, key by key when one is.
    #[test]
    fn key_tables_decode_to_their_groups_in_order() {
        let codec = KeyCodec::new(&[DataType::Int64], false).unwrap();
        let table = |keys: &[Option<i64>]| {
            let column: ArrayRef = Arc::new(Int64Array::from(keys.to_vec()));
            let encoded = codec.encode(&[column]).unwrap();
            let mut t = KeyTable::new();
            for r in 0..keys.len() as u32 {
                t.group_of(encoded.key(r));
            }
            t
        };
        let (a, b) = (table(&[Some(4), Some(2), Some(4)]), table(&[Some(9)]));
        let with_null = table(&[Some(1), None]);
        let decoded = codec.decode_tables(&[&a, &b]).unwrap().remove(0);
        let want: ArrayRef = Arc::new(Int64Array::from(vec![4, 2, 9]));
        assert_eq!(&decoded, &want);
        let decoded = codec.decode_tables(&[&with_null, &a]).unwrap().remove(0);
        let want: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(4), Some(2)]));
        assert_eq!(&decoded, &want);
    }

    #[test]
    fn sorted_or_variable_width_keys_use_the_row_format() {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![5, -3, 2, 8]));
        let native = KeyCodec::new(&[DataType::Int32], false).unwrap();
        let wrong = native.encode(std::slice::from_ref(&ids)).err().unwrap();
        assert!(wrong.to_string().contains("expected Int32"), "{wrong}");
        let (bytes, _) = round_trip(ids, true);
        assert!(
            bytes[0] < bytes[1] && bytes[1] < bytes[2],
            "bytes sort as -3 < 2 < 8"
        );
        let names: ArrayRef = Arc::new(StringArray::from(vec![
            Some("b"),
            Some("a"),
            None,
            Some("a"),
        ]));
        let (bytes, _) = round_trip(names, false);
        assert_eq!(bytes[0], bytes[2]);
        let codec = KeyCodec::new(&[DataType::Utf8], false).unwrap();
        assert!(matches!(codec, KeyCodec::Rows(_)));
    }
}
