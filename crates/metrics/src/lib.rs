//! # burnlens-metrics
//!
//! Pure functions on logits and token ids. This crate knows nothing of models: every function
//! takes tensors and returns tensors, so the same metric serves a GPT-2 forward pass, a patched
//! run or logits loaded from a file.

pub mod loss;

pub use loss::{NextTokenLoss, next_token_loss, token_log_probs};
