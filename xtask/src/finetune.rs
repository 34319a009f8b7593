//! `cargo xtask finetune`: where does plain fine-tuning put a new fact? Teach the model
//! rewritten facts (statements it never saw: a planted fact with a new value) by gradient
//! steps on chosen parameter groups, step by step, recording each group's gradient and
//! weight-change norms, each fact's probability and rank, until every fact is answered or the
//! budget is spent; then CounterFact's scores and the damage report (recall of the facts not
//! rewritten, held-out perplexity). Beside it, the causal trace of the same facts (restoring
//! each layer's MLP or attention output at the subject's last token), to compare where
//! fine-tuning writes with where the model keeps its facts.
//!
//! A sweep (`sweep.rs`): an item is one run (`--free` lists them: `all`, one group, one
//! block…), each from the unedited model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_experiments::{
    CaseScores, Damage, DamageProbe, EditCase, FinetuneConfig, FinetuneOptimizer, FinetuneStep,
    NoiseSpec, TraceConfig, TraceKind, TracePrompt, average_indirect_effect, case_scores,
    causal_trace, finetune, free_groups, param_groups, subject_embedding_std, summarize,
};
use clap::Args;
use serde_json::json;

use crate::models::{self, ModelArgs, open};
use crate::report::{Page, Series, bar_chart_svg, line_plot_svg, line_plot_svg_ticks};
use crate::sweep::{Manifest, Sweep, SweepArgs};

/// Options of `cargo xtask finetune` (serialised into sweep.json, but for --out and the
/// sweep flags).
#[derive(Args, serde::Serialize)]
pub struct FinetuneArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// The organism's relation whose facts are rewritten (city, job or instrument).
    #[arg(long, default_value = "city")]
    pub relation: String,
    /// Facts taught at once (distinct people drawn for --seed).
    #[arg(long, default_value_t = 10, value_parser = crate::checks::positive)]
    pub facts: usize,
    /// Seed of the drawn facts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The runs, comma-separated, each the parameters it frees: `all`, `embed`, `attn.L`,
    /// `mlp.L`, `block.L` (both of block L's), `ln_f`, or several joined by `+`.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    pub free: Vec<String>,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01, value_parser = crate::checks::positive_f64)]
    pub lr: f64,
    /// The optimiser: sgd (plain gradient steps: the change lands where the gradient points)
    /// or adam.
    #[arg(long, default_value = "sgd", value_parser = ["sgd", "adam"])]
    pub optimizer: String,
    /// Steps at most per run (a run stops once every fact is answered).
    #[arg(long, default_value_t = 300, value_parser = crate::checks::positive)]
    pub max_steps: usize,
    /// The damage report is also made every N steps of a run (and always at its end).
    #[arg(long, default_value_t = 50, value_parser = crate::checks::positive)]
    pub damage_every: usize,
    /// Held-out filler documents of the damage report's perplexity.
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

/// Runs `cargo xtask finetune`: the causal trace of the facts, then one run after another,
/// each recorded in items.jsonl as it ends, then the report.
pub fn run(a: FinetuneArgs) -> Result<()> {
    let mut sweep = Sweep::open(&a.out, "finetune", serde_json::to_value(&a)?, &a.sweep)?;
    let (lm, backend) = open(&a.model)?;
    let tok = lm.tokenizer.clone();
    let n_layer = lm.model.config.n_layer;
    let manifest = burnlens_datasets::Manifest::load(&lm.dir).context(
        "finetune teaches rewritten planted facts: --model must be the organism (fixtures/organism)",
    )?;
    let runs: Vec<Vec<String>> = a
        .free
        .iter()
        .map(|spec| free_groups(spec, n_layer).with_context(|| format!("--free {spec}")))
        .collect::<Result<_>>()?;
    let cases: Vec<EditCase> = manifest
        .world
        .counterfact_batch(&a.relation, Some(a.facts), a.seed)
        .context("--facts / --relation")?
        .iter()
        .map(EditCase::from)
        .collect();
    let optimizer = match a.optimizer.as_str() {
        "adam" => FinetuneOptimizer::Adam,
        _ => FinetuneOptimizer::Sgd,
    };

    // Where the model keeps these facts: the causal trace of their true prompts.
    let trace = trace_facts(&lm, &cases)?;
    let probe = DamageProbe::organism(&manifest.world, &tok, &cases, a.damage_texts, 0xda4a6e)?;
    let damage_pre = probe.measure(&lm.model, &tok)?;
    let pre: Vec<CaseScores> = cases
        .iter()
        .map(|c| case_scores(&lm.model, &tok, c))
        .collect::<std::result::Result<_, _>>()?;
    sweep.begin(
        runs.len(),
        models::header("finetune", &lm, backend),
        json!({
            "groups": param_groups(n_layer), "model_dir": lm.dir, "relation": a.relation,
            "facts": cases.iter().map(|c| json!({
                "prompt": c.request.filled(), "target_new": c.request.target_new,
                "target_true": c.target_true})).collect::<Vec<_>>(),
            "trace": trace, "damage_pre": damage_pre, "pre": summarize(&pre),
        }),
    )?;
    let todo = sweep.todo();
    let bar = crate::progress::bar(
        (todo.len() * a.max_steps) as u64,
        "fine-tuning [{bar:40}] {pos}/{len} steps ({eta}) {msg}",
        "steps",
    );
    for k in todo {
        let t0 = std::time::Instant::now();
        let config = FinetuneConfig {
            free: runs[k].clone(),
            lr: a.lr,
            optimizer,
            max_steps: a.max_steps,
        };
        let requests: Vec<_> = cases.iter().map(|c| c.request.clone()).collect();
        let mut damage_steps = Vec::new();
        let run = finetune(
            &lm.model,
            &tok,
            &requests,
            &config,
            |s: &FinetuneStep, m| {
                if s.step > 0 {
                    bar.inc(1);
                }
                if s.step > 0 && (s.step.is_multiple_of(a.damage_every) || s.answered) {
                    let d = probe.measure(m, &tok)?;
                    damage_steps.push(json!({"step": s.step, "fact_recall": d.fact_recall,
                    "perplexity": d.perplexity}));
                }
                let mean = s.probs.iter().sum::<f64>() / s.probs.len() as f64;
                bar.set_message(format!(
                    "{}: step {}, mean p(new) {mean:.3}",
                    a.free[k], s.step
                ));
                Ok(())
            },
        )
        .with_context(|| format!("run --free {}", a.free[k]))?;
        // The budget left by an early stop.
        bar.inc((a.max_steps + 1 - run.steps.len()) as u64);
        // The trained copy is scored; the model every run starts from is untouched.
        let post: Vec<CaseScores> = cases
            .iter()
            .map(|c| case_scores(&run.model, &tok, c))
            .collect::<std::result::Result<_, _>>()?;
        let damage_post = probe.measure(&run.model, &tok)?;
        sweep.record(
            k,
            json!({
                "free": a.free[k], "groups_free": runs[k], "learned_at": run.learned_at(),
                "group_sizes": run.group_sizes, "group_norms": run.group_norms,
                "steps": run.steps, "post": summarize(&post), "damage_post": damage_post,
                "damage_steps": damage_steps,
                "seconds": t0.elapsed().as_secs_f64(),
            }),
        )?;
    }
    bar.finish();
    let items = sweep.finish()?;
    crate::sweep::write_report(sweep.manifest()?, &items, &a.out, finish)
}

/// The causal trace of the facts' true prompts: the average indirect effect of restoring each
/// layer's MLP and attention output at the subject's last token (ROME's noise: 10 samples of
/// 3× the subjects' embedding std; a window of one layer, not ROME's 10, so that each layer's
/// effect is its own, as the groups it is compared with are), over the facts the model gets
/// right.
fn trace_facts(lm: &burnlens_model::LoadedModel, cases: &[EditCase]) -> Result<serde_json::Value> {
    let subjects: Vec<&str> = cases.iter().map(|c| c.request.subject.as_str()).collect();
    let std = subject_embedding_std(&lm.model, &lm.tokenizer, &subjects)?;
    let spec = NoiseSpec::Gaussian { level: 3.0 * std };
    let config = TraceConfig {
        window: 1,
        ..TraceConfig::default()
    };
    let d = lm.model.config.n_embd;
    let device = lm.model.device();
    let kinds = [TraceKind::Mlp, TraceKind::Attn];
    let mut traces = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let prompt = TracePrompt::new(&lm.tokenizer, &c.request.filled(), &c.request.subject)
            .with_context(|| format!("fact {i}"))?;
        let noise = spec.sample(
            [config.samples, prompt.subject_range.len(), d],
            crate::sweep::item_seed(config.seed, i),
            &device,
        );
        let t = causal_trace(&lm.model, &prompt, &kinds, &config, &noise)
            .with_context(|| format!("tracing fact {i}"))?;
        let answer = lm.tokenizer.decode(&[t.answer_id])?;
        if answer.trim() == c.target_true.trim() {
            traces.push(t);
        }
    }
    if traces.is_empty() {
        bail!("the model recalls none of the drawn facts: nothing to trace");
    }
    let mut out = serde_json::Map::new();
    for kind in kinds {
        let r = average_indirect_effect(&traces, kind)?;
        let last = r
            .groups
            .iter()
            .find(|g| g.name == "Last subject token")
            .context("no last-subject-token group")?;
        out.insert(kind.name().to_string(), json!(last.aie));
    }
    out.insert("facts_traced".into(), json!(traces.len()));
    Ok(serde_json::Value::Object(out))
}

/// One run as items.jsonl keeps it (the fields the report reads).
#[derive(serde::Deserialize, serde::Serialize)]
struct Run {
    free: String,
    groups_free: Vec<String>,
    learned_at: Option<usize>,
    group_sizes: Vec<usize>,
    group_norms: Vec<f64>,
    steps: Vec<FinetuneStep>,
    post: burnlens_experiments::CounterFactSummary,
    damage_post: Damage,
    damage_steps: Vec<DamageStep>,
    seconds: f64,
}

/// The damage report part kept along a run.
#[derive(serde::Deserialize, serde::Serialize)]
struct DamageStep {
    step: usize,
    fact_recall: f64,
    perplexity: f64,
}

/// Writes `finetune`'s report (result.json, index.html, the SVGs) from its runs.
///
/// # Errors
/// An item or `sweep.json` that does not parse, a file that cannot be written.
pub fn finish(m: &Manifest, items: &[crate::sweep::Item], out: &Path) -> Result<()> {
    let runs: Vec<Run> = items
        .iter()
        .map(|(k, v)| {
            serde_json::from_value(v.clone()).with_context(|| format!("items.jsonl: run {k}"))
        })
        .collect::<Result<_>>()?;
    let field = |k: &str| m.prep.get(k).cloned().unwrap_or_default();
    let groups: Vec<String> =
        serde_json::from_value(field("groups")).context("sweep.json: groups")?;
    let damage_pre: Damage =
        serde_json::from_value(field("damage_pre")).context("sweep.json: damage_pre")?;
    let trace = field("trace");
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (trace_mlp, trace_attn) = (floats(&trace["mlp"]), floats(&trace["attn"]));
    let max_steps = m
        .options
        .get("max_steps")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let pct = crate::report::percent;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;

    // Where gradient and change concentrate, per run: each group's share of the first step's
    // gradient norm² and of the final change norm².
    let share = |v: &[f64]| -> Vec<f64> {
        let total: f64 = v.iter().map(|x| x * x).sum();
        v.iter()
            .map(|x| x * x / total.max(f64::MIN_POSITIVE))
            .collect()
    };
    let mut rows_out = Vec::new();
    let mut table = Vec::new();
    for r in &runs {
        let first = r.steps.get(1);
        let last = r.steps.last();
        let grad = first.and_then(|s| s.grad_norms.clone()).unwrap_or_default();
        let change = last.map(|s| s.change_norms.clone()).unwrap_or_default();
        let top = |v: &[f64]| -> String {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or("—".into(), |(i, _)| groups[i].clone())
        };
        table.push(vec![
            r.free.clone(),
            r.learned_at
                .map_or(format!("not in {max_steps}"), |s| s.to_string()),
            format!("{:.3}", last.map_or(f64::NAN, |s| mean(&s.probs))),
            pct(r.post.mean.efficacy),
            pct(r.post.mean.paraphrase),
            pct(r.post.mean.neighborhood),
            format!(
                "{} → {}",
                pct(damage_pre.fact_recall),
                pct(r.damage_post.fact_recall)
            ),
            format!(
                "{:.3} → {:.3}",
                damage_pre.perplexity, r.damage_post.perplexity
            ),
            top(&grad),
            top(&change),
        ]);
        rows_out.push(json!({
            "free": r.free, "groups_free": r.groups_free, "learned_at": r.learned_at,
            "steps_run": r.steps.len() - 1, "post": r.post, "damage_post": r.damage_post,
            "first_step_grad_share": share(&grad), "final_change_share": share(&change),
            "relative_change": change.iter().zip(&r.group_norms).map(|(c, n)| c / n).collect::<Vec<_>>(),
            "steps": r.steps, "damage_steps": r.damage_steps, "seconds": r.seconds,
        }));
    }
    for row in &table {
        println!(
            "free {:<14} learned at step {:<8} mean p(new) {}  recall of the rest {}  perplexity {}  largest gradient: {}, largest change: {}",
            row[0], row[1], row[2], row[6], row[7], row[8], row[9]
        );
    }
    let result = models::result_from(
        &m.header,
        json!({
            "relation": field("relation"), "facts": field("facts"), "groups": groups,
            "trace_last_subject_token": trace, "damage_pre": damage_pre, "pre": field("pre"),
            "runs": rows_out, "shard": m.shard, "n_items": m.n_items,
        }),
    );
    let n_facts = field("facts").as_array().map_or(0, Vec::len);
    let mut page = Page::new(
        "Fine-tuning localisation",
        &format!(
            "{n_facts} rewritten planted facts taught by gradient steps on chosen parameters: \
             where the gradient and the change land, how fast each part learns, what it damages"
        ),
    );
    page.section("Runs").table(
        &[
            "free",
            "answered at step",
            "mean p(new)",
            "efficacy",
            "paraphrase",
            "neighbourhood",
            "recall of facts not rewritten",
            "held-out perplexity",
            "largest gradient (step 1)",
            "largest change (end)",
        ],
        &table,
    );
    // Where: the run that frees every group (else the first run).
    if let Some(r) = runs
        .iter()
        .find(|r| r.groups_free.len() == groups.len())
        .or(runs.first())
    {
        let grad = r
            .steps
            .get(1)
            .and_then(|s| s.grad_norms.clone())
            .unwrap_or_default();
        let change = r
            .steps
            .last()
            .map(|s| s.change_norms.clone())
            .unwrap_or_default();
        let g: Vec<f32> = share(&grad).iter().map(|&x| (100.0 * x) as f32).collect();
        let c: Vec<f32> = share(&change).iter().map(|&x| (100.0 * x) as f32).collect();
        let rel: Vec<f32> = change
            .iter()
            .zip(&r.group_norms)
            .map(|(c, n)| (100.0 * c / n) as f32)
            .collect();
        // The trace per group: an MLP group gets its layer's MLP effect, an attention group
        // its attention effect.
        let traced: Vec<f32> = groups
            .iter()
            .map(|g| {
                let at = |v: &[f32], l: &str| {
                    l.parse::<usize>()
                        .ok()
                        .and_then(|l| v.get(l).copied())
                        .unwrap_or(f32::NAN)
                };
                match g.split_once('.') {
                    Some(("mlp", l)) => 100.0 * at(&trace_mlp, l),
                    Some(("attn", l)) => 100.0 * at(&trace_attn, l),
                    _ => f32::NAN,
                }
            })
            .collect();
        page.section(&format!("Where: the run freeing {}", r.free))
            .note(
                "Each parameter group's share (%) of the first step's squared gradient norm and \
                 of the final squared weight change, its change relative to its weight norm, and \
                 the causal trace of the same facts before training: the indirect effect (×100) \
                 of restoring that layer's MLP or attention output at the subject's last token.",
            )
            .figure(
                "gradient and change by parameter group",
                "where.svg",
                bar_chart_svg(
                    "where fine-tuning writes (% of the total)",
                    "%",
                    &groups,
                    &[
                        Series {
                            name: "gradient, step 1",
                            values: &g,
                            band: &[],
                        },
                        Series {
                            name: "weight change, end",
                            values: &c,
                            band: &[],
                        },
                    ],
                ),
            )
            .figure(
                "relative change by parameter group",
                "change.svg",
                bar_chart_svg(
                    "weight change ‖ΔW‖ / ‖W‖ at the end (%)",
                    "%",
                    &groups,
                    &[Series {
                        name: "‖ΔW‖ / ‖W‖",
                        values: &rel,
                        band: &[],
                    }],
                ),
            )
            .figure(
                "causal trace at the subject's last token",
                "trace.svg",
                bar_chart_svg(
                    "causal trace: indirect effect of restoring the layer (×100)",
                    "indirect effect ×100",
                    &groups,
                    &[Series {
                        name: "causal trace",
                        values: &traced,
                        band: &[],
                    }],
                ),
            );
    }
    // Per run: steps to learn and the damage.
    let labels: Vec<String> = runs.iter().map(|r| r.free.clone()).collect();
    let steps: Vec<f32> = runs
        .iter()
        .map(|r| r.learned_at.map_or(f32::NAN, |s| s as f32))
        .collect();
    let recall: Vec<f32> = runs
        .iter()
        .map(|r| (100.0 * r.damage_post.fact_recall) as f32)
        .collect();
    let curves: Vec<Vec<f32>> = runs
        .iter()
        .map(|r| r.steps.iter().map(|s| mean(&s.probs) as f32).collect())
        .collect();
    let names: Vec<String> = runs.iter().map(|r| r.free.clone()).collect();
    let series = Series::lines(&names, &curves);
    // The damage along each run, on a common grid of steps (a run that stopped early ends).
    let damage_every = m
        .options
        .get("damage_every")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1)
        .max(1) as usize;
    let longest = runs
        .iter()
        .map(|r| r.steps.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let grid: Vec<usize> = (0..=longest).step_by(damage_every).collect();
    let damage_curves: Vec<Vec<f32>> = runs
        .iter()
        .map(|r| {
            grid.iter()
                .map_while(|&step| {
                    if step == 0 {
                        return Some((100.0 * damage_pre.fact_recall) as f32);
                    }
                    r.damage_steps
                        .iter()
                        .find(|d| d.step == step)
                        .map(|d| (100.0 * d.fact_recall) as f32)
                })
                .collect()
        })
        .collect();
    let damage_series = Series::lines(&names, &damage_curves);
    let damage_ticks: Vec<String> = grid.iter().map(ToString::to_string).collect();
    page.section("How fast, at what cost")
        .note(&format!(
            "Steps until every fact's new value is the top prediction (no bar: not within {max_steps}), \
             and the recall of the facts not rewritten afterwards ({} before).",
            pct(damage_pre.fact_recall)
        ))
        .figure(
            "steps to learn per run",
            "steps.svg",
            bar_chart_svg(
                "steps until every fact is answered",
                "steps",
                &labels,
                &[Series {
                    name: "steps",
                    values: &steps,
                    band: &[],
                }],
            ),
        )
        .figure(
            "damage per run",
            "damage.svg",
            bar_chart_svg(
                "recall of facts not rewritten, after (%)",
                "%",
                &labels,
                &[Series {
                    name: "recall after",
                    values: &recall,
                    band: &[],
                }],
            ),
        )
        .figure(
            "mean p(new) per step",
            "curves.svg",
            line_plot_svg("mean p(new target) per step", "step", "p", &series),
        )
        .figure(
            "recall of the facts not rewritten along each run",
            "damage_curves.svg",
            line_plot_svg_ticks(
                &format!("recall of facts not rewritten (%), every {damage_every} steps"),
                "step",
                "%",
                &damage_series,
                &damage_ticks,
            ),
        );
    page.write(out, &result, "")
}
