//! The tuned lens (Belrose et al., 2023, "Eliciting Latent Predictions from Transformers with
//! the Tuned Lens"): the logit lens with a learned affine translator per layer. The residual
//! stream entering block `l` is read out as `unembed(h + A_l h + b_l)`, with `A_l` and `b_l`
//! trained so that the readout's next-token distribution matches the model's final one
//! (KL(final ‖ readout), averaged over tokens, summed over the layers) and initialised to zero,
//! so that an untrained translator is the logit lens itself. The output after the last block
//! needs no translator: it is the model's output.
//!
//! Training follows the tuned-lens trainer's defaults (AlignmentResearch/tuned-lens,
//! `scripts/ingredients.py` and `train_loop.py`): SGD with Nesterov momentum 0.9, its rate
//! `lr_scale × (1 − momentum)` (PyTorch's momentum scales the rate by `1 / (1 − momentum)`;
//! they undo it, so `lr_scale` 1 is their default), weight decay 1e-3, no warm-up and a linear
//! decay to zero, gradients clipped to norm 1, on batches of text the model is run on (frozen).
//! Two differences: burn clips each translator's gradient to norm 1 where PyTorch's
//! `clip_grad_norm_` clips them together, and the translators are not re-centred after each
//! step (their `normalize_`). [`lens_kl`] measures each readout's KL to the output, for the logit lens
//! and a tuned one.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig, grad_clipping::GradientClippingConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use burnlens_hooks::{HookSet, Selector};
use burnlens_model::{Gpt2, HookPoint, NoHooks, PaddingSide, TokenBatch};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::progress::Observer;

/// The shape of a tuned lens: one translator per block of a model of `n_layer` blocks of width
/// `d_model`.
#[derive(burn::config::Config, Debug)]
pub struct TunedLensConfig {
    /// Blocks of the model (one translator each, for the residual stream entering it).
    pub n_layer: usize,
    /// The residual stream's width.
    pub d_model: usize,
}

impl TunedLensConfig {
    /// The lens for `model`.
    pub fn for_model(model: &Gpt2) -> Self {
        Self::new(model.config.n_layer, model.config.n_embd)
    }

    /// A lens whose translators are zero: the logit lens.
    pub fn init(&self, device: &Device) -> TunedLens {
        TunedLens {
            translators: (0..self.n_layer)
                .map(|_| {
                    LinearConfig::new(self.d_model, self.d_model)
                        .with_bias(true)
                        .with_initializer(Initializer::Zeros)
                        .init(device)
                })
                .collect(),
        }
    }
}

/// One affine translator per layer (`h ↦ h + A h + b`; burn's `Linear` holds `A` as
/// `[d_in, d_out]`).
#[derive(Module, Debug)]
pub struct TunedLens {
    /// The translator of the residual stream entering each block.
    pub translators: Vec<Linear>,
}

impl TunedLens {
    /// The translated residual stream entering block `layer`.
    ///
    /// # Shapes
    /// - h: `[batch, pos, d_model]`
    /// - output: `[batch, pos, d_model]`
    pub fn forward(&self, layer: usize, h: Tensor<3>) -> Tensor<3> {
        h.clone() + self.translators[layer].forward(h)
    }

    /// Blocks covered.
    pub fn n_layer(&self) -> usize {
        self.translators.len()
    }

    /// The residual width.
    pub fn d_model(&self) -> usize {
        self.translators.first().map_or(0, |t| t.weight.dims()[0])
    }

    /// Whether this lens fits `model` (its layers and width).
    ///
    /// # Errors
    /// A lens for another model's layers or width.
    pub fn check(&self, model: &Gpt2) -> Result<()> {
        let (n, d) = (model.config.n_layer, model.config.n_embd);
        if self.n_layer() != n || self.d_model() != d {
            return Err(Error::Shape {
                what: "the tuned lens".into(),
                got: vec![self.n_layer(), self.d_model()],
                expected: format!("[{n}, {d}]: the model's layers and width"),
            });
        }
        Ok(())
    }

    /// Writes the translators as safetensors (`translators.{l}.weight` `[d_in, d_out]`,
    /// `translators.{l}.bias`, f32), with `n_layer` and `d_model` in the metadata.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = |e: &dyn std::fmt::Display| Error::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let host = |t: TensorData| -> Vec<u8> {
            t.convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32")
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        };
        let mut tensors = Vec::new();
        for (l, t) in self.translators.iter().enumerate() {
            let w = t.weight.val();
            tensors.push((
                format!("translators.{l}.weight"),
                w.dims().to_vec(),
                host(w.into_data()),
            ));
            let b = t.bias.as_ref().expect("translators have a bias").val();
            tensors.push((
                format!("translators.{l}.bias"),
                b.dims().to_vec(),
                host(b.into_data()),
            ));
        }
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| file(&e))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = std::collections::HashMap::from([
            ("format".to_string(), "burnlens tuned lens".to_string()),
            ("n_layer".to_string(), self.n_layer().to_string()),
            ("d_model".to_string(), self.d_model().to_string()),
        ]);
        safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| file(&e))
    }

    /// Reads a lens written by [`TunedLens::save`] for `model`.
    ///
    /// # Errors
    /// A missing or malformed file, or one for a model of another width or depth (named).
    pub fn load(path: &Path, model: &Gpt2) -> Result<Self> {
        let bad = |message: String| Error::File {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let (n, d) = (model.config.n_layer, model.config.n_embd);
        let device = model.device();
        let mut lens = TunedLensConfig::new(n, d).init(&device);
        for (l, t) in lens.translators.iter_mut().enumerate() {
            let read = |name: String, shape: &[usize]| -> Result<TensorData> {
                let v = st
                    .tensor(&name)
                    .map_err(|_| bad(format!("no tensor {name}: a tuned lens for {n} layers?")))?;
                if v.dtype() != safetensors::Dtype::F32 || v.shape() != shape {
                    return Err(bad(format!(
                        "{name} is {:?} {:?}; this model (d_model {d}) needs f32 {shape:?}: the \
                         lens was trained for another model",
                        v.dtype(),
                        v.shape()
                    )));
                }
                let data: Vec<f32> = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                    return Err(bad(format!("{name}[{i}] is {}", data[i])));
                }
                Ok(TensorData::new(data, shape.to_vec()))
            };
            t.weight = Param::from_tensor(Tensor::from_data(
                read(format!("translators.{l}.weight"), &[d, d])?,
                &device,
            ));
            t.bias = Some(Param::from_tensor(Tensor::from_data(
                read(format!("translators.{l}.bias"), &[d])?,
                &device,
            )));
        }
        if st.tensor(&format!("translators.{n}.weight")).is_ok() {
            return Err(bad(format!(
                "the lens has more translators than this model's {n} layers"
            )));
        }
        Ok(lens)
    }
}

/// How [`train_tuned_lens`] trains; `Default` is the tuned-lens trainer's optimiser with
/// settings sized for a small model.
#[derive(Debug, Clone)]
pub struct TunedLensTraining {
    /// Optimiser steps.
    pub steps: usize,
    /// The tuned-lens trainer's `lr_scale`: the rate at the first step is
    /// `lr × (1 − momentum)`, decaying linearly to zero.
    pub lr: f64,
    /// Nesterov momentum.
    pub momentum: f64,
    /// Weight decay (L2, as PyTorch's SGD applies it).
    pub weight_decay: f64,
    /// Texts per step.
    pub batch_size: usize,
    /// Tokens kept per text.
    pub seq_len: usize,
    /// Seed of the batches' draw.
    pub seed: u64,
    /// Told `(step, steps)` with each step's loss after it.
    pub observer: Observer,
}

impl Default for TunedLensTraining {
    fn default() -> Self {
        Self {
            steps: 250,
            lr: 1.0,
            momentum: 0.9,
            weight_decay: 1e-3,
            batch_size: 8,
            seq_len: 64,
            seed: 0,
            observer: Observer::default(),
        }
    }
}

/// Rows of `texts` (token ids), truncated to `seq_len` and right-padded into one batch.
fn batch_of(texts: &[&Vec<u32>], seq_len: usize) -> Result<TokenBatch> {
    let rows: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| t[..t.len().min(seq_len)].to_vec())
        .collect();
    Ok(TokenBatch::padded(&rows, 0, PaddingSide::Right)?)
}

/// The residual stream entering every block and the model's output log-probabilities
/// (detached), and the 0/1 mask of real tokens `[batch, pos]`.
fn streams(model: &Gpt2, batch: &TokenBatch) -> Result<(Vec<Tensor<3>>, Tensor<3>, Tensor<2>)> {
    let n = model.config.n_layer;
    let mut set = HookSet::new();
    set.capture(Selector::points(
        (0..n).map(HookPoint::ResidPre).collect::<Vec<_>>(),
    )?);
    let logits = set.run(model, batch)?;
    let resid = (0..n)
        .map(|l| set.cache().get3(HookPoint::ResidPre(l)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let [b, t] = [batch.batch_size(), batch.seq_len()];
    let mask: Vec<f32> = (0..b)
        .flat_map(|r| (0..t).map(move |p| (r, p)))
        .map(|(r, p)| if batch.is_real(r, p) { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t]), &model.device());
    Ok((resid, log_softmax(logits, 2), mask))
}

/// KL(final ‖ readout) per token `[batch, pos]` from log-probabilities `[batch, pos, vocab]`.
fn kl_per_token(final_lp: Tensor<3>, readout_lp: Tensor<3>) -> Tensor<2> {
    let [b, t, _] = final_lp.dims();
    (final_lp.clone().exp() * (final_lp - readout_lp))
        .sum_dim(2)
        .reshape([b, t])
}

/// Trains a tuned lens for `model` (left unchanged) on `texts` (token ids).
///
/// # Errors
/// No text of at least one token, zero steps or batch size, and forward errors.
pub fn train_tuned_lens(
    model: &Gpt2,
    texts: &[Vec<u32>],
    options: &TunedLensTraining,
) -> Result<(TunedLens, Vec<f32>)> {
    let texts: Vec<&Vec<u32>> = texts.iter().filter(|t| !t.is_empty()).collect();
    if texts.is_empty() {
        return Err(Error::Empty {
            what: "the texts to train the tuned lens on",
            hint: ": give texts of at least one token",
        });
    }
    for (option, value) in [
        ("steps", options.steps),
        ("batch_size", options.batch_size),
        ("seq_len", options.seq_len),
    ] {
        if value == 0 {
            return Err(Error::BadOption {
                option,
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
    }
    let seq_len = options.seq_len.min(model.config.n_positions);
    let ad = model.device().autodiff();
    let mut lens = TunedLensConfig::for_model(model).init(&ad);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(options.momentum)
                .with_dampening(0.0)
                .with_nesterov(true),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(options.weight_decay as f32)))
        .with_gradient_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut losses = Vec::with_capacity(options.steps);
    for step in 0..options.steps {
        let mut rows = Vec::with_capacity(options.batch_size);
        while rows.len() < options.batch_size {
            if order.is_empty() {
                order = (0..texts.len()).collect();
                order.shuffle(&mut rng);
            }
            rows.push(texts[order.pop().expect("refilled")]);
        }
        let batch = batch_of(&rows, seq_len)?;
        let (resid, final_lp, mask) = streams(model, &batch)?;
        let (final_lp, mask) = (final_lp.autodiff(), mask.autodiff());
        let tokens = mask.clone().sum();
        let mut loss: Option<Tensor<1>> = None;
        for (l, h) in resid.into_iter().enumerate() {
            let translated = lens.forward(l, h.autodiff());
            let readout = log_softmax(model.unembed(translated, &mut NoHooks)?, 2);
            let kl =
                (kl_per_token(final_lp.clone(), readout) * mask.clone()).sum() / tokens.clone();
            loss = Some(match loss {
                Some(sum) => sum + kl,
                None => kl,
            });
        }
        let loss = loss.expect("a model has a block");
        let value: f32 = loss.clone().into_scalar();
        losses.push(value);
        let grads = GradientsParams::from_grads(loss.backward(), &lens);
        let lr = options.lr * (1.0 - options.momentum) * (1.0 - step as f64 / options.steps as f64);
        lens = optim.step(lr, lens, grads);
        options.observer.report(step + 1, options.steps);
    }
    Ok((lens.valid(), losses))
}

/// The mean KL(final ‖ readout) over the real tokens of `texts`, at each readout: the residual
/// stream entering each block (through `tuned`'s translator, or as it is: the logit lens), then
/// the output (0 by definition), `n_layer + 1` values.
///
/// # Errors
/// No token in `texts`, a lens for another model, and forward errors.
pub fn lens_kl(
    model: &Gpt2,
    tuned: Option<&TunedLens>,
    texts: &[Vec<u32>],
    seq_len: usize,
) -> Result<Vec<f64>> {
    let n = model.config.n_layer;
    if let Some(t) = tuned {
        t.check(model)?;
    }
    let texts: Vec<&Vec<u32>> = texts.iter().filter(|t| !t.is_empty()).collect();
    let seq_len = seq_len.max(1).min(model.config.n_positions);
    let mut sums = vec![0f64; n + 1];
    let mut count = 0f64;
    for chunk in texts.chunks(8) {
        let batch = batch_of(chunk, seq_len)?;
        let (resid, final_lp, mask) = streams(model, &batch)?;
        count += f64::from(mask.clone().sum().into_scalar::<f32>());
        for (l, h) in resid.into_iter().enumerate() {
            let h = match tuned {
                Some(t) => t.forward(l, h),
                None => h,
            };
            let readout = log_softmax(model.unembed(h, &mut NoHooks)?, 2);
            let kl: f32 = (kl_per_token(final_lp.clone(), readout) * mask.clone())
                .sum()
                .into_scalar();
            sums[l] += f64::from(kl);
        }
    }
    if count == 0.0 {
        return Err(Error::Empty {
            what: "the texts to measure the lens on",
            hint: ": give texts of at least one token",
        });
    }
    Ok(sums.iter().map(|s| s / count).collect())
}
