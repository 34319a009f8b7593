//! Text generation on top of the KV-cached forward pass: greedy, sampling (temperature,
//! top-k, top-p) and beam search, with the semantics of Hugging Face `transformers`' `generate`.

use burn::tensor::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::batch::TokenBatch;
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::hook::{Hooks, NoHooks};
use crate::model::Gpt2;

/// When beam search stops (Hugging Face's `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` hypotheses are finished (`early_stopping=True`).
    True,
    /// Stop when the best running beam, at its current length, cannot beat the worst finished
    /// hypothesis (`early_stopping=False`, the default).
    #[default]
    False,
    /// Stop only when no running beam can improve, even at `max_new_tokens` (`"never"`).
    Never,
}

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// The most probable token.
    Greedy,
    /// Draw from the distribution, after temperature, then top-k, then top-p filtering.
    Sample {
        /// Divides the logits; must be positive.
        temperature: f32,
        /// Keep the `k` most probable tokens (ties at the boundary kept), if set.
        top_k: Option<usize>,
        /// Keep the smallest set of most probable tokens whose probability reaches `p`, if set.
        top_p: Option<f32>,
    },
    /// Beam search.
    Beam {
        /// Number of beams.
        num_beams: usize,
        /// When to stop.
        early_stopping: EarlyStopping,
        /// Finished hypotheses score `sum_logprobs / len^length_penalty`.
        length_penalty: f32,
    },
}

/// Options of [`Gpt2::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Number of tokens to generate at most.
    pub max_new_tokens: usize,
    /// Greedy, sampling or beam search.
    pub strategy: Strategy,
    /// Number of sequences returned (sampling: independent draws; beam: the best beams).
    pub num_return_sequences: usize,
    /// OpenAI-style frequency penalty: each token's logit is lowered by
    /// `frequency_penalty × (times it was generated so far)`. 0 disables it.
    pub frequency_penalty: f32,
    /// Generation of a sequence stops after this token (usually `<|endoftext|>`); `None`
    /// generates `max_new_tokens` always.
    pub eos_token_id: Option<u32>,
    /// Seed of the sampling RNG.
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            strategy: Strategy::Greedy,
            num_return_sequences: 1,
            frequency_penalty: 0.0,
            eos_token_id: None,
            seed: 0,
        }
    }
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generated {
    /// The new tokens (the prompt excluded), ending with EOS if it was produced.
    pub tokens: Vec<u32>,
    /// Beam search: the hypothesis score (`sum_logprobs / len^length_penalty`); otherwise the
    /// sum of the chosen tokens' log-probabilities under the (penalised, tempered) distribution.
    pub score: f32,
    /// Whether the sequence ended with EOS.
    pub finished: bool,
}

const NEG: f32 = -1.0e9;

impl Gpt2 {
    /// Continues `prompt` (token ids, no padding) as `config` says.
    ///
    /// # Errors
    /// An empty prompt, a prompt plus `max_new_tokens` longer than the context, and invalid
    /// options (temperature ≤ 0, `top_p` outside (0, 1], `num_return_sequences` that the
    /// strategy cannot give).
    pub fn generate(&self, prompt: &[u32], config: &GenerationConfig) -> Result<Vec<Generated>> {
        self.generate_with_hooks(prompt, config, &mut NoHooks)
    }

    /// [`Gpt2::generate`] with `hooks` active in every forward pass (e.g. a steering vector
    /// added at a hook point). With the KV cache, each pass after the first sees only the new
    /// tokens, so a hook acting at every position acts on each token once, as it would on the
    /// whole sequence.
    ///
    /// # Errors
    /// As [`Gpt2::generate`], and errors raised by hooks.
    pub fn generate_with_hooks(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        hooks: &mut dyn Hooks,
    ) -> Result<Vec<Generated>> {
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let total = prompt.len() + config.max_new_tokens;
        if total > self.config.n_positions {
            return Err(Error::TooLong {
                len: total,
                n_positions: self.config.n_positions,
            });
        }
        if config.num_return_sequences == 0 {
            return Err(Error::InvalidOption(
                "num_return_sequences must be at least 1".into(),
            ));
        }
        match &config.strategy {
            Strategy::Greedy => {
                if config.num_return_sequences != 1 {
                    return Err(Error::InvalidOption(
                        "greedy search returns one sequence; use sampling or beam search for num_return_sequences > 1".into(),
                    ));
                }
                self.sample_loop(prompt, config, None, hooks)
            }
            Strategy::Sample {
                temperature,
                top_k,
                top_p,
            } => {
                if !temperature.is_finite() || *temperature <= 0.0 {
                    return Err(Error::InvalidOption(format!(
                        "temperature must be positive, got {temperature}"
                    )));
                }
                if let Some(p) = top_p
                    && (p.is_nan() || *p <= 0.0 || *p > 1.0)
                {
                    return Err(Error::InvalidOption(format!(
                        "top_p must be in (0, 1], got {p}"
                    )));
                }
                if *top_k == Some(0) {
                    return Err(Error::InvalidOption("top_k must be at least 1".into()));
                }
                let filter = SampleFilter {
                    temperature: *temperature,
                    top_k: *top_k,
                    top_p: *top_p,
                };
                self.sample_loop(prompt, config, Some(filter), hooks)
            }
            Strategy::Beam {
                num_beams,
                early_stopping,
                length_penalty,
            } => {
                if *num_beams == 0 || config.num_return_sequences > *num_beams {
                    return Err(Error::InvalidOption(format!(
                        "beam search needs num_beams ≥ 1 and num_return_sequences ≤ num_beams, got {num_beams} and {}",
                        config.num_return_sequences
                    )));
                }
                self.beam_search(
                    prompt,
                    config,
                    *num_beams,
                    *early_stopping,
                    *length_penalty,
                    hooks,
                )
            }
        }
    }

    /// Logits at the last position of each row, on the host: `[rows][vocab]`.
    fn last_logits(&self, logits: Tensor<3>) -> Vec<Vec<f32>> {
        let [b, t, v] = logits.dims();
        let flat = logits
            .slice([0..b, t - 1..t, 0..v])
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 logits");
        flat.chunks(v).map(<[f32]>::to_vec).collect()
    }

    /// Greedy search (`filter = None`) and sampling, over `num_return_sequences` rows.
    fn sample_loop(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        filter: Option<SampleFilter>,
        hooks: &mut dyn Hooks,
    ) -> Result<Vec<Generated>> {
        let n = config.num_return_sequences;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut cache = KvCache::new(self.config.n_layer, 1);
        let logits = self.forward(&TokenBatch::single(prompt)?, Some(&mut cache), hooks)?;
        let first = self.last_logits(logits).remove(0);
        let mut cache = cache.select_rows(&vec![0; n])?;
        let mut rows = vec![first; n];
        let mut out: Vec<Generated> = (0..n)
            .map(|_| Generated {
                tokens: Vec::new(),
                score: 0.0,
                finished: false,
            })
            .collect();
        for step in 0..config.max_new_tokens {
            let mut next = Vec::with_capacity(n);
            for (row, logits) in rows.iter_mut().enumerate() {
                let g = &mut out[row];
                if g.finished {
                    next.push(config.eos_token_id.unwrap_or(0));
                    continue;
                }
                apply_frequency_penalty(logits, &g.tokens, config.frequency_penalty);
                let (token, logp) = match &filter {
                    None => {
                        let t = argmax(logits);
                        (t, log_softmax(logits)[t as usize])
                    }
                    Some(f) => f.sample(logits, &mut rng),
                };
                g.tokens.push(token);
                g.score += logp;
                g.finished = Some(token) == config.eos_token_id;
                next.push(token);
            }
            if out.iter().all(|g| g.finished) || step + 1 == config.max_new_tokens {
                break;
            }
            let batch = TokenBatch::new(next.into_iter().map(|t| vec![t]).collect(), None)?;
            let logits = self.forward(&batch, Some(&mut cache), hooks)?;
            rows = self.last_logits(logits);
        }
        Ok(out)
    }

    /// Beam search with the scoring, bookkeeping and stopping rules of `transformers` 5.x
    /// (`_beam_search`): `2 × num_beams` candidates per step, finished hypotheses scored
    /// `sum_logprobs / len^length_penalty`, the same early-stopping heuristics, f32 scores.
    fn beam_search(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        n: usize,
        early_stopping: EarlyStopping,
        length_penalty: f32,
        hooks: &mut dyn Hooks,
    ) -> Result<Vec<Generated>> {
        let max_new = config.max_new_tokens;
        if max_new == 0 {
            return Ok(vec![
                Generated {
                    tokens: vec![],
                    score: 0.0,
                    finished: false
                };
                config.num_return_sequences
            ]);
        }
        let mut cache = KvCache::new(self.config.n_layer, 1);
        let logits = self.forward(&TokenBatch::single(prompt)?, Some(&mut cache), hooks)?;
        let first = self.last_logits(logits).remove(0);
        let mut cache = cache.select_rows(&vec![0; n])?;
        let mut rows = vec![first; n];

        let mut beams = Beams::new(n);
        while let Some(parents) = beams.step(&mut rows, config, n, early_stopping, length_penalty) {
            cache = cache.select_rows(&parents)?;
            let batch = TokenBatch::new(
                beams
                    .running
                    .iter()
                    .map(|s| vec![*s.last().expect("one token")])
                    .collect(),
                None,
            )?;
            let logits = self.forward(&batch, Some(&mut cache), hooks)?;
            rows = self.last_logits(logits);
        }
        Ok(beams
            .finished
            .into_iter()
            .zip(beams.finished_scores)
            .take(config.num_return_sequences)
            .map(|(tokens, score)| Generated {
                finished: config.eos_token_id.is_some()
                    && tokens.last() == config.eos_token_id.as_ref(),
                tokens,
                score,
            })
            .collect())
    }
}

/// A beam search's state between steps: per beam, the running hypothesis and its summed
/// log-probability, and the best finished hypotheses so far with their length-penalised
/// scores (Hugging Face's `_beam_search`, which keeps `2n` candidates per step).
struct Beams {
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    finished: Vec<Vec<u32>>,
    finished_scores: Vec<f32>,
    is_finished: Vec<bool>,
    improvable: bool,
    generated: usize,
}

impl Beams {
    /// `n` beams before the first token: one live hypothesis (the others at −∞).
    fn new(n: usize) -> Self {
        let mut running_scores = vec![NEG; n];
        running_scores[0] = 0.0;
        Self {
            running: vec![Vec::new(); n],
            running_scores,
            finished: vec![Vec::new(); n],
            finished_scores: vec![NEG; n],
            is_finished: vec![false; n],
            improvable: true,
            generated: 0,
        }
    }

    /// One step on each beam's last-position logits `rows`: the best `n` continuations run
    /// on and the best `n` stopped ones are kept. Returns each running beam's parent, or
    /// `None` when the search is over.
    fn step(
        &mut self,
        rows: &mut [Vec<f32>],
        config: &GenerationConfig,
        n: usize,
        early_stopping: EarlyStopping,
        length_penalty: f32,
    ) -> Option<Vec<usize>> {
        let (k, max_new) = (2 * n, config.max_new_tokens);
        // Accumulated log-probabilities of every (beam, token) continuation.
        let vocab = rows[0].len();
        let mut acc = Vec::with_capacity(n * vocab);
        for (b, logits) in rows.iter_mut().enumerate() {
            apply_frequency_penalty(logits, &self.running[b], config.frequency_penalty);
            acc.extend(
                log_softmax(logits)
                    .into_iter()
                    .map(|lp| lp + self.running_scores[b]),
            );
        }
        let top = top_k_indices(&acc, k);
        let cand: Vec<(usize, u32, f32)> = top
            .iter()
            .map(|&i| (i / vocab, (i % vocab) as u32, acc[i]))
            .collect();
        let new_len = self.generated + 1;
        let hits: Vec<bool> = cand
            .iter()
            .map(|&(_, tok, _)| Some(tok) == config.eos_token_id || new_len >= max_new)
            .collect();

        // The best `n` candidates that did not stop continue.
        let run_scores: Vec<f32> = cand
            .iter()
            .zip(&hits)
            .map(|(&(_, _, s), &h)| s + if h { NEG } else { 0.0 })
            .collect();
        let keep = top_k_indices(&run_scores, n);
        let parents: Vec<usize> = keep.iter().map(|&j| cand[j].0).collect();
        let next_running: Vec<Vec<u32>> = keep
            .iter()
            .map(|&j| {
                let mut s = self.running[cand[j].0].clone();
                s.push(cand[j].1);
                s
            })
            .collect();
        let next_running_scores: Vec<f32> = keep.iter().map(|&j| run_scores[j]).collect();

        // Finished hypotheses: only among the top `n` candidates.
        let all_full = self.is_finished.iter().all(|&f| f) && early_stopping == EarlyStopping::True;
        let denom = (new_len as f32).powf(length_penalty);
        let mut merged: Vec<(f32, Vec<u32>, bool)> = self
            .finished
            .iter()
            .zip(&self.finished_scores)
            .zip(&self.is_finished)
            .map(|((s, &sc), &f)| (sc, s.clone(), f))
            .collect();
        for (j, &(b, tok, s)) in cand.iter().enumerate() {
            let did = hits[j] && j < n;
            let mut score = s / denom;
            score += if all_full { NEG } else { 0.0 };
            score += if self.improvable { 0.0 } else { NEG };
            score += if did { 0.0 } else { NEG };
            let mut seq = self.running[b].clone();
            seq.push(tok);
            merged.push((score, seq, did));
        }
        let merged_scores: Vec<f32> = merged.iter().map(|m| m.0).collect();
        let best = top_k_indices(&merged_scores, n);
        self.finished = best.iter().map(|&i| merged[i].1.clone()).collect();
        self.finished_scores = best.iter().map(|&i| merged[i].0).collect();
        self.is_finished = best.iter().map(|&i| merged[i].2).collect();

        self.running = next_running;
        self.running_scores = next_running_scores;
        self.generated = new_len;

        let best_len = if early_stopping == EarlyStopping::Never && length_penalty > 0.0 {
            max_new
        } else {
            self.generated
        };
        let best_possible = self.running_scores[0] / (best_len as f32).powf(length_penalty);
        let worst_finished = self
            .finished_scores
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        self.improvable = self.improvable
            && self
                .is_finished
                .iter()
                .any(|&f| best_possible > if f { worst_finished } else { NEG });
        let open = !(self.is_finished.iter().all(|&f| f) && early_stopping == EarlyStopping::True);
        (self.improvable && open && !hits.iter().all(|&h| h)).then_some(parents)
    }
}

/// Sampling filters, applied in Hugging Face's order: temperature, top-k, top-p.
#[derive(Debug, Clone, Copy)]
struct SampleFilter {
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
}

impl SampleFilter {
    /// Draws one token; returns it with its log-probability under the filtered distribution.
    fn sample(&self, logits: &[f32], rng: &mut StdRng) -> (u32, f32) {
        let allowed = self.allowed(logits);
        let scaled: Vec<f32> = logits.iter().map(|l| l / self.temperature).collect();
        let max = allowed
            .iter()
            .map(|&i| scaled[i])
            .fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = allowed
            .iter()
            .map(|&i| ((scaled[i] - max) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut u = rng.random::<f64>() * total;
        let mut pick = allowed.len() - 1;
        for (j, w) in weights.iter().enumerate() {
            if u < *w {
                pick = j;
                break;
            }
            u -= w;
        }
        let token = allowed[pick];
        (token as u32, (weights[pick] / total).ln() as f32)
    }

    /// The indices that survive top-k and top-p filtering, most probable first.
    fn allowed(&self, logits: &[f32]) -> Vec<usize> {
        filtered_candidates(logits, self.temperature, self.top_k, self.top_p)
    }
}

/// The tokens that top-k and top-p filtering leave (most probable first), after dividing the
/// logits by `temperature`. Top-k keeps every token whose logit is at least the k-th largest;
/// top-p keeps the smallest prefix of the sorted tokens whose probability reaches `top_p`
/// (at least one token).
pub fn filtered_candidates(
    logits: &[f32],
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
) -> Vec<usize> {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
    if let Some(k) = top_k
        && k < order.len()
    {
        let kth = scaled[order[k - 1]];
        order.retain(|&i| scaled[i] >= kth);
    }
    if let Some(p) = top_p
        && p < 1.0
    {
        let max = scaled[order[0]];
        let w: Vec<f64> = order
            .iter()
            .map(|&i| ((scaled[i] - max) as f64).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut cum = 0.0;
        let mut keep = order.len();
        for (j, x) in w.iter().enumerate() {
            cum += x / total;
            if cum >= p as f64 {
                keep = j + 1;
                break;
            }
        }
        order.truncate(keep.max(1));
    }
    order
}

fn apply_frequency_penalty(logits: &mut [f32], generated: &[u32], penalty: f32) {
    if penalty == 0.0 {
        return;
    }
    for &t in generated {
        logits[t as usize] -= penalty;
    }
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// `x - max - ln(sum(exp(x - max)))` in f32, as torch computes it.
fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = x.iter().map(|v| (v - max).exp()).sum();
    let lse = sum.ln();
    x.iter().map(|v| v - max - lse).collect()
}

/// Indices of the `k` largest values, largest first; ties go to the lower index.
fn top_k_indices(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_boundary_ties_and_top_p_reaches_mass() {
        let logits = [1.0, 3.0, 2.0, 2.0, 0.0];
        assert_eq!(
            filtered_candidates(&logits, 1.0, Some(2), None),
            vec![1, 2, 3]
        );
        // softmax of [3, 2, 2, 1, 0] ≈ [0.48, 0.18, 0.18, 0.06, 0.02]...
        assert_eq!(filtered_candidates(&logits, 1.0, None, Some(0.4)), vec![1]);
        assert_eq!(
            filtered_candidates(&logits, 1.0, None, Some(0.6)),
            vec![1, 2]
        );
        assert_eq!(filtered_candidates(&logits, 1.0, None, Some(1.0)).len(), 5);
    }

    #[test]
    fn log_softmax_is_normalised() {
        let lp = log_softmax(&[0.5, -1.0, 3.0]);
        let total: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
