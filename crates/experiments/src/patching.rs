//! Activation patching sweeps with TransformerLens's sites, index axes and result shapes
//! (`transformer_lens.patching`): for every index, run the corrupted input with the clean
//! run's activation patched in at that index, and record a metric of the logits.
//!
//! This is the naive engine, one forward per patch, kept as the reference for the batched
//! engine to come.

use burn::tensor::Tensor;
use burnlens_hooks::{ActivationCache, HookSet, Intervention};
use burnlens_model::{Gpt2, HookPoint, TokenBatch};
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

/// A patching sweep: a hook kind (`"resid_pre"`, `"z"`, `"pattern"`, …) and its index axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sweep {
    /// The shorthand kind of the patched hook point.
    pub kind: &'static str,
    /// The axes iterated over.
    pub index: PatchIndex,
}

impl Sweep {
    /// `get_act_patch_resid_pre`: `[layer, pos]`.
    pub const RESID_PRE: Sweep = Sweep {
        kind: "resid_pre",
        index: PatchIndex::LayerPos,
    };
    /// `get_act_patch_resid_mid`: `[layer, pos]`.
    pub const RESID_MID: Sweep = Sweep {
        kind: "resid_mid",
        index: PatchIndex::LayerPos,
    };
    /// Block outputs by position: `[layer, pos]`.
    pub const RESID_POST: Sweep = Sweep {
        kind: "resid_post",
        index: PatchIndex::LayerPos,
    };
    /// `get_act_patch_attn_out`: `[layer, pos]`.
    pub const ATTN_OUT: Sweep = Sweep {
        kind: "attn_out",
        index: PatchIndex::LayerPos,
    };
    /// `get_act_patch_mlp_out`: `[layer, pos]`.
    pub const MLP_OUT: Sweep = Sweep {
        kind: "mlp_out",
        index: PatchIndex::LayerPos,
    };
    /// `get_act_patch_attn_head_out_all_pos` (patching `z`): `[layer, head]`.
    pub const HEAD_OUT_ALL_POS: Sweep = Sweep {
        kind: "z",
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_q_all_pos`.
    pub const HEAD_Q_ALL_POS: Sweep = Sweep {
        kind: "q",
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_k_all_pos`.
    pub const HEAD_K_ALL_POS: Sweep = Sweep {
        kind: "k",
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_v_all_pos`.
    pub const HEAD_V_ALL_POS: Sweep = Sweep {
        kind: "v",
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_pattern_all_pos`.
    pub const HEAD_PATTERN_ALL_POS: Sweep = Sweep {
        kind: "pattern",
        index: PatchIndex::LayerHead,
    };
    /// `get_act_patch_attn_head_out_by_pos`: `[layer, pos, head]`.
    pub const HEAD_OUT_BY_POS: Sweep = Sweep {
        kind: "z",
        index: PatchIndex::LayerPosHead,
    };
    /// `get_act_patch_attn_head_q_by_pos`.
    pub const HEAD_Q_BY_POS: Sweep = Sweep {
        kind: "q",
        index: PatchIndex::LayerPosHead,
    };
    /// `get_act_patch_attn_head_k_by_pos`.
    pub const HEAD_K_BY_POS: Sweep = Sweep {
        kind: "k",
        index: PatchIndex::LayerPosHead,
    };
    /// `get_act_patch_attn_head_v_by_pos`.
    pub const HEAD_V_BY_POS: Sweep = Sweep {
        kind: "v",
        index: PatchIndex::LayerPosHead,
    };
    /// `get_act_patch_attn_head_pattern_by_pos`: `[layer, head_index, dest_pos]`.
    pub const HEAD_PATTERN_BY_POS: Sweep = Sweep {
        kind: "pattern",
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

/// Runs a patching sweep the naive way (one forward per index).
///
/// `clean_cache` must hold the swept kind at every layer (capture it with
/// `Selector::kind(sweep.kind)` on the clean run). `metric` maps the patched logits
/// `[batch, pos, vocab]` to a number (e.g. a normalized logit difference).
///
/// # Errors
/// An unknown kind, a cache without the needed points or of another shape than the corrupted
/// run, and forward errors.
pub fn patch_sweep(
    model: &Gpt2,
    corrupted: &TokenBatch,
    clean_cache: &ActivationCache,
    sweep: Sweep,
    metric: &dyn Fn(Tensor<3>) -> f32,
) -> Result<PatchResult> {
    patch_sweep_observed(model, corrupted, clean_cache, sweep, metric, &mut |_, _| {})
}

/// [`patch_sweep`], calling `observe(done, total)` after each patch (for progress bars).
///
/// # Errors
/// As [`patch_sweep`].
pub fn patch_sweep_observed(
    model: &Gpt2,
    corrupted: &TokenBatch,
    clean_cache: &ActivationCache,
    sweep: Sweep,
    metric: &dyn Fn(Tensor<3>) -> f32,
    observe: &mut dyn FnMut(usize, usize),
) -> Result<PatchResult> {
    let n_layers = model.config.n_layer;
    let n_heads = model.config.n_head;
    let n_pos = corrupted.seq_len();
    let points: Vec<HookPoint> = (0..n_layers)
        .map(|l| HookPoint::from_kind(sweep.kind, Some(l)))
        .collect::<Result<_, _>>()
        .map_err(burnlens_hooks::Error::from)?;
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
    let shape: Vec<usize> = match sweep.index {
        PatchIndex::LayerPos => vec![n_layers, n_pos],
        PatchIndex::LayerHead => vec![n_layers, n_heads],
        PatchIndex::LayerPosHead => vec![n_layers, n_pos, n_heads],
        PatchIndex::LayerHeadDestPos => vec![n_layers, n_heads, n_pos],
    };
    let total: usize = shape.iter().product();
    let mut values = Vec::with_capacity(total);
    for flat in 0..total {
        let mut idx = vec![0; shape.len()];
        let mut rest = flat;
        for (slot, n) in idx.iter_mut().zip(&shape).rev() {
            *slot = rest % n;
            rest /= n;
        }
        let point = points[idx[0]];
        let clean = clean_cache.get(point)?.clone();
        let patch = Intervention::replace(clean);
        let patch = match sweep.index {
            PatchIndex::LayerPos => patch.at(vec![idx[1]]),
            PatchIndex::LayerHead => patch.heads([idx[1]]),
            PatchIndex::LayerPosHead => patch.at(vec![idx[1]]).heads([idx[2]]),
            PatchIndex::LayerHeadDestPos => patch.heads([idx[1]]).at(vec![idx[2]]),
        };
        let mut hooks = HookSet::new();
        hooks.intervene(point, patch)?;
        let logits = hooks.run(model, corrupted)?;
        values.push(metric(logits));
        observe(flat + 1, total);
    }
    Ok(PatchResult {
        sweep,
        shape,
        values,
    })
}
