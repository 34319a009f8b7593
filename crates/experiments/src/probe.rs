//! Candidate pools and embedding interventions: what the model would say next at every
//! position, how similar two prompts' candidate pools are, and how predictions move when two
//! tokens' input embeddings are swapped or one token's embedding gets noise.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use burnlens_hooks::{Act, HookSet, Intervention};
use burnlens_metrics::{Candidate, jaccard, last_position, top_k};
use burnlens_model::{Gpt2, HookPoint, TokenBatch};
use serde::Serialize;

use crate::error::{Error, Result};

/// The top-`k` next tokens at one position, next to the token that actually follows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionPool {
    /// The position.
    pub position: usize,
    /// The token at `position + 1`, if any.
    pub actual_next: Option<u32>,
    /// Rank of the actual next token (0 = top), if any.
    pub actual_rank: Option<usize>,
    /// The `k` most probable next tokens.
    pub top: Vec<Candidate>,
}

/// The top-`k` candidates at every position of `ids`, with the actual next token's rank.
///
/// # Errors
/// Empty input, `k` of zero or past the vocabulary, forward errors.
pub fn candidate_pools(model: &Gpt2, ids: &[u32], k: usize) -> Result<Vec<PositionPool>> {
    let logits = model.logits(&TokenBatch::single(ids)?)?;
    let [_, t, v] = logits.dims();
    let rows = logits.reshape([t, v]);
    let tops = top_k(rows.clone(), k)?;
    let host: Vec<f32> = rows
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float logits");
    Ok(tops
        .into_iter()
        .enumerate()
        .map(|(p, top)| {
            let actual_next = ids.get(p + 1).copied();
            let actual_rank = actual_next.map(|n| {
                let row = &host[p * v..(p + 1) * v];
                row.iter().filter(|&&x| x > row[n as usize]).count()
            });
            PositionPool {
                position: p,
                actual_next,
                actual_rank,
                top,
            }
        })
        .collect())
}

/// The Jaccard similarity of the top-`k` next-token pools of two prompts (at their last
/// positions), and the two pools.
///
/// # Errors
/// As [`candidate_pools`].
pub fn pool_jaccard(
    model: &Gpt2,
    a: &[u32],
    b: &[u32],
    k: usize,
) -> Result<(f64, Vec<u32>, Vec<u32>)> {
    let pool = |ids: &[u32]| -> Result<Vec<u32>> {
        let logits = model.logits(&TokenBatch::single(ids)?)?;
        Ok(top_k(last_position(logits), k)?
            .remove(0)
            .into_iter()
            .map(|c| c.token)
            .collect())
    };
    let (pa, pb) = (pool(a)?, pool(b)?);
    Ok((jaccard(&pa, &pb), pa, pb))
}

/// An edit of the input embeddings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum EmbeddingEdit {
    /// Every occurrence of one token is embedded as the other and vice versa (the input
    /// embeddings only; the unembedding is untouched).
    Swap(u32, u32),
    /// Seeded Gaussian noise of standard deviation `std` added to the embeddings at
    /// `positions`.
    Noise {
        /// Positions edited.
        positions: Vec<usize>,
        /// Noise standard deviation.
        std: f64,
        /// Seed.
        seed: u64,
    },
}

/// How an edit moved the next-token prediction at the last position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EditReport {
    /// Top-`k` before the edit.
    pub before: Vec<Candidate>,
    /// Top-`k` after.
    pub after: Vec<Candidate>,
    /// `KL(before ‖ after)` of the next-token distributions.
    pub kl: f32,
    /// Jaccard similarity of the two top-`k` pools.
    pub jaccard: f64,
}

/// Runs `ids` with `edit` applied to the token embeddings (`hook_embed`) and reports the
/// change at the last position; also returns the edited logits `[1, pos, vocab]`.
///
/// # Errors
/// Tokens or positions outside the vocabulary or the prompt, `k` of zero, forward errors.
pub fn edit_embeddings(
    model: &Gpt2,
    ids: &[u32],
    edit: &EmbeddingEdit,
    k: usize,
) -> Result<(EditReport, Tensor<3>)> {
    let batch = TokenBatch::single(ids)?;
    let vocab = model.config.vocab_size;
    let mut hooks = HookSet::new();
    match edit {
        EmbeddingEdit::Swap(a, b) => {
            if let Some(&bad) = [a, b].into_iter().find(|&&t| t as usize >= vocab) {
                return Err(Error::OutOfRange {
                    what: "token id",
                    value: bad as usize,
                    limit: format!("the vocabulary has {vocab} tokens"),
                });
            }
            let swapped: Vec<u32> = ids
                .iter()
                .map(|&t| {
                    if t == *a {
                        *b
                    } else if t == *b {
                        *a
                    } else {
                        t
                    }
                })
                .collect();
            let rows = model.token_embeddings(&swapped).unsqueeze();
            hooks.intervene(HookPoint::Embed, Intervention::replace(Act::R3(rows)))?;
        }
        EmbeddingEdit::Noise {
            positions,
            std,
            seed,
        } => {
            if let Some(&p) = positions.iter().find(|&&p| p >= ids.len()) {
                return Err(Error::OutOfRange {
                    what: "position",
                    value: p,
                    limit: format!("the prompt has {} tokens", ids.len()),
                });
            }
            hooks.intervene(
                HookPoint::Embed,
                Intervention::noise(*std, *seed).at(positions.clone()),
            )?;
        }
    }
    let before_logits = last_position(model.logits(&batch)?);
    let edited = hooks.run(model, &batch)?;
    let after_logits = last_position(edited.clone());
    let before = top_k(before_logits.clone(), k)?.remove(0);
    let after = top_k(after_logits.clone(), k)?.remove(0);
    let lp = log_softmax(before_logits, 1);
    let lq = log_softmax(after_logits, 1);
    let kl = (lp.clone().exp() * (lp - lq)).sum().into_scalar::<f32>();
    let tokens = |c: &[Candidate]| c.iter().map(|x| x.token).collect::<Vec<_>>();
    let jaccard = jaccard(&tokens(&before), &tokens(&after));
    Ok((
        EditReport {
            before,
            after,
            kl,
            jaccard,
        },
        edited,
    ))
}
