//! Metrics on next-token logits: logit differences, patch scores, probabilities and ranks,
//! KL divergence, top-k candidates and their overlap, contrastive differences.
//!
//! Most functions take the logits at one position per example, `[batch, vocab]`
//! ([`at_positions`] picks them out of a `[batch, pos, vocab]` forward output), and return
//! tensors, so that they can be the scalar a gradient is taken of.

use std::collections::HashSet;

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor, TensorData};

/// What can be wrong with a metric's input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// Token ids, positions or batches that do not fit the logits.
    #[error("{0}")]
    Shape(String),
    /// `m_clean − m_corrupt` is (nearly) zero, so a normalized score would divide by zero.
    #[error(
        "normalized patch score: the clean and corrupted metrics are equal ({clean} vs {corrupt}); the patching baseline has no effect to normalize by"
    )]
    DegenerateBaseline {
        /// The clean run's metric.
        clean: f32,
        /// The corrupted run's metric.
        corrupt: f32,
    },
}

/// `Result` with [`MetricError`].
pub type Result<T, E = MetricError> = std::result::Result<T, E>;

fn ids_tensor(
    ids: &[u32],
    vocab: usize,
    batch: usize,
    what: &str,
    device: &burn::tensor::Device,
) -> Result<Tensor<2, Int>> {
    if ids.len() != batch {
        return Err(MetricError::Shape(format!(
            "{} {what} ids for a batch of {batch}",
            ids.len()
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(MetricError::Shape(format!(
            "{what} id {bad} is outside the vocabulary ({vocab})"
        )));
    }
    let data: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    Ok(Tensor::from_data(TensorData::new(data, [batch, 1]), device))
}

/// The logits at one position per example: `out[b] = logits[b, positions[b]]`.
///
/// # Shapes
/// - logits: `[batch, pos, vocab]`
/// - output: `[batch, vocab]`
///
/// # Errors
/// A position list of the wrong length, or a position past the sequence.
pub fn at_positions(logits: Tensor<3>, positions: &[usize]) -> Result<Tensor<2>> {
    let [b, t, v] = logits.dims();
    if positions.len() != b {
        return Err(MetricError::Shape(format!(
            "{} positions for a batch of {b}",
            positions.len()
        )));
    }
    if let Some(&p) = positions.iter().find(|&&p| p >= t) {
        return Err(MetricError::Shape(format!(
            "position {p} is past the sequence length {t}"
        )));
    }
    let idx: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
    let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, 1, 1]), &logits.device())
        .expand([b, 1, v]);
    Ok(logits.gather(1, idx).reshape([b, v]))
}

/// The logits at the last position: `logits[:, -1]`.
///
/// # Shapes
/// - logits: `[batch, pos, vocab]`
/// - output: `[batch, vocab]`
pub fn last_position(logits: Tensor<3>) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    logits.slice([0..b, t - 1..t, 0..v]).reshape([b, v])
}

/// `logits[b, ids[b]]`.
///
/// # Shapes
/// - logits: `[batch, vocab]`
/// - output: `[batch]`
///
/// # Errors
/// `ids` of the wrong length or outside the vocabulary.
pub fn token_logits(logits: Tensor<2>, ids: &[u32]) -> Result<Tensor<1>> {
    let [b, v] = logits.dims();
    let idx = ids_tensor(ids, v, b, "token", &logits.device())?;
    Ok(logits.gather(1, idx).reshape([b]))
}

/// Logit difference `logits[b, answer[b]] − logits[b, foil[b]]` per example (take `.mean()`
/// for the mean logit difference).
///
/// # Shapes
/// - logits: `[batch, vocab]`
/// - output: `[batch]`
///
/// # Errors
/// Id lists of the wrong length or outside the vocabulary.
pub fn logit_diff(logits: Tensor<2>, answer: &[u32], foil: &[u32]) -> Result<Tensor<1>> {
    Ok(token_logits(logits.clone(), answer)? - token_logits(logits, foil)?)
}

/// Normalized patch score `(m − m_corrupt) / (m_clean − m_corrupt)`: 0 where patching left
/// the corrupted behaviour, 1 where it restored the clean one.
///
/// # Errors
/// [`MetricError::DegenerateBaseline`] when `|m_clean − m_corrupt| < 1e-6`.
pub fn normalized_patch_score<const D: usize>(
    metric: Tensor<D>,
    clean: f32,
    corrupt: f32,
) -> Result<Tensor<D>> {
    let denom = clean - corrupt;
    if !denom.is_finite() || denom.abs() < 1e-6 {
        return Err(MetricError::DegenerateBaseline { clean, corrupt });
    }
    Ok((metric - corrupt) / denom)
}

/// `softmax(logits)[b, ids[b]]`.
///
/// # Shapes
/// - logits: `[batch, vocab]`
/// - output: `[batch]`
///
/// # Errors
/// `ids` of the wrong length or outside the vocabulary.
pub fn token_probs(logits: Tensor<2>, ids: &[u32]) -> Result<Tensor<1>> {
    token_logits(softmax(logits, 1), ids)
}

/// `log_softmax(logits)[b, ids[b]]`.
///
/// # Shapes
/// - logits: `[batch, vocab]`
/// - output: `[batch]`
///
/// # Errors
/// `ids` of the wrong length or outside the vocabulary.
pub fn token_log_probs_at(logits: Tensor<2>, ids: &[u32]) -> Result<Tensor<1>> {
    token_logits(log_softmax(logits, 1), ids)
}

/// Rank of `ids[b]`: how many tokens have a strictly larger logit (0 = the top prediction).
///
/// # Errors
/// `ids` of the wrong length or outside the vocabulary.
pub fn token_ranks(logits: Tensor<2>, ids: &[u32]) -> Result<Vec<usize>> {
    let [b, v] = logits.dims();
    let own = token_logits(logits.clone(), ids)?
        .reshape([b, 1])
        .expand([b, v]);
    let above = logits.greater(own).int().sum_dim(1).reshape([b]);
    Ok(above
        .into_data()
        .iter::<i64>()
        .map(|n| n as usize)
        .collect())
}

/// KL divergence `KL(P ‖ Q) = Σ_v p_v (log p_v − log q_v)` between the distributions of two
/// logit sets over the last axis (P from `p_logits`, e.g. the clean run), computed from
/// log-softmaxes.
///
/// # Shapes
/// - p_logits, q_logits: `[..., vocab]`, equal
/// - output: `[..., 1]` (the vocabulary axis kept with size 1)
///
/// # Errors
/// Logit sets of different shapes.
pub fn kl_divergence<const D: usize>(
    p_logits: Tensor<D>,
    q_logits: Tensor<D>,
) -> Result<Tensor<D>> {
    if p_logits.dims() != q_logits.dims() {
        return Err(MetricError::Shape(format!(
            "KL divergence of logits shaped {:?} and {:?}",
            p_logits.dims(),
            q_logits.dims()
        )));
    }
    let log_p = log_softmax(p_logits, D - 1);
    let log_q = log_softmax(q_logits, D - 1);
    Ok((log_p.clone().exp() * (log_p - log_q)).sum_dim(D - 1))
}

/// A candidate next token.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Candidate {
    /// Token id.
    pub token: u32,
    /// Its probability, `softmax(logits)[token]`.
    pub prob: f32,
    /// Its logit.
    pub logit: f32,
}

/// The `k` most probable tokens of each row, most probable first (ties: lower id first).
///
/// # Shapes
/// - logits: `[batch, vocab]`
///
/// # Errors
/// `k` of zero or larger than the vocabulary.
pub fn top_k(logits: Tensor<2>, k: usize) -> Result<Vec<Vec<Candidate>>> {
    let [b, v] = logits.dims();
    if k == 0 || k > v {
        return Err(MetricError::Shape(format!(
            "top-k with k = {k} over a vocabulary of {v}"
        )));
    }
    let probs = softmax(logits.clone(), 1);
    let host = |t: Tensor<2>| -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("float tensor")
    };
    let (logits, probs) = (host(logits), host(probs));
    Ok((0..b)
        .map(|r| {
            let row = &logits[r * v..(r + 1) * v];
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
            order
                .into_iter()
                .take(k)
                .map(|i| Candidate {
                    token: i as u32,
                    prob: probs[r * v + i],
                    logit: row[i],
                })
                .collect()
        })
        .collect())
}

/// Jaccard similarity `|A ∩ B| / |A ∪ B|` of two token pools (e.g. two top-k lists); 1 for
/// two empty pools.
pub fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    let (a, b): (HashSet<u32>, HashSet<u32>) =
        (a.iter().copied().collect(), b.iter().copied().collect());
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// Inseq's `contrast_prob_diff`: `p(target[b] | logits) − p(contrast[b] | contrast_logits)`.
/// Pass the same logits twice to contrast a target with a foil on one input.
///
/// # Shapes
/// - logits, contrast_logits: `[batch, vocab]`
/// - output: `[batch]`
///
/// # Errors
/// Id lists of the wrong length or outside the vocabulary.
pub fn contrast_prob_diff(
    logits: Tensor<2>,
    target: &[u32],
    contrast_logits: Tensor<2>,
    contrast: &[u32],
) -> Result<Tensor<1>> {
    Ok(token_probs(logits, target)? - token_probs(contrast_logits, contrast)?)
}

/// The logit counterpart of [`contrast_prob_diff`]:
/// `logits[b, target[b]] − contrast_logits[b, contrast[b]]`.
///
/// # Shapes
/// - logits, contrast_logits: `[batch, vocab]`
/// - output: `[batch]`
///
/// # Errors
/// Id lists of the wrong length or outside the vocabulary.
pub fn contrast_logits_diff(
    logits: Tensor<2>,
    target: &[u32],
    contrast_logits: Tensor<2>,
    contrast: &[u32],
) -> Result<Tensor<1>> {
    Ok(token_logits(logits, target)? - token_logits(contrast_logits, contrast)?)
}
