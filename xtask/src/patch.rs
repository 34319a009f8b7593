//! `cargo xtask patch`: activation patching sweeps on a clean/corrupted pair or a file of
//! pairs, with optional attribution patching beside them.
//!
//! A file of pairs is a sweep item by item (`sweep.rs`: `--shard`, `--resume`, `merge`): each
//! kept pair is patched alone, unpadded, and its raw logit differences (answer − foil at its
//! last token) at every site are recorded in items.jsonl. The report right-aligns the pairs to
//! the longest one (the left padding of one batch, so position `p` of the table is every
//! pair's `p`-th token from the end), takes the mean over pairs at every site (a pair shorter
//! than the table leaves its padded positions at its corrupted value: patching padding changes
//! nothing) and normalizes it by the pairs' mean clean and corrupted logit differences: the
//! number one left-padded batch scored by its mean logit difference gives
//! (xtask/tests/it/patch_pairs.rs), now the same whichever shard, resume or order computed
//! each pair.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burnlens_datasets::{PairOptions, PromptPair, TokenizedPairs, load_pairs, tokenize_pairs};
use burnlens_experiments::{
    LastPosition, PatchIndex, PatchOptions, PatchResult, Sweep, attribution_patch,
    patch_sweep_with, pearson,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_metrics::{last_position, logit_diff, normalized_patch_score};
use burnlens_model::burn::tensor::Tensor;
use burnlens_model::{Gpt2, Gpt2Tokenizer, PaddingSide, TokenBatch};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::models::{self, ModelArgs, open};
use crate::report::{self, Heatmap, Page};
use crate::sweep::{self, Manifest, SweepArgs};

/// Options of `cargo xtask patch` (serialised into sweep.json, but for --out and the sweep
/// flags).
#[derive(Args, serde::Serialize)]
pub struct PatchArgs {
    #[command(flatten)]
    #[serde(flatten)]
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
    /// or whose answer or foil is not one token, are dropped and listed; the rest are patched
    /// one by one (a sweep: --shard, --resume) and reported as one left-padded batch scored
    /// by its mean logit difference.
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
    #[serde(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    #[serde(skip)]
    pub sweep: SweepArgs,
}

/// Pairs per forward of the baseline check before the sweep.
const CHECK_BATCH: usize = 64;

/// Runs the sweeps pair by pair (each recorded in items.jsonl as it is done), then writes the
/// report from the items.
pub fn run(a: PatchArgs) -> Result<()> {
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
    let mut sw = sweep::Sweep::open(&a.out, "patch", serde_json::to_value(&a)?, &a.sweep)?;
    let (lm, backend) = open(&a.model)?;
    // Left padding: every row's last real token is the last position, where the metric reads.
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
    // Fails early on a degenerate baseline rather than after the sweep.
    check_baseline(&lm.model, &t)?;
    let dropped: Vec<Value> = t
        .dropped
        .iter()
        .map(|d| json!({"index": d.index, "reason": d.reason.to_string()}))
        .collect();
    sw.begin(
        t.pairs.len(),
        models::header("activation_patching", &lm, backend),
        json!({
            "sweeps": sweeps.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "n_layers": lm.model.config.n_layer, "n_heads": lm.model.config.n_head,
            "seq_len": t.clean.seq_len(), "str_tokens": position_labels(&lm.tokenizer, &t)?,
            "dropped": dropped,
        }),
    )?;
    let todo = sw.todo();
    if a.pairs.is_some() {
        eprintln!(
            "patching {} of {} pairs one by one ({} dropped), reported as one batch of {} tokens",
            todo.len(),
            pairs.len(),
            t.dropped.len(),
            t.clean.seq_len()
        );
    }
    let bar = crate::progress::bar(
        0,
        "{msg:>30} [{bar:40}] {pos}/{len} patches ({eta})",
        "patches",
    );
    for (done, &k) in todo.iter().enumerate() {
        let label = format!("pair {}/{}", done + 1, todo.len());
        let item = patch_pair(&lm.model, &t, k, &sweeps, a.attribution, (&bar, &label))
            .with_context(|| format!("pair {} of {source}", t.indices[k]))?;
        sw.record(k, item)?;
    }
    bar.finish();
    let items = sw.finish()?;
    sweep::write_report(sw.manifest()?, &items, &a.out, finish)
}

/// The logit difference answer − foil at the last position of each row of `logits`, summed.
fn ld_sum(logits: Tensor<3>, answers: &[u32], foils: &[u32]) -> Result<f64> {
    let ld: f32 = logit_diff(last_position(logits), answers, foils)?
        .sum()
        .into_scalar();
    Ok(f64::from(ld))
}

/// The kept pairs' mean clean and corrupted logit differences must differ, or no patch can
/// be normalized: checked in batches of [`CHECK_BATCH`] before any pair is patched.
fn check_baseline(model: &Gpt2, t: &TokenizedPairs) -> Result<()> {
    let n = t.pairs.len();
    let (mut clean, mut corrupted) = (0.0f64, 0.0f64);
    for start in (0..n).step_by(CHECK_BATCH) {
        let rows = start..(start + CHECK_BATCH).min(n);
        let (answers, foils) = (&t.answer_ids[rows.clone()], &t.foil_ids[rows.clone()]);
        clean += ld_sum(model.logits(&t.clean.rows(rows.clone())?)?, answers, foils)?;
        corrupted += ld_sum(model.logits(&t.corrupted.rows(rows)?)?, answers, foils)?;
    }
    let (clean, corrupted) = ((clean / n as f64) as f32, (corrupted / n as f64) as f32);
    let probe = Tensor::<1>::from_floats([corrupted], &model.device());
    normalized_patch_score(probe, clean, corrupted)?;
    Ok(())
}

/// Row `r` of a left-padded batch without its padding.
fn real_tokens(batch: &TokenBatch, r: usize) -> Vec<u32> {
    let row = batch.row(r);
    (0..row.len())
        .filter(|&p| batch.is_real(r, p))
        .map(|p| row[p])
        .collect()
}

/// Patches kept pair `r` alone: its clean and corrupted logit differences and, for every
/// sweep, the raw logit difference after each patch (and its attribution estimate, in logit
/// difference units, without the corrupted baseline).
fn patch_pair(
    model: &Gpt2,
    t: &TokenizedPairs,
    r: usize,
    sweeps: &[Sweep],
    attribution: bool,
    (bar, label): (&indicatif::ProgressBar, &str),
) -> Result<Value> {
    let t0 = Instant::now();
    let clean = TokenBatch::single(&real_tokens(&t.clean, r))?;
    let corrupted = TokenBatch::single(&real_tokens(&t.corrupted, r))?;
    let (answer, foil) = ([t.answer_ids[r]], [t.foil_ids[r]]);
    let (clean_logits, cache) = run_with_cache(model, &clean, Selector::all())?;
    let clean_ld = ld_sum(clean_logits, &answer, &foil)? as f32;
    let corrupted_ld = ld_sum(model.logits(&corrupted)?, &answer, &foil)? as f32;
    let metric = LastPosition::new(|logits: Tensor<3>| {
        Ok(logit_diff(last_position(logits), &answer, &foil)?.mean())
    });
    let mut out = Vec::with_capacity(sweeps.len());
    for sweep in sweeps {
        let name = sweep.to_string();
        bar.set_message(format!("{label} {name}"));
        let t1 = Instant::now();
        let result = patch_sweep_with(
            model,
            &corrupted,
            &cache,
            *sweep,
            &metric,
            &PatchOptions::default().observer(crate::progress::observer(bar)),
        )?;
        out.push(json!({
            "name": name, "shape": result.shape, "values": result.values,
            "seconds": t1.elapsed().as_secs_f64(),
        }));
    }
    let mut item = json!({
        "pair": t.indices[r], "clean": t.pairs[r].clean, "corrupted": t.pairs[r].corrupted,
        "answer": t.pairs[r].answer, "foil": t.pairs[r].foil, "clean_ids": t.clean.row(r),
        "corrupted_ids": t.corrupted.row(r), "diff_positions": t.diff_positions[r],
        "len": clean.seq_len(), "clean_logit_diff": clean_ld,
        "corrupted_logit_diff": corrupted_ld, "sweeps": out,
    });
    if attribution {
        let t1 = Instant::now();
        let estimates = attribution_patch(model, &corrupted, &cache, sweeps, &metric)?;
        item["attribution"] = json!({
            "values": estimates.into_iter().map(|e| e.values).collect::<Vec<_>>(),
            "seconds": t1.elapsed().as_secs_f64(),
        });
    }
    item["seconds"] = json!(t0.elapsed().as_secs_f64());
    Ok(item)
}

/// What `patch` computed before the first pair, as `sweep.json` keeps it.
#[derive(Deserialize)]
struct Prep {
    sweeps: Vec<String>,
    n_layers: usize,
    n_heads: usize,
    seq_len: usize,
    str_tokens: Vec<String>,
    dropped: Vec<Value>,
}

/// One sweep of one pair, as `items.jsonl` keeps it.
#[derive(Deserialize)]
struct PairSweep {
    values: Vec<f32>,
    seconds: f64,
}

/// The attribution estimates of one pair.
#[derive(Deserialize)]
struct PairAttribution {
    values: Vec<Vec<f32>>,
    seconds: f64,
}

/// One patched pair, as `items.jsonl` keeps it.
#[derive(Deserialize)]
struct PairItem {
    pair: usize,
    clean: String,
    corrupted: String,
    answer: String,
    foil: String,
    clean_ids: Vec<u32>,
    corrupted_ids: Vec<u32>,
    diff_positions: Vec<usize>,
    len: usize,
    clean_logit_diff: f32,
    corrupted_logit_diff: f32,
    sweeps: Vec<PairSweep>,
    attribution: Option<PairAttribution>,
}

/// A pair's attribution estimates (the report checks that every pair has them first).
fn attribution_of(p: &PairItem) -> &PairAttribution {
    p.attribution.as_ref().expect("checked before")
}

/// The cells of a pair of `len` tokens in a sweep whose table has `shape`.
fn own_cells(shape: &[usize], pos_axis: Option<usize>, len: usize) -> usize {
    (0..shape.len())
        .map(|d| if Some(d) == pos_axis { len } else { shape[d] })
        .product()
}

/// The sum over pairs of one sweep's values, each pair right-aligned to the table's `shape`
/// (its position axis, if any, is the last `len` of the table's): `own(pair, cell)` is the
/// pair's value at its own flat index, `pad(pair)` the value at a position it does not have.
fn mean_over_pairs(
    shape: &[usize],
    pos_axis: Option<usize>,
    pairs: &[&PairItem],
    own: impl Fn(usize, usize) -> f32,
    pad: impl Fn(usize) -> f32,
) -> Vec<f64> {
    let total: usize = shape.iter().product();
    let mut sums = vec![0.0f64; total];
    let mut idx = vec![0usize; shape.len()];
    for (i, pair) in pairs.iter().enumerate() {
        let offset = pos_axis.map_or(0, |p| shape[p].saturating_sub(pair.len));
        for (flat, acc) in sums.iter_mut().enumerate() {
            let mut rest = flat;
            for d in (0..shape.len()).rev() {
                idx[d] = rest % shape[d];
                rest /= shape[d];
            }
            let value = match pos_axis {
                Some(p) if idx[p] < offset => pad(i),
                _ => {
                    let mut local = 0;
                    for d in 0..shape.len() {
                        let n = if Some(d) == pos_axis {
                            pair.len
                        } else {
                            shape[d]
                        };
                        let x = if Some(d) == pos_axis {
                            idx[d] - offset
                        } else {
                            idx[d]
                        };
                        local = local * n + x;
                    }
                    own(i, local)
                }
            };
            *acc += f64::from(value);
        }
    }
    sums
}

/// Writes `patch`'s report (result.json, the SVGs, index.html) from its items: what a run
/// does at its end and `merge` does for the shards' items.
///
/// # Errors
/// An item or `sweep.json` that does not parse, a degenerate baseline, a file that cannot be
/// written.
pub fn finish(m: &Manifest, items: &[sweep::Item], out: &Path) -> Result<()> {
    let prep: Prep = serde_json::from_value(m.prep.clone()).context("sweep.json: patch's prep")?;
    let sweep::Parsed {
        items: parsed,
        seconds_total,
        ..
    } = sweep::parse_items::<PairItem>(items)?;
    let pairs: Vec<&PairItem> = parsed.iter().map(|(_, p)| p).collect();
    let n = pairs.len() as f64;
    let clean_ld = (pairs
        .iter()
        .map(|p| f64::from(p.clean_logit_diff))
        .sum::<f64>()
        / n) as f32;
    let corrupt_ld = (pairs
        .iter()
        .map(|p| f64::from(p.corrupted_logit_diff))
        .sum::<f64>()
        / n) as f32;
    if !(clean_ld - corrupt_ld).is_finite() || (clean_ld - corrupt_ld).abs() < 1e-6 {
        bail!(
            "the pairs' mean clean and corrupted logit differences are equal ({clean_ld} and \
             {corrupt_ld}): no patch can be normalized"
        );
    }
    let denom = f64::from(clean_ld - corrupt_ld);
    if let Some(p) = pairs.iter().find(|p| p.len > prep.seq_len) {
        bail!(
            "items.jsonl: pair {} has {} tokens, more than the {} of the sweep's batch",
            p.pair,
            p.len,
            prep.seq_len
        );
    }
    let (n_heads, seq_len) = (prep.n_heads, prep.seq_len);
    let pos_labels: Vec<String> = report::token_labels(&prep.str_tokens);
    let mut diff_positions: Vec<usize> = pairs
        .iter()
        .flat_map(|p| p.diff_positions.iter().copied())
        .collect();
    diff_positions.sort_unstable();
    diff_positions.dedup();
    let has_attribution = m.options.get("attribution") == Some(&Value::Bool(true));
    if let Some(p) = pairs
        .iter()
        .find(|p| p.attribution.is_some() != has_attribution)
    {
        bail!(
            "items.jsonl: pair {} {} attribution estimates, unlike the sweep's options",
            p.pair,
            if has_attribution { "lacks" } else { "has" }
        );
    }
    let mut results = Vec::new();
    let mut page = Page::new("Activation patching", "");
    for (i, name) in prep.sweeps.iter().enumerate() {
        let sweep: Sweep = name.parse()?;
        let shape = sweep.index.shape(prep.n_layers, n_heads, seq_len);
        let pos_axis = sweep.index.axes().iter().position(|a| a.ends_with("pos"));
        let fits = |p: &PairItem, values: Option<&Vec<f32>>| {
            values.is_some_and(|v| v.len() == own_cells(&shape, pos_axis, p.len))
        };
        if let Some(p) = pairs
            .iter()
            .find(|p| !fits(p, p.sweeps.get(i).map(|s| &s.values)))
        {
            bail!(
                "items.jsonl: pair {} has no values of {name} for its tokens",
                p.pair
            );
        }
        let exact = mean_over_pairs(
            &shape,
            pos_axis,
            &pairs,
            |k, cell| pairs[k].sweeps[i].values[cell],
            |k| pairs[k].corrupted_logit_diff,
        );
        let result = PatchResult {
            sweep,
            shape: shape.clone(),
            values: exact
                .iter()
                .map(|s| ((s / n - f64::from(corrupt_ld)) / denom) as f32)
                .collect(),
        };
        let seconds: f64 = pairs.iter().map(|p| p.sweeps[i].seconds).sum();
        let (rows, cols, values) = as_table(&result, n_heads, &pos_labels);
        let (x, y) = axis_titles(sweep.index);
        let marked = if pos_axis.is_some() {
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
        let mut entry = json!({
            "name": name, "sweep": sweep, "axes": sweep.index.axes(), "shape": shape,
            "values": result.values, "seconds": seconds,
        });
        if has_attribution {
            if let Some(p) = pairs
                .iter()
                .find(|p| !fits(p, p.attribution.as_ref().and_then(|a| a.values.get(i))))
            {
                bail!(
                    "items.jsonl: pair {} has no attribution estimate of {name} for its tokens",
                    p.pair
                );
            }
            let sums = mean_over_pairs(
                &shape,
                pos_axis,
                &pairs,
                |k, cell| attribution_of(pairs[k]).values[i][cell],
                |_| 0.0,
            );
            let estimate = PatchResult {
                sweep,
                shape: shape.clone(),
                values: sums.iter().map(|s| (s / n / denom) as f32).collect(),
            };
            let corr = pearson(&result.values, &estimate.values);
            let (rows, cols, values) = as_table(&estimate, n_heads, &pos_labels);
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
            let attr_seconds: f64 = pairs.iter().map(|p| attribution_of(p).seconds).sum();
            entry["attribution"] = json!({
                "values": estimate.values, "pearson_with_exact": corr,
                "seconds_all_sweeps": attr_seconds,
            });
        }
        results.push(entry);
    }
    let kept: Vec<Value> = pairs
        .iter()
        .map(|p| {
            json!({
                "index": p.pair, "clean": p.clean, "corrupted": p.corrupted,
                "answer": p.answer, "foil": p.foil, "clean_ids": p.clean_ids,
                "corrupted_ids": p.corrupted_ids, "diff_positions": p.diff_positions,
            })
        })
        .collect();
    let pairs_file = m.options.get("pairs").cloned().unwrap_or(Value::Null);
    let first = pairs[0];
    let result = models::result_from(
        &m.header,
        json!({
            "pairs_file": pairs_file, "n_pairs": pairs.len(),
            "clean": first.clean, "corrupted": first.corrupted,
            "answer": first.answer, "foil": first.foil,
            "str_tokens": prep.str_tokens, "clean_ids": first.clean_ids,
            "corrupted_ids": first.corrupted_ids,
            "pairs": kept, "dropped": prep.dropped,
            "metric": "normalized logit difference at the last position: (ld - ld_corrupted) / (ld_clean - ld_corrupted), ld the mean over pairs",
            "clean_logit_diff": clean_ld, "corrupted_logit_diff": corrupt_ld,
            "sweeps": results, "seconds_total": seconds_total, "shard": m.shard,
            "n_items": m.n_items,
        }),
    );
    let summary = match pairs_file.as_str() {
        Some(path) => format!(
            "{} pairs of {path} ({} dropped); mean logit difference answer − foil: clean \
             {clean_ld:.4}, corrupted {corrupt_ld:.4}",
            pairs.len(),
            prep.dropped.len()
        ),
        None => format!(
            "{:?} vs {:?}; logit difference {:?} − {:?}: clean {clean_ld:.4}, corrupted \
             {corrupt_ld:.4}",
            first.clean, first.corrupted, first.answer, first.foil
        ),
    };
    let pairs_section = page.section(&format!(
        "The {} pairs patched ({} dropped)",
        pairs.len(),
        prep.dropped.len()
    ));
    pairs_section.note(
        "Marked positions (▲) are where a kept pair's clean and corrupted tokens differ. \
         Prompts are left-padded to one length, so every row's last token is the last position.",
    );
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|p| {
            vec![
                p.pair.to_string(),
                p.clean.clone(),
                p.corrupted.clone(),
                format!("{:?} / {:?}", p.answer, p.foil),
                format!("{:?}", p.diff_positions),
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
    if !prep.dropped.is_empty() {
        let rows: Vec<Vec<String>> = prep
            .dropped
            .iter()
            .map(|d| {
                vec![
                    d["index"].to_string(),
                    d["reason"].as_str().unwrap_or_default().to_string(),
                ]
            })
            .collect();
        pairs_section.table(&["dropped pair", "why"], &rows);
    }
    page.summary(&summary);
    page.write(out, &result, "")
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
