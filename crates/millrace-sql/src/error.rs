//! Errors of a pipeline file, pointing at where the user wrote the problem.

use std::fmt;

use crate::sqlparser::parser::ParserError;

/// An error in a pipeline file: the line (and column when known) and a
/// message that says what is wrong and, where possible, what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

pub type SqlResult<T> = Result<T, SqlError>;

impl SqlError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error in the statement starting on `line` (0 = unknown).
    pub fn at(line: u64, message: impl Into<String>) -> Self {
        Self {
            line: (line > 0).then_some(line),
            column: None,
            message: message.into(),
        }
    }

    /// Adds the statement's line if the error has none yet.
    pub fn in_statement(mut self, line: u64) -> Self {
        if self.line.is_none() && line > 0 {
            self.line = Some(line);
        }
        self
    }

    /// A parser error; sqlparser ends its messages with `at Line: L, Column: C`.
    pub fn syntax(e: ParserError) -> Self {
        let text = match e {
            ParserError::ParserError(s) | ParserError::TokenizerError(s) => s,
            ParserError::RecursionLimitExceeded => {
                "the statement nests too deeply to parse".to_string()
            }
        };
        let (message, line, column) = split_location(&text);
        Self {
            line,
            column,
            message: format!("syntax error: {message}"),
        }
    }
}

fn split_location(text: &str) -> (String, Option<u64>, Option<u64>) {
    let Some(at) = text.rfind(" at Line: ") else {
        return (text.to_string(), None, None);
    };
    let rest = &text[at + " at Line: ".len()..];
    let mut parts = rest.split(", Column: ");
    let line = parts.next().and_then(|l| l.trim().parse().ok());
    let column = parts.next().and_then(|c| {
        c.trim()
            .trim_end_matches(|ch: char| !ch.is_ascii_digit())
            .parse()
            .ok()
    });
    (text[..at].to_string(), line, column)
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for SqlError {}

impl From<millrace_core::Error> for SqlError {
    fn from(e: millrace_core::Error) -> Self {
        SqlError::new(e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        SqlError::new(crate::plan_message(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_locations_become_fields() {
        let e = SqlError::syntax(ParserError::ParserError(
            "Expected: an SQL statement, found: SELEC at Line: 2, Column: 17".into(),
        ));
        assert_eq!(e.line, Some(2));
        assert_eq!(e.column, Some(17));
        assert_eq!(
            e.to_string(),
            "line 2, column 17: syntax error: Expected: an SQL statement, found: SELEC"
        );
    }
}
