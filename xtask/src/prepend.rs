//! `cargo xtask prepend`: the token(s) that, prepended to a target string, minimise its
//! perplexity, searched over the whole vocabulary with a progress bar; result.json and an
//! index.html with the perplexity by round.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burnlens_experiments::{SearchOptions, prepend_losses, prepend_search};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{Page, Series, line_plot_svg};

/// Options of `cargo xtask prepend`.
#[derive(Args)]
pub struct PrependArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The target string whose perplexity is minimised.
    #[arg(long, value_parser = crate::checks::text)]
    pub target: String,
    /// Tokens to prepend (found greedily, one round each).
    #[arg(long, default_value_t = 1, value_parser = crate::checks::positive)]
    pub tokens: usize,
    /// Candidates scored per forward.
    #[arg(long, default_value_t = 128, value_parser = crate::checks::positive)]
    pub batch: usize,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `cargo xtask prepend`.
pub fn run(a: PrependArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (lm, backend) = open(&a.model)?;
    let target = lm.tokenizer.encode(&a.target, false)?;
    let bar = crate::progress::bar(
        0,
        "searching [{bar:40}] {pos}/{len} candidates ({eta})",
        "candidates searched",
    );
    let options = SearchOptions {
        n_tokens: a.tokens,
        batch: a.batch,
        observer: crate::progress::observer(&bar),
    };
    let found = prepend_search(&lm.model, &target, &options)?;
    bar.finish();
    // What the search has to beat: the target after <|endoftext|> alone (GPT-2's document
    // start), where a tokenizer has it.
    let baseline = match lm.tokenizer.endoftext_id() {
        Some(eot) => Some(prepend_losses(&lm.model, &[eot], &[], &target)?[0].exp()),
        None => None,
    };
    let prefix_tokens = lm.tokenizer.str_tokens(&found.prefix)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let result = models::result(
        "prepend_search",
        &lm,
        backend,
        serde_json::json!({
            "target": a.target, "target_ids": target, "batch": a.batch,
            "prefix_ids": found.prefix, "prefix_tokens": prefix_tokens, "rounds": found.rounds,
            "baseline": baseline.map(|p| serde_json::json!({
                "prefix": "<|endoftext|>", "perplexity": p,
            })),
            "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    let last = found.rounds.last().expect("at least one round");
    let perplexities: Vec<f32> = found.rounds.iter().map(|r| r.perplexity).collect();
    let svg = line_plot_svg(
        "Target perplexity as tokens are prepended",
        "round (tokens prepended - 1)",
        "perplexity",
        &[Series {
            name: "perplexity",
            values: &perplexities,
            band: &[],
        }],
    );

    let against = baseline.map_or(String::new(), |p| {
        format!(" (after <|endoftext|> alone: {p:.3})")
    });
    let summary = format!(
        "The prefix {:?} ({} token(s), found greedily over the {}-token vocabulary) gives the target {:?} a perplexity of {:.3}{against}.",
        prefix_tokens.concat(),
        found.prefix.len(),
        lm.model.config.vocab_size,
        a.target,
        last.perplexity
    );
    let mut page = Page::new("Prepend search", &summary);
    let rows: Vec<Vec<String>> = found
        .rounds
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                format!(
                    "{:?}",
                    lm.tokenizer
                        .str_tokens(&[r.token])
                        .map(|t| t[0].clone())
                        .unwrap_or_default()
                ),
                format!("{:.3}", r.perplexity),
            ]
        })
        .collect();
    page.section("The search, round by round")
        .figure("perplexity by round", "perplexity.svg", svg)
        .table(&["round", "token prepended", "target perplexity"], &rows);
    page.write(&a.out, &result, "")?;
    eprintln!("{summary}");
    Ok(())
}
