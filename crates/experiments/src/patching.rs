//! Activation patching sweeps with TransformerLens's sites, index axes and result shapes
//! (`transformer_lens.patching`): for every index, run the corrupted input with the clean
//! run's activation patched in at that index, and record a metric of the logits.
//!
//! Two engines compute the same numbers: [`Engine::Naive`], one full forward per patch as
//! TransformerLens runs it (the reference in tests), and [`Engine::Batched`] (the default),
//! which runs many patches per forward and starts each from the corrupted run's cached state
//! (see the `batched` module).

use burn::tensor::{Tensor, TensorData};
use burnlens_hooks::{ActivationCache, HookSet, Intervention};
use burnlens_metrics::{last_position, logit_diff, normalized_patch_score};
use burnlens_model::{Gpt2, HookKind, HookPoint, TokenBatch};
use serde::Serialize;

use crate::error::{Error, Result};

/// Which axes a sweep iterates over (its result has one axis per entry, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PatchIndex {
    /// `(layer, pos)`: the activation at one position, all heads.
    LayerPos,
    /// `(layer, head)`: one head at every position.
    LayerHead,
    /// `(layer, pos, head)`: one head at one position.
    LayerPosHead,
    /// `(layer, head, dest_pos)`: one head's attention row (pattern sites).
    LayerHeadDestPos,
}

impl PatchIndex {
    /// The result shape over a model of `n_layers` × `n_heads` and a run of `n_pos` tokens.
    pub fn shape(&self, n_layers: usize, n_heads: usize, n_pos: usize) -> Vec<usize> {
        match self {
            PatchIndex::LayerPos => vec![n_layers, n_pos],
            PatchIndex::LayerHead => vec![n_layers, n_heads],
            PatchIndex::LayerPosHead => vec![n_layers, n_pos, n_heads],
            PatchIndex::LayerHeadDestPos => vec![n_layers, n_heads, n_pos],
        }
    }

    /// The axis names, as TransformerLens's `index_axis_names`.
    pub fn axes(&self) -> &'static [&'static str] {
        match self {
            PatchIndex::LayerPos => &["layer", "pos"],
            PatchIndex::LayerHead => &["layer", "head"],
            PatchIndex::LayerPosHead => &["layer", "pos", "head"],
            PatchIndex::LayerHeadDestPos => &["layer", "head_index", "dest_pos"],
        }
    }
}

/// A patching sweep: a hook kind ([`HookKind::ResidPre`], [`HookKind::Z`], …) and its index
/// axes. The named sweeps are TransformerLens's `get_act_patch_*` functions; `Display` and
/// `FromStr` use their names without the prefix (`resid_pre`, `head_out_all_pos`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sweep {
    /// The kind of the patched hook point (a per-block kind).
    pub kind: HookKind,
    /// The axes iterated over.
    pub index: PatchIndex,
}

impl Sweep {
    /// `get_act_patch_resid_pre`: `[layer, pos]`.
    pub const RESID_PRE: Sweep = Sweep {
        kind: HookKind::ResidPre,
        index: PatchIndex::LayerPos,
    };
    /// `get_act_patch_resid_mid`: `[layer, pos]`.
    pub const RESID_MID: Sweep = Sweep {
        kind: HookKind::ResidMid,
        index: PatchIndex::LayerPos,
    };
    /// Block outputs by position: `[layer, pos]`.
    pub const RESID_POST: Sweep = Sweep {
        kind: HookKind::ResidPost,
        index: PatchIndex::LayerPos,
    };
    /// `get_act_patch_attn_out`: `[layer, pos]`.
    pub const ATTN_OUT: Sweep = Sweep {
        kind: HookKind::AttnOut,
        index: PatchIndex::LayerPos,
    };
    /// `get_act_patch_mlp_out`: `[layer, pos]`.
    pub const MLP_OUT: Sweep = Sweep {
        kind: HookKind::MlpOut,
        index: PatchIndex::LayerPos,
    };
    /// `get_act_patch_attn_head_out_all_pos` (patching `z`): `[layer, head]`.
    pub const HEAD_OUT_ALL_POS: Sweep = Sweep {
        kind: HookKind::Z,
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_q_all_pos`.
    pub const HEAD_Q_ALL_POS: Sweep = Sweep {
        kind: HookKind::Q,
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_k_all_pos`.
    pub const HEAD_K_ALL_POS: Sweep = Sweep {
        kind: HookKind::K,
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_v_all_pos`.
    pub const HEAD_V_ALL_POS: Sweep = Sweep {
        kind: HookKind::V,
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_pattern_all_pos`.
    pub const HEAD_PATTERN_ALL_POS: Sweep = Sweep {
        kind: HookKind::Pattern,
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_out_by_pos`: `[layer, pos, head]`.
    pub const HEAD_OUT_BY_POS: Sweep = Sweep {
        kind: HookKind::Z,
        index: PatchIndex::LayerPosHead,
    };
    /// `get_act_patch_attn_head_q_by_pos`.
    pub const HEAD_Q_BY_POS: Sweep = Sweep {
        kind: HookKind::Q,
        index: PatchIndex::LayerPosHead,
    };
    /// `get_act_patch_attn_head_k_by_pos`.
    pub const HEAD_K_BY_POS: Sweep = Sweep {
        kind: HookKind::K,
        index: PatchIndex::LayerPosHead,
    };
    /// `get_act_patch_attn_head_v_by_pos`.
    pub const HEAD_V_BY_POS: Sweep = Sweep {
        kind: HookKind::V,
        index: PatchIndex::LayerPosHead,
    };
    /// `get_act_patch_attn_head_pattern_by_pos`: `[layer, head_index, dest_pos]`.
    pub const HEAD_PATTERN_BY_POS: Sweep = Sweep {
        kind: HookKind::Pattern,
        index: PatchIndex::LayerHeadDestPos,
    };
    /// `get_act_patch_block_every`: resid_pre, attn_out, mlp_out.
    pub const BLOCK_EVERY: [Sweep; 3] = [Self::RESID_PRE, Self::ATTN_OUT, Self::MLP_OUT];
    /// `get_act_patch_attn_head_all_pos_every`: z, q, k, v, pattern.
    pub const HEAD_ALL_POS_EVERY: [Sweep; 5] = [
        Self::HEAD_OUT_ALL_POS,
        Self::HEAD_Q_ALL_POS,
        Self::HEAD_K_ALL_POS,
        Self::HEAD_V_ALL_POS,
        Self::HEAD_PATTERN_ALL_POS,
    ];
}

impl Sweep {
    /// Every named sweep, with its name (TransformerLens's `get_act_patch_<name>`).
    pub const NAMED: [(&'static str, Sweep); 15] = [
        ("resid_pre", Sweep::RESID_PRE),
        ("resid_mid", Sweep::RESID_MID),
        ("resid_post", Sweep::RESID_POST),
        ("attn_out", Sweep::ATTN_OUT),
        ("mlp_out", Sweep::MLP_OUT),
        ("head_out_all_pos", Sweep::HEAD_OUT_ALL_POS),
        ("head_q_all_pos", Sweep::HEAD_Q_ALL_POS),
        ("head_k_all_pos", Sweep::HEAD_K_ALL_POS),
        ("head_v_all_pos", Sweep::HEAD_V_ALL_POS),
        ("head_pattern_all_pos", Sweep::HEAD_PATTERN_ALL_POS),
        ("head_out_by_pos", Sweep::HEAD_OUT_BY_POS),
        ("head_q_by_pos", Sweep::HEAD_Q_BY_POS),
        ("head_k_by_pos", Sweep::HEAD_K_BY_POS),
        ("head_v_by_pos", Sweep::HEAD_V_BY_POS),
        ("head_pattern_by_pos", Sweep::HEAD_PATTERN_BY_POS),
    ];

    /// The sweep's name (`"resid_pre"`, `"head_out_by_pos"`, …), or `None` for a sweep
    /// built by hand that TransformerLens does not name.
    pub fn name(&self) -> Option<&'static str> {
        Self::NAMED.iter().find(|(_, s)| s == self).map(|(n, _)| *n)
    }

    /// A comma-separated list of sweep names, where `block_every` and `head_all_pos_every`
    /// stand for their groups (TransformerLens's `get_act_patch_block_every` and
    /// `get_act_patch_attn_head_all_pos_every`).
    ///
    /// # Errors
    /// A name that is no sweep ([`Error::UnknownSweep`], listing the names).
    pub fn parse_list(list: &str) -> Result<Vec<Sweep>> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "block_every" => out.extend(Sweep::BLOCK_EVERY),
                "head_all_pos_every" => out.extend(Sweep::HEAD_ALL_POS_EVERY),
                _ => out.push(name.parse()?),
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{} by {}", self.kind, self.index.axes().join(" × ")),
        }
    }
}

impl std::str::FromStr for Sweep {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::NAMED
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, sweep)| *sweep)
            .ok_or_else(|| Error::UnknownSweep {
                name: s.to_string(),
                known: Self::NAMED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// A sweep's results: one metric value per index, row-major over `shape`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchResult {
    /// The sweep.
    pub sweep: Sweep,
    /// The size of each index axis.
    pub shape: Vec<usize>,
    /// The metric values, row-major.
    pub values: Vec<f32>,
}

impl PatchResult {
    /// The value at an index (one entry per axis).
    pub fn get(&self, index: &[usize]) -> Option<f32> {
        if index.len() != self.shape.len() || index.iter().zip(&self.shape).any(|(i, n)| i >= n) {
            return None;
        }
        let flat = index
            .iter()
            .zip(&self.shape)
            .fold(0, |acc, (i, n)| acc * n + i);
        self.values.get(flat).copied()
    }
}

/// A metric of one patched run's logits.
///
/// Any `Fn(Tensor<3>) -> Result<Tensor<1>, E>` is one (reading every position), for any
/// error `E` that converts into a boxed error (this crate's, `burnlens::Error`, `anyhow`'s);
/// wrap it in [`LastPosition`] when it reads only the last position, which lets the batched
/// engine skip the unembedding elsewhere.
///
/// ```
/// use burnlens_experiments::{LastPosition, PatchMetric};
/// use burnlens_metrics::{last_position, logit_diff};
/// use burnlens_model::burn::tensor::{Device, Tensor};
///
/// let metric = LastPosition::new(|logits: Tensor<3>| {
///     Ok(logit_diff(last_position(logits), &[1], &[0])?.mean())
/// });
/// let logits = Tensor::<3>::from_floats([[[0.5, 2.0, 0.0]]], &Device::flex());
/// let score: f32 = metric.score(logits)?.into_scalar();
/// assert_eq!(score, 1.5);
/// # Ok::<(), burnlens_experiments::Error>(())
/// ```
pub trait PatchMetric {
    /// The score of one run: logits `[batch, pos, vocab]` (`pos` = 1, the last position, when
    /// [`PatchMetric::last_position_only`]) to a tensor of shape `[1]`.
    ///
    /// # Errors
    /// Whatever the metric reports (token ids outside the vocabulary, …); a sweep stops at
    /// the first error and returns it.
    fn score(&self, logits: Tensor<3>) -> Result<Tensor<1>>;

    /// Whether the metric reads only the last position's logits.
    fn last_position_only(&self) -> bool {
        false
    }
}

/// A metric closure's error as this crate's: its own errors stay as they are, any other
/// becomes [`Error::CustomMetric`].
fn metric_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> Error {
    match e.into().downcast::<Error>() {
        Ok(own) => *own,
        Err(other) => Error::CustomMetric(other),
    }
}

impl<F, E> PatchMetric for F
where
    F: Fn(Tensor<3>) -> std::result::Result<Tensor<1>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn score(&self, logits: Tensor<3>) -> Result<Tensor<1>> {
        self(logits).map_err(metric_error)
    }
}

/// A metric that reads only the last position: it is given logits `[batch, 1, vocab]`.
pub struct LastPosition<F>(pub F);

impl<F> LastPosition<F>
where
    F: Fn(Tensor<3>) -> Result<Tensor<1>>,
{
    /// Wraps `f`, a closure returning this crate's `Result`: the constructor tells the
    /// compiler the closure's error type, so a closure using `?` on metric, hook or model
    /// errors needs no annotation. (`LastPosition(f)` takes a closure with any error type,
    /// annotated.)
    pub fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F, E> PatchMetric for LastPosition<F>
where
    F: Fn(Tensor<3>) -> std::result::Result<Tensor<1>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn score(&self, logits: Tensor<3>) -> Result<Tensor<1>> {
        let [b, t, v] = logits.dims();
        (self.0)(logits.slice([0..b, t - 1..t, 0..v])).map_err(metric_error)
    }

    fn last_position_only(&self) -> bool {
        true
    }
}

/// The default patching metric: the mean logit difference `answer − foil` at the last
/// position, normalized to 0 at the corrupted run and 1 at the clean run
/// ([`burnlens_metrics::normalized_patch_score`]).
#[derive(Debug, Clone)]
pub struct NormalizedLogitDiff {
    answer: Vec<u32>,
    foil: Vec<u32>,
    clean: f32,
    corrupted: f32,
}

impl NormalizedLogitDiff {
    /// The metric for one prompt pair batch, with its baselines taken from the clean and
    /// corrupted runs' logits.
    ///
    /// # Errors
    /// Token id lists that do not fit the batch or the vocabulary, and a degenerate baseline
    /// (clean and corrupted logit differences equal), reported before any sweep runs.
    pub fn new(
        answer: &[u32],
        foil: &[u32],
        clean_logits: Tensor<3>,
        corrupted_logits: Tensor<3>,
    ) -> Result<Self> {
        let diff = |logits: Tensor<3>| -> Result<f32> {
            Ok(logit_diff(last_position(logits), answer, foil)?
                .mean()
                .into_scalar::<f32>())
        };
        let (clean, corrupted) = (diff(clean_logits)?, diff(corrupted_logits.clone())?);
        let probe = Tensor::<1>::from_floats([corrupted], &corrupted_logits.device());
        normalized_patch_score(probe, clean, corrupted)?;
        Ok(Self {
            answer: answer.to_vec(),
            foil: foil.to_vec(),
            clean,
            corrupted,
        })
    }

    /// The clean run's mean logit difference.
    pub fn clean(&self) -> f32 {
        self.clean
    }

    /// The corrupted run's mean logit difference.
    pub fn corrupted(&self) -> f32 {
        self.corrupted
    }
}

impl PatchMetric for NormalizedLogitDiff {
    fn score(&self, logits: Tensor<3>) -> Result<Tensor<1>> {
        let ld = logit_diff(last_position(logits), &self.answer, &self.foil)?.mean();
        Ok((ld - self.corrupted) / (self.clean - self.corrupted))
    }

    fn last_position_only(&self) -> bool {
        true
    }
}

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

/// One patch of a sweep: its flat result index and where it applies.
#[derive(Debug, Clone)]
pub(crate) struct Patch {
    /// Flat index into the result.
    pub index: usize,
    /// The layers patched (one for a sweep; a window for causal tracing).
    pub layers: std::ops::Range<usize>,
    /// The one position (query position for patterns) patched, or `None` for all.
    pub pos: Option<usize>,
    /// The one head patched, or `None` for all.
    pub head: Option<usize>,
}

/// The result shape of a sweep and its patches, in result order.
pub(crate) fn plan(
    sweep: Sweep,
    n_layers: usize,
    n_heads: usize,
    n_pos: usize,
) -> (Vec<usize>, Vec<Patch>) {
    let shape = sweep.index.shape(n_layers, n_heads, n_pos);
    let total: usize = shape.iter().product();
    let patches = (0..total)
        .map(|flat| {
            let mut idx = vec![0; shape.len()];
            let mut rest = flat;
            for (slot, n) in idx.iter_mut().zip(&shape).rev() {
                *slot = rest % n;
                rest /= n;
            }
            let (pos, head) = match sweep.index {
                PatchIndex::LayerPos => (Some(idx[1]), None),
                PatchIndex::LayerHead => (None, Some(idx[1])),
                PatchIndex::LayerPosHead => (Some(idx[1]), Some(idx[2])),
                PatchIndex::LayerHeadDestPos => (Some(idx[2]), Some(idx[1])),
            };
            Patch {
                index: flat,
                layers: idx[0]..idx[0] + 1,
                pos,
                head,
            }
        })
        .collect();
    (shape, patches)
}

/// Runs a patching sweep with the default (batched) engine.
///
/// `clean_cache` must hold the swept kind at every layer (capture it with
/// `Selector::kind(sweep.kind)` on the clean run). `metric` maps the patched logits to a
/// score (e.g. a normalized logit difference).
///
/// # Errors
/// An unknown kind, a cache without the needed points or of another shape than the corrupted
/// run, and forward errors.
pub fn patch_sweep(
    model: &Gpt2,
    corrupted: &TokenBatch,
    clean_cache: &ActivationCache,
    sweep: Sweep,
    metric: &dyn PatchMetric,
) -> Result<PatchResult> {
    patch_sweep_with(
        model,
        corrupted,
        clean_cache,
        sweep,
        metric,
        Engine::default(),
        &mut |_, _| {},
    )
}

/// [`patch_sweep`] with a chosen engine, calling `observe(done, total)` as patches complete
/// (for progress bars).
///
/// # Errors
/// As [`patch_sweep`].
pub fn patch_sweep_with(
    model: &Gpt2,
    corrupted: &TokenBatch,
    clean_cache: &ActivationCache,
    sweep: Sweep,
    metric: &dyn PatchMetric,
    engine: Engine,
    observe: &mut dyn FnMut(usize, usize),
) -> Result<PatchResult> {
    let n_layers = model.config.n_layer;
    let n_heads = model.config.n_head;
    let n_pos = corrupted.seq_len();
    let points = sweep_points(sweep, n_layers)?;
    for p in &points {
        let act = clean_cache.get(*p)?;
        let dims = act.dims();
        let batch_ok = dims[0] == corrupted.batch_size();
        let pos_axis = burnlens_hooks::act::pos_axis(*p, dims.len());
        if !batch_ok || dims[pos_axis] != n_pos {
            return Err(Error::Invalid(format!(
                "the clean cache's {p} has shape {dims:?}, but the corrupted run is {} × {n_pos} tokens (clean and corrupted prompts must tokenize to the same length)",
                corrupted.batch_size()
            )));
        }
    }
    let (shape, patches) = plan(sweep, n_layers, n_heads, n_pos);
    let values = match engine {
        Engine::Naive => naive(
            model,
            corrupted,
            clean_cache,
            &points,
            &patches,
            metric,
            observe,
        )?,
        Engine::Batched { max_rows } => crate::batched::run(
            model,
            &crate::batched::Baseline::new(model, corrupted, None)?,
            clean_cache,
            &points,
            &patches,
            metric,
            max_rows,
            observe,
        )?,
    };
    Ok(PatchResult {
        sweep,
        shape,
        values,
    })
}

/// The hook point of `sweep` at every layer.
pub(crate) fn sweep_points(sweep: Sweep, n_layers: usize) -> Result<Vec<HookPoint>> {
    (0..n_layers)
        .map(|l| sweep.kind.at(l))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Hooks(burnlens_hooks::Error::from(e)))
}

/// Reads a `[n]` score tensor (or several concatenated) back to the host.
pub(crate) fn host_scores(scores: Vec<Tensor<1>>) -> Result<Vec<f32>> {
    if scores.is_empty() {
        return Ok(Vec::new());
    }
    let n = scores.len();
    let all = Tensor::cat(scores, 0);
    if all.dims()[0] != n {
        return Err(Error::Invalid(format!(
            "the metric must return one number per run (shape [1]); got {} numbers for {n} runs",
            all.dims()[0]
        )));
    }
    let data: TensorData = all.into_data();
    Ok(data
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float scores"))
}

/// The reference engine: one forward per patch.
fn naive(
    model: &Gpt2,
    corrupted: &TokenBatch,
    clean_cache: &ActivationCache,
    points: &[HookPoint],
    patches: &[Patch],
    metric: &dyn PatchMetric,
    observe: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let mut values = Vec::with_capacity(patches.len());
    for (done, patch) in patches.iter().enumerate() {
        let mut hooks = HookSet::new();
        for layer in patch.layers.clone() {
            let point = points[layer];
            let mut intervention = Intervention::replace(clean_cache.get(point)?.clone());
            if let Some(p) = patch.pos {
                intervention = intervention.at(vec![p]);
            }
            if let Some(h) = patch.head {
                intervention = intervention.heads([h]);
            }
            hooks.intervene(point, intervention)?;
        }
        let logits = hooks.run(model, corrupted)?;
        values.extend(host_scores(vec![metric.score(logits)?])?);
        observe(done + 1, patches.len());
    }
    Ok(values)
}
