//! The experiments crate's error type.

/// What can go wrong running an experiment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the hooks crate (unknown hook point, missing cache entry, …).
    #[error(transparent)]
    Hooks(#[from] burnlens_hooks::Error),
    /// An error from the model (forward pass, tokenizer).
    #[error(transparent)]
    Model(#[from] burnlens_model::Error),
    /// An error from a metric (bad token ids, a degenerate baseline, …).
    #[error(transparent)]
    Metric(#[from] burnlens_metrics::MetricError),
    /// A metric given by the caller failed (its own error, boxed).
    #[error("the metric failed: {0}")]
    CustomMetric(Box<dyn std::error::Error + Send + Sync>),
    /// A sweep name that is none of TransformerLens's.
    #[error("unknown sweep {name:?} (sweeps: {known}, block_every, head_all_pos_every)")]
    UnknownSweep {
        /// The name given.
        name: String,
        /// The names there are.
        known: String,
    },
    /// Inputs that do not fit together (e.g. clean and corrupted runs of different shapes).
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
