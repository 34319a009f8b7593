//! `cargo xtask patch`: activation patching sweeps on a clean/corrupted pair, with optional
//! attribution patching beside them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burnlens_datasets::{PairOptions, PromptPair, tokenize_pairs};
use burnlens_experiments::{
    NormalizedLogitDiff, PatchIndex, PatchOptions, Sweep, attribution_patch, patch_sweep_with,
    pearson,
};
use burnlens_hooks::{Selector, run_with_cache};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::{progress, report};

#[derive(Args)]
pub struct PatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The clean prompt.
    #[arg(long, value_parser = crate::checks::text)]
    clean: String,
    /// The corrupted prompt (must tokenize to the clean prompt's length).
    #[arg(long, value_parser = crate::checks::text)]
    corrupted: String,
    /// The clean answer (one token, e.g. " Paris").
    #[arg(long, value_parser = crate::checks::text)]
    answer: String,
    /// The foil (one token).
    #[arg(long, value_parser = crate::checks::text)]
    foil: String,
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
    let (lm, backend) = open(&a.model)?;
    let pair = PromptPair {
        clean: a.clean.clone(),
        corrupted: a.corrupted.clone(),
        answer: a.answer.clone(),
        foil: a.foil.clone(),
    };
    let options = PairOptions {
        prepend_bos: a.model.prepend_bos,
        ..PairOptions::default()
    };
    let t = tokenize_pairs(std::slice::from_ref(&pair), &lm.tokenizer, options)?;
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
    let str_tokens = lm.tokenizer.str_tokens(t.clean.row(0))?;
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
    let mut figures = Vec::new();
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
        let file = format!("{name}.svg");
        let title = format!("{name}: normalized logit difference after patching");
        std::fs::write(
            a.out.join(&file),
            report::heatmap_svg(&title, &rows, &cols, &values),
        )?;
        figures.push((name.clone(), file));
        let mut entry = serde_json::json!({
            "name": name, "sweep": sweep, "axes": sweep.index.axes(), "shape": r.shape,
            "values": r.values, "seconds": seconds,
        });
        if let Some((attr, attr_seconds)) = &attributions {
            let attr = &attr[k];
            let corr = pearson(&r.values, &attr.values);
            let (rows, cols, values) = as_table(attr, n_heads, &pos_labels);
            let file = format!("{name}_attribution.svg");
            let title = format!("{name}: attribution patching estimate (r = {corr:.3} with exact)");
            std::fs::write(
                a.out.join(&file),
                report::heatmap_svg(&title, &rows, &cols, &values),
            )?;
            figures.push((format!("{name} (attribution patching)"), file));
            entry["attribution"] = serde_json::json!({
                "values": attr.values, "pearson_with_exact": corr,
                "seconds_all_sweeps": attr_seconds,
            });
        }
        results.push(entry);
    }
    let result = models::result(
        "activation_patching",
        &lm,
        backend,
        serde_json::json!({
            "clean": a.clean, "corrupted": a.corrupted, "answer": a.answer, "foil": a.foil,
            "str_tokens": str_tokens, "clean_ids": t.clean.row(0), "corrupted_ids": t.corrupted.row(0),
            "metric": "normalized logit difference at the last position: (ld - ld_corrupted) / (ld_clean - ld_corrupted)",
            "clean_logit_diff": clean_ld, "corrupted_logit_diff": corrupt_ld,
            "sweeps": results, "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    let summary = format!(
        "{:?} vs {:?}; logit difference{:?} − {:?}: clean {clean_ld:.4}, corrupted {corrupt_ld:.4}",
        a.clean, a.corrupted, a.answer, a.foil
    );
    report::write_report(&a.out, &result, "Activation patching", &summary, &figures)
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
