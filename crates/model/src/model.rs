//! GPT-2 as burn modules, and the single forward pass every experiment goes through.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::batch::TokenBatch;
use crate::cache::KvCache;
use crate::config::WeightProcessing;
use crate::config::{Activation, Gpt2Config};
use crate::error::{Error, Result};
use crate::hook::{HookPoint, Hookable, Hooks, NoHooks, run3, run4};

impl Gpt2Config {
    /// Builds a model with freshly initialised weights, as Hugging Face initialises GPT-2:
    /// weights from N(0, `initializer_range`), the residual projections (`c_proj`) scaled by
    /// `1 / sqrt(2 * n_layer)`, biases zero, LayerNorms one and zero.
    ///
    /// Call `device.seed(..)` first for reproducible weights.
    pub fn init(&self, device: &Device) -> Gpt2 {
        let std = self.initializer_range;
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        let linear = |d_in: usize, d_out: usize, std: f64| {
            LinearConfig::new(d_in, d_out)
                .with_initializer(normal(std))
                .init(device)
        };
        let (d, m) = (self.n_embd, self.d_mlp());
        let proj_std = std / (2.0 * self.n_layer as f64).sqrt();
        let ln = || LayerNorm::new(d, self.layer_norm_epsilon, device);
        let blocks = (0..self.n_layer)
            .map(|layer| Block {
                ln_1: ln(),
                attn: Attention {
                    c_attn: zero_bias(linear(d, 3 * d, std), device),
                    c_proj: zero_bias(linear(d, d, proj_std), device),
                    n_head: self.n_head,
                    scale: attention_scale(self, layer),
                },
                ln_2: ln(),
                mlp: Mlp {
                    c_fc: zero_bias(linear(d, m, std), device),
                    c_proj: zero_bias(linear(m, d, proj_std), device),
                    activation: self.activation,
                },
                layer,
            })
            .collect();
        let wte: Param<Tensor<2>> = normal(std).init([self.vocab_size, d], device);
        Gpt2 {
            w_u: unembedding(&wte.val()),
            b_u: None,
            wte,
            wpe: normal(std).init([self.n_positions, d], device),
            blocks,
            ln_f: ln(),
            config: self.clone(),
            processing: WeightProcessing::none(),
        }
    }
}

fn zero_bias(mut l: Linear, device: &Device) -> Linear {
    let [_, d_out] = l.weight.val().dims();
    l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    l
}

/// `1 / (sqrt(d_head) * (layer + 1))`, with each factor present only when the config asks.
pub(crate) fn attention_scale(config: &Gpt2Config, layer: usize) -> f64 {
    let mut denom = 1.0;
    if config.scale_attn_weights {
        denom *= (config.d_head() as f64).sqrt();
    }
    if config.scale_attn_by_inverse_layer_idx {
        denom *= (layer + 1) as f64;
    }
    1.0 / denom
}

/// GPT-2's LayerNorm, with the `hook_scale` and `hook_normalized` points TransformerLens has.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale (Hugging Face `weight`).
    pub gamma: Param<Tensor<1>>,
    /// Shift (Hugging Face `bias`).
    pub beta: Param<Tensor<1>>,
    /// Added to the variance.
    pub epsilon: f64,
}

impl LayerNorm {
    /// A LayerNorm of width `d` initialised to the identity map (weight 1, bias 0).
    pub fn new(d: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([d], device)),
            beta: Param::from_tensor(Tensor::zeros([d], device)),
            epsilon,
        }
    }

    /// Normalises over the last axis, then applies the affine map.
    ///
    /// When neither hook point is active this is burn's fused `layer_norm`; otherwise the
    /// scale `sqrt(var + eps)` (`[.., 1]`) and the normalised input are computed explicitly and
    /// offered to the hooks. Rank 4 is the per-head form used while `hook_attn_in` or
    /// `hook_q/k/v_input` is active.
    ///
    /// # Shapes
    /// - x: `[batch, pos, d_model]` or `[batch, pos, n_heads, d_model]`
    /// - output: the shape of x
    #[allow(private_bounds)]
    pub fn forward<const D: usize>(
        &self,
        x: Tensor<D>,
        points: (HookPoint, HookPoint),
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor<D>>
    where
        Tensor<D>: Hookable,
    {
        let (scale_point, norm_point) = points;
        if !hooks.is_active(scale_point) && !hooks.is_active(norm_point) {
            return Ok(burn::tensor::module::layer_norm(
                x,
                self.gamma.val(),
                Some(self.beta.val()),
                self.epsilon,
            ));
        }
        let centered = x.clone() - x.mean_dim(D - 1);
        let var = centered.clone().square().mean_dim(D - 1);
        let scale = (var + self.epsilon).sqrt().run(hooks, scale_point)?;
        let normalized = (centered / scale).run(hooks, norm_point)?;
        Ok(normalized * self.gamma.val().unsqueeze::<D>() + self.beta.val().unsqueeze::<D>())
    }
}

/// Causal multi-head self-attention (`attn` in Hugging Face's GPT-2).
#[derive(Module, Debug)]
pub struct Attention {
    /// Fused q, k, v projection, weight `[d_model, 3 * d_model]` (Hugging Face's `Conv1D`
    /// layout, which is burn's `Linear` layout).
    pub c_attn: Linear,
    /// Output projection, weight `[d_model, d_model]`.
    pub c_proj: Linear,
    /// Number of heads.
    pub n_head: usize,
    /// Factor applied to `q · k`.
    pub scale: f64,
}

/// The per-forward attention mask, shared by every block.
#[derive(Clone, Debug)]
pub(crate) struct AttentionMask {
    /// True where a query must not see a key: `[batch, 1, query, key]`.
    pub blocked: Tensor<4, Bool>,
    /// True for queries that see no key at all (padding on the left), whose pattern row is set
    /// to zero as TransformerLens does: `[batch, 1, query, 1]`. `None` when there are none.
    pub empty_rows: Option<Tensor<4, Bool>>,
}

/// What attention reads: one normalised input for q, k and v (the usual path), or one per
/// head and per role while `hook_attn_in`/`hook_q/k/v_input` are active.
// A burn tensor handle is large (~640 bytes); this value lives for one call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AttnInput {
    /// `[batch, pos, d_model]`, after `ln_1`.
    Shared(Tensor<3>),
    /// Query, key and value inputs `[batch, pos, n_heads, d_model]`, each after `ln_1`.
    PerHead([Tensor<4>; 3]),
}

impl Attention {
    /// Attention over the block's normalised input.
    ///
    /// # Shapes
    /// - input: `[batch, pos, d_model]`, or three `[batch, pos, n_heads, d_model]`
    /// - mask: blocked `[batch, 1, pos, past + pos]`
    /// - output: `[batch, pos, d_model]`
    pub(crate) fn forward(
        &self,
        input: AttnInput,
        layer: usize,
        mask: &AttentionMask,
        cache: Option<&mut crate::cache::LayerKv>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor<3>> {
        let (q, k, v) = match input {
            AttnInput::Shared(x) => {
                let [b, t, d] = x.dims();
                let (h, dh) = (self.n_head, d / self.n_head);
                let qkv = linear3(&self.c_attn, x);
                let split = |i: usize| {
                    qkv.clone()
                        .slice([0..b, 0..t, i * d..(i + 1) * d])
                        .reshape([b, t, h, dh])
                };
                (split(0), split(1), split(2))
            }
            AttnInput::PerHead(inputs) => {
                let [xq, xk, xv] = inputs;
                (
                    self.project_per_head(xq, 0),
                    self.project_per_head(xk, 1),
                    self.project_per_head(xv, 2),
                )
            }
        };
        let [b, t, h, dh] = q.dims();
        let q = run4(hooks, HookPoint::Q(layer), q)?;
        let k = run4(hooks, HookPoint::K(layer), k)?;
        let v = run4(hooks, HookPoint::V(layer), v)?;
        let q = q.swap_dims(1, 2); // [b, h, t, dh]
        let (k, v) = (k.swap_dims(1, 2), v.swap_dims(1, 2));
        let (k, v) = match cache {
            Some(c) => c.append(k, v),
            None => (k, v),
        };
        let total = k.dims()[2];
        let blocked = mask.blocked.clone().expand([b, h, t, total]);
        // The fused kernel serves inference only: under autodiff (training, gradients at hook
        // points) burn's fused attention falls back to separate ops whose backward differs
        // from this one's in rounding, and training must stay reproducible bit for bit.
        let observed = hooks.is_active(HookPoint::AttnScores(layer))
            || hooks.is_active(HookPoint::Pattern(layer));
        let autodiff = q.is_autodiff() || k.is_autodiff() || v.is_autodiff();
        let z = if observed || autodiff {
            let scores = q.matmul(k.swap_dims(2, 3)) * self.scale;
            let scores = scores.mask_fill(blocked, f32::NEG_INFINITY);
            let scores = run4(hooks, HookPoint::AttnScores(layer), scores)?;
            let mut pattern = softmax(scores, 3);
            if let Some(empty) = &mask.empty_rows {
                pattern = pattern.mask_fill(empty.clone().expand([b, h, t, total]), 0.0);
            }
            let pattern = run4(hooks, HookPoint::Pattern(layer), pattern)?;
            pattern.matmul(v)
        } else {
            // Neither the scores nor the pattern is observed: burn's fused attention computes
            // the same softmax(scale · q kᵀ, masked) · v without materialising them (on flex,
            // one task per batch row and head; ndarray and wgpu run separate kernels, as above,
            // since an explicit scale keeps wgpu off its flash kernel).
            // A query that sees no key gets a zero row there too, as TransformerLens's
            // zeroed pattern row gives.
            let options = AttentionModuleOptions {
                scale: Some(self.scale),
                softcap: None,
                is_causal: false,
            };
            burn::tensor::module::attention(q, k, v, Some(blocked), None, options)
        };
        let z = z.swap_dims(1, 2); // [b, t, h, dh]
        let z = run4(hooks, HookPoint::Z(layer), z)?;
        if !hooks.is_active(HookPoint::Result(layer)) {
            return Ok(linear3(&self.c_proj, z.reshape([b, t, h * dh])));
        }
        let result = run4(hooks, HookPoint::Result(layer), self.head_results(z))?;
        let out = result.sum_dim(2).reshape([b, t, h * dh]);
        Ok(match &self.c_proj.bias {
            Some(bias) => out + bias.val().unsqueeze::<3>(),
            None => out,
        })
    }

    /// `W_Q`, `W_K` or `W_V` (`role` 0, 1, 2) per head, `[n_heads, d_model, d_head]`, and its
    /// bias `[n_heads, d_head]`.
    pub fn qkv_weight(&self, role: usize) -> (Tensor<3>, Option<Tensor<2>>) {
        let w = self.c_attn.weight.val();
        let d = w.dims()[0];
        let (h, dh) = (self.n_head, d / self.n_head);
        let w = w
            .slice([0..d, role * d..(role + 1) * d])
            .reshape([d, h, dh])
            .swap_dims(0, 1);
        let b = self
            .c_attn
            .bias
            .as_ref()
            .map(|b| b.val().slice(role * d..(role + 1) * d).reshape([h, dh]));
        (w, b)
    }

    /// `W_O` per head, `[n_heads, d_head, d_model]` (TransformerLens's layout).
    pub fn w_o(&self) -> Tensor<3> {
        let w = self.c_proj.weight.val();
        let [d_in, d] = w.dims();
        w.reshape([self.n_head, d_in / self.n_head, d])
    }

    /// Each head's output in the residual basis, `z[.., h, :] · W_O[h]`.
    ///
    /// # Shapes
    /// - z: `[batch, pos, n_heads, d_head]`
    /// - output: `[batch, pos, n_heads, d_model]`
    pub fn head_results(&self, z: Tensor<4>) -> Tensor<4> {
        per_head_matmul(z, self.w_o())
    }

    /// The per-head query, key or value projection of a per-head input.
    fn project_per_head(&self, x: Tensor<4>, role: usize) -> Tensor<4> {
        let (w, b) = self.qkv_weight(role);
        let y = per_head_matmul(x, w);
        match b {
            Some(b) => y + b.unsqueeze::<4>(),
            None => y,
        }
    }
}

/// `x[b, p, h, :] · w[h]` for every head.
///
/// # Shapes
/// - x: `[batch, pos, n_heads, d_in]`
/// - w: `[n_heads, d_in, d_out]`
/// - output: `[batch, pos, n_heads, d_out]`
pub fn per_head_matmul(x: Tensor<4>, w: Tensor<3>) -> Tensor<4> {
    let [b, t, h, d_in] = x.dims();
    let d_out = w.dims()[2];
    let x = x.permute([2, 0, 1, 3]).reshape([h, b * t, d_in]);
    x.matmul(w).reshape([h, b, t, d_out]).permute([1, 2, 0, 3])
}

/// A linear layer on `[batch, pos, d_in]`, folded to one `[batch * pos, d_in]` matmul (faster
/// than burn's batched form on the CPU backends).
fn linear3(l: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, t, d_in] = x.dims();
    let y = l.forward(x.reshape([b * t, d_in]));
    let d_out = y.dims()[1];
    y.reshape([b, t, d_out])
}

/// GPT-2's `gelu_new`, `0.5 x (1 + tanh(u))` with `u = sqrt(2/π) (x + 0.044715 x³)`, the cube
/// folded into `(a x² + b) x` so that no `powf` is needed.
///
/// It is computed as `x / (1 + exp(min(−2u, 80)))`, which equals it to float rounding:
/// `(1 + tanh u) / 2 = 1 / (1 + e^(−2u))`. On both CPU backends `tanh` goes through libm's
/// scalar `tanhf`/`expm1f`, about three times the cost of this form (measured on
/// `[1024, 3072]`: flex 71 ms against 22 ms, ndarray 61 ms against 23 ms, release; under
/// autodiff, forward and backward of `[2048, 512]` take 66 ms against 21 ms, because the
/// autodiff `tanh` computes `tanh` again in its backward).
///
/// The clamp keeps the exponential finite: for `u < −40` the quotient is below 1e−33 · |x|
/// (the true value rounds to −0 in f32), and the backward pass gets a zero instead of
/// `0 · ∞ = NaN` from the exponential's derivative.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    const CUBIC: f64 = 0.044715 * SQRT_2_OVER_PI;
    // −2u with the −2 folded into the constants (exact: a power of two), one pass fewer.
    let minus_2u = (x.clone().square() * (-2.0 * CUBIC) - 2.0 * SQRT_2_OVER_PI) * x.clone();
    x / (minus_2u.clamp_max(80.0).exp() + 1.0)
}

/// The feed-forward sublayer.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Input projection, weight `[d_model, d_mlp]`.
    pub c_fc: Linear,
    /// Output projection, weight `[d_mlp, d_model]`.
    pub c_proj: Linear,
    /// The activation function.
    #[module(skip)]
    pub activation: Activation,
}

impl Mlp {
    /// # Shapes
    /// - x: `[batch, pos, d_model]`
    /// - output: `[batch, pos, d_model]`
    pub fn forward(&self, x: Tensor<3>, layer: usize, hooks: &mut dyn Hooks) -> Result<Tensor<3>> {
        let pre = run3(hooks, HookPoint::MlpPre(layer), linear3(&self.c_fc, x))?;
        let post = match self.activation {
            Activation::GeluTanh => gelu_tanh(pre),
            Activation::GeluErf => gelu(pre),
            Activation::Relu => relu(pre),
        };
        let post = run3(hooks, HookPoint::MlpPost(layer), post)?;
        Ok(linear3(&self.c_proj, post))
    }
}

/// One transformer block: pre-LayerNorm attention and MLP, each added to the residual stream.
#[derive(Module, Debug)]
pub struct Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Self-attention.
    pub attn: Attention,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// The MLP.
    pub mlp: Mlp,
    /// Index of this block.
    pub layer: usize,
}

impl Block {
    /// # Shapes
    /// - resid: `[batch, pos, d_model]`
    /// - output: `[batch, pos, d_model]`
    pub(crate) fn forward(
        &self,
        resid: Tensor<3>,
        mask: &AttentionMask,
        cache: Option<&mut crate::cache::LayerKv>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor<3>> {
        use HookPoint::*;
        let l = self.layer;
        let resid = run3(hooks, ResidPre(l), resid)?;
        let ln1 = (Ln1Scale(l), Ln1Normalized(l));
        let per_head = [AttnIn(l), QInput(l), KInput(l), VInput(l)]
            .into_iter()
            .any(|p| hooks.is_active(p));
        let input = if per_head {
            let [b, t, d] = resid.dims();
            let h = self.attn.n_head;
            let repeated = resid.clone().unsqueeze_dim::<4>(2).expand([b, t, h, d]);
            let attn_in = run4(hooks, AttnIn(l), repeated)?;
            let mut roles = Vec::with_capacity(3);
            for point in [QInput(l), KInput(l), VInput(l)] {
                let x = run4(hooks, point, attn_in.clone())?;
                roles.push(self.ln_1.forward(x, ln1, hooks)?);
            }
            let [xq, xk, xv]: [Tensor<4>; 3] = roles.try_into().expect("three roles");
            AttnInput::PerHead([xq, xk, xv])
        } else {
            AttnInput::Shared(self.ln_1.forward(resid.clone(), ln1, hooks)?)
        };
        let attn_out = self.attn.forward(input, l, mask, cache, hooks)?;
        let attn_out = run3(hooks, AttnOut(l), attn_out)?;
        let resid = run3(hooks, ResidMid(l), resid + attn_out)?;
        let mlp_in = run3(hooks, MlpIn(l), resid.clone())?;
        let x = self
            .ln_2
            .forward(mlp_in, (Ln2Scale(l), Ln2Normalized(l)), hooks)?;
        let mlp_out = self.mlp.forward(x, l, hooks)?;
        let mlp_out = run3(hooks, MlpOut(l), mlp_out)?;
        run3(hooks, ResidPost(l), resid + mlp_out)
    }
}

/// GPT-2 with its language-model head (tied to the token embedding).
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embedding `[vocab, d_model]`.
    pub wte: Param<Tensor<2>>,
    /// Unembedding `[d_model, vocab]` (TransformerLens's `unembed.W_U`). Hugging Face ties the
    /// LM head to `wte`; burnlens keeps a contiguous transposed copy, initialised from `wte`,
    /// because a matmul against a transposed view is up to 10× slower on some backends and
    /// TransformerLens's weight processing (`center_unembed`) edits `W_U` alone.
    pub w_u: Param<Tensor<2>>,
    /// Unembedding bias `[vocab]` (TransformerLens's `unembed.b_U`): absent in GPT-2
    /// checkpoints, present after [`Gpt2::process_weights`] folds `ln_f` into the unembedding.
    pub b_u: Option<Param<Tensor<1>>>,
    /// Position embedding `[n_positions, d_model]`.
    pub wpe: Param<Tensor<2>>,
    /// The transformer blocks.
    pub blocks: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: Gpt2Config,
    /// The weight processing applied since loading (none for a checkpoint as stored).
    #[module(skip)]
    pub processing: WeightProcessing,
}

impl Gpt2 {
    /// Rebuilds the tied unembedding `w_u` from `wte`, after `wte` was replaced (an edited
    /// initialisation, say). The model must have tied embeddings (`b_u` none).
    pub fn retie_unembedding(&mut self) {
        self.w_u = unembedding(&self.wte.val());
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.wte.val().device()
    }

    /// Logits for a batch, with no cache and no hooks.
    ///
    /// # Shapes
    /// - output: `[batch, pos, vocab]`
    pub fn logits(&self, batch: &TokenBatch) -> Result<Tensor<3>> {
        self.forward(batch, None, &mut NoHooks)
    }

    /// Next-token cross-entropy of a batch under the model (padding excluded; see
    /// [`burnlens_metrics::next_token_loss`]).
    ///
    /// # Errors
    /// As [`Gpt2::forward`]; a batch of one-token sequences has no next token to predict.
    pub fn loss(&self, batch: &TokenBatch) -> Result<burnlens_metrics::NextTokenLoss> {
        self.loss_with_hooks(batch, &mut NoHooks)
    }

    /// [`Gpt2::loss`] with `hooks` run in its forward pass (to read an intermediate activation
    /// for an auxiliary loss while training, say: what a hook keeps stays on the autodiff
    /// graph).
    ///
    /// # Errors
    /// As [`Gpt2::loss`], and errors raised by hooks.
    pub fn loss_with_hooks(
        &self,
        batch: &TokenBatch,
        hooks: &mut dyn Hooks,
    ) -> Result<burnlens_metrics::NextTokenLoss> {
        if batch.seq_len() < 2 {
            return Err(Error::Shape(
                "the loss needs sequences of at least 2 tokens".into(),
            ));
        }
        let logits = self.forward(batch, None, hooks)?;
        let device = self.device();
        let shape = [batch.batch_size(), batch.seq_len()];
        let tokens = int_tensor(
            batch.ids().iter().map(|&i| i as i64).collect(),
            shape,
            &device,
        );
        let mask = batch.has_padding().then(|| {
            let m: Vec<f32> = batch
                .mask()
                .iter()
                .map(|&r| if r { 1.0 } else { 0.0 })
                .collect();
            Tensor::<2>::from_data(TensorData::new(m, shape), &device)
        });
        Ok(burnlens_metrics::next_token_loss(logits, tokens, mask))
    }

    /// The forward pass: the one implementation that logits, caching, generation, hooks,
    /// patching and tracing all go through.
    ///
    /// Positions come from the attention mask (`cumsum(mask) - 1`, continuing from the cache),
    /// so a padded sequence's real tokens get the logits of the unpadded run, on either side
    /// of the padding. With a `cache`, the batch holds only the new tokens; their keys and
    /// values are appended to it.
    ///
    /// It is the composition of its stages, [`Gpt2::context`], [`Gpt2::embed`],
    /// [`Gpt2::block`] for every layer and [`Gpt2::unembed`], which engines that run only part
    /// of a pass (batched patching, causal tracing) call directly.
    ///
    /// On the CPU backends a batch of several rows may run as blocks of rows on separate
    /// threads, each block through this same pass with its part of the hooks (see
    /// [`Gpt2::row_blocks`]: no KV cache, no hooks, an empty set or captures); the logits, and
    /// what the hooks keep, are those of one pass over the whole batch.
    ///
    /// # Shapes
    /// - batch: token ids `[batch, pos]` and optional mask `[batch, pos]`
    /// - output: logits `[batch, pos, vocab]`
    ///
    /// # Errors
    /// Token ids outside the vocabulary, a sequence longer than `n_positions` (cache included),
    /// a cache built for another batch size, and errors raised by hooks.
    pub fn forward(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor<3>> {
        if cache.is_none()
            && let Some(blocks) = crate::parallel::row_blocks(batch, &self.device())
            && let Some(split) = hooks.row_split()
            && let Some(parts) = split.split(blocks.len())
        {
            return crate::parallel::forward_rows(batch, &blocks, parts, split, |rows, part| {
                self.forward_whole(rows, None, part)
            });
        }
        self.forward_whole(batch, cache, hooks)
    }

    /// How many blocks of rows a forward of `batch` with no KV cache runs as, on separate
    /// threads, if its hook set can be split ([`RowSplit`](crate::hook::RowSplit): no hooks, an empty set,
    /// a set of captures): 1 when it runs whole (one row, a GPU or autodiff device, ndarray
    /// without OpenBLAS, one rayon thread, `BURNLENS_ROW_PARALLEL=0`). A set that intervenes
    /// or takes gradients always runs whole.
    pub fn row_blocks(&self, batch: &TokenBatch) -> usize {
        crate::parallel::row_blocks(batch, &self.device()).map_or(1, |b| b.len())
    }

    /// [`Gpt2::forward`] on the whole batch in one pass: what the parts of a row-parallel
    /// forward run, each on its rows.
    fn forward_whole(
        &self,
        batch: &TokenBatch,
        mut cache: Option<&mut KvCache>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor<3>> {
        let ctx = self.context(batch, cache.as_deref())?;
        let mut resid = self.embed(batch, &ctx, hooks)?;
        for l in 0..self.blocks.len() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(l));
            resid = self.block(l, resid, &ctx, layer_cache, hooks)?;
        }
        if let Some(c) = cache {
            c.advance(batch, &ctx.positions);
        }
        self.unembed(resid, hooks)
    }

    /// The first stage of [`Gpt2::forward`]: checks the batch against the model and the cache
    /// and derives the positions and the attention mask every block shares.
    ///
    /// # Errors
    /// Token ids outside the vocabulary, a sequence longer than `n_positions` (cache
    /// included), a cache built for another batch size.
    pub fn context(&self, batch: &TokenBatch, cache: Option<&KvCache>) -> Result<ForwardContext> {
        let cfg = &self.config;
        let b = batch.batch_size();
        if let Some(&id) = batch
            .ids()
            .iter()
            .find(|&&id| id as usize >= cfg.vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                id,
                vocab_size: cfg.vocab_size,
            });
        }
        let (past, past_real, start_pos) = match cache {
            Some(c) => {
                c.check_compatible(b, cfg.n_layer)?;
                (c.len(), c.key_mask().to_vec(), c.next_positions().to_vec())
            }
            None => (0, Vec::new(), vec![0; b]),
        };
        let positions = batch.positions(&start_pos);
        if let Some(&max_pos) = positions.iter().max()
            && max_pos >= cfg.n_positions
        {
            return Err(Error::TooLong {
                len: max_pos + 1,
                n_positions: cfg.n_positions,
            });
        }
        let mask = build_mask(batch, past, &past_real, &self.device());
        Ok(ForwardContext {
            mask,
            positions,
            rows: b,
            queries: batch.seq_len(),
            keys: past + batch.seq_len(),
        })
    }

    /// The token embeddings of `ids` (rows of `wte`: what `hook_embed` sees, before position
    /// embeddings).
    ///
    /// # Shapes
    /// - output: `[ids.len(), d_model]`
    pub fn token_embeddings(&self, ids: &[u32]) -> Tensor<2> {
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect(), [ids.len()]),
            &self.device(),
        );
        self.wte.val().select(0, idx)
    }

    /// Token plus position embeddings (`hook_embed`, `hook_pos_embed`): the residual stream
    /// entering block 0.
    ///
    /// # Shapes
    /// - batch: token ids `[batch, pos]`, the batch `ctx` was built from
    /// - output: `[batch, pos, d_model]`
    ///
    /// # Errors
    /// A batch of another shape than the context's, and errors raised by hooks.
    pub fn embed(
        &self,
        batch: &TokenBatch,
        ctx: &ForwardContext,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor<3>> {
        let device = self.device();
        let (b, t) = (batch.batch_size(), batch.seq_len());
        if (b, t) != (ctx.rows, ctx.queries) {
            return Err(Error::Shape(format!(
                "a batch of {b} × {t} tokens with a forward context for {} × {}",
                ctx.rows, ctx.queries
            )));
        }
        let pos = int_tensor(
            ctx.positions.iter().map(|&p| p as i64).collect(),
            [b, t],
            &device,
        );
        let d = self.config.n_embd;
        let embed = self.token_embeddings(batch.ids()).reshape([b, t, d]);
        let embed = run3(hooks, HookPoint::Embed, embed)?;
        let pos_embed = self
            .wpe
            .val()
            .select(0, pos.reshape([b * t]))
            .reshape([b, t, d]);
        let pos_embed = run3(hooks, HookPoint::PosEmbed, pos_embed)?;
        Ok(embed + pos_embed)
    }

    /// Block `layer` on the residual stream: `hook_resid_pre` in, `hook_resid_post` out.
    ///
    /// `cache` holds this block's keys and values of earlier positions (if any); the new ones
    /// are appended to it.
    ///
    /// # Shapes
    /// - resid: `[ctx.rows(), ctx.queries(), d_model]`
    /// - cache: keys and values `[ctx.rows(), n_heads, ctx.keys() - ctx.queries(), d_head]`
    /// - output: `[ctx.rows(), ctx.queries(), d_model]`
    ///
    /// # Errors
    /// A layer past the model, a residual or cache that does not fit the context, and errors
    /// raised by hooks.
    pub fn block(
        &self,
        layer: usize,
        resid: Tensor<3>,
        ctx: &ForwardContext,
        cache: Option<&mut crate::cache::LayerKv>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor<3>> {
        let block = self.blocks.get(layer).ok_or_else(|| {
            Error::Shape(format!(
                "block {layer} requested from a model of {} blocks",
                self.blocks.len()
            ))
        })?;
        let [b, t, d] = resid.dims();
        if (b, t, d) != (ctx.rows, ctx.queries, self.config.n_embd) {
            return Err(Error::Shape(format!(
                "block {layer} got a residual stream of shape {:?}; the context expects [{}, {}, {}]",
                [b, t, d],
                ctx.rows,
                ctx.queries,
                self.config.n_embd
            )));
        }
        let past = cache.as_ref().map_or(0, |c| c.len());
        if past + t != ctx.keys {
            return Err(Error::Shape(format!(
                "block {layer}: {past} cached positions plus {t} new ones, but the context has {} keys",
                ctx.keys
            )));
        }
        block.forward(resid, &ctx.mask, cache, hooks)
    }

    /// The final LayerNorm and the unembedding (`ln_final.*`, `unembed.hook_in/out`).
    ///
    /// # Shapes
    /// - resid: `[batch, pos, d_model]`, the last block's output
    /// - output: logits `[batch, pos, vocab]`
    ///
    /// # Errors
    /// Errors raised by hooks.
    pub fn unembed(&self, resid: Tensor<3>, hooks: &mut dyn Hooks) -> Result<Tensor<3>> {
        let [b, t, d] = resid.dims();
        let x = self.ln_f.forward(
            resid,
            (HookPoint::LnFinalScale, HookPoint::LnFinalNormalized),
            hooks,
        )?;
        let x = run3(hooks, HookPoint::UnembedIn, x)?;
        let logits = x.reshape([b * t, d]).matmul(self.w_u.val());
        let logits = match &self.b_u {
            Some(b_u) => logits + b_u.val().unsqueeze::<2>(),
            None => logits,
        };
        run3(
            hooks,
            HookPoint::UnembedOut,
            logits.reshape([b, t, self.config.vocab_size]),
        )
    }
}

/// What every block of one forward pass shares: the positions and the attention mask (causal,
/// with the padding of the batch and of any cached keys).
///
/// Built by [`Gpt2::context`]; [`ForwardContext::suffix`] and [`ForwardContext::tile`] derive
/// the contexts of part of a pass, as batched patching and causal tracing run them.
#[derive(Clone, Debug)]
pub struct ForwardContext {
    mask: AttentionMask,
    positions: Vec<usize>,
    rows: usize,
    queries: usize,
    keys: usize,
}

impl ForwardContext {
    /// Number of sequences.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of new positions (queries) per sequence.
    pub fn queries(&self) -> usize {
        self.queries
    }

    /// Number of positions attended to (cached plus new).
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// The position-embedding index of every query, row-major `[rows, queries]`.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// The context of the queries `from..` only, every key kept: what a pass over the tail of
    /// the sequence sees when the keys and values of the positions before `from` come from a
    /// cache. Causal attention makes its outputs equal to the full pass's at those positions.
    ///
    /// # Errors
    /// `from` not inside the queries.
    pub fn suffix(&self, from: usize) -> Result<Self> {
        if from >= self.queries {
            return Err(Error::Shape(format!(
                "suffix from query {from} of a context with {} queries",
                self.queries
            )));
        }
        let (b, t, k) = (self.rows, self.queries, self.keys);
        let positions = (0..b)
            .flat_map(|r| self.positions[r * t + from..(r + 1) * t].iter().copied())
            .collect();
        Ok(Self {
            mask: AttentionMask {
                blocked: self.mask.blocked.clone().slice([0..b, 0..1, from..t, 0..k]),
                empty_rows: self
                    .mask
                    .empty_rows
                    .as_ref()
                    .map(|e| e.clone().slice([0..b, 0..1, from..t, 0..1])),
            },
            positions,
            rows: b,
            queries: t - from,
            keys: k,
        })
    }

    /// `copies` copies of every row, copy-major (row `c * rows + r` is row `r` of copy `c`):
    /// the context of a batch that runs several variants of the same sequences at once.
    pub fn tile(&self, copies: usize) -> Self {
        let copies = copies.max(1);
        Self {
            mask: AttentionMask {
                blocked: self.mask.blocked.clone().repeat_dim(0, copies),
                empty_rows: self
                    .mask
                    .empty_rows
                    .as_ref()
                    .map(|e| e.clone().repeat_dim(0, copies)),
            },
            positions: self.positions.repeat(copies),
            rows: self.rows * copies,
            queries: self.queries,
            keys: self.keys,
        }
    }
}

/// A contiguous copy of `wte` transposed, `[d_model, vocab]`: the tied LM head. The backend
/// lays the transposed view out row by row (`into_data`), in its optimised code.
pub(crate) fn unembedding(wte: &Tensor<2>) -> Param<Tensor<2>> {
    let data = wte.clone().transpose().into_data();
    Param::from_tensor(Tensor::from_data(data, &wte.device()))
}

fn int_tensor(values: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The causal mask, combined with the key-padding mask of the cache and the batch.
fn build_mask(
    batch: &TokenBatch,
    past: usize,
    past_real: &[bool],
    device: &Device,
) -> AttentionMask {
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let total = past + t;
    let mut blocked = vec![false; b * t * total];
    let mut empty = vec![false; b * t];
    let mut any_empty = false;
    for r in 0..b {
        for i in 0..t {
            let row = &mut blocked[(r * t + i) * total..(r * t + i + 1) * total];
            let mut seen = false;
            for (j, cell) in row.iter_mut().enumerate() {
                let real = if j < past {
                    past_real[r * past + j]
                } else {
                    batch.is_real(r, j - past)
                };
                *cell = j > past + i || !real;
                seen |= !*cell;
            }
            if !seen {
                empty[r * t + i] = true;
                any_empty = true;
            }
        }
    }
    AttentionMask {
        blocked: Tensor::from_data(TensorData::new(blocked, [b, 1, t, total]), device),
        empty_rows: any_empty
            .then(|| Tensor::from_data(TensorData::new(empty, [b, 1, t, 1]), device)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendKind;

    /// `gelu_tanh` against `gelu_new` computed in f64, including the tails where the
    /// exponential is clamped.
    #[test]
    fn gelu_tanh_matches_gelu_new_in_f64_on_the_cpu_backends() {
        let xs: Vec<f32> = vec![
            -100.0, -30.0, -10.0, -5.0, -3.0, -1.5, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 1.5,
            3.0, 5.0, 10.0, 30.0, 100.0,
        ];
        let expected: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = f64::from(x);
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
                0.5 * x * (1.0 + u.tanh())
            })
            .collect();
        for backend in [BackendKind::NdArray, BackendKind::Flex] {
            let device = backend.device().expect("CPU device");
            let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device);
            let got: Vec<f32> = gelu_tanh(x)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 data");
            for ((&x, &g), &e) in xs.iter().zip(&got).zip(&expected) {
                let tol = 1e-6 * e.abs().max(1.0);
                assert!(
                    (f64::from(g) - e).abs() <= tol,
                    "{}: gelu_new({x}) = {g}, expected {e}",
                    backend.name()
                );
            }
        }
    }

    /// The gradient of `gelu_tanh` on an autodiff device against the derivative of
    /// `gelu_new` in f64, finite in the tails (where an unclamped exponential would give
    /// `0 · ∞ = NaN`).
    #[test]
    fn gelu_tanh_gradient_matches_gelu_new_derivative_and_is_finite_in_the_tails() {
        let xs: Vec<f32> = vec![
            -100.0, -30.0, -12.0, -10.0, -5.0, -2.0, -1.0, -0.3, 0.0, 0.3, 1.0, 2.0, 5.0, 30.0,
        ];
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let expected: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = f64::from(x);
                let t = (c * (x + 0.044715 * x.powi(3))).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
            })
            .collect();
        for backend in [BackendKind::NdArray, BackendKind::Flex] {
            let device = backend.device().expect("CPU device").autodiff();
            let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device)
                .require_grad();
            let grads = gelu_tanh(x.clone()).sum().backward();
            let got: Vec<f32> = x
                .grad(&grads)
                .expect("a gradient")
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 data");
            for ((&x, &g), &e) in xs.iter().zip(&got).zip(&expected) {
                assert!(
                    g.is_finite() && (f64::from(g) - e).abs() <= 1e-5,
                    "{}: d gelu_new/dx at {x} = {g}, expected {e}",
                    backend.name()
                );
            }
        }
    }
}
