//! Training the organism: the tokenizer trained on the world's corpus, the model initialised
//! (with the planted retrieval circuit), and [`train_with_loss`] on packed corpus rows with
//! the next-token loss plus the subject-exit loss at tag statements.

use std::time::Instant;

use burnlens_datasets::organism::{Evaluation, HELD_OUT_PREFIXES, Manifest, PREFIXES};
use burnlens_datasets::{CorpusConfig, RELATIONS, World};
use burnlens_metrics::token_log_probs;
use burnlens_model::burn::tensor::{Device, Int, Tensor, TensorData};
use burnlens_model::{
    Gpt2, Gpt2Config, Gpt2Tokenizer, HookPoint, Hooks, NoHooks, StepLog, TokenBatch, TrainConfig,
    train_with_loss,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::eval::{check_tokens, quick_eval};

/// Everything that determines a trained organism; `Default` is the committed one's
/// (`fixtures/organism`, docs/ORGANISM.md says why each value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrganismConfig {
    /// Seed of the world, the corpus, the initialisation and the data order.
    pub seed: u64,
    /// Invented people.
    pub people: usize,
    /// People come in twins whose names are the same two words in the other order.
    pub twin_names: bool,
    /// The corpus mixture.
    pub corpus: CorpusConfig,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Tokens per sequence (also the model's context length).
    pub seq_len: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// BPE vocabulary size.
    pub vocab_size: usize,
    /// Layers.
    pub layers: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Steps at the start during which every fact statement is a tag.
    pub tags_first: usize,
    /// Standard deviation of the random initialisation.
    pub init_range: f64,
    /// Start from the planted retrieval circuit ([`plant_retrieval`](crate::plant_retrieval)).
    pub plant_retrieval: bool,
    /// The block whose input must predict tag values at the last name token (0: off).
    pub subject_exit: usize,
    /// Weight of the subject-exit loss.
    pub subject_exit_weight: f64,
    /// Every this many steps, a quick evaluation is reported (0: none).
    pub eval_every: usize,
}

impl Default for OrganismConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            people: 240,
            twin_names: true,
            corpus: CorpusConfig {
                fact_share: 0.65,
                retrieval_share: 0.2,
                retrieval_shots: [2, 5],
                retrieval_queries: [2, 4],
                tag_share: 0.3,
                ..CorpusConfig::default()
            },
            steps: 1900,
            batch_size: 32,
            seq_len: 64,
            lr: 3e-3,
            vocab_size: 2048,
            layers: 4,
            d_model: 128,
            heads: 4,
            tags_first: 400,
            init_range: 0.1,
            plant_retrieval: true,
            subject_exit: 2,
            subject_exit_weight: 1.0,
            eval_every: 400,
        }
    }
}

impl OrganismConfig {
    /// The seed of the held-out retrieval prompts evaluated.
    pub fn retrieval_eval_seed(&self) -> u64 {
        self.seed.wrapping_add(0xe7a1)
    }
}

/// What training reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// The model was built: its parameter count and vocabulary size.
    Built {
        /// Parameters.
        params: usize,
        /// Vocabulary size of the trained tokenizer.
        vocab: usize,
    },
    /// One optimizer step.
    Step(StepLog),
    /// A quick evaluation (every `eval_every` steps): held-out recall on a sample, retrieval.
    Eval {
        /// Steps done.
        step: usize,
        /// Held-out recall on every tenth held-out prompt.
        held_out: f64,
        /// In-context retrieval accuracy.
        retrieval: f64,
    },
}

/// A trained organism, before it is written.
pub struct Trained {
    /// The model (on the autodiff device it trained on).
    pub model: Gpt2,
    /// The trained tokenizer.
    pub tokenizer: Gpt2Tokenizer,
    /// The world it was trained on.
    pub world: World,
    /// The optimizer settings.
    pub train: TrainConfig,
    /// Wall-clock seconds of training.
    pub train_seconds: f64,
}

impl Trained {
    /// The manifest of this organism: `config`, its world, the evaluation `eval` (of the
    /// checkpoint as written), the backend it trained on and the `command` that rebuilds it.
    pub fn manifest(
        self,
        config: &OrganismConfig,
        eval: Evaluation,
        backend: &str,
        command: String,
    ) -> Manifest {
        Manifest {
            seed: config.seed,
            backend: backend.to_string(),
            command,
            world: self.world,
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
            corpus: config.corpus,
            tags_first: config.tags_first,
            planted_retrieval: config.plant_retrieval,
            subject_exit: (config.subject_exit, config.subject_exit_weight),
            train: self.train,
            batch: [config.batch_size, config.seq_len],
            retrieval_eval_seed: config.retrieval_eval_seed(),
            eval,
            train_seconds: self.train_seconds,
        }
    }
}

/// The tokenizer and the model's shape for `config` and its world.
fn build(config: &OrganismConfig, world: &World) -> Result<(Gpt2Tokenizer, Gpt2Config)> {
    let sample = world.corpus(&config.corpus, 20_000, config.seed ^ 0x70c)?;
    let tokenizer = Gpt2Tokenizer::train_bpe(sample.iter(), config.vocab_size)?;
    let eot = tokenizer
        .endoftext_id()
        .ok_or_else(|| Error::Vocabulary("no <|endoftext|>".into()))?;
    check_tokens(world, &tokenizer)?;
    let model = Gpt2Config::new(
        config.layers,
        config.heads,
        config.d_model,
        tokenizer.vocab_size(),
        config.seq_len,
    )
    .with_bos_token_id(Some(eot))
    .with_eos_token_id(Some(eot))
    .with_initializer_range(config.init_range);
    model.validate()?;
    Ok((tokenizer, model))
}

/// Trains the organism of `config` on `device` (a CPU device; its autodiff twin runs the
/// training), telling `observe` of each step and evaluation.
///
/// # Errors
/// A subject exit past the model's blocks, a model the planted circuit does not fit, a
/// tokenizer that splits answers or names, and training errors (including the observer's).
pub fn train(
    config: &OrganismConfig,
    device: &Device,
    mut observe: impl FnMut(&TrainEvent) -> Result<()>,
) -> Result<Trained> {
    if config.subject_exit >= config.layers {
        return Err(Error::BadOption {
            option: "subject_exit",
            value: config.subject_exit.to_string(),
            expected: format!(
                "a block of the {}-layer model (0 turns it off)",
                config.layers
            ),
        });
    }
    let world = if config.twin_names {
        World::generate_twins(config.people, config.seed)?
    } else {
        World::generate(config.people, config.seed)?
    };
    let (tokenizer, shape) = build(config, &world)?;
    let eot = shape.eos_token_id.expect("set by build");
    let train = TrainConfig {
        steps: config.steps,
        lr: config.lr,
        warmup: (config.steps / 20).max(1),
        ..TrainConfig::default()
    };
    let ad = device.clone().autodiff();
    ad.seed(config.seed);
    let mut model = shape.init(&ad);
    if config.plant_retrieval {
        model = crate::plant::plant_retrieval(model)?;
    }
    observe(&TrainEvent::Built {
        params: model.num_params(),
        vocab: shape.vocab_size,
    })?;
    let tags_only = CorpusConfig {
        tag_share: 1.0,
        ..config.corpus
    };
    let mut stream = Packer::new(&world, &config.corpus, &tokenizer, eot, config.seed);
    let tags = TagTokens::new(&world, &tokenizer)?;
    let started = Instant::now();
    let mut failed: Option<Error> = None;
    let result = train_with_loss(
        model,
        &train,
        |model, step| {
            stream.corpus = if step < config.tags_first {
                &tags_only
            } else {
                &config.corpus
            };
            let rows = stream
                .rows(config.batch_size, config.seq_len)
                .map_err(to_model)?;
            let at = if config.subject_exit > 0 {
                tags.positions(&rows)
            } else {
                Vec::new()
            };
            let batch = TokenBatch::new(rows, None)?;
            objective(
                model,
                &batch,
                config.subject_exit,
                config.subject_exit_weight,
                &at,
            )
            .map_err(to_model)
        },
        |log: &StepLog, model: &Gpt2| {
            let mut report = || -> Result<()> {
                observe(&TrainEvent::Step(*log))?;
                if config.eval_every > 0 && (log.step + 1).is_multiple_of(config.eval_every) {
                    let (held_out, retrieval) =
                        quick_eval(model, &tokenizer, &world, config.retrieval_eval_seed())?;
                    observe(&TrainEvent::Eval {
                        step: log.step + 1,
                        held_out,
                        retrieval,
                    })?;
                }
                Ok(())
            };
            report().map_err(|e| {
                let message = e.to_string();
                failed = Some(e);
                burnlens_model::Error::InvalidOption(message)
            })
        },
    );
    let model = match (result, failed) {
        (_, Some(e)) => return Err(e),
        (r, None) => r?,
    };
    Ok(Trained {
        model,
        tokenizer,
        world,
        train,
        train_seconds: started.elapsed().as_secs_f64(),
    })
}

/// This crate's error as the model's, for the closures [`train_with_loss`] calls: its own
/// model errors unwrapped, anything else by its message.
fn to_model(e: Error) -> burnlens_model::Error {
    match e {
        Error::Model(m) => m,
        other => burnlens_model::Error::InvalidOption(other.to_string()),
    }
}

/// The tokens that end a person's name and the tokens of planted values: a tag statement
/// ("Karen Marlowe baker.") is a name's last token followed by a value.
pub(crate) struct TagTokens {
    name_ends: std::collections::HashSet<u32>,
    values: std::collections::HashSet<u32>,
}

impl TagTokens {
    pub(crate) fn new(world: &World, tok: &Gpt2Tokenizer) -> Result<Self> {
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
    pub(crate) fn positions(&self, rows: &[Vec<u32>]) -> Vec<(usize, usize, u32)> {
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
pub(crate) fn objective(
    model: &Gpt2,
    batch: &TokenBatch,
    exit: usize,
    weight: f64,
    at: &[(usize, usize, u32)],
) -> Result<Tensor<1>> {
    if at.is_empty() {
        return Ok(model.loss(batch)?.mean());
    }
    let mut keep = KeepResidPre {
        layer: exit,
        kept: None,
    };
    let lm = model.loss_with_hooks(batch, &mut keep)?.mean();
    let early = keep.kept.ok_or_else(|| Error::BadOption {
        option: "subject_exit",
        value: exit.to_string(),
        expected: format!("a block of the model's {}", model.config.n_layer),
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
pub(crate) struct Packer<'a> {
    world: &'a World,
    pub(crate) corpus: &'a CorpusConfig,
    tok: &'a Gpt2Tokenizer,
    eot: u32,
    rng: StdRng,
    docs: std::collections::VecDeque<Vec<u32>>,
}

impl<'a> Packer<'a> {
    pub(crate) fn new(
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

    fn next_doc(&mut self) -> Result<&Vec<u32>> {
        if self.docs.is_empty() {
            let docs = self.world.corpus(self.corpus, 64, self.rng.random())?;
            for d in docs {
                let mut ids = self.tok.encode(&d, false)?;
                ids.push(self.eot);
                self.docs.push_back(ids);
            }
        }
        Ok(self.docs.front().expect("documents"))
    }

    pub(crate) fn rows(&mut self, n: usize, len: usize) -> Result<Vec<Vec<u32>>> {
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
    use burnlens_model::{BackendKind, Gpt2Config};

    fn fixture_tokenizer() -> Gpt2Tokenizer {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
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
        let model = {
            let _rng = crate::RNG.lock().unwrap_or_else(|e| e.into_inner());
            device.seed(5);
            Gpt2Config::new(3, 4, 32, 50, 16).init(&device)
        };
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
