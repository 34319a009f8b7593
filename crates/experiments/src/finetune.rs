//! Fine-tuning localisation: teach the model new facts by plain gradient steps on chosen
//! parameters, and record where the gradient and the weight change land.
//!
//! The objective is the new target's negative log-likelihood after each fact's prompt (the
//! target tokens only, as ROME's fine-tuning baselines train), averaged over the facts, one
//! step per batch of all of them. Parameters are split into groups (the embeddings, each
//! block's attention with its LayerNorm, each block's MLP with its LayerNorm, the final
//! LayerNorm); a run frees some groups and leaves the rest as they were. After each step,
//! every group's gradient norm (of that step, frozen groups included: where the gradient
//! points) and weight-change norm (from the start), each fact's probability and rank of its
//! new target, and whether every fact is answered (the new target's first token ranks first).
//!
//! GPT-2's unembedding is tied to the token embedding: its gradient is added to the
//! embedding's (transposed), as in the model crate's training loop, and the tie is restored
//! after each step.

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use burnlens_model::{Gpt2, Gpt2Tokenizer, TokenBatch};
use serde::{Deserialize, Serialize};

use crate::counterfact::spaced;
use crate::error::{Error, Result};
use crate::rome::RomeRequest;

/// The optimiser of a fine-tuning run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneOptimizer {
    /// Plain gradient descent: the weight change is the learning rate times the summed
    /// gradients, so where the change lands is where the gradient pointed.
    Sgd,
    /// Adam (β = 0.9, 0.999), as ROME's fine-tuning baselines use.
    Adam,
}

/// Settings of [`finetune`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// The parameter groups trained (names from [`param_groups`]); the rest stay frozen.
    pub free: Vec<String>,
    /// The learning rate.
    pub lr: f64,
    /// The optimiser.
    pub optimizer: FinetuneOptimizer,
    /// Steps at most; a run stops earlier once every fact is answered.
    pub max_steps: usize,
}

/// The parameter groups of a model, in order: `embed` (token and position embeddings, the tied
/// unembedding), `attn.L` and `mlp.L` for each block `L` (each with the LayerNorm before it),
/// `ln_f`.
pub fn param_groups(n_layer: usize) -> Vec<String> {
    let mut out = vec!["embed".to_string()];
    for l in 0..n_layer {
        out.push(format!("attn.{l}"));
        out.push(format!("mlp.{l}"));
    }
    out.push("ln_f".into());
    out
}

/// The groups a run frees, from a spec: `all`, a group's name, or `block.L` (both of block
/// `L`'s groups); several joined by `+` (`mlp.0+mlp.1`).
///
/// # Errors
/// A name that is none of these (the groups there are named).
pub fn free_groups(spec: &str, n_layer: usize) -> Result<Vec<String>> {
    let groups = param_groups(n_layer);
    let mut out: Vec<String> = Vec::new();
    for part in spec.split('+').map(str::trim) {
        let add: Vec<String> = if part == "all" {
            groups.clone()
        } else if let Some(l) = part.strip_prefix("block.") {
            match l.parse::<usize>() {
                Ok(l) if l < n_layer => vec![format!("attn.{l}"), format!("mlp.{l}")],
                _ => vec![],
            }
        } else if groups.iter().any(|g| g == part) {
            vec![part.to_string()]
        } else {
            vec![]
        };
        if add.is_empty() {
            return Err(Error::BadOption {
                option: "free",
                value: part.to_string(),
                expected: format!(
                    "all, block.L, or a parameter group of this model: {}",
                    groups.join(", ")
                ),
            });
        }
        for g in add {
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    Ok(out)
}

/// The parameters of one group: vectors and matrices (the tied unembedding is not listed: its
/// gradient joins the embedding's).
struct Group {
    vectors: Vec<Param<Tensor<1>>>,
    matrices: Vec<Param<Tensor<2>>>,
}

fn group(model: &Gpt2, name: &str) -> Group {
    let ln = |n: &burnlens_model::model::LayerNorm| vec![n.gamma.clone(), n.beta.clone()];
    let linear = |l: &burn::nn::Linear, v: &mut Vec<Param<Tensor<1>>>| {
        if let Some(b) = &l.bias {
            v.push(b.clone());
        }
        l.weight.clone()
    };
    if name == "embed" {
        return Group {
            vectors: vec![],
            matrices: vec![model.wte.clone(), model.wpe.clone()],
        };
    }
    if name == "ln_f" {
        return Group {
            vectors: ln(&model.ln_f),
            matrices: vec![],
        };
    }
    let (kind, l) = name
        .split_once('.')
        .expect("a group name from param_groups");
    let b = &model.blocks[l.parse::<usize>().expect("a layer")];
    if kind == "attn" {
        let mut v = ln(&b.ln_1);
        let m = vec![
            linear(&b.attn.c_attn, &mut v),
            linear(&b.attn.c_proj, &mut v),
        ];
        Group {
            vectors: v,
            matrices: m,
        }
    } else {
        let mut v = ln(&b.ln_2);
        let m = vec![linear(&b.mlp.c_fc, &mut v), linear(&b.mlp.c_proj, &mut v)];
        Group {
            vectors: v,
            matrices: m,
        }
    }
}

impl Group {
    fn count(&self) -> usize {
        self.vectors
            .iter()
            .map(|p| p.val().shape().num_elements())
            .chain(self.matrices.iter().map(|p| p.val().shape().num_elements()))
            .sum()
    }

    /// The values (of a model on a plain device).
    fn values(&self) -> (Vec<Tensor<1>>, Vec<Tensor<2>>) {
        (
            self.vectors.iter().map(Param::val).collect(),
            self.matrices.iter().map(Param::val).collect(),
        )
    }
}

fn sq<const D: usize>(t: Tensor<D>) -> f64 {
    f64::from(t.powf_scalar(2.0).sum().into_scalar::<f32>())
}

/// What one step did (step 0: the model before any update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneStep {
    /// Updates made so far.
    pub step: usize,
    /// The objective before this step's update (`None` at step 0).
    pub loss: Option<f64>,
    /// Each group's gradient norm in this step's update (every group; `None` at step 0).
    pub grad_norms: Option<Vec<f64>>,
    /// Each group's weight-change norm from the start.
    pub change_norms: Vec<f64>,
    /// Each fact's probability of its new target's first token after its prompt.
    pub probs: Vec<f64>,
    /// Each fact's rank of that token (0: the top prediction).
    pub ranks: Vec<usize>,
    /// Whether every fact's new target ranks first.
    pub answered: bool,
}

/// A finished fine-tuning run.
#[derive(Debug, Clone)]
pub struct Finetuned {
    /// The groups, in the order of the norms.
    pub groups: Vec<String>,
    /// Each group's parameter count.
    pub group_sizes: Vec<usize>,
    /// Each group's weight norm before training.
    pub group_norms: Vec<f64>,
    /// Step 0 (before training) and every step after.
    pub steps: Vec<FinetuneStep>,
    /// The trained model (on the inner device).
    pub model: Gpt2,
}

impl Finetuned {
    /// The first step after which every fact was answered, if any.
    pub fn learned_at(&self) -> Option<usize> {
        self.steps.iter().find(|s| s.answered).map(|s| s.step)
    }
}

/// The facts' token rows and where their targets sit.
struct Facts {
    rows: Vec<Vec<u32>>,
    /// Per fact: (first target position, target length).
    targets: Vec<(usize, usize)>,
    /// Per fact: the prompt's length and the target's first token.
    first: Vec<(usize, u32)>,
}

fn facts(model: &Gpt2, tok: &Gpt2Tokenizer, requests: &[RomeRequest]) -> Result<Facts> {
    let mut out = Facts {
        rows: vec![],
        targets: vec![],
        first: vec![],
    };
    for (index, r) in requests.iter().enumerate() {
        let wrap = |e: Error| Error::Request {
            index,
            source: Box::new(e),
        };
        if !r.prompt.contains("{}") {
            return Err(wrap(Error::Template {
                which: "prompt",
                template: r.prompt.clone(),
                problem: "has no {} for the subject",
            }));
        }
        let prompt = tok.encode(&r.filled(), false)?;
        let target = tok.encode(&spaced(&r.target_new), false)?;
        if prompt.is_empty() || target.is_empty() {
            return Err(wrap(Error::Empty {
                what: if prompt.is_empty() {
                    "the prompt"
                } else {
                    "the target"
                },
                hint: "",
            }));
        }
        let row: Vec<u32> = prompt.iter().chain(&target).copied().collect();
        if row.len() > model.config.n_positions {
            return Err(wrap(Error::TooLong {
                what: format!("the prompt {:?} with its target", r.filled()),
                tokens: row.len(),
                limit: model.config.n_positions,
                room: "tokens of the model's context",
            }));
        }
        out.targets.push((prompt.len(), target.len()));
        out.first.push((prompt.len(), target[0]));
        out.rows.push(row);
    }
    Ok(out)
}

/// Each fact's probability and rank of its new target's first token.
fn read_out(model: &Gpt2, facts: &Facts, pad: u32) -> Result<(Vec<f64>, Vec<usize>)> {
    let prompts: Vec<Vec<u32>> = facts
        .rows
        .iter()
        .zip(&facts.first)
        .map(|(r, &(n, _))| r[..n].to_vec())
        .collect();
    let batch = TokenBatch::padded(&prompts, pad, burnlens_model::PaddingSide::Left)?;
    let last = burnlens_metrics::last_position(model.logits(&batch)?);
    let probs = burn::tensor::activation::softmax(last, 1);
    let [b, v] = probs.dims();
    let p: Vec<f32> = probs.into_data().iter::<f32>().collect();
    let mut out = (Vec::with_capacity(b), Vec::with_capacity(b));
    for (i, &(_, t)) in facts.first.iter().enumerate() {
        let row = &p[i * v..(i + 1) * v];
        let pt = row[t as usize];
        out.0.push(f64::from(pt));
        out.1.push(row.iter().filter(|&&x| x > pt).count());
    }
    Ok(out)
}

/// Every group's starting values, to measure the change from.
struct Start {
    groups: Vec<String>,
    values: Vec<(Vec<Tensor<1>>, Vec<Tensor<2>>)>,
}

impl Start {
    fn new(model: &Gpt2, groups: Vec<String>) -> Self {
        let values = groups.iter().map(|g| group(model, g).values()).collect();
        Self { groups, values }
    }

    /// Each group's norm (from the start: the weight norm).
    fn norms(&self) -> Vec<f64> {
        self.values
            .iter()
            .map(|(v, w)| {
                (v.iter().map(|t| sq(t.clone())).sum::<f64>()
                    + w.iter().map(|t| sq(t.clone())).sum::<f64>())
                .sqrt()
            })
            .collect()
    }

    /// Each group's change from the start in `model` (on a plain device).
    fn changes(&self, model: &Gpt2) -> Vec<f64> {
        self.groups
            .iter()
            .zip(&self.values)
            .map(|(g, (v0, w0))| {
                let (v, w) = group(model, g).values();
                let dv: f64 = v.into_iter().zip(v0).map(|(a, b)| sq(a - b.clone())).sum();
                let dw: f64 = w.into_iter().zip(w0).map(|(a, b)| sq(a - b.clone())).sum();
                (dv + dw).sqrt()
            })
            .collect()
    }

    /// Each group's gradient norm in `grads` (of `model`, on the autodiff device).
    fn grad_norms(&self, model: &Gpt2, grads: &GradientsParams) -> Vec<f64> {
        self.groups
            .iter()
            .map(|g| {
                let gr = group(model, g);
                let v: f64 = gr
                    .vectors
                    .iter()
                    .filter_map(|p| grads.get::<1>(p.id))
                    .map(sq)
                    .sum();
                let w: f64 = gr
                    .matrices
                    .iter()
                    .filter_map(|p| grads.get::<2>(p.id))
                    .map(sq)
                    .sum();
                (v + w).sqrt()
            })
            .collect()
    }
}

/// The objective's inputs on the autodiff device: the batch of facts (right-padded), its
/// next tokens, and the mask that is 1 where a position predicts a target token.
fn objective_inputs(
    facts: &Facts,
    pad: u32,
    ad: &burn::tensor::Device,
) -> Result<(TokenBatch, Tensor<2, Int>, Tensor<2>)> {
    let batch = TokenBatch::padded(&facts.rows, pad, burnlens_model::PaddingSide::Right)?;
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let mut mask = vec![0.0f32; b * (t - 1)];
    for (i, &(p0, n)) in facts.targets.iter().enumerate() {
        for p in p0 - 1..p0 - 1 + n {
            mask[i * (t - 1) + p] = 1.0;
        }
    }
    let ids: Vec<i64> = batch.ids().iter().map(|&x| i64::from(x)).collect();
    let targets = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), ad).slice([0..b, 1..t]);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t - 1]), ad);
    Ok((batch, targets, mask))
}

/// Tied weights: d/d wte of L(wte, wteᵀ) is g_wte + g_wuᵀ.
fn tie_gradients(model: &Gpt2, grads: &mut GradientsParams) {
    if let Some(g_u) = grads.remove::<2>(model.w_u.id) {
        let g_e: Tensor<2> = match grads.remove::<2>(model.wte.id) {
            Some(g) => g + g_u.transpose(),
            None => g_u.transpose(),
        };
        grads.register(model.wte.id, g_e);
    }
}

/// The gradients of the free groups' parameters only.
fn keep_free(grads: &mut GradientsParams, free: &[Group]) -> GradientsParams {
    let mut kept = GradientsParams::new();
    for g in free {
        for p in &g.vectors {
            if let Some(t) = grads.remove::<1>(p.id) {
                kept.register(p.id, t);
            }
        }
        for p in &g.matrices {
            if let Some(t) = grads.remove::<2>(p.id) {
                kept.register(p.id, t);
            }
        }
    }
    kept
}

/// Checks a run's settings: facts to teach, a usable learning rate, known groups.
fn check(requests: &[RomeRequest], config: &FinetuneConfig, groups: &[String]) -> Result<()> {
    if requests.is_empty() {
        return Err(Error::Empty {
            what: "the list of facts to teach",
            hint: "",
        });
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return Err(Error::BadOption {
            option: "lr",
            value: config.lr.to_string(),
            expected: "a positive learning rate".into(),
        });
    }
    if let Some(g) = config.free.iter().find(|g| !groups.contains(g)) {
        return Err(Error::BadOption {
            option: "free",
            value: g.clone(),
            expected: format!("a parameter group: {}", groups.join(", ")),
        });
    }
    Ok(())
}

/// Fine-tunes a copy of `model` on `requests` (each prompt followed by its new target) with
/// `config`'s free groups, optimiser and learning rate, calling `observe` with the step and
/// the model as it then is (on the inner device) after step 0 and after every update; stops after the first step at which every fact is answered, or after
/// `max_steps`.
///
/// # Errors
/// No request, a free group that is not one, a learning rate that is not positive and finite,
/// a prompt without `{}` or with an empty target, a row longer than the context (each naming
/// the request), forward errors, and `observe`'s.
pub fn finetune(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    requests: &[RomeRequest],
    config: &FinetuneConfig,
    mut observe: impl FnMut(&FinetuneStep, &Gpt2) -> Result<()>,
) -> Result<Finetuned> {
    let groups = param_groups(model.config.n_layer);
    check(requests, config, &groups)?;
    let pad = tok.endoftext_id().ok_or(Error::MissingToken {
        token: "<|endoftext|>",
        needed_for: "padding the facts",
    })?;
    let facts = facts(model, tok, requests)?;
    let ad = model.device().autodiff();
    let start = Start::new(model, groups.clone());
    let group_sizes: Vec<usize> = groups.iter().map(|g| group(model, g).count()).collect();
    let mut m = model.clone().fork(&ad).train();
    let (batch, targets, mask) = objective_inputs(&facts, pad, &ad)?;
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let count = requests.len() as f64;
    let mut optim = match config.optimizer {
        FinetuneOptimizer::Sgd => SgdConfig::new().init(),
        FinetuneOptimizer::Adam => AdamConfig::new().init(),
    };
    let record = |m: &Gpt2, step, loss, grad_norms| -> Result<(FinetuneStep, Gpt2)> {
        let valid = m.valid();
        let (probs, ranks) = read_out(&valid, &facts, pad)?;
        let s = FinetuneStep {
            step,
            loss,
            grad_norms,
            change_norms: start.changes(&valid),
            answered: ranks.iter().all(|&r| r == 0),
            probs,
            ranks,
        };
        Ok((s, valid))
    };
    let (first, valid) = record(&m, 0, None, None)?;
    observe(&first, &valid)?;
    let mut steps = vec![first];
    while steps.len() <= config.max_steps && !steps.last().is_some_and(|s| s.answered) {
        let logits = m.logits(&batch)?.slice([0..b, 0..t - 1]);
        let lp = burnlens_metrics::token_log_probs(logits, targets.clone());
        let objective = (lp * mask.clone()).sum().neg() / count;
        let loss = f64::from(objective.clone().into_scalar::<f32>());
        let mut grads = GradientsParams::from_grads(objective.backward(), &m);
        tie_gradients(&m, &mut grads);
        let grad_norms = start.grad_norms(&m, &grads);
        let free: Vec<Group> = config.free.iter().map(|g| group(&m, g)).collect();
        let kept = keep_free(&mut grads, &free);
        m = optim.step(config.lr, m, kept);
        m.w_u = Param::from_tensor(m.wte.val().transpose().inner().autodiff());
        let (s, valid) = record(&m, steps.len(), Some(loss), Some(grad_norms))?;
        observe(&s, &valid)?;
        steps.push(s);
    }
    Ok(Finetuned {
        group_norms: start.norms(),
        groups,
        group_sizes,
        steps,
        model: m.valid(),
    })
}
