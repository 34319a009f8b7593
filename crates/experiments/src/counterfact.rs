//! CounterFact evaluation of edits, with ROME's definitions (`experiments/py/
//! eval_utils_counterfact.py` and `experiments/summarize.py`):
//!
//! - each prompt is scored by the mean negative log-probability per token of `" " + target`
//!   after it, for the new and the true target ([`target_nlls`]);
//! - **efficacy** (rewrite prompt) and **paraphrase** success: the fraction of prompts where
//!   the new target is likelier than the true one (`nll_true > nll_new`); their magnitudes:
//!   the mean of `exp(−nll_new) − exp(−nll_true)`;
//! - **neighbourhood** success: the fraction of neighbouring subjects' prompts where the true
//!   target stays likelier (`nll_true < nll_new`); magnitude `exp(−nll_true) − exp(−nll_new)`;
//! - per case each is averaged over its prompts, then over cases; the **score** is the harmonic
//!   mean of the efficacy, paraphrase and neighbourhood successes;
//! - fluency: the n-gram entropy of generated text ([`ngram_entropy`]: bigram and trigram
//!   entropies in bits weighted 2/3 and 4/3, averaged).

use burn::tensor::{Int, Tensor, TensorData};
use burnlens_metrics::token_log_probs;
use burnlens_model::{GenerationConfig, Gpt2, Gpt2Tokenizer, PaddingSide, TokenBatch};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rome::RomeRequest;

/// One case to edit and evaluate (a CounterFact record's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditCase {
    /// Case id.
    pub case_id: u64,
    /// The rewrite.
    pub request: RomeRequest,
    /// The true target (without or with its leading space).
    pub target_true: String,
    /// Paraphrases of the prompt, subject filled in.
    pub paraphrase_prompts: Vec<String>,
    /// Prompts about other subjects whose true answer is `target_true`.
    pub neighborhood_prompts: Vec<String>,
    /// Prompts to generate from (fluency).
    pub generation_prompts: Vec<String>,
}

impl From<&burnlens_datasets::CounterFactRecord> for EditCase {
    /// The record's rewrite, true target and prompts, as one case.
    fn from(r: &burnlens_datasets::CounterFactRecord) -> Self {
        let rw = &r.requested_rewrite;
        Self {
            case_id: r.case_id,
            request: RomeRequest {
                prompt: rw.prompt.clone(),
                subject: rw.subject.clone(),
                target_new: rw.target_new.text.clone(),
            },
            target_true: rw.target_true.text.clone(),
            paraphrase_prompts: r.paraphrase_prompts.clone(),
            neighborhood_prompts: r.neighborhood_prompts.clone(),
            generation_prompts: r.generation_prompts.clone(),
        }
    }
}

/// The two targets' mean per-token NLL after one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetNll {
    /// NLL per token of the new target.
    pub target_new: f32,
    /// NLL per token of the true target.
    pub target_true: f32,
}

/// ROME's scores of one case (each a fraction or a mean probability difference).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CaseScores {
    /// Rewrite prompt: the new target likelier than the true one.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub efficacy: f64,
    /// Mean `p(new) − p(true)` on the rewrite prompt.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub efficacy_magnitude: f64,
    /// Paraphrases: the new target likelier.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub paraphrase: f64,
    /// Mean `p(new) − p(true)` on paraphrases.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub paraphrase_magnitude: f64,
    /// Neighbourhood prompts: the true target still likelier.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub neighborhood: f64,
    /// Mean `p(true) − p(new)` on neighbourhood prompts.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub neighborhood_magnitude: f64,
}

/// Means over cases, and the harmonic mean of the three successes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CounterFactSummary {
    /// The means of the cases' scores.
    pub mean: CaseScores,
    /// Harmonic mean of efficacy, paraphrase and neighbourhood success (ROME's "score").
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub score: f64,
    /// Cases.
    pub cases: usize,
}

pub(crate) fn spaced(t: &str) -> String {
    if t.starts_with(' ') {
        t.to_string()
    } else {
        format!(" {t}")
    }
}

/// For each prompt, the mean NLL per token of `" " + target_new` and of `" " + target_true`
/// after it (ROME's `test_batch_prediction`: the prompt and target tokenized apart).
///
/// # Errors
/// Empty targets or prompts, prompts longer than the context, and forward-pass errors.
pub fn target_nlls(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    prompts: &[String],
    target_new: &str,
    target_true: &str,
) -> Result<Vec<TargetNll>> {
    let targets = [
        tok.encode(&spaced(target_new), false)?,
        tok.encode(&spaced(target_true), false)?,
    ];
    let mut rows = Vec::with_capacity(prompts.len() * 2);
    let mut lens = Vec::with_capacity(prompts.len());
    for p in prompts {
        let ids = tok.encode(p, false)?;
        lens.push(ids.len());
        for t in &targets {
            let row: Vec<u32> = ids.iter().chain(t).copied().collect();
            if row.len() > model.config.n_positions {
                return Err(Error::TooLong {
                    what: format!("the prompt {p:?} with its target"),
                    tokens: row.len(),
                    limit: model.config.n_positions,
                    room: "tokens of the model's context",
                });
            }
            rows.push(row);
        }
    }
    let mut out = Vec::with_capacity(prompts.len());
    for (c, chunk) in rows.chunks(32).enumerate() {
        let batch = TokenBatch::padded(chunk, 0, PaddingSide::Right)?;
        let logits = model.logits(&batch)?;
        let [b, p, _] = logits.dims();
        // Gather, for every row, the log-probability of each target token at the position
        // that predicts it; padded slots read position 0 and are masked out.
        let mut idx = vec![0i64; b * p];
        let mut mask = vec![0f32; b * p];
        for r in 0..b {
            let g = c * 32 + r;
            let (len, t) = (lens[g / 2], &targets[g % 2]);
            for (j, &id) in t.iter().enumerate() {
                idx[r * p + len + j - 1] = id as i64;
                mask[r * p + len + j - 1] = 1.0;
            }
        }
        let device = logits.device();
        let picked = token_log_probs(
            logits,
            Tensor::<2, Int>::from_data(TensorData::new(idx, [b, p]), &device),
        );
        let sums: Vec<f32> = (picked
            * Tensor::<2>::from_data(TensorData::new(mask, [b, p]), &device))
        .sum_dim(1)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("floats");
        for (r, s) in sums.iter().enumerate() {
            let g = c * 32 + r;
            let nll = -s / targets[g % 2].len() as f32;
            if g % 2 == 0 {
                out.push(TargetNll {
                    target_new: nll,
                    target_true: f32::NAN,
                });
            } else {
                out.last_mut().expect("pairs").target_true = nll;
            }
        }
    }
    Ok(out)
}

fn success_and_magnitude(nlls: &[TargetNll], new_wins: bool) -> (f64, f64) {
    if nlls.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = nlls.len() as f64;
    let mut hits = 0.0;
    let mut diff = 0.0;
    for x in nlls {
        let (pn, pt) = ((-x.target_new as f64).exp(), (-x.target_true as f64).exp());
        if new_wins {
            hits += f64::from(u8::from(x.target_true > x.target_new));
            diff += pn - pt;
        } else {
            hits += f64::from(u8::from(x.target_true < x.target_new));
            diff += pt - pn;
        }
    }
    (hits / n, diff / n)
}

/// ROME's scores of `case` on the model as it is (before or after an edit).
///
/// # Errors
/// As [`target_nlls`].
pub fn case_scores(model: &Gpt2, tok: &Gpt2Tokenizer, case: &EditCase) -> Result<CaseScores> {
    let new = &case.request.target_new;
    let score = |prompts: &[String], new_wins: bool| -> Result<(f64, f64)> {
        Ok(success_and_magnitude(
            &target_nlls(model, tok, prompts, new, &case.target_true)?,
            new_wins,
        ))
    };
    let (efficacy, efficacy_magnitude) = score(&[case.request.filled()], true)?;
    let (paraphrase, paraphrase_magnitude) = score(&case.paraphrase_prompts, true)?;
    let (neighborhood, neighborhood_magnitude) = score(&case.neighborhood_prompts, false)?;
    Ok(CaseScores {
        efficacy,
        efficacy_magnitude,
        paraphrase,
        paraphrase_magnitude,
        neighborhood,
        neighborhood_magnitude,
    })
}

/// Means over cases (cases without paraphrase or neighbourhood prompts are left out of those
/// means) and the harmonic mean of the three successes.
pub fn summarize(cases: &[CaseScores]) -> CounterFactSummary {
    let mean = |f: fn(&CaseScores) -> f64| -> f64 {
        let v: Vec<f64> = cases.iter().map(f).filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let m = CaseScores {
        efficacy: mean(|c| c.efficacy),
        efficacy_magnitude: mean(|c| c.efficacy_magnitude),
        paraphrase: mean(|c| c.paraphrase),
        paraphrase_magnitude: mean(|c| c.paraphrase_magnitude),
        neighborhood: mean(|c| c.neighborhood),
        neighborhood_magnitude: mean(|c| c.neighborhood_magnitude),
    };
    CounterFactSummary {
        score: harmonic_mean(&[m.efficacy, m.paraphrase, m.neighborhood]),
        mean: m,
        cases: cases.len(),
    }
}

/// The harmonic mean (0 when any value is 0, NaN when any is NaN).
pub fn harmonic_mean(v: &[f64]) -> f64 {
    if v.iter().any(|x| x.is_nan()) || v.is_empty() {
        return f64::NAN;
    }
    if v.contains(&0.0) {
        return 0.0;
    }
    v.len() as f64 / v.iter().map(|x| 1.0 / x).sum::<f64>()
}

/// Words and punctuation marks of `text` (a simple stand-in for NLTK's `word_tokenize`: runs of
/// letters, digits and apostrophes, and every other non-space character on its own).
pub fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let wordy = c.is_alphanumeric() || c == '\'' || c == '_';
        match (start, wordy) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push(&text[s..i]);
                start = None;
            }
            _ => {}
        }
        if !wordy && !c.is_whitespace() {
            out.push(&text[i..i + c.len_utf8()]);
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// ROME's n-gram entropy of one text: the entropies (bits) of its word bigram and trigram
/// frequency distributions, weighted 2/3 and 4/3, averaged. Repetitive text scores low.
pub fn ngram_entropy(text: &str) -> f64 {
    let w = words(text);
    let mut parts = Vec::new();
    for (n, weight) in [(2usize, 2.0 / 3.0), (3, 4.0 / 3.0)] {
        let mut counts: std::collections::HashMap<&[&str], usize> = Default::default();
        for g in w.windows(n) {
            *counts.entry(g).or_default() += 1;
        }
        let total: usize = counts.values().sum();
        let h: f64 = counts
            .values()
            .map(|&c| {
                let f = c as f64 / total as f64;
                -f * f.log2()
            })
            .sum();
        parts.push(h * weight);
    }
    parts.iter().sum::<f64>() / parts.len() as f64
}

/// ROME's generation fluency: the mean [`ngram_entropy`] of each prompt followed by the
/// model's continuation under `generation` (ROME samples 100 tokens top-k 5; burnlens's
/// `rome` command generates 40 greedily, so that the number is reproducible).
///
/// # Errors
/// [`Error::Empty`] without prompts; tokenizer and generation errors.
pub fn fluency(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    prompts: &[String],
    generation: &GenerationConfig,
) -> Result<f64> {
    if prompts.is_empty() {
        return Err(Error::Empty {
            what: "the generation prompts",
            hint: ": fluency needs at least one prompt to generate from",
        });
    }
    let mut total = 0.0;
    for p in prompts {
        let ids = tok.encode(p, false)?;
        let g = model.generate(&ids, generation)?;
        total += ngram_entropy(&format!("{p}{}", tok.decode(&g[0].tokens)?));
    }
    Ok(total / prompts.len() as f64)
}
