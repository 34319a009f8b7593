//! `cargo xtask rome`: ROME edits of CounterFact cases, one at a time (edit, evaluate, revert),
//! with ROME's efficacy, paraphrase and neighbourhood scores before and after each edit, their
//! harmonic mean, and optionally the fluency (n-gram entropy) of generated text; a report
//! (result.json, index.html) and optionally an edited checkpoint in Hugging Face layout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_datasets::{World, load_counterfact, read_texts};
use burnlens_experiments::{
    CaseScores, CounterFactSummary, EditCase, MomentOptions, RomeConfig, StepObserver, case_scores,
    context_templates, fluency, rome_edit, second_moment_cached, summarize,
};
use burnlens_model::{GenerationConfig, Strategy};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{Page, Series, line_plot_svg};

/// Options of `cargo xtask rome`.
#[derive(Args)]
pub struct RomeArgs {
    #[command(flatten)]
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
    /// Save the model with the first case's edit applied, in Hugging Face layout, here.
    #[arg(long)]
    pub save_edited: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// The organism's world and corpus settings from its manifest.
fn organism_manifest(dir: &Path) -> Result<burnlens_datasets::Manifest> {
    burnlens_datasets::Manifest::load(dir).context(
        "without --counterfact and --mom2-texts the model must be the organism (fixtures/organism)",
    )
}

/// The generation `--generate` scores: 40 greedy tokens, reproducible.
fn generation() -> GenerationConfig {
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

/// Runs `cargo xtask rome`.
pub fn run(a: RomeArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let stats_dir = match &a.stats_dir {
        Some(d) => d.clone(),
        None => crate::models::cache_dir()
            .context("choosing where ROME's second moments are cached (--stats-dir)")?
            .join("stats"),
    };
    crate::models::prepare_out_dir("--stats-dir", &stats_dir)?;
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

    // The keys' second moment.
    let texts: Vec<String> = match &a.mom2_texts {
        Some(path) => read_texts(path)?,
        None => {
            let m = manifest.as_ref().expect("manifest");
            m.world.corpus(&m.corpus, a.mom2_samples, m.seed ^ 0x5eed)?
        }
    };
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .take(a.mom2_samples)
        .map(|t| tok.encode(t, false))
        .collect::<std::result::Result<_, _>>()?;
    let bar = crate::progress::bar(
        ids.len() as u64,
        "second moment [{bar:40}] {pos}/{len} texts ({eta})",
        "second moment: texts",
    );
    let key = format!("{}", lm.dir.display());
    let (stats, stats_path) = second_moment_cached(
        &lm.model,
        &key,
        config.layer,
        &ids,
        &stats_dir,
        &MomentOptions {
            batch_size: 16,
            observer: crate::progress::observer(&bar),
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "second moment of layer {}'s keys: {} tokens ({})",
        config.layer,
        stats.count,
        stats_path.display()
    );
    let templates = context_templates(
        &lm.model,
        &tok,
        &config.context_template_length_params,
        config.template_seed,
    )?;

    // Edit, evaluate, revert: one case at a time.
    let bar = crate::progress::bar(
        cases.len() as u64,
        "editing [{bar:40}] {pos}/{len} cases ({eta}) {msg}",
        "edits",
    );
    let step_bar = bar.clone();
    config.on_step = StepObserver::new(move |step, s| {
        step_bar.set_message(format!("step {step}: loss {:.3}", s.loss))
    });
    let mut rows = Vec::new();
    let (mut pre_all, mut post_all) = (Vec::new(), Vec::new());
    for (i, case) in cases.iter().enumerate() {
        let pre: CaseScores = case_scores(&lm.model, &tok, case)?;
        let pre_fluency = case_fluency(&a, &lm.model, &tok, case)?;
        let edit = rome_edit(
            &lm.model,
            &tok,
            &case.request,
            &config,
            &templates,
            Some(&stats),
        )
        .with_context(|| format!("case {}: {:?}", case.case_id, case.request))?;
        let applied = edit.apply(&mut lm.model)?;
        let post = case_scores(&lm.model, &tok, case)?;
        let post_fluency = case_fluency(&a, &lm.model, &tok, case)?;
        if i == 0
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
        rows.push(serde_json::json!({
            "case_id": case.case_id, "request": case.request, "target_true": case.target_true,
            "pre": pre, "post": post, "pre_fluency": pre_fluency, "post_fluency": post_fluency,
            "steps": edit.steps.len(), "final_loss": last.map(|s| s.loss),
            "prob_new_in_optimisation": last.map(|s| s.prob_new),
        }));
        pre_all.push(pre);
        post_all.push(post);
        bar.inc(1);
    }
    bar.finish();
    let (pre, post) = (summarize(&pre_all), summarize(&post_all));
    let pct = |v: f64| format!("{:.1}", 100.0 * v);
    println!(
        "{} cases at layer {}: efficacy {} -> {}, paraphrase {} -> {}, neighbourhood {} -> {}, \
         score {} -> {}",
        cases.len(),
        config.layer,
        pct(pre.mean.efficacy),
        pct(post.mean.efficacy),
        pct(pre.mean.paraphrase),
        pct(post.mean.paraphrase),
        pct(pre.mean.neighborhood),
        pct(post.mean.neighborhood),
        pct(pre.score),
        pct(post.score)
    );

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let result = models::result(
        "rome",
        &lm,
        backend,
        serde_json::json!({ "config": config, "preset": preset.is_some(),
            "templates": templates, "second_moment": {"path": stats_path, "tokens": stats.count},
            "summary": {"pre": pre, "post": post}, "cases": rows,
            "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    let mut page = Page::new(
        "ROME edits",
        &format!(
            "{} cases, layer {} of {}; ROME's scores (%), before → after each edit (each edit \
             reverted before the next)",
            cases.len(),
            config.layer,
            lm.dir.display()
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
    let rows: Vec<Vec<String>> = cases
        .iter()
        .zip(pre_all.iter().zip(&post_all))
        .map(|(case, (b, p))| {
            vec![
                case.request.filled(),
                case.request.target_new.clone(),
                case.target_true.clone(),
                format!("{:+.3}", b.efficacy_magnitude),
                format!("{:+.3}", p.efficacy_magnitude),
                pct(p.paraphrase),
                pct(p.neighborhood),
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
    page.write(&a.out, &result, "")
}
