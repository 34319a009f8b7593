//! Gradient feature attribution as Inseq computes it for decoder-only models: for each step of
//! a target continuation, the attributed function of the next-token logits (probability, logit,
//! log-probability, or a contrast with a foil token) is differentiated with respect to the token
//! embeddings of the prefix (`hook_embed`, the `wte` output) by saliency, input × gradient or
//! integrated gradients (Captum's Gauss–Legendre rule, baseline the `<|endoftext|>` embedding).
//!
//! Gradients are taken with [`HookSet::run_with_grads`] on the one forward pass; integrated
//! gradients run every interpolation step of a target step as one batch.

use burn::tensor::{Tensor, TensorData};
use burnlens_hooks::{Act, HookSet, Intervention, Selector};
use burnlens_metrics::{last_position, token_log_probs_at, token_logits, token_probs};
use burnlens_model::{Gpt2, HookKind, HookPoint, TokenBatch};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::progress::Observer;

/// How gradients become attributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AttrMethod {
    /// `|∂f/∂x|` (Captum's `Saliency`, `abs=True`).
    Saliency,
    /// `x · ∂f/∂x`.
    InputXGradient,
    /// `(x − x₀) · ∫₀¹ ∂f/∂x(x₀ + α(x − x₀)) dα` by Gauss–Legendre quadrature with `steps` nodes
    /// (Captum's default rule), `x₀` the baseline token's embedding.
    IntegratedGradients {
        /// Quadrature nodes (Captum's `n_steps`).
        steps: usize,
    },
    /// `a · ∂f/∂a` for the activation `a` at a hook point (Captum's
    /// `LayerGradientXActivation`; e.g. `blocks.3.hook_mlp_out` is the output of Hugging
    /// Face's `transformer.h.3.mlp`).
    LayerGradientXActivation {
        /// Where.
        point: HookPoint,
    },
    /// Integrated gradients in a layer's activation space: the activation at `point` is
    /// interpolated from its value on the baseline input to its value on the input, and
    /// `(a − a₀) · ∫ ∂f/∂a dα` is taken by Gauss–Legendre quadrature.
    LayerIntegratedGradients {
        /// Where.
        point: HookPoint,
        /// Quadrature nodes.
        steps: usize,
    },
}

/// The function of the next-token distribution being attributed (Inseq's `attributed_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AttributedFn {
    /// `p(target)`, Inseq's default.
    Probability,
    /// `log p(target)`.
    LogProbability,
    /// `logit(target)`.
    Logit,
    /// `p(target) − p(foil)` from the same forward (Inseq's `contrast_prob_diff` as an
    /// attributed function: only the predicted token differs).
    ContrastProbDiff,
    /// `logit(target) − logit(foil)` (`contrast_logits_diff`, Yin & Neubig, 2022).
    ContrastLogitsDiff,
    /// `KL(p ‖ q)` between the next-token distribution `p` given the prefix and `q` given the
    /// position-aligned prefix of a contrastive sequence (Inseq's `kl_divergence` with
    /// `contrast_force_inputs`); `q` is a constant, so the gradient flows through `p` only.
    KlDivergence,
}

impl AttributedFn {
    /// Whether the function needs a foil continuation.
    pub fn is_contrastive(&self) -> bool {
        matches!(
            self,
            AttributedFn::ContrastProbDiff
                | AttributedFn::ContrastLogitsDiff
                | AttributedFn::KlDivergence
        )
    }

    /// The function of last-position logits `[rows, vocab]`, one value per row; `contrast` is
    /// the contrastive log-distribution `[1, vocab]` that [`AttributedFn::KlDivergence`] needs.
    fn eval(
        &self,
        logits: Tensor<2>,
        target: u32,
        foil: Option<u32>,
        contrast: Option<&Tensor<2>>,
    ) -> Result<Tensor<1>> {
        let rows = logits.dims()[0];
        let t = vec![target; rows];
        let f = |id: Option<u32>| -> Result<Vec<u32>> {
            id.map(|i| vec![i; rows]).ok_or_else(|| Error::MissingFoil {
                function: format!("{self:?}"),
                what: "a foil token",
            })
        };
        Ok(match self {
            AttributedFn::Probability => token_probs(logits, &t)?,
            AttributedFn::LogProbability => token_log_probs_at(logits, &t)?,
            AttributedFn::Logit => token_logits(logits, &t)?,
            AttributedFn::ContrastProbDiff => {
                token_probs(logits.clone(), &t)? - token_probs(logits, &f(foil)?)?
            }
            AttributedFn::ContrastLogitsDiff => {
                token_logits(logits.clone(), &t)? - token_logits(logits, &f(foil)?)?
            }
            AttributedFn::KlDivergence => {
                let q = contrast.ok_or_else(|| Error::MissingFoil {
                    function: format!("{self:?}"),
                    what: "the contrastive sequence",
                })?;
                let v = logits.dims()[1];
                let log_p = burn::tensor::activation::log_softmax(logits, 1);
                let log_q = q.clone().expand([rows, v]);
                (log_p.clone().exp() * (log_p - log_q))
                    .sum_dim(1)
                    .reshape([rows])
            }
        })
    }
}

/// How per-dimension attributions are reduced to one number per token and step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Aggregation {
    /// L2 norm over the hidden size, then each step's column divided by its sum (Inseq's
    /// default).
    L2NormSumOne,
    /// L2 norm over the hidden size, then each column divided by its maximum.
    L2NormMaxOne,
}

/// Attributions of a target continuation to its prefix tokens.
#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    /// Prompt and target ids.
    pub tokens: Vec<u32>,
    /// Tokens of the prompt.
    pub prompt_len: usize,
    /// Target tokens (steps).
    pub n_steps: usize,
    /// Width of the attributed activation (`d_model` for embeddings and residual points,
    /// `d_mlp` inside the MLP).
    pub d_model: usize,
    /// Raw attributions `[tokens, steps, width]`, row-major; `NaN` where a token is not in
    /// the step's prefix (Inseq's `target_attributions`).
    pub raw: Vec<f32>,
    /// The attributed function's value at each step: what the attributions explain (for
    /// the contrastive differences, the foil token scored after the target's prefix).
    pub attributed_values: Vec<f32>,
    /// Inseq's step score of the same function at each step: equal to `attributed_values`
    /// except for the contrastive differences, where Inseq scores the foil after the
    /// contrastive sequence's own prefix (`prompt + foil[..step]`).
    pub step_scores: Vec<f32>,
}

impl Attribution {
    /// One number per token and step, `[tokens, steps]` row-major (`NaN` outside the prefix).
    pub fn aggregate(&self, how: Aggregation) -> Vec<f32> {
        let (n, m, d) = (self.tokens.len(), self.n_steps, self.d_model);
        let mut out = vec![f32::NAN; n * m];
        for s in 0..m {
            let len = self.prompt_len + s;
            let norms: Vec<f64> = (0..len)
                .map(|i| {
                    let v = &self.raw[(i * m + s) * d..(i * m + s + 1) * d];
                    v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
                })
                .collect();
            let denom = match how {
                Aggregation::L2NormSumOne => norms.iter().sum::<f64>(),
                Aggregation::L2NormMaxOne => norms.iter().copied().fold(0.0, f64::max),
            };
            for (i, v) in norms.iter().enumerate() {
                out[i * m + s] = if denom > 0.0 { (v / denom) as f32 } else { 0.0 };
            }
        }
        out
    }

    /// The sum of the raw attributions of one step (integrated gradients' completeness:
    /// `f(input) − f(baseline)`).
    pub fn step_total(&self, step: usize) -> f64 {
        let (m, d) = (self.n_steps, self.d_model);
        (0..self.prompt_len + step)
            .flat_map(|i| self.raw[(i * m + step) * d..(i * m + step + 1) * d].iter())
            .map(|&x| f64::from(x))
            .sum()
    }
}

/// Gauss–Legendre nodes and weights on `[0, 1]` (NumPy's `leggauss` mapped as Captum maps it).
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut xs, mut ws) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            if n == 1 {
                (p0, p1) = (1.0, x);
            }
            dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
            let step = p1 / dp;
            x -= step;
            if step.abs() < 1e-15 {
                break;
            }
        }
        xs.push(0.5 * (x + 1.0));
        ws.push(0.5 * 2.0 / ((1.0 - x * x) * dp * dp));
    }
    (xs, ws)
}

/// What to attribute: each token of `target`, the continuation of `prompt`, to the prefix
/// before it.
///
/// `foil` is the contrastive continuation, token-aligned with `target`, for the contrastive
/// differences, and for [`AttributedFn::KlDivergence`] the whole contrastive sequence
/// (contrastive prompt and continuation), aligned with `prompt + target` by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributionInput<'a> {
    /// The prompt's token ids.
    pub prompt: &'a [u32],
    /// The continuation attributed, one step per token.
    pub target: &'a [u32],
    /// The contrastive continuation or sequence.
    pub foil: Option<&'a [u32]>,
}

impl<'a> AttributionInput<'a> {
    /// `target` after `prompt`, with no foil.
    pub fn new(prompt: &'a [u32], target: &'a [u32]) -> Self {
        Self {
            prompt,
            target,
            foil: None,
        }
    }

    /// This input with a foil.
    pub fn foil(mut self, foil: &'a [u32]) -> Self {
        self.foil = Some(foil);
        self
    }
}

/// How to attribute: the method, the attributed function and the integrated-gradients
/// baseline token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeOptions {
    /// How gradients become attributions.
    pub method: AttrMethod,
    /// The function of the next-token distribution attributed (Inseq's default:
    /// [`AttributedFn::Probability`]).
    pub function: AttributedFn,
    /// The token whose embedding integrated gradients start from (`<|endoftext|>` in Inseq for
    /// GPT-2).
    pub baseline: u32,
    /// Told `(target tokens attributed, target tokens)` as each step completes.
    #[serde(skip)]
    pub observer: Observer,
}

impl AttributeOptions {
    /// `method` on Inseq's default function (the probability), from the `baseline` token.
    pub fn new(method: AttrMethod, baseline: u32) -> Self {
        Self {
            method,
            function: AttributedFn::Probability,
            baseline,
            observer: Observer::none(),
        }
    }

    /// These options with `function`.
    pub fn function(mut self, function: AttributedFn) -> Self {
        self.function = function;
        self
    }

    /// These options reporting progress to `observer`.
    pub fn observer(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }

    /// The point whose activation integrated gradients interpolate: `None` for the token
    /// embeddings, the layer's point for layer integrated gradients.
    fn integrated_point(&self) -> Result<Option<HookPoint>> {
        match self.method {
            AttrMethod::IntegratedGradients { .. } => Ok(None),
            AttrMethod::LayerIntegratedGradients { point, .. } => Ok(Some(point)),
            other => Err(Error::BadOption {
                option: "method",
                value: format!("{other:?}"),
                expected: "an integrated method (IntegratedGradients or LayerIntegratedGradients) has a baseline score".into(),
            }),
        }
    }
}

/// Checks that token ids are inside the model's vocabulary.
fn check_ids(model: &Gpt2, what: &'static str, ids: &[u32]) -> Result<()> {
    let vocab = model.config.vocab_size;
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(&id) => Err(Error::OutOfRange {
            what,
            value: id as usize,
            limit: format!("the vocabulary has {vocab} tokens"),
        }),
        None => Ok(()),
    }
}

/// Checks an input against the options and the model before any forward runs.
fn check_input(model: &Gpt2, input: &AttributionInput, options: &AttributeOptions) -> Result<()> {
    let function = options.function;
    check_ids(model, "baseline token id", &[options.baseline])?;
    let AttributionInput {
        prompt,
        target,
        foil,
    } = *input;
    if prompt.is_empty() {
        return Err(Error::Empty {
            what: "the prompt",
            hint: "",
        });
    }
    if target.is_empty() {
        return Err(Error::Empty {
            what: "the target",
            hint: ": give at least one token to attribute",
        });
    }
    check_ids(model, "prompt token id", prompt)?;
    check_ids(model, "target token id", target)?;
    check_ids(model, "foil token id", foil.unwrap_or_default())?;
    let (n, m) = (prompt.len(), target.len());
    match (function.is_contrastive(), foil) {
        (true, None) => Err(Error::MissingFoil {
            function: format!("{function:?}"),
            what: if function == AttributedFn::KlDivergence {
                "the contrastive sequence"
            } else {
                "a continuation token-aligned with the target"
            },
        }),
        (true, Some(f)) if function == AttributedFn::KlDivergence && f.len() + 1 < n + m => {
            Err(Error::Shape {
                what: "the contrastive sequence".into(),
                got: vec![f.len()],
                expected: format!(
                    "at least {} tokens: the KL divergence compares position-aligned prefixes",
                    n + m - 1
                ),
            })
        }
        (true, Some(f)) if function != AttributedFn::KlDivergence && f.len() != m => {
            Err(Error::Shape {
                what: "the foil".into(),
                got: vec![f.len()],
                expected: format!(
                    "[{m}], the target's tokens: contrastive attribution aligns them token by token"
                ),
            })
        }
        (true, Some(f)) if function != AttributedFn::KlDivergence && f == target => {
            Err(Error::BadOption {
                option: "foil",
                value: format!("{f:?}"),
                expected: "a continuation other than the target: with the foil equal to the \
                           target every contrastive difference, and so every attribution, is 0"
                    .into(),
            })
        }
        (false, Some(f)) => Err(Error::BadOption {
            option: "foil",
            value: format!("{f:?}"),
            expected: format!(
                "no foil with {function:?}, which does not use one (a foil is for \
                 ContrastProbDiff, ContrastLogitsDiff or KlDivergence)"
            ),
        }),
        _ => Ok(()),
    }
}

/// Attributes each token of `input.target` to the prefix before it, by `options.method`.
///
/// # Errors
/// An empty prompt or target, token ids outside the vocabulary, a contrast function without a
/// foil or with a foil of another token length, zero integration steps, a layer method at a
/// point without a residual-width activation, and forward errors.
pub fn attribute(
    model: &Gpt2,
    input: &AttributionInput,
    options: &AttributeOptions,
) -> Result<Attribution> {
    let AttributeOptions {
        method,
        function,
        baseline,
        ..
    } = *options;
    let AttributionInput {
        prompt,
        target,
        foil,
    } = *input;
    check_input(model, input, options)?;
    if let AttrMethod::LayerGradientXActivation { point }
    | AttrMethod::LayerIntegratedGradients { point, .. } = method
    {
        point.check_layer(model.config.n_layer)?;
        if !layer_attributable(point) {
            return Err(Error::UnsupportedPoint {
                experiment: "layer attribution",
                point: point.to_string(),
                supported: "a block's residual-stream, attention-output or MLP point",
            });
        }
    }
    if let AttrMethod::IntegratedGradients { steps: 0 }
    | AttrMethod::LayerIntegratedGradients { steps: 0, .. } = method
    {
        return Err(Error::BadOption {
            option: "steps",
            value: "0".into(),
            expected: "integrated gradients needs at least one step".into(),
        });
    }
    let m = target.len();
    let d = match method {
        AttrMethod::LayerGradientXActivation { point }
        | AttrMethod::LayerIntegratedGradients { point, .. }
            if matches!(point, HookPoint::MlpPre(_) | HookPoint::MlpPost(_)) =>
        {
            model.config.d_mlp()
        }
        _ => model.config.n_embd,
    };
    let n = prompt.len() + m;
    let mut raw = vec![f32::NAN; n * m * d];
    let mut step_scores = Vec::with_capacity(m);
    let mut attributed_values = Vec::with_capacity(m);
    for s in 0..m {
        let prefix: Vec<u32> = prompt.iter().chain(&target[..s]).copied().collect();
        let len = prefix.len();
        let tok = target[s];
        let (foil_tok, contrast) = step_contrast(model, function, foil, s, len)?;
        let f = |logits: Tensor<3>| -> Tensor<1> {
            function
                .eval(last_position(logits), tok, foil_tok, contrast.as_ref())
                .expect("ids checked against the model")
                .sum()
        };
        let (attr, score) = step_attribution(model, &prefix, method, baseline, &f)?;
        // The integrated methods never run the input itself: score it with a plain forward.
        let score = match score {
            Some(v) => v,
            None => {
                let logits = model.logits(&TokenBatch::single(&prefix)?)?;
                function
                    .eval(last_position(logits), tok, foil_tok, contrast.as_ref())?
                    .into_scalar::<f32>()
            }
        };
        attributed_values.push(score);
        step_scores.push(inseq_step_score(model, function, input, s, score)?);
        let host: Vec<f32> = attr
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("float attributions");
        for i in 0..len {
            raw[(i * m + s) * d..(i * m + s + 1) * d].copy_from_slice(&host[i * d..(i + 1) * d]);
        }
        options.observer.report(s + 1, m);
    }
    Ok(Attribution {
        tokens: prompt.iter().chain(target).copied().collect(),
        prompt_len: prompt.len(),
        n_steps: m,
        d_model: d,
        raw,
        attributed_values,
        step_scores,
    })
}

/// Inseq's step score of `function` at `step`, given the attributed value `attributed`. For
/// `contrast_prob_diff` and `contrast_logits_diff` Inseq's step function runs the contrastive
/// sequence with its own prefix, `p(target | prompt + target[..step]) − p(foil | prompt +
/// foil[..step])`, while as an attributed function it keeps the target's prefix (gradients
/// cannot flow through another input); the two agree at steps where the prefixes do.
fn inseq_step_score(
    model: &Gpt2,
    function: AttributedFn,
    input: &AttributionInput,
    step: usize,
    attributed: f32,
) -> Result<f32> {
    let single = match function {
        AttributedFn::ContrastProbDiff => AttributedFn::Probability,
        AttributedFn::ContrastLogitsDiff => AttributedFn::Logit,
        _ => return Ok(attributed),
    };
    let Some(foil) = input.foil else {
        return Ok(attributed);
    };
    if foil[..step] == input.target[..step] {
        return Ok(attributed);
    }
    let score = |continuation: &[u32], token: u32| -> Result<f32> {
        let ids: Vec<u32> = input
            .prompt
            .iter()
            .chain(&continuation[..step])
            .copied()
            .collect();
        let logits = model.logits(&TokenBatch::single(&ids)?)?;
        Ok(single
            .eval(last_position(logits), token, None, None)?
            .into_scalar::<f32>())
    };
    Ok(score(input.target, input.target[step])? - score(foil, foil[step])?)
}

/// Token embeddings `[1, len, d_model]` of `ids`.
fn embed(model: &Gpt2, ids: &[u32]) -> Tensor<3> {
    model.token_embeddings(ids).unsqueeze()
}

/// Gauss–Legendre nodes `[steps, 1, 1]` and weights `[steps, 1, 1]` as tensors.
fn quadrature(steps: usize, device: &burn::tensor::Device) -> (Tensor<3>, Tensor<3>) {
    let (alphas, weights) = gauss_legendre(steps);
    let t = |v: Vec<f64>| {
        Tensor::<1>::from_data(
            TensorData::new(v.iter().map(|&a| a as f32).collect::<Vec<_>>(), [steps]),
            device,
        )
        .reshape([steps, 1, 1])
    };
    (t(alphas), t(weights))
}

/// The activation at `point` for `prefix`, with `embeds` (if given) in place of the token
/// embeddings: `[1, len, width]`.
fn activation(
    model: &Gpt2,
    prefix: &[u32],
    point: HookPoint,
    embeds: Option<Tensor<3>>,
) -> Result<Tensor<3>> {
    let mut hooks = HookSet::new();
    if let Some(e) = embeds {
        hooks.intervene(HookPoint::Embed, Intervention::replace(Act::R3(e)))?;
    }
    hooks.capture_point(point)?;
    hooks.run(model, &TokenBatch::single(prefix)?)?;
    Ok(hooks.take_cache().get3(point)?)
}

/// One target step's attribution `[len, width]`: the gradient of `f` (of the logits, summed
/// over rows) at the attributed activation, combined as `method` says; and `f` at the input
/// when the gradient run was the input's own (saliency, input × gradient, layer gradient ×
/// activation).
fn step_attribution(
    model: &Gpt2,
    prefix: &[u32],
    method: AttrMethod,
    baseline: u32,
    f: &dyn Fn(Tensor<3>) -> Tensor<1>,
) -> Result<(Tensor<2>, Option<f32>)> {
    let len = prefix.len();
    let device = model.device();
    let x = embed(model, prefix);
    // One run of the prefix (with `rows`, run as one batch, in place of the activation at
    // `point`): f's value, its gradient at `point`, and the activation there before any
    // replacement.
    let run = |point: HookPoint, rows: Option<Tensor<3>>| -> Result<(f32, Tensor<3>, Tensor<3>)> {
        let n_rows = rows.as_ref().map_or(1, |r| r.dims()[0]);
        let batch = TokenBatch::new(vec![prefix.to_vec(); n_rows], None)?;
        let mut hooks = HookSet::new();
        hooks.capture_point(point)?;
        if let Some(r) = rows {
            hooks.intervene(point, Intervention::replace(Act::R3(r)))?;
        }
        hooks.grad(Selector::point(point)?);
        let (value, grads) = hooks.run_with_grads(model, &batch, f)?;
        Ok((value, grads.get3(point)?, hooks.take_cache().get3(point)?))
    };
    let flat = |t: Tensor<3>| {
        let w = t.dims()[2];
        t.reshape([len, w])
    };
    Ok(match method {
        AttrMethod::Saliency => {
            let (v, g, _) = run(HookPoint::Embed, None)?;
            (flat(g.abs()), Some(v))
        }
        AttrMethod::InputXGradient => {
            let (v, g, _) = run(HookPoint::Embed, None)?;
            (flat(g * x), Some(v))
        }
        AttrMethod::IntegratedGradients { steps } => {
            let base = embed(model, &vec![baseline; len]);
            let (alpha, w) = quadrature(steps, &device);
            let interp = base.clone() + (x.clone() - base.clone()) * alpha;
            let (_, g, _) = run(HookPoint::Embed, Some(interp))?;
            (flat((x - base) * (g * w).sum_dim(0)), None)
        }
        AttrMethod::LayerGradientXActivation { point } => {
            let (v, g, a) = run(point, None)?;
            (flat(g * a), Some(v))
        }
        AttrMethod::LayerIntegratedGradients { point, steps } => {
            let a = activation(model, prefix, point, None)?;
            let base = embed(model, &vec![baseline; len]);
            let a0 = activation(model, prefix, point, Some(base))?;
            let (alpha, w) = quadrature(steps, &device);
            let interp = a0.clone() + (a.clone() - a0.clone()) * alpha;
            let (_, g, _) = run(point, Some(interp))?;
            (flat((a - a0) * (g * w).sum_dim(0)), None)
        }
    })
}

/// `f(baseline)` for integrated gradients' completeness check: the attributed function at step
/// `step` with every prefix token embedding replaced by the baseline token's
/// ([`AttrMethod::IntegratedGradients`]), or with the activation at the method's point replaced
/// by its value on that baseline input ([`AttrMethod::LayerIntegratedGradients`]).
///
/// # Errors
/// As [`attribute`], a step past the target, and a method that is not integrated.
pub fn baseline_score(
    model: &Gpt2,
    input: &AttributionInput,
    options: &AttributeOptions,
    step: usize,
) -> Result<f32> {
    let AttributeOptions {
        function, baseline, ..
    } = *options;
    let AttributionInput {
        prompt,
        target,
        foil,
    } = *input;
    check_input(model, input, options)?;
    let point = options.integrated_point()?;
    if step >= target.len() {
        return Err(Error::OutOfRange {
            what: "step",
            value: step,
            limit: format!("the target has {} tokens", target.len()),
        });
    }
    let prefix: Vec<u32> = prompt.iter().chain(&target[..step]).copied().collect();
    let base = embed(model, &vec![baseline; prefix.len()]);
    let mut hooks = HookSet::new();
    match point {
        None => hooks.intervene(HookPoint::Embed, Intervention::replace(Act::R3(base)))?,
        Some(p) => {
            let a0 = activation(model, &prefix, p, Some(base))?;
            hooks.intervene(p, Intervention::replace(Act::R3(a0)))?
        }
    };
    let logits = hooks.run(model, &TokenBatch::single(&prefix)?)?;
    let (foil_tok, contrast) = step_contrast(model, function, foil, step, prefix.len())?;
    Ok(function
        .eval(
            last_position(logits),
            target[step],
            foil_tok,
            contrast.as_ref(),
        )?
        .into_scalar::<f32>())
}

/// What the attributed function contrasts with at step `step` of a prefix of `len` tokens:
/// the foil token (contrastive differences) or the log-distribution `[1, vocab]` after the
/// contrastive sequence's first `len` tokens (KL divergence).
fn step_contrast(
    model: &Gpt2,
    function: AttributedFn,
    foil: Option<&[u32]>,
    step: usize,
    len: usize,
) -> Result<(Option<u32>, Option<Tensor<2>>)> {
    match (function, foil) {
        (AttributedFn::KlDivergence, Some(seq)) => {
            let logits = model.logits(&TokenBatch::single(&seq[..len])?)?;
            Ok((
                None,
                Some(burn::tensor::activation::log_softmax(
                    last_position(logits),
                    1,
                )),
            ))
        }
        (_, foil) => Ok((foil.map(|f| f[step]), None)),
    }
}

/// Whether layer attribution can run at `point` (a rank-3 activation inside a block).
fn layer_attributable(point: HookPoint) -> bool {
    matches!(
        point,
        HookPoint::ResidPre(_)
            | HookPoint::ResidMid(_)
            | HookPoint::ResidPost(_)
            | HookPoint::AttnOut(_)
            | HookPoint::MlpOut(_)
            | HookPoint::MlpPre(_)
            | HookPoint::MlpPost(_)
    )
}

/// How a layer sweep reduces each token's attribution vector to one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TokenReduce {
    /// The signed sum over the hidden size: the first-order contribution of the token's
    /// activation to the function.
    Sum,
    /// The L2 norm over the hidden size (Inseq's aggregation, before normalisation).
    L2Norm,
}

/// Layer gradient × activation at hook kind `kind` (`"mlp_out"`, `"attn_out"`,
/// `"resid_post"`, …) in every block at once, for the next token after `prompt`, each token's
/// vector reduced by `reduce`: a `[tokens, layers]` table (row-major), as Inseq's
/// "locating factual knowledge" example sweeps the MLPs. One forward and one backward.
///
/// # Errors
/// An unknown kind or one without a residual-width activation, a contrast function without a
/// foil, and forward errors.
pub fn layer_sweep(
    model: &Gpt2,
    prompt: &[u32],
    target: u32,
    foil: Option<u32>,
    function: AttributedFn,
    kind: HookKind,
    reduce: TokenReduce,
) -> Result<Vec<f32>> {
    if prompt.is_empty() {
        return Err(Error::Empty {
            what: "the prompt",
            hint: "",
        });
    }
    check_ids(model, "prompt token id", prompt)?;
    check_ids(model, "target token id", &[target])?;
    check_ids(model, "foil token id", foil.as_slice())?;
    if function == AttributedFn::KlDivergence {
        return Err(Error::BadOption {
            option: "function",
            value: "KlDivergence".into(),
            expected: "a layer sweep contrasts single tokens; attribute the KL divergence with `attribute`".into(),
        });
    }
    if function.is_contrastive() && foil.is_none() {
        return Err(Error::MissingFoil {
            function: format!("{function:?}"),
            what: "a foil token",
        });
    }
    if function.is_contrastive() && foil == Some(target) {
        return Err(Error::BadOption {
            option: "foil",
            value: target.to_string(),
            expected: "a token other than the target: with the foil equal to the target the \
                       contrastive difference, and so every column, is 0"
                .into(),
        });
    }
    let n_layers = model.config.n_layer;
    let points: Vec<HookPoint> = (0..n_layers)
        .map(|l| kind.at(l))
        .collect::<Result<_, _>>()
        .map_err(Error::from)?;
    if !layer_attributable(points[0]) {
        return Err(Error::UnsupportedPoint {
            experiment: "a layer sweep",
            point: kind.to_string(),
            supported: "resid_pre, resid_mid, resid_post, attn_out, mlp_out, pre or post",
        });
    }
    let mut hooks = HookSet::new();
    hooks.capture(Selector::points(points.clone())?);
    hooks.grad(Selector::points(points.clone())?);
    let (_, grads) = hooks.run_with_grads(model, &TokenBatch::single(prompt)?, |logits| {
        function
            .eval(last_position(logits), target, foil, None)
            .expect("ids checked against the model")
            .sum()
    })?;
    let acts = hooks.take_cache();
    let len = prompt.len();
    let mut columns = Vec::with_capacity(n_layers);
    for p in &points {
        let prod = grads.get3(*p)? * acts.get3(*p)?; // [1, len, w]
        let per_token = match reduce {
            TokenReduce::Sum => prod.sum_dim(2),
            TokenReduce::L2Norm => prod.square().sum_dim(2).sqrt(),
        };
        columns.push(per_token.reshape([len]));
    }
    let host: Vec<f32> = Tensor::stack::<2>(columns, 1) // [len, layers]
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float attributions");
    Ok(host)
}
