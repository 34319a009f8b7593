//! Attribution patching (Nanda, 2023): the first-order estimate of every patch of a sweep,
//! `(a_clean − a_corrupted) · ∂M/∂a` with the gradient taken on the corrupted run, from one
//! clean forward (the cache), one corrupted forward and one backward, for all sweeps at once.
//! Results have the exact sweeps' shapes, so each can be set beside [`crate::patch_sweep`]'s
//! (see [`pearson`]).

use burn::tensor::Tensor;
use burnlens_hooks::{Act, ActivationCache, HookSet, Selector};
use burnlens_model::{Gpt2, HookPoint, TokenBatch};

use crate::error::{Error, Result};
use crate::metric::PatchMetric;
use crate::patching::{PatchIndex, PatchResult, Sweep, sweep_points};

/// Attribution-patching estimates of `sweeps` (any of [`Sweep`]'s constants) for the clean
/// activations in `clean_cache` patched into `corrupted`, under `metric`.
///
/// # Errors
/// A cache without a needed point or of another shape than the corrupted run, a metric that
/// does not depend on the logits, and forward errors.
pub fn attribution_patch(
    model: &Gpt2,
    corrupted: &TokenBatch,
    clean_cache: &ActivationCache,
    sweeps: &[Sweep],
    metric: &dyn PatchMetric,
) -> Result<Vec<PatchResult>> {
    let n_layers = model.config.n_layer;
    let mut points: Vec<HookPoint> = Vec::new();
    for sweep in sweeps {
        points.extend(sweep_points(*sweep, n_layers)?);
    }
    points.sort();
    points.dedup();
    let mut hooks = HookSet::new();
    hooks.capture(Selector::points(points.clone())?);
    hooks.grad(Selector::points(points.clone())?);
    let (_, grads) = hooks.try_run_with_grads(model, corrupted, |logits| metric.score(logits))?;
    let corrupted_cache = hooks.take_cache();
    let mut out = Vec::with_capacity(sweeps.len());
    for &sweep in sweeps {
        let mut per_layer = Vec::with_capacity(n_layers);
        for point in sweep_points(sweep, n_layers)? {
            let clean = clean_cache.get(point)?;
            let corrupt = corrupted_cache.get(point)?;
            if clean.dims() != corrupt.dims() {
                let dims = corrupt.dims();
                return Err(Error::CacheMismatch {
                    point: point.to_string(),
                    cached: clean.dims().to_vec(),
                    rows: dims[0],
                    tokens: dims[burnlens_hooks::act::pos_axis(point, dims.len())],
                });
            }
            let grad = grads.get(point)?;
            per_layer.push(reduce(point, sweep.index, clean, corrupt, grad)?);
        }
        let values = host_scores_flat(per_layer)?;
        let shape = sweep
            .index
            .shape(n_layers, model.config.n_head, corrupted.seq_len());
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        out.push(PatchResult {
            sweep,
            shape,
            values,
        });
    }
    Ok(out)
}

/// Reads flat per-layer tensors back to the host, concatenated.
fn host_scores_flat(per_layer: Vec<Tensor<1>>) -> Result<Vec<f32>> {
    let all = Tensor::cat(per_layer, 0);
    Ok(all
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float attributions"))
}

/// `(clean − corrupted) · grad`, summed over the batch and the axes the sweep's index does not
/// keep, flattened in the index's order (without the layer axis).
fn reduce(
    point: HookPoint,
    index: PatchIndex,
    clean: &Act,
    corrupt: &Act,
    grad: &Act,
) -> Result<Tensor<1>> {
    let bad = || Error::Shape {
        what: format!("the gradient at {point}"),
        got: grad.dims().to_vec(),
        expected: format!("the activation's shape {:?}", clean.dims()),
    };
    Ok(match (clean, corrupt, grad) {
        (Act::R3(c), Act::R3(x), Act::R3(g)) => {
            // [b, pos, d] -> [pos]
            let t = (c.clone() - x.clone()) * g.clone();
            let n_pos = t.dims()[1];
            t.sum_dim(2).sum_dim(0).reshape([n_pos])
        }
        (Act::R4(c), Act::R4(x), Act::R4(g)) => {
            let t = (c.clone() - x.clone()) * g.clone();
            let [_, a1, a2, _] = t.dims();
            let pattern = matches!(point, HookPoint::Pattern(_) | HookPoint::AttnScores(_));
            match (pattern, index) {
                // [b, pos, h, dh]
                (false, PatchIndex::LayerHead) => t.sum_dim(3).sum_dim(1).sum_dim(0).reshape([a2]),
                (false, _) => t.sum_dim(3).sum_dim(0).reshape([a1 * a2]),
                // [b, h, q, k]
                (true, PatchIndex::LayerHead) => t.sum_dim(3).sum_dim(2).sum_dim(0).reshape([a1]),
                (true, _) => t.sum_dim(3).sum_dim(0).reshape([a1 * a2]),
            }
        }
        _ => return Err(bad()),
    })
}

/// Pearson correlation of two equal-length series (`NaN` when either is constant).
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (
        a.iter().map(|&x| f64::from(x)).sum::<f64>() / n,
        b.iter().map(|&x| f64::from(x)).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}
