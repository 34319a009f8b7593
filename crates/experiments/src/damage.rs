//! The damage report: what an edit (ROME, MEMIT) or a fine-tuning did to what the model knew
//! besides the facts it was asked to change.
//!
//! Two numbers, both measured the same way before and after: the top-1 recall of the facts
//! that were *not* edited (the model organism's planted facts under each relation's plain
//! prompt, `"{} lives in"`, less the edited ones), overall and per relation; and the
//! perplexity of held-out filler text (documents of the organism's filler grammar drawn for a
//! seed the training corpus did not use), the language the edit should not have touched.
//! CounterFact's neighbourhood score asks the first question for ten people per case; the
//! damage report asks it of every fact of the world.

use burnlens_datasets::{RELATIONS, World};
use burnlens_metrics::last_position;
use burnlens_model::{Gpt2, Gpt2Tokenizer, PaddingSide, TokenBatch};
use serde::{Deserialize, Serialize};

use crate::counterfact::EditCase;
use crate::error::{Error, Result};

/// Rows of one forward of the damage report.
const CHUNK: usize = 64;

/// One fact the damage report checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFact {
    /// The relation (`city`, `job`, `instrument`).
    pub relation: String,
    /// The subject.
    pub subject: String,
    /// The relation's plain prompt filled with the subject.
    pub prompt: String,
    /// The planted answer's token.
    pub answer: u32,
    /// Whether the subject is one whose other fact was edited.
    pub edited_subject: bool,
}

/// The facts and texts a damage report measures (built once, measured before and after).
#[derive(Debug, Clone)]
pub struct DamageProbe {
    /// The facts checked (the edited ones left out).
    pub facts: Vec<ProbeFact>,
    /// Token ids of the held-out texts (cut to the model's context when measured).
    texts: Vec<Vec<u32>>,
    /// The padding token.
    pad: u32,
}

/// What a damage report measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Damage {
    /// Top-1 recall of the facts not edited.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub fact_recall: f64,
    /// The same per relation, in the organism's relation order (`NaN`, written `null`, for a
    /// relation whose every fact was edited).
    #[serde(deserialize_with = "crate::nullable::named")]
    pub recall_by_relation: Vec<(String, f64)>,
    /// The recall of the other facts of the edited subjects (`NaN`, written `null`, when
    /// nothing was edited): an edit at the subject's representation can rewrite them too.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub recall_edited_subjects: f64,
    /// The recall of the facts of subjects not edited (`NaN`, written `null`, when every
    /// subject was edited).
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub recall_other_subjects: f64,
    /// Facts checked.
    pub facts: usize,
    /// Perplexity of the held-out texts: `exp` of the mean next-token loss over all their
    /// predicted tokens.
    #[serde(deserialize_with = "crate::nullable::f64")]
    pub perplexity: f64,
    /// Tokens predicted.
    pub tokens: usize,
}

impl DamageProbe {
    /// The organism's probe: every planted fact of `world` under its relation's plain prompt,
    /// but for the facts `edited` rewrites (same subject and prompt template), and `n_texts`
    /// filler documents of four sentences drawn for `seed`.
    ///
    /// # Errors
    /// An answer that is not one token, a vocabulary without `<|endoftext|>`, no fact left, or
    /// `n_texts` = 0.
    pub fn organism(
        world: &World,
        tok: &Gpt2Tokenizer,
        edited: &[EditCase],
        n_texts: usize,
        seed: u64,
    ) -> Result<Self> {
        if n_texts == 0 {
            return Err(Error::BadOption {
                option: "n_texts",
                value: "0".into(),
                expected: "at least one held-out text".into(),
            });
        }
        let pad = tok.endoftext_id().ok_or(Error::MissingToken {
            token: "<|endoftext|>",
            needed_for: "the damage report's padding",
        })?;
        let mut facts = Vec::new();
        for p in &world.people {
            for r in &RELATIONS {
                let is_edited = edited
                    .iter()
                    .any(|c| c.request.subject == p.name && c.request.prompt == r.relation_prompt);
                if is_edited {
                    continue;
                }
                facts.push(ProbeFact {
                    edited_subject: edited.iter().any(|c| c.request.subject == p.name),
                    relation: r.id.to_string(),
                    subject: p.name.clone(),
                    prompt: r.relation_prompt.replace("{}", &p.name),
                    answer: tok.single_token(&format!(" {}", p.attributes[r.id]))?,
                });
            }
        }
        if facts.is_empty() {
            return Err(Error::Empty {
                what: "the damage report's set of facts not edited",
                hint: ": every fact was edited",
            });
        }
        let texts = burnlens_datasets::filler_documents(n_texts, 4, seed)
            .iter()
            .map(|t| tok.encode(t, false))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Self { facts, texts, pad })
    }

    /// Measures `model`: the facts' top-1 recall and the texts' perplexity.
    ///
    /// # Errors
    /// Forward errors (a text longer than the model's context, …).
    pub fn measure(&self, model: &Gpt2, tok: &Gpt2Tokenizer) -> Result<Damage> {
        let mut correct = Vec::with_capacity(self.facts.len());
        for chunk in self.facts.chunks(CHUNK) {
            let seqs: Vec<Vec<u32>> = chunk
                .iter()
                .map(|f| tok.encode(&f.prompt, false))
                .collect::<std::result::Result<_, _>>()?;
            let batch = TokenBatch::padded(&seqs, self.pad, PaddingSide::Left)?;
            let top = last_position(model.logits(&batch)?).argmax(1).into_data();
            correct.extend(
                chunk
                    .iter()
                    .zip(top.iter::<i64>())
                    .map(|(f, t)| i64::from(f.answer) == t),
            );
        }
        let recall = |keep: &dyn Fn(&ProbeFact) -> bool| -> f64 {
            let (hit, n) = self
                .facts
                .iter()
                .zip(&correct)
                .filter(|(f, _)| keep(f))
                .fold((0usize, 0usize), |(h, n), (_, &c)| {
                    (h + usize::from(c), n + 1)
                });
            if n == 0 {
                f64::NAN
            } else {
                hit as f64 / n as f64
            }
        };
        let recall_by_relation = RELATIONS
            .iter()
            .map(|r| (r.id.to_string(), recall(&|f| f.relation == r.id)))
            .collect();
        let (mut nll, mut tokens) = (0.0f64, 0.0f64);
        // Each text cut to the model's context (a doubled filler document can exceed it).
        let n_ctx = model.config.n_positions;
        for chunk in self.texts.chunks(CHUNK) {
            let cut: Vec<Vec<u32>> = chunk
                .iter()
                .map(|t| t[..t.len().min(n_ctx)].to_vec())
                .collect();
            let batch = TokenBatch::padded(&cut, self.pad, PaddingSide::Right)?;
            let loss = model.loss(&batch)?;
            nll += f64::from(loss.per_token.sum().into_scalar::<f32>());
            tokens += f64::from(loss.weights.sum().into_scalar::<f32>());
        }
        Ok(Damage {
            fact_recall: recall(&|_| true),
            recall_by_relation,
            recall_edited_subjects: recall(&|f| f.edited_subject),
            recall_other_subjects: recall(&|f| !f.edited_subject),
            facts: self.facts.len(),
            perplexity: (nll / tokens).exp(),
            tokens: tokens as usize,
        })
    }
}
