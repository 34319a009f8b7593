//! The key/value cache for incremental decoding.

use burn::tensor::{Int, Tensor, TensorData};

use crate::batch::TokenBatch;
use crate::error::{Error, Result};

/// One block's cached keys and values, `[batch, n_heads, past, d_head]` each.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    kv: Option<(Tensor<4>, Tensor<4>)>,
}

impl LayerKv {
    /// A cache holding given keys and values (e.g. another run's, for a pass over a suffix).
    ///
    /// # Shapes
    /// - k, v: `[batch, n_heads, past, d_head]`
    pub fn new(k: Tensor<4>, v: Tensor<4>) -> Self {
        Self { kv: Some((k, v)) }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.kv.is_none()
    }

    /// Appends the new keys and values and returns the full ones.
    ///
    /// # Shapes
    /// - k, v: `[batch, n_heads, new, d_head]`
    /// - output: `[batch, n_heads, past + new, d_head]` each
    pub(crate) fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.kv.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.kv = Some((k.clone(), v.clone()));
        (k, v)
    }
}

/// Keys and values of every block for the tokens seen so far, with each row's padding mask
/// and next position.
///
/// Pass the same cache to successive [`Gpt2::forward`](crate::Gpt2::forward) calls, each with
/// only the new tokens.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    batch: usize,
    len: usize,
    key_mask: Vec<bool>,
    next_pos: Vec<usize>,
}

impl KvCache {
    /// An empty cache for `batch` sequences and `n_layer` blocks.
    pub fn new(n_layer: usize, batch: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); n_layer],
            batch,
            len: 0,
            key_mask: Vec::new(),
            next_pos: vec![0; batch],
        }
    }

    /// Number of cached positions (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of sequences.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Which cached positions are real tokens, row-major `[batch, len]`.
    pub fn key_mask(&self) -> &[bool] {
        &self.key_mask
    }

    /// The position the next token of each row gets.
    pub fn next_positions(&self) -> &[usize] {
        &self.next_pos
    }

    pub(crate) fn check_compatible(&self, batch: usize, n_layer: usize) -> Result<()> {
        if self.batch != batch || self.layers.len() != n_layer {
            return Err(Error::Shape(format!(
                "KV cache holds {} sequences for {} blocks, the batch has {batch} sequences and the model {n_layer} blocks",
                self.batch,
                self.layers.len()
            )));
        }
        Ok(())
    }

    pub(crate) fn layer_mut(&mut self, layer: usize) -> &mut LayerKv {
        &mut self.layers[layer]
    }

    /// Records the batch the forward pass just appended.
    pub(crate) fn advance(&mut self, batch: &TokenBatch, positions: &[usize]) {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let mut mask = Vec::with_capacity(b * (self.len + t));
        for r in 0..b {
            mask.extend_from_slice(&self.key_mask[r * self.len..(r + 1) * self.len]);
            mask.extend((0..t).map(|p| batch.is_real(r, p)));
            let last_real = (0..t).rev().find(|&p| batch.is_real(r, p));
            if let Some(p) = last_real {
                self.next_pos[r] = positions[r * t + p] + 1;
            }
        }
        self.key_mask = mask;
        self.len += t;
    }

    /// Keeps the rows `rows` (in that order, repeats allowed): how beam search follows its
    /// beams and how `num_return_sequences` copies a prompt.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        if let Some(&r) = rows.iter().find(|&&r| r >= self.batch) {
            return Err(Error::Shape(format!(
                "row {r} is outside a cache of {} rows",
                self.batch
            )));
        }
        let layers = self
            .layers
            .iter()
            .map(|l| LayerKv {
                kv: l.kv.as_ref().map(|(k, v)| {
                    let device = k.device();
                    let idx = Tensor::<1, Int>::from_data(
                        TensorData::new(rows.iter().map(|&r| r as i64).collect(), [rows.len()]),
                        &device,
                    );
                    (k.clone().select(0, idx.clone()), v.clone().select(0, idx))
                }),
            })
            .collect();
        let len = self.len;
        Ok(Self {
            layers,
            batch: rows.len(),
            len,
            key_mask: rows
                .iter()
                .flat_map(|&r| self.key_mask[r * len..(r + 1) * len].iter().copied())
                .collect(),
            next_pos: rows.iter().map(|&r| self.next_pos[r]).collect(),
        })
    }
}
