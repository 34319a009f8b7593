//! Language-model training with burn's autodiff and AdamW: next-token cross-entropy,
//! linear warm-up then cosine decay, global gradient-norm clipping, and GPT-2's tied
//! embedding/unembedding kept tied.

use burn::module::Param;
use burn::optim::{AdamWConfig, GradientsParams, grad_clipping::GradientClippingConfig};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::batch::TokenBatch;
use crate::error::{Error, Result};
use crate::model::Gpt2;

/// Settings of [`train_lm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup: usize,
    /// The learning rate at the last step, as a fraction of `lr` (cosine decay in between).
    pub final_lr_fraction: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// AdamW's β₁.
    pub beta1: f32,
    /// AdamW's β₂.
    pub beta2: f32,
    /// Clip each parameter's gradient to this L2 norm (0 turns clipping off).
    pub grad_clip: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            lr: 1e-3,
            warmup: 100,
            final_lr_fraction: 0.1,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.98,
            grad_clip: 1.0,
        }
    }
}

impl TrainConfig {
    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        let floor = self.lr * self.final_lr_fraction;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepLog {
    /// The step (0-based).
    pub step: usize,
    /// Its learning rate.
    pub lr: f64,
    /// The step's loss before the update ([`train_lm`]: the batch's mean next-token loss).
    pub loss: f32,
}

/// Trains `model` on the batches `batch(step)` gives, one optimizer step per batch, calling
/// `observe` after every step with the step's log and the model as updated (to evaluate it
/// along the way); returns the trained model (still on the autodiff device).
///
/// The loss is [`Gpt2::loss`]'s mean next-token cross-entropy (padding excluded). The LM head
/// is tied to the token embedding as in GPT-2: the unembedding's gradient is added to the
/// embedding's (transposed), and the head is re-tied after each step, so the saved
/// checkpoint (which stores `wte` only) is the model that was trained.
///
/// # Errors
/// A model whose device is not an autodiff device (`device.autodiff()`), or errors from the
/// forward pass, from `batch` and from `observe`.
pub fn train_lm(
    model: Gpt2,
    config: &TrainConfig,
    mut batch: impl FnMut(usize) -> Result<TokenBatch>,
    observe: impl FnMut(&StepLog, &Gpt2) -> Result<()>,
) -> Result<Gpt2> {
    train_with_loss(
        model,
        config,
        |model, step| Ok(model.loss(&batch(step)?)?.mean()),
        observe,
    )
}

/// [`train_lm`] with the objective given: `loss(model, step)` returns step `step`'s scalar
/// loss (shape `[1]`), computed on the autodiff device from `model` (for instance the
/// next-token loss of [`Gpt2::loss_with_hooks`] plus an auxiliary term read from an
/// intermediate residual stream that a hook kept). Optimizer, schedule, clipping and the tied
/// unembedding are as in [`train_lm`]; [`StepLog::loss`] is this loss.
///
/// # Errors
/// As [`train_lm`], and errors from `loss`.
pub fn train_with_loss(
    mut model: Gpt2,
    config: &TrainConfig,
    mut loss: impl FnMut(&Gpt2, usize) -> Result<Tensor<1>>,
    mut observe: impl FnMut(&StepLog, &Gpt2) -> Result<()>,
) -> Result<Gpt2> {
    if !model.device().is_autodiff() {
        return Err(Error::InvalidOption(
            "training needs the model on an autodiff device (device.autodiff())".into(),
        ));
    }
    let mut adamw = AdamWConfig::new()
        .with_beta_1(config.beta1)
        .with_beta_2(config.beta2)
        .with_weight_decay(config.weight_decay)
        .with_epsilon(1e-8);
    if config.grad_clip > 0.0 {
        adamw = adamw.with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip)));
    }
    let mut optim = adamw.init();
    for step in 0..config.steps {
        let objective = loss(&model, step)?;
        let value: f32 = objective.clone().into_scalar();
        let mut grads = GradientsParams::from_grads(objective.backward(), &model);
        // Tied weights: d/d wte of L(wte, wteᵀ) is g_wte + g_wuᵀ.
        if let Some(g_u) = grads.remove::<2>(model.w_u.id) {
            let g_e: Tensor<2> = match grads.remove::<2>(model.wte.id) {
                Some(g) => g + g_u.transpose(),
                None => g_u.transpose(),
            };
            grads.register(model.wte.id, g_e);
        }
        let lr = config.lr_at(step);
        model = optim.step(lr, model, grads);
        // A fresh leaf holding wteᵀ (the inner tensor lifted back into autodiff).
        model.w_u = Param::from_tensor(model.wte.val().transpose().inner().autodiff());
        observe(
            &StepLog {
                step,
                lr,
                loss: value,
            },
            &model,
        )?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_warms_up_then_decays_to_its_floor() {
        let c = TrainConfig {
            steps: 110,
            lr: 1.0,
            warmup: 10,
            final_lr_fraction: 0.1,
            ..TrainConfig::default()
        };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-12);
        // Half-way through the decay: the mean of peak and floor.
        assert!((c.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(110) - 0.1).abs() < 1e-12);
    }
}
