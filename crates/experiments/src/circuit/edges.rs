//! Edge patching: one forward in which every destination reads the sum of its sources'
//! outputs, each taken from the run itself or from the ablated run, edge by edge, and row by
//! row (each row of the batch its own edge set).
//!
//! A destination's input is the residual stream, which is the sum of every earlier source's
//! output (plus the position embeddings and biases, the same in every run). Ablating the edge
//! `u → v` adds `ablated_u − current_u` to `v`'s input only, where `current_u` is `u`'s output
//! in this forward (itself changed by ablations upstream): EAP-IG's `evaluate_graph`. The
//! differences are stacked as the sources write, `[rows, sources so far, pos, d_model]`, and a
//! destination group (a layer's queries, keys, values, its MLP, the logits) adds one matmul of
//! its ablation mask with that stack.

use burn::tensor::Tensor;
use burnlens_hooks::{HookSet, Selector};
use burnlens_model::{Gpt2, HookPoint, Hooks, Result as ModelResult, TokenBatch};

use crate::circuit::graph::{Dest, EdgeGraph, Qkv};
use crate::error::Result;

/// The outputs of every source of one run: the token embeddings `[b, t, d]`, every layer's
/// head results `[b, t, h, d]` and MLP outputs `[b, t, d]`.
#[derive(Debug, Clone)]
pub(crate) struct SourceActs {
    pub input: Tensor<3>,
    pub heads: Vec<Tensor<4>>,
    pub mlps: Vec<Tensor<3>>,
}

/// The hook points where sources write.
pub(crate) fn source_points(n_layers: usize) -> Vec<HookPoint> {
    let mut points = vec![HookPoint::Embed];
    for l in 0..n_layers {
        points.push(HookPoint::Result(l));
        points.push(HookPoint::MlpOut(l));
    }
    points
}

/// The hook points where destinations read.
pub(crate) fn dest_points(n_layers: usize) -> Vec<HookPoint> {
    let mut points = Vec::new();
    for l in 0..n_layers {
        points.extend([
            HookPoint::QInput(l),
            HookPoint::KInput(l),
            HookPoint::VInput(l),
            HookPoint::MlpIn(l),
        ]);
    }
    points.push(HookPoint::ResidPost(n_layers - 1));
    points
}

impl SourceActs {
    /// Runs `batch` and keeps every source's output; returns the logits too.
    pub fn capture(model: &Gpt2, batch: &TokenBatch) -> Result<(Tensor<3>, Self)> {
        let n = model.config.n_layer;
        let mut hooks = HookSet::new();
        hooks.capture(Selector::points(source_points(n))?);
        let logits = hooks.run(model, batch)?;
        let cache = hooks.take_cache();
        Ok((logits, Self::from_cache(&cache, n)?))
    }

    /// The sources read out of a cache holding [`source_points`].
    pub fn from_cache(cache: &burnlens_hooks::ActivationCache, n_layers: usize) -> Result<Self> {
        Ok(Self {
            input: cache.get3(HookPoint::Embed)?,
            heads: (0..n_layers)
                .map(|l| cache.get4(HookPoint::Result(l)))
                .collect::<std::result::Result<_, _>>()?,
            mlps: (0..n_layers)
                .map(|l| cache.get3(HookPoint::MlpOut(l)))
                .collect::<std::result::Result<_, _>>()?,
        })
    }

    /// Every output mapped by `f3` (rank 3) and `f4` (rank 4).
    pub fn map(
        &self,
        f3: impl Fn(Tensor<3>) -> Tensor<3>,
        f4: impl Fn(Tensor<4>) -> Tensor<4>,
    ) -> Self {
        Self {
            input: f3(self.input.clone()),
            heads: self.heads.iter().cloned().map(&f4).collect(),
            mlps: self.mlps.iter().cloned().map(&f3).collect(),
        }
    }

    /// The rows repeated `reps` times (`[b, …]` to `[reps · b, …]`, row `r` = row `r % b`).
    pub fn repeat(&self, reps: usize) -> Self {
        self.map(
            |t| Tensor::cat(vec![t; reps], 0),
            |t| Tensor::cat(vec![t; reps], 0),
        )
    }
}

/// The hook set of an edge-patched forward.
pub(crate) struct EdgePatch<'a> {
    graph: &'a EdgeGraph,
    ablated: &'a SourceActs,
    /// `[rows, sources, dests]`: 1 where the edge is ablated in that row.
    mask: Tensor<3>,
    /// Per destination: whether any row ablates any edge into it (else its matmul is skipped).
    any: Vec<bool>,
    /// `[rows, sources so far, pos, d_model]`: `ablated − current` of every source written.
    stack: Option<Tensor<4>>,
}

impl<'a> EdgePatch<'a> {
    /// `mask` as above, `any` per destination.
    pub fn new(
        graph: &'a EdgeGraph,
        ablated: &'a SourceActs,
        mask: Tensor<3>,
        any: Vec<bool>,
    ) -> Self {
        Self {
            graph,
            ablated,
            mask,
            any,
            stack: None,
        }
    }

    /// Starting from the differences of the sources a prefix of the forward wrote
    /// (`[rows, sources, pos, d_model]`), for a forward that starts at a later block.
    pub fn with_stack(mut self, stack: Option<Tensor<4>>) -> Self {
        self.stack = stack;
        self
    }

    /// The differences of every source written so far.
    pub fn into_stack(self) -> Option<Tensor<4>> {
        self.stack
    }

    fn push(&mut self, diffs: Tensor<4>) {
        self.stack = Some(match self.stack.take() {
            None => diffs,
            Some(s) => Tensor::cat(vec![s, diffs], 1),
        });
    }

    /// `Σ_s mask[r, s, dst + j] · stack[r, s]` for the `width` destinations from `dst`:
    /// `[rows, width, pos, d_model]`, or `None` when none of them ablates anything.
    fn update(&self, n_src: usize, dst: usize, width: usize) -> Option<Tensor<4>> {
        if !self.any[dst..dst + width].iter().any(|&a| a) {
            return None;
        }
        let stack = self.stack.as_ref().expect("the input writes first");
        let [rows, seen, t, d] = stack.dims();
        debug_assert_eq!(seen, n_src, "sources written before this destination");
        let m = self
            .mask
            .clone()
            .slice([0..rows, 0..n_src, dst..dst + width])
            .swap_dims(1, 2);
        let flat = stack.clone().reshape([rows, n_src, t * d]);
        Some(m.matmul(flat).reshape([rows, width, t, d]))
    }

    fn dest3(&self, dst: Dest, act: Tensor<3>) -> Tensor<3> {
        let g = self.graph;
        let (n_src, idx) = match dst {
            Dest::Mlp(l) => (g.sources_before(l) + g.n_heads(), g.dest_index(dst)),
            _ => (g.n_sources(), g.dest_index(dst)),
        };
        match self.update(n_src, idx, 1) {
            Some(u) => {
                let [rows, _, t, d] = u.dims();
                act + u.reshape([rows, t, d])
            }
            None => act,
        }
    }

    fn dest4(&self, layer: usize, qkv: Qkv, act: Tensor<4>) -> Tensor<4> {
        let g = self.graph;
        let first = g.dest_index(Dest::Head {
            layer,
            head: 0,
            qkv,
        });
        match self.update(g.sources_before(layer), first, g.n_heads()) {
            Some(u) => act + u.swap_dims(1, 2),
            None => act,
        }
    }
}

impl Hooks for EdgePatch<'_> {
    fn is_active(&self, point: HookPoint) -> bool {
        let last = self.graph.n_layers() - 1;
        matches!(
            point,
            HookPoint::Embed
                | HookPoint::Result(_)
                | HookPoint::MlpOut(_)
                | HookPoint::QInput(_)
                | HookPoint::KInput(_)
                | HookPoint::VInput(_)
                | HookPoint::MlpIn(_)
        ) || point == HookPoint::ResidPost(last)
    }

    fn hook3(&mut self, point: HookPoint, act: Tensor<3>) -> ModelResult<Tensor<3>> {
        Ok(match point {
            HookPoint::Embed => {
                self.push((self.ablated.input.clone() - act.clone()).unsqueeze_dim(1));
                act
            }
            HookPoint::MlpOut(l) => {
                self.push((self.ablated.mlps[l].clone() - act.clone()).unsqueeze_dim(1));
                act
            }
            HookPoint::MlpIn(l) => self.dest3(Dest::Mlp(l), act),
            HookPoint::ResidPost(_) => self.dest3(Dest::Logits, act),
            _ => act,
        })
    }

    fn hook4(&mut self, point: HookPoint, act: Tensor<4>) -> ModelResult<Tensor<4>> {
        Ok(match point {
            HookPoint::Result(l) => {
                self.push((self.ablated.heads[l].clone() - act.clone()).swap_dims(1, 2));
                act
            }
            HookPoint::QInput(l) => self.dest4(l, Qkv::Q, act),
            HookPoint::KInput(l) => self.dest4(l, Qkv::K, act),
            HookPoint::VInput(l) => self.dest4(l, Qkv::V, act),
            _ => act,
        })
    }
}

/// The `[sources, dests]` position of each edge of the graph.
pub(crate) fn edge_cells(graph: &EdgeGraph) -> Vec<(usize, usize)> {
    graph
        .edges()
        .iter()
        .map(|e| (graph.source_index(e.src), graph.dest_index(e.dst)))
        .collect()
}
