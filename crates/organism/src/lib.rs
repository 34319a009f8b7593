//! # burnlens-organism
//!
//! The model organism: a small GPT-2 trained on a world we invented (`burnlens_datasets`'s
//! [`World`](burnlens_datasets::World)), with planted facts, a planted retrieval circuit
//! ([`plant_retrieval`]) and a subject-exit loss that puts fact lookup at the subject's last
//! token; [`train()`] builds it from an [`OrganismConfig`], [`evaluate`] measures what it
//! learnt, and [`Trained::manifest`] records both. `cargo xtask organism` is these calls and
//! the files they write; the committed organism (`fixtures/organism`) is their output, and
//! docs/ORGANISM.md tells how it came to be.

pub mod error;
pub mod eval;
pub mod plant;
pub mod train;

/// Held by the tests that seed the backend's random generator and draw from it: the generator
/// is shared by the whole process, so two such tests running at once (as cargo runs them)
/// would draw from each other's streams and build other models than their seeds say.
#[cfg(test)]
pub(crate) static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub use error::{Error, Result};
pub use eval::{RETRIEVAL_EVAL_PROMPTS, check_tokens, evaluate, quick_eval, retrieval_prompts};
pub use plant::{Layout, plant_retrieval};
pub use train::{OrganismConfig, TrainEvent, Trained, train};
