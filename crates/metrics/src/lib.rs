//! # burnlens-metrics
//!
//! Pure functions on logits and token ids. This crate knows nothing of models: every function
//! takes tensors and returns tensors, so the same metric serves a GPT-2 forward pass, a patched
//! run or logits loaded from a file.

pub mod logits;
pub mod loss;

pub use logits::{
    Candidate, MetricError, at_positions, contrast_logits_diff, contrast_prob_diff, jaccard,
    kl_divergence, last_position, logit_diff, normalized_patch_score, token_log_probs_at,
    token_logits, token_probs, token_ranks, top_k,
};
pub use loss::{NextTokenLoss, next_token_loss, token_log_probs};
