//! ROME (Meng et al., 2022, "Locating and Editing Factual Associations in GPT"): a rank-one
//! edit of one MLP output projection (`mlp.c_proj`) that writes a new fact.
//!
//! The algorithm, with ROME's semantics and defaults:
//! 1. **Second moment** of the keys — the input of `mlp.c_proj`, i.e. `mlp.hook_post` — over a
//!    text corpus: the uncentred `C = Σ k kᵀ / count` over every token ([`second_moment`],
//!    cached on disk by [`second_moment_cached`]).
//! 2. **Context templates**: the bare `"{}"` plus short texts the model itself generates from
//!    `<|endoftext|>` (top-k 5 sampling), each followed by `". {}"` ([`context_templates`]).
//! 3. **Key** `k*`: the key at the last subject token, averaged over the templates;
//!    `u = C⁻¹ k*`, normalised ([`RomeConfig::mom2_adjustment`]; without it `u = k*/‖k*‖`).
//! 4. **Value** `v*`: a vector `δ` is added to the MLP output (`hook_mlp_out`) at the last
//!    subject token of every rewriting prompt (template + prompt + the new target's tokens but
//!    the last) and of the essence prompt `"{subject} is a"`, and optimised with Adam to
//!    minimise the new target's NLL plus `kl_factor` × KL(essence distribution ‖ its
//!    original) plus `v_weight_decay` × ‖δ‖ / ‖v₀‖², `δ` projected into the ball of radius
//!    `clamp_norm_factor` × ‖v₀‖ after each step, stopping early below a loss of 5e-2.
//!    `v* = v₀ + δ`, where `v₀` is the original MLP output of the first rewriting prompt.
//! 5. **Update**: with `k` and `W k` the key and MLP output at the last subject token of the
//!    bare prompt, `ΔW = u (v* − W k)ᵀ / (k · u)` is added to `c_proj`'s weight (stored
//!    `[d_mlp, d_model]` as in Hugging Face's `Conv1D`), so that the edited MLP maps `k` to `v*`.
//!
//! An edit is computed without touching the model ([`rome_edit`]) and applied as a reversible
//! change ([`RomeEdit::apply`] returns the [`AppliedEdit`] that restores the weight exactly).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use burn::module::Param;
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use burnlens_hooks::{Act, HookSet, Intervention, Selector};
use burnlens_metrics::token_log_probs;
use burnlens_model::{
    GenerationConfig, Gpt2, Gpt2Tokenizer, HookPoint, PaddingSide, Strategy, TokenBatch,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::progress::Observer;

/// ROME's hyper-parameters (`hparams/ROME/*.json` in the original).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RomeConfig {
    /// The block whose `mlp.c_proj` is edited.
    pub layer: usize,
    /// Adam steps of the `δ` optimisation (`v_num_grad_steps`).
    pub v_num_grad_steps: usize,
    /// Adam's learning rate (`v_lr`).
    pub v_lr: f64,
    /// Weight of `‖δ‖ / ‖v₀‖²` in the loss (`v_weight_decay`).
    pub v_weight_decay: f64,
    /// `δ` is kept within `clamp_norm_factor × ‖v₀‖` (`clamp_norm_factor`).
    pub clamp_norm_factor: f64,
    /// Weight of the essence-preserving KL term (`kl_factor`).
    pub kl_factor: f64,
    /// Whether `u = C⁻¹ k*` (true in every ROME preset) or `u = k*`.
    pub mom2_adjustment: bool,
    /// The optimisation stops once the loss is below this (5e-2 in ROME's code).
    pub early_stop_loss: f64,
    /// Context templates: `[length, count]` pairs; `count` texts of `length` tokens (the
    /// `<|endoftext|>` they start from included) are generated for each
    /// (`context_template_length_params`).
    pub context_template_length_params: Vec<[usize; 2]>,
    /// Seed of the context templates' sampling.
    pub template_seed: u64,
    /// Told of each step of the `δ` optimisation (not a hyper-parameter: never serialized).
    #[serde(skip)]
    pub on_step: StepObserver,
}

/// Called with `(step, the step's losses)` as ROME's `δ` optimisation runs. `Default` is no
/// observer; like [`Observer`], it is `Clone` and compares equal to any other.
#[derive(Clone, Default)]
pub struct StepObserver(Option<Arc<StepFn>>);

/// What a [`StepObserver`] calls.
type StepFn = dyn Fn(usize, &VStep) + Send + Sync;

impl StepObserver {
    /// An observer that calls `f(step, losses)`.
    pub fn new(f: impl Fn(usize, &VStep) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    fn report(&self, step: usize, losses: &VStep) {
        if let Some(f) = &self.0 {
            f(step, losses);
        }
    }
}

impl std::fmt::Debug for StepObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StepObserver(set)"
        } else {
            "StepObserver(none)"
        })
    }
}

impl PartialEq for StepObserver {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Options of [`second_moment`]; `Default` runs 16 texts per forward with no observer.
#[derive(Debug, Clone, PartialEq)]
pub struct MomentOptions {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Told `(texts done, texts in all)` as batches complete.
    pub observer: Observer,
}

impl Default for MomentOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            observer: Observer::none(),
        }
    }
}

impl RomeConfig {
    /// ROME's GPT-2 XL preset (layer 17, clamp 4).
    pub fn gpt2_xl() -> Self {
        Self::at_layer(17)
    }

    /// ROME's GPT-2 large preset (layer 12, clamp 4).
    pub fn gpt2_large() -> Self {
        Self::at_layer(12)
    }

    /// ROME's GPT-2 medium preset (layer 8, clamp 3).
    pub fn gpt2_medium() -> Self {
        Self {
            clamp_norm_factor: 3.0,
            ..Self::at_layer(8)
        }
    }

    /// The preset of a known model name (`gpt2-xl`, `gpt2-large`, `gpt2-medium`, with or
    /// without `openai-community/`).
    pub fn preset(name: &str) -> Option<Self> {
        match name.trim_start_matches("openai-community/") {
            "gpt2-xl" => Some(Self::gpt2_xl()),
            "gpt2-large" => Some(Self::gpt2_large()),
            "gpt2-medium" => Some(Self::gpt2_medium()),
            _ => None,
        }
    }

    /// ROME's shared defaults (those of its GPT-2 XL preset) at another layer.
    pub fn at_layer(layer: usize) -> Self {
        Self {
            layer,
            v_num_grad_steps: 20,
            v_lr: 0.5,
            v_weight_decay: 0.5,
            clamp_norm_factor: 4.0,
            kl_factor: 0.0625,
            mom2_adjustment: true,
            early_stop_loss: 5e-2,
            context_template_length_params: vec![[5, 10], [10, 10]],
            template_seed: 0,
            on_step: StepObserver::default(),
        }
    }
}

/// The uncentred second moment of the keys at one layer (`mlp.hook_post`), accumulated in
/// `f64`.
#[derive(Debug, Clone)]
pub struct SecondMoment {
    /// The layer.
    pub layer: usize,
    /// The key width (`d_mlp`).
    pub d: usize,
    /// Tokens counted.
    pub count: u64,
    /// `Σ k kᵀ`, row-major `[d, d]`.
    sum: Vec<f64>,
    /// The Cholesky factor of the moment, computed on first use.
    factor: OnceLock<std::result::Result<Vec<f64>, String>>,
}

impl SecondMoment {
    /// `Σ k kᵀ / count`, row-major `[d, d]`.
    pub fn matrix(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum.iter().map(|v| v / n).collect()
    }

    /// Solves `C x = k` (ROME's `C⁻¹ k`) through a Cholesky factorisation of `C`, computed once.
    ///
    /// # Errors
    /// A key of another width, or a moment that is not positive definite (too few or too
    /// similar tokens: count more text).
    pub fn solve(&self, k: &[f32]) -> Result<Vec<f64>> {
        if k.len() != self.d {
            return Err(Error::Shape {
                what: "the key".into(),
                got: vec![k.len()],
                expected: format!("[{}], the second moment's width", self.d),
            });
        }
        let l = self
            .factor
            .get_or_init(|| cholesky(&self.matrix(), self.d))
            .as_ref()
            .map_err(|m| Error::Degenerate(format!("{m} ({} tokens counted)", self.count)))?;
        Ok(cholesky_solve(l, self.d, k))
    }

    /// Writes the moment as safetensors (`sum`, f64 `[d, d]`), with the layer and count in
    /// its metadata.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = |p: &Path, e: &dyn std::fmt::Display| Error::File {
            path: p.to_path_buf(),
            message: e.to_string(),
        };
        let bytes: Vec<u8> = self.sum.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F64,
            vec![self.d, self.d],
            &bytes,
        )
        .map_err(|e| file(path, &e))?;
        let meta = std::collections::HashMap::from([
            ("layer".to_string(), self.layer.to_string()),
            ("count".to_string(), self.count.to_string()),
        ]);
        let out =
            safetensors::serialize([("sum", view)], Some(meta)).map_err(|e| file(path, &e))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| file(dir, &format!("creating the directory: {e}")))?;
        }
        std::fs::write(path, out).map_err(|e| file(path, &format!("writing: {e}")))
    }

    /// Reads a moment written by [`SecondMoment::save`].
    ///
    /// # Errors
    /// A missing or malformed file.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |message: String| Error::File {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let t = st.tensor("sum").map_err(|e| bad(e.to_string()))?;
        let shape = t.shape().to_vec();
        if t.dtype() != safetensors::Dtype::F64 || shape.len() != 2 || shape[0] != shape[1] {
            return Err(bad(format!(
                "`sum` must be f64 [d, d], not {:?} {shape:?}",
                t.dtype()
            )));
        }
        let field = |k: &str| -> Result<u64> {
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get(k))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(format!("no `{k}` in the metadata")))
        };
        Ok(Self {
            layer: field("layer")? as usize,
            count: field("count")?,
            d: shape[0],
            sum: t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            factor: OnceLock::new(),
        })
    }
}

/// The second moment of the keys at `layer` over `texts` (token ids; each truncated to the
/// model's context, empty ones skipped), `options.batch_size` texts per forward pass.
///
/// # Errors
/// A layer out of range, no token at all, and forward-pass errors.
pub fn second_moment(
    model: &Gpt2,
    layer: usize,
    texts: &[Vec<u32>],
    options: &MomentOptions,
) -> Result<SecondMoment> {
    let batch_size = options.batch_size.max(1);
    check_layer(model, layer)?;
    let n_ctx = model.config.n_positions;
    let texts: Vec<&[u32]> = texts
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| &t[..t.len().min(n_ctx)])
        .collect();
    let d = model.config.d_mlp();
    let mut sum = vec![0f64; d * d];
    let mut count = 0u64;
    let point = HookPoint::MlpPost(layer);
    for (i, chunk) in texts.chunks(batch_size).enumerate() {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|t| t.to_vec()).collect();
        let batch = TokenBatch::padded(&rows, 0, PaddingSide::Right)?;
        let mut set = HookSet::new();
        set.capture(Selector::point(point)?);
        set.run(model, &batch)?;
        let keys = set.cache().get3(point)?;
        let [b, p, _] = keys.dims();
        // The rows of the real tokens (right padding: the first len of each row).
        let idx: Vec<i64> = rows
            .iter()
            .enumerate()
            .flat_map(|(r, t)| (0..t.len()).map(move |j| (r * p + j) as i64))
            .collect();
        let flat = keys.reshape([b * p, d]).select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(idx.clone(), [idx.len()]), &model.device()),
        );
        let g = host(flat.clone().transpose().matmul(flat));
        for (s, v) in sum.iter_mut().zip(g) {
            *s += v as f64;
        }
        count += idx.len() as u64;
        options
            .observer
            .report(((i + 1) * batch_size).min(texts.len()), texts.len());
    }
    if count == 0 {
        return Err(Error::Empty {
            what: "the text to measure the second moment on",
            hint: ": it needs at least one token",
        });
    }
    Ok(SecondMoment {
        layer,
        d,
        count,
        sum,
        factor: OnceLock::new(),
    })
}

/// [`second_moment`], cached in `cache_dir` under a name made of `model_key` (a name for the
/// checkpoint, e.g. its directory or hub id), the layer and a hash of the corpus's tokens:
/// read from there when present, computed and written there otherwise.
///
/// # Errors
/// As [`second_moment`], and I/O errors of the cache.
pub fn second_moment_cached(
    model: &Gpt2,
    model_key: &str,
    layer: usize,
    texts: &[Vec<u32>],
    cache_dir: &Path,
    options: &MomentOptions,
) -> Result<(SecondMoment, PathBuf)> {
    let path = cache_dir.join(format!(
        "{}-layer{layer}-{:016x}.mom2.safetensors",
        model_key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            })
            .collect::<String>(),
        corpus_hash(texts, model.config.n_positions)
    ));
    if path.exists() {
        let m = SecondMoment::load(&path)?;
        if m.layer == layer && m.d == model.config.d_mlp() {
            return Ok((m, path));
        }
    }
    let m = second_moment(model, layer, texts, options)?;
    m.save(&path)?;
    Ok((m, path))
}

/// FNV-1a over the (truncated) token ids and text boundaries.
fn corpus_hash(texts: &[Vec<u32>], n_ctx: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    for t in texts.iter().filter(|t| !t.is_empty()) {
        for &id in &t[..t.len().min(n_ctx)] {
            eat(id as u64);
        }
        eat(u64::MAX);
    }
    h
}

/// Lower-triangular `L` with `L Lᵀ = a` (row-major `[d, d]`).
pub(crate) fn cholesky(a: &[f64], d: usize) -> std::result::Result<Vec<f64>, String> {
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            let v = a[i * d + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return Err(format!(
                        "the keys' second moment is not positive definite (pivot {i} is {v:e})"
                    ));
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = v / l[j * d + j];
            }
        }
    }
    Ok(l)
}

/// `x` with `L Lᵀ x = b`.
pub(crate) fn cholesky_solve(l: &[f64], d: usize, b: &[f32]) -> Vec<f64> {
    let mut y = vec![0f64; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
        y[i] = (b[i] as f64 - s) / l[i * d + i];
    }
    let mut x = vec![0f64; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * d + i];
    }
    x
}

/// ROME's context templates: `"{}"`, then for each `[length, count]` of `length_params`,
/// `count` texts sampled (top-k 5) from `<|endoftext|>` for `length − 1` new tokens, with
/// `<|endoftext|>` removed and blank lines made spaces, each followed by `". {}"`.
///
/// # Errors
/// A vocabulary without `<|endoftext|>`, a length below 2, and generation errors.
pub fn context_templates(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    length_params: &[[usize; 2]],
    seed: u64,
) -> Result<Vec<String>> {
    let eot = tok.endoftext_id().ok_or_else(|| Error::MissingToken {
        token: "<|endoftext|>",
        needed_for: "generating context templates",
    })?;
    let mut out = vec!["{}".to_string()];
    for (i, &[length, count]) in length_params.iter().enumerate() {
        if length < 2 {
            return Err(Error::BadOption {
                option: "context_template_length_params",
                value: format!("[{length}, {count}]"),
                expected: "a length of at least 2 (<|endoftext|> and one token)".into(),
            });
        }
        let generated = model.generate(
            &[eot],
            &GenerationConfig {
                max_new_tokens: length - 1,
                strategy: Strategy::Sample {
                    temperature: 1.0,
                    top_k: Some(5),
                    top_p: None,
                },
                num_return_sequences: count,
                seed: seed.wrapping_add(i as u64),
                ..GenerationConfig::default()
            },
        )?;
        for g in generated {
            let text = tok
                .decode(&g.tokens)?
                .replace("<|endoftext|>", "")
                .replace("\n\n", " ");
            out.push(format!("{text}. {{}}"));
        }
    }
    Ok(out)
}

/// A fact to write: `prompt` holds `{}` where `subject` goes, and the edited model should
/// continue it with `target_new`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RomeRequest {
    /// The prompt, `{}` standing for the subject (e.g. `"{} lives in"`).
    pub prompt: String,
    /// The subject (e.g. `"Ada Lovelace"`).
    pub subject: String,
    /// The new answer; a leading space is added when missing, as ROME does.
    pub target_new: String,
}

impl RomeRequest {
    /// The prompt with the subject filled in.
    pub fn filled(&self) -> String {
        self.prompt.replacen("{}", &self.subject, 1)
    }
}

/// One step of the `δ` optimisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VStep {
    /// The loss: `nll + kl + weight_decay`.
    pub loss: f32,
    /// The new target's NLL per token, averaged over the rewriting prompts.
    pub nll: f32,
    /// `kl_factor` × the essence KL.
    pub kl: f32,
    /// `v_weight_decay × ‖δ‖ / ‖v₀‖²`.
    pub weight_decay: f32,
    /// Mean over rewriting prompts of `exp(−nll)`: the new target's (per-token) probability.
    pub prob_new: f32,
}

/// A computed ROME edit of one layer's `mlp.c_proj`: `ΔW = u ⊗ right`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RomeEdit {
    /// The edited layer.
    pub layer: usize,
    /// The left vector `u` (`d_mlp`), unit norm.
    pub u: Vec<f32>,
    /// The right vector `(v* − W k) / (k · u)` (`d_model`).
    pub right: Vec<f32>,
    /// `k*`: the key at the last subject token averaged over the context templates.
    pub k_star: Vec<f32>,
    /// `k`: the key at the last subject token of the bare prompt.
    pub key: Vec<f32>,
    /// `v* = v₀ + δ`: the MLP output the edit writes for `key`.
    pub target: Vec<f32>,
    /// The optimisation's steps (the last one measured, not taken).
    pub steps: Vec<VStep>,
    /// The context templates used.
    pub templates: Vec<String>,
}

/// What [`RomeEdit::apply`] changed, to put back.
#[derive(Debug)]
pub struct AppliedEdit {
    layer: usize,
    original: Tensor<2>,
}

impl AppliedEdit {
    /// Restores the weight as it was before the edit, exactly. Reverting edits out of the
    /// order they were applied in also undoes the ones applied after this one.
    pub fn revert(self, model: &mut Gpt2) {
        set_c_proj(model, self.layer, self.original);
    }
}

impl RomeEdit {
    /// The update `u rightᵀ`, `[d_mlp, d_model]` (the layout of `c_proj`'s weight).
    pub fn delta(&self, device: &burn::tensor::Device) -> Tensor<2> {
        let u = Tensor::<1>::from_data(TensorData::new(self.u.clone(), [self.u.len()]), device);
        let r = Tensor::<1>::from_data(
            TensorData::new(self.right.clone(), [self.right.len()]),
            device,
        );
        u.reshape([self.u.len(), 1])
            .matmul(r.reshape([1, self.right.len()]))
    }

    /// Adds the update to the model's `c_proj` weight.
    ///
    /// # Errors
    /// A model of another shape than the one the edit was computed on.
    pub fn apply(&self, model: &mut Gpt2) -> Result<AppliedEdit> {
        check_layer(model, self.layer)?;
        let w = model.blocks[self.layer].mlp.c_proj.weight.val();
        let dims = w.dims();
        if dims != [self.u.len(), self.right.len()] {
            return Err(Error::Shape {
                what: format!("layer {}'s c_proj weight", self.layer),
                got: dims.to_vec(),
                expected: format!("[{}, {}], the edit's", self.u.len(), self.right.len()),
            });
        }
        let updated = w.clone() + self.delta(&model.device());
        set_c_proj(model, self.layer, updated);
        Ok(AppliedEdit {
            layer: self.layer,
            original: w,
        })
    }
}

pub(crate) fn set_c_proj(model: &mut Gpt2, layer: usize, w: Tensor<2>) {
    let p = &mut model.blocks[layer].mlp.c_proj.weight;
    *p = Param::initialized(p.id, w);
}

pub(crate) fn check_layer(model: &Gpt2, layer: usize) -> Result<()> {
    if layer >= model.config.n_layer {
        return Err(Error::OutOfRange {
            what: "layer",
            value: layer,
            limit: format!("the model has {} layers", model.config.n_layer),
        });
    }
    Ok(())
}

pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor")
}

/// `t[row, pos, :]` of a `[batch, pos, d]` tensor.
pub(crate) fn at(t: &Tensor<3>, row: usize, pos: usize) -> Tensor<1> {
    let d = t.dims()[2];
    t.clone()
        .slice([row..row + 1, pos..pos + 1, 0..d])
        .reshape([d])
}

/// A prompt of the edit: its ids and the index of the subject's last token.
pub(crate) struct Lookup {
    pub(crate) ids: Vec<u32>,
    pub(crate) idx: usize,
}

pub(crate) fn lookup(tok: &Gpt2Tokenizer, text: &str, subject: &str) -> Result<Lookup> {
    let (ids, range) = tok.encode_with_span(text, subject, false)?;
    Ok(Lookup {
        idx: range.end - 1,
        ids,
    })
}

/// Runs `prompts` (right-padded) and returns the activations at `points`.
pub(crate) fn capture(
    model: &Gpt2,
    prompts: &[&Lookup],
    points: &[HookPoint],
) -> Result<(Tensor<3>, Vec<Tensor<3>>)> {
    let rows: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let batch = TokenBatch::padded(&rows, 0, PaddingSide::Right)?;
    let mut set = HookSet::new();
    for &p in points {
        set.capture(Selector::point(p)?);
    }
    let logits = set.run(model, &batch)?;
    let acts = points
        .iter()
        .map(|&p| set.cache().get3(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((logits, acts))
}

/// Computes ROME's edit of `request` at `config.layer` (the model is not changed; apply the
/// result with [`RomeEdit::apply`]). `templates` are context templates ending in `"{}"` (from
/// [`context_templates`]); `stats` is the layer's key second moment, needed when
/// `config.mom2_adjustment`; `config.on_step` sees each optimisation step.
///
/// # Errors
/// A prompt without exactly one `{}`, a subject not found in a prompt, a template not ending
/// in `{}`, missing or mismatched statistics, a target that tokenizes to nothing, a prompt
/// longer than the context, and forward-pass errors.
pub fn rome_edit(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    request: &RomeRequest,
    config: &RomeConfig,
    templates: &[String],
    stats: Option<&SecondMoment>,
) -> Result<RomeEdit> {
    let layer = config.layer;
    check_layer(model, layer)?;
    let prefixes = template_prefixes(request, templates)?;
    let stats = check_stats(model, config, stats)?;
    let left = left_vector(model, tok, request, layer, &prefixes, stats)?;
    let (target, steps) = VProblem::new(model, tok, request, HookPoint::MlpOut(layer), &prefixes)?
        .solve(model, config)?;
    // The key and MLP output at the last subject token of the bare prompt (a pass of its own
    // only when no template is the bare "{}").
    let (key, out) = match left.bare {
        Some(row) => row,
        None => {
            let bare = lookup(tok, &request.filled(), &request.subject)?;
            let (_, acts) = capture(
                model,
                &[&bare],
                &[HookPoint::MlpPost(layer), HookPoint::MlpOut(layer)],
            )?;
            (
                host(at(&acts[0], 0, bare.idx)),
                host(at(&acts[1], 0, bare.idx)),
            )
        }
    };
    let denom = dot(&key, &left.u);
    if denom == 0.0 {
        return Err(Error::Degenerate(
            "the bare prompt's key is orthogonal to the left vector: no rank-one edit maps it"
                .into(),
        ));
    }
    let right = target
        .iter()
        .zip(&out)
        .map(|(t, o)| ((*t as f64 - *o as f64) / denom) as f32)
        .collect();
    Ok(RomeEdit {
        layer,
        u: left.u,
        right,
        k_star: left.k_star,
        key,
        target,
        steps,
        templates: templates.to_vec(),
    })
}

/// `Σ aᵢ bᵢ` in f64.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// `‖a‖` in f64.
fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// The text of each template before its `{}`, after checking the request's prompt.
pub(crate) fn template_prefixes<'t>(
    request: &RomeRequest,
    templates: &'t [String],
) -> Result<Vec<&'t str>> {
    if request.prompt.matches("{}").count() != 1 {
        return Err(Error::Template {
            which: "prompt",
            template: request.prompt.clone(),
            problem: "must hold `{}` (the subject) exactly once",
        });
    }
    if templates.is_empty() {
        return Err(Error::Empty {
            what: "the list of context templates",
            hint: " (ROME's first is \"{}\")",
        });
    }
    templates
        .iter()
        .map(|t| {
            t.strip_suffix("{}").ok_or_else(|| Error::Template {
                which: "context template",
                template: t.clone(),
                problem: "does not end in `{}`",
            })
        })
        .collect()
}

/// The second moment to use: none without `mom2_adjustment`, else one of the edited layer.
fn check_stats<'s>(
    model: &Gpt2,
    config: &RomeConfig,
    stats: Option<&'s SecondMoment>,
) -> Result<Option<&'s SecondMoment>> {
    match (config.mom2_adjustment, stats) {
        (false, _) => Ok(None),
        (true, None) => Err(Error::BadOption {
            option: "mom2_adjustment",
            value: "true".into(),
            expected: "the layer's key second moment (second_moment), or mom2_adjustment = false"
                .into(),
        }),
        (true, Some(s)) if s.layer != config.layer || s.d != model.config.d_mlp() => {
            Err(Error::Shape {
                what: format!("the second moment of layer {}", s.layer),
                got: vec![s.d, s.d],
                expected: format!(
                    "layer {}'s, of width [{d}, {d}]",
                    config.layer,
                    d = model.config.d_mlp()
                ),
            })
        }
        (true, Some(s)) => Ok(Some(s)),
    }
}

/// ROME's left vector and what its pass also gives.
struct LeftVector {
    /// `k*`: the key at the last subject token, averaged over the templates.
    k_star: Vec<f32>,
    /// `C⁻¹ k*` (or `k*`), unit norm.
    u: Vec<f32>,
    /// The bare prompt's key and MLP output, when a template is the bare `{}`.
    bare: Option<(Vec<f32>, Vec<f32>)>,
}

fn left_vector(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    request: &RomeRequest,
    layer: usize,
    prefixes: &[&str],
    stats: Option<&SecondMoment>,
) -> Result<LeftVector> {
    let filled = request.filled();
    let keyed: Vec<Lookup> = prefixes
        .iter()
        .map(|p| lookup(tok, &format!("{p}{filled}"), &request.subject))
        .collect::<Result<_>>()?;
    let (_, acts) = capture(
        model,
        &keyed.iter().collect::<Vec<_>>(),
        &[HookPoint::MlpPost(layer), HookPoint::MlpOut(layer)],
    )?;
    // The bare prompt is the template "{}" (ROME's first): its key and MLP output, needed for
    // the update, come from this pass.
    let bare = prefixes.iter().position(|p| p.is_empty()).map(|i| {
        (
            host(at(&acts[0], i, keyed[i].idx)),
            host(at(&acts[1], i, keyed[i].idx)),
        )
    });
    let k_star = keyed
        .iter()
        .enumerate()
        .map(|(i, l)| at(&acts[0], i, l.idx))
        .reduce(|a, b| a + b)
        .expect("templates")
        / keyed.len() as f64;
    let k_star = host(k_star);
    let u: Vec<f64> = match stats {
        Some(s) => s.solve(&k_star)?,
        None => k_star.iter().map(|&v| v as f64).collect(),
    };
    let n = u.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n == 0.0 || !n.is_finite() {
        return Err(Error::Degenerate(format!("the left vector has norm {n}")));
    }
    Ok(LeftVector {
        k_star,
        u: u.iter().map(|v| (v / n) as f32).collect(),
        bare,
    })
}

/// ROME's `v*` problem: the rewriting prompts (each template with the request and all but the
/// last target token) and the essence prompt, batched, with what the loss reads.
pub(crate) struct VProblem {
    /// Where `δ` is added (`hook_mlp_out` for ROME, `hook_resid_post` for MEMIT).
    point: HookPoint,
    batch: TokenBatch,
    /// Rewriting rows (the essence prompt is the row after them).
    n_rewrite: usize,
    /// Target ids `[n_rewrite, pos]` and their 0/1 mask.
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    /// 1 at the last subject token of every row, `[rows, pos, 1]`: where δ is added.
    at_subject: Tensor<3>,
    /// The essence prompt's row and last subject token.
    kl_at: (usize, usize),
    /// The essence prompt's next-token log-distribution before the edit, `[1, vocab]`.
    kl_init: Tensor<2>,
    /// The activation at `point` at the last subject token of the first rewriting prompt (`v₀`).
    v0: Vec<f32>,
    n_target: usize,
}

impl VProblem {
    /// The problem of `request` with `δ` added at `point` of the last subject token.
    pub(crate) fn new(
        model: &Gpt2,
        tok: &Gpt2Tokenizer,
        request: &RomeRequest,
        point: HookPoint,
        prefixes: &[&str],
    ) -> Result<Self> {
        let target_text = if request.target_new.starts_with(' ') {
            request.target_new.clone()
        } else {
            format!(" {}", request.target_new)
        };
        let target_ids = tok.encode(&target_text, false)?;
        if target_ids.is_empty() {
            return Err(Error::Empty {
                what: "the new target",
                hint: ": it tokenizes to nothing",
            });
        }
        let head = match target_ids.len() {
            1 => String::new(),
            n => tok.decode(&target_ids[..n - 1])?,
        };
        let filled = request.filled();
        let mut prompts: Vec<Lookup> = prefixes
            .iter()
            .map(|p| lookup(tok, &format!("{p}{filled}{head}"), &request.subject))
            .collect::<Result<_>>()?;
        let n_rewrite = prompts.len();
        let essence = format!("{} is a", request.subject);
        prompts.push(lookup(tok, &essence, &request.subject)?);
        for p in &prompts {
            if p.ids.len() > model.config.n_positions {
                return Err(Error::TooLong {
                    what: "a rewriting prompt".into(),
                    tokens: p.ids.len(),
                    limit: model.config.n_positions,
                    room: "tokens of the model's context",
                });
            }
        }
        let refs: Vec<&Lookup> = prompts.iter().collect();
        let (logits0, acts) = capture(model, &refs, &[point])?;
        let [b, p_len, _] = logits0.dims();
        let device = model.device();
        // Targets and their mask over the rewriting rows: a prompt ends with the target's
        // tokens but the last, so position len − n_t + t predicts target token t (ROME's
        // labels at len − n_t .. len).
        let mut targets = vec![0i64; n_rewrite * p_len];
        let mut mask = vec![0f32; n_rewrite * p_len];
        for (r, p) in prompts[..n_rewrite].iter().enumerate() {
            for (t, &id) in target_ids.iter().enumerate() {
                let pos = p.ids.len() - target_ids.len() + t;
                targets[r * p_len + pos] = id as i64;
                mask[r * p_len + pos] = 1.0;
            }
        }
        let mut at_subject = vec![0f32; b * p_len];
        for (r, p) in prompts.iter().enumerate() {
            at_subject[r * p_len + p.idx] = 1.0;
        }
        let kl_at = (n_rewrite, prompts[n_rewrite].idx);
        let rows: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
        Ok(Self {
            point,
            batch: TokenBatch::padded(&rows, 0, PaddingSide::Right)?,
            n_rewrite,
            targets: Tensor::from_data(TensorData::new(targets, [n_rewrite, p_len]), &device),
            mask: Tensor::from_data(TensorData::new(mask, [n_rewrite, p_len]), &device),
            at_subject: Tensor::from_data(TensorData::new(at_subject, [b, p_len, 1]), &device),
            kl_at,
            kl_init: essence_log_probs(logits0, kl_at),
            v0: host(at(&acts[0], 0, prompts[0].idx)),
            n_target: target_ids.len(),
        })
    }

    /// The differentiable part of the loss at `δ` (`nll + kl`, on the autodiff device), the
    /// mean NLL and KL read back, and the new target's mean probability.
    fn loss(&self, model: &Gpt2, leaf: Tensor<1>, kl_factor: f64) -> Result<(Tensor<1>, VStep)> {
        let [_, p_len, _] = self.at_subject.dims();
        let d_model = leaf.dims()[0];
        let n = self.n_rewrite;
        let added = self.at_subject.clone().autodiff() * leaf.reshape([1, 1, d_model]);
        let mut set = HookSet::new();
        set.intervene(
            self.point,
            Intervention::custom(move |_, act| match act {
                Act::R3(t) => Ok(Act::R3(t.autodiff() + added.clone())),
                Act::R4(_) => Err("the edited activation is rank 3".into()),
            }),
        )?;
        let logits = set.run(model, &self.batch)?;
        let vocab = logits.dims()[2];
        let picked = token_log_probs(
            logits.clone().slice([0..n, 0..p_len, 0..vocab]),
            self.targets.clone(),
        );
        let nll_each = -(picked * self.mask.clone().autodiff())
            .sum_dim(1)
            .reshape([n])
            / self.n_target as f64;
        let nll = nll_each.clone().mean();
        let cur = essence_log_probs(logits, self.kl_at);
        let kl = (cur.clone().exp() * (cur - self.kl_init.clone().autodiff())).sum() * kl_factor;
        let scalar = |t: Tensor<1>| -> f32 { t.inner().into_scalar::<f32>() };
        let prob_new = host(nll_each.inner().neg().exp()).iter().sum::<f32>() / n as f32;
        // The loss's value is the f32 sum of the two read back (the same rounding as on the
        // device), so it costs no read of its own; the caller adds the weight decay.
        let step = VStep {
            loss: 0.0,
            nll: scalar(nll.clone()),
            kl: scalar(kl.clone()),
            weight_decay: 0.0,
            prob_new,
        };
        Ok((nll + kl, step))
    }

    /// Optimises `δ` at `point` by Adam (burn's, with PyTorch's defaults but for the
    /// learning rate), projected into the ball of radius `clamp_norm_factor × ‖v₀‖`; returns
    /// `v* = v₀ + δ` and the steps.
    pub(crate) fn solve(
        &self,
        model: &Gpt2,
        config: &RomeConfig,
    ) -> Result<(Vec<f32>, Vec<VStep>)> {
        let device = model.device();
        let d_model = self.v0.len();
        let v0_norm = norm(&self.v0);
        let wd_scale = config.v_weight_decay / (v0_norm * v0_norm);
        let max_norm = config.clamp_norm_factor * v0_norm;
        let adam = AdamConfig::new().with_epsilon(1e-8).build();
        let mut delta = Tensor::<1>::zeros([d_model], &device);
        let mut state = None;
        let mut delta_norm = 0.0;
        let mut steps = Vec::new();
        for it in 0..config.v_num_grad_steps {
            let leaf = delta.clone().autodiff().require_grad();
            let (loss, mut step) = self.loss(model, leaf.clone(), config.kl_factor)?;
            // The weight decay ‖δ‖ / ‖v₀‖² is added outside autodiff with its gradient δ / ‖δ‖
            // (0 at δ = 0, PyTorch's subgradient of the norm; autodiff through sqrt would give
            // NaN there).
            let wd = wd_scale * delta_norm;
            step.loss = ((step.nll + step.kl) as f64 + wd) as f32;
            step.weight_decay = wd as f32;
            config.on_step.report(it, &step);
            steps.push(step);
            if (step.loss as f64) < config.early_stop_loss || it + 1 == config.v_num_grad_steps {
                break;
            }
            let grads = loss.backward();
            let mut g = leaf
                .grad(&grads)
                .unwrap_or_else(|| Tensor::zeros([d_model], &device));
            if delta_norm > 0.0 {
                g = g + delta.clone() * (wd_scale / delta_norm);
            }
            let (next, next_state) = adam.step(config.v_lr, delta, g, state);
            (delta, state) = (next, next_state);
            // One read of δ per step: its norm after the projection is the next step's.
            let n = norm(&host(delta.clone()));
            if n > max_norm {
                delta = delta * (max_norm / n);
            }
            delta_norm = n.min(max_norm);
        }
        let delta = host(delta);
        Ok((
            self.v0.iter().zip(&delta).map(|(a, b)| a + b).collect(),
            steps,
        ))
    }
}

/// The next-token log-distribution `[1, vocab]` at `(row, pos)` of `logits`.
fn essence_log_probs(logits: Tensor<3>, (row, pos): (usize, usize)) -> Tensor<2> {
    let vocab = logits.dims()[2];
    log_softmax(
        logits
            .slice([row..row + 1, pos..pos + 1, 0..vocab])
            .reshape([1, vocab]),
        1,
    )
}
