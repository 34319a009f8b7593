//! MEMIT (Meng et al., 2022, "Mass-Editing Memory in a Transformer"): many facts written at
//! once into the MLP output projections (`mlp.c_proj`) of a range of layers.
//!
//! The algorithm, with MEMIT's semantics and defaults (kmeng01/memit, `memit/memit_main.py`):
//! 1. **Targets** `z`: for each request, on the unedited model, a vector `δ` is added to the
//!    residual stream after the last edited block (`hook_resid_post`, the block's output) at the
//!    last subject token of every rewriting prompt (each context template, its groups
//!    flattened, filled with the prompt and the new target's tokens but the last) and of the
//!    essence prompt `"{subject} is a"`, and optimised exactly as ROME's `v*` is (NLL of the new
//!    target read at the model's output, KL on the essence prompt, weight decay, the clamp;
//!    [`crate::rome`]); `z = z₀ + δ`.
//! 2. **Spread**: for each edited layer `lᵢ` in order, on the model edited so far: the keys `K`
//!    (one column per request: the input of `c_proj`, `mlp.hook_post`, at the last subject
//!    token of each context template filled with the prompt, averaged within each group of
//!    templates, then over the groups), the current `z` (the last edited block's output at the
//!    last subject token of the bare prompt), the residual `R = (z − current) / (layers left)`,
//!    and the update `ΔW = ((λ C + K Kᵀ)⁻¹ K) Rᵀ` (`[d_mlp, d_model]`, `c_proj`'s layout) in
//!    `f64`, with `C` the layer's uncentred key second moment ([`SecondMoment`], ROME's) and `λ`
//!    [`MemitConfig::mom2_update_weight`]; `ΔW` is added before the next layer's keys are
//!    computed.
//!
//! The edit is computed on a copy of the model ([`memit_edit`]) and applied as a reversible
//! change ([`MemitEdit::apply`]); `scripts/reference/memit_reference.py` is the independent
//! PyTorch implementation the tests compare with.

use burn::tensor::{Tensor, TensorData};
use burnlens_model::{GenerationConfig, Gpt2, Gpt2Tokenizer, HookPoint, Strategy};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rome::{
    Lookup, RomeConfig, RomeRequest, SecondMoment, StepObserver, VProblem, VStep, at, capture,
    check_layer, cholesky, cholesky_solve, host, lookup, set_c_proj, template_prefixes,
};

/// MEMIT's hyper-parameters (`hparams/MEMIT/*.json` in the original).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemitConfig {
    /// The blocks whose `mlp.c_proj` is edited, ascending; `z` is taken after the last.
    pub layers: Vec<usize>,
    /// Adam steps of each `δ` optimisation (`v_num_grad_steps`).
    pub v_num_grad_steps: usize,
    /// Adam's learning rate (`v_lr`).
    pub v_lr: f64,
    /// Weight of `‖δ‖ / ‖z₀‖²` in the loss (`v_weight_decay`).
    pub v_weight_decay: f64,
    /// `δ` is kept within `clamp_norm_factor × ‖z₀‖` (`clamp_norm_factor`).
    pub clamp_norm_factor: f64,
    /// Weight of the essence-preserving KL term (`kl_factor`).
    pub kl_factor: f64,
    /// `λ`, the weight of the keys' second moment against the new keys
    /// (`mom2_update_weight`); must be positive.
    pub mom2_update_weight: f64,
    /// The optimisation stops once the loss is below this (5e-2 in MEMIT's code).
    pub early_stop_loss: f64,
    /// Told of each step of each request's `δ` optimisation (never serialized).
    #[serde(skip)]
    pub on_step: StepObserver,
}

impl MemitConfig {
    /// `hparams/MEMIT/gpt2-xl.json`: layers 13–17, 20 steps of learning rate 0.5, weight
    /// decay 0.5, clamp 0.75, KL factor 0.0625, λ = 20000.
    pub fn gpt2_xl() -> Self {
        Self {
            layers: (13..=17).collect(),
            v_num_grad_steps: 20,
            v_lr: 0.5,
            v_weight_decay: 0.5,
            clamp_norm_factor: 0.75,
            kl_factor: 0.0625,
            mom2_update_weight: 20000.0,
            early_stop_loss: 5e-2,
            on_step: StepObserver::default(),
        }
    }

    /// The model organism's settings: its facts live in MLP 0 (docs/ORGANISM.md), so layer 0
    /// alone, with the XL settings but for a clamp of 4 × ‖z₀‖ (its residual stream is small
    /// beside the change a new fact needs) and λ = 1000 (100 cities rewritten at once: λ = 500
    /// keeps 91% of the neighbours, 1000 97%, 1500 98% but writes 87% of the facts).
    pub fn organism() -> Self {
        Self {
            layers: vec![0],
            clamp_norm_factor: 4.0,
            mom2_update_weight: 1000.0,
            ..Self::gpt2_xl()
        }
    }

    /// The GPT-2 XL settings with other layers.
    pub fn with_layers(layers: impl IntoIterator<Item = usize>) -> Self {
        Self {
            layers: layers.into_iter().collect(),
            ..Self::gpt2_xl()
        }
    }

    /// ROME's settings of the `z` optimisation at layer `z_layer`.
    fn v_config(&self, z_layer: usize) -> RomeConfig {
        RomeConfig {
            v_num_grad_steps: self.v_num_grad_steps,
            v_lr: self.v_lr,
            v_weight_decay: self.v_weight_decay,
            clamp_norm_factor: self.clamp_norm_factor,
            kl_factor: self.kl_factor,
            early_stop_loss: self.early_stop_loss,
            on_step: self.on_step.clone(),
            ..RomeConfig::at_layer(z_layer)
        }
    }
}

/// MEMIT's context templates (`get_context_templates`): the group `["{}"]`, then a group of
/// five texts sampled (top-k 5) from `"The"`, `"Therefore"`, `"Because"`, `"I"` and `"You"`,
/// each `length` tokens long with its prompt (MEMIT: 10), braces made spaces, blank lines made
/// spaces and `<|endoftext|>` removed, each followed by `". {}"`.
///
/// # Errors
/// A length not above a prompt's token count, and generation errors.
pub fn memit_context_templates(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    length: usize,
    seed: u64,
) -> Result<Vec<Vec<String>>> {
    let mut group = Vec::new();
    for (i, start) in ["The", "Therefore", "Because", "I", "You"]
        .iter()
        .enumerate()
    {
        let ids = tok.encode(start, false)?;
        if length <= ids.len() {
            return Err(Error::BadOption {
                option: "length",
                value: length.to_string(),
                expected: format!("more than the {} tokens of {start:?}", ids.len()),
            });
        }
        let generated = model.generate(
            &ids,
            &GenerationConfig {
                max_new_tokens: length - ids.len(),
                strategy: Strategy::Sample {
                    temperature: 1.0,
                    top_k: Some(5),
                    top_p: None,
                },
                num_return_sequences: 1,
                seed: seed.wrapping_add(i as u64),
                ..GenerationConfig::default()
            },
        )?;
        for g in generated {
            let all: Vec<u32> = ids.iter().chain(&g.tokens).copied().collect();
            let text = tok
                .decode(&all)?
                .replace(['{', '}'], " ")
                .replace("\n\n", " ")
                .replace("<|endoftext|>", "");
            group.push(format!("{text}. {{}}"));
        }
    }
    Ok(vec![vec!["{}".to_string()], group])
}

/// What MEMIT computed at one edited layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemitLayer {
    /// The layer.
    pub layer: usize,
    /// Per request, its key (`d_mlp`): the `c_proj` input at the last subject token, averaged
    /// over the context templates' groups.
    pub keys: Vec<Vec<f32>>,
    /// Per request, the last edited block's output at the last subject token of the bare
    /// prompt, on the model edited so far (`d_model`).
    pub current: Vec<Vec<f32>>,
    /// Per request, `(z − current) / (layers left)` (`d_model`).
    pub residual: Vec<Vec<f32>>,
    /// Per request, `(λ C + K Kᵀ)⁻¹ k` (`d_mlp`).
    pub adj: Vec<Vec<f64>>,
    /// `ΔW = Σ_r adj_r residual_rᵀ`, `[d_mlp, d_model]` row-major (`c_proj`'s layout).
    pub delta: Vec<f32>,
}

/// A computed MEMIT edit: one update per layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemitEdit {
    /// The edited layers, in order.
    pub layers: Vec<MemitLayer>,
    /// Per request, the target `z = z₀ + δ` of the last edited block's output.
    pub zs: Vec<Vec<f32>>,
    /// Per request, the `δ` optimisation's steps (the last one measured, not taken).
    pub steps: Vec<Vec<VStep>>,
    /// The context templates used, in their groups.
    pub templates: Vec<Vec<String>>,
}

/// What [`MemitEdit::apply`] changed, to put back.
#[derive(Debug)]
pub struct AppliedMemit {
    originals: Vec<(usize, Tensor<2>)>,
}

impl AppliedMemit {
    /// Restores every edited weight as it was before the edit, exactly.
    pub fn revert(self, model: &mut Gpt2) {
        for (layer, w) in self.originals.into_iter().rev() {
            set_c_proj(model, layer, w);
        }
    }
}

impl MemitEdit {
    /// Adds every layer's `ΔW` to the model's `c_proj` weight.
    ///
    /// # Errors
    /// A model of another shape than the one the edit was computed on.
    pub fn apply(&self, model: &mut Gpt2) -> Result<AppliedMemit> {
        let mut originals = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            check_layer(model, l.layer)?;
            let w = model.blocks[l.layer].mlp.c_proj.weight.val();
            let dims = w.dims();
            if dims[0] * dims[1] != l.delta.len() {
                let applied = AppliedMemit { originals };
                applied.revert(model);
                return Err(Error::Shape {
                    what: format!("layer {}'s c_proj weight", l.layer),
                    got: dims.to_vec(),
                    expected: format!("{} entries, the edit's", l.delta.len()),
                });
            }
            let delta = Tensor::<2>::from_data(
                TensorData::new(l.delta.clone(), [dims[0], dims[1]]),
                &model.device(),
            );
            set_c_proj(model, l.layer, w.clone() + delta);
            originals.push((l.layer, w));
        }
        Ok(AppliedMemit { originals })
    }
}

/// The checks of a MEMIT edit's inputs that need no forward pass.
fn check_inputs(
    model: &Gpt2,
    requests: &[RomeRequest],
    config: &MemitConfig,
    templates: &[Vec<String>],
    stats: &[SecondMoment],
) -> Result<()> {
    if requests.is_empty() {
        return Err(Error::Empty {
            what: "the batch of requests",
            hint: ": MEMIT writes at least one fact",
        });
    }
    if config.layers.is_empty() {
        return Err(Error::Empty {
            what: "the list of edited layers",
            hint: " (MEMIT's GPT-2 XL preset edits 13-17)",
        });
    }
    for &l in &config.layers {
        check_layer(model, l)?;
    }
    if config.layers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::BadOption {
            option: "layers",
            value: format!("{:?}", config.layers),
            expected: "distinct layers in ascending order".into(),
        });
    }
    if !(config.mom2_update_weight > 0.0 && config.mom2_update_weight.is_finite()) {
        return Err(Error::BadOption {
            option: "mom2_update_weight",
            value: config.mom2_update_weight.to_string(),
            expected: "a positive number (λ; MEMIT's GPT-2 XL preset: 20000)".into(),
        });
    }
    if templates.iter().all(Vec::is_empty) || templates.iter().any(Vec::is_empty) {
        return Err(Error::Empty {
            what: "a group of context templates",
            hint: " (MEMIT's first group is [\"{}\"])",
        });
    }
    let d = model.config.d_mlp();
    for &l in &config.layers {
        match stats.iter().find(|s| s.layer == l) {
            None => {
                return Err(Error::BadOption {
                    option: "stats",
                    value: format!(
                        "second moments of layers {:?}",
                        stats.iter().map(|s| s.layer).collect::<Vec<_>>()
                    ),
                    expected: format!(
                        "the keys' second moment of every edited layer ({l} missing)"
                    ),
                });
            }
            Some(s) if s.d != d => {
                return Err(Error::Shape {
                    what: format!("the second moment of layer {l}"),
                    got: vec![s.d, s.d],
                    expected: format!("[{d}, {d}], the model's key width"),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Wraps an error of request `index`.
fn of_request(index: usize) -> impl FnOnce(Error) -> Error {
    move |e| Error::Request {
        index,
        source: Box::new(e),
    }
}

/// Computes MEMIT's edit of `requests` at `config.layers` (the model is not changed; apply the
/// result with [`MemitEdit::apply`]). `templates` are groups of context templates ending in
/// `"{}"` (from [`memit_context_templates`]); `stats` holds the key second moment of every
/// edited layer ([`crate::second_moment`], computed on the unedited model).
///
/// # Errors
/// An empty batch, no or unordered layers or one outside the model, `λ ≤ 0`, a missing or
/// mismatched second moment, an empty group of templates or one not ending in `{}`; a request
/// whose prompt lacks `{}` or whose subject is not found (named by its index); a prompt longer
/// than the context; a system `λ C + K Kᵀ` that is not positive definite; forward errors.
pub fn memit_edit(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    requests: &[RomeRequest],
    config: &MemitConfig,
    templates: &[Vec<String>],
    stats: &[SecondMoment],
) -> Result<MemitEdit> {
    check_inputs(model, requests, config, templates, stats)?;
    let z_layer = *config.layers.last().expect("checked");
    let flat: Vec<String> = templates.iter().flatten().cloned().collect();
    // Every request's prompts, tokenized once before any optimisation (a bad request fails at
    // once): the bare prompt, and each context template filled with it (the keys' prompts,
    // request by request).
    let mut prefixes_of = Vec::with_capacity(requests.len());
    let mut bare = Vec::with_capacity(requests.len());
    let mut keyed = Vec::with_capacity(requests.len() * flat.len());
    for (i, r) in requests.iter().enumerate() {
        let prefixes = template_prefixes(r, &flat).map_err(of_request(i))?;
        let filled = r.filled();
        bare.push(lookup(tok, &filled, &r.subject).map_err(of_request(i))?);
        for prefix in &prefixes {
            keyed.push(
                lookup(tok, &format!("{prefix}{filled}"), &r.subject).map_err(of_request(i))?,
            );
        }
        prefixes_of.push(prefixes);
    }
    // 1. The targets, on the unedited model.
    let v_config = config.v_config(z_layer);
    let mut zs = Vec::with_capacity(requests.len());
    let mut steps = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let (z, s) = VProblem::new(
            model,
            tok,
            r,
            HookPoint::ResidPost(z_layer),
            &prefixes_of[i],
        )
        .and_then(|p| p.solve(model, &v_config))
        .map_err(of_request(i))?;
        zs.push(z);
        steps.push(s);
    }
    // 2. The layers, in order, each on the model edited so far.
    let mut working = model.clone();
    let mut layers = Vec::with_capacity(config.layers.len());
    for (i, &layer) in config.layers.iter().enumerate() {
        let keys = layer_keys(&working, &keyed, templates, layer)?;
        let current = at_lookups(&working, &bare, HookPoint::ResidPost(z_layer))?;
        let left = (config.layers.len() - i) as f32;
        let residual: Vec<Vec<f32>> = zs
            .iter()
            .zip(&current)
            .map(|(z, c)| z.iter().zip(c).map(|(z, c)| (z - c) / left).collect())
            .collect();
        let stat = stats.iter().find(|s| s.layer == layer).expect("checked");
        let adj = solve_keys(stat, &keys, config.mom2_update_weight)?;
        let (d_mlp, d_model) = (keys[0].len(), residual[0].len());
        // ΔW is summed in f64 over the requests, then rounded once.
        let mut delta64 = vec![0f64; d_mlp * d_model];
        for (a, r) in adj.iter().zip(&residual) {
            for (row, &ai) in delta64.chunks_exact_mut(d_model).zip(a) {
                for (x, &rj) in row.iter_mut().zip(r) {
                    *x += ai * f64::from(rj);
                }
            }
        }
        let delta: Vec<f32> = delta64.iter().map(|&v| v as f32).collect();
        let w = working.blocks[layer].mlp.c_proj.weight.val();
        let update = Tensor::<2>::from_data(
            TensorData::new(delta.clone(), [d_mlp, d_model]),
            &w.device(),
        );
        set_c_proj(&mut working, layer, w + update);
        layers.push(MemitLayer {
            layer,
            keys,
            current,
            residual,
            adj,
            delta,
        });
    }
    Ok(MemitEdit {
        layers,
        zs,
        steps,
        templates: templates.to_vec(),
    })
}

/// Rows per forward pass when reading activations at lookups.
const ROWS: usize = 32;

/// The activation at `point` at each lookup (`[d]` each), `ROWS` prompts per forward.
fn at_lookups(model: &Gpt2, lookups: &[Lookup], point: HookPoint) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(lookups.len());
    for chunk in lookups.chunks(ROWS) {
        let refs: Vec<&Lookup> = chunk.iter().collect();
        let (_, acts) = capture(model, &refs, &[point])?;
        for (r, l) in chunk.iter().enumerate() {
            out.push(host(at(&acts[0], r, l.idx)));
        }
    }
    Ok(out)
}

/// Each request's key at `layer`: the `c_proj` input at the last subject token of every
/// context template filled with the prompt (`keyed`, request by request, templates in order),
/// averaged within each group, then over the groups.
fn layer_keys(
    model: &Gpt2,
    keyed: &[Lookup],
    templates: &[Vec<String>],
    layer: usize,
) -> Result<Vec<Vec<f32>>> {
    let acts = at_lookups(model, keyed, HookPoint::MlpPost(layer))?;
    let per_request: usize = templates.iter().map(Vec::len).sum();
    Ok(acts
        .chunks(per_request)
        .map(|rows| {
            let d = rows[0].len();
            let mut start = 0;
            let mut key = vec![0f32; d];
            for group in templates {
                let mut mean = vec![0f32; d];
                for row in &rows[start..start + group.len()] {
                    for (m, x) in mean.iter_mut().zip(row) {
                        *m += x;
                    }
                }
                for (k, m) in key.iter_mut().zip(&mean) {
                    *k += m / group.len() as f32;
                }
                start += group.len();
            }
            key.iter().map(|k| k / templates.len() as f32).collect()
        })
        .collect())
}

/// `(λ C + K Kᵀ)⁻¹ kᵣ` for every key `kᵣ`, in f64 through a Cholesky factorisation.
fn solve_keys(stat: &SecondMoment, keys: &[Vec<f32>], lambda: f64) -> Result<Vec<Vec<f64>>> {
    let d = stat.d;
    let mut a: Vec<f64> = stat.matrix().iter().map(|c| lambda * c).collect();
    for k in keys {
        for i in 0..d {
            let ki = f64::from(k[i]);
            for j in 0..d {
                a[i * d + j] += ki * f64::from(k[j]);
            }
        }
    }
    let l = cholesky(&a, d).map_err(|m| {
        Error::Degenerate(format!(
            "layer {}: λ C + K Kᵀ: {m} ({} tokens counted in C)",
            stat.layer, stat.count
        ))
    })?;
    Ok(keys.iter().map(|k| cholesky_solve(&l, d, k)).collect())
}
