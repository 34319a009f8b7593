//! What a circuit is found for: a batch of clean/corrupted prompt pairs of one token length
//! with an answer and a foil each, the metric read at the last position, and how an edge
//! outside the circuit is ablated.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burnlens_metrics::{kl_divergence, last_position, logit_diff, token_logits};
use burnlens_model::{Gpt2Tokenizer, TokenBatch};

use crate::error::{Error, Result};
use crate::progress::Observer;

/// A behaviour on a dataset: clean prompts, their corrupted twins (the same number of tokens
/// each, and one length for the whole batch), and at the last position the answer the clean
/// prompt should give and the foil the corrupted one gives.
#[derive(Debug, Clone)]
pub struct CircuitTask {
    clean: TokenBatch,
    corrupted: TokenBatch,
    answer: Vec<u32>,
    foil: Vec<u32>,
}

impl CircuitTask {
    /// A task from token ids.
    ///
    /// # Errors
    /// [`Error::Empty`] without pairs; [`Error::BadPair`] naming the pair whose lists do not
    /// match, whose clean and corrupted prompts differ in length, or whose length differs from
    /// the first pair's.
    pub fn new(
        clean: Vec<Vec<u32>>,
        corrupted: Vec<Vec<u32>>,
        answer: Vec<u32>,
        foil: Vec<u32>,
    ) -> Result<Self> {
        if clean.is_empty() {
            return Err(Error::Empty {
                what: "the task",
                hint: ": it needs at least one prompt pair",
            });
        }
        let n = clean.len();
        for (what, len) in [
            ("corrupted prompts", corrupted.len()),
            ("answers", answer.len()),
            ("foils", foil.len()),
        ] {
            if len != n {
                return Err(Error::BadPair {
                    pair: len.min(n),
                    message: format!("{n} clean prompts but {len} {what}"),
                });
            }
        }
        let t = clean[0].len();
        for (i, (c, k)) in clean.iter().zip(&corrupted).enumerate() {
            if c.is_empty() {
                return Err(Error::BadPair {
                    pair: i,
                    message: "the clean prompt has no tokens".into(),
                });
            }
            if c.len() != k.len() {
                return Err(Error::BadPair {
                    pair: i,
                    message: format!(
                        "the clean prompt has {} tokens and the corrupted one {} (they must align)",
                        c.len(),
                        k.len()
                    ),
                });
            }
            if c.len() != t {
                return Err(Error::BadPair {
                    pair: i,
                    message: format!(
                        "{} tokens where pair 0 has {t} (a task's prompts share one length)",
                        c.len()
                    ),
                });
            }
        }
        Ok(Self {
            clean: TokenBatch::new(clean, None)?,
            corrupted: TokenBatch::new(corrupted, None)?,
            answer,
            foil,
        })
    }

    /// A task from prompt strings: `(clean, corrupted, answer, foil)` per pair, the answer and
    /// foil with their leading space (" Paris"), each one token.
    ///
    /// # Errors
    /// As [`CircuitTask::new`], and [`Error::BadPair`] for an answer or foil that is not one
    /// token.
    pub fn from_text<S: AsRef<str>>(tok: &Gpt2Tokenizer, pairs: &[[S; 4]]) -> Result<Self> {
        let (mut clean, mut corrupted, mut answer, mut foil) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, [c, k, a, f]) in pairs.iter().enumerate() {
            clean.push(tok.encode(c.as_ref(), false)?);
            corrupted.push(tok.encode(k.as_ref(), false)?);
            for (what, s, out) in [("answer", a, &mut answer), ("foil", f, &mut foil)] {
                let ids = tok.encode(s.as_ref(), false)?;
                let [id] = ids[..] else {
                    return Err(Error::BadPair {
                        pair: i,
                        message: format!(
                            "the {what} {:?} is {} tokens, not one",
                            s.as_ref(),
                            ids.len()
                        ),
                    });
                };
                out.push(id);
            }
        }
        Self::new(clean, corrupted, answer, foil)
    }

    /// A task from generated pairs whose lengths vary (the dual-setting generator's): the
    /// pairs whose clean and corrupted prompts have one token length, then those of the most
    /// common length (the shortest among equals), at most `n` of them. Returns the task and
    /// how many pairs were left out.
    ///
    /// # Errors
    /// [`Error::Empty`] when no pair's clean and corrupted prompts align; as
    /// [`CircuitTask::from_text`].
    pub fn from_text_of_common_length<S: AsRef<str>>(
        tok: &Gpt2Tokenizer,
        pairs: &[[S; 4]],
        n: usize,
    ) -> Result<(Self, usize)> {
        let mut by_len = std::collections::BTreeMap::<usize, Vec<[&str; 4]>>::new();
        for pair in pairs {
            let [c, k, a, f] = pair.each_ref().map(|s| s.as_ref());
            let len = tok.encode(c, false)?.len();
            if len == tok.encode(k, false)?.len() {
                by_len.entry(len).or_default().push([c, k, a, f]);
            }
        }
        let most = by_len.values().map(Vec::len).max().ok_or(Error::Empty {
            what: "the aligned pairs",
            hint: ": no pair's clean and corrupted prompts have the same number of tokens",
        })?;
        let mut kept = by_len
            .into_values()
            .find(|v| v.len() == most)
            .expect("a group of that size");
        kept.truncate(n);
        let dropped = pairs.len() - kept.len();
        Ok((Self::from_text(tok, &kept)?, dropped))
    }

    /// The clean prompts.
    pub fn clean(&self) -> &TokenBatch {
        &self.clean
    }

    /// The corrupted prompts.
    pub fn corrupted(&self) -> &TokenBatch {
        &self.corrupted
    }

    /// Each pair's answer.
    pub fn answer(&self) -> &[u32] {
        &self.answer
    }

    /// Each pair's foil.
    pub fn foil(&self) -> &[u32] {
        &self.foil
    }

    /// Pairs.
    pub fn len(&self) -> usize {
        self.answer.len()
    }

    /// Whether there is no pair (never: [`CircuitTask::new`] refuses).
    pub fn is_empty(&self) -> bool {
        self.answer.is_empty()
    }
}

/// The number a circuit is judged by, per pair at the last position, averaged over the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitMetric {
    /// `KL(clean ‖ run)` of the next-token distributions (ACDC's default; 0 for the clean
    /// run).
    Kl,
    /// `logit[answer] − logit[foil]`.
    #[default]
    LogitDiff,
    /// The logit difference scaled to 0 at the ablated run and 1 at the clean run.
    NormalizedLogitDiff,
    /// `p(answer) − p(foil)`.
    ProbDiff,
}

impl std::str::FromStr for CircuitMetric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "kl" => Self::Kl,
            "logit-diff" => Self::LogitDiff,
            "normalized-logit-diff" => Self::NormalizedLogitDiff,
            "prob-diff" => Self::ProbDiff,
            _ => {
                return Err(Error::BadOption {
                    option: "metric",
                    value: s.to_string(),
                    expected: "kl, logit-diff, normalized-logit-diff or prob-diff".into(),
                });
            }
        })
    }
}

/// What an edge outside the circuit carries instead of its source's output in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ablation {
    /// The source's output on the pair's corrupted prompt (interchange, EAP-IG's
    /// "patching").
    #[default]
    Corrupted,
    /// The source's output averaged over the task's clean prompts, position by position
    /// (EAP-IG's "mean-positional").
    Mean,
    /// Zero.
    Zero,
}

impl std::str::FromStr for Ablation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "corrupted" => Self::Corrupted,
            "mean" => Self::Mean,
            "zero" => Self::Zero,
            _ => {
                return Err(Error::BadOption {
                    option: "ablation",
                    value: s.to_string(),
                    expected: "corrupted, mean or zero".into(),
                });
            }
        })
    }
}

/// Options of a [`CircuitRun`](crate::circuit::CircuitRun); `Default`: logit difference,
/// corrupted-prompt ablation, 64 rows per forward, no observer.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitOptions {
    /// The metric.
    pub metric: CircuitMetric,
    /// The ablation.
    pub ablation: Ablation,
    /// Rows (edge sets × pairs) per forward when circuits are evaluated.
    pub batch_rows: usize,
    /// Told `(done, total)` as long work proceeds.
    pub observer: Observer,
}

impl Default for CircuitOptions {
    fn default() -> Self {
        Self {
            metric: CircuitMetric::default(),
            ablation: Ablation::default(),
            batch_rows: 64,
            observer: Observer::none(),
        }
    }
}

impl CircuitOptions {
    /// With this metric.
    pub fn metric(mut self, metric: CircuitMetric) -> Self {
        self.metric = metric;
        self
    }

    /// With this ablation.
    pub fn ablation(mut self, ablation: Ablation) -> Self {
        self.ablation = ablation;
        self
    }

    /// With this many rows per forward.
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows;
        self
    }

    /// Reporting progress to `observer`.
    pub fn observer(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }
}

/// The raw per-row metric at the last position: logits `[rows, pos, vocab]` of rows that
/// repeat the task's pairs in order (row `r` is pair `r % n`), `clean_last` the clean run's
/// last-position logits `[n, vocab]`.
///
/// # Shapes
/// - output: `[rows]` (the logit difference for [`CircuitMetric::NormalizedLogitDiff`], which
///   the caller scales)
pub(crate) fn per_row(
    metric: CircuitMetric,
    logits: Tensor<3>,
    clean_last: &Tensor<2>,
    task: &CircuitTask,
) -> Result<Tensor<1>> {
    let rows = logits.dims()[0];
    let n = task.len();
    let reps = rows / n;
    let repeat =
        |ids: &[u32]| -> Vec<u32> { (0..reps).flat_map(|_| ids.iter().copied()).collect() };
    let last = last_position(logits);
    Ok(match metric {
        CircuitMetric::LogitDiff | CircuitMetric::NormalizedLogitDiff => {
            logit_diff(last, &repeat(&task.answer), &repeat(&task.foil))?
        }
        CircuitMetric::ProbDiff => {
            let p = softmax(last, 1);
            token_logits(p.clone(), &repeat(&task.answer))? - token_logits(p, &repeat(&task.foil))?
        }
        CircuitMetric::Kl => {
            let clean = Tensor::cat(vec![clean_last.clone(); reps], 0);
            kl_divergence(clean, last)?.reshape([rows])
        }
    })
}
