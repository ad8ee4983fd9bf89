//! The one public error type and how it maps to exit codes; no I/O happens here.
use std::fmt;

/// Where in a file a configuration problem sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Bad pipeline / model file (exit 2).
    #[error("{at}: {msg}")]
    Config { at: Location, msg: String },
    /// An HTTP call failed for good (exit 1).
    #[error("{0}")]
    Http(String),
    /// The lake or its state failed (exit 1).
    #[error("lake: {0}")]
    Lake(String),
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] deltalake::parquet::errors::ParquetError),
    #[error("query: {0}")]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Another run holds the source (exit 1).
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn config(file: &str, line: Option<usize>, field: Option<&str>, msg: impl Into<String>) -> Self {
        Error::Config {
            at: Location {
                file: file.to_string(),
                line,
                field: field.map(str::to_string),
            },
            msg: msg.into(),
        }
    }

    /// Exit code of the contract: 2 for input errors found before any work, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config { .. } => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
