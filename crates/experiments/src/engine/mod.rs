//! The patching engines, shared by patching sweeps and causal tracing: a [`Job`] of patches
//! scored by the naive reference or the batched engine.
//!
//! Files depend one way: `mod.rs` (the [`Engine`] choice and its dispatch) uses `naive.rs`
//! and `batched.rs`, which both use `patch.rs` (what a job is).

pub(crate) mod batched;
mod naive;
mod patch;

use burnlens_model::{Gpt2, TokenBatch};
use serde::Serialize;

pub(crate) use patch::{Job, Patch};

use crate::error::Result;
use crate::progress::Observer;

/// How a sweep is computed; both give the same numbers (to float rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Engine {
    /// One full forward of the corrupted input per patch, as TransformerLens does.
    Naive,
    /// Many patches per forward, each starting from the corrupted run's state at its layer
    /// and recomputing only the positions from its own on (the earlier ones keep the corrupted
    /// run's keys and values). `max_rows` bounds the rows (patches × batch) of one forward.
    Batched {
        /// The most rows one forward runs.
        max_rows: usize,
    },
}

impl Default for Engine {
    fn default() -> Self {
        Engine::Batched { max_rows: 128 }
    }
}

impl Engine {
    /// Scores every patch of `job` on the `corrupted` input, in result order.
    pub(crate) fn run(
        self,
        model: &Gpt2,
        corrupted: &TokenBatch,
        job: &Job,
        observer: &Observer,
    ) -> Result<Vec<f32>> {
        match self {
            Engine::Naive => naive::run(model, corrupted, job, observer),
            Engine::Batched { max_rows } => {
                let base = batched::Baseline::new(model, corrupted, None)?;
                batched::run(model, &base, job, max_rows, observer)
            }
        }
    }
}
