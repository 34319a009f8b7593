//! `cargo xtask memit`: MEMIT edits of CounterFact cases in batches (each batch written at
//! once, evaluated, reverted), with ROME's efficacy, paraphrase and neighbourhood scores before
//! and after, their harmonic mean, optionally the fluency of generated text, and each layer's
//! update norm; a report (result.json, index.html) like `rome`'s.
//!
//! A sweep item by item (`sweep.rs`: --shard, --resume, merge), an item being a batch: the
//! batches are independent (each is reverted before the next), so shards edit different
//! batches and the report joins their cases.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_datasets::{World, load_counterfact};
use burnlens_experiments::{
    CaseScores, EditCase, MemitConfig, StepObserver, case_scores, fluency, memit_context_templates,
    memit_edit,
};
use clap::Args;
use serde_json::{Value, json};

use crate::models::{self, ModelArgs, open};
use crate::sweep::{Manifest, Sweep, SweepArgs};

/// Options of `cargo xtask memit` (serialised into sweep.json, but for --out and the sweep
/// flags).
#[derive(Args, serde::Serialize)]
pub struct MemitArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// CounterFact records (ROME's `counterfact.json` layout). Without it, the cases are the
    /// planted facts of one relation of the model organism (--relation), for distinct people,
    /// each with neighbourhood prompts from people outside the batch.
    #[arg(long)]
    pub counterfact: Option<PathBuf>,
    /// The organism's relation rewritten (city, job or instrument).
    #[arg(long, default_value = "city", conflicts_with = "counterfact")]
    pub relation: String,
    /// Cases to edit (the first N records, or N people drawn; default: every person of the
    /// organism, or every record of --counterfact).
    #[arg(long, value_parser = crate::checks::positive)]
    pub cases: Option<usize>,
    /// Cases written at once (default: all of them): consecutive batches, each edited,
    /// evaluated and reverted before the next.
    #[arg(long, value_parser = crate::checks::positive)]
    pub batch: Option<usize>,
    /// Seed of the drawn cases and of the context templates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The edited layers: `A-B` or `A,B,…` (default: MEMIT's 13-17 on gpt2-xl, layer 0 on
    /// the organism, else the layers n/4 … n/4 + 4 clipped to the model).
    #[arg(long, value_parser = parse_layers)]
    pub layers: Option<Layers>,
    /// Adam steps of each target optimisation.
    #[arg(long, default_value_t = 20, value_parser = crate::checks::positive)]
    pub steps: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 0.5, value_parser = crate::checks::positive_f64)]
    pub v_lr: f64,
    /// Weight of the essence KL term.
    #[arg(long, default_value_t = 0.0625, value_parser = crate::checks::non_negative_f64)]
    pub kl_factor: f64,
    /// δ is clamped to this multiple of ‖z₀‖ (default: the preset's).
    #[arg(long, value_parser = crate::checks::positive_f64)]
    pub clamp_norm_factor: Option<f64>,
    /// λ, the weight of the keys' second moment against the new keys (default: the
    /// preset's).
    #[arg(long, value_parser = crate::checks::positive_f64)]
    pub mom2_update_weight: Option<f64>,
    /// Texts for the keys' second moments (.txt paragraphs, .jsonl/.json `text` fields).
    /// Without it: the organism's corpus (from its manifest).
    #[arg(long)]
    pub mom2_texts: Option<PathBuf>,
    /// Texts counted for the second moments at most.
    #[arg(long, default_value_t = 2000, value_parser = crate::checks::positive)]
    pub mom2_samples: usize,
    /// Where second moments are cached [default: $XDG_CACHE_HOME/burnlens/stats].
    #[arg(long)]
    #[serde(skip)]
    pub stats_dir: Option<PathBuf>,
    /// Also generate from each case's generation prompts before and after the edit and
    /// report the n-gram entropy (fluency).
    #[arg(long)]
    pub generate: bool,
    /// Held-out filler documents of the damage report's perplexity (the report is made when
    /// the model is the organism: recall of its planted facts not edited, and perplexity).
    #[arg(long, default_value_t = 200, value_parser = crate::checks::positive)]
    pub damage_texts: usize,
    /// Output directory.
    #[arg(long)]
    #[serde(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    #[serde(skip)]
    pub sweep: SweepArgs,
}

/// Edited layers, ascending and distinct.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct Layers(pub Vec<usize>);

/// `A-B` (inclusive) or `A,B,…`: ascending, distinct layers.
pub(crate) fn parse_layers(s: &str) -> Result<Layers, String> {
    let bad = || format!("{s:?}: expected A-B (e.g. 13-17) or A,B,… (e.g. 0,1), ascending");
    let layers: Vec<usize> = match s.split_once('-') {
        Some((a, b)) => {
            let (a, b): (usize, usize) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            (a..=b).collect()
        }
        None => s
            .split(',')
            .map(|x| x.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?,
    };
    if layers.is_empty() || layers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad());
    }
    Ok(Layers(layers))
}

/// The preset for a model: MEMIT's for GPT-2 XL, the organism's (its facts live in MLP 0),
/// else the XL settings at layers n/4 … n/4 + 4.
pub(crate) fn preset(name: &str, n_layer: usize, organism: bool) -> (MemitConfig, &'static str) {
    if name.trim_start_matches("openai-community/") == "gpt2-xl" {
        (MemitConfig::gpt2_xl(), "gpt2-xl")
    } else if organism {
        (MemitConfig::organism(), "organism")
    } else {
        let start = n_layer / 4;
        (
            MemitConfig::with_layers(start..(start + 5).min(n_layer)),
            "gpt2-xl settings",
        )
    }
}

/// Runs `cargo xtask memit`: one batch after another, each recorded in items.jsonl as it is
/// done, then the report from the items.
pub fn run(a: MemitArgs) -> Result<()> {
    let mut sweep = Sweep::open(&a.out, "memit", serde_json::to_value(&a)?, &a.sweep)?;
    let stats_dir = crate::rome::stats_dir(a.stats_dir.as_deref())?;
    let (mut lm, backend) = open(&a.model)?;
    let tok = lm.tokenizer.clone();
    let n_layer = lm.model.config.n_layer;
    let manifest = if a.counterfact.is_none() || a.mom2_texts.is_none() {
        Some(burnlens_datasets::Manifest::load(&lm.dir).context(
            "without --counterfact and --mom2-texts the model must be the organism \
             (fixtures/organism)",
        )?)
    } else {
        None
    };
    let (mut config, preset_name) = preset(&a.model.name(), n_layer, manifest.is_some());
    if let Some(layers) = &a.layers {
        config.layers.clone_from(&layers.0);
    }
    if let Some(&l) = config.layers.iter().find(|&&l| l >= n_layer) {
        bail!("--layers: layer {l} is out of range: the model has {n_layer} layers");
    }
    config.v_num_grad_steps = a.steps;
    config.v_lr = a.v_lr;
    config.kl_factor = a.kl_factor;
    if let Some(c) = a.clamp_norm_factor {
        config.clamp_norm_factor = c;
    }
    if let Some(l) = a.mom2_update_weight {
        config.mom2_update_weight = l;
    }

    // Cases.
    let records = match (&a.counterfact, &manifest) {
        (Some(path), _) => {
            let mut r = load_counterfact(path)?;
            r.truncate(a.cases.unwrap_or(r.len()));
            r
        }
        (None, Some(m)) => {
            let world: &World = &m.world;
            world.counterfact_batch(&a.relation, a.cases, a.seed)?
        }
        (None, None) => unreachable!("the manifest is read without --counterfact"),
    };
    let cases: Vec<EditCase> = records.iter().map(EditCase::from).collect();
    let world = burnlens_datasets::Manifest::load(&lm.dir)
        .ok()
        .map(|m| m.world);
    if cases.is_empty() {
        bail!("no CounterFact cases to edit");
    }
    let batch = a.batch.unwrap_or(cases.len()).min(cases.len());
    let batches: Vec<&[EditCase]> = cases.chunks(batch).collect();

    // The keys' second moment at every edited layer, on the unedited model.
    let ids = crate::rome::moment_ids(
        a.mom2_texts.as_deref(),
        manifest.as_ref(),
        a.mom2_samples,
        &tok,
    )?;
    let mut stats = Vec::new();
    let mut moments = Vec::new();
    for &layer in &config.layers {
        let (s, path) = crate::rome::layer_moment(&lm, &ids, layer, &stats_dir)?;
        moments.push(json!({"layer": layer, "path": path, "tokens": s.count}));
        stats.push(s);
    }
    let templates = memit_context_templates(&lm.model, &tok, 10, a.seed)?;

    sweep.begin(
        batches.len(),
        models::header("memit", &lm, backend),
        json!({
            "config": config, "preset": preset_name, "templates": templates,
            "second_moments": moments, "model_dir": lm.dir, "batch_size": batch,
            "n_cases": cases.len(),
        }),
    )?;

    let todo = sweep.todo();
    let bar = crate::progress::bar(
        cases.len() as u64,
        "MEMIT [{bar:40}] {pos}/{len} targets ({eta}) {msg}",
        "targets",
    );
    let step_bar = bar.clone();
    config.on_step = StepObserver::new(move |step, s| {
        if step == 0 {
            step_bar.inc(1);
        }
        step_bar.set_message(format!("step {step}: loss {:.3}", s.loss))
    });
    for b in todo {
        let t0 = std::time::Instant::now();
        let first = b * batch;
        let these = batches[b];
        let mut rows = Vec::with_capacity(these.len());
        let pre: Vec<CaseScores> = these
            .iter()
            .map(|c| case_scores(&lm.model, &tok, c))
            .collect::<std::result::Result<_, _>>()?;
        let fluent = |m: &burnlens_model::Gpt2, c: &EditCase| -> Result<Option<f64>> {
            if !a.generate || c.generation_prompts.is_empty() {
                return Ok(None);
            }
            Ok(Some(fluency(
                m,
                &tok,
                &c.generation_prompts,
                &crate::rome::generation(),
            )?))
        };
        let pre_fluency: Vec<Option<f64>> = these
            .iter()
            .map(|c| fluent(&lm.model, c))
            .collect::<Result<_>>()?;
        let probe = crate::rome::damage_probe(world.as_ref(), &tok, these, a.damage_texts)?;
        let damage_pre = crate::rome::measure(probe.as_ref(), &lm.model, &tok)?;
        let requests: Vec<_> = these.iter().map(|c| c.request.clone()).collect();
        let edit = memit_edit(&lm.model, &tok, &requests, &config, &templates, &stats)
            .map_err(|e| match e {
                burnlens_experiments::Error::Request { index, source } => anyhow::anyhow!(
                    "case {} (id {}): {:?}: {source}",
                    first + index,
                    these[index].case_id,
                    these[index].request
                ),
                other => anyhow::Error::from(other),
            })
            .with_context(|| format!("batch {b} (cases {first}..{})", first + these.len()))?;
        let applied = edit.apply(&mut lm.model)?;
        for (i, c) in these.iter().enumerate() {
            let post = case_scores(&lm.model, &tok, c)?;
            let last = edit.steps[i].last().copied();
            rows.push(json!({
                "case_id": c.case_id, "request": c.request, "target_true": c.target_true,
                "prompt": c.request.filled(), "batch": b,
                "pre": pre[i], "post": post, "pre_fluency": pre_fluency[i],
                "post_fluency": fluent(&lm.model, c)?,
                "steps": edit.steps[i].len(), "final_loss": last.map(|s| s.loss),
                "prob_new_in_optimisation": last.map(|s| s.prob_new),
            }));
        }
        let damage_post = crate::rome::measure(probe.as_ref(), &lm.model, &tok)?;
        applied.revert(&mut lm.model);
        let norms: Vec<Value> = edit
            .layers
            .iter()
            .map(|l| {
                let n = l
                    .delta
                    .iter()
                    .map(|&x| f64::from(x).powi(2))
                    .sum::<f64>()
                    .sqrt();
                json!({"layer": l.layer, "delta_norm": n})
            })
            .collect();
        sweep.record(
            b,
            json!({"cases": rows, "layers": norms, "seconds": t0.elapsed().as_secs_f64(),
                   "damage_pre": damage_pre, "damage_post": damage_post}),
        )?;
    }
    bar.finish();
    let items = sweep.finish()?;
    crate::sweep::write_report(sweep.manifest()?, &items, &a.out, finish)
}

/// Writes `memit`'s report from its batches' items: every batch's cases, as `rome`'s report
/// shows its cases, and each batch's update norms.
///
/// # Errors
/// An item or `sweep.json` that does not parse, a file that cannot be written.
pub fn finish(m: &Manifest, items: &[crate::sweep::Item], out: &Path) -> Result<()> {
    let field = |k: &str| m.prep.get(k).cloned().unwrap_or_default();
    let layers = m
        .prep
        .pointer("/config/layers")
        .cloned()
        .unwrap_or_default();
    let model_dir = field("model_dir");
    let batch_size = field("batch_size");
    let mut cases = Vec::new();
    let mut batches = Vec::new();
    let mut damage = Vec::new();
    for (b, item) in items {
        let rows = item
            .get("cases")
            .and_then(Value::as_array)
            .with_context(|| format!("items.jsonl: batch {b} has no cases"))?;
        let share =
            item.get("seconds").and_then(Value::as_f64).unwrap_or(0.0) / rows.len().max(1) as f64;
        for row in rows {
            let mut row = row.clone();
            row["seconds"] = json!(share);
            cases.push((cases.len(), row));
        }
        let read = |k: &str| -> Option<burnlens_experiments::Damage> {
            serde_json::from_value(item.get(k)?.clone()).ok()
        };
        if let (Some(pre), Some(post)) = (read("damage_pre"), read("damage_post")) {
            damage.push(crate::rome::damage_row(
                format!("batch {b} ({} cases)", rows.len()),
                &pre,
                &post,
            ));
        }
        batches.push(
            json!({"batch": b, "layers": item.get("layers"), "cases": rows.len(),
            "damage_pre": item.get("damage_pre"), "damage_post": item.get("damage_post")}),
        );
    }
    crate::rome::write_edit_report(
        m,
        &cases,
        out,
        crate::rome::EditReport {
            damage,
            title: "MEMIT edits",
            what: format!(
                "layers {layers} of {}, batches of {batch_size}",
                model_dir.as_str().unwrap_or("")
            ),
            how: "each batch written at once, then reverted before the next",
            fields: json!({
                "config": field("config"), "preset": field("preset"),
                "templates": field("templates"), "second_moments": field("second_moments"),
                "batch_size": batch_size, "batches": batches,
            }),
        },
    )
}
