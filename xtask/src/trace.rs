//! `cargo xtask trace`: ROME's causal tracing of one prompt or a file of facts, with the
//! dataset roll-up, written as result.json, ROME-style SVG heatmaps and index.html.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burnlens_experiments::{
    CausalTrace, IndirectEffects, NoiseSpec, TraceConfig, TraceKind, TracePrompt,
    average_indirect_effect, causal_trace, load_noise, save_noise, subject_embedding_std,
};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{self, Heatmap, Page, Scale};
use burnlens_datasets::{Fact, load_facts};

/// Options of `cargo xtask trace`.
#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
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
    pub out: PathBuf,
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

/// Runs `cargo xtask trace`.
pub fn trace(a: TraceArgs) -> Result<()> {
    let started = Instant::now();
    let kinds: Vec<TraceKind> = a
        .kinds
        .iter()
        .map(|k| k.trim().parse())
        .collect::<Result<_, _>>()
        .context("--kinds")?;
    let facts = facts(&a)?;
    let (lm, backend) = open(&a.model)?;
    if a.model.prepend_bos {
        bail!("causal tracing tokenizes as ROME does, without BOS; drop --prepend-bos");
    }
    let n_layers = lm.model.config.n_layer;
    let prompts: Vec<TracePrompt> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            TracePrompt::new(&lm.tokenizer, &f.prompt, &f.subject)
                .with_context(|| format!("fact {i}"))
        })
        .collect::<Result<_>>()?;
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
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let device = lm.model.device();
    let d = lm.model.config.n_embd;
    let noises = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| match &a.noise {
            Some(path) => Ok(load_noise(path, &format!("noise.{i}"), &device)?),
            None => Ok(spec.sample([a.samples, p.subject_range.len(), d], a.seed, &device)),
        })
        .collect::<Result<Vec<_>>>()?;
    save_noise(&noises, &a.out.join("noise.safetensors"))?;

    let mut traces: Vec<CausalTrace> = Vec::new();
    // Each case's figures (state, MLP, attention side by side), shown after the roll-up.
    let mut case_figures: Vec<CaseFigures> = Vec::new();
    let mut cases = Vec::new();
    for (i, (prompt, noise)) in prompts.iter().zip(&noises).enumerate() {
        bar.set_message(format!("fact {}/{}", i + 1, prompts.len()));
        let t0 = Instant::now();
        let trace = causal_trace(&lm.model, prompt, &kinds, &config, noise)?;
        let seconds = t0.elapsed().as_secs_f64();
        let answer = lm.tokenizer.decode(&[trace.answer_id])?;
        let expected = facts[i].target.as_deref();
        let correct = expected.is_none_or(|e| answer.trim() == e.trim());
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
                format!("trace_{i}_{}.svg", table.kind.name()),
                svg,
            ));
        }
        case_figures.push(CaseFigures {
            heading: format!(
                "Case {i}: {:?} → {:?} (corrupted p = {:.3}, clean p = {:.3})",
                prompt.text, answer, trace.low_score, trace.high_score
            ),
            row,
        });
        cases.push(serde_json::json!({
            "prompt": prompt, "answer": answer, "expected": expected, "correct_prediction": correct,
            "answer_id": trace.answer_id, "high_score": trace.high_score, "low_score": trace.low_score,
            "tables": trace.tables, "seconds": seconds,
        }));
        if correct || a.all_facts {
            traces.push(trace);
        }
    }
    bar.finish();
    let mut rollups: Vec<IndirectEffects> = Vec::new();
    let mut page = Page::new("Causal tracing", "");
    if prompts.len() > 1 {
        if traces.is_empty() {
            eprintln!(
                "no fact was predicted correctly, so there is no average indirect effect (pass --all-facts to average them all)"
            );
        }
        let section = page.section(&format!(
            "Average indirect effect over {} prompts",
            traces.len()
        ));
        for &kind in kinds.iter().filter(|_| !traces.is_empty()) {
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
    let result = models::result(
        "causal_tracing",
        &lm,
        backend,
        serde_json::json!({
            "config": config, "noise": spec, "noise_replayed_from": a.noise,
            "embedding_std": std, "noise_level": level, "noise_file": "noise.safetensors",
            "kinds": kinds, "cases": cases, "averaged_prompts": traces.len(),
            "all_facts": a.all_facts, "average_indirect_effect": rollups,
            "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    let summary = format!(
        "{} prompt(s); noise {} level {level:.4} ({} × σ = {std:.4} of the subject embeddings unless given), {} samples, window {}",
        prompts.len(),
        if a.uniform { "uniform" } else { "Gaussian" },
        a.noise_factor,
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
    page.write(&a.out, &result, "noise.safetensors")
}

/// One traced case's section: its heading and its figures `(caption, file, svg)`.
struct CaseFigures {
    heading: String,
    row: Vec<(String, String, String)>,
}
