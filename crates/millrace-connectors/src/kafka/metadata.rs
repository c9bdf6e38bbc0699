//! The metadata columns a Kafka table may add after the columns decoded
//! from message values: `metadata = 'partition, offset AS off, timestamp AS kafka_ts'`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};

/// One piece of a message's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataField {
    /// The message key as text (`NULL` without a key; a key that is not
    /// UTF-8 makes the message bad).
    Key,
    /// The partition (`INT`).
    Partition,
    /// The offset within the partition (`BIGINT`).
    Offset,
    /// The message timestamp, producer or broker time as the topic says
    /// (`TIMESTAMP(3)`; `NULL` without one).
    Timestamp,
    /// The headers as a JSON object of text values (`NULL` without
    /// headers; a header without value is `null`, a repeated name keeps
    /// its last value).
    Headers,
}

impl MetadataField {
    pub const ALL: [(&'static str, MetadataField); 5] = [
        ("key", MetadataField::Key),
        ("partition", MetadataField::Partition),
        ("offset", MetadataField::Offset),
        ("timestamp", MetadataField::Timestamp),
        ("headers", MetadataField::Headers),
    ];

    pub fn data_type(self) -> DataType {
        match self {
            MetadataField::Key | MetadataField::Headers => DataType::Utf8,
            MetadataField::Partition => DataType::Int32,
            MetadataField::Offset => DataType::Int64,
            MetadataField::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    fn nullable(self) -> bool {
        !matches!(self, MetadataField::Partition | MetadataField::Offset)
    }
}

/// The metadata columns of a table, in the order they follow the value's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    columns: Vec<(String, MetadataField)>,
}

impl Metadata {
    /// No metadata columns.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses `field [AS column], ...` (`partition, offset AS off`); the
    /// column is named after the field unless renamed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut columns: Vec<(String, MetadataField)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let words: Vec<&str> = item.split_whitespace().collect();
            let (field, column) = match words.as_slice() {
                [field] => (*field, *field),
                [field, kw, column] if kw.eq_ignore_ascii_case("as") => (*field, *column),
                _ => {
                    return Err(format!(
                        "metadata item '{item}' is not 'field' or 'field AS column'"
                    ));
                }
            };
            let Some((_, kind)) = MetadataField::ALL
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(field))
            else {
                return Err(format!(
                    "unknown metadata field '{field}' (known: key, partition, offset, timestamp, headers)"
                ));
            };
            let column = column.to_lowercase();
            if columns.iter().any(|(c, _)| *c == column) {
                return Err(format!("metadata column '{column}' is named twice"));
            }
            columns.push((column, *kind));
        }
        Ok(Metadata { columns })
    }

    /// Adds `field` as column `column`.
    pub fn with(mut self, column: impl Into<String>, field: MetadataField) -> Self {
        self.columns.push((column.into(), field));
        self
    }

    pub fn columns(&self) -> &[(String, MetadataField)] {
        &self.columns
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    pub fn wants(&self, field: MetadataField) -> bool {
        self.columns.iter().any(|(_, f)| *f == field)
    }

    /// The Arrow fields of the metadata columns.
    pub fn fields(&self) -> Vec<Arc<Field>> {
        self.columns
            .iter()
            .map(|(name, f)| Arc::new(Field::new(name, f.data_type(), f.nullable())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_after_themselves_unless_renamed() {
        let m = Metadata::parse("partition, offset AS off ,TIMESTAMP as Kts").unwrap();
        assert_eq!(
            m.columns(),
            &[
                ("partition".to_string(), MetadataField::Partition),
                ("off".to_string(), MetadataField::Offset),
                ("kts".to_string(), MetadataField::Timestamp),
            ]
        );
        assert!(
            Metadata::parse("offset, partition as offset")
                .unwrap_err()
                .contains("named twice")
        );
        assert!(Metadata::parse("lag").unwrap_err().contains("known: key"));
        assert!(Metadata::parse("key AS").unwrap_err().contains("AS column"));
    }
}
