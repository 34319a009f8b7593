//! The batched patching engine.
//!
//! A patch at layer `l` leaves every earlier layer as in the corrupted run, and causal
//! attention leaves every position before the patched one unchanged at every layer. So the
//! engine runs the corrupted input once, caching each block's input and keys and values, and
//! then, for all patches that start at the same position `p`:
//!
//! - runs only positions `p..`, taking the keys and values of positions `..p` from the cache;
//! - stacks the patches as rows of one batch, sorted by layer; a patch's rows join the batch
//!   at its own layer, from the corrupted run's cached input to that block, so no row runs a
//!   block whose output the patch cannot change;
//! - at each layer applies the clean activation to just the rows that join there.
//!
//! Every block goes through [`Gpt2::block`], the stages of the one forward pass, so the
//! numbers are the naive engine's up to float rounding (checked in tests to 1e-5).

use burn::tensor::{Bool, Tensor, TensorData};
use burnlens_hooks::act::{head_axis, pos_axis};
use burnlens_hooks::{ActivationCache, HookSet, Intervention, Selector};
use burnlens_model::{
    ForwardContext, Gpt2, HookKind, HookPoint, Hooks, LayerKv, NoHooks, TokenBatch,
};

use super::patch::{Job, Patch};
use crate::error::Result;
use crate::metric::host_scores;
use crate::progress::Observer;

/// The corrupted run's state: each block's input and keys and values, and its logits.
pub(crate) struct Baseline {
    pub ctx: ForwardContext,
    pub cache: ActivationCache,
    pub logits: Tensor<3>,
}

impl Baseline {
    /// Runs the corrupted input once, caching what the patched runs start from; `corrupt`
    /// (e.g. noise on the token embeddings) is applied at its point first.
    pub fn new(
        model: &Gpt2,
        corrupted: &TokenBatch,
        corrupt: Option<(HookPoint, Intervention)>,
    ) -> Result<Self> {
        let ctx = model.context(corrupted, None)?;
        let mut hooks = HookSet::new();
        if let Some((point, intervention)) = corrupt {
            hooks.intervene(point, intervention)?;
        }
        hooks.capture(
            Selector::kind(HookKind::ResidPre)
                .or(Selector::kind(HookKind::K))
                .or(Selector::kind(HookKind::V)),
        );
        let logits = hooks.run(model, corrupted)?;
        Ok(Self {
            ctx,
            cache: hooks.take_cache(),
            logits,
        })
    }

    /// Block `layer`'s input at positions `from..`, `copies` times (copy-major rows).
    pub fn block_input(&self, layer: usize, from: usize, copies: usize) -> Result<Tensor<3>> {
        let x = self.cache.get3(HookPoint::ResidPre(layer))?;
        let t = x.dims()[1];
        Ok(x.narrow(1, from, t - from).repeat_dim(0, copies))
    }

    /// Block `layer`'s keys and values at positions `..until`, `copies` times, as a cache.
    pub fn prefix(&self, layer: usize, until: usize, copies: usize) -> Result<Option<LayerKv>> {
        if until == 0 {
            return Ok(None);
        }
        let kv = |p: HookPoint| -> Result<Tensor<4>> {
            Ok(self
                .cache
                .get4(p)?
                .narrow(1, 0, until)
                .swap_dims(1, 2)
                .repeat_dim(0, copies))
        };
        Ok(Some(LayerKv::new(
            kv(HookPoint::K(layer))?,
            kv(HookPoint::V(layer))?,
        )))
    }
}

/// Scores every patch of `job` from `base`, at most `max_rows` rows per forward, in result
/// order.
pub(crate) fn run(
    model: &Gpt2,
    base: &Baseline,
    job: &Job,
    max_rows: usize,
    observer: &Observer,
) -> Result<Vec<f32>> {
    let patches = job.patches;
    let b = base.ctx.rows();
    let per_chunk = (max_rows / b).max(1);
    // Group by the first position a patch can change, then by layer.
    let mut order: Vec<&Patch> = patches.iter().collect();
    order.sort_by_key(|p| (p.pos.unwrap_or(0), p.layers.start, p.index));
    let mut values = vec![f32::NAN; patches.len()];
    let mut done = 0;
    let mut start = 0;
    while start < order.len() {
        let from = order[start].pos.unwrap_or(0);
        let mut end = start;
        while end < order.len() && end - start < per_chunk && order[end].pos.unwrap_or(0) == from {
            end += 1;
        }
        let chunk = &order[start..end];
        let scores = run_chunk(model, base, job, chunk, from)?;
        for (patch, score) in chunk.iter().zip(host_scores(scores)?) {
            values[patch.index] = score;
        }
        done += chunk.len();
        observer.report(done, patches.len());
        start = end;
    }
    Ok(values)
}

/// Runs patches that all start at position `from`, sorted by layer, as one growing batch.
fn run_chunk(
    model: &Gpt2,
    base: &Baseline,
    job: &Job,
    chunk: &[&Patch],
    from: usize,
) -> Result<Vec<Tensor<1>>> {
    let (points, clean_cache, metric) = (job.points, job.clean, job.metric);
    let b = base.ctx.rows();
    let suffix = if from == 0 {
        base.ctx.clone()
    } else {
        base.ctx.suffix(from)?
    };
    let mut resid: Option<Tensor<3>> = None;
    let mut joined = 0;
    for (layer, &point) in points.iter().enumerate().skip(chunk[0].layers.start) {
        let joining = chunk[joined..]
            .iter()
            .take_while(|p| p.layers.start == layer)
            .count();
        if joining > 0 {
            let input = base.block_input(layer, from, joining)?;
            resid = Some(match resid {
                Some(r) => Tensor::cat(vec![r, input], 0),
                None => input,
            });
        }
        joined += joining;
        let ctx = suffix.tile(joined);
        let mut kv = base.prefix(layer, from, joined)?;
        let x = resid
            .take()
            .expect("the first patch joins at the first layer");
        let active = &chunk[..joined];
        let x = if active.iter().any(|p| p.layers.contains(&layer)) {
            let mut hooks = RowPatch {
                point,
                layer,
                clean: clean_cache.get(point)?.clone(),
                from,
                batch: b,
                copies: joined,
                patches: active,
            };
            model.block(layer, x, &ctx, kv.as_mut(), &mut hooks)?
        } else {
            model.block(layer, x, &ctx, kv.as_mut(), &mut NoHooks)?
        };
        resid = Some(x);
    }
    let resid = resid.expect("at least one block ran");
    let [rows, t, _] = resid.dims();
    let mut scores = Vec::with_capacity(chunk.len());
    if metric.last_position_only() {
        let logits = model.unembed(resid.narrow(1, t - 1, 1), &mut NoHooks)?;
        for i in 0..chunk.len() {
            scores.push(metric.score(logits.clone().narrow(0, i * b, b))?);
        }
    } else {
        for i in 0..chunk.len() {
            let rows_i = resid.clone().narrow(0, i * b, b);
            let mut logits = model.unembed(rows_i, &mut NoHooks)?;
            if from > 0 {
                let prefix = base.logits.clone().narrow(1, 0, from);
                logits = Tensor::cat(vec![prefix, logits], 1);
            }
            scores.push(metric.score(logits)?);
        }
    }
    debug_assert_eq!(rows, chunk.len() * b);
    Ok(scores)
}

/// Hooks that patch the clean activation into the rows of the patches that cover one layer.
struct RowPatch<'a> {
    point: HookPoint,
    layer: usize,
    /// The clean run's activation: one row per corrupted row, or one row for all.
    clean: burnlens_hooks::Act,
    from: usize,
    /// Rows per patch (the corrupted batch size).
    batch: usize,
    /// Patches in the batch now.
    copies: usize,
    /// The patches in the batch, in row order.
    patches: &'a [&'a Patch],
}

impl RowPatch<'_> {
    /// The mask (small, to broadcast) of the entries to replace, for an activation of `dims`.
    fn mask<const D: usize>(&self, dims: [usize; D]) -> Tensor<D, Bool> {
        let p_axis = pos_axis(self.point, D);
        let h_axis = head_axis(self.point, D);
        let mut small = [1usize; D];
        small[0] = dims[0];
        small[p_axis] = dims[p_axis];
        if let Some(a) = h_axis {
            small[a] = dims[a];
        }
        let mut strides = [1usize; D];
        for i in (0..D - 1).rev() {
            strides[i] = strides[i + 1] * small[i + 1];
        }
        let n: usize = small.iter().product();
        let values: Vec<bool> = (0..n)
            .map(|flat| {
                let at = |axis: usize| (flat / strides[axis]) % small[axis];
                let patch = self.patches[at(0) / self.batch];
                if !patch.layers.contains(&self.layer) {
                    return false;
                }
                // A patch at one position starts the suffix: local position 0.
                let pos_ok = patch.pos.is_none() || at(p_axis) == 0;
                let head_ok = match (patch.head, h_axis) {
                    (Some(h), Some(a)) => at(a) == h,
                    _ => true,
                };
                pos_ok && head_ok
            })
            .collect();
        Tensor::<D, Bool>::from_data(TensorData::new(values, small), &self.clean_device())
            .expand(dims)
    }

    fn clean_device(&self) -> burn::tensor::Device {
        match &self.clean {
            burnlens_hooks::Act::R3(t) => t.device(),
            burnlens_hooks::Act::R4(t) => t.device(),
        }
    }

    /// The clean activation at the suffix's positions, tiled to the batch.
    fn source<const D: usize>(&self, clean: Tensor<D>) -> Tensor<D> {
        let axis = pos_axis(self.point, D);
        let t = clean.dims()[axis];
        let clean = clean.narrow(axis, self.from, t - self.from);
        let clean = if clean.dims()[0] == 1 && self.batch > 1 {
            let mut dims = clean.dims();
            dims[0] = self.batch;
            clean.expand(dims)
        } else {
            clean
        };
        clean.repeat_dim(0, self.copies)
    }
}

impl RowPatch<'_> {
    /// The activation with the clean values written into the patched rows.
    fn patch<const D: usize>(&self, act: Tensor<D>, clean: Tensor<D>) -> Tensor<D> {
        let mask = self.mask(act.dims());
        act.mask_where(mask, self.source(clean))
    }

    fn rank_error(&self, e: burnlens_hooks::Error) -> burnlens_model::Error {
        burnlens_model::Error::Hook {
            point: self.point.to_string(),
            message: e.to_string(),
        }
    }
}

impl Hooks for RowPatch<'_> {
    fn is_active(&self, point: HookPoint) -> bool {
        point == self.point
    }

    fn hook3(&mut self, _point: HookPoint, act: Tensor<3>) -> burnlens_model::Result<Tensor<3>> {
        let clean = self.clean.r3().map_err(|e| self.rank_error(e))?;
        Ok(self.patch(act, clean))
    }

    fn hook4(&mut self, _point: HookPoint, act: Tensor<4>) -> burnlens_model::Result<Tensor<4>> {
        let clean = self.clean.r4().map_err(|e| self.rank_error(e))?;
        Ok(self.patch(act, clean))
    }
}
