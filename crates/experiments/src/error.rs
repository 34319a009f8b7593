//! The experiments crate's error type.

/// What can go wrong running an experiment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the hooks crate (unknown hook point, missing cache entry, …); a model
    /// error the hooks crate passes on arrives as [`Error::Model`], so there is one path to it.
    #[error(transparent)]
    Hooks(burnlens_hooks::Error),
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
    /// A clean cache whose activation does not fit the corrupted run it is patched into.
    #[error(
        "the clean cache's {point} has shape {cached:?}, but the corrupted run is {rows} × {tokens} tokens (clean and corrupted prompts must tokenize to the same length)"
    )]
    CacheMismatch {
        /// The hook point.
        point: String,
        /// The cached activation's shape.
        cached: Vec<usize>,
        /// Rows of the corrupted batch.
        rows: usize,
        /// Tokens of the corrupted batch.
        tokens: usize,
    },
    /// One request of a batch (MEMIT's) cannot be used; `source` says why.
    #[error("request {index}: {source}")]
    Request {
        /// The request's index in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// An input that must not be empty is.
    #[error("{what} is empty{hint}")]
    Empty {
        /// What is empty ("the prompt", "the target", …).
        what: &'static str,
        /// What to do about it (empty, or starting with a separator).
        hint: &'static str,
    },
    /// An option whose value cannot be used.
    #[error("`{option}` = {value}: {expected}")]
    BadOption {
        /// The option's name, as in the options struct.
        option: &'static str,
        /// The value given.
        value: String,
        /// What would do.
        expected: String,
    },
    /// An index (layer, head, position, token id) outside what it indexes.
    #[error("{what} {value} is out of range: {limit}")]
    OutOfRange {
        /// What is indexed ("layer", "position", "token id", …).
        what: &'static str,
        /// The value given.
        value: usize,
        /// What the range is ("the model has 4 layers", …).
        limit: String,
    },
    /// A token sequence longer than there is room for.
    #[error("{what} has {tokens} tokens, more than the {limit} {room}")]
    TooLong {
        /// Which sequence (a prompt, given in full where it helps).
        what: String,
        /// Its tokens.
        tokens: usize,
        /// The most there is room for.
        limit: usize,
        /// Where the room is ("tokens of the model's context", …).
        room: &'static str,
    },
    /// A contrastive attribution function given no foil.
    #[error("{function} needs a foil: {what}")]
    MissingFoil {
        /// The function.
        function: String,
        /// What kind of foil it takes.
        what: &'static str,
    },
    /// A tensor, vector or table of the wrong shape.
    #[error("{what} has shape {got:?}; expected {expected}")]
    Shape {
        /// Which one.
        what: String,
        /// Its shape.
        got: Vec<usize>,
        /// The shape wanted, in words or numbers.
        expected: String,
    },
    /// A hook point an experiment cannot run at.
    #[error("{experiment} cannot run at {point}: use {supported}")]
    UnsupportedPoint {
        /// The experiment.
        experiment: &'static str,
        /// The point (or kind) given.
        point: String,
        /// The points it runs at.
        supported: &'static str,
    },
    /// A causal trace without the table of a kind asked for.
    #[error("a trace has no {0} table (trace that kind too)")]
    MissingTable(&'static str),
    /// A trace-kind name that is not one.
    #[error("unknown trace kind {0:?}: expected state, mlp or attn")]
    UnknownTraceKind(String),
    /// A ROME prompt or context template of the wrong form.
    #[error("the {which} {template:?} {problem}")]
    Template {
        /// "prompt" or "context template".
        which: &'static str,
        /// The text.
        template: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A token the experiment needs that the vocabulary lacks.
    #[error("{needed_for} needs the token {token:?}, which this vocabulary lacks")]
    MissingToken {
        /// The token.
        token: &'static str,
        /// What needs it.
        needed_for: &'static str,
    },
    /// Numbers that leave an experiment nothing to compute with (a singular matrix, a
    /// zero-norm vector).
    #[error("{0}")]
    Degenerate(String),
    /// An edge name that is not an edge of the model's graph.
    #[error("unknown edge {name:?}: {why}")]
    UnknownEdge {
        /// The name given.
        name: String,
        /// Why it is not an edge.
        why: String,
    },
    /// Prompt pairs that cannot be run as one task.
    #[error("pair {pair}: {message}")]
    BadPair {
        /// The pair (0-based).
        pair: usize,
        /// What is wrong.
        message: String,
    },
    /// A file that could not be read or written, or is not what it should be.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<burnlens_hooks::Error> for Error {
    fn from(e: burnlens_hooks::Error) -> Self {
        match e {
            burnlens_hooks::Error::Model(m) => Error::Model(m),
            other => Error::Hooks(other),
        }
    }
}

impl From<burnlens_model::UnknownHookPoint> for Error {
    fn from(e: burnlens_model::UnknownHookPoint) -> Self {
        Error::Hooks(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_model_error_through_the_hooks_crate_arrives_as_a_model_error() {
        let model = burnlens_model::Error::Shape("x".into());
        let via_hooks: Error = burnlens_hooks::Error::Model(model).into();
        assert!(matches!(via_hooks, Error::Model(_)), "{via_hooks:?}");
        let hooks: Error = burnlens_hooks::Error::Shape("y".into()).into();
        assert!(matches!(hooks, Error::Hooks(_)), "{hooks:?}");
    }
}
