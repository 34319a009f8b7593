//! The hooks crate's error type.

use std::path::PathBuf;

use burnlens_model::UnknownHookPoint;

/// What can go wrong when building hook sets, running them or reading a cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the model's forward pass (including errors raised inside hooks).
    #[error(transparent)]
    Model(#[from] burnlens_model::Error),
    /// A name that is not a hook point.
    #[error(transparent)]
    UnknownHook(#[from] UnknownHookPoint),
    /// A hook point the cache does not hold.
    #[error("the cache has no {point}{hint}")]
    NotCached {
        /// The TransformerLens name.
        point: String,
        /// What to do about it.
        hint: String,
    },
    /// A gradient run that has nothing to differentiate: no gradient point was reached in the
    /// forward pass, or the metric does not depend on any.
    #[error("{0}")]
    NoGradient(&'static str),
    /// Tensors of the wrong shape or rank, or an index out of range.
    #[error("{0}")]
    Shape(String),
    /// A cache file that cannot be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
