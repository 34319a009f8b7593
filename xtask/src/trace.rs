//! `cargo xtask trace`: ROME's causal tracing of one prompt or a file of facts, with the
//! dataset roll-up, written as result.json, ROME-style SVG heatmaps and index.html.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burnlens_experiments::{
    CausalTrace, IndirectEffects, NoiseSpec, TraceConfig, TraceKind, TracePrompt,
    average_indirect_effect, causal_trace, load_noise, save_noise_indexed, subject_embedding_std,
};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{self, Heatmap, Page, Scale};
use crate::sweep::{self, Manifest, Sweep, SweepArgs};
use burnlens_datasets::{Fact, load_facts};

/// Options of `cargo xtask trace` (serialised into sweep.json, but for --out and the sweep
/// flags).
#[derive(Args, serde::Serialize)]
pub struct TraceArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// One prompt to trace (with --subject).
    #[arg(long, conflicts_with = "facts", value_parser = crate::checks::text)]
    pub prompt: Option<String>,
    /// The subject, as it occurs in --prompt.
    #[arg(long, requires = "prompt", value_parser = crate::checks::text)]
    pub subject: Option<String>,
    /// A file of facts: ROME's known facts (.json/.jsonl with subject, prompt, attribute) or
    /// counterfact-tracing rows (.json/.jsonl/.csv with subject, prompt, target_true).
    #[arg(long)]
    pub facts: Option<PathBuf>,
    /// Trace at most this many facts of --facts.
    #[arg(long, value_parser = crate::checks::positive)]
    pub limit: Option<usize>,
    /// Trace every fact, also those the model does not complete with the expected attribute
    /// (ROME traces only correct predictions).
    #[arg(long)]
    pub all_facts: bool,
    /// Comma-separated restorations: state, mlp, attn.
    #[arg(long, default_value = "state,mlp,attn", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Corrupted copies of each prompt.
    #[arg(long, default_value_t = 10, value_parser = crate::checks::positive)]
    pub samples: usize,
    /// Layers restored around each layer for mlp and attn (ROME's window: clipped at the
    /// model's first and last layers, so any width runs on any model).
    #[arg(long, default_value_t = 10, value_parser = crate::checks::positive)]
    pub window: usize,
    /// Noise level as a multiple of the subject embeddings' standard deviation (ROME's s3).
    #[arg(long, default_value_t = 3.0, value_parser = crate::checks::non_negative_f32)]
    pub noise_factor: f32,
    /// Noise level as a number (overrides --noise-factor).
    #[arg(long, value_parser = crate::checks::non_negative_f32)]
    pub noise_level: Option<f32>,
    /// Uniform noise in [-level, level] instead of Gaussian.
    #[arg(long)]
    pub uniform: bool,
    /// Replace the subject embeddings with the noise instead of adding it.
    #[arg(long)]
    pub replace: bool,
    /// Noise seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replay the noise in this safetensors file (tensor `noise.<i>` for prompt i), e.g. the
    /// noise.safetensors of an earlier run or of scripts/reference/tracing_reference.py.
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    #[serde(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    #[serde(skip)]
    pub sweep: SweepArgs,
}

fn facts(a: &TraceArgs) -> Result<Vec<Fact>> {
    let mut out = match (&a.prompt, &a.subject, &a.facts) {
        (Some(p), Some(s), None) => vec![Fact {
            prompt: p.clone(),
            subject: s.clone(),
            target: None,
            foil: None,
        }],
        (Some(_), None, _) => {
            bail!("--prompt needs --subject (the subject as it occurs in the prompt)")
        }
        (None, _, Some(path)) => load_facts(path)?,
        _ => bail!("give --prompt and --subject, or --facts FILE"),
    };
    if let Some(n) = a.limit {
        out.truncate(n);
    }
    if out.is_empty() {
        bail!("no facts to trace");
    }
    Ok(out)
}

/// ROME's colour maps: Purples (state), Greens (mlp), Reds (attn).
fn colour(kind: TraceKind) -> (u8, u8, u8) {
    match kind {
        TraceKind::State => (0x54, 0x27, 0x88),
        TraceKind::Mlp => (0x00, 0x6d, 0x2c),
        TraceKind::Attn => (0xa5, 0x0f, 0x15),
    }
}

fn title(kind: TraceKind, window: usize) -> String {
    match kind {
        TraceKind::State => "Impact of restoring state after corrupted input".into(),
        TraceKind::Mlp => {
            format!("Impact of restoring MLP (window {window}) after corrupted input")
        }
        TraceKind::Attn => {
            format!("Impact of restoring Attn (window {window}) after corrupted input")
        }
    }
}

/// Runs `cargo xtask trace`: one fact after another, each recorded in items.jsonl as it is
/// done (see `sweep.rs`: --shard, --resume), then the report from the items.
pub fn trace(a: TraceArgs) -> Result<()> {
    let kinds: Vec<TraceKind> = a
        .kinds
        .iter()
        .map(|k| k.trim().parse())
        .collect::<Result<_, _>>()
        .context("--kinds")?;
    let facts = facts(&a)?;
    let mut sweep = Sweep::open(&a.out, "trace", serde_json::to_value(&a)?, &a.sweep)?;
    let (lm, backend) = open(&a.model)?;
    if a.model.prepend_bos {
        bail!("causal tracing tokenizes as ROME does, without BOS; drop --prepend-bos");
    }
    let n_layers = lm.model.config.n_layer;
    let d = lm.model.config.n_embd;
    let prompts: Vec<TracePrompt> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            TracePrompt::new(&lm.tokenizer, &f.prompt, &f.subject)
                .with_context(|| format!("fact {i}"))
        })
        .collect::<Result<_>>()?;
    // The noise level comes from every subject of the dataset, so every shard uses the same.
    let subjects: Vec<&str> = facts.iter().map(|f| f.subject.as_str()).collect();
    let std = subject_embedding_std(&lm.model, &lm.tokenizer, &subjects)?;
    let level = a.noise_level.unwrap_or(a.noise_factor * std);
    let spec = if a.uniform {
        NoiseSpec::Uniform { level }
    } else {
        NoiseSpec::Gaussian { level }
    };
    let bar = crate::progress::bar(
        0,
        "{msg:>12} [{bar:40}] {pos}/{len} restorations ({eta})",
        "restorations",
    );
    let config = TraceConfig {
        samples: a.samples,
        window: a.window,
        replace: a.replace,
        seed: a.seed,
        observer: crate::progress::observer(&bar),
        ..TraceConfig::default()
    };
    let prep = serde_json::json!({
        "kinds": kinds, "config": config, "noise": spec, "embedding_std": std,
        "noise_level": level, "n_layers": n_layers, "d_model": d,
    });
    sweep.begin(
        prompts.len(),
        models::header("causal_tracing", &lm, backend),
        prep,
    )?;
    let device = lm.model.device();
    let todo = sweep.todo();
    for (done, &k) in todo.iter().enumerate() {
        bar.set_message(format!("fact {}/{}", done + 1, todo.len()));
        let prompt = &prompts[k];
        let noise = item_noise(&a, &spec, k, prompt.subject_range.len(), d, &device)?;
        let t0 = Instant::now();
        let trace = causal_trace(&lm.model, prompt, &kinds, &config, &noise)
            .with_context(|| format!("fact {k}"))?;
        let seconds = t0.elapsed().as_secs_f64();
        let answer = lm.tokenizer.decode(&[trace.answer_id])?;
        let expected = facts[k].target.as_deref();
        let correct = expected.is_none_or(|e| answer.trim() == e.trim());
        sweep.record(
            k,
            serde_json::json!({
                "trace": trace, "answer": answer, "expected": expected,
                "correct_prediction": correct, "seconds": seconds,
            }),
        )?;
    }
    bar.finish();
    let items = sweep.finish()?;
    sweep::write_report(sweep.manifest()?, &items, &a.out, finish)
}

/// The noise of fact `k`: replayed from `--noise` (tensor `noise.<k>`), or drawn with the
/// fact's own seed ([`sweep::item_seed`]), so it is the same in every shard and resume.
fn item_noise(
    a: &TraceArgs,
    spec: &NoiseSpec,
    k: usize,
    subject_tokens: usize,
    d_model: usize,
    device: &burn::tensor::Device,
) -> Result<burn::tensor::Tensor<3>> {
    Ok(match &a.noise {
        Some(path) => load_noise(path, &format!("noise.{k}"), device)?,
        None => spec.sample(
            [a.samples, subject_tokens, d_model],
            sweep::item_seed(a.seed, k),
            device,
        ),
    })
}

/// What `trace` computed before the first fact, as `sweep.json` keeps it.
#[derive(serde::Deserialize)]
struct Prep {
    kinds: Vec<TraceKind>,
    config: serde_json::Value,
    noise: serde_json::Value,
    embedding_std: f32,
    noise_level: f32,
    n_layers: usize,
    d_model: usize,
}

/// One traced fact, as `items.jsonl` keeps it.
#[derive(serde::Deserialize)]
struct Item {
    trace: CausalTrace,
    answer: String,
    expected: Option<String>,
    correct_prediction: bool,
    seconds: f64,
}

/// Writes `trace`'s report (result.json, the SVGs, index.html, noise.safetensors) from its
/// items: what a run does at its end and `merge` does for the shards' items.
///
/// # Errors
/// An item or `sweep.json` that does not parse, the replayed noise file gone, a file that
/// cannot be written.
pub fn finish(m: &Manifest, items: &[sweep::Item], out: &Path) -> Result<()> {
    let a: TraceOptions = serde_json::from_value(serde_json::Value::Object(m.options.clone()))
        .context("sweep.json: the options of trace")?;
    let prep: Prep = serde_json::from_value(m.prep.clone()).context("sweep.json: trace's prep")?;
    let n_layers = prep.n_layers;
    let mut traces: Vec<CausalTrace> = Vec::new();
    // Each case's figures (state, MLP, attention side by side), shown after the roll-up.
    let mut case_figures: Vec<CaseFigures> = Vec::new();
    let mut cases = Vec::new();
    let mut noises = Vec::new();
    let spec: NoiseSpec = if a.uniform {
        NoiseSpec::Uniform {
            level: prep.noise_level,
        }
    } else {
        NoiseSpec::Gaussian {
            level: prep.noise_level,
        }
    };
    let host = burnlens_model::BackendKind::NdArray.device()?;
    let mut seconds_total = 0.0;
    for (k, value) in items {
        let k = *k;
        let item: Item = serde_json::from_value(value.clone())
            .with_context(|| format!("items.jsonl: item {k}"))?;
        let trace = item.trace;
        let prompt = &trace.prompt;
        seconds_total += item.seconds;
        noises.push((
            k,
            match &a.noise {
                Some(path) => load_noise(path, &format!("noise.{k}"), &host)?,
                None => spec.sample(
                    [a.samples, prompt.subject_range.len(), prep.d_model],
                    sweep::item_seed(a.seed, k),
                    &host,
                ),
            },
        ));
        let answer = &item.answer;
        let mut labels = prompt.tokens.clone();
        for l in &mut labels[prompt.subject_range.clone()] {
            l.push('*');
        }
        let subject: Vec<usize> = prompt.subject_range.clone().collect();
        let cols: Vec<String> = (0..n_layers).map(|l| l.to_string()).collect();
        let mut row = Vec::new();
        for table in &trace.tables {
            let high = table.scores.iter().copied().fold(trace.low_score, f32::max);
            let svg = Heatmap::new(
                &format!("{} — p({})", title(table.kind, table.window), answer.trim()),
                &labels,
                &cols,
                &table.scores,
            )
            .axes(
                "layer (window centre)",
                "token (subject marked)",
                &format!("p({}) restored", answer.trim()),
            )
            .mark_rows(&subject)
            .scale(Scale::Sequential {
                low: trace.low_score,
                high,
                rgb: colour(table.kind),
            })
            .svg();
            row.push((
                table.kind.name().to_string(),
                format!("trace_{k}_{}.svg", table.kind.name()),
                svg,
            ));
        }
        case_figures.push(CaseFigures {
            heading: format!(
                "Case {k}: {:?} → {:?} (corrupted p = {:.3}, clean p = {:.3})",
                prompt.text, answer, trace.low_score, trace.high_score
            ),
            row,
        });
        cases.push(serde_json::json!({
            "index": k, "prompt": prompt, "answer": answer, "expected": item.expected,
            "correct_prediction": item.correct_prediction, "answer_id": trace.answer_id,
            "high_score": trace.high_score, "low_score": trace.low_score,
            "tables": trace.tables, "seconds": item.seconds,
        }));
        if item.correct_prediction || a.all_facts {
            traces.push(trace);
        }
    }
    let noise_path = out.join("noise.safetensors");
    let tmp = out.join(".noise.safetensors.tmp");
    let indexed: Vec<(usize, &burn::tensor::Tensor<3>)> =
        noises.iter().map(|(k, t)| (*k, t)).collect();
    save_noise_indexed(&indexed, &tmp)?;
    std::fs::rename(&tmp, &noise_path)
        .with_context(|| format!("cannot write {}", noise_path.display()))?;
    let mut rollups: Vec<IndirectEffects> = Vec::new();
    let mut page = Page::new("Causal tracing", "");
    if items.len() > 1 {
        if traces.is_empty() {
            eprintln!(
                "no fact was predicted correctly, so there is no average indirect effect (pass --all-facts to average them all)"
            );
        }
        let section = page.section(&format!(
            "Average indirect effect over {} prompts",
            traces.len()
        ));
        for &kind in prep.kinds.iter().filter(|_| !traces.is_empty()) {
            let r = average_indirect_effect(&traces, kind)?;
            report::group_figures(
                section,
                &format!("aie_{}", kind.name()),
                &format!("average indirect effect ({})", kind.name()),
                &format!(
                    "Average indirect effect of {} restorations over {} prompts",
                    kind.name(),
                    r.prompts
                ),
                "AIE on p(answer)",
                &r.groups,
                n_layers,
                Some(colour(kind)),
            );
            rollups.push(r);
        }
    }
    let result = models::result_from(
        &m.header,
        serde_json::json!({
            "config": prep.config, "noise": prep.noise, "noise_replayed_from": a.noise,
            "noise_seeds": "fact k's noise is drawn with seed + k * 0x9E3779B97F4A7C15 (wrapping)",
            "embedding_std": prep.embedding_std, "noise_level": prep.noise_level,
            "noise_file": "noise.safetensors", "kinds": prep.kinds, "cases": cases,
            "averaged_prompts": traces.len(), "all_facts": a.all_facts,
            "average_indirect_effect": rollups, "seconds_total": seconds_total,
            "shard": m.shard, "n_items": m.n_items,
        }),
    );
    let summary = format!(
        "{} prompt(s){}; noise {} level {:.4} ({} × σ = {:.4} of the subject embeddings unless given), {} samples, window {}",
        items.len(),
        m.shard
            .map(|s| format!(" (shard {s} of {} facts)", m.n_items))
            .unwrap_or_default(),
        if a.uniform { "uniform" } else { "Gaussian" },
        prep.noise_level,
        a.noise_factor,
        prep.embedding_std,
        a.samples,
        a.window
    );
    page.summary(&summary);
    for case in case_figures {
        let section = page.section(&case.heading);
        for (name, file, svg) in case.row {
            section.figure(&name, &file, svg);
        }
    }
    page.write(out, &result, "noise.safetensors")
}

/// The options of `trace` that `finish` reads back from `sweep.json`.
#[derive(serde::Deserialize)]
struct TraceOptions {
    all_facts: bool,
    samples: usize,
    window: usize,
    noise_factor: f32,
    uniform: bool,
    seed: u64,
    noise: Option<PathBuf>,
}

/// One traced case's section: its heading and its figures `(caption, file, svg)`.
struct CaseFigures {
    heading: String,
    row: Vec<(String, String, String)>,
}
