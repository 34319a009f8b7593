//! `cargo xtask patch`: activation patching sweeps on a clean/corrupted pair or a file of
//! pairs (the metric the mean over the batch), with optional attribution patching beside them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burnlens_datasets::{PairOptions, PromptPair, TokenizedPairs, load_pairs, tokenize_pairs};
use burnlens_experiments::{
    NormalizedLogitDiff, PatchIndex, PatchOptions, Sweep, attribution_patch, patch_sweep_with,
    pearson,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_model::{Gpt2Tokenizer, PaddingSide};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::progress;
use crate::report::{self, Heatmap, Page};

#[derive(Args)]
pub struct PatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The clean prompt.
    #[arg(long, value_parser = crate::checks::text, required_unless_present = "pairs")]
    clean: Option<String>,
    /// The corrupted prompt (must tokenize to the clean prompt's length).
    #[arg(long, value_parser = crate::checks::text, required_unless_present = "pairs")]
    corrupted: Option<String>,
    /// The clean answer (one token, e.g. " Paris").
    #[arg(long, value_parser = crate::checks::text, required_unless_present = "pairs")]
    answer: Option<String>,
    /// The foil (one token).
    #[arg(long, value_parser = crate::checks::text, required_unless_present = "pairs")]
    foil: Option<String>,
    /// A file of prompt pairs instead of one (.json / .jsonl / .csv with clean, corrupted,
    /// answer, foil). Pairs whose clean and corrupted prompts tokenize to different lengths,
    /// or whose answer or foil is not one token, are dropped and listed; the rest are
    /// left-padded into one batch, and the metric is the batch's mean logit difference.
    #[arg(long, conflicts_with_all = ["clean", "corrupted", "answer", "foil"])]
    pairs: Option<PathBuf>,
    /// At most this many pairs of --pairs (the first ones).
    #[arg(long, requires = "pairs", value_parser = crate::checks::positive)]
    limit: Option<usize>,
    /// Comma-separated sweeps: resid_pre, resid_mid, resid_post, attn_out, mlp_out,
    /// head_out_all_pos, head_q_all_pos, head_k_all_pos, head_v_all_pos, head_pattern_all_pos,
    /// head_out_by_pos, head_pattern_by_pos, or block_every / head_all_pos_every.
    #[arg(long, default_value = "block_every", value_delimiter = ',')]
    sweeps: Vec<String>,
    /// Also estimate every sweep by attribution patching (one forward and one backward) and
    /// report its correlation with the exact values.
    #[arg(long)]
    attribution: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs the sweeps and writes the report.
pub fn run(a: PatchArgs) -> Result<()> {
    let started = Instant::now();
    let sweeps = Sweep::parse_list(&a.sweeps.join(","))?;
    let mut pairs = match &a.pairs {
        Some(path) => load_pairs(path)?,
        None => vec![PromptPair {
            clean: a.clean.clone().unwrap_or_default(),
            corrupted: a.corrupted.clone().unwrap_or_default(),
            answer: a.answer.clone().unwrap_or_default(),
            foil: a.foil.clone().unwrap_or_default(),
        }],
    };
    if let Some(n) = a.limit {
        pairs.truncate(n);
    }
    let (lm, backend) = open(&a.model)?;
    // Left padding: every row's last real token is the last position, where the metric reads,
    // and the model takes positions from the mask, so a padded row computes what it would
    // alone.
    let options = PairOptions {
        prepend_bos: a.model.prepend_bos,
        padding: PaddingSide::Left,
    };
    let source = a
        .pairs
        .as_ref()
        .map_or("the prompt pair".to_string(), |p| p.display().to_string());
    let t = tokenize_pairs(&pairs, &lm.tokenizer, options)
        .with_context(|| format!("tokenizing {source}"))?;
    for d in &t.dropped {
        eprintln!("dropped pair {} of {source}: {}", d.index, d.reason);
    }
    if a.pairs.is_some() {
        eprintln!(
            "patching {} of {} pairs in one batch of {} tokens ({} dropped)",
            t.pairs.len(),
            pairs.len(),
            t.clean.seq_len(),
            t.dropped.len()
        );
    }
    let (clean_logits, cache) = run_with_cache(&lm.model, &t.clean, Selector::all())?;
    // Fails early on a degenerate baseline rather than after the sweep.
    let metric = NormalizedLogitDiff::new(
        &t.answer_ids,
        &t.foil_ids,
        clean_logits,
        lm.model.logits(&t.corrupted)?,
    )?;
    let (clean_ld, corrupt_ld) = (metric.clean(), metric.corrupted());
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let str_tokens = position_labels(&lm.tokenizer, &t)?;
    let n_heads = lm.model.config.n_head;
    let pos_labels: Vec<String> = report::token_labels(&str_tokens);
    let attributions = if a.attribution {
        let t0 = Instant::now();
        let r = attribution_patch(&lm.model, &t.corrupted, &cache, &sweeps, &metric)?;
        eprintln!(
            "attribution patching of {} sweeps in {:.2?}",
            sweeps.len(),
            t0.elapsed()
        );
        Some((r, t0.elapsed().as_secs_f64()))
    } else {
        None
    };
    let mut results = Vec::new();
    let mut page = Page::new("Activation patching", "");
    let mut diff_positions: Vec<usize> = t.diff_positions.iter().flatten().copied().collect();
    diff_positions.sort_unstable();
    diff_positions.dedup();
    for (k, sweep) in sweeps.iter().enumerate() {
        let name = sweep.to_string();
        let bar = crate::progress::bar(
            0,
            "{msg:>22} [{bar:40}] {pos}/{len} patches ({eta})",
            "patches",
        );
        bar.set_message(name.clone());
        let sweep_start = Instant::now();
        let r = patch_sweep_with(
            &lm.model,
            &t.corrupted,
            &cache,
            *sweep,
            &metric,
            &PatchOptions::default().observer(progress::observer(&bar)),
        )?;
        bar.finish();
        let seconds = sweep_start.elapsed().as_secs_f64();
        let (rows, cols, values) = as_table(&r, n_heads, &pos_labels);
        let (x, y) = axis_titles(r.sweep.index);
        let marked = if r.sweep.index.axes().contains(&"pos") {
            diff_positions.as_slice()
        } else {
            &[]
        };
        let section = page.section(sweep_group(sweep.index));
        section.figure(
            &format!("{name}: exact"),
            &format!("{name}.svg"),
            Heatmap::new(
                &format!("{name}: normalized logit difference after patching"),
                &rows,
                &cols,
                &values,
            )
            .axes(x, y, "normalized logit difference")
            .mark_cols(marked)
            .svg(),
        );
        let mut entry = serde_json::json!({
            "name": name, "sweep": sweep, "axes": sweep.index.axes(), "shape": r.shape,
            "values": r.values, "seconds": seconds,
        });
        if let Some((attr, attr_seconds)) = &attributions {
            let attr = &attr[k];
            let corr = pearson(&r.values, &attr.values);
            let (rows, cols, values) = as_table(attr, n_heads, &pos_labels);
            section.figure(
                &format!("{name}: attribution patching estimate"),
                &format!("{name}_attribution.svg"),
                Heatmap::new(
                    &format!("{name}: attribution patching (r = {corr:.3} with exact)"),
                    &rows,
                    &cols,
                    &values,
                )
                .axes(x, y, "estimated normalized logit difference")
                .mark_cols(marked)
                .svg(),
            );
            entry["attribution"] = serde_json::json!({
                "values": attr.values, "pearson_with_exact": corr,
                "seconds_all_sweeps": attr_seconds,
            });
        }
        results.push(entry);
    }
    let kept: Vec<serde_json::Value> = t
        .pairs
        .iter()
        .enumerate()
        .map(|(r, p)| {
            serde_json::json!({
                "index": t.indices[r], "clean": p.clean, "corrupted": p.corrupted,
                "answer": p.answer, "foil": p.foil, "clean_ids": t.clean.row(r),
                "corrupted_ids": t.corrupted.row(r), "diff_positions": t.diff_positions[r],
            })
        })
        .collect();
    let dropped: Vec<serde_json::Value> = t
        .dropped
        .iter()
        .map(|d| serde_json::json!({"index": d.index, "reason": d.reason.to_string()}))
        .collect();
    let result = models::result(
        "activation_patching",
        &lm,
        backend,
        serde_json::json!({
            "pairs_file": a.pairs, "n_pairs": t.pairs.len(),
            "clean": t.pairs[0].clean, "corrupted": t.pairs[0].corrupted,
            "answer": t.pairs[0].answer, "foil": t.pairs[0].foil,
            "str_tokens": str_tokens, "clean_ids": t.clean.row(0), "corrupted_ids": t.corrupted.row(0),
            "pairs": kept, "dropped": dropped,
            "metric": "normalized logit difference at the last position: (ld - ld_corrupted) / (ld_clean - ld_corrupted)",
            "clean_logit_diff": clean_ld, "corrupted_logit_diff": corrupt_ld,
            "sweeps": results, "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    let summary = match &a.pairs {
        Some(path) => format!(
            "{} pairs of {} ({} dropped); mean logit difference answer − foil: clean \
             {clean_ld:.4}, corrupted {corrupt_ld:.4}",
            t.pairs.len(),
            path.display(),
            t.dropped.len()
        ),
        None => format!(
            "{:?} vs {:?}; logit difference {:?} − {:?}: clean {clean_ld:.4}, corrupted \
             {corrupt_ld:.4}",
            t.pairs[0].clean, t.pairs[0].corrupted, t.pairs[0].answer, t.pairs[0].foil
        ),
    };
    let pairs_section = page.section(&format!(
        "The {} pairs patched ({} dropped)",
        t.pairs.len(),
        t.dropped.len()
    ));
    pairs_section.note(
        "Marked positions (▲) are where a kept pair's clean and corrupted tokens differ. \
         Prompts are left-padded to one length, so every row's last token is the last position.",
    );
    let rows: Vec<Vec<String>> = t
        .pairs
        .iter()
        .enumerate()
        .map(|(r, p)| {
            vec![
                t.indices[r].to_string(),
                p.clean.clone(),
                p.corrupted.clone(),
                format!("{:?} / {:?}", p.answer, p.foil),
                format!("{:?}", t.diff_positions[r]),
            ]
        })
        .collect();
    pairs_section.table(
        &[
            "pair",
            "clean",
            "corrupted",
            "answer / foil",
            "differing positions",
        ],
        &rows,
    );
    if !t.dropped.is_empty() {
        let rows: Vec<Vec<String>> = t
            .dropped
            .iter()
            .map(|d| vec![d.index.to_string(), d.reason.to_string()])
            .collect();
        pairs_section.table(&["dropped pair", "why"], &rows);
    }
    page.summary(&summary);
    page.write(&a.out, &result, "")
}

/// The section a sweep's figures go in: sweeps of one index shape side by side.
fn sweep_group(index: PatchIndex) -> &'static str {
    match index {
        PatchIndex::LayerPos => "Each layer and position",
        PatchIndex::LayerHead => "Each head, over every position",
        PatchIndex::LayerPosHead => "Each head at each position",
        PatchIndex::LayerHeadDestPos => "Each head at each destination position",
    }
}

/// The x and y axis titles of a sweep's table.
fn axis_titles(index: PatchIndex) -> (&'static str, &'static str) {
    match index {
        PatchIndex::LayerPos => ("position", "layer"),
        PatchIndex::LayerHead => ("head", "layer"),
        PatchIndex::LayerPosHead => ("position", "layer and head"),
        PatchIndex::LayerHeadDestPos => ("destination position", "layer and head"),
    }
}

/// A sweep's result as a 2-D table: rows are layers (or layer·head), columns positions or heads.
fn as_table(
    r: &burnlens_experiments::PatchResult,
    n_heads: usize,
    pos_labels: &[String],
) -> (Vec<String>, Vec<String>, Vec<f32>) {
    let n_layers = r.shape[0];
    match r.sweep.index {
        PatchIndex::LayerPos => (
            (0..n_layers).map(|l| format!("L{l}")).collect(),
            pos_labels.to_vec(),
            r.values.clone(),
        ),
        PatchIndex::LayerHead => (
            (0..n_layers).map(|l| format!("L{l}")).collect(),
            (0..n_heads).map(|h| format!("H{h}")).collect(),
            r.values.clone(),
        ),
        PatchIndex::LayerPosHead | PatchIndex::LayerHeadDestPos => {
            let n_pos = pos_labels.len();
            let mut v = Vec::with_capacity(r.values.len());
            let mut rows = Vec::new();
            for l in 0..n_layers {
                for h in 0..n_heads {
                    rows.push(format!("L{l}H{h}"));
                    for p in 0..n_pos {
                        let idx = match r.sweep.index {
                            PatchIndex::LayerPosHead => [l, p, h],
                            _ => [l, h, p],
                        };
                        v.push(r.get(&idx).unwrap_or(f32::NAN));
                    }
                }
            }
            (rows, pos_labels.to_vec(), v)
        }
    }
}

/// Labels of the batch's positions: the first pair's clean tokens, with `<pad>` where it is
/// padded; where pairs disagree at a position, their distinct tokens joined by `|` (up to
/// three, then `…`), so a dataset of one template reads as its template.
fn position_labels(tok: &Gpt2Tokenizer, t: &TokenizedPairs) -> Result<Vec<String>> {
    let n = t.clean.seq_len();
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); n];
    for r in 0..t.clean.batch_size() {
        let strs = tok.str_tokens(t.clean.row(r))?;
        for (p, s) in strs.into_iter().enumerate() {
            let s = if !t.clean.is_real(r, p) {
                "<pad>".to_string()
            } else {
                s
            };
            if !columns[p].contains(&s) {
                columns[p].push(s);
            }
        }
    }
    Ok(columns
        .into_iter()
        .map(|c| {
            if c.len() > 3 {
                format!("{}|…", c[..3].join("|"))
            } else {
                c.join("|")
            }
        })
        .collect())
}
