//! # burnlens-experiments
//!
//! Activation patching, ROME-style causal tracing, contrastive attribution and the rest. Not
//! implemented yet: this crate reserves its place in the layering (see docs/ARCHITECTURE.md);
//! issue 5 and later fill it.
