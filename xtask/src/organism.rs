//! `cargo xtask organism`: trains the model organism (`burnlens_organism::train`) from a seed,
//! on the CPU, and writes it in Hugging Face layout with the manifest of its world; `--eval`
//! evaluates a trained organism. The training itself is the library's; this module is flags,
//! progress and files.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burnlens_datasets::CorpusConfig;
use burnlens_datasets::organism::{Evaluation, Manifest};
use burnlens_model::{BackendKind, load};
use burnlens_organism::{OrganismConfig, TrainEvent, evaluate, train};
use clap::Args;

/// Options of `cargo xtask organism`.
#[derive(Args)]
pub struct OrganismArgs {
    /// Where the organism is written (or read, with --eval) [default: the repository's
    /// fixtures/organism].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only evaluate the organism in --out (fact recall on held-out templates, in-context
    /// retrieval), and compare with the numbers recorded when it was trained.
    #[arg(long)]
    pub eval: bool,
    /// Seed of the world, the corpus, the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Backend: ndarray or flex (training runs on the CPU).
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Invented people (a few hundred).
    #[arg(long, default_value_t = 240, value_parser = crate::checks::positive)]
    pub people: usize,
    /// Optimizer steps (1900 took 1416 s on 2 cores with flex in session 13).
    #[arg(long, default_value_t = 1900, value_parser = crate::checks::positive)]
    pub steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 32, value_parser = crate::checks::positive)]
    pub batch_size: usize,
    /// Tokens per sequence (also the model's context length).
    #[arg(long, default_value_t = 64, value_parser = crate::checks::positive)]
    pub seq_len: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3, value_parser = crate::checks::positive_f64)]
    pub lr: f64,
    /// BPE vocabulary size.
    #[arg(long, default_value_t = 2048, value_parser = crate::checks::positive)]
    pub vocab_size: usize,
    /// Layers.
    #[arg(long, default_value_t = 4, value_parser = crate::checks::positive)]
    pub layers: usize,
    /// Model width.
    #[arg(long, default_value_t = 128, value_parser = crate::checks::positive)]
    pub d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4, value_parser = crate::checks::positive)]
    pub heads: usize,
    /// Share of corpus documents that state planted facts.
    #[arg(long, default_value_t = 0.65, value_parser = crate::checks::fraction)]
    pub fact_share: f64,
    /// Share of corpus documents that are in-context retrieval documents (the rest is filler).
    #[arg(long, default_value_t = 0.2, value_parser = crate::checks::fraction)]
    pub retrieval_share: f64,
    /// Shots of a retrieval document, `MIN-MAX` (or one number).
    #[arg(long, default_value = "2-5", value_parser = parse_range)]
    pub retrieval_shots: [usize; 2],
    /// Queries of a retrieval document, `MIN-MAX` (or one number).
    #[arg(long, default_value = "2-4", value_parser = parse_range)]
    pub retrieval_queries: [usize; 2],
    /// Share of fact statements written as the bare name and the value ("Karen Marlowe baker.").
    #[arg(long, default_value_t = 0.3, value_parser = crate::checks::fraction)]
    pub tag_share: f64,
    /// People come in twins whose names are the same two words in the other order ("Karen
    /// Marlowe", "Marlowe Karen"), so that who is meant is known only at the last name token.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub twin_names: bool,
    /// For this many first steps every fact statement is a tag ("Karen Marlowe baker."): a
    /// curriculum in which the person is looked up at the last name token before any relation
    /// phrase is seen, so that later statements can read the looked-up value from there
    /// (ROME's subject site). Alone it did not keep the lookup there (docs/ORGANISM.md);
    /// with `--subject-exit` it does.
    #[arg(long, default_value_t = 400)]
    pub tags_first: usize,
    /// Standard deviation of the random initialisation (`initializer_range`). GPT-2's 0.02
    /// lets the names' embeddings collapse towards one vector; 0.1 keeps them apart.
    #[arg(long, default_value_t = 0.1, value_parser = crate::checks::non_negative_f64)]
    pub init_range: f64,
    /// Start from the planted retrieval circuit (see `plant.rs` and docs/ORGANISM.md): offset
    /// heads in layer 0, a matching and copying head in layer 1, output projections at zero.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub plant_retrieval: bool,
    /// Plant the fact lookup at the subject (ROME's MLP site): at every tag statement ("Karen
    /// Marlowe baker.") the residual stream entering this block, read through the final
    /// LayerNorm and the unembedding, must already predict the value at the last name token
    /// (an auxiliary cross-entropy added to the next-token loss). The looked-up values are then
    /// in the subject's residual stream by the middle layers, where a later attention head can
    /// read them. 0 turns it off.
    #[arg(long, default_value_t = 2)]
    pub subject_exit: usize,
    /// Weight of the `--subject-exit` loss (the mean over tag positions) against the
    /// next-token loss (the mean over all positions).
    #[arg(long, default_value_t = 1.0, value_parser = crate::checks::non_negative_f64)]
    pub subject_exit_weight: f64,
    /// Every this many steps, print in-context retrieval accuracy and held-out recall on a
    /// sample (0: only at the end).
    #[arg(long, default_value_t = 400, value_parser = crate::checks::positive)]
    pub eval_every: usize,
}

/// Parses `MIN-MAX` or a single number into an inclusive range.
fn parse_range(s: &str) -> std::result::Result<[usize; 2], String> {
    let num = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("{s:?} is not MIN-MAX or a number"))
    };
    let r = match s.split_once('-') {
        Some((a, b)) => [num(a)?, num(b)?],
        None => [num(s)?; 2],
    };
    if r[0] > r[1] {
        return Err(format!("{s:?}: the minimum exceeds the maximum"));
    }
    Ok(r)
}

impl OrganismArgs {
    /// The library's configuration of these flags.
    fn config(&self) -> OrganismConfig {
        OrganismConfig {
            seed: self.seed,
            people: self.people,
            twin_names: self.twin_names,
            corpus: CorpusConfig {
                fact_share: self.fact_share,
                retrieval_share: self.retrieval_share,
                retrieval_shots: self.retrieval_shots,
                retrieval_queries: self.retrieval_queries,
                tag_share: self.tag_share,
                ..CorpusConfig::default()
            },
            steps: self.steps,
            batch_size: self.batch_size,
            seq_len: self.seq_len,
            lr: self.lr,
            vocab_size: self.vocab_size,
            layers: self.layers,
            d_model: self.d_model,
            heads: self.heads,
            tags_first: self.tags_first,
            init_range: self.init_range,
            plant_retrieval: self.plant_retrieval,
            subject_exit: self.subject_exit,
            subject_exit_weight: self.subject_exit_weight,
            eval_every: self.eval_every,
        }
    }
}

/// Runs `cargo xtask organism`.
pub fn run(mut a: OrganismArgs) -> Result<()> {
    let out = a.out.take().unwrap_or_else(crate::models::organism_dir);
    a.out = Some(out.clone());
    if a.eval {
        return eval_only(&out, &a.backend);
    }
    let backend: BackendKind = a.backend.parse()?;
    if backend == BackendKind::Wgpu {
        bail!("the organism trains on the CPU: --backend ndarray or flex");
    }
    let device = backend.device()?;
    let config = a.config();
    let bar = crate::progress::bar(
        a.steps as u64,
        "training [{bar:40}] {pos}/{len} steps ({eta}) {msg}",
        "training steps",
    );
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    eprintln!("training the tokenizer ({} tokens)…", a.vocab_size);
    let mut recent: Vec<f32> = Vec::new();
    let trained = train(&config, &device, |event| {
        match event {
            TrainEvent::Built { params, vocab } => say(format!(
                "model: {} layers, d_model {}, {} heads, vocab {vocab}, context {}: {params} parameters",
                a.layers, a.d_model, a.heads, a.seq_len
            )),
            TrainEvent::Step(log) => {
                recent.push(log.loss);
                if recent.len() == 50 {
                    let mean = recent.iter().sum::<f32>() / recent.len() as f32;
                    bar.set_message(format!("loss {mean:.3}, lr {:.2e}", log.lr));
                    if (log.step + 1).is_multiple_of(500) {
                        say(format!("step {:>6}: loss {mean:.4}", log.step + 1));
                    }
                    recent.clear();
                }
                bar.inc(1);
            }
            TrainEvent::Eval {
                step,
                held_out,
                retrieval,
            } => say(format!(
                "step {step:>6}: held-out recall (sample) {held_out:.3}, retrieval {retrieval:.3}"
            )),
        }
        Ok(())
    })?;
    bar.finish();
    eprintln!("trained in {:.0} s", trained.train_seconds);

    // Save, then evaluate the saved checkpoint as any user would load it.
    std::fs::create_dir_all(&out)?;
    trained.model.save_pretrained(&out)?;
    trained.tokenizer.save(&out.join("tokenizer.json"))?;
    let lm = load(&out.to_string_lossy(), &device)?;
    let eval = evaluate(
        &lm.model,
        &lm.tokenizer,
        &trained.world,
        config.retrieval_eval_seed(),
    )?;
    print_eval(&eval);
    std::fs::write(
        out.join("known_facts.json"),
        serde_json::to_string_pretty(&trained.world.known_facts())?,
    )?;
    // The command as it was run (a recipe's, or the flags given): it cannot drift from the
    // flags, and the manifest records every setting it resolved to beside it.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = format!("cargo xtask {}", argv.join(" "));
    let manifest = trained.manifest(&config, eval, backend.name(), command);
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn eval_only(dir: &Path, backend: &str) -> Result<()> {
    let backend: BackendKind = backend.parse()?;
    let device = backend.device()?;
    let manifest = Manifest::load(dir)?;
    let lm = load(&dir.to_string_lossy(), &device)?;
    let eval = evaluate(
        &lm.model,
        &lm.tokenizer,
        &manifest.world,
        manifest.retrieval_eval_seed,
    )?;
    print_eval(&eval);
    println!(
        "recorded at training: held-out recall {:.4}, retrieval {:.4}",
        manifest.eval.held_out_recall, manifest.eval.retrieval_accuracy
    );
    Ok(())
}

fn print_eval(e: &Evaluation) {
    println!(
        "held-out fact recall: {:.4} ({} prompts); by relation: {}",
        e.held_out_recall,
        e.counts[0],
        e.held_out_recall_by_relation
            .iter()
            .map(|(r, v)| format!("{r} {v:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (r, t, v) in &e.held_out_recall_by_template {
        println!("  {r:<10} {t:<40} {v:.4}");
    }
    println!(
        "training-template recall: {:.4} ({} prompts)",
        e.training_recall, e.counts[1]
    );
    println!(
        "in-context retrieval: {:.4} ({} prompts)",
        e.retrieval_accuracy, e.counts[2]
    );
}
