//! TransformerLens's weight processing (`fold_ln`, `center_writing_weights`, `center_unembed`,
//! `fold_value_biases`), applied to a loaded model.
//!
//! Each option changes the weights but not what the model computes: log-probabilities stay
//! equal (logits shift by a per-position constant under `center_unembed`). They make
//! activations easier to read: with `fold_ln` the LayerNorms have no affine part (their
//! weights live in the next linear map), centered writing weights keep the residual stream
//! mean-free, and folded value biases move `b_V` into `b_O`. The order is TransformerLens's:
//! fold, center writing weights, center the unembedding, fold value biases (then re-center
//! `b_O`).

pub use crate::config::WeightProcessing;
use crate::model::{Gpt2, LayerNorm};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Tensor;

fn param<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t)
}

/// Centers `t` along `dim` (subtracts the mean over that axis).
fn centered<const D: usize>(t: Tensor<D>, dim: usize) -> Tensor<D> {
    t.clone() - t.mean_dim(dim)
}

/// Folds a LayerNorm into the linear map reading its output:
/// `b += beta · W`, `W = diag(gamma) W`, then `W` centered over its input axis.
fn fold_into(ln: &mut LayerNorm, lin: &mut Linear) {
    let w = lin.weight.val(); // [d_in, d_out]
    let gamma = ln.gamma.val().unsqueeze_dim::<2>(1); // [d_in, 1]
    let beta = ln.beta.val().unsqueeze_dim::<2>(1);
    let d_out = w.dims()[1];
    let shift = (w.clone() * beta).sum_dim(0).reshape([d_out]);
    let bias = match &lin.bias {
        Some(b) => b.val() + shift,
        None => shift,
    };
    lin.bias = Some(param(bias));
    lin.weight = param(centered(w * gamma, 0));
    let d = ln.gamma.val().dims()[0];
    let device = ln.gamma.val().device();
    ln.gamma = param(Tensor::ones([d], &device));
    ln.beta = param(Tensor::zeros([d], &device));
}

/// Centers a linear map that writes to the residual stream, bias included.
fn center_writer(lin: &mut Linear) {
    lin.weight = param(centered(lin.weight.val(), 1));
    if let Some(b) = &lin.bias {
        lin.bias = Some(param(centered(b.val(), 0)));
    }
}

impl Gpt2 {
    /// Applies TransformerLens's weight processing (see [`WeightProcessing`]) and records it in
    /// [`Gpt2::processing`]. Steps already applied are not applied twice.
    pub fn process_weights(mut self, opts: WeightProcessing) -> Gpt2 {
        let done = self.processing;
        let device = self.device();
        if opts.fold_ln && !done.fold_ln {
            for block in &mut self.blocks {
                fold_into(&mut block.ln_1, &mut block.attn.c_attn);
                fold_into(&mut block.ln_2, &mut block.mlp.c_fc);
            }
            let w_u = self.w_u.val(); // [d, vocab]
            let vocab = w_u.dims()[1];
            let gamma = self.ln_f.gamma.val().unsqueeze_dim::<2>(1);
            let beta = self.ln_f.beta.val().unsqueeze_dim::<2>(1);
            let shift = (w_u.clone() * beta).sum_dim(0).reshape([vocab]);
            let b_u = match &self.b_u {
                Some(b) => b.val() + shift,
                None => shift,
            };
            self.b_u = Some(param(b_u));
            self.w_u = param(centered(w_u * gamma, 0));
            let d = self.config.n_embd;
            self.ln_f.gamma = param(Tensor::ones([d], &device));
            self.ln_f.beta = param(Tensor::zeros([d], &device));
        }
        if opts.center_writing_weights && !done.center_writing_weights {
            self.wte = param(centered(self.wte.val(), 1));
            self.wpe = param(centered(self.wpe.val(), 1));
            for block in &mut self.blocks {
                center_writer(&mut block.attn.c_proj);
                center_writer(&mut block.mlp.c_proj);
            }
        }
        if opts.center_unembed && !done.center_unembed {
            self.w_u = param(centered(self.w_u.val(), 1));
            if let Some(b) = &self.b_u {
                self.b_u = Some(param(centered(b.val(), 0)));
            }
        }
        if opts.fold_value_biases && !done.fold_value_biases {
            let recenter = opts.center_writing_weights || done.center_writing_weights;
            for block in &mut self.blocks {
                let attn = &mut block.attn;
                let Some(b_qkv) = attn.c_attn.bias.as_ref().map(|b| b.val()) else {
                    continue;
                };
                let d = self.config.n_embd;
                let b_v = b_qkv.clone().slice(2 * d..3 * d);
                let shift = b_v.unsqueeze::<2>().matmul(attn.c_proj.weight.val());
                let b_o = match &attn.c_proj.bias {
                    Some(b) => b.val() + shift.reshape([d]),
                    None => shift.reshape([d]),
                };
                let b_o = if recenter { centered(b_o, 0) } else { b_o };
                attn.c_proj.bias = Some(param(b_o));
                let b_qkv = b_qkv.slice_assign(2 * d..3 * d, Tensor::zeros([d], &device));
                attn.c_attn.bias = Some(param(b_qkv));
            }
        }
        self.processing = WeightProcessing {
            fold_ln: done.fold_ln || opts.fold_ln,
            center_writing_weights: done.center_writing_weights || opts.center_writing_weights,
            center_unembed: done.center_unembed || opts.center_unembed,
            fold_value_biases: done.fold_value_biases || opts.fold_value_biases,
        };
        self
    }
}
