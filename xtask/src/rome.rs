//! `cargo xtask rome`: ROME edits of CounterFact cases, one at a time (edit, evaluate, revert),
//! with ROME's efficacy, paraphrase and neighbourhood scores before and after each edit, their
//! harmonic mean, and optionally the fluency (n-gram entropy) of generated text; a report
//! (result.json, index.html) and optionally an edited checkpoint in Hugging Face layout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_datasets::{World, load_counterfact, read_texts};
use burnlens_experiments::{
    CaseScores, CounterFactSummary, Damage, DamageProbe, EditCase, MomentOptions, RomeConfig,
    SecondMoment, StepObserver, case_scores, context_templates, fluency, rome_edit,
    second_moment_cached, summarize,
};
use burnlens_model::{GenerationConfig, Strategy};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{Page, Series, line_plot_svg};
use crate::sweep::{Manifest, Sweep, SweepArgs};

/// Options of `cargo xtask rome` (serialised into sweep.json, but for --out and the sweep
/// flags).
#[derive(Args, serde::Serialize)]
pub struct RomeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// CounterFact records (ROME's `counterfact.json` layout). Without it, the cases are drawn
    /// from the planted facts of the model's `manifest.json` (the model organism).
    #[arg(long)]
    pub counterfact: Option<PathBuf>,
    /// Cases to edit (the first N records, or N drawn planted facts).
    #[arg(long, default_value_t = 20, value_parser = crate::checks::positive)]
    pub cases: usize,
    /// Seed of the drawn planted facts and of the context templates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The edited layer (default: ROME's preset for gpt2-medium/large/xl, else n_layer / 3).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Adam steps of the value optimisation.
    #[arg(long, default_value_t = 20, value_parser = crate::checks::positive)]
    pub steps: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 0.5, value_parser = crate::checks::positive_f64)]
    pub v_lr: f64,
    /// Weight of the essence KL term.
    #[arg(long, default_value_t = 0.0625, value_parser = crate::checks::non_negative_f64)]
    pub kl_factor: f64,
    /// δ is clamped to this multiple of ‖v₀‖ (default: the preset's, else 4).
    #[arg(long, value_parser = crate::checks::positive_f64)]
    pub clamp_norm_factor: Option<f64>,
    /// Texts for the keys' second moment (.txt paragraphs, .jsonl/.json `text` fields).
    /// Without it: the organism's corpus (from its manifest).
    #[arg(long)]
    pub mom2_texts: Option<PathBuf>,
    /// Texts counted for the second moment at most.
    #[arg(long, default_value_t = 2000, value_parser = crate::checks::positive)]
    pub mom2_samples: usize,
    /// Where second moments are cached [default: $XDG_CACHE_HOME/burnlens/stats, else
    /// $HOME/.cache/burnlens/stats].
    #[arg(long)]
    pub stats_dir: Option<PathBuf>,
    /// Also generate from each case's generation prompts before and after the edit and
    /// report the n-gram entropy (fluency).
    #[arg(long)]
    pub generate: bool,
    /// Held-out filler documents of the damage report's perplexity (the report is made when
    /// the model is the organism: recall of its planted facts not edited, and perplexity).
    #[arg(long, default_value_t = 200, value_parser = crate::checks::positive)]
    pub damage_texts: usize,
    /// Save the model with the first case's edit applied, in Hugging Face layout, here.
    #[arg(long)]
    pub save_edited: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    #[serde(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    #[serde(skip)]
    pub sweep: SweepArgs,
}

/// The organism's world and corpus settings from its manifest.
fn organism_manifest(dir: &Path) -> Result<burnlens_datasets::Manifest> {
    burnlens_datasets::Manifest::load(dir).context(
        "without --counterfact and --mom2-texts the model must be the organism (fixtures/organism)",
    )
}

/// Where second moments are cached: `given` (`--stats-dir`), else the cache directory's
/// `stats/`; created and checked writable.
///
/// # Errors
/// No cache directory, or one that cannot be written.
pub(crate) fn stats_dir(given: Option<&Path>) -> Result<PathBuf> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => crate::models::cache_dir()
            .context("choosing where the second moments are cached (--stats-dir)")?
            .join("stats"),
    };
    crate::models::prepare_out_dir("--stats-dir", &dir)?;
    Ok(dir)
}

/// The token ids of the second moment's texts: `--mom2-texts`, else the organism's corpus
/// (from its manifest), at most `samples` texts.
///
/// # Errors
/// A file that cannot be read, and tokenizer errors.
pub(crate) fn moment_ids(
    mom2_texts: Option<&Path>,
    manifest: Option<&burnlens_datasets::Manifest>,
    samples: usize,
    tok: &burnlens_model::Gpt2Tokenizer,
) -> Result<Vec<Vec<u32>>> {
    let texts: Vec<String> = match (mom2_texts, manifest) {
        (Some(path), _) => read_texts(path)?,
        (None, Some(m)) => m.world.corpus(&m.corpus, samples, m.seed ^ 0x5eed)?,
        (None, None) => bail!("no texts for the second moment: give --mom2-texts"),
    };
    Ok(texts
        .iter()
        .take(samples)
        .map(|t| tok.encode(t, false))
        .collect::<std::result::Result<_, _>>()?)
}

/// The second moment of `layer`'s keys over `ids`, read from the cache in `stats_dir` or
/// computed (with a progress bar) and cached there.
///
/// # Errors
/// Forward errors, and the cache's I/O errors.
pub(crate) fn layer_moment(
    lm: &burnlens_model::LoadedModel,
    ids: &[Vec<u32>],
    layer: usize,
    stats_dir: &Path,
) -> Result<(SecondMoment, PathBuf)> {
    let bar = crate::progress::bar(
        ids.len() as u64,
        "second moment [{bar:40}] {pos}/{len} texts ({eta})",
        "second moment: texts",
    );
    let key = format!("{}", lm.dir.display());
    let (stats, path) = second_moment_cached(
        &lm.model,
        &key,
        layer,
        ids,
        stats_dir,
        &MomentOptions {
            batch_size: 16,
            observer: crate::progress::observer(&bar),
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "second moment of layer {layer}'s keys: {} tokens ({})",
        stats.count,
        path.display()
    );
    Ok((stats, path))
}

/// The generation `--generate` scores: 40 greedy tokens, reproducible.
pub(crate) fn generation() -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: 40,
        strategy: Strategy::Greedy,
        ..GenerationConfig::default()
    }
}

/// With `--generate`, the fluency of the model's continuations of a case's generation prompts
/// (`None` without the flag or without prompts).
fn case_fluency(
    a: &RomeArgs,
    model: &burnlens_model::Gpt2,
    tok: &burnlens_model::Gpt2Tokenizer,
    case: &EditCase,
) -> Result<Option<f64>> {
    if !a.generate || case.generation_prompts.is_empty() {
        return Ok(None);
    }
    Ok(Some(fluency(
        model,
        tok,
        &case.generation_prompts,
        &generation(),
    )?))
}

/// Runs `cargo xtask rome`: one case after another, each recorded in items.jsonl as it is
/// done (see `sweep.rs`: --shard, --resume), then the report from the items.
pub fn run(a: RomeArgs) -> Result<()> {
    let mut sweep = Sweep::open(&a.out, "rome", serde_json::to_value(&a)?, &a.sweep)?;
    let stats_dir = stats_dir(a.stats_dir.as_deref())?;
    if let Some(dir) = &a.save_edited {
        crate::models::prepare_out_dir("--save-edited", dir)?;
    }
    let (mut lm, backend) = open(&a.model)?;
    let tok = lm.tokenizer.clone();
    let n_layer = lm.model.config.n_layer;
    let preset = RomeConfig::preset(&a.model.name());
    let mut config = preset
        .clone()
        .unwrap_or_else(|| RomeConfig::at_layer(n_layer / 3));
    if let Some(l) = a.layer {
        config.layer = l;
    }
    if config.layer >= n_layer {
        bail!(
            "--layer {} is out of range: the model has {n_layer} layers",
            config.layer
        );
    }
    config.v_num_grad_steps = a.steps;
    config.v_lr = a.v_lr;
    config.kl_factor = a.kl_factor;
    config.template_seed = a.seed;
    if let Some(c) = a.clamp_norm_factor {
        config.clamp_norm_factor = c;
    }

    // Cases.
    let manifest = if a.counterfact.is_none() || a.mom2_texts.is_none() {
        Some(organism_manifest(&lm.dir)?)
    } else {
        None
    };
    let records = match &a.counterfact {
        Some(path) => load_counterfact(path)?,
        None => {
            let world: &World = &manifest.as_ref().expect("manifest").world;
            world.counterfact(a.cases, a.seed)?
        }
    };
    let cases: Vec<EditCase> = records.iter().take(a.cases).map(EditCase::from).collect();
    if cases.is_empty() {
        bail!("no CounterFact cases to edit");
    }
    let world = burnlens_datasets::Manifest::load(&lm.dir)
        .ok()
        .map(|m| m.world);

    // The keys' second moment.
    let ids = moment_ids(
        a.mom2_texts.as_deref(),
        manifest.as_ref(),
        a.mom2_samples,
        &tok,
    )?;
    let (stats, stats_path) = layer_moment(&lm, &ids, config.layer, &stats_dir)?;
    let templates = context_templates(
        &lm.model,
        &tok,
        &config.context_template_length_params,
        config.template_seed,
    )?;

    sweep.begin(
        cases.len(),
        models::header("rome", &lm, backend),
        serde_json::json!({
            "config": config, "preset": preset.is_some(), "templates": templates,
            "second_moment": {"path": stats_path, "tokens": stats.count},
            "model_dir": lm.dir,
        }),
    )?;

    // Edit, evaluate, revert: one case at a time.
    let todo = sweep.todo();
    let bar = crate::progress::bar(
        todo.len() as u64,
        "editing [{bar:40}] {pos}/{len} cases ({eta}) {msg}",
        "edits",
    );
    let step_bar = bar.clone();
    config.on_step = StepObserver::new(move |step, s| {
        step_bar.set_message(format!("step {step}: loss {:.3}", s.loss))
    });
    for k in todo {
        let case = &cases[k];
        let t0 = std::time::Instant::now();
        let pre: CaseScores = case_scores(&lm.model, &tok, case)?;
        let pre_fluency = case_fluency(&a, &lm.model, &tok, case)?;
        let probe = damage_probe(
            world.as_ref(),
            &tok,
            std::slice::from_ref(case),
            a.damage_texts,
        )?;
        let damage_pre = measure(probe.as_ref(), &lm.model, &tok)?;
        let edit = rome_edit(
            &lm.model,
            &tok,
            &case.request,
            &config,
            &templates,
            Some(&stats),
        )
        .with_context(|| format!("case {k} (id {}): {:?}", case.case_id, case.request))?;
        let applied = edit.apply(&mut lm.model)?;
        let post = case_scores(&lm.model, &tok, case)?;
        let post_fluency = case_fluency(&a, &lm.model, &tok, case)?;
        let damage_post = measure(probe.as_ref(), &lm.model, &tok)?;
        if k == 0
            && let Some(dir) = &a.save_edited
        {
            lm.model.save_pretrained(dir)?;
            tok.save(&dir.join("tokenizer.json"))?;
            eprintln!(
                "saved the model edited for case {} in {}",
                case.case_id,
                dir.display()
            );
        }
        applied.revert(&mut lm.model);
        let last = edit.steps.last().copied();
        sweep.record(
            k,
            serde_json::json!({
                "case_id": case.case_id, "request": case.request, "target_true": case.target_true,
                "prompt": case.request.filled(),
                "pre": pre, "post": post, "pre_fluency": pre_fluency, "post_fluency": post_fluency,
                "steps": edit.steps.len(), "final_loss": last.map(|s| s.loss),
                "prob_new_in_optimisation": last.map(|s| s.prob_new),
                "damage_pre": damage_pre, "damage_post": damage_post,
                "seconds": t0.elapsed().as_secs_f64(),
            }),
        )?;
        bar.inc(1);
    }
    bar.finish();
    let items = sweep.finish()?;
    crate::sweep::write_report(sweep.manifest()?, &items, &a.out, finish)
}

/// The damage report's probe for `edited` when the model is the organism (`world` from its
/// manifest): its planted facts but the edited ones, and `n_texts` held-out filler documents.
///
/// # Errors
/// As [`DamageProbe::organism`].
pub(crate) fn damage_probe(
    world: Option<&World>,
    tok: &burnlens_model::Gpt2Tokenizer,
    edited: &[EditCase],
    n_texts: usize,
) -> Result<Option<DamageProbe>> {
    Ok(match world {
        Some(w) => Some(DamageProbe::organism(w, tok, edited, n_texts, DAMAGE_SEED)?),
        None => None,
    })
}

/// The seed of the damage report's held-out filler documents (the organism's corpus is drawn
/// for its training seed; these for this one).
pub(crate) const DAMAGE_SEED: u64 = 0xda4a6e;

/// The damage report of `model`, if there is a probe.
///
/// # Errors
/// Forward errors.
pub(crate) fn measure(
    probe: Option<&DamageProbe>,
    model: &burnlens_model::Gpt2,
    tok: &burnlens_model::Gpt2Tokenizer,
) -> Result<Option<Damage>> {
    Ok(match probe {
        Some(p) => Some(p.measure(model, tok)?),
        None => None,
    })
}

/// One edited case, as `items.jsonl` keeps it (the fields the report reads).
#[derive(serde::Deserialize)]
struct Item {
    request: serde_json::Value,
    target_true: String,
    prompt: String,
    pre: CaseScores,
    post: CaseScores,
    #[serde(default)]
    damage_pre: Option<Damage>,
    #[serde(default)]
    damage_post: Option<Damage>,
}

/// Writes `rome`'s report (result.json, index.html, the SVG) from its items: what a run does
/// at its end and `merge` does for the shards' items.
///
/// # Errors
/// An item or `sweep.json` that does not parse, a file that cannot be written.
pub fn finish(m: &Manifest, items: &[crate::sweep::Item], out: &Path) -> Result<()> {
    let field = |k: &str| m.prep.get(k).cloned().unwrap_or_default();
    let layer = m
        .prep
        .pointer("/config/layer")
        .and_then(|v| v.as_u64())
        .unwrap_or_default();
    let model_dir = m
        .prep
        .get("model_dir")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let damage = items
        .iter()
        .filter_map(|(_, v)| {
            let it: Item = serde_json::from_value(v.clone()).ok()?;
            Some(damage_row(
                it.prompt,
                it.damage_pre.as_ref()?,
                it.damage_post.as_ref()?,
            ))
        })
        .collect();
    write_edit_report(
        m,
        items,
        out,
        EditReport {
            damage,
            title: "ROME edits",
            what: format!("layer {layer} of {model_dir}"),
            how: "each edit reverted before the next",
            fields: serde_json::json!({ "config": field("config"), "preset": field("preset"),
                "templates": field("templates"), "second_moment": field("second_moment") }),
        },
    )
}

/// What an edit report says beside the scores.
pub(crate) struct EditReport {
    /// The page's title.
    pub title: &'static str,
    /// What was edited ("layer 0 of fixtures/organism").
    pub what: String,
    /// How the edits were made and reverted.
    pub how: &'static str,
    /// The result's fields beside the summary and the cases.
    pub fields: serde_json::Value,
    /// The damage report's rows ([`damage_row`]): one per edit (ROME's cases, MEMIT's
    /// batches); none when the model is not the organism.
    pub damage: Vec<Vec<String>>,
}

/// One row of the damage table: what was edited, the recall of the facts not edited before →
/// after, after for the edited people's other facts and for everybody else, and the held-out
/// perplexity before → after.
pub(crate) fn damage_row(label: String, pre: &Damage, post: &Damage) -> Vec<String> {
    let pct = crate::report::percent;
    vec![
        label,
        format!("{} → {}", pct(pre.fact_recall), pct(post.fact_recall)),
        pct(post.recall_edited_subjects),
        pct(post.recall_other_subjects),
        format!("{:.3} → {:.3}", pre.perplexity, post.perplexity),
    ]
}

/// Writes the report of edited CounterFact cases (result.json, index.html, the SVG) from the
/// cases' items (`request`, `target_true`, `prompt`, `pre`, `post`, …): ROME's, and MEMIT's
/// with its batches' cases.
///
/// # Errors
/// An item that does not parse, a file that cannot be written.
pub(crate) fn write_edit_report(
    m: &Manifest,
    items: &[crate::sweep::Item],
    out: &Path,
    report: EditReport,
) -> Result<()> {
    let crate::sweep::Parsed {
        items: parsed,
        cases: rows,
        seconds_total,
    } = crate::sweep::parse_items::<Item>(items)?;
    let pre_all: Vec<CaseScores> = parsed.iter().map(|(_, p)| p.pre).collect();
    let post_all: Vec<CaseScores> = parsed.iter().map(|(_, p)| p.post).collect();
    let (pre, post) = (summarize(&pre_all), summarize(&post_all));
    let pct = |v: f64| format!("{:.1}", 100.0 * v);
    println!(
        "{} cases at {}: efficacy {} -> {}, paraphrase {} -> {}, neighbourhood {} -> {}, score {} \
         -> {}",
        items.len(),
        report.what,
        pct(pre.mean.efficacy),
        pct(post.mean.efficacy),
        pct(pre.mean.paraphrase),
        pct(post.mean.paraphrase),
        pct(pre.mean.neighborhood),
        pct(post.mean.neighborhood),
        pct(pre.score),
        pct(post.score)
    );
    let mut fields = report.fields;
    if let Some(map) = fields.as_object_mut() {
        for (k, v) in [
            ("summary", serde_json::json!({"pre": pre, "post": post})),
            ("cases", serde_json::Value::Array(rows)),
            ("seconds_total", seconds_total.into()),
            ("shard", serde_json::to_value(m.shard)?),
            ("n_items", m.n_items.into()),
        ] {
            map.insert(k.into(), v);
        }
    }
    let result = models::result_from(&m.header, fields);
    let mut page = Page::new(
        report.title,
        &format!(
            "{} cases, {}; ROME's scores (%), before → after each edit ({})",
            items.len(),
            report.what,
            report.how,
        ),
    );
    let score_row = |name: &str, s: &CounterFactSummary| {
        vec![
            name.to_string(),
            pct(s.mean.efficacy),
            pct(s.mean.paraphrase),
            pct(s.mean.neighborhood),
            pct(s.score),
        ]
    };
    let before: Vec<f32> = pre_all
        .iter()
        .map(|b| b.efficacy_magnitude as f32)
        .collect();
    let after: Vec<f32> = post_all
        .iter()
        .map(|p| p.efficacy_magnitude as f32)
        .collect();
    page.section("Scores over every case")
        .table(
            &["", "efficacy", "paraphrase", "neighbourhood", "score"],
            &[score_row("before", &pre), score_row("after", &post)],
        )
        .figure(
            "p(new) − p(true) per case",
            "efficacy.svg",
            line_plot_svg(
                "p(new) − p(true) on the edited prompt, before and after",
                "case",
                "p(new) − p(true)",
                &[
                    Series {
                        name: "before",
                        values: &before,
                        band: &[],
                    },
                    Series {
                        name: "after",
                        values: &after,
                        band: &[],
                    },
                ],
            ),
        );
    let damage = report.damage;
    if !damage.is_empty() {
        page.section("Damage")
            .note(
                "The damage report of each edit: top-1 recall of the organism's planted facts not \
                 edited (each relation's plain prompt), before → after, then after for the edited \
                 people's other facts and for everybody else; perplexity of held-out filler text.",
            )
            .table(
                &[
                    "edited",
                    "recall of facts not edited",
                    "… the edited people's other facts",
                    "… other people's facts",
                    "held-out perplexity",
                ],
                &damage,
            );
    }
    let rows: Vec<Vec<String>> = parsed
        .iter()
        .map(|(_, it)| {
            vec![
                it.prompt.clone(),
                it.request
                    .get("target_new")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                it.target_true.clone(),
                format!("{:+.3}", it.pre.efficacy_magnitude),
                format!("{:+.3}", it.post.efficacy_magnitude),
                pct(it.post.paraphrase),
                pct(it.post.neighborhood),
            ]
        })
        .collect();
    page.section("Cases").table(
        &[
            "prompt",
            "new",
            "true",
            "p(new) − p(true) before",
            "after",
            "paraphrase success after",
            "neighbourhood success after",
        ],
        &rows,
    );
    page.write(out, &result, "")
}
