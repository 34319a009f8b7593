//! Factual-recall records: CounterFact, the counterfact-tracing columns, and ROME's known
//! facts. Each loader validates that the subject occurs in the prompt.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::records::read_records;

/// A target of a CounterFact rewrite (`{"str": " French", "id": "Q150"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The target text.
    #[serde(rename = "str")]
    pub text: String,
    /// Its Wikidata id, when given.
    #[serde(default)]
    pub id: Option<String>,
}

/// The fact a CounterFact record asks to rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedRewrite {
    /// The prompt with `{}` where the subject goes ("The mother tongue of {} is").
    pub prompt: String,
    /// The subject.
    pub subject: String,
    /// The new (counterfactual) target.
    pub target_new: Target,
    /// The true target.
    pub target_true: Target,
    /// The Wikidata relation, when given.
    #[serde(default)]
    pub relation_id: Option<String>,
}

impl RequestedRewrite {
    /// The prompt with the subject filled in.
    pub fn filled_prompt(&self) -> String {
        self.prompt.replacen("{}", &self.subject, 1)
    }
}

/// A CounterFact record (ROME's `counterfact.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterFactRecord {
    /// Record id.
    pub case_id: u64,
    /// The rewrite.
    pub requested_rewrite: RequestedRewrite,
    /// Paraphrases of the prompt (generalisation).
    #[serde(default)]
    pub paraphrase_prompts: Vec<String>,
    /// Prompts about neighbouring subjects (specificity).
    #[serde(default)]
    pub neighborhood_prompts: Vec<String>,
    /// Prompts for generation tests.
    #[serde(default)]
    pub generation_prompts: Vec<String>,
}

/// A row of the counterfact-tracing table (the columns of the CounterFact set used for causal
/// tracing: the relation template, its split around the subject, and both targets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracingRecord {
    /// The relation template with `{}` for the subject.
    pub relation: String,
    /// The template before the subject.
    pub relation_prefix: String,
    /// The template after the subject.
    pub relation_suffix: String,
    /// The filled prompt.
    pub prompt: String,
    /// The Wikidata relation id.
    pub relation_id: String,
    /// The true target (" French").
    pub target_true: String,
    /// The counterfactual target.
    pub target_false: String,
    /// Wikidata id of the true target.
    pub target_true_id: String,
    /// Wikidata id of the counterfactual target.
    pub target_false_id: String,
    /// The subject.
    pub subject: String,
}

/// A record of ROME's known facts (`known_1000.json`): prompts the model completes correctly.
/// `subject`, `prompt` and `attribute` are required; the rest, which no experiment reads, may
/// be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownFact {
    /// Record id (0 when absent).
    #[serde(default)]
    pub known_id: u64,
    /// The subject.
    pub subject: String,
    /// The attribute the model predicts.
    pub attribute: String,
    /// The template with `{}` for the subject (empty when absent).
    #[serde(default)]
    pub template: String,
    /// The model's prediction (as recorded by ROME; empty when absent).
    #[serde(default)]
    pub prediction: String,
    /// The filled prompt.
    pub prompt: String,
    /// The Wikidata relation id (empty when absent).
    #[serde(default)]
    pub relation_id: String,
}

fn check(path: &Path, record: usize, ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Record {
            path: path.to_path_buf(),
            record,
            message: message(),
        })
    }
}

/// Reads CounterFact records (`.json` array or `.jsonl`).
///
/// # Errors
/// Malformed files, missing fields, and a prompt without the `{}` subject slot or an empty
/// subject (named with file and record).
pub fn load_counterfact(path: &Path) -> Result<Vec<CounterFactRecord>> {
    let records: Vec<CounterFactRecord> = read_records(path)?;
    for (i, r) in records.iter().enumerate() {
        let rw = &r.requested_rewrite;
        check(path, i, !rw.subject.is_empty(), || {
            "requested_rewrite.subject is empty".into()
        })?;
        check(path, i, rw.prompt.contains("{}"), || {
            format!(
                "requested_rewrite.prompt {:?} has no {{}} slot for the subject {:?}",
                rw.prompt, rw.subject
            )
        })?;
    }
    Ok(records)
}

/// Reads records and checks that each one's subject occurs in its prompt.
fn load_with_subject<T: serde::de::DeserializeOwned>(
    path: &Path,
    subject_and_prompt: impl Fn(&T) -> (&str, &str),
) -> Result<Vec<T>> {
    let records: Vec<T> = read_records(path)?;
    for (i, r) in records.iter().enumerate() {
        let (subject, prompt) = subject_and_prompt(r);
        check(
            path,
            i,
            !subject.is_empty() && prompt.contains(subject),
            || format!("subject {subject:?} does not occur in prompt {prompt:?}"),
        )?;
    }
    Ok(records)
}

/// Reads counterfact-tracing rows (`.json`, `.jsonl` or `.csv`).
///
/// # Errors
/// Malformed files, missing fields, and a subject that does not occur in the prompt.
pub fn load_tracing(path: &Path) -> Result<Vec<TracingRecord>> {
    load_with_subject(path, |r: &TracingRecord| {
        (r.subject.as_str(), r.prompt.as_str())
    })
}

/// Reads known facts (`.json` array or `.jsonl`).
///
/// # Errors
/// Malformed files, missing fields, and a subject that does not occur in the prompt.
pub fn load_known_facts(path: &Path) -> Result<Vec<KnownFact>> {
    load_with_subject(path, |r: &KnownFact| {
        (r.subject.as_str(), r.prompt.as_str())
    })
}

/// A fact to trace or attribute: a prompt, its subject, the expected continuation and, for
/// counterfact-tracing rows, the counterfactual one. Known facts and counterfact-tracing rows
/// both read into it ([`load_facts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// The prompt.
    pub prompt: String,
    /// The subject, as it occurs in the prompt.
    pub subject: String,
    /// The expected next word with its leading space (" Paris").
    pub target: Option<String>,
    /// The counterfactual next word (counterfact-tracing rows only).
    pub foil: Option<String>,
}

impl From<KnownFact> for Fact {
    fn from(f: KnownFact) -> Self {
        Fact {
            prompt: f.prompt,
            subject: f.subject,
            // Known facts store the attribute without its leading space.
            target: Some(format!(" {}", f.attribute.trim_start())),
            foil: None,
        }
    }
}

impl From<TracingRecord> for Fact {
    fn from(r: TracingRecord) -> Self {
        Fact {
            prompt: r.prompt,
            subject: r.subject,
            target: Some(r.target_true),
            foil: Some(r.target_false),
        }
    }
}

/// Reads known facts (`subject`, `prompt`, `attribute`, …) or, failing that,
/// counterfact-tracing rows (`subject`, `prompt`, `target_true`, `target_false`, …).
///
/// # Errors
/// [`Error::Format`] naming the file and why it is neither, when it is neither.
pub fn load_facts(path: &Path) -> Result<Vec<Fact>> {
    match load_known_facts(path) {
        Ok(known) => Ok(known.into_iter().map(Fact::from).collect()),
        Err(known_err) => match load_tracing(path) {
            Ok(rows) => Ok(rows.into_iter().map(Fact::from).collect()),
            Err(tracing_err) => Err(Error::Format {
                path: path.to_path_buf(),
                message: format!(
                    "neither known facts ({known_err}) nor counterfact-tracing rows ({tracing_err})"
                ),
            }),
        },
    }
}
