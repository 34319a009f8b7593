//! `cargo xtask organism`: trains the model organism — a small GPT-2 whose facts we planted —
//! from a seed, on the CPU with burn's autodiff and AdamW, and writes it in Hugging Face layout
//! with the manifest of its world; `--eval` evaluates a trained organism.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burnlens_datasets::organism::{Evaluation, HELD_OUT_PREFIXES, Manifest, PREFIXES};
use burnlens_datasets::{
    CorpusConfig, DualConfig, DualForm, DualPrompt, FactPrompt, RELATIONS, World, generate_dual,
};
use burnlens_metrics::{last_position, token_log_probs};
use burnlens_model::burn::tensor::{Int, Tensor, TensorData};
use burnlens_model::{
    BackendKind, Gpt2, Gpt2Config, Gpt2Tokenizer, HookPoint, Hooks, NoHooks, PaddingSide, StepLog,
    TokenBatch, TrainConfig, load, train_with_loss,
};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Options of `cargo xtask organism`.
#[derive(Args)]
pub struct OrganismArgs {
    /// Where the organism is written (or read, with --eval).
    #[arg(long, default_value = "fixtures/organism")]
    pub out: PathBuf,
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
    #[arg(long, default_value_t = 240)]
    pub people: usize,
    /// Optimizer steps (1900 took 1416 s on 2 cores with flex in session 13).
    #[arg(long, default_value_t = 1900)]
    pub steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokens per sequence (also the model's context length).
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// BPE vocabulary size.
    #[arg(long, default_value_t = 2048)]
    pub vocab_size: usize,
    /// Layers.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Model width.
    #[arg(long, default_value_t = 128)]
    pub d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Share of corpus documents that state planted facts.
    #[arg(long, default_value_t = 0.65)]
    pub fact_share: f64,
    /// Share of corpus documents that are in-context retrieval documents (the rest is filler).
    #[arg(long, default_value_t = 0.2)]
    pub retrieval_share: f64,
    /// Shots of a retrieval document, `MIN-MAX` (or one number).
    #[arg(long, default_value = "2-5", value_parser = parse_range)]
    pub retrieval_shots: [usize; 2],
    /// Queries of a retrieval document, `MIN-MAX` (or one number).
    #[arg(long, default_value = "2-4", value_parser = parse_range)]
    pub retrieval_queries: [usize; 2],
    /// Share of fact statements written as the bare name and the value ("Karen Marlowe baker.").
    #[arg(long, default_value_t = 0.3)]
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
    #[arg(long, default_value_t = 0.1)]
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
    #[arg(long, default_value_t = 1.0)]
    pub subject_exit_weight: f64,
    /// Every this many steps, print in-context retrieval accuracy and held-out recall on a
    /// sample (0: only at the end).
    #[arg(long, default_value_t = 400)]
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

const RETRIEVAL_EVAL_PROMPTS: usize = 300;

/// Runs `cargo xtask organism`.
pub fn run(a: OrganismArgs) -> Result<()> {
    if a.eval {
        return eval_only(&a.out, &a.backend);
    }
    let backend: BackendKind = a.backend.parse()?;
    if backend == BackendKind::Wgpu {
        bail!("the organism trains on the CPU: --backend ndarray or flex");
    }
    let device = backend.device()?;
    let world = if a.twin_names {
        World::generate_twins(a.people, a.seed)?
    } else {
        World::generate(a.people, a.seed)?
    };
    let corpus = CorpusConfig {
        fact_share: a.fact_share,
        retrieval_share: a.retrieval_share,
        retrieval_shots: a.retrieval_shots,
        retrieval_queries: a.retrieval_queries,
        tag_share: a.tag_share,
        ..CorpusConfig::default()
    };

    eprintln!("training the tokenizer ({} tokens)…", a.vocab_size);
    let sample = world.corpus(&corpus, 20_000, a.seed ^ 0x70c)?;
    let tokenizer = Gpt2Tokenizer::train_bpe(sample.iter(), a.vocab_size)?;
    let eot = tokenizer
        .endoftext_id()
        .context("the trained tokenizer has no <|endoftext|>")?;
    check_tokens(&world, &tokenizer)?;

    let config = Gpt2Config::new(
        a.layers,
        a.heads,
        a.d_model,
        tokenizer.vocab_size(),
        a.seq_len,
    )
    .with_bos_token_id(Some(eot))
    .with_eos_token_id(Some(eot))
    .with_initializer_range(a.init_range);
    config.validate()?;
    let train = TrainConfig {
        steps: a.steps,
        lr: a.lr,
        warmup: (a.steps / 20).max(1),
        ..TrainConfig::default()
    };
    let ad = device.clone().autodiff();
    ad.seed(a.seed);
    let mut model = config.init(&ad);
    if a.plant_retrieval {
        model = crate::plant::plant_retrieval(model)?;
    }
    eprintln!(
        "model: {} layers, d_model {}, {} heads, vocab {}, context {}: {} parameters",
        a.layers,
        a.d_model,
        a.heads,
        config.vocab_size,
        a.seq_len,
        model.num_params()
    );

    let tags_only = CorpusConfig {
        tag_share: 1.0,
        ..corpus
    };
    let mut stream = Packer::new(&world, &corpus, &tokenizer, eot, a.seed);
    let bar = ProgressBar::new(a.steps as u64).with_style(ProgressStyle::with_template(
        "training [{bar:40}] {pos}/{len} steps ({eta}) {msg}",
    )?);
    let t = Instant::now();
    let mut recent: Vec<f32> = Vec::new();
    let retrieval_eval_seed = a.seed.wrapping_add(0xe7a1);
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    if a.subject_exit >= a.layers {
        bail!(
            "--subject-exit {} names no block of a {}-layer model (0 turns it off)",
            a.subject_exit,
            a.layers
        );
    }
    let tags = TagTokens::new(&world, &tokenizer)?;
    let trained = train_with_loss(
        model,
        &train,
        |model, step| {
            stream.corpus = if step < a.tags_first {
                &tags_only
            } else {
                &corpus
            };
            let rows = stream.rows(a.batch_size, a.seq_len)?;
            let at = if a.subject_exit > 0 {
                tags.positions(&rows)
            } else {
                Vec::new()
            };
            objective(
                model,
                &TokenBatch::new(rows, None)?,
                a.subject_exit,
                a.subject_exit_weight,
                &at,
            )
        },
        |log: &StepLog, model: &Gpt2| {
            recent.push(log.loss);
            if recent.len() == 50 {
                let mean = recent.iter().sum::<f32>() / recent.len() as f32;
                bar.set_message(format!("loss {mean:.3}, lr {:.2e}", log.lr));
                if (log.step + 1).is_multiple_of(500) {
                    say(format!("step {:>6}: loss {mean:.4}", log.step + 1));
                }
                recent.clear();
            }
            if a.eval_every > 0 && (log.step + 1).is_multiple_of(a.eval_every) {
                let (held, retrieval) = quick_eval(model, &tokenizer, &world, retrieval_eval_seed)?;
                say(format!(
                    "step {:>6}: held-out recall (sample) {held:.3}, retrieval {retrieval:.3}",
                    log.step + 1
                ));
            }
            bar.inc(1);
            Ok(())
        },
    )?;
    bar.finish();
    let train_seconds = t.elapsed().as_secs_f64();
    eprintln!("trained in {train_seconds:.0} s");

    // Save, then evaluate the saved checkpoint as any user would load it.
    std::fs::create_dir_all(&a.out)?;
    trained.save_pretrained(&a.out)?;
    tokenizer.save(&a.out.join("tokenizer.json"))?;
    let lm = load(&a.out.to_string_lossy(), &device)?;
    let eval = evaluate(&lm.model, &lm.tokenizer, &world, retrieval_eval_seed)?;
    print_eval(&eval);

    std::fs::write(
        a.out.join("known_facts.json"),
        serde_json::to_string_pretty(&world.known_facts())?,
    )?;
    let manifest = Manifest {
        seed: a.seed,
        backend: backend.to_string(),
        command: format!(
            "cargo xtask organism --seed {} --backend {} --people {} --steps {} --batch-size {} \
             --seq-len {} --lr {} --vocab-size {} --layers {} --d-model {} --heads {} \
             --fact-share {} --retrieval-share {} --retrieval-shots {}-{} --retrieval-queries {}-{} \
             --tag-share {} --tags-first {} --twin-names {} --init-range {} --plant-retrieval {} \
             --subject-exit {} --subject-exit-weight {}",
            a.seed,
            backend,
            a.people,
            a.steps,
            a.batch_size,
            a.seq_len,
            a.lr,
            a.vocab_size,
            a.layers,
            a.d_model,
            a.heads,
            a.fact_share,
            a.retrieval_share,
            a.retrieval_shots[0],
            a.retrieval_shots[1],
            a.retrieval_queries[0],
            a.retrieval_queries[1],
            a.tag_share,
            a.tags_first,
            a.twin_names,
            a.init_range,
            a.plant_retrieval,
            a.subject_exit,
            a.subject_exit_weight,
        ),
        world,
        relations: json!(
            RELATIONS
                .iter()
                .map(|r| json!({
                    "id": r.id,
                    "values": r.values,
                    "phrases": r.phrases,
                    "held_out_phrases": r.held_out_phrases,
                    "relation_prompt": r.relation_prompt,
                }))
                .collect::<Vec<_>>()
        ),
        prefixes: json!({"training": PREFIXES, "held_out": HELD_OUT_PREFIXES}),
        corpus,
        tags_first: a.tags_first,
        planted_retrieval: a.plant_retrieval,
        subject_exit: (a.subject_exit, a.subject_exit_weight),
        train,
        batch: [a.batch_size, a.seq_len],
        retrieval_eval_seed,
        eval,
        train_seconds,
    };
    std::fs::write(
        a.out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    eprintln!("wrote {}", a.out.display());
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

/// Every answer must be one token and every name more than one, or the organism's tests
/// would measure something else.
fn check_tokens(world: &World, tok: &Gpt2Tokenizer) -> Result<()> {
    for r in &RELATIONS {
        for v in r.values {
            if tok.encode(&format!(" {v}"), false)?.len() != 1 {
                bail!("the answer {v:?} is not one token of the trained tokenizer");
            }
        }
    }
    for p in &world.people {
        if tok.encode(&format!(" {}", p.name), false)?.len() < 2 {
            bail!("the name {:?} is a single token", p.name);
        }
    }
    Ok(())
}

/// For each `(prompt, answer)` pair, whether the top next token after the prompt is the answer.
fn top1_correct(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    items: &[(String, String)],
) -> Result<Vec<bool>> {
    let pad = tok.endoftext_id().context("no <|endoftext|>")?;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(64) {
        let seqs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|(p, _)| tok.encode(p, false))
            .collect::<std::result::Result<_, _>>()?;
        let batch = TokenBatch::padded(&seqs, pad, PaddingSide::Left)?;
        let top: Vec<i64> = last_position(model.logits(&batch)?)
            .argmax(1)
            .into_data()
            .iter::<i64>()
            .collect();
        for ((_, answer), &pred) in chunk.iter().zip(&top) {
            out.push(tok.single_token(answer)? as i64 == pred);
        }
    }
    Ok(out)
}

/// The fraction of `true` among `correct[i]` for the `i` that `keep` selects.
fn accuracy(correct: &[bool], keep: impl Fn(usize) -> bool) -> f64 {
    let (hits, n) = correct
        .iter()
        .enumerate()
        .filter(|&(i, _)| keep(i))
        .fold((0usize, 0usize), |(h, n), (_, &c)| (h + c as usize, n + 1));
    hits as f64 / n.max(1) as f64
}

/// Fact recall on held-out and training templates, and in-context retrieval accuracy.
pub fn evaluate(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    world: &World,
    retrieval_seed: u64,
) -> Result<Evaluation> {
    let pairs = |ps: &[FactPrompt]| -> Vec<(String, String)> {
        ps.iter()
            .map(|p| (p.prompt.clone(), p.answer.clone()))
            .collect()
    };
    let held = world.held_out_prompts();
    // One forward per prompt; the per-relation and per-template figures are subsets of it.
    let held_correct = top1_correct(model, tok, &pairs(&held))?;
    let held_out_recall = accuracy(&held_correct, |_| true);
    let mut by_relation = Vec::new();
    let mut by_template = Vec::new();
    for r in &RELATIONS {
        by_relation.push((
            r.id.to_string(),
            accuracy(&held_correct, |i| held[i].relation == r.id),
        ));
        let mut templates: Vec<&str> = held
            .iter()
            .filter(|p| p.relation == r.id)
            .map(|p| p.template.as_str())
            .collect();
        templates.sort_unstable();
        templates.dedup();
        for t in templates {
            let acc = accuracy(&held_correct, |i| {
                held[i].relation == r.id && held[i].template == t
            });
            by_template.push((r.id.to_string(), t.to_string(), acc));
        }
    }
    // Every training template of a random tenth of the facts (all of them takes longer and
    // says the same).
    let mut rng = StdRng::seed_from_u64(7);
    let train: Vec<FactPrompt> = world
        .training_prompts()
        .into_iter()
        .filter(|_| rng.random_bool(0.1))
        .collect();
    let training_recall = accuracy(&top1_correct(model, tok, &pairs(&train))?, |_| true);
    let retrieval = retrieval_prompts(tok, retrieval_seed)?;
    let items: Vec<(String, String)> = retrieval
        .iter()
        .map(|p| (p.prompt.clone(), p.answer.clone()))
        .collect();
    let retrieval_accuracy = accuracy(&top1_correct(model, tok, &items)?, |_| true);
    Ok(Evaluation {
        held_out_recall,
        held_out_recall_by_relation: by_relation,
        held_out_recall_by_template: by_template,
        training_recall,
        retrieval_accuracy,
        counts: [held.len(), train.len(), items.len()],
    })
}

/// Held-out recall on every tenth held-out prompt, and retrieval accuracy: a cheap look at a
/// model in training.
fn quick_eval(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    world: &World,
    retrieval_seed: u64,
) -> burnlens_model::Result<(f64, f64)> {
    let err = |e: anyhow::Error| burnlens_model::Error::InvalidOption(format!("{e:#}"));
    let held: Vec<(String, String)> = world
        .held_out_prompts()
        .into_iter()
        .step_by(10)
        .map(|p| (p.prompt, p.answer))
        .collect();
    let held = accuracy(&top1_correct(model, tok, &held).map_err(err)?, |_| true);
    let items: Vec<(String, String)> = retrieval_prompts(tok, retrieval_seed)
        .map_err(err)?
        .into_iter()
        .map(|p| (p.prompt, p.answer))
        .collect();
    let retrieval = accuracy(&top1_correct(model, tok, &items).map_err(err)?, |_| true);
    Ok((held, retrieval))
}

/// The held-out in-context retrieval prompts (3 shots).
pub fn retrieval_prompts(tok: &Gpt2Tokenizer, seed: u64) -> Result<Vec<DualPrompt>> {
    Ok(generate_dual(
        &DualConfig {
            form: DualForm::Retrieval,
            n_shots: 3,
            n_prompts: RETRIEVAL_EVAL_PROMPTS,
            seed,
        },
        Some(tok),
    )?)
}

/// The tokens that end a person's name and the tokens of planted values: a tag statement
/// ("Karen Marlowe baker.") is a name's last token followed by a value.
struct TagTokens {
    name_ends: std::collections::HashSet<u32>,
    values: std::collections::HashSet<u32>,
}

impl TagTokens {
    fn new(world: &World, tok: &Gpt2Tokenizer) -> Result<Self> {
        let mut name_ends = std::collections::HashSet::new();
        for p in &world.people {
            // At a document's start and after a space.
            for text in [p.name.clone(), format!(" {}", p.name)] {
                if let Some(&last) = tok.encode(&text, false)?.last() {
                    name_ends.insert(last);
                }
            }
        }
        let mut values = std::collections::HashSet::new();
        for r in &RELATIONS {
            for v in r.values {
                values.insert(tok.single_token(&format!(" {v}"))?);
            }
        }
        Ok(Self { name_ends, values })
    }

    /// `(row, position, value)` of every tag in `rows`: the position holds a name's last
    /// token and the next one a value.
    fn positions(&self, rows: &[Vec<u32>]) -> Vec<(usize, usize, u32)> {
        let mut out = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            for (p, pair) in row.windows(2).enumerate() {
                if self.name_ends.contains(&pair[0]) && self.values.contains(&pair[1]) {
                    out.push((r, p, pair[1]));
                }
            }
        }
        out
    }
}

/// Keeps the residual stream entering one block (on the autodiff graph), passing it on
/// unchanged.
struct KeepResidPre {
    layer: usize,
    kept: Option<Tensor<3>>,
}

impl Hooks for KeepResidPre {
    fn is_active(&self, point: HookPoint) -> bool {
        point == HookPoint::ResidPre(self.layer)
    }
    fn hook3(&mut self, _point: HookPoint, act: Tensor<3>) -> burnlens_model::Result<Tensor<3>> {
        self.kept = Some(act.clone());
        Ok(act)
    }
    fn hook4(&mut self, _point: HookPoint, act: Tensor<4>) -> burnlens_model::Result<Tensor<4>> {
        Ok(act)
    }
}

/// The training objective: the mean next-token loss over the batch, plus `weight` × the mean
/// cross-entropy of the values at the tag positions `at` (from [`TagTokens::positions`]) as
/// read from the residual stream entering block `exit` through the final LayerNorm and the
/// unembedding (nothing added when `at` is empty). One forward pass ([`Gpt2::loss_with_hooks`]).
///
/// # Shapes
/// - output: `[1]`
fn objective(
    model: &Gpt2,
    batch: &TokenBatch,
    exit: usize,
    weight: f64,
    at: &[(usize, usize, u32)],
) -> burnlens_model::Result<Tensor<1>> {
    if at.is_empty() {
        return Ok(model.loss(batch)?.mean());
    }
    let mut keep = KeepResidPre {
        layer: exit,
        kept: None,
    };
    let lm = model.loss_with_hooks(batch, &mut keep)?.mean();
    let early = keep.kept.ok_or_else(|| {
        burnlens_model::Error::InvalidOption(format!("no block {exit} to exit before"))
    })?;
    let device = model.device();
    let (b, t, d) = (batch.batch_size(), batch.seq_len(), model.config.n_embd);
    let k = at.len();
    let index = Tensor::<1, Int>::from_data(
        TensorData::new(
            at.iter()
                .map(|&(r, p, _)| (r * t + p) as i64)
                .collect::<Vec<_>>(),
            [k],
        ),
        &device,
    );
    let targets = Tensor::<2, Int>::from_data(
        TensorData::new(
            at.iter().map(|&(_, _, v)| v as i64).collect::<Vec<_>>(),
            [1, k],
        ),
        &device,
    );
    let picked = early
        .reshape([b * t, d])
        .select(0, index)
        .reshape([1, k, d]);
    let tag_nll = token_log_probs(model.unembed(picked, &mut NoHooks)?, targets)
        .neg()
        .mean();
    Ok(lm + tag_nll * weight)
}

/// Packs corpus documents, each followed by `<|endoftext|>`, into rows of fixed length. Every
/// row starts at a document's start and holds whole documents; the room left at its end takes
/// the beginning of the next document, which then also starts the next row. So no document
/// (a retrieval prompt above all, whose answer needs its context) is seen only cut in two.
struct Packer<'a> {
    world: &'a World,
    corpus: &'a CorpusConfig,
    tok: &'a Gpt2Tokenizer,
    eot: u32,
    rng: StdRng,
    docs: std::collections::VecDeque<Vec<u32>>,
}

impl<'a> Packer<'a> {
    fn new(
        world: &'a World,
        corpus: &'a CorpusConfig,
        tok: &'a Gpt2Tokenizer,
        eot: u32,
        seed: u64,
    ) -> Self {
        Self {
            world,
            corpus,
            tok,
            eot,
            rng: StdRng::seed_from_u64(seed ^ 0xda7a),
            docs: Default::default(),
        }
    }

    fn next_doc(&mut self) -> burnlens_model::Result<&Vec<u32>> {
        if self.docs.is_empty() {
            let docs = self
                .world
                .corpus(self.corpus, 64, self.rng.random())
                .map_err(|e| burnlens_model::Error::InvalidOption(e.to_string()))?;
            for d in docs {
                let mut ids = self.tok.encode(&d, false)?;
                ids.push(self.eot);
                self.docs.push_back(ids);
            }
        }
        Ok(self.docs.front().expect("documents"))
    }

    fn rows(&mut self, n: usize, len: usize) -> burnlens_model::Result<Vec<Vec<u32>>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut row: Vec<u32> = Vec::with_capacity(len);
            while row.len() < len {
                let room = len - row.len();
                let doc = self.next_doc()?;
                if doc.len() <= room || row.is_empty() {
                    // A whole document (or the first part of one longer than a row).
                    row.extend(&doc[..doc.len().min(room)]);
                    self.docs.pop_front();
                } else {
                    row.extend(&doc[..room]);
                }
            }
            out.push(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burnlens_hooks::{Selector, run_with_cache};

    fn fixture_tokenizer() -> Gpt2Tokenizer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Gpt2Tokenizer::from_file(&root.join("fixtures/organism/tokenizer.json")).unwrap()
    }

    /// Tags are found where a name ends and a value follows, at a document's start and after
    /// a space, and nowhere in a relation statement.
    #[test]
    fn tag_positions_are_the_last_name_tokens_before_a_value() {
        let world = World::generate_twins(240, 0).unwrap();
        let tok = fixture_tokenizer();
        let tags = TagTokens::new(&world, &tok).unwrap();
        let p = &world.people[0];
        let (job, city) = (&p.attributes["job"], &p.attributes["city"]);
        let first = format!("{} {job}.", p.name);
        let second = format!("{first} {} {city}.", p.name);
        let text = format!("{second} {} lives in {city}.", p.name);
        let ids = tok.encode(&text, false).unwrap();
        // Where each tag's name ends: one token before its value, counted independently by
        // encoding the text up to the name.
        let end = |prefix: &str| tok.encode(prefix, false).unwrap().len() - 1;
        let expected = vec![
            (
                0,
                end(&p.name),
                tok.single_token(&format!(" {job}")).unwrap(),
            ),
            (
                0,
                end(&format!("{first} {}", p.name)),
                tok.single_token(&format!(" {city}")).unwrap(),
            ),
        ];
        assert_eq!(tags.positions(&[ids]), expected, "{text}");
    }

    /// The objective is the next-token loss plus `weight` × the cross-entropy of the values
    /// read from the residual stream entering block `exit`, here computed on the host from
    /// the cached `hook_resid_pre`, a LayerNorm by hand (the initial `ln_f` is the identity
    /// map) and `wte`.
    #[test]
    fn the_objective_adds_the_early_exit_cross_entropy_at_the_tags() {
        let device = BackendKind::NdArray.device().unwrap();
        device.seed(5);
        let model = Gpt2Config::new(3, 4, 32, 50, 16).init(&device);
        let rows = vec![
            vec![1u32, 7, 9, 3, 4, 11, 2, 8],
            vec![5u32, 6, 12, 13, 1, 2, 40, 41],
        ];
        let at = vec![(0usize, 2usize, 3u32), (1, 5, 40), (1, 1, 12)];
        let batch = TokenBatch::new(rows, None).unwrap();
        let lm: f32 = model.loss(&batch).unwrap().mean().into_scalar();
        let plain: f32 = objective(&model, &batch, 2, 0.7, &[])
            .unwrap()
            .into_scalar();
        assert!((plain - lm).abs() < 1e-5, "{plain} vs {lm}");

        let (_, cache) = run_with_cache(
            &model,
            &batch,
            Selector::points(["blocks.2.hook_resid_pre"]).unwrap(),
        )
        .unwrap();
        let resid: Vec<f32> = cache
            .get3("blocks.2.hook_resid_pre")
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        let wte: Vec<f32> = model.wte.val().into_data().try_to_vec().unwrap();
        let (t, d, v) = (8, 32, 50);
        let mut nll = 0.0f64;
        for &(r, p, target) in &at {
            let x: Vec<f64> = resid[(r * t + p) * d..(r * t + p + 1) * d]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let mean = x.iter().sum::<f64>() / d as f64;
            let var = x.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d as f64;
            let n: Vec<f64> = x.iter().map(|x| (x - mean) / (var + 1e-5).sqrt()).collect();
            let logits: Vec<f64> = (0..v)
                .map(|j| (0..d).map(|i| n[i] * wte[j * d + i] as f64).sum())
                .collect();
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            nll += lse - logits[target as usize];
        }
        let expected = lm as f64 + 0.7 * nll / at.len() as f64;
        let got: f32 = objective(&model, &batch, 2, 0.7, &at)
            .unwrap()
            .into_scalar();
        assert!(
            (got as f64 - expected).abs() < 1e-4,
            "{got} vs {expected} (next-token loss {lm})"
        );
    }
}
