//! `cargo xtask edit-scale`: MEMIT and sequential ROME at growing numbers of rewritten facts
//! (MEMIT's "scaling curve"): for each batch size, that many of the organism's planted facts
//! of one relation rewritten at once by MEMIT, and the same facts rewritten by ROME one after
//! another without reverting (each edit computed on the model the earlier edits left), then
//! CounterFact's efficacy, paraphrase and neighbourhood scores of every rewritten fact and the
//! damage report (recall of the facts not rewritten, perplexity of held-out filler text),
//! before and after. The table shows where sequential ROME breaks down and MEMIT does not.
//!
//! A sweep (`sweep.rs`): an item is one (batch size, method) row, each reverted before the
//! next, so shards run different rows and `merge` joins them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_experiments::{
    CaseScores, Damage, DamageProbe, EditCase, RomeConfig, case_scores, context_templates,
    memit_context_templates, memit_edit, rome_edit, summarize,
};
use clap::Args;
use serde_json::json;

use crate::models::{self, ModelArgs, open};
use crate::report::{Page, Series, line_plot_svg_ticks};
use crate::sweep::{Manifest, Sweep, SweepArgs};

/// Options of `cargo xtask edit-scale` (serialised into sweep.json, but for --out, the stats
/// directory and the sweep flags).
#[derive(Args, serde::Serialize)]
pub struct ScaleArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// The organism's relation rewritten (city, job or instrument).
    #[arg(long, default_value = "city")]
    pub relation: String,
    /// Facts rewritten at once, comma-separated; `all` is every person of the world.
    #[arg(long, default_value = "1,10,100,all", value_parser = parse_sizes)]
    pub sizes: Sizes,
    /// The methods compared (memit, rome: sequential ROME), comma-separated.
    #[arg(long, default_value = "memit,rome", value_delimiter = ',', value_parser = ["memit", "rome"])]
    pub methods: Vec<String>,
    /// Seed of the drawn people and of the context templates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// MEMIT's edited layers, `A-B` or `A,B,…` (default: the preset's; layer 0 on the
    /// organism).
    #[arg(long, value_parser = crate::memit::parse_layers)]
    pub layers: Option<crate::memit::Layers>,
    /// ROME's edited layer (default: MEMIT's last edited layer, where MEMIT optimises its
    /// target, as MEMIT's paper compares them).
    #[arg(long)]
    pub rome_layer: Option<usize>,
    /// Held-out filler documents of the damage report's perplexity.
    #[arg(long, default_value_t = 200, value_parser = crate::checks::positive)]
    pub damage_texts: usize,
    /// Texts counted for the second moments at most.
    #[arg(long, default_value_t = 2000, value_parser = crate::checks::positive)]
    pub mom2_samples: usize,
    /// Where second moments are cached [default: $XDG_CACHE_HOME/burnlens/stats].
    #[arg(long)]
    #[serde(skip)]
    pub stats_dir: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    #[serde(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    #[serde(skip)]
    pub sweep: SweepArgs,
}

/// Batch sizes: `None` is every person.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct Sizes(pub Vec<Option<usize>>);

/// `1,10,100,all`: positive sizes or `all`, distinct.
fn parse_sizes(s: &str) -> Result<Sizes, String> {
    let sizes: Vec<Option<usize>> = s
        .split(',')
        .map(|x| match x.trim() {
            "all" => Ok(None),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(format!(
                    "{n:?}: expected a positive number of facts or `all` (e.g. 1,10,100,all)"
                )),
            },
        })
        .collect::<Result<_, _>>()?;
    let mut seen = sizes.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != sizes.len() {
        return Err(format!("{s:?}: a size is given twice"));
    }
    Ok(Sizes(sizes))
}

/// The row of one item: (size index, method).
fn row_of(k: usize, methods: &[String]) -> (usize, &str) {
    (k / methods.len(), methods[k % methods.len()].as_str())
}

/// Runs `cargo xtask edit-scale`: one (size, method) row after another, each recorded in
/// items.jsonl as it is done, then the report from the items.
pub fn run(a: ScaleArgs) -> Result<()> {
    let mut sweep = Sweep::open(&a.out, "edit-scale", serde_json::to_value(&a)?, &a.sweep)?;
    let stats_dir = crate::rome::stats_dir(a.stats_dir.as_deref())?;
    let (mut lm, backend) = open(&a.model)?;
    let tok = lm.tokenizer.clone();
    let n_layer = lm.model.config.n_layer;
    let manifest = burnlens_datasets::Manifest::load(&lm.dir)
        .context("edit-scale rewrites the organism's planted facts: --model must be the organism (fixtures/organism)")?;
    let world = &manifest.world;
    let people = world.people.len();
    if let Some(n) = a.sizes.0.iter().flatten().find(|&&n| n > people) {
        bail!("--sizes: {n} facts asked for; the organism's world has {people} people");
    }
    let (mut memit, preset) = crate::memit::preset(&a.model.name(), n_layer, true);
    if let Some(layers) = &a.layers {
        memit.layers.clone_from(&layers.0);
    }
    if let Some(&l) = memit.layers.iter().find(|&&l| l >= n_layer) {
        bail!("--layers: layer {l} is out of range: the model has {n_layer} layers");
    }
    let rome_layer = a
        .rome_layer
        .unwrap_or(*memit.layers.last().expect("MEMIT edits a layer"));
    if rome_layer >= n_layer {
        bail!("--rome-layer {rome_layer} is out of range: the model has {n_layer} layers");
    }
    let mut rome = RomeConfig::at_layer(rome_layer);
    rome.template_seed = a.seed;

    // Each size's cases (drawn once; the same people for both methods).
    let cases: Vec<Vec<EditCase>> = a
        .sizes
        .0
        .iter()
        .map(|&n| -> Result<Vec<EditCase>> {
            Ok(world
                .counterfact_batch(&a.relation, n, a.seed)?
                .iter()
                .map(EditCase::from)
                .collect())
        })
        .collect::<Result<_>>()?;

    // Second moments of every edited layer, on the unedited model.
    let ids = crate::rome::moment_ids(None, Some(&manifest), a.mom2_samples, &tok)?;
    let mut layers: Vec<usize> = memit.layers.clone();
    layers.push(rome_layer);
    layers.sort_unstable();
    layers.dedup();
    let mut stats = std::collections::BTreeMap::new();
    let mut moments = Vec::new();
    for &layer in &layers {
        let (s, path) = crate::rome::layer_moment(&lm, &ids, layer, &stats_dir)?;
        moments.push(json!({"layer": layer, "path": path, "tokens": s.count}));
        stats.insert(layer, s);
    }
    let memit_stats: Vec<_> = memit.layers.iter().map(|l| stats[l].clone()).collect();
    let memit_templates = memit_context_templates(&lm.model, &tok, 10, a.seed)?;
    let rome_templates = context_templates(
        &lm.model,
        &tok,
        &rome.context_template_length_params,
        rome.template_seed,
    )?;

    let n_items = a.sizes.0.len() * a.methods.len();
    sweep.begin(
        n_items,
        models::header("edit-scale", &lm, backend),
        json!({
            "memit_config": memit, "memit_preset": preset, "rome_config": rome,
            "second_moments": moments, "model_dir": lm.dir, "people": people,
            "sizes": a.sizes.0.iter().map(|n| n.unwrap_or(people)).collect::<Vec<_>>(),
            "methods": a.methods, "relation": a.relation,
        }),
    )?;

    let todo = sweep.todo();
    let edits: usize = todo
        .iter()
        .map(|&k| cases[row_of(k, &a.methods).0].len())
        .sum();
    let bar = crate::progress::bar(
        edits as u64,
        "editing [{bar:40}] {pos}/{len} facts ({eta}) {msg}",
        "facts",
    );
    let step_bar = bar.clone();
    memit.on_step = burnlens_experiments::StepObserver::new(move |step, _| {
        if step == 0 {
            step_bar.inc(1);
        }
    });
    for k in todo {
        let (s, method) = row_of(k, &a.methods);
        let these = &cases[s];
        bar.set_message(format!("{method}, {} facts", these.len()));
        let t0 = std::time::Instant::now();
        let probe = DamageProbe::organism(world, &tok, these, a.damage_texts, a.seed ^ 0xda4a6e)?;
        let damage_pre = probe.measure(&lm.model, &tok)?;
        let pre: Vec<CaseScores> = these
            .iter()
            .map(|c| case_scores(&lm.model, &tok, c))
            .collect::<std::result::Result<_, _>>()?;
        let (post, damage_post, norms) = match method {
            "memit" => {
                let requests: Vec<_> = these.iter().map(|c| c.request.clone()).collect();
                let edit = memit_edit(
                    &lm.model,
                    &tok,
                    &requests,
                    &memit,
                    &memit_templates,
                    &memit_stats,
                )
                .with_context(|| format!("MEMIT on {} facts", these.len()))?;
                let applied = edit.apply(&mut lm.model)?;
                let scored = score(&lm.model, &tok, these, &probe);
                applied.revert(&mut lm.model);
                let (post, damage) = scored?;
                let norms: Vec<f64> = edit.layers.iter().map(|l| norm(&l.delta)).collect();
                (post, damage, norms)
            }
            _ => {
                let mut applied = Vec::with_capacity(these.len());
                let mut norms = Vec::with_capacity(these.len());
                let mut failed = None;
                for (i, c) in these.iter().enumerate() {
                    let edit = rome_edit(
                        &lm.model,
                        &tok,
                        &c.request,
                        &rome,
                        &rome_templates,
                        Some(&stats[&rome_layer]),
                    )
                    .with_context(|| format!("ROME edit {i} of {}: {:?}", these.len(), c.request));
                    match edit.and_then(|e| Ok((e.apply(&mut lm.model)?, e))) {
                        Ok((app, e)) => {
                            let u = e.u.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
                            let v = e.right.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
                            norms.push((u * v).sqrt());
                            applied.push(app);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                    bar.inc(1);
                }
                let scored = match failed {
                    None => score(&lm.model, &tok, these, &probe),
                    Some(e) => Err(e),
                };
                // Undo in reverse order: each edit restores the weights it found.
                for app in applied.into_iter().rev() {
                    app.revert(&mut lm.model);
                }
                let (post, damage) = scored?;
                (post, damage, norms)
            }
        };
        sweep.record(
            k,
            json!({
                "method": method, "size": these.len(),
                "pre": summarize(&pre), "post": summarize(&post),
                "efficacy_by_case": post.iter().map(|p| p.efficacy).collect::<Vec<_>>(),
                "damage_pre": damage_pre, "damage_post": damage_post,
                "update_norms": norms, "seconds": t0.elapsed().as_secs_f64(),
            }),
        )?;
    }
    bar.finish();
    let items = sweep.finish()?;
    crate::sweep::write_report(sweep.manifest()?, &items, &a.out, finish)
}

/// Every case's scores and the damage report on the edited model.
fn score(
    model: &burnlens_model::Gpt2,
    tok: &burnlens_model::Gpt2Tokenizer,
    cases: &[EditCase],
    probe: &DamageProbe,
) -> Result<(Vec<CaseScores>, Damage)> {
    let post = cases
        .iter()
        .map(|c| case_scores(model, tok, c))
        .collect::<std::result::Result<_, _>>()?;
    Ok((post, probe.measure(model, tok)?))
}

/// The Frobenius norm of a flat matrix.
fn norm(m: &[f32]) -> f64 {
    m.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

/// A score read from a row.
type Score = dyn Fn(&Row) -> f64;

/// One row as items.jsonl keeps it (the fields the report reads).
#[derive(serde::Deserialize, serde::Serialize)]
struct Row {
    method: String,
    size: usize,
    pre: burnlens_experiments::CounterFactSummary,
    post: burnlens_experiments::CounterFactSummary,
    damage_pre: Damage,
    damage_post: Damage,
    update_norms: Vec<f64>,
    seconds: f64,
}

/// Writes `edit-scale`'s report (result.json, index.html, the SVG) from its rows.
///
/// # Errors
/// An item or `sweep.json` that does not parse, a file that cannot be written.
pub fn finish(m: &Manifest, items: &[crate::sweep::Item], out: &Path) -> Result<()> {
    let rows: Vec<(usize, Row)> = items
        .iter()
        .map(|(k, v)| {
            Ok((
                *k,
                serde_json::from_value(v.clone())
                    .with_context(|| format!("items.jsonl: row {k}"))?,
            ))
        })
        .collect::<Result<_>>()?;
    let field = |k: &str| m.prep.get(k).cloned().unwrap_or_default();
    let sizes: Vec<usize> = serde_json::from_value(field("sizes")).context("sweep.json: sizes")?;
    let methods: Vec<String> =
        serde_json::from_value(field("methods")).context("sweep.json: methods")?;
    let relation = field("relation");
    let relation = relation.as_str().unwrap_or("?");
    let pct = crate::report::percent;
    let name = |m: &str| {
        if m == "memit" {
            "MEMIT"
        } else {
            "ROME, sequential"
        }
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, r)| {
            vec![
                name(&r.method).to_string(),
                r.size.to_string(),
                pct(r.post.mean.efficacy),
                pct(r.post.mean.paraphrase),
                pct(r.post.mean.neighborhood),
                pct(r.post.score),
                format!(
                    "{} → {}",
                    pct(r.damage_pre.fact_recall),
                    pct(r.damage_post.fact_recall)
                ),
                pct(r.damage_post.recall_edited_subjects),
                pct(r.damage_post.recall_other_subjects),
                format!(
                    "{:.3} → {:.3}",
                    r.damage_pre.perplexity, r.damage_post.perplexity
                ),
            ]
        })
        .collect();
    for row in &table {
        println!(
            "{:<17} {:>4} facts: efficacy {}, paraphrase {}, neighbourhood {}, recall of the rest {}, perplexity {}",
            row[0], row[1], row[2], row[3], row[4], row[6], row[9]
        );
    }
    // One curve per method and score, over the sizes (a missing row or score is a gap).
    let value = |method: &str, size: usize, f: &dyn Fn(&Row) -> f64| -> f32 {
        rows.iter()
            .find(|(_, r)| r.method == method && r.size == size)
            .map_or(f32::NAN, |(_, r)| (100.0 * f(r)) as f32)
    };
    let scores: [(&str, &Score); 3] = [
        ("efficacy", &|r| r.post.mean.efficacy),
        ("neighbourhood", &|r| r.post.mean.neighborhood),
        ("recall of the rest", &|r| r.damage_post.fact_recall),
    ];
    let mut names = Vec::new();
    let mut values = Vec::new();
    for method in &methods {
        for (score, f) in &scores {
            names.push(format!("{}: {score}", name(method)));
            values.push(
                sizes
                    .iter()
                    .map(|&s| value(method, s, *f))
                    .collect::<Vec<_>>(),
            );
        }
    }
    let series = Series::lines(&names, &values);
    let ticks: Vec<String> = sizes.iter().map(ToString::to_string).collect();
    let result = models::result_from(
        &m.header,
        json!({
            "relation": relation, "sizes": sizes, "methods": methods,
            "memit_config": field("memit_config"), "memit_preset": field("memit_preset"),
            "rome_config": field("rome_config"), "second_moments": field("second_moments"),
            "rows": rows.iter().map(|(_, r)| r).collect::<Vec<_>>(),
            "shard": m.shard, "n_items": m.n_items,
        }),
    );
    let mut page = Page::new(
        "Editing at scale: MEMIT and sequential ROME",
        &format!(
            "the organism's planted {relation} facts rewritten {} at a time; CounterFact's scores of \
             the rewritten facts (%) and the damage report, before → after",
            ticks.join(", ")
        ),
    );
    page.section("Scores by number of facts rewritten")
        .table(
            &[
                "method",
                "facts",
                "efficacy",
                "paraphrase",
                "neighbourhood",
                "score",
                "recall of facts not rewritten",
                "… the rewritten people's other facts",
                "… other people's facts",
                "held-out perplexity",
            ],
            &table,
        )
        .note(
            "Neighbourhood prompts name people outside the batch who share the old value; when \
             every person is rewritten there are none, and the column shows —. The damage \
             report's recall counts every planted fact not rewritten (all relations), before → \
             after, then after split between the rewritten people's other relations (an edit \
             at the subject's representation can move them) and the people not rewritten; its \
             perplexity is over held-out filler documents.",
        )
        .figure(
            "scores by number of facts rewritten",
            "scale.svg",
            line_plot_svg_ticks(
                "scores after the edit (%)",
                "facts rewritten",
                "%",
                &series,
                &ticks,
            ),
        );
    page.write(out, &result, "")
}
