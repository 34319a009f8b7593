//! ROME's causal tracing (Meng et al., 2022, `experiments/causal_trace.py`), on the batched
//! patching engine.
//!
//! - **Corruption**: noise is added to the token embeddings (`hook_embed`, the `wte` output,
//!   before position embeddings) of the subject's tokens, in `samples` copies of the prompt.
//!   ROME runs them as rows `1..=n` of one batch whose row 0 is the clean prompt; here the
//!   clean run is computed once and the `n` corrupted rows form the baseline batch, which gives
//!   the same numbers. The noise is one tensor `[samples, subject tokens, d_model]`, the same
//!   for every restoration (ROME reseeds before each run), seeded or replayed from a file.
//! - **Restoration**: the clean hidden state at one token is copied into every corrupted row:
//!   the block output (`state`, one layer) or the MLP or attention output at every layer of a
//!   window around the layer (`mlp`, `attn`: `max(0, L − w/2) .. min(n_layers, L + ⌈w/2⌉)`).
//! - **Score**: the mean over corrupted rows of p(answer) at the last position, where the
//!   answer is the clean run's top prediction; tables are `[tokens, layers]`, next to the
//!   clean (high) and corrupted (low) scores.

use std::ops::Range;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use burnlens_hooks::intervene::{gaussian, uniform};
use burnlens_hooks::{Act, Intervention, Selector, run_with_cache};
use burnlens_metrics::{last_position, token_probs};
use burnlens_model::weights::{
    RawTensor, first_non_finite, read_safetensors_as, write_safetensors,
};
use burnlens_model::{Gpt2, Gpt2Tokenizer, HookKind, HookPoint, TokenBatch};
use serde::{Deserialize, Serialize};

use crate::engine::batched::{self, Baseline};
use crate::engine::{Job, Patch};
use crate::error::{Error, Result};
use crate::metric::LastPosition;
use crate::progress::Observer;

/// What a restoration copies from the clean run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceKind {
    /// The block output (`hook_resid_post`) at one layer.
    State,
    /// The MLP output (`hook_mlp_out`) over a window of layers.
    Mlp,
    /// The attention output (`hook_attn_out`) over a window of layers.
    Attn,
}

impl TraceKind {
    /// The three kinds, in ROME's plotting order.
    pub const ALL: [TraceKind; 3] = [TraceKind::State, TraceKind::Mlp, TraceKind::Attn];

    /// `"state"`, `"mlp"` or `"attn"`.
    pub fn name(&self) -> &'static str {
        match self {
            TraceKind::State => "state",
            TraceKind::Mlp => "mlp",
            TraceKind::Attn => "attn",
        }
    }

    /// The hook kind restored.
    pub fn hook_kind(&self) -> HookKind {
        match self {
            TraceKind::State => HookKind::ResidPost,
            TraceKind::Mlp => HookKind::MlpOut,
            TraceKind::Attn => HookKind::AttnOut,
        }
    }

    /// The layers restored for the table's column `layer`: ROME's window centred on it and
    /// clipped at the model's ends, so any window runs on any model.
    pub fn layers(&self, layer: usize, window: usize, n_layers: usize) -> Range<usize> {
        match self {
            TraceKind::State => layer..layer + 1,
            _ => layer.saturating_sub(window / 2)..(layer + window.div_ceil(2)).min(n_layers),
        }
    }
}

impl std::str::FromStr for TraceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "state" | "resid_post" | "hidden" => Ok(TraceKind::State),
            "mlp" | "mlp_out" => Ok(TraceKind::Mlp),
            "attn" | "attn_out" => Ok(TraceKind::Attn),
            _ => Err(Error::UnknownTraceKind(s.to_string())),
        }
    }
}

/// The distribution of the embedding noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "distribution", rename_all = "lowercase")]
pub enum NoiseSpec {
    /// `level × N(0, 1)`: ROME's default, with `level` = 3 × the embeddings' standard
    /// deviation ([`subject_embedding_std`]).
    Gaussian {
        /// The standard deviation.
        level: f32,
    },
    /// `level × U(−1, 1)` (ROME's `u<level>` noise rule).
    Uniform {
        /// The half-width.
        level: f32,
    },
}

impl NoiseSpec {
    /// Seeded noise of `shape` (`[samples, subject tokens, d_model]`) drawn from this
    /// distribution.
    pub fn sample(&self, shape: [usize; 3], seed: u64, device: &burn::tensor::Device) -> Tensor<3> {
        let n = shape.iter().product();
        let values = match *self {
            NoiseSpec::Gaussian { level } => gaussian(n, level as f64, seed),
            NoiseSpec::Uniform { level } => uniform(n, level as f64, seed),
        };
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// Options of a causal trace; `Default` gives ROME's, and no observer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceConfig {
    /// Corrupted copies of the prompt (ROME's `samples`, 10).
    pub samples: usize,
    /// Width of the MLP / attention restoration window (10).
    pub window: usize,
    /// Replace the subject embeddings with the noise instead of adding it.
    pub replace: bool,
    /// Seed of the noise.
    pub seed: u64,
    /// The most rows (restorations × samples) one forward runs.
    pub max_rows: usize,
    /// Told `(restorations done, restorations in all)` as they complete.
    #[serde(skip)]
    pub observer: Observer,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            samples: 10,
            window: 10,
            replace: false,
            seed: 1,
            max_rows: 160,
            observer: Observer::none(),
        }
    }
}

/// A prompt to trace: its token ids and strings, and the subject's token range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracePrompt {
    /// The prompt text.
    pub text: String,
    /// The subject.
    pub subject: String,
    /// Token ids (no BOS, as ROME tokenizes).
    pub ids: Vec<u32>,
    /// Each token as a string.
    pub tokens: Vec<String>,
    /// The subject's tokens (every token overlapping its characters).
    pub subject_range: Range<usize>,
}

impl TracePrompt {
    /// Tokenizes `text` and finds `subject` in it.
    ///
    /// # Errors
    /// A subject that does not occur in the prompt, and tokenizer errors.
    pub fn new(tokenizer: &Gpt2Tokenizer, text: &str, subject: &str) -> Result<Self> {
        let (ids, subject_range) = tokenizer.encode_with_span(text, subject, false)?;
        Ok(Self {
            text: text.to_string(),
            subject: subject.to_string(),
            tokens: tokenizer.str_tokens(&ids)?,
            ids,
            subject_range,
        })
    }
}

/// The standard deviation of the token embeddings of `subjects` (each tokenized on its own,
/// no BOS), over every element: ROME's `collect_embedding_std`, whose 3× is the default noise
/// level.
///
/// # Errors
/// No subjects, a subject with no tokens, and tokenizer errors.
pub fn subject_embedding_std(
    model: &Gpt2,
    tokenizer: &Gpt2Tokenizer,
    subjects: &[&str],
) -> Result<f32> {
    let mut ids = Vec::new();
    for s in subjects {
        ids.extend(tokenizer.encode(s, false)?);
    }
    if ids.is_empty() {
        return Err(Error::Empty {
            what: "the list of subjects to measure the embeddings of",
            hint: "",
        });
    }
    let rows: Vec<f32> = model
        .token_embeddings(&ids)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float weights");
    let n = rows.len() as f64;
    let mean = rows.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = rows.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok(var.sqrt() as f32)
}

/// Writes the noise of several prompts as one safetensors file, tensor `noise.<i>` (f32) for
/// prompt `i`, as `scripts/reference/tracing_reference.py` writes it, so that either side can
/// replay the other's noise ([`load_noise`]).
///
/// # Errors
/// I/O errors.
pub fn save_noise(noises: &[Tensor<3>], path: &Path) -> Result<()> {
    let indexed: Vec<(usize, &Tensor<3>)> = noises.iter().enumerate().collect();
    save_noise_indexed(&indexed, path)
}

/// Writes the noise of some prompts of a dataset as one safetensors file, tensor `noise.<i>`
/// for prompt `i` of the whole dataset (what a shard of a sweep writes: its own prompts under
/// their indices in the dataset, so the files of all shards replay as one).
///
/// # Errors
/// I/O errors.
pub fn save_noise_indexed(noises: &[(usize, &Tensor<3>)], path: &Path) -> Result<()> {
    let raw = noises
        .iter()
        .map(|(i, noise)| {
            let t = RawTensor {
                shape: noise.dims().to_vec(),
                data: noise
                    .to_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("float noise"),
            };
            (format!("noise.{i}"), t)
        })
        .collect();
    write_safetensors(&raw, path)?;
    Ok(())
}

/// Reads the noise tensor `name` (`noise.<prompt index>`, as [`save_noise`] and the reference
/// script write it) from a safetensors file.
///
/// # Errors
/// A missing or malformed file, or no rank-3 tensor `name` in it.
pub fn load_noise(path: &Path, name: &str, device: &burn::tensor::Device) -> Result<Tensor<3>> {
    let tensors = read_safetensors_as(path, "the replayed noise file")?;
    let t = tensors.get(name).ok_or_else(|| Error::File {
        path: path.to_path_buf(),
        message: format!(
            "no tensor named {name:?} (it has {:?})",
            tensors.keys().collect::<Vec<_>>()
        ),
    })?;
    let [a, b, c]: [usize; 3] = t.shape.clone().try_into().map_err(|_| Error::Shape {
        what: format!("the noise {name} in {}", path.display()),
        got: t.shape.clone(),
        expected: "[samples, subject tokens, d_model]".into(),
    })?;
    if let Some((index, value)) = first_non_finite(&t.shape, &t.data) {
        return Err(Error::File {
            path: path.to_path_buf(),
            message: format!(
                "the noise {name} holds {value} at index {index:?}: noise must be finite"
            ),
        });
    }
    Ok(Tensor::from_data(
        TensorData::new(t.data.clone(), [a, b, c]),
        device,
    ))
}

/// One causal-trace table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceTable {
    /// What was restored.
    pub kind: TraceKind,
    /// The window (1 for `state`).
    pub window: usize,
    /// The layers each column restored, `[first, end)`: the window centred on the column's
    /// layer and clipped at the model's ends (ROME's `max(0, L − w/2) .. min(n, L + ⌈w/2⌉)`).
    pub column_layers: Vec<[usize; 2]>,
    /// p(answer) after each restoration, row-major `[tokens, layers]`.
    pub scores: Vec<f32>,
    /// Number of tokens (rows).
    pub n_tokens: usize,
    /// Number of layers (columns).
    pub n_layers: usize,
}

impl TraceTable {
    /// The score of restoring at `(token, layer)`.
    pub fn get(&self, token: usize, layer: usize) -> Option<f32> {
        (token < self.n_tokens && layer < self.n_layers)
            .then(|| self.scores[token * self.n_layers + layer])
    }
}

/// The causal trace of one prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CausalTrace {
    /// The prompt.
    pub prompt: TracePrompt,
    /// The clean run's top prediction at the last position.
    pub answer_id: u32,
    /// p(answer) in the clean run (ROME's `high_score`).
    pub high_score: f32,
    /// Mean p(answer) over the corrupted rows with nothing restored (`low_score`).
    pub low_score: f32,
    /// One table per kind asked for.
    pub tables: Vec<TraceTable>,
}

/// Refuses what would make [`causal_trace`] wrong or meaningless: a zero window or sample
/// count, a subject outside the prompt, noise of the wrong shape or not finite.
fn check_trace_inputs(
    model: &Gpt2,
    prompt: &TracePrompt,
    config: &TraceConfig,
    noise: &Tensor<3>,
) -> Result<()> {
    let d = model.config.n_embd;
    if config.window == 0 {
        return Err(Error::BadOption {
            option: "window",
            value: "0".into(),
            expected: "a restoration window of at least 1 layer (wider windows are clipped at \
                       the model's first and last layers, as ROME clips them)"
                .into(),
        });
    }
    let range = prompt.subject_range.clone();
    let (samples, sub) = (config.samples, range.len());
    if samples == 0 {
        return Err(Error::BadOption {
            option: "samples",
            value: "0".into(),
            expected: "at least one corrupted copy of the prompt".into(),
        });
    }
    if range.is_empty() || range.end > prompt.ids.len() {
        return Err(Error::Shape {
            what: format!("the subject tokens {range:?}"),
            got: vec![prompt.ids.len()],
            expected: "a non-empty range inside the prompt's tokens".into(),
        });
    }
    if noise.dims() != [samples, sub, d] {
        return Err(Error::Shape {
            what: "the noise".into(),
            got: noise.dims().to_vec(),
            expected: format!("[samples = {samples}, subject tokens = {sub}, d_model = {d}]"),
        });
    }
    let host = noise
        .to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    if let Some((index, value)) = first_non_finite(&[samples, sub, d], &host) {
        return Err(Error::BadOption {
            option: "noise",
            value: format!("{value} at index {index:?}"),
            expected: "finite noise (a finite, non-negative noise level)".into(),
        });
    }
    Ok(())
}

/// Traces one prompt: every (token, layer) restoration of every kind in `kinds`.
///
/// `noise` is `[samples, subject tokens, d_model]` ([`NoiseSpec::sample`] or [`load_noise`]);
/// `config.observer` hears of restorations as they complete.
///
/// # Errors
/// A window of zero, noise of the wrong shape, and forward errors.
pub fn causal_trace(
    model: &Gpt2,
    prompt: &TracePrompt,
    kinds: &[TraceKind],
    config: &TraceConfig,
    noise: &Tensor<3>,
) -> Result<CausalTrace> {
    let n_layers = model.config.n_layer;
    let d = model.config.n_embd;
    check_trace_inputs(model, prompt, config, noise)?;
    let range = prompt.subject_range.clone();
    let samples = config.samples;
    let t = prompt.ids.len();
    // The clean run: answer, high score, and the states to restore.
    let clean = TokenBatch::single(&prompt.ids)?;
    let selector = kinds
        .iter()
        .map(|k| Selector::kind(k.hook_kind()))
        .reduce(Selector::or)
        .unwrap_or_else(|| Selector::kind(HookKind::ResidPost));
    let (clean_logits, clean_cache) = run_with_cache(model, &clean, selector)?;
    let last = last_position(clean_logits);
    let answer_id = last.clone().argmax(1).into_scalar::<i64>() as u32;
    let high_score = token_probs(last, &[answer_id])?.into_scalar::<f32>();
    // The corrupted rows: noise on the subject's token embeddings.
    let device = model.device();
    let full = Tensor::<3>::zeros([samples, t, d], &device)
        .slice_assign([0..samples, range.clone(), 0..d], noise.clone());
    let corrupt = if config.replace {
        Intervention::replace(Act::R3(full)).at(range.clone().collect::<Vec<_>>())
    } else {
        Intervention::custom(move |_, act| match act {
            Act::R3(x) => Ok(Act::R3(x + full.clone())),
            Act::R4(_) => Err("the token embedding is rank 3".to_string()),
        })
    };
    let batch = TokenBatch::new(vec![prompt.ids.clone(); samples], None)?;
    let base = Baseline::new(model, &batch, Some((HookPoint::Embed, corrupt)))?;
    let answers = vec![answer_id; samples];
    let metric = LastPosition::new(|logits: Tensor<3>| {
        Ok(token_probs(last_position(logits), &answers)?.mean())
    });
    let low_score = token_probs(last_position(base.logits.clone()), &answers)?
        .mean()
        .into_scalar::<f32>();
    let total = kinds.len() * t * n_layers;
    let mut tables = Vec::with_capacity(kinds.len());
    for (k, kind) in kinds.iter().enumerate() {
        let points: Vec<HookPoint> = (0..n_layers)
            .map(|l| kind.hook_kind().at(l))
            .collect::<Result<_, _>>()
            .map_err(Error::from)?;
        let patches: Vec<Patch> = (0..t)
            .flat_map(|token| {
                (0..n_layers).map(move |layer| Patch {
                    index: token * n_layers + layer,
                    layers: kind.layers(layer, config.window, n_layers),
                    pos: Some(token),
                    head: None,
                })
            })
            .collect();
        let job = Job {
            points: &points,
            clean: &clean_cache,
            patches: &patches,
            metric: &metric,
        };
        let stage = config.observer.stage(k * t * n_layers, total);
        let scores = batched::run(model, &base, &job, config.max_rows, &stage)?;
        tables.push(TraceTable {
            kind: *kind,
            window: if *kind == TraceKind::State {
                1
            } else {
                config.window
            },
            column_layers: (0..n_layers)
                .map(|l| {
                    let r = kind.layers(l, config.window, n_layers);
                    [r.start, r.end]
                })
                .collect(),
            scores,
            n_tokens: t,
            n_layers,
        });
    }
    Ok(CausalTrace {
        prompt: prompt.clone(),
        answer_id,
        high_score,
        low_score,
        tables,
    })
}

/// ROME's six token groups of the dataset roll-up, in its order.
pub const TOKEN_GROUPS: [&str; 6] = [
    "First subject token",
    "Middle subject tokens",
    "Last subject token",
    "First subsequent token",
    "Further tokens",
    "Last token",
];

/// A `[tokens, layers]` table of one prompt, with the prompt's subject tokens.
#[derive(Debug, Clone)]
pub struct TokenTable<'a> {
    /// Values, row-major `[tokens, layers]`.
    pub values: &'a [f32],
    /// Tokens (rows).
    pub n_tokens: usize,
    /// Layers (columns).
    pub n_layers: usize,
    /// The subject's tokens.
    pub subject_range: Range<usize>,
}

/// ROME's six-group roll-up of per-prompt `[tokens, layers]` tables: for each group
/// ([`TOKEN_GROUPS`]), the mean over the group's token rows of every prompt, minus `offset`, and
/// `1.96 · std / sqrt(prompts)` per layer. Causal tracing subtracts the mean low score; an
/// attribution sweep subtracts nothing.
///
/// # Errors
/// No tables, tables with different numbers of layers, a subject range outside its table.
pub fn group_rollup(tables: &[TokenTable], offset: f64) -> Result<Vec<GroupEffect>> {
    if tables.is_empty() {
        return Err(Error::Empty {
            what: "the list of tables to average",
            hint: "",
        });
    }
    let n_layers = tables[0].n_layers;
    let mut groups: Vec<Vec<&[f32]>> = vec![Vec::new(); 6];
    for t in tables {
        if t.n_layers != n_layers {
            return Err(Error::Shape {
                what: "a table's layers".into(),
                got: vec![t.n_layers],
                expected: format!("[{n_layers}], the first table's: tables of one model"),
            });
        }
        let range = &t.subject_range;
        if range.is_empty() || range.end > t.n_tokens || t.values.len() != t.n_tokens * n_layers {
            return Err(Error::Shape {
                what: format!("a table with subject tokens {range:?}"),
                got: vec![t.n_tokens, n_layers, t.values.len()],
                expected:
                    "[tokens, layers, tokens × layers values] with the subject inside the tokens"
                        .into(),
            });
        }
        let row = |i: usize| &t.values[i * n_layers..(i + 1) * n_layers];
        let (first_e, first_a) = (range.start, range.end);
        let (last_e, last_a) = (first_a - 1, t.n_tokens - 1);
        groups[0].push(row(first_e));
        groups[1].extend((first_e + 1..last_e).map(row));
        groups[2].push(row(last_e));
        groups[3].push(row(first_a.min(last_a)));
        groups[4].extend((first_a + 1..last_a).map(row));
        groups[5].push(row(last_a));
    }
    let n = tables.len() as f64;
    Ok(groups
        .into_iter()
        .zip(TOKEN_GROUPS)
        .map(|(rows, name)| {
            let count = rows.len();
            let (mut aie, mut interval) = (Vec::new(), Vec::new());
            if count > 0 {
                for l in 0..n_layers {
                    let m = rows.iter().map(|r| f64::from(r[l])).sum::<f64>() / count as f64;
                    let var = rows
                        .iter()
                        .map(|r| (f64::from(r[l]) - m).powi(2))
                        .sum::<f64>()
                        / count as f64;
                    aie.push((m - offset) as f32);
                    interval.push((1.96 * var.sqrt() / n.sqrt()) as f32);
                }
            }
            GroupEffect {
                name,
                aie,
                interval,
                count,
            }
        })
        .collect())
}

/// One token group's average indirect effect per layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupEffect {
    /// The group's name ([`TOKEN_GROUPS`]).
    pub name: &'static str,
    /// Mean score of the group's tokens minus the mean low score, per layer (empty when the
    /// group has no token in any prompt).
    pub aie: Vec<f32>,
    /// Half-width of the 95% interval, `1.96 · std / sqrt(prompts)`, per layer.
    pub interval: Vec<f32>,
    /// Token rows averaged (a prompt adds several to the middle and further groups).
    pub count: usize,
}

/// The average indirect effect of one kind of restoration over a set of traces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndirectEffects {
    /// The kind of restoration.
    pub kind: TraceKind,
    /// Prompts averaged.
    pub prompts: usize,
    /// Mean clean p(answer).
    pub high_score: f32,
    /// Mean corrupted p(answer).
    pub low_score: f32,
    /// The six groups.
    pub groups: Vec<GroupEffect>,
}

/// ROME's roll-up (`average_causal_effects.ipynb`): for each of the six token groups, the
/// mean score per layer over the group's tokens in every trace, minus the mean low score, with
/// 95% intervals. Filter the traces to correctly predicted facts before calling (as
/// `cargo xtask trace` does).
///
/// # Errors
/// No traces, a trace without a table of `kind`, or tables with different numbers of layers.
pub fn average_indirect_effect(traces: &[CausalTrace], kind: TraceKind) -> Result<IndirectEffects> {
    if traces.is_empty() {
        return Err(Error::Empty {
            what: "the list of traces to average",
            hint: " (was no fact predicted correctly?)",
        });
    }
    let mut tables = Vec::with_capacity(traces.len());
    for trace in traces {
        let table = trace
            .tables
            .iter()
            .find(|t| t.kind == kind)
            .ok_or_else(|| Error::MissingTable(kind.name()))?;
        tables.push(TokenTable {
            values: &table.scores,
            n_tokens: table.n_tokens,
            n_layers: table.n_layers,
            subject_range: trace.prompt.subject_range.clone(),
        });
    }
    let mean = |xs: &mut dyn Iterator<Item = f32>| {
        let v: Vec<f64> = xs.map(f64::from).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let low = mean(&mut traces.iter().map(|t| t.low_score));
    let high = mean(&mut traces.iter().map(|t| t.high_score));
    let groups = group_rollup(&tables, low)?;
    Ok(IndirectEffects {
        kind,
        prompts: traces.len(),
        high_score: high as f32,
        low_score: low as f32,
        groups,
    })
}
