//! The organism's planted retrieval circuit: an initialisation, not a training signal.
//!
//! A freshly initialised GPT-2 of the organism's size does not learn to match a query name to
//! its statement within the training budget (docs/ORGANISM.md records the runs). So the
//! organism starts with that circuit written into its weights, and training then keeps, tunes
//! and uses it alongside the facts it learns:
//!
//! - every output projection (`attn.c_proj`, `mlp.c_proj`) starts at zero, so the residual
//!   stream holds only embeddings and the planted heads' writes until training adds more;
//! - the position embeddings carry sinusoids in the first [`POS_DIMS`] dimensions, and token
//!   and position embeddings start at zero in the dimensions the planted heads write to;
//! - layer 0, head 0 attends two tokens back and writes that token into one subspace; head 1
//!   attends three tokens back and writes that token into a second subspace. In "Bob is from
//!   Japan", the word "from" then holds "Bob" in the first and "Japan" holds "Bob" in the
//!   second;
//! - layer 1, head 0 matches the first subspace of its query with the second of its keys, so
//!   at the query "Bob is from" it attends to the country of Bob's statement, and copies that
//!   token into the token dimensions, where the tied unembedding reads it.
//!
//! Nothing in it depends on which names or countries exist: it is "find the token three after
//! the token two back from here, and say it", an induction head with offsets. Positions before
//! an offset head's offset attend to the first token, so that token also counts as "two/three
//! back" for the first positions; training learns to discount it, and a prompt that starts
//! with a BOS token avoids it.

use burnlens_model::Gpt2;
use burnlens_model::burn::module::Param;
use burnlens_model::burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};

/// Dimensions of the residual stream that carry the position sinusoids.
pub const POS_DIMS: usize = 16;
/// Amplitude of each sinusoid in the position embeddings.
const POS_AMPLITUDE: f32 = 0.4;
/// Gain of the offset heads' query and key on the sinusoids.
const OFFSET_GAIN: f32 = 1.5;
/// Gain of the offset heads' value on the token dimensions.
const NAME_GAIN: f32 = 0.5;
/// Gain of the matching head's query and key.
const MATCH_GAIN: f32 = 1.5;
/// Gain of the matching head's value (the copy).
const COPY_GAIN: f32 = 10.0;

/// Where the planted circuit lives in a model of width `d` with heads of width `hd`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Head width.
    pub hd: usize,
    /// First dimension of "the token two back" (written by layer 0, head 0).
    pub back2: usize,
    /// First dimension of "the token three back" (written by layer 0, head 1).
    pub back3: usize,
    /// First dimension of the token subspace the heads read and the copy writes.
    pub token: usize,
}

impl Layout {
    /// The layout for a model with `n_layer` layers, `n_head` heads and width `d`.
    ///
    /// # Errors
    /// Fewer than 2 layers or 2 heads, or a width with no room for the sinusoids, two written
    /// subspaces and a token subspace, each a head wide.
    pub fn new(n_layer: usize, n_head: usize, d: usize) -> Result<Self> {
        if n_layer < 2 || n_head < 2 {
            return Err(Error::Shape(format!(
                "the planted retrieval circuit needs 2 layers and 2 heads ({n_layer}, {n_head})"
            )));
        }
        let hd = d / n_head;
        if POS_DIMS + 3 * hd > d || hd < POS_DIMS {
            return Err(Error::Shape(format!(
                "the planted retrieval circuit needs d_model ≥ {POS_DIMS} + 3 × head width and a \
                 head width ≥ {POS_DIMS} (d_model {d}, {n_head} heads)"
            )));
        }
        Ok(Self {
            hd,
            back2: POS_DIMS,
            back3: POS_DIMS + hd,
            token: POS_DIMS + 2 * hd,
        })
    }
}

/// Angular frequencies of the sinusoids: periods from 2.2 to 128 positions, geometrically
/// spaced, so that a sum of cosines peaks at one offset and nowhere near it.
fn frequencies() -> Vec<f32> {
    let f = POS_DIMS / 2;
    (0..f)
        .map(|i| {
            let t = i as f32 / (f - 1) as f32;
            let period = 2.2f32 * (128.0f32 / 2.2).powf(t);
            std::f32::consts::TAU / period
        })
        .collect()
}

/// A 2-D weight as a row-major host array, edited by `f`, written back as a fresh parameter.
fn edit2(p: &Param<Tensor<2>>, f: impl FnOnce(&mut [f32], usize)) -> Result<Param<Tensor<2>>> {
    let t = p.val();
    let [rows, cols] = t.dims();
    let device = t.device();
    let mut v = t
        .to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Shape(format!("reading a weight: {e:?}")))?;
    f(&mut v, cols);
    Ok(Param::from_tensor(Tensor::from_data(
        TensorData::new(v, [rows, cols]),
        &device,
    )))
}

/// Zeroes columns `start..start + n` of a row-major weight with `cols` columns.
fn clear_columns(w: &mut [f32], cols: usize, start: usize, n: usize) {
    for row in w.chunks_exact_mut(cols) {
        row[start..start + n].fill(0.0);
    }
}

/// Writes the query and key of head `head` in a `c_attn` weight (`[d, 3d]`, row-major) so that
/// it attends `offset` tokens back, reading only the sinusoids.
fn offset_head(w: &mut [f32], cols: usize, d: usize, hd: usize, head: usize, offset: usize) {
    let (q0, k0) = (head * hd, d + head * hd);
    clear_columns(w, cols, q0, hd);
    clear_columns(w, cols, k0, hd);
    // The key reads the sinusoid pair as it is; the query reads it rotated `offset` positions
    // back, so q_i · k_j = gain² Σ cos(ω (i − offset − j)), largest at j = i − offset.
    for (f, &om) in frequencies().iter().enumerate() {
        let (c, s) = ((offset as f32 * om).cos(), (offset as f32 * om).sin());
        let (i, j) = (2 * f, 2 * f + 1);
        w[i * cols + k0 + i] = OFFSET_GAIN;
        w[j * cols + k0 + j] = OFFSET_GAIN;
        w[i * cols + q0 + i] = OFFSET_GAIN * c;
        w[j * cols + q0 + i] = OFFSET_GAIN * s;
        w[i * cols + q0 + j] = -OFFSET_GAIN * s;
        w[j * cols + q0 + j] = OFFSET_GAIN * c;
    }
}

/// Clears head `head`'s value columns and makes it read `hd` dimensions from `from` with `gain`.
fn value_reads(
    w: &mut [f32],
    cols: usize,
    d: usize,
    hd: usize,
    head: usize,
    from: usize,
    gain: f32,
) {
    let v0 = 2 * d + head * hd;
    clear_columns(w, cols, v0, hd);
    for c in 0..hd {
        w[(from + c) * cols + v0 + c] = gain;
    }
}

/// Makes head `head`'s rows of a `c_proj` weight (`[d, d]`) write its output to `to..to+hd`.
fn output_writes(w: &mut [f32], cols: usize, hd: usize, head: usize, to: usize) {
    for c in 0..hd {
        let row = head * hd + c;
        for x in &mut w[row * cols..(row + 1) * cols] {
            *x = 0.0;
        }
        w[row * cols + to + c] = 1.0;
    }
}

/// Writes the planted retrieval circuit into a freshly initialised model (see the module doc).
///
/// # Errors
/// A model too small for the circuit ([`Layout::new`]).
pub fn plant_retrieval(mut model: Gpt2) -> Result<Gpt2> {
    let cfg = &model.config;
    let d = cfg.n_embd;
    let lay = Layout::new(cfg.n_layer, cfg.n_head, d)?;
    let hd = lay.hd;
    let freqs = frequencies();

    // Every output projection starts at zero.
    let zeros = |p: &Param<Tensor<2>>| {
        let t = p.val();
        Param::from_tensor(Tensor::zeros(t.dims(), &t.device()))
    };
    for block in &mut model.blocks {
        block.attn.c_proj.weight = zeros(&block.attn.c_proj.weight);
        block.mlp.c_proj.weight = zeros(&block.mlp.c_proj.weight);
    }
    // Embeddings: nothing below the token subspace but the sinusoids.
    model.wte = edit2(&model.wte, |w, cols| {
        for row in w.chunks_exact_mut(cols) {
            row[..lay.token].fill(0.0);
        }
    })?;
    model.wpe = edit2(&model.wpe, |w, cols| {
        for (p, row) in w.chunks_exact_mut(cols).enumerate() {
            row[..lay.token].fill(0.0);
            for (f, &om) in freqs.iter().enumerate() {
                row[2 * f] = POS_AMPLITUDE * (p as f32 * om).cos();
                row[2 * f + 1] = POS_AMPLITUDE * (p as f32 * om).sin();
            }
        }
    })?;

    // Layer 0: head 0 two back into `back2`, head 1 three back into `back3`.
    let b0 = &mut model.blocks[0];
    b0.attn.c_attn.weight = edit2(&b0.attn.c_attn.weight, |w, cols| {
        offset_head(w, cols, d, hd, 0, 2);
        offset_head(w, cols, d, hd, 1, 3);
        value_reads(w, cols, d, hd, 0, lay.token, NAME_GAIN);
        value_reads(w, cols, d, hd, 1, lay.token, NAME_GAIN);
    })?;
    b0.attn.c_proj.weight = edit2(&b0.attn.c_proj.weight, |w, cols| {
        output_writes(w, cols, hd, 0, lay.back2);
        output_writes(w, cols, hd, 1, lay.back3);
    })?;
    // Layer 1, head 0: query `back2` against key `back3`; copy the token. (Biases start at zero.)
    let b1 = &mut model.blocks[1];
    b1.attn.c_attn.weight = edit2(&b1.attn.c_attn.weight, |w, cols| {
        clear_columns(w, cols, 0, hd);
        clear_columns(w, cols, d, hd);
        for c in 0..hd {
            w[(lay.back2 + c) * cols + c] = MATCH_GAIN;
            w[(lay.back3 + c) * cols + d + c] = MATCH_GAIN;
        }
        value_reads(w, cols, d, hd, 0, lay.token, COPY_GAIN);
    })?;
    b1.attn.c_proj.weight = edit2(&b1.attn.c_proj.weight, |w, cols| {
        output_writes(w, cols, hd, 0, lay.token);
    })?;
    model.retie_unembedding();
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burnlens_hooks::{Selector, run_with_cache};
    use burnlens_model::{BackendKind, Gpt2Config, TokenBatch};

    fn host4(t: Tensor<4>) -> (Vec<f32>, [usize; 4]) {
        let dims = t.dims();
        (t.into_data().try_to_vec::<f32>().unwrap(), dims)
    }

    /// The construction's claims on a random model with arbitrary token ids: the offset heads
    /// attend two and three back, the matching head attends from "N is from" to the token
    /// after N's statement, and that token wins the logits, for either name queried.
    #[test]
    fn the_planted_circuit_attends_where_built_and_copies_the_queried_answer() {
        let device = BackendKind::NdArray.device().unwrap();
        let cfg = Gpt2Config::new(2, 4, 128, 64, 32).with_initializer_range(0.1);
        let model = {
            let _rng = crate::RNG.lock().unwrap_or_else(|e| e.into_inner());
            device.seed(3);
            plant_retrieval(cfg.init(&device)).unwrap()
        };
        let (is, from, dot) = (1u32, 2, 3);
        let (n1, n2, c1, c2) = (10u32, 11, 20, 21);
        // A leading token, as a BOS: positions before an offset head's offset attend to the
        // first token, so a name there would be "three back" from the two positions after it.
        let context = vec![0, n1, is, from, c1, dot, n2, is, from, c2, dot];
        for (name, answer, answer_pos) in [(n1, c1, 4usize), (n2, c2, 9)] {
            let mut row = context.clone();
            row.extend([name, is, from]);
            let t = row.len();
            let batch = TokenBatch::new(vec![row], None).unwrap();
            let points = ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"];
            let (logits, cache) =
                run_with_cache(&model, &batch, Selector::points(points).unwrap()).unwrap();
            let (p0, [_, h, q, k]) = host4(cache.get4(points[0]).unwrap());
            assert_eq!((h, q, k), (4, t, t));
            let at = |p: &[f32], head: usize, i: usize, j: usize| p[(head * q + i) * k + j];
            for i in 3..t {
                assert!(
                    at(&p0, 0, i, i - 2) > 0.9,
                    "head 0.0 at {i}: {}",
                    at(&p0, 0, i, i - 2)
                );
                assert!(
                    at(&p0, 1, i, i - 3) > 0.9,
                    "head 0.1 at {i}: {}",
                    at(&p0, 1, i, i - 3)
                );
            }
            let (p1, _) = host4(cache.get4(points[1]).unwrap());
            let on_answer = at(&p1, 0, t - 1, answer_pos);
            assert!(
                on_answer > 0.5,
                "head 1.0 on the answer: {on_answer}; row {:?}",
                &p1[(t - 1) * k..t * k]
            );
            let last: Vec<f32> = logits
                .slice([0..1, t - 1..t])
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let best = (0..last.len())
                .max_by(|&a, &b| last[a].total_cmp(&last[b]))
                .unwrap();
            assert_eq!(best as u32, answer, "logits at the query: {last:?}");
        }
    }

    #[test]
    fn a_model_without_room_for_the_circuit_is_refused() {
        let err = Layout::new(1, 4, 128).unwrap_err().to_string();
        assert!(err.contains("2 layers"), "{err}");
        let err = Layout::new(2, 2, 64).unwrap_err().to_string();
        assert!(err.contains("d_model"), "{err}");
        assert_eq!(
            Layout::new(4, 4, 128).unwrap(),
            Layout {
                hd: 32,
                back2: 16,
                back3: 48,
                token: 80
            }
        );
    }
}
