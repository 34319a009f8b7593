//! # burnlens
//!
//! Mechanistic interpretability of GPT-2-family language models in [burn](https://burn.dev):
//! one forward pass with TransformerLens's hook points, activation caches, interventions and
//! gradients, activation and attribution patching, ROME's causal tracing and editing, the
//! logit lens and Inseq-style attribution, on any backend chosen at run time.
//!
//! This crate is the front door: one `use burnlens::prelude::*;` brings what an experiment
//! needs, and [`Error`] is the one error type that every burnlens crate's error converts
//! into, so `?` works throughout. The crates stay usable one by one ([`model`], [`hooks`],
//! [`metrics`], [`datasets`], [`experiments`]).
//!
//! Load a model, cache a clean run, patch it into a corrupted one, print what moved:
//!
//! ```no_run
//! use burnlens::prelude::*;
//!
//! fn main() -> burnlens::Result<()> {
//!     let lm = burnlens::organism::load(&Device::flex())?;
//!     let (clean, corrupted) = (lm.batch("Jessop Emma lives in")?, lm.batch("Ingram Nathan lives in")?);
//!     let (clean_logits, clean_cache) = lm.run_with_cache(&clean, Selector::all())?;
//!     let (paris, nairobi) = (lm.token(" Paris")?, lm.token(" Nairobi")?);
//!     let metric = NormalizedLogitDiff::new(&[paris], &[nairobi], clean_logits, lm.logits(&corrupted)?)?;
//!     let patched = patch_sweep(&lm.model, &corrupted, &clean_cache, Sweep::RESID_PRE, &metric)?;
//!     println!("{patched:?}"); // [layer, pos]: 1 where patching restores the clean answer
//!     Ok(())
//! }
//! ```
//!
//! The examples (`crates/burnlens/examples/`, each run by the tests on the model organism) show
//! the rest: generation, caches, patching, causal tracing, attribution, the logit lens, ROME,
//! steering and circuit discovery.

use std::path::PathBuf;

pub use burnlens_datasets as datasets;
pub use burnlens_experiments as experiments;
pub use burnlens_hooks as hooks;
pub use burnlens_metrics as metrics;
pub use burnlens_model as model;
/// Re-export of burn, the version every burnlens crate is built on.
pub use burnlens_model::burn;

/// Any burnlens crate's error: each converts into it with `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running the model, the tokenizer, batches ([`model::Error`]).
    #[error(transparent)]
    Model(#[from] burnlens_model::Error),
    /// A name that is not a hook point.
    #[error(transparent)]
    UnknownHook(#[from] burnlens_model::UnknownHookPoint),
    /// Hook sets, interventions, caches ([`hooks::Error`]).
    #[error(transparent)]
    Hooks(#[from] burnlens_hooks::Error),
    /// A metric's inputs ([`metrics::MetricError`]).
    #[error(transparent)]
    Metric(#[from] burnlens_metrics::MetricError),
    /// Reading or generating a dataset ([`datasets::Error`]).
    #[error(transparent)]
    Datasets(#[from] burnlens_datasets::Error),
    /// Running an experiment ([`experiments::Error`]).
    #[error(transparent)]
    Experiments(#[from] burnlens_experiments::Error),
    /// Training or evaluating the organism ([`burnlens_organism::Error`]).
    #[error(transparent)]
    Organism(#[from] burnlens_organism::Error),
}

/// `Result` with burnlens's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The model organism: a 4-layer GPT-2 trained by `cargo xtask organism` on a world of invented
/// people with planted facts (home city, job, instrument) and a planted in-context retrieval
/// circuit (`docs/ORGANISM.md`), the default model of every command, recipe and example, where
/// every experiment has a known answer. Its training and evaluation are re-exported from
/// `burnlens-organism`: [`organism::train()`] with an [`organism::OrganismConfig`] (whose
/// `Default` is the committed organism's recipe) and [`organism::evaluate`].
pub mod organism {
    use super::*;

    pub use burnlens_organism::{
        Layout, OrganismConfig, RETRIEVAL_EVAL_PROMPTS, TrainEvent, Trained, check_tokens,
        evaluate, plant_retrieval, quick_eval, retrieval_prompts, train,
    };

    /// The directory of the committed organism (`fixtures/organism` of the repository, in
    /// Hugging Face layout, with `manifest.json` and `known_facts.json`).
    pub fn dir() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/organism"
        ))
    }

    /// Loads the organism and its tokenizer onto `device`.
    ///
    /// # Errors
    /// As [`model::load`] (a checkout without `fixtures/organism`).
    pub fn load(device: &burn::tensor::Device) -> Result<model::LoadedModel> {
        Ok(model::source::load_from(
            &model::ModelSource::Dir(dir()),
            device,
        )?)
    }

    /// The organism's manifest: its world (people and planted facts), corpus settings,
    /// training settings and evaluation.
    ///
    /// # Errors
    /// As [`datasets::Manifest::load`].
    pub fn manifest() -> Result<datasets::Manifest> {
        Ok(datasets::Manifest::load(&dir())?)
    }
}

/// Everything a typical experiment uses, in one import: `use burnlens::prelude::*;`.
pub mod prelude {
    pub use crate::{Error, Result};

    pub use burnlens_model::burn::tensor::{Device, Int, Tensor, TensorData};
    pub use burnlens_model::{
        BackendKind, GenerationConfig, Gpt2, Gpt2Config, Gpt2Tokenizer, HookKind, HookPoint, Hooks,
        LoadedModel, NoHooks, PaddingSide, Strategy, TokenBatch, WeightProcessing, load, load_with,
    };

    pub use burnlens_hooks::{
        Act, ActivationCache, HookSet, Intervention, Positions, ResidMode, ResidOptions,
        RunWithCache, Selector, run_with_cache,
    };

    pub use burnlens_metrics::{
        kl_divergence, last_position, logit_diff, next_token_loss, normalized_patch_score,
        token_log_probs_at, token_probs, token_ranks, top_k,
    };

    pub use burnlens_datasets::{
        DualConfig, DualForm, Fact, PromptPair, World, generate_dual, load_counterfact, load_facts,
        load_known_facts, load_pairs, tokenize_pairs,
    };

    pub use burnlens_experiments::{
        AttrMethod, AttributeOptions, AttributedFn, AttributionInput, Engine, LastPosition,
        MomentOptions, NoiseSpec, NormalizedLogitDiff, Observer, PatchMetric, PatchOptions,
        PatchResult, RomeConfig, RomeRequest, StepObserver, Sweep, TraceConfig, TraceKind,
        TracePrompt, attribute, attribution_patch, average_indirect_effect, baseline_score,
        causal_trace, context_templates, fluency, logit_lens, patch_sweep, patch_sweep_with,
        pearson, rome_edit, second_moment, steer_generation, steering_vector,
        subject_embedding_std,
    };

    pub use burnlens_experiments::circuit::{
        Ablation, AcdcOptions, CircuitMetric, CircuitOptions, CircuitRun, CircuitTask, EdgeGraph,
        EdgeScores, EdgeSet, PathPatch, acdc, path_patch,
    };
}
