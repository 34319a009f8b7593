//! Prompt-prepend search: the token that, put before a target string, makes the model find
//! the string most likely (lowest perplexity), searched over the whole vocabulary in batches,
//! and repeated greedily for several tokens.

use burn::tensor::{Int, Tensor, TensorData};
use burnlens_metrics::token_log_probs;
use burnlens_model::{Gpt2, TokenBatch};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::progress::Observer;

/// One round of the search: the token found and the target's perplexity after prepending it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrependRound {
    /// The token prepended in this round.
    pub token: u32,
    /// The target's mean next-token loss with the prefix found so far.
    pub loss: f32,
    /// `exp(loss)`.
    pub perplexity: f32,
}

/// The result of [`prepend_search`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrependSearch {
    /// The prefix found, in order (the last round's token first).
    pub prefix: Vec<u32>,
    /// Each round's choice.
    pub rounds: Vec<PrependRound>,
}

/// The mean next-token loss of `target` after `prefix` for every candidate first token:
/// sequences `[candidate] + prefix + target`, losses of the target's tokens only.
///
/// # Shapes
/// - output: one loss per candidate
///
/// # Errors
/// Forward errors (a sequence longer than the context, ids outside the vocabulary).
pub fn prepend_losses(
    model: &Gpt2,
    candidates: &[u32],
    prefix: &[u32],
    target: &[u32],
) -> Result<Vec<f32>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Vec<u32>> = candidates
        .iter()
        .map(|&c| {
            std::iter::once(c)
                .chain(prefix.iter().copied())
                .chain(target.iter().copied())
                .collect()
        })
        .collect();
    let (b, k, l) = (rows.len(), 1 + prefix.len(), target.len());
    let logits = model.logits(&TokenBatch::new(rows, None)?)?;
    let v = logits.dims()[2];
    // Position k - 1 + i predicts target token i.
    let predicting = logits.slice([0..b, k - 1..k - 1 + l, 0..v]);
    let targets: Vec<i64> = (0..b)
        .flat_map(|_| target.iter().map(|&t| t as i64))
        .collect();
    let targets =
        Tensor::<2, Int>::from_data(TensorData::new(targets, [b, l]), &predicting.device());
    let loss = -token_log_probs(predicting, targets)
        .mean_dim(1)
        .reshape([b]);
    Ok(loss
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float losses"))
}

/// Options of [`prepend_search`]; `Default` finds one token, 256 candidates per forward,
/// with no observer.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// Tokens to find (rounds of the greedy search).
    pub n_tokens: usize,
    /// Candidates scored per forward.
    pub batch: usize,
    /// Told `(candidates scored, candidates in all)` as batches complete.
    pub observer: Observer,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            n_tokens: 1,
            batch: 256,
            observer: Observer::none(),
        }
    }
}

/// Finds, `options.n_tokens` times over, the vocabulary token whose prepending minimises the
/// target's perplexity (each round prepends to the prefix found so far), scoring
/// `options.batch` candidates per forward.
///
/// # Errors
/// An empty target, zero tokens or batch, a search that would outgrow the context, and
/// forward errors.
pub fn prepend_search(
    model: &Gpt2,
    target: &[u32],
    options: &SearchOptions,
) -> Result<PrependSearch> {
    let (n_tokens, batch) = (options.n_tokens, options.batch);
    if target.is_empty() {
        return Err(Error::Empty {
            what: "the target",
            hint: ": it has no tokens",
        });
    }
    for (option, value) in [("n_tokens", n_tokens), ("batch", batch)] {
        if value == 0 {
            return Err(Error::BadOption {
                option,
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
    }
    let ctx = model.config.n_positions;
    if target.len() + n_tokens > ctx {
        return Err(Error::TooLong {
            what: format!("the target with {n_tokens} prepended tokens"),
            tokens: target.len() + n_tokens,
            limit: ctx,
            room: "tokens of the model's context",
        });
    }
    let vocab = model.config.vocab_size as u32;
    let total = vocab as usize * n_tokens;
    let mut prefix: Vec<u32> = Vec::new();
    let mut rounds = Vec::with_capacity(n_tokens);
    for round in 0..n_tokens {
        let mut best: Option<(u32, f32)> = None;
        let ids: Vec<u32> = (0..vocab).collect();
        for (c, chunk) in ids.chunks(batch).enumerate() {
            let losses = prepend_losses(model, chunk, &prefix, target)?;
            for (&tok, &loss) in chunk.iter().zip(&losses) {
                // Strictly lower wins, so ties keep the lowest id.
                if best.is_none_or(|(_, b)| loss < b) {
                    best = Some((tok, loss));
                }
            }
            options
                .observer
                .report(round * vocab as usize + (c * batch + chunk.len()), total);
        }
        let (token, loss) = best.expect("the vocabulary is not empty");
        prefix.insert(0, token);
        rounds.push(PrependRound {
            token,
            loss,
            perplexity: loss.exp(),
        });
    }
    Ok(PrependSearch { prefix, rounds })
}
