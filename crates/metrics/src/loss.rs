//! Next-token cross-entropy, per token and per sequence, and perplexity.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// `log p(target)` at every position: `log_softmax(logits)[b, p, targets[b, p]]`.
///
/// # Shapes
/// - logits: `[batch, pos, vocab]`
/// - targets: `[batch, pos]`
/// - output: `[batch, pos]`
pub fn token_log_probs(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, _] = logits.dims();
    log_softmax(logits, 2)
        .gather(2, targets.reshape([b, t, 1]))
        .reshape([b, t])
}

/// Next-token losses of a batch: position `p` predicts token `p + 1`.
#[derive(Debug, Clone)]
pub struct NextTokenLoss {
    /// `-log p(tokens[b, p+1] | tokens[b, ..=p])`, zero where the weight is zero: `[batch, pos - 1]`.
    pub per_token: Tensor<2>,
    /// 1 where both the predicting and the predicted token are real, else 0: `[batch, pos - 1]`.
    pub weights: Tensor<2>,
}

/// Next-token cross-entropy of `tokens` under `logits`.
///
/// With a mask (`1.0` real, `0.0` padding), a prediction counts only when both its context
/// token and its target are real, so a padded sequence has exactly the losses of the unpadded
/// one, whichever side the padding is on.
///
/// # Shapes
/// - logits: `[batch, pos, vocab]`, pos ≥ 2
/// - tokens: `[batch, pos]`
/// - mask: `[batch, pos]`
pub fn next_token_loss(
    logits: Tensor<3>,
    tokens: Tensor<2, Int>,
    mask: Option<Tensor<2>>,
) -> NextTokenLoss {
    let [b, t, v] = logits.dims();
    let pred = logits.slice([0..b, 0..t - 1, 0..v]);
    let targets = tokens.slice([0..b, 1..t]);
    let nll = token_log_probs(pred, targets).neg();
    let weights = match mask {
        Some(m) => m.clone().slice([0..b, 0..t - 1]) * m.slice([0..b, 1..t]),
        None => nll.ones_like(),
    };
    NextTokenLoss {
        per_token: nll * weights.clone(),
        weights,
    }
}

impl NextTokenLoss {
    /// Mean loss over every counted token of the batch (Hugging Face's `labels=` loss).
    ///
    /// # Shapes
    /// - output: `[1]`
    pub fn mean(&self) -> Tensor<1> {
        self.per_token.clone().sum() / self.weights.clone().sum()
    }

    /// Mean loss of each sequence over its counted tokens.
    ///
    /// # Shapes
    /// - output: `[batch]`
    pub fn per_sequence(&self) -> Tensor<1> {
        let [b, _] = self.per_token.dims();
        (self.per_token.clone().sum_dim(1) / self.weights.clone().sum_dim(1)).reshape([b])
    }

    /// Perplexity of each sequence: `exp` of its mean loss.
    ///
    /// # Shapes
    /// - output: `[batch]`
    pub fn perplexity(&self) -> Tensor<1> {
        self.per_sequence().exp()
    }

    /// Per-token perplexity `exp(loss)` (1 where not counted).
    ///
    /// # Shapes
    /// - output: `[batch, pos - 1]`
    pub fn per_token_perplexity(&self) -> Tensor<2> {
        self.per_token.clone().exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn uniform_logits_give_log_vocab() {
        // Closed form: uniform predictions over V tokens cost ln V per token; perplexity V.
        let dev = Device::flex();
        let v = 7;
        let logits = Tensor::<3>::zeros([2, 4, v], &dev);
        let tokens = Tensor::<2, Int>::from_data(
            TensorData::new(vec![1i64, 2, 3, 4, 5, 6, 0, 1], [2, 4]),
            &dev,
        );
        let loss = next_token_loss(logits, tokens, None);
        let mean: f32 = loss.mean().into_scalar();
        assert!((mean - (v as f32).ln()).abs() < 1e-6);
        let ppl = loss
            .perplexity()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(ppl.iter().all(|p| (p - v as f32).abs() < 1e-4));
    }

    #[test]
    fn masked_positions_do_not_count() {
        let dev = Device::flex();
        // One-hot-ish logits: token 2 at every position is certain (loss ~0), others cost ~20.
        let mut data = vec![0.0f32; 3 * 4];
        for p in 0..3 {
            data[p * 4 + 2] = 20.0;
        }
        let logits = Tensor::<3>::from_data(TensorData::new(data, [1, 3, 4]), &dev);
        let tokens =
            Tensor::<2, Int>::from_data(TensorData::new(vec![9i64 % 4, 2, 1], [1, 3]), &dev);
        let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [1, 3]), &dev);
        let loss = next_token_loss(logits, tokens, Some(mask));
        let mean: f32 = loss.mean().into_scalar();
        assert!(
            mean < 1e-6,
            "only the certain prediction counts, got {mean}"
        );
    }
}
