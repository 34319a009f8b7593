//! `cargo xtask probe`: the top-k candidates at every position of a prompt (beside the actual
//! next token), the Jaccard similarity of two prompts' candidate pools, and how the prediction
//! moves when two tokens' input embeddings are swapped or one position's embedding gets noise.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burnlens_experiments::{EmbeddingEdit, candidate_pools, edit_embeddings, pool_jaccard};
use burnlens_metrics::Candidate;
use burnlens_model::Gpt2Tokenizer;
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::Page;

/// Options of `cargo xtask probe`.
#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(long, value_parser = crate::checks::text)]
    pub prompt: String,
    /// Candidates per position.
    #[arg(long, default_value_t = 5, value_parser = crate::checks::positive)]
    pub top_k: usize,
    /// A second prompt whose next-token pool is compared with the prompt's (Jaccard).
    #[arg(long, value_parser = crate::checks::text)]
    pub compare: Option<String>,
    /// Swap the input embeddings of these two single tokens, e.g. " Paris, Rome".
    #[arg(long, value_delimiter = ',')]
    pub swap: Vec<String>,
    /// Add noise to the token embedding at this position.
    #[arg(long)]
    pub noise_position: Option<usize>,
    /// Standard deviation of that noise.
    #[arg(long, default_value_t = 1.0, value_parser = crate::checks::non_negative_f64)]
    pub noise_std: f64,
    /// Seed of that noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

fn named(tok: &Gpt2Tokenizer, cands: &[Candidate]) -> Result<Vec<serde_json::Value>> {
    cands
        .iter()
        .map(|c| {
            Ok(
                serde_json::json!({"id": c.token, "token": tok.str_tokens(&[c.token])?[0],
                "prob": c.prob, "logit": c.logit}),
            )
        })
        .collect()
}

/// Candidates as the report shows them: `" Paris" 0.912, " Rome" 0.031, …`.
fn shown(tok: &Gpt2Tokenizer, cands: &[Candidate]) -> Result<String> {
    let v: Vec<String> = cands
        .iter()
        .map(|c| {
            Ok(format!(
                "{:?} {:.3}",
                tok.str_tokens(&[c.token])?[0],
                c.prob
            ))
        })
        .collect::<Result<_>>()?;
    Ok(v.join(", "))
}

/// Runs `cargo xtask probe`.
pub fn run(a: ProbeArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (lm, backend) = open(&a.model)?;
    let tok = &lm.tokenizer;
    let ids = tok.encode(&a.prompt, a.model.prepend_bos)?;
    let tokens = tok.str_tokens(&ids)?;
    let pools = candidate_pools(&lm.model, &ids, a.top_k)?;
    let mut page = Page::new("Probe", &format!("{:?}", a.prompt));
    let mut rows = Vec::new();
    let mut positions = Vec::new();
    for p in &pools {
        let top = named(tok, &p.top)?;
        let next = p
            .actual_next
            .map(|n| tok.str_tokens(&[n]).map(|s| s[0].clone()))
            .transpose()?;

        rows.push(vec![
            p.position.to_string(),
            format!("{:?}", tokens[p.position]),
            format!(
                "{} ({})",
                next.as_ref().map_or("–".into(), |n| format!("{n:?}")),
                p.actual_rank.map_or("–".into(), |r| r.to_string())
            ),
            shown(tok, &p.top)?,
        ]);
        positions.push(
            serde_json::json!({"position": p.position, "token": tokens[p.position],
            "actual_next": next, "actual_rank": p.actual_rank, "top": top}),
        );
    }
    let top_header = format!("top {} (probability)", a.top_k);
    page.section("Candidates at every position").table(
        &["position", "token", "actual next (rank)", &top_header],
        &rows,
    );
    let mut result = models::result(
        "probe",
        &lm,
        backend,
        serde_json::json!({
            "prompt": a.prompt, "token_ids": ids, "tokens": tokens, "top_k": a.top_k,
            "positions": positions,
        }),
    );
    if let Some(other) = &a.compare {
        let other_ids = tok.encode(other, a.model.prepend_bos)?;
        let (j, pa, pb) = pool_jaccard(&lm.model, &ids, &other_ids, a.top_k)?;
        println!("Jaccard of the top-{} pools: {j:.3}", a.top_k);
        let (pool, other_pool) = (tok.str_tokens(&pa)?, tok.str_tokens(&pb)?);
        page.section("Candidate pools of two prompts")
            .note(&format!(
                "Jaccard of the top-{} next-token pools of the prompt and {other:?}: {j:.3}",
                a.top_k
            ))
            .table(
                &["prompt", "pool"],
                &[
                    vec![format!("{:?}", a.prompt), format!("{pool:?}")],
                    vec![format!("{other:?}"), format!("{other_pool:?}")],
                ],
            );
        result["compare"] = serde_json::json!({"prompt": other, "jaccard": j,
            "pool": pool, "other_pool": other_pool});
    }
    let mut edits = Vec::new();
    if !a.swap.is_empty() {
        let [x, y] = a.swap.as_slice() else {
            anyhow::bail!(
                "--swap takes two tokens separated by a comma, got {:?}",
                a.swap
            );
        };
        let (x, y) = (
            tok.single_token(x).context("--swap")?,
            tok.single_token(y).context("--swap")?,
        );
        edits.push(("swap", EmbeddingEdit::Swap(x, y)));
    }
    if let Some(p) = a.noise_position {
        edits.push((
            "noise",
            EmbeddingEdit::Noise {
                positions: vec![p],
                std: a.noise_std,
                seed: a.seed,
            },
        ));
    }
    let mut edit_json = Vec::new();
    for (name, edit) in &edits {
        let (report, _) = edit_embeddings(&lm.model, &ids, edit, a.top_k)?;
        println!(
            "{name}: KL(before ‖ after) {:.4}, Jaccard of top-{} {:.3}",
            report.kl, a.top_k, report.jaccard
        );
        page.section(&format!("Embedding edit: {name}"))
            .note(&format!(
                "{edit:?}: KL(before ‖ after) = {:.4}; Jaccard of the top-{} = {:.3}",
                report.kl, a.top_k, report.jaccard
            ))
            .table(
                &["", "top next tokens at the last position"],
                &[
                    vec!["before".into(), shown(tok, &report.before)?],
                    vec!["after".into(), shown(tok, &report.after)?],
                ],
            );
        edit_json.push(
            serde_json::json!({"edit": edit, "kl": report.kl, "jaccard": report.jaccard,
            "before": named(tok, &report.before)?, "after": named(tok, &report.after)?}),
        );
    }
    result["edits"] = serde_json::json!(edit_json);
    result["seconds_total"] = serde_json::json!(started.elapsed().as_secs_f64());
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    page.write(&a.out, &result, "")
}
