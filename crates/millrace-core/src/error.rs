//! One error type for the engine. Every variant names what failed so the
//! message a user sees can be acted on without reading code.

use std::path::PathBuf;

use arrow::error::ArrowError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A record in an input file that could not be read under the `fail` policy.
    #[error("{path}:{line}: {reason}")]
    BadRecord {
        path: PathBuf,
        line: u64,
        reason: String,
    },

    /// A message of a stream (a Kafka topic) that could not be read under
    /// the `fail` policy: `input` names the stream, `at` the message
    /// (`partition 2 offset 1041`).
    #[error("{input} {at}: {reason}")]
    BadMessage {
        input: String,
        at: String,
        reason: String,
    },

    /// A pipeline that cannot be built as declared (unknown column, wrong type...).
    #[error("invalid pipeline: {0}")]
    Plan(String),

    /// An operator, source or sink failed while running.
    #[error("operator '{operator}' failed: {cause}")]
    Operator {
        operator: String,
        #[source]
        cause: Box<Error>,
    },

    /// An operator panicked; the panic is caught and reported, never re-raised.
    #[error("panic: {0}")]
    Panic(String),

    #[error("{0}")]
    Other(String),

    /// A running pipeline stopped on `cause`; `output` says what its sinks
    /// had already written, so no partial output passes for complete.
    #[error("{cause}\n{output}")]
    Stopped { cause: Box<Error>, output: String },
}

impl Error {
    pub fn plan(msg: impl Into<String>) -> Self {
        Error::Plan(msg.into())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The same error with `context: ` before its message (`window_agg:
    /// tumble size must be positive`), keeping its kind.
    pub fn context(self, context: &str) -> Self {
        match self {
            Error::Plan(msg) => Error::Plan(format!("{context}: {msg}")),
            Error::Other(msg) => Error::Other(format!("{context}: {msg}")),
            other => Error::Other(format!("{context}: {other}")),
        }
    }

    /// Whether running again might succeed: an I/O or connector failure
    /// (a disk, a broker, a database). Bad records, invalid plans, type
    /// errors and panics fail the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Other(_) => true,
            Error::Operator { cause, .. } | Error::Stopped { cause, .. } => cause.is_transient(),
            Error::Arrow(_)
            | Error::BadRecord { .. }
            | Error::BadMessage { .. }
            | Error::Plan(_)
            | Error::Panic(_) => false,
        }
    }

    /// Wraps `self` as the failure of the named operator (idempotent).
    pub fn in_operator(self, operator: &str) -> Self {
        match self {
            e @ Error::Operator { .. } => e,
            cause => Error::Operator {
                operator: operator.to_string(),
                cause: Box::new(cause),
            },
        }
    }
}
