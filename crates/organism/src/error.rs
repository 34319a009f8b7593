//! The organism crate's error type.

/// What can go wrong building, training or evaluating the organism.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the model (forward pass, tokenizer, training).
    #[error(transparent)]
    Model(#[from] burnlens_model::Error),
    /// An error from the world or the corpus generator.
    #[error(transparent)]
    Datasets(#[from] burnlens_datasets::Error),
    /// An option whose value cannot be used.
    #[error("`{option}` = {value}: {expected}")]
    BadOption {
        /// The option's name, as in [`OrganismConfig`](crate::OrganismConfig).
        option: &'static str,
        /// The value given.
        value: String,
        /// What would do.
        expected: String,
    },
    /// A trained tokenizer that splits the world's words so that the organism's tests would
    /// measure something else (an answer of several tokens, a name of one).
    #[error("the trained tokenizer: {0}")]
    Vocabulary(String),
    /// A model the planted circuit does not fit, or a weight that cannot be read.
    #[error("{0}")]
    Shape(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
