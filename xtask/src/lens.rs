//! `cargo xtask lens`: the logit lens of a prompt — the top token at every readout and position,
//! and the answer's probability and rank across layers — as result.json, SVGs and index.html.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burnlens_experiments::{TunedLens, logit_lens_with};
use burnlens_model::TokenBatch;
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{self, Heatmap, Page, Scale, Series};

/// Options of `cargo xtask lens`.
#[derive(Args)]
pub struct LensArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(long, value_parser = crate::checks::text)]
    pub prompt: String,
    /// A single-token answer to follow across layers at the last position (e.g. " Paris").
    #[arg(long, value_parser = crate::checks::text)]
    pub answer: Option<String>,
    /// Read through this tuned lens (`cargo xtask tuned-lens` writes one) instead of the
    /// logit lens.
    #[arg(long)]
    pub tuned: Option<PathBuf>,
    /// Candidates kept per readout.
    #[arg(long, default_value_t = 5, value_parser = crate::checks::positive)]
    pub top_k: usize,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `cargo xtask lens`.
pub fn lens(a: LensArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (lm, backend) = open(&a.model)?;
    let ids = lm.tokenizer.encode(&a.prompt, a.model.prepend_bos)?;
    let answer = a
        .answer
        .as_deref()
        .map(|s| lm.tokenizer.single_token(s))
        .transpose()
        .context("--answer must be one token")?;
    let batch = TokenBatch::single(&ids)?;
    let tuned = a
        .tuned
        .as_deref()
        .map(|p| TunedLens::load(p, &lm.model))
        .transpose()?;
    let lens = logit_lens_with(&lm.model, &batch, answer, a.top_k, tuned.as_ref())?;
    let name = if tuned.is_some() {
        "Tuned lens"
    } else {
        "Logit lens"
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let tokens = lm.tokenizer.str_tokens(&ids)?;
    let labels = lens[0].labels.clone();
    let (c, t) = (labels.len(), tokens.len());
    // Readouts as rows (last layer at the top, as the lens is usually drawn), positions as columns.
    let mut values = Vec::with_capacity(c * t);
    let mut texts = Vec::with_capacity(c * t);
    for layer in (0..c).rev() {
        for at in &lens {
            let best = at.top[layer][0];
            values.push(best.prob);
            texts.push(lm.tokenizer.str_tokens(&[best.token])?[0].clone());
        }
    }
    let rows: Vec<String> = labels.iter().rev().cloned().collect();
    let cols: Vec<String> = report::token_labels(&tokens);
    let svg = Heatmap::new(
        &format!("{name}: top next token at each readout (colour: its probability)"),
        &rows,
        &cols,
        &values,
    )
    .axes("position", "readout", "probability of the top token")
    .scale(Scale::Sequential {
        low: 0.0,
        high: values.iter().copied().fold(1e-6, f32::max),
        rgb: (0x08, 0x51, 0x9c),
    })
    .texts(&texts)
    .svg();
    let mut page = Page::new(name, &format!("{:?}", a.prompt));
    let section =
        page.section("The residual stream read out before every block and after the last");
    section.figure("top token by readout and position", "lens.svg", svg);
    if let (Some(text), Some(last)) = (&a.answer, lens.last()) {
        let mut answer_values = Vec::with_capacity(c * t);
        for layer in (0..c).rev() {
            for at in &lens {
                answer_values.push(at.answer_prob[layer]);
            }
        }
        let title = format!("p({text:?}) at each readout and position");
        section.figure(
            "the answer by readout and position",
            "answer_map.svg",
            Heatmap::new(&title, &rows, &cols, &answer_values)
                .axes("position", "readout", "probability of the answer")
                .scale(Scale::Sequential {
                    low: 0.0,
                    high: answer_values.iter().copied().fold(1e-6, f32::max),
                    rgb: (0x00, 0x6d, 0x2c),
                })
                .svg(),
        );
        let svg = report::line_plot_svg_ticks(
            &format!("p({text:?}) at the last position across readouts"),
            "readout",
            "probability",
            &[Series {
                name: "p(answer)",
                values: &last.answer_prob,
                band: &[],
            }],
            &labels,
        );
        section.figure("the answer across layers", "answer.svg", svg);
    }
    let positions: Vec<serde_json::Value> = lens
        .iter()
        .map(|at| {
            let top: Vec<Vec<serde_json::Value>> = at
                .top
                .iter()
                .map(|cands| {
                    cands
                        .iter()
                        .map(|c| {
                            let token = lm.tokenizer.str_tokens(&[c.token]).map(|s| s[0].clone());
                            serde_json::json!({"id": c.token, "token": token.unwrap_or_default(),
                                "prob": c.prob, "logit": c.logit})
                        })
                        .collect()
                })
                .collect();
            serde_json::json!({"position": at.position, "token": tokens[at.position], "top": top,
                "answer_prob": at.answer_prob, "answer_rank": at.answer_rank})
        })
        .collect();
    let result = models::result(
        "logit_lens",
        &lm,
        backend,
        serde_json::json!({
            "prompt": a.prompt, "token_ids": ids, "tokens": tokens, "prepend_bos": a.model.prepend_bos,
            "readouts": labels, "answer": a.answer, "answer_id": answer, "top_k": a.top_k,
            "positions": positions, "tuned_lens": a.tuned,
            "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    page.write(&a.out, &result, "")
}
