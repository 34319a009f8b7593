//! The datasets crate's error type.

use std::path::PathBuf;

/// What can go wrong reading or building a dataset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A malformed record: the file, the record (0-based, or the line for line formats) and
    /// what is wrong, naming the field.
    #[error("{path}: record {record}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Index of the record (0-based).
        record: usize,
        /// What is wrong (a missing or mistyped field is named).
        message: String,
    },
    /// A file that is not in the expected format as a whole.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An error from the tokenizer or batch construction.
    #[error(transparent)]
    Model(#[from] burnlens_model::Error),
    /// Options that cannot be satisfied (e.g. more few-shot examples than table entries).
    #[error("{0}")]
    InvalidOption(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
