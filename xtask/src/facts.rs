//! Facts files for `trace` and `attribute-layers`: ROME's known facts or counterfact-tracing
//! rows, read into one shape.

use std::path::Path;

use anyhow::{Context, Result};
use burnlens_datasets::{load_known_facts, load_tracing};

/// A fact: a prompt, its subject, the expected continuation and, for counterfact rows, the
/// counterfactual one.
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

/// Reads known facts (`subject`, `prompt`, `attribute`) or counterfact-tracing rows
/// (`subject`, `prompt`, `target_true`, `target_false`).
pub fn read_facts(path: &Path) -> Result<Vec<Fact>> {
    Ok(match load_known_facts(path) {
        Ok(known) => known
            .into_iter()
            .map(|f| Fact {
                prompt: f.prompt,
                subject: f.subject,
                // Known facts store the attribute without its leading space.
                target: Some(format!(" {}", f.attribute.trim_start())),
                foil: None,
            })
            .collect(),
        Err(known_err) => load_tracing(path)
            .with_context(|| {
                format!(
                    "{} is neither known facts ({known_err}) nor counterfact-tracing rows",
                    path.display()
                )
            })?
            .into_iter()
            .map(|r| Fact {
                prompt: r.prompt,
                subject: r.subject,
                target: Some(r.target_true),
                foil: Some(r.target_false),
            })
            .collect(),
    })
}
