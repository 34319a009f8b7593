//! `cargo xtask`: burnlens's command line — generation, logits dumps, activation caches,
//! fixtures.

mod attribute;
mod facts;
#[cfg(test)]
mod features;
mod heads;
#[cfg(test)]
mod house;
mod layers;
mod lens;
mod llm;
mod npy;
mod organism;
mod plant;
mod prepend;
mod probe;
mod progress;
mod recipe;
mod report;
mod rome;
mod steer;
mod trace;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burnlens_datasets::{PairOptions, PromptPair, tokenize_pairs};
use burnlens_experiments::{
    NormalizedLogitDiff, PatchIndex, PatchOptions, Sweep, attribution_patch, patch_sweep_with,
    pearson,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_model::generate::EarlyStopping;
use burnlens_model::{
    BackendKind, GenerationConfig, Gpt2Config, Gpt2Tokenizer, HookPoint, Strategy, TokenBatch,
    WeightProcessing, load,
};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "burnlens: mechanistic interpretability of GPT-2 in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt (greedy, sampling or beam search).
    Generate(GenerateArgs),
    /// Write a prompt's token ids, string tokens, top-k predictions (JSON) and full logits (.npy).
    Logits(LogitsArgs),
    /// Regenerate the fixtures that Rust makes.
    Fixtures(FixturesArgs),
    /// Run a prompt and save hook activations (TransformerLens names) as safetensors.
    Cache(CacheArgs),
    /// Activation patching sweeps on a clean/corrupted pair: result.json, SVG heatmaps, index.html.
    Patch(PatchArgs),
    /// ROME's causal tracing of a prompt or a file of facts: result.json, SVG heatmaps, index.html.
    Trace(trace::TraceArgs),
    /// Gradient attribution of a continuation to its prompt (saliency, input x gradient, IG).
    Attribute(attribute::AttributeArgs),
    /// Layer gradient x activation in every block over a file of facts, by ROME's token groups.
    AttributeLayers(layers::LayersArgs),
    /// The logit lens of a prompt: top tokens per layer and position, an answer across layers.
    Lens(lens::LensArgs),
    /// The token(s) that, prepended to a target string, minimise its perplexity.
    Prepend(prepend::PrependArgs),
    /// A steering vector from two prompts, and generation with and without it.
    Steer(steer::SteerArgs),
    /// Attention-head analysis over a text file: concentration ranking and one head's patterns.
    Heads(heads::HeadsArgs),
    /// Candidates at every position, pool similarity, and embedding swaps or noise.
    Probe(probe::ProbeArgs),
    /// Train the model organism (planted facts, in-context retrieval), or evaluate it (--eval).
    Organism(organism::OrganismArgs),
    /// ROME edits of CounterFact cases (edit, evaluate, revert), with ROME's scores.
    Rome(rome::RomeArgs),
    /// Run a recipe: a TOML file naming a command and its options (see recipes/).
    Run(recipe::RunArgs),
}

#[derive(Args)]
struct PatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The clean prompt.
    #[arg(long)]
    clean: String,
    /// The corrupted prompt (must tokenize to the clean prompt's length).
    #[arg(long)]
    corrupted: String,
    /// The clean answer (one token, e.g. " Paris").
    #[arg(long)]
    answer: String,
    /// The foil (one token).
    #[arg(long)]
    foil: String,
    /// Comma-separated sweeps: resid_pre, resid_mid, resid_post, attn_out, mlp_out,
    /// head_out_all_pos, head_q_all_pos, head_k_all_pos, head_v_all_pos, head_pattern_all_pos,
    /// head_out_by_pos, head_pattern_by_pos, or block_every / head_all_pos_every.
    #[arg(long, default_value = "block_every")]
    sweeps: String,
    /// Also estimate every sweep by attribution patching (one forward and one backward) and
    /// report its correlation with the exact values.
    #[arg(long)]
    attribution: bool,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct CacheArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Comma-separated hook names; `*` matches any characters among the default points
    /// (`blocks.0.*`, `*.hook_resid_pre`, `*` for all of them). Name on-request points
    /// (`blocks.0.attn.hook_result`, `blocks.1.hook_q_input`, …) in full.
    #[arg(long, default_value = "*")]
    hooks: String,
    /// Apply TransformerLens's weight processing (fold_ln, centering, fold_value_biases).
    #[arg(long)]
    processed: bool,
    /// Output file (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Which model, on which backend.
#[derive(Args)]
pub struct ModelArgs {
    /// A local directory in Hugging Face layout, or a hub id (needs `--features hub`).
    #[arg(long, default_value = "fixtures/tiny-gpt2")]
    pub model: String,
    /// Backend: ndarray, flex or wgpu.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Prepend <|endoftext|> as BOS (TransformerLens's default; transformers' is not to).
    #[arg(long)]
    pub prepend_bos: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    /// Sample instead of greedy decoding.
    #[arg(long)]
    sample: bool,
    /// Sampling temperature (implies --sample).
    #[arg(long)]
    temperature: Option<f32>,
    /// Keep the k most probable tokens when sampling (implies --sample).
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling mass (implies --sample).
    #[arg(long)]
    top_p: Option<f32>,
    /// Beam search with this many beams.
    #[arg(long)]
    num_beams: Option<usize>,
    /// Beam search early stopping: true, false or never.
    #[arg(long, default_value = "false")]
    early_stopping: String,
    /// Beam search length penalty.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f32,
    /// Number of sequences to return.
    #[arg(long, default_value_t = 1)]
    num_return_sequences: usize,
    /// Lower each token's logit by this times its count among the generated tokens.
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Do not stop at <|endoftext|>.
    #[arg(long)]
    ignore_eos: bool,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Output path stem: writes STEM.json and STEM.npy ([pos, vocab] float32).
    #[arg(long)]
    out: PathBuf,
    /// Number of top predictions at the last position.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
}

#[derive(Args)]
struct FixturesArgs {
    /// Write a random-weight checkpoint with GPT-2 small's shapes (HF layout) into DIR.
    /// Used by loading tests and benchmarks; never committed.
    #[arg(long, value_name = "DIR")]
    gpt2_small_random: Option<PathBuf>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Training and the experiments allocate and free tensors of a few MB at every step; glibc's
/// malloc returns such blocks to the kernel and faults in zeroed pages for the next (page
/// clearing was 8% of a training step's profile). mimalloc keeps them: 40 organism steps ran
/// about 11% faster (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    // Cargo runs xtask from the workspace root; make relative fixture paths work from anywhere.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if std::env::current_dir().is_ok_and(|d| !d.join("fixtures").is_dir()) {
        std::env::set_current_dir(&root).context("changing to the workspace root")?;
    }
    dispatch(Cli::parse().command)
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Generate(a) => generate(a),
        Command::Logits(a) => logits(a),
        Command::Fixtures(a) => fixtures(a),
        Command::Cache(a) => cache(a),
        Command::Patch(a) => patch(a),
        Command::Trace(a) => trace::trace(a),
        Command::Lens(a) => lens::lens(a),
        Command::Attribute(a) => attribute::run(a),
        Command::AttributeLayers(a) => layers::run(a),
        Command::Prepend(a) => prepend::run(a),
        Command::Steer(a) => steer::run(a),
        Command::Heads(a) => heads::run(a),
        Command::Probe(a) => probe::run(a),
        Command::Organism(a) => organism::run(a),
        Command::Rome(a) => rome::run(a),
        Command::Run(a) => recipe::run(a),
    }
}

pub(crate) fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn patch(a: PatchArgs) -> Result<()> {
    let started = Instant::now();
    let sweeps = Sweep::parse_list(&a.sweeps)?;
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
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:>22} [{bar:40}] {pos}/{len} patches ({eta})")
                .expect("template")
                .progress_chars("=> "),
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
    let result = serde_json::json!({
        "experiment": "activation_patching",
        "model": lm.dir, "backend": backend.name(), "git_commit": git_commit(),
        "clean": a.clean, "corrupted": a.corrupted, "answer": a.answer, "foil": a.foil,
        "str_tokens": str_tokens, "clean_ids": t.clean.row(0), "corrupted_ids": t.corrupted.row(0),
        "metric": "normalized logit difference at the last position: (ld - ld_corrupted) / (ld_clean - ld_corrupted)",
        "clean_logit_diff": clean_ld, "corrupted_logit_diff": corrupt_ld,
        "sweeps": results, "seconds_total": started.elapsed().as_secs_f64(),
    });
    std::fs::write(
        a.out.join("result.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    let summary = format!(
        "{:?} vs {:?}; logit difference{:?} − {:?}: clean {clean_ld:.4}, corrupted {corrupt_ld:.4}",
        a.clean, a.corrupted, a.answer, a.foil
    );
    std::fs::write(
        a.out.join("index.html"),
        report::index_html("Activation patching", &summary, &figures),
    )?;
    eprintln!(
        "wrote {}/{{result.json, index.html, {} SVGs}}",
        a.out.display(),
        figures.len()
    );
    Ok(())
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

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

fn cache(a: CacheArgs) -> Result<()> {
    let (mut lm, _) = open(&a.model)?;
    if a.processed {
        lm.model = lm
            .model
            .process_weights(WeightProcessing::transformer_lens());
    }
    let ids = lm.tokenizer.encode(&a.prompt, a.model.prepend_bos)?;
    let batch = TokenBatch::single(&ids)?;
    let n = lm.model.config.n_layer;
    let patterns: Vec<String> = a.hooks.split(',').map(|p| p.trim().to_string()).collect();
    let mut points = Vec::new();
    for pattern in &patterns {
        let matched: Vec<HookPoint> = if pattern.contains('*') {
            HookPoint::all(n)
                .into_iter()
                .filter(|p| glob(pattern, &p.to_string()))
                .collect()
        } else {
            let p: HookPoint = pattern.parse()?;
            p.check_layer(n)?;
            vec![p]
        };
        if matched.is_empty() {
            bail!("--hooks: {pattern:?} matches no hook point of this {n}-block model");
        }
        points.extend(matched);
    }
    points.sort();
    points.dedup();
    let (_, cache) = run_with_cache(&lm.model, &batch, Selector::points(points)?)?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    cache.save(&a.out)?;
    eprintln!(
        "cached {} hook points ({:.1} KiB) for {} tokens into {}",
        cache.len(),
        cache.memory_bytes() as f64 / 1024.0,
        ids.len(),
        a.out.display()
    );
    Ok(())
}

pub(crate) fn open(args: &ModelArgs) -> Result<(burnlens_model::LoadedModel, BackendKind)> {
    let backend: BackendKind = args.backend.parse()?;
    let device = backend.device()?;
    let t = Instant::now();
    let lm = load(&args.model, &device).with_context(|| format!("loading model {}", args.model))?;
    eprintln!(
        "loaded {} ({} layers, d_model {}, {} parameters) on {backend} in {:.2?}",
        lm.dir.display(),
        lm.model.config.n_layer,
        lm.model.config.n_embd,
        lm.model.num_params(),
        t.elapsed()
    );
    Ok((lm, backend))
}

fn generate(a: GenerateArgs) -> Result<()> {
    let (lm, _) = open(&a.model)?;
    let prompt = lm.tokenizer.encode(&a.prompt, a.model.prepend_bos)?;
    let strategy = if let Some(num_beams) = a.num_beams {
        let early_stopping = match a.early_stopping.as_str() {
            "true" => EarlyStopping::True,
            "false" => EarlyStopping::False,
            "never" => EarlyStopping::Never,
            other => bail!("--early-stopping must be true, false or never, got {other:?}"),
        };
        Strategy::Beam {
            num_beams,
            early_stopping,
            length_penalty: a.length_penalty,
        }
    } else if a.sample || a.temperature.is_some() || a.top_k.is_some() || a.top_p.is_some() {
        Strategy::Sample {
            temperature: a.temperature.unwrap_or(1.0),
            top_k: a.top_k,
            top_p: a.top_p,
        }
    } else {
        Strategy::Greedy
    };
    let cfg = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        strategy,
        num_return_sequences: a.num_return_sequences,
        frequency_penalty: a.frequency_penalty,
        eos_token_id: if a.ignore_eos {
            None
        } else {
            lm.model.config.eos_token_id.or(lm.tokenizer.endoftext_id())
        },
        seed: a.seed,
    };
    let spinner = ProgressBar::new_spinner()
        .with_message(format!("generating up to {} tokens", a.max_new_tokens));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let t = Instant::now();
    let out = lm.model.generate(&prompt, &cfg)?;
    spinner.finish_and_clear();
    eprintln!("generated in {:.2?}", t.elapsed());
    for (i, g) in out.iter().enumerate() {
        let text = lm.tokenizer.decode(&g.tokens)?;
        println!(
            "[{i}] score {:.4}{}",
            g.score,
            if g.finished { " (eos)" } else { "" }
        );
        println!("{}{}", a.prompt, text);
    }
    Ok(())
}

fn logits(a: LogitsArgs) -> Result<()> {
    let (lm, backend) = open(&a.model)?;
    let ids = lm.tokenizer.encode(&a.prompt, a.model.prepend_bos)?;
    let logits = lm.model.logits(&TokenBatch::single(&ids)?)?;
    let [_, t, v] = logits.dims();
    let data: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let last = &data[(t - 1) * v..];
    let max = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = last.iter().map(|x| (x - max).exp()).sum();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&x, &y| last[y].total_cmp(&last[x]));
    let top: Vec<serde_json::Value> = order
        .iter()
        .take(a.top_k)
        .map(|&i| {
            Ok(serde_json::json!({
                "id": i,
                "token": lm.tokenizer.str_tokens(&[i as u32])?[0],
                "logit": last[i],
                "prob": (last[i] - max).exp() / z,
            }))
        })
        .collect::<Result<_>>()?;
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    let npy = a.out.with_extension("npy");
    npy::write_f32(&npy, &[t, v], &data)?;
    let json = serde_json::json!({
        "model": lm.dir,
        "backend": backend.name(),
        "prompt": a.prompt,
        "prepend_bos": a.model.prepend_bos,
        "token_ids": ids,
        "str_tokens": lm.tokenizer.str_tokens(&ids)?,
        "top_k_last_position": top,
        "logits_npy": npy,
        "logits_shape": [t, v],
    });
    let json_path = a.out.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("wrote {} and {}", json_path.display(), npy.display());
    for entry in json["top_k_last_position"].as_array().into_iter().flatten() {
        println!(
            "{:>8.4}  {:?}",
            entry["prob"].as_f64().unwrap_or(0.0),
            entry["token"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn fixtures(a: FixturesArgs) -> Result<()> {
    let Some(dir) = a.gpt2_small_random else {
        bail!("nothing to do: pass --gpt2-small-random DIR");
    };
    let bar =
        ProgressBar::new(3).with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    bar.set_message("initialising GPT-2 small (random weights)");
    let device = BackendKind::Flex.device()?;
    device.seed(a.seed);
    let model = Gpt2Config::gpt2_small().init(&device);
    bar.inc(1);
    bar.set_message("writing config.json and model.safetensors");
    model.save_pretrained(&dir)?;
    bar.inc(1);
    bar.set_message("writing the GPT-2 tokenizer");
    let bpe = Path::new("fixtures/gpt2-bpe");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(bpe.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
    }
    Gpt2Tokenizer::from_dir(bpe)?.save(&dir.join("tokenizer.json"))?;
    bar.finish_with_message(format!(
        "wrote {} ({} parameters)",
        dir.display(),
        model.num_params()
    ));
    Ok(())
}
