//! # burnlens-experiments
//!
//! Experiments built on the one forward pass and its hook sets: circuit discovery on the edge
//! graph (edge patching, EAP, EAP-IG, ACDC; `circuit`); activation patching sweeps
//! with TransformerLens's sites and result shapes, computed by a batched engine or the naive
//! one-forward-per-patch reference (`patching`); attribution patching (`attribution`); ROME's
//! causal tracing (`tracing`), rank-one editing (`rome`) and its CounterFact evaluation
//! (`counterfact`), and the damage report of an edit (`damage`); Inseq-style gradient attribution
//! (`attribute`); the logit lens (`lens`).

pub mod attribute;
pub mod attribution;
pub mod circuit;
pub mod counterfact;
pub mod damage;
pub mod detect;
mod engine;
pub mod error;
pub mod finetune;
pub mod heads;
pub mod lens;
pub mod memit;
pub mod metric;
mod nullable;
pub mod patching;
pub mod probe;
pub mod progress;
pub mod rome;
pub mod search;
pub mod steering;
pub mod tracing;
pub mod tuned_lens;

pub use attribute::{
    Aggregation, AttrMethod, AttributeOptions, AttributedFn, Attribution, AttributionInput,
    TokenReduce, attribute, baseline_score, gauss_legendre, layer_sweep,
};
pub use attribution::{attribution_patch, pearson};
pub use counterfact::{
    CaseScores, CounterFactSummary, EditCase, TargetNll, case_scores, fluency, harmonic_mean,
    ngram_entropy, summarize, target_nlls,
};
pub use damage::{Damage, DamageProbe, ProbeFact};
pub use detect::{
    DetectOptions, ErrorMeasure, HeadPattern, detect_heads, detect_heads_many, similarity_score,
};
pub use engine::Engine;
pub use error::{Error, Result};
pub use finetune::{
    FinetuneConfig, FinetuneOptimizer, FinetuneStep, Finetuned, finetune, free_groups, param_groups,
};
pub use heads::{
    AttentionHit, HeadReport, HeadScan, HeadScanOptions, HeadSummary, RankedHit, TextScan,
    hit_rank, row_multiples,
};
pub use lens::{LogitLens, logit_lens, logit_lens_with, output_probs};
pub use memit::{
    AppliedMemit, MemitConfig, MemitEdit, MemitLayer, memit_context_templates, memit_edit,
};
pub use metric::{LastPosition, NormalizedLogitDiff, PatchMetric};
pub use patching::{PatchIndex, PatchOptions, PatchResult, Sweep, patch_sweep, patch_sweep_with};
pub use probe::{
    EditReport, EmbeddingEdit, PositionPool, candidate_pools, edit_embeddings, pool_jaccard,
};
pub use progress::Observer;
pub use rome::{
    AppliedEdit, MomentOptions, RomeConfig, RomeEdit, RomeRequest, SecondMoment, StepObserver,
    VStep, context_templates, rome_edit, second_moment, second_moment_cached,
};
pub use search::{PrependRound, PrependSearch, SearchOptions, prepend_losses, prepend_search};
pub use steering::{Steered, steer_generation, steering_vector};
pub use tracing::{
    CausalTrace, GroupEffect, IndirectEffects, NoiseSpec, TOKEN_GROUPS, TokenTable, TraceConfig,
    TraceKind, TracePrompt, TraceTable, average_indirect_effect, causal_trace, group_rollup,
    load_noise, save_noise, save_noise_indexed, subject_embedding_std,
};
pub use tuned_lens::{TunedLens, TunedLensConfig, TunedLensTraining, lens_kl, train_tuned_lens};
