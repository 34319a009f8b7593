//! Clean/corrupted prompt pairs for activation patching, and their tokenization with the
//! checks the TransformerLens workflow does by hand.

use std::path::Path;

use burnlens_model::{Gpt2Tokenizer, PaddingSide, TokenBatch};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::records::read_records;

/// A clean prompt, its corrupted counterpart, the clean answer and the foil (the corrupted
/// run's answer). `answer` and `foil` are continuations, usually with a leading space
/// (`" Paris"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptPair {
    /// The clean prompt.
    pub clean: String,
    /// The corrupted prompt (same token length after tokenization, or the pair is dropped).
    pub corrupted: String,
    /// The clean answer.
    pub answer: String,
    /// The foil.
    pub foil: String,
}

/// Reads prompt pairs from a `.json` array, a `.jsonl` file or a `.csv` file with the header
/// `clean,corrupted,answer,foil`.
///
/// # Errors
/// A missing file, malformed JSON/CSV, or a record missing a field or with an empty one
/// (named with file and record).
pub fn load_pairs(path: &Path) -> Result<Vec<PromptPair>> {
    let pairs: Vec<PromptPair> = read_records(path)?;
    for (i, p) in pairs.iter().enumerate() {
        for (field, value) in [
            ("clean", &p.clean),
            ("corrupted", &p.corrupted),
            ("answer", &p.answer),
            ("foil", &p.foil),
        ] {
            if value.is_empty() {
                return Err(Error::Record {
                    path: path.to_path_buf(),
                    record: i,
                    message: format!("field `{field}` is empty"),
                });
            }
        }
    }
    Ok(pairs)
}

/// Why a pair was left out of a tokenized set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Clean and corrupted prompts tokenize to different lengths, so positions do not align.
    LengthMismatch {
        /// Tokens in the clean prompt.
        clean: usize,
        /// Tokens in the corrupted prompt.
        corrupted: usize,
    },
    /// The answer or foil is not one token.
    NotSingleToken {
        /// `"answer"` or `"foil"`.
        field: &'static str,
        /// The text.
        text: String,
        /// How many tokens it has.
        tokens: usize,
    },
    /// Clean and corrupted prompts are the same tokens: nothing to patch.
    Identical,
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::LengthMismatch { clean, corrupted } => write!(
                f,
                "clean prompt has {clean} tokens, corrupted {corrupted}: positions do not align"
            ),
            DropReason::NotSingleToken {
                field,
                text,
                tokens,
            } => {
                write!(f, "{field} {text:?} is {tokens} tokens, not one")
            }
            DropReason::Identical => f.write_str("clean and corrupted prompts are the same tokens"),
        }
    }
}

/// A pair that was dropped, by its index in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Index of the pair in the input list.
    pub index: usize,
    /// Why.
    pub reason: DropReason,
}

/// How to tokenize pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PairOptions {
    /// Prepend `<|endoftext|>` to each prompt.
    pub prepend_bos: bool,
    /// Which side pads prompts shorter than the longest.
    pub padding: PaddingSide,
}

/// Tokenized pairs, padded to one length, with what was dropped and why.
#[derive(Debug, Clone)]
pub struct TokenizedPairs {
    /// The kept pairs.
    pub pairs: Vec<PromptPair>,
    /// Each kept pair's index in the input.
    pub indices: Vec<usize>,
    /// Clean prompts `[pairs, len]`.
    pub clean: TokenBatch,
    /// Corrupted prompts, padded exactly as the clean ones.
    pub corrupted: TokenBatch,
    /// The answer token of each pair.
    pub answer_ids: Vec<u32>,
    /// The foil token of each pair.
    pub foil_ids: Vec<u32>,
    /// The position of each row's last real token, where the answer is predicted.
    pub last_positions: Vec<usize>,
    /// The positions (in padded coordinates) where clean and corrupted tokens differ.
    pub diff_positions: Vec<Vec<usize>>,
    /// The pairs left out, with the reason.
    pub dropped: Vec<Dropped>,
}

/// Tokenizes pairs: answers and foils must be single tokens, clean and corrupted prompts must
/// have the same length (pairs that fail are dropped and reported), and prompts are padded
/// to one length with `<|endoftext|>`.
///
/// # Errors
/// Tokenizer errors, or every pair dropped (the reasons are in the message).
pub fn tokenize_pairs(
    pairs: &[PromptPair],
    tokenizer: &Gpt2Tokenizer,
    options: PairOptions,
) -> Result<TokenizedPairs> {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (index, pair) in pairs.iter().enumerate() {
        let clean = tokenizer.encode(&pair.clean, options.prepend_bos)?;
        let corrupted = tokenizer.encode(&pair.corrupted, options.prepend_bos)?;
        let mut single = |field: &'static str, text: &str| -> Result<Option<u32>> {
            let ids = tokenizer.encode(text, false)?;
            if ids.len() == 1 {
                return Ok(Some(ids[0]));
            }
            dropped.push(Dropped {
                index,
                reason: DropReason::NotSingleToken {
                    field,
                    text: text.to_string(),
                    tokens: ids.len(),
                },
            });
            Ok(None)
        };
        let Some(answer) = single("answer", &pair.answer)? else {
            continue;
        };
        let Some(foil) = single("foil", &pair.foil)? else {
            continue;
        };
        let reason = if clean.len() != corrupted.len() {
            Some(DropReason::LengthMismatch {
                clean: clean.len(),
                corrupted: corrupted.len(),
            })
        } else if clean == corrupted {
            Some(DropReason::Identical)
        } else {
            None
        };
        match reason {
            Some(reason) => dropped.push(Dropped { index, reason }),
            None => kept.push((index, clean, corrupted, answer, foil)),
        }
    }
    if kept.is_empty() {
        let why: Vec<String> = dropped
            .iter()
            .map(|d| format!("pair {}: {}", d.index, d.reason))
            .collect();
        return Err(Error::InvalidOption(format!(
            "every prompt pair was dropped ({})",
            why.join("; ")
        )));
    }
    let pad = tokenizer.endoftext_id().unwrap_or(0);
    let cleans: Vec<Vec<u32>> = kept.iter().map(|k| k.1.clone()).collect();
    let corrupts: Vec<Vec<u32>> = kept.iter().map(|k| k.2.clone()).collect();
    let clean = TokenBatch::padded(&cleans, pad, options.padding)?;
    let corrupted = TokenBatch::padded(&corrupts, pad, options.padding)?;
    let len = clean.seq_len();
    let last_positions = cleans
        .iter()
        .map(|c| match options.padding {
            PaddingSide::Left => len - 1,
            PaddingSide::Right => c.len() - 1,
        })
        .collect();
    let diff_positions = (0..kept.len())
        .map(|r| {
            let (a, b) = (clean.row(r), corrupted.row(r));
            (0..len).filter(|&p| a[p] != b[p]).collect()
        })
        .collect();
    Ok(TokenizedPairs {
        pairs: kept.iter().map(|k| pairs[k.0].clone()).collect(),
        indices: kept.iter().map(|k| k.0).collect(),
        answer_ids: kept.iter().map(|k| k.3).collect(),
        foil_ids: kept.iter().map(|k| k.4).collect(),
        clean,
        corrupted,
        last_positions,
        diff_positions,
        dropped,
    })
}
