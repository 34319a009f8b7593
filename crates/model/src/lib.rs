//! # burnlens-model
//!
//! GPT-2 in [burn](https://burn.dev): one forward pass with TransformerLens hook points,
//! Hugging Face checkpoint loading, the byte-level BPE tokenizer (and its training), a KV
//! cache, generation, and language-model training with AdamW.
//!
//! ```no_run
//! use burnlens_model::{BackendKind, TokenBatch, load};
//!
//! let device = BackendKind::Flex.device()?;
//! let lm = load("fixtures/tiny-gpt2", &device)?;
//! let ids = lm.tokenizer.encode("The Eiffel Tower is in", false)?;
//! let logits = lm.model.logits(&TokenBatch::single(&ids)?)?; // [1, pos, vocab]
//! # Ok::<(), burnlens_model::Error>(())
//! ```

pub mod backend;
pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod generate;
pub mod hook;
pub mod model;
mod parallel;
pub mod process;
pub mod source;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use backend::{BackendKind, available_devices, wgpu_adapter_available};
pub use batch::{PaddingSide, TokenBatch};
pub use cache::{KvCache, LayerKv};
pub use config::{Activation, Gpt2Config};
pub use error::{Error, Result};
pub use generate::{Generated, GenerationConfig, Strategy};
pub use hook::{HookKind, HookPoint, Hooks, IntoHookPoint, NoHooks, UnknownHookPoint};
pub use model::{ForwardContext, Gpt2, gelu_tanh};
pub use process::WeightProcessing;
pub use source::{LoadedModel, ModelSource, load, load_from, load_from_with, load_with};
pub use tokenizer::Gpt2Tokenizer;
pub use train::{StepLog, TrainConfig, train_lm, train_with_loss};
pub use weights::LoadOptions;

/// Re-export of burn, so that downstream crates use the same version.
pub use burn;
