//! The logit lens (nostalgebraist, 2020): the residual stream before every block and after the
//! last, read out through the model's own final LayerNorm and unembedding, as if the model
//! stopped there. The readout is [`Gpt2::unembed`], the last stage of the one forward pass, so
//! the last layer's readout is the model's output exactly.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burnlens_hooks::{HookKind, HookPoint, ResidOptions, Selector, run_with_cache};
use burnlens_metrics::{Candidate, token_probs, token_ranks, top_k};
use burnlens_model::{Gpt2, NoHooks, TokenBatch};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::tuned_lens::TunedLens;

/// The logit lens at one position of one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct LogitLens {
    /// One label per readout: `"<l>_pre"` before block `l`, `"final_post"` after the last
    /// (TransformerLens's `accumulated_resid` labels).
    pub labels: Vec<String>,
    /// The position read out.
    pub position: usize,
    /// The `k` most probable next tokens at each readout.
    pub top: Vec<Vec<Candidate>>,
    /// The answer token, if one was given.
    pub answer: Option<u32>,
    /// p(answer) at each readout.
    pub answer_prob: Vec<f32>,
    /// Rank of the answer at each readout (0 = top).
    pub answer_rank: Vec<usize>,
}

/// The logit lens of row 0 of `batch` at every position: top-`k` tokens (and, with `answer`,
/// its probability and rank) at each readout, one [`LogitLens`] per position.
///
/// # Errors
/// `k` of zero or past the vocabulary, an answer outside the vocabulary, and forward errors.
pub fn logit_lens(
    model: &Gpt2,
    batch: &TokenBatch,
    answer: Option<u32>,
    k: usize,
) -> Result<Vec<LogitLens>> {
    logit_lens_with(model, batch, answer, k, None)
}

/// [`logit_lens`], each readout before a block read through `tuned`'s translator for it (the
/// tuned lens; `None`: the logit lens). The last readout is the output either way.
///
/// # Errors
/// As [`logit_lens`], and a tuned lens for another model's layers or width.
pub fn logit_lens_with(
    model: &Gpt2,
    batch: &TokenBatch,
    answer: Option<u32>,
    k: usize,
    tuned: Option<&TunedLens>,
) -> Result<Vec<LogitLens>> {
    let n = model.config.n_layer;
    if let Some(t) = tuned {
        t.check(model)?;
    }
    if let Some(a) = answer.filter(|&a| a as usize >= model.config.vocab_size) {
        return Err(Error::OutOfRange {
            what: "answer id",
            value: a as usize,
            limit: format!("the vocabulary has {} tokens", model.config.vocab_size),
        });
    }
    let row0 = TokenBatch::single(batch.row(0))?;
    let selector =
        Selector::kind(HookKind::ResidPre).or(Selector::point(HookPoint::ResidPost(n - 1))?);
    let (_, cache) = run_with_cache(model, &row0, selector)?;
    let stack = cache.accumulated_resid(model, ResidOptions::default())?;
    let [c, _, t, d] = stack.stack.dims();
    let mut resid = stack.stack.reshape([c, t, d]);
    if let Some(lens) = tuned {
        // Readout i < n is the stream entering block i; the last is the output.
        let parts: Vec<Tensor<3>> = (0..c)
            .map(|i| {
                let h = resid.clone().narrow(0, i, 1);
                if i < n { lens.forward(i, h) } else { h }
            })
            .collect();
        resid = Tensor::cat(parts, 0);
    }
    // Every readout through the model's own ln_f and unembedding: [c, t, vocab].
    let logits = model.unembed(resid, &mut NoHooks)?;
    let vocab = logits.dims()[2];
    let mut out = Vec::with_capacity(t);
    for position in 0..t {
        let at = logits.clone().narrow(1, position, 1).reshape([c, vocab]);
        let top = top_k(at.clone(), k)?;
        let (answer_prob, answer_rank) = match answer {
            Some(a) => {
                let ids = vec![a; c];
                let probs: Vec<f32> = token_probs(at.clone(), &ids)?
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("float probabilities");
                (probs, token_ranks(at, &ids)?)
            }
            None => (Vec::new(), Vec::new()),
        };
        out.push(LogitLens {
            labels: stack.labels.clone(),
            position,
            top,
            answer,
            answer_prob,
            answer_rank,
        });
    }
    Ok(out)
}

/// The model's own next-token probabilities for row 0 at `position` (what the last readout of
/// the lens must equal).
///
/// # Errors
/// Forward errors, a position past the prompt.
pub fn output_probs(model: &Gpt2, batch: &TokenBatch, position: usize) -> Result<Vec<f32>> {
    let row0 = TokenBatch::single(batch.row(0))?;
    if position >= row0.seq_len() {
        return Err(Error::OutOfRange {
            what: "position",
            value: position,
            limit: format!("the prompt has {} tokens", row0.seq_len()),
        });
    }
    let logits = model.logits(&row0)?;
    let v = logits.dims()[2];
    Ok(softmax(logits.narrow(1, position, 1).reshape([1, v]), 1)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float probabilities"))
}
