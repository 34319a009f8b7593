//! Steering vectors (activation addition): the difference of two prompts' activations at a
//! hook point, added with a coefficient at every position while generating.

use burn::tensor::Tensor;
use burnlens_hooks::{HookSet, Intervention, Selector, run_with_cache};
use burnlens_model::{Generated, GenerationConfig, Gpt2, HookPoint, TokenBatch};
use serde::Serialize;

use crate::error::{Error, Result};

/// `act(a)[pos_a] − act(b)[pos_b]` at `point` (a residual-width point such as
/// `blocks.10.hook_attn_out` or `hook_resid_pre`); positions default to each prompt's last.
///
/// # Shapes
/// - output: `[d_model]`
///
/// # Errors
/// Empty prompts, positions past them, a point without a `[batch, pos, d]` activation, and
/// forward errors.
pub fn steering_vector(
    model: &Gpt2,
    a: &[u32],
    b: &[u32],
    point: HookPoint,
    positions: Option<(usize, usize)>,
) -> Result<Tensor<1>> {
    for (what, ids) in [
        ("the first steering prompt", a),
        ("the second steering prompt", b),
    ] {
        if ids.is_empty() {
            return Err(Error::Empty { what, hint: "" });
        }
    }
    let (pa, pb) = positions.unwrap_or((a.len() - 1, b.len() - 1));
    for (p, ids) in [(pa, a), (pb, b)] {
        if p >= ids.len() {
            return Err(Error::OutOfRange {
                what: "steering position",
                value: p,
                limit: format!("its prompt has {} tokens", ids.len()),
            });
        }
    }
    let act = |ids: &[u32], p: usize| -> Result<Tensor<1>> {
        let (_, cache) = run_with_cache(model, &TokenBatch::single(ids)?, Selector::point(point)?)?;
        let x = cache
            .get(point)?
            .r3()
            .map_err(|_| Error::UnsupportedPoint {
                experiment: "a steering vector",
                point: point.to_string(),
                supported: "a [batch, pos, d] activation (resid_pre, resid_post, mlp_out, …)",
            })?;
        let d = x.dims()[2];
        Ok(x.narrow(1, p, 1).reshape([d]))
    };
    Ok(act(a, pa)? - act(b, pb)?)
}

/// A generation with and without a steering vector.
#[derive(Debug, Clone, Serialize)]
pub struct Steered {
    /// Without the vector.
    pub plain: Vec<Generated>,
    /// With `coefficient × vector` added at `point`.
    pub steered: Vec<Generated>,
}

/// Generates from `prompt` twice: as is, and with `coefficient × vector` added at `point` at
/// every position of every forward pass.
///
/// # Errors
/// A vector of the wrong width for the point, and generation errors.
pub fn steer_generation(
    model: &Gpt2,
    prompt: &[u32],
    config: &GenerationConfig,
    point: HookPoint,
    vector: &Tensor<1>,
    coefficient: f32,
) -> Result<Steered> {
    let plain = model.generate(prompt, config)?;
    let mut hooks = HookSet::new();
    hooks.intervene(point, Intervention::add(vector.clone() * coefficient))?;
    hooks.check(model.config.n_layer)?;
    let steered = model.generate_with_hooks(prompt, config, &mut hooks)?;
    Ok(Steered { plain, steered })
}
