//! Activation patching sweeps with TransformerLens's sites, index axes and result shapes
//! (`transformer_lens.patching`): for every index, run the corrupted input with the clean
//! run's activation patched in at that index, and record a metric of the logits.
//!
//! Two engines compute the same numbers: [`Engine::Naive`], one full forward per patch as
//! TransformerLens runs it (the reference in tests), and [`Engine::Batched`] (the default),
//! which runs many patches per forward and starts each from the corrupted run's cached state
//! (see the `engine` module).

use burnlens_hooks::ActivationCache;
use burnlens_model::{Gpt2, HookKind, HookPoint, TokenBatch};
use serde::Serialize;

use crate::engine::{Engine, Job, Patch};
use crate::error::{Error, Result};
use crate::metric::PatchMetric;
use crate::progress::Observer;

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

/// How a sweep runs: the engine, and who hears of its progress. `Default` is the batched
/// engine and no observer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchOptions {
    /// The engine (both give the same numbers).
    pub engine: Engine,
    /// Told `(patches done, patches in all)` as patches complete.
    pub observer: Observer,
}

impl PatchOptions {
    /// These options with `engine`.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// These options with `observer`.
    pub fn observer(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }
}

/// Runs a patching sweep with the default options (the batched engine, no progress).
///
/// `clean_cache` must hold the swept kind at every layer (capture it with
/// `Selector::kind(sweep.kind)` on the clean run). `metric` maps the patched logits to a
/// score (e.g. a normalized logit difference).
///
/// # Errors
/// A cache without the needed points or of another shape than the corrupted run
/// ([`Error::CacheMismatch`]), the metric's errors, and forward errors.
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
        &PatchOptions::default(),
    )
}

/// [`patch_sweep`] with options: the engine, and an observer of its progress.
///
/// # Errors
/// As [`patch_sweep`].
pub fn patch_sweep_with(
    model: &Gpt2,
    corrupted: &TokenBatch,
    clean_cache: &ActivationCache,
    sweep: Sweep,
    metric: &dyn PatchMetric,
    options: &PatchOptions,
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
            return Err(Error::CacheMismatch {
                point: p.to_string(),
                cached: dims.to_vec(),
                rows: corrupted.batch_size(),
                tokens: n_pos,
            });
        }
    }
    let (shape, patches) = plan(sweep, n_layers, n_heads, n_pos);
    let job = Job {
        points: &points,
        clean: clean_cache,
        patches: &patches,
        metric,
    };
    let values = options
        .engine
        .run(model, corrupted, &job, &options.observer)?;
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
        .map_err(Error::from)
}
