//! # burnlens-experiments
//!
//! Experiments built on the one forward pass and its hook sets: activation patching sweeps
//! with TransformerLens's sites and result shapes (`patching`). Causal tracing, the batched
//! patching engine and attribution patching come next (issue 5).

pub mod error;
pub mod patching;

pub use error::{Error, Result};
pub use patching::{PatchIndex, PatchResult, Sweep, patch_sweep, patch_sweep_observed};
