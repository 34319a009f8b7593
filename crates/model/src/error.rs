//! The model crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Every variant names the thing at fault (the file, the tensor, the config key, the prompt),
/// so that a user can fix the input without reading the source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the loader needs is not there.
    #[error("missing file: {path} ({what})")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file was needed for.
        what: &'static str,
    },
    /// A file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written (or its directory created).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON or lacks a required key.
    #[error("invalid config {path}: {message}")]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A config value that burnlens does not implement.
    #[error("unsupported config value {key} = {value}: {expected}")]
    UnsupportedConfig {
        /// The config key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What is supported instead.
        expected: &'static str,
    },
    /// The safetensors file is malformed (truncated, bad header, unsupported dtype).
    #[error("invalid safetensors file {path}: {message}")]
    InvalidWeights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The checkpoint needs more memory than the system has left: refused before allocating.
    #[error(
        "checkpoint {path} needs {} MiB to load as f32, but only {} MiB of memory is available",
        needed / (1 << 20),
        available / (1 << 20)
    )]
    TooLarge {
        /// The weights file.
        path: PathBuf,
        /// Bytes its tensors take as f32.
        needed: u64,
        /// Bytes the system can still give (`MemAvailable`).
        available: u64,
    },
    /// A weight that is NaN or infinite: every forward through it would be, too.
    #[error(
        "checkpoint {path}: tensor {tensor} holds {value} at index {index:?}; weights must be \
         finite (load with LoadOptions::allow_non_finite, or --allow-non-finite, to study a \
         broken checkpoint)"
    )]
    NonFinite {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name in the checkpoint.
        tensor: String,
        /// The first non-finite element, one index per dimension.
        index: Vec<usize>,
        /// Its value (NaN, inf or -inf).
        value: f32,
    },
    /// A model directory whose weights are in a format burnlens refuses (pickle checkpoints).
    #[error("{path}: {message}")]
    UnsupportedCheckpoint {
        /// The file or directory.
        path: PathBuf,
        /// Why, and how to convert it.
        message: String,
    },
    /// The checkpoint's tensors do not match the architecture the config describes.
    #[error("checkpoint {path} does not match the config:\n{}", problems.join("\n"))]
    WeightMismatch {
        /// The weights file.
        path: PathBuf,
        /// One line per missing, unexpected or misshaped tensor.
        problems: Vec<String>,
    },
    /// The tokenizer files are missing or malformed.
    #[error("tokenizer error ({path}): {message}")]
    Tokenizer {
        /// The tokenizer file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A prompt that encodes to no tokens.
    #[error("empty prompt: the input encodes to zero tokens")]
    EmptyPrompt,
    /// A sequence longer than the model's context.
    #[error(
        "sequence of {len} tokens is longer than the model's context of {n_positions} positions"
    )]
    TooLong {
        /// The sequence length (prompt plus cached tokens, where a cache is used).
        len: usize,
        /// `n_positions` from the config.
        n_positions: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// Inputs of inconsistent shapes (ragged batch, mask of the wrong size, cache of another batch).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A substring (a subject) that the prompt does not contain.
    #[error("{substring:?} does not occur in the prompt {text:?}")]
    NotInPrompt {
        /// The substring looked for.
        substring: String,
        /// The prompt.
        text: String,
    },
    /// An invalid generation or runtime option.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A backend that is not compiled in or has no device on this machine.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// A model id that needs the Hugging Face hub, in a build without the `hub` feature or offline.
    #[error("cannot fetch {id} from the Hugging Face hub: {message}")]
    Hub {
        /// The hub model id.
        id: String,
        /// Why, and how to get the files instead.
        message: String,
    },
    /// A hook function failed (e.g. a replacement of the wrong shape).
    #[error("hook {point}: {message}")]
    Hook {
        /// The TransformerLens name of the hook point.
        point: String,
        /// What went wrong.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
