//! # burnlens-datasets
//!
//! Prompt pairs, CounterFact / known-facts loaders and generated factual-recall prompt sets.
//! Not implemented yet: this crate reserves its place in the layering (see
//! docs/ARCHITECTURE.md); issue 4 fills it.
