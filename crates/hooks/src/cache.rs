//! The activation cache: captured activations by hook point, the residual-stream
//! decompositions TransformerLens offers on it, and safetensors files Python can read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

use rayon::prelude::*;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burnlens_model::weights::{RawTensor, read_safetensors_as, write_safetensors};
use burnlens_model::{Gpt2, HookPoint, IntoHookPoint};

use crate::act::Act;
use crate::error::{Error, Result};

/// Which sublayer outputs [`ActivationCache::decompose_resid`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResidMode {
    /// Attention and MLP outputs.
    #[default]
    All,
    /// MLP outputs only.
    Mlp,
    /// Attention outputs only.
    Attn,
}

/// TransformerLens's keyword arguments of [`ActivationCache::accumulated_resid`] and
/// [`ActivationCache::decompose_resid`], with its defaults: every layer, no `resid_mid`, no
/// LayerNorm, not the MLP input; all sublayers and the embeddings.
///
/// ```
/// use burnlens_hooks::ResidOptions;
///
/// let options = ResidOptions::default().up_to(1).incl_mid().apply_ln();
/// assert_eq!((options.layer, options.incl_mid, options.apply_ln), (Some(1), true, true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidOptions {
    /// Stop before this block (`None`: after the last block).
    pub layer: Option<usize>,
    /// `accumulated_resid`: add `resid_mid` between blocks.
    pub incl_mid: bool,
    /// Apply the LayerNorm the model applies at `layer` to each component.
    pub apply_ln: bool,
    /// Read at the MLP's input of `layer` (its `resid_mid`) instead of the block's input.
    pub mlp_input: bool,
    /// `decompose_resid`: which sublayer outputs.
    pub mode: ResidMode,
    /// `decompose_resid`: include the token and position embeddings.
    pub incl_embeds: bool,
}

impl Default for ResidOptions {
    fn default() -> Self {
        Self {
            layer: None,
            incl_mid: false,
            apply_ln: false,
            mlp_input: false,
            mode: ResidMode::All,
            incl_embeds: true,
        }
    }
}

impl ResidOptions {
    /// Stop before block `layer`.
    pub fn up_to(mut self, layer: usize) -> Self {
        self.layer = Some(layer);
        self
    }

    /// Add `resid_mid` between blocks (`accumulated_resid`).
    pub fn incl_mid(mut self) -> Self {
        self.incl_mid = true;
        self
    }

    /// Apply the LayerNorm at `layer` to each component.
    pub fn apply_ln(mut self) -> Self {
        self.apply_ln = true;
        self
    }

    /// Read at the MLP's input of `layer`.
    pub fn mlp_input(mut self) -> Self {
        self.mlp_input = true;
        self
    }

    /// Only these sublayer outputs (`decompose_resid`).
    pub fn mode(mut self, mode: ResidMode) -> Self {
        self.mode = mode;
        self
    }

    /// Leave the embeddings out (`decompose_resid`).
    pub fn without_embeds(mut self) -> Self {
        self.incl_embeds = false;
        self
    }
}

/// A stack of residual-stream components with a label for each.
///
/// # Shapes
/// - `stack`: `[components, batch, pos, d_model]`
#[derive(Debug, Clone)]
pub struct ResidStack {
    /// The components, stacked on the first axis.
    pub stack: Tensor<4>,
    /// One label per component (TransformerLens's labels: `0_pre`, `final_post`, `embed`,
    /// `1_attn_out`, `L0H3`, `remainder`, …).
    pub labels: Vec<String>,
}

/// One point's activation: whole, or as the blocks of rows a row-parallel forward captured,
/// stacked on the batch axis the first time it is read.
struct Slot {
    whole: OnceLock<Act>,
    /// The blocks, in row order, until they are stacked (then empty).
    blocks: Mutex<Vec<Act>>,
    /// The shape of the whole activation.
    dims: Vec<usize>,
}

impl Slot {
    fn whole(act: Act) -> Self {
        Self {
            dims: act.dims(),
            whole: OnceLock::from(act),
            blocks: Mutex::default(),
        }
    }

    fn rows(blocks: Vec<Act>) -> Result<Self> {
        Ok(Self {
            dims: Act::row_stack_dims(&blocks)?,
            whole: OnceLock::new(),
            blocks: Mutex::new(blocks),
        })
    }

    fn blocks(&self) -> std::sync::MutexGuard<'_, Vec<Act>> {
        self.blocks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the blocks have been stacked (always, for a whole activation).
    fn is_stacked(&self) -> bool {
        self.whole.get().is_some()
    }

    /// The whole activation, stacking the blocks on the first call.
    fn act(&self) -> &Act {
        self.whole
            .get_or_init(|| Act::cat_rows(std::mem::take(&mut *self.blocks())))
    }
}

impl Clone for Slot {
    fn clone(&self) -> Self {
        if let Some(act) = self.whole.get() {
            return Slot::whole(act.clone());
        }
        let blocks = self.blocks().clone();
        if blocks.is_empty() {
            // Another thread is stacking them: wait for the whole activation.
            return Slot::whole(self.act().clone());
        }
        Slot {
            whole: OnceLock::new(),
            blocks: Mutex::new(blocks),
            dims: self.dims.clone(),
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("dims", &self.dims)
            .field("stacked", &self.is_stacked())
            .finish()
    }
}

/// Activations by hook point (TransformerLens's `ActivationCache`).
///
/// Look up by [`HookPoint`], TransformerLens name or `(kind, layer)` shorthand. The methods
/// that need weights (`stack_head_results`, `logit_attrs`, the final LayerNorm) take the model
/// that produced the cache.
///
/// A forward that ran as blocks of rows on separate threads (see
/// [`Gpt2::forward`](burnlens_model::Gpt2::forward)) leaves each point as its blocks; they are
/// stacked into one activation the first time the point is read, so a capture costs no copy
/// in the forward and a point never read is never stacked.
#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    acts: BTreeMap<HookPoint, Slot>,
}

impl ActivationCache {
    /// Stores an activation (replacing any earlier one at the point).
    pub fn insert(&mut self, point: HookPoint, act: Act) {
        self.acts.insert(point, Slot::whole(act));
    }

    /// Stores the activations of consecutive blocks of a batch's rows at `point`, to be
    /// stacked on the batch axis when first read (replacing any earlier one at the point).
    ///
    /// # Errors
    /// No block, or blocks whose shapes differ off the batch axis.
    pub(crate) fn insert_rows(&mut self, point: HookPoint, blocks: Vec<Act>) -> Result<()> {
        self.acts.insert(point, Slot::rows(blocks)?);
        Ok(())
    }

    /// Stacks, in parallel across points, every point still held as blocks of rows, so that
    /// reading them all afterwards copies nothing. Reading points one by one stacks each on
    /// the calling thread, one after the other; call this first when most of the cache will
    /// be read (its cost is that of writing the cache's memory once, mostly page faults on
    /// fresh memory).
    ///
    /// Hidden: the row-parallel forward's blocks are not part of the cache's API (every read
    /// returns the whole activation); the benchmarks and tests use this to time and check them.
    #[doc(hidden)]
    pub fn stack_all(&self) {
        self.acts
            .par_iter()
            .filter(|(_, s)| !s.is_stacked())
            .for_each(|(_, s)| {
                s.act();
            });
    }

    /// Whether the activation at `point` is held as blocks of rows not yet stacked (`false`
    /// once it has been read, and for a point not in the cache). Hidden, as
    /// [`stack_all`](Self::stack_all).
    #[doc(hidden)]
    pub fn is_in_blocks(&self, point: HookPoint) -> bool {
        self.acts.get(&point).is_some_and(|s| !s.is_stacked())
    }

    /// The activation at a point.
    ///
    /// # Errors
    /// An unknown name, or a point that was not captured.
    pub fn get(&self, point: impl IntoHookPoint) -> Result<&Act> {
        let p = point.into_hook_point()?;
        self.acts.get(&p).map(Slot::act).ok_or_else(|| Error::NotCached {
            point: p.to_string(),
            hint: if p.is_default() {
                " (capture it: HookSet::capture or run_with_cache with a selector that includes it)"
                    .into()
            } else {
                " (an on-request point: it exists only when a hook set captures it)".into()
            },
        })
    }

    /// A rank-3 activation (`[batch, pos, d]`).
    ///
    /// # Errors
    /// As [`ActivationCache::get`], or a rank-4 activation.
    pub fn get3(&self, point: impl IntoHookPoint) -> Result<Tensor<3>> {
        self.get(point)?.r3()
    }

    /// A rank-4 activation.
    ///
    /// # Errors
    /// As [`ActivationCache::get`], or a rank-3 activation.
    pub fn get4(&self, point: impl IntoHookPoint) -> Result<Tensor<4>> {
        self.get(point)?.r4()
    }

    /// Whether the cache holds `point`.
    pub fn contains(&self, point: HookPoint) -> bool {
        self.acts.contains_key(&point)
    }

    /// The cached points, in forward order.
    pub fn points(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.acts.keys().copied()
    }

    /// Number of cached points.
    pub fn len(&self) -> usize {
        self.acts.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.acts.is_empty()
    }

    /// Bytes the cached activations occupy (4 per f32 element).
    pub fn memory_bytes(&self) -> usize {
        self.acts
            .values()
            .map(|s| s.dims.iter().product::<usize>() * 4)
            .sum()
    }

    /// Writes the cache as safetensors, keyed by TransformerLens names, so that Python can read
    /// it with `safetensors.torch.load_file` (each value shaped as in TransformerLens).
    ///
    /// # Errors
    /// A file that cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.stack_all();
        let raw: BTreeMap<String, RawTensor> = self
            .acts
            .iter()
            .map(|(p, slot)| {
                let a = slot.act();
                (
                    p.to_string(),
                    RawTensor {
                        shape: a.dims(),
                        data: a.to_vec(),
                    },
                )
            })
            .collect();
        Ok(write_safetensors(&raw, path)?)
    }

    /// Reads a cache written by [`ActivationCache::save`] (or by Python with TransformerLens
    /// names) onto `device`.
    ///
    /// # Errors
    /// A missing or malformed file, a key that is not a hook point, a tensor that is neither
    /// rank 3 nor rank 4.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let raw = read_safetensors_as(path, "the activation cache")?;
        let mut out = Self::default();
        for (name, t) in raw {
            let p: HookPoint = name.parse()?;
            let act = match t.shape.as_slice() {
                &[a, b, c] => Act::R3(Tensor::from_data(
                    TensorData::new(t.data, [a, b, c]),
                    device,
                )),
                &[a, b, c, d] => Act::R4(Tensor::from_data(
                    TensorData::new(t.data, [a, b, c, d]),
                    device,
                )),
                s => {
                    return Err(Error::File {
                        path: path.to_path_buf(),
                        message: format!("{name} has shape {s:?}; activations have rank 3 or 4"),
                    });
                }
            };
            out.insert(p, act);
        }
        Ok(out)
    }

    fn n_layers_for(layer: Option<usize>, model: &Gpt2) -> Result<usize> {
        let n = model.config.n_layer;
        match layer {
            None => Ok(n),
            Some(l) if l <= n => Ok(l),
            Some(l) => Err(Error::Shape(format!(
                "layer {l} is out of range: the model has {n} blocks (use {n} or None for the final residual)"
            ))),
        }
    }

    /// The residual stream before each block up to `layer` (and after the last block when
    /// `layer` is `None` or `n_layers`), stacked: TransformerLens's `accumulated_resid`.
    ///
    /// [`ResidOptions`]: `incl_mid` adds `resid_mid` between blocks; `mlp_input` adds the last
    /// block's `resid_mid` (the MLP's input). With `apply_ln`, the final LayerNorm is applied to each component
    /// (the logit lens) when the stack reaches the end of the model, otherwise each component
    /// is centered and divided by the cached LayerNorm scale of `layer`.
    ///
    /// # Shapes
    /// - output: `[components, batch, pos, d_model]`
    ///
    /// # Errors
    /// A layer out of range, or a needed point that was not captured.
    pub fn accumulated_resid(&self, model: &Gpt2, options: ResidOptions) -> Result<ResidStack> {
        let ResidOptions {
            layer,
            incl_mid,
            apply_ln,
            mlp_input,
            ..
        } = options;
        let n = model.config.n_layer;
        let layer = Self::n_layers_for(layer, model)?;
        let (mut parts, mut labels) = (Vec::new(), Vec::new());
        for l in 0..=layer {
            if l == n {
                parts.push(self.get3(HookPoint::ResidPost(n - 1))?);
                labels.push("final_post".to_string());
                continue;
            }
            parts.push(self.get3(HookPoint::ResidPre(l))?);
            labels.push(format!("{l}_pre"));
            if (incl_mid && l < layer) || (mlp_input && l == layer) {
                parts.push(self.get3(HookPoint::ResidMid(l))?);
                labels.push(format!("{l}_mid"));
            }
        }
        let mut stack = Tensor::stack(parts, 0);
        if apply_ln {
            stack = if layer == n {
                // The model's own final LayerNorm, applied to each component.
                model.ln_f.forward(
                    stack,
                    (HookPoint::LnFinalScale, HookPoint::LnFinalNormalized),
                    &mut burnlens_model::NoHooks,
                )?
            } else {
                self.apply_ln_to_stack(model, stack, Some(layer), mlp_input)?
            };
        }
        Ok(ResidStack { stack, labels })
    }

    /// The residual stream at `layer` split into what wrote it: the embeddings and each
    /// block's attention and MLP outputs (TransformerLens's `decompose_resid`; [`ResidOptions`]'s
    /// `layer`, `mlp_input`, `mode`, `apply_ln` and `incl_embeds`).
    ///
    /// # Shapes
    /// - output: `[components, batch, pos, d_model]`
    ///
    /// # Errors
    /// A layer out of range, or a needed point that was not captured.
    pub fn decompose_resid(&self, model: &Gpt2, options: ResidOptions) -> Result<ResidStack> {
        let ResidOptions {
            layer,
            mlp_input,
            mode,
            apply_ln,
            incl_embeds,
            ..
        } = options;
        let layer = Self::n_layers_for(layer, model)?;
        let incl_attn = mode != ResidMode::Mlp;
        let incl_mlp = mode != ResidMode::Attn;
        let (mut parts, mut labels) = (Vec::new(), Vec::new());
        if incl_embeds {
            parts.push(self.get3(HookPoint::Embed)?);
            labels.push("embed".to_string());
            parts.push(self.get3(HookPoint::PosEmbed)?);
            labels.push("pos_embed".to_string());
        }
        for l in 0..layer {
            if incl_attn {
                parts.push(self.get3(HookPoint::AttnOut(l))?);
                labels.push(format!("{l}_attn_out"));
            }
            if incl_mlp {
                parts.push(self.get3(HookPoint::MlpOut(l))?);
                labels.push(format!("{l}_mlp_out"));
            }
        }
        if mlp_input && incl_attn {
            parts.push(self.get3(HookPoint::AttnOut(layer))?);
            labels.push(format!("{layer}_attn_out"));
        }
        if parts.is_empty() {
            return Err(Error::Shape(
                "decompose_resid: no components selected".into(),
            ));
        }
        let mut stack = Tensor::stack(parts, 0);
        if apply_ln {
            stack = self.apply_ln_to_stack(model, stack, Some(layer), mlp_input)?;
        }
        Ok(ResidStack { stack, labels })
    }

    /// Each head's output (`z · W_O[head]`, from `attn.hook_result` when captured, otherwise
    /// computed from `attn.hook_z`) for every block before `layer`, stacked head by head
    /// (TransformerLens's `stack_head_results`). `incl_remainder` adds what the heads do not
    /// explain of `resid_post` of block `layer - 1`.
    ///
    /// # Shapes
    /// - output: `[layer * n_heads (+1), batch, pos, d_model]`
    ///
    /// # Errors
    /// A layer out of range, or a needed point that was not captured.
    pub fn stack_head_results(
        &self,
        model: &Gpt2,
        layer: Option<usize>,
        incl_remainder: bool,
        apply_ln: bool,
    ) -> Result<ResidStack> {
        let layer = Self::n_layers_for(layer, model)?;
        let (mut parts, mut labels) = (Vec::new(), Vec::new());
        for l in 0..layer {
            let result = match self.acts.get(&HookPoint::Result(l)).map(Slot::act) {
                Some(a) => a.r4()?,
                None => model.blocks[l]
                    .attn
                    .head_results(self.get4(HookPoint::Z(l))?),
            };
            let h = result.dims()[2];
            parts.push(result.permute([2, 0, 1, 3])); // [h, b, p, d]
            labels.extend((0..h).map(|i| format!("L{l}H{i}")));
        }
        let mut stack = if parts.is_empty() {
            None
        } else {
            Some(Tensor::cat(parts, 0))
        };
        if incl_remainder {
            if layer == 0 {
                return Err(Error::Shape(
                    "stack_head_results: a remainder needs layer >= 1".into(),
                ));
            }
            let post = self.get3(HookPoint::ResidPost(layer - 1))?;
            let rest = match &stack {
                Some(s) => post - s.clone().sum_dim(0).squeeze_dim::<3>(0),
                None => post,
            };
            let rest = rest.unsqueeze_dim::<4>(0);
            stack = Some(match stack {
                Some(s) => Tensor::cat(vec![s, rest], 0),
                None => rest,
            });
            labels.push("remainder".to_string());
        }
        let mut stack = stack.ok_or_else(|| {
            Error::Shape("stack_head_results: layer 0 has no heads before it".into())
        })?;
        if apply_ln {
            stack = self.apply_ln_to_stack(model, stack, Some(layer), false)?;
        }
        Ok(ResidStack { stack, labels })
    }

    /// Centers each component and divides it by the LayerNorm scale the model applied at
    /// `layer` (`ln_final` for `None` or `n_layers`, else `ln1` of that block, or `ln2` with
    /// `mlp_input`): TransformerLens's `apply_ln_to_stack`, which makes the components add up
    /// to the normalised residual stream.
    ///
    /// # Shapes
    /// - stack: `[components, batch, pos, d_model]`
    /// - output: the same
    ///
    /// # Errors
    /// The scale was not captured, or its shape does not match the stack.
    pub fn apply_ln_to_stack(
        &self,
        model: &Gpt2,
        stack: Tensor<4>,
        layer: Option<usize>,
        mlp_input: bool,
    ) -> Result<Tensor<4>> {
        let layer = Self::n_layers_for(layer, model)?;
        let scale_point = if layer == model.config.n_layer {
            HookPoint::LnFinalScale
        } else if mlp_input {
            HookPoint::Ln2Scale(layer)
        } else {
            HookPoint::Ln1Scale(layer)
        };
        let scale = self.get3(scale_point)?; // [b, p, 1]
        let [_, b, p, _] = stack.dims();
        if scale.dims()[..2] != [b, p] {
            return Err(Error::Shape(format!(
                "the stack has batch {b} and {p} positions but {scale_point} has shape {:?}",
                scale.dims()
            )));
        }
        let centered = stack.clone() - stack.mean_dim(3);
        Ok(centered / scale.unsqueeze_dim::<4>(0))
    }

    /// How much each component of `stack` contributes to the logit of `tokens` (one per batch
    /// row), or to the logit difference `tokens − incorrect`: the components go through
    /// [`ActivationCache::apply_ln_to_stack`] with the final LayerNorm's scale, then are
    /// projected on the unembedding directions (TransformerLens's `logit_attrs`).
    ///
    /// # Shapes
    /// - stack: `[components, batch, pos, d_model]`
    /// - output: `[components, batch, pos]`
    ///
    /// # Errors
    /// Token lists of the wrong length or out of the vocabulary, or a missing
    /// `ln_final.hook_scale`.
    pub fn logit_attrs(
        &self,
        model: &Gpt2,
        stack: Tensor<4>,
        tokens: &[u32],
        incorrect: Option<&[u32]>,
    ) -> Result<Tensor<3>> {
        let [c, b, p, d] = stack.dims();
        let device = stack.device();
        let directions = |ids: &[u32]| -> Result<Tensor<2>> {
            if ids.len() != b {
                return Err(Error::Shape(format!(
                    "logit_attrs: {} tokens for a batch of {b}",
                    ids.len()
                )));
            }
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= model.config.vocab_size) {
                return Err(Error::Shape(format!(
                    "logit_attrs: token {bad} is outside the vocabulary ({})",
                    model.config.vocab_size
                )));
            }
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [b]),
                &device,
            );
            Ok(model.w_u.val().select(1, idx).swap_dims(0, 1)) // [b, d]
        };
        let mut dirs = directions(tokens)?;
        if let Some(wrong) = incorrect {
            dirs = dirs - directions(wrong)?;
        }
        let scaled = self.apply_ln_to_stack(model, stack, None, false)?;
        let dirs = dirs.reshape([1, b, 1, d]);
        Ok((scaled * dirs).sum_dim(3).reshape([c, b, p]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(dims: [usize; 3], start: f32, device: &Device) -> Act {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|i| start + i as f32).collect();
        Act::R3(Tensor::from_data(TensorData::new(values, dims), device))
    }

    #[test]
    fn blocks_of_rows_read_as_the_stacked_batch() {
        let device = Device::flex();
        let mut cache = ActivationCache::default();
        let p = HookPoint::ResidPre(0);
        // Rows 0–1 hold 0..12, row 2 holds 12..18: stacked, the batch holds 0..18 in order.
        cache
            .insert_rows(
                p,
                vec![act([2, 3, 2], 0.0, &device), act([1, 3, 2], 12.0, &device)],
            )
            .unwrap();
        assert!(cache.is_in_blocks(p));
        assert_eq!(cache.memory_bytes(), 18 * 4, "counted before stacking");
        let copy = cache.clone();
        let read = cache.get(p).unwrap();
        assert_eq!(read.dims(), vec![3, 3, 2]);
        assert_eq!(read.to_vec(), (0..18).map(|i| i as f32).collect::<Vec<_>>());
        assert!(!cache.is_in_blocks(p), "stacked once read");
        assert!(
            copy.is_in_blocks(p),
            "a clone taken before keeps its blocks"
        );
        assert_eq!(copy.get(p).unwrap().to_vec(), read.to_vec());
        assert_eq!(cache.memory_bytes(), 18 * 4);
    }

    #[test]
    fn stack_all_stacks_every_point_held_in_blocks() {
        let device = Device::flex();
        let mut cache = ActivationCache::default();
        let (a, b, c) = (
            HookPoint::ResidPre(0),
            HookPoint::ResidPost(0),
            HookPoint::Embed,
        );
        cache
            .insert_rows(
                a,
                vec![act([1, 2, 2], 0.0, &device), act([1, 2, 2], 4.0, &device)],
            )
            .unwrap();
        cache
            .insert_rows(
                b,
                vec![act([1, 2, 2], 8.0, &device), act([2, 2, 2], 12.0, &device)],
            )
            .unwrap();
        cache.insert(c, act([3, 2, 2], 100.0, &device));
        assert!(cache.is_in_blocks(a) && cache.is_in_blocks(b) && !cache.is_in_blocks(c));
        cache.stack_all();
        assert!(!cache.is_in_blocks(a) && !cache.is_in_blocks(b));
        let range = |from: usize, to: usize| (from..to).map(|i| i as f32).collect::<Vec<_>>();
        assert_eq!(cache.get(a).unwrap().to_vec(), range(0, 8));
        assert_eq!(cache.get(b).unwrap().dims(), vec![3, 2, 2]);
        assert_eq!(cache.get(b).unwrap().to_vec(), range(8, 20));
        assert_eq!(cache.get(c).unwrap().to_vec(), range(100, 112));
    }

    #[test]
    fn blocks_that_do_not_stack_are_an_error() {
        let device = Device::flex();
        let mut cache = ActivationCache::default();
        let p = HookPoint::ResidPre(0);
        let err = cache
            .insert_rows(
                p,
                vec![act([1, 3, 2], 0.0, &device), act([1, 4, 2], 0.0, &device)],
            )
            .unwrap_err();
        assert!(err.to_string().contains("cannot be stacked"), "{err}");
        let rank4 = Act::R4(Tensor::zeros([1, 3, 2, 1], &device));
        assert!(
            cache
                .insert_rows(p, vec![act([1, 3, 2], 0.0, &device), rank4])
                .is_err()
        );
        assert!(cache.insert_rows(p, Vec::new()).is_err());
        assert!(!cache.contains(p));
    }
}
