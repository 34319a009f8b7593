//! Edge sets (circuits), edge scores, top-n selection, pruning to what connects the input to
//! the logits, and faithfulness curves.

use serde::Serialize;

use crate::circuit::graph::{Dest, Edge, EdgeGraph, Source};
use crate::error::{Error, Result};

/// A set of edges of one graph: a flag per edge of [`EdgeGraph::edges`], set where the edge
/// belongs to the circuit (keeps its run's value) and clear where it is ablated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSet {
    keep: Vec<bool>,
}

impl EdgeSet {
    /// Every edge (the clean run).
    pub fn full(graph: &EdgeGraph) -> Self {
        Self {
            keep: vec![true; graph.len()],
        }
    }

    /// No edge (the fully ablated run).
    pub fn empty(graph: &EdgeGraph) -> Self {
        Self {
            keep: vec![false; graph.len()],
        }
    }

    /// The edges named (`a0.h0->a1.h0<q>`, …).
    ///
    /// # Errors
    /// [`Error::UnknownEdge`] for the first name that is not an edge of `graph`.
    pub fn from_names<S: AsRef<str>>(graph: &EdgeGraph, names: &[S]) -> Result<Self> {
        let mut set = Self::empty(graph);
        for n in names {
            set.keep[graph.find(n.as_ref())?] = true;
        }
        Ok(set)
    }

    /// The number of edges of the graph it belongs to.
    pub fn graph_len(&self) -> usize {
        self.keep.len()
    }

    /// Whether edge `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.keep[i]
    }

    /// Puts edge `i` in (`true`) or out.
    pub fn set(&mut self, i: usize, keep: bool) {
        self.keep[i] = keep;
    }

    /// Edges in the set.
    pub fn count(&self) -> usize {
        self.keep.iter().filter(|&&k| k).count()
    }

    /// The indices of the edges in the set.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.keep
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
    }

    /// The set less every edge that is not on a path from `input` to `logits` inside it
    /// (EAP-IG's `prune`: nodes without an incoming or an outgoing edge go, then their edges,
    /// until nothing changes; a head counts as reached when any of its q, k, v is).
    pub fn pruned(&self, graph: &EdgeGraph) -> Self {
        let edges = graph.edges();
        let ns = graph.n_sources();
        let mut keep = self.keep.clone();
        loop {
            let mut has_in = vec![false; ns];
            let mut has_out = vec![false; ns];
            has_in[0] = true;
            for (i, e) in edges.iter().enumerate() {
                if keep[i] {
                    has_out[graph.source_index(e.src)] = true;
                    if let Some(node) = e.dst.node() {
                        has_in[graph.source_index(node)] = true;
                    }
                }
            }
            let alive = |s: usize| has_in[s] && has_out[s];
            let mut changed = false;
            for (i, e) in edges.iter().enumerate() {
                if !keep[i] {
                    continue;
                }
                let dst_ok = e.dst.node().is_none_or(|n| alive(graph.source_index(n)));
                if !alive(graph.source_index(e.src)) || !dst_ok {
                    keep[i] = false;
                    changed = true;
                }
            }
            if !changed {
                return Self { keep };
            }
        }
    }

    /// The nodes the set's edges touch (sources, and `logits` when an edge reaches it), named
    /// as EAP-IG names them.
    pub fn nodes(&self, graph: &EdgeGraph) -> Vec<String> {
        let mut srcs: Vec<Source> = Vec::new();
        let mut logits = false;
        for i in self.indices() {
            let e = graph.edges()[i];
            srcs.push(e.src);
            match e.dst.node() {
                Some(n) => srcs.push(n),
                None => logits = true,
            }
        }
        srcs.sort_by_key(|s| graph.source_index(*s));
        srcs.dedup();
        let mut names: Vec<String> = srcs.iter().map(|s| s.to_string()).collect();
        if logits {
            names.push(Dest::Logits.to_string());
        }
        names
    }
}

/// A score for every edge of a graph, in [`EdgeGraph::edges`]'s order.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeScores {
    values: Vec<f32>,
}

/// One edge and its score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoredEdge {
    /// The edge's position in [`EdgeGraph::edges`].
    pub index: usize,
    /// The edge.
    #[serde(serialize_with = "as_name")]
    pub edge: Edge,
    /// Its score.
    pub score: f32,
}

fn as_name<S: serde::Serializer>(e: &Edge, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(e)
}

impl EdgeScores {
    /// Scores from values in the graph's edge order.
    pub fn new(values: Vec<f32>) -> Self {
        Self { values }
    }

    /// The values, in the graph's edge order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The score of the edge named `name`.
    ///
    /// # Errors
    /// [`Error::UnknownEdge`].
    pub fn of(&self, graph: &EdgeGraph, name: &str) -> Result<f32> {
        Ok(self.values[graph.find(name)?])
    }

    /// Edges by descending absolute score (ties: graph order).
    pub fn ranked(&self, graph: &EdgeGraph) -> Vec<ScoredEdge> {
        let mut order: Vec<usize> = (0..self.values.len()).collect();
        order.sort_by(|&a, &b| {
            self.values[b]
                .abs()
                .total_cmp(&self.values[a].abs())
                .then(a.cmp(&b))
        });
        order
            .into_iter()
            .map(|i| ScoredEdge {
                index: i,
                edge: graph.edges()[i],
                score: self.values[i],
            })
            .collect()
    }

    /// The `n` edges of largest absolute score (EAP-IG's `apply_topn` at edge level, before
    /// pruning).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for `n` = 0 or more than the graph's edges; [`Error::Degenerate`]
    /// for a score that is not finite.
    pub fn top(&self, graph: &EdgeGraph, n: usize) -> Result<EdgeSet> {
        if n == 0 || n > graph.len() {
            return Err(Error::OutOfRange {
                what: "top_n",
                value: n,
                limit: format!("1 to the graph's {} edges", graph.len()),
            });
        }
        if let Some(i) = self.values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Degenerate(format!(
                "the score of {} is {}",
                graph.edges()[i],
                self.values[i]
            )));
        }
        let mut set = EdgeSet::empty(graph);
        for s in self.ranked(graph).into_iter().take(n) {
            set.set(s.index, true);
        }
        Ok(set)
    }
}

/// A point of a faithfulness curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FaithPoint {
    /// Edges chosen (top-n by score).
    pub n_edges: usize,
    /// Edges left after pruning.
    pub kept: usize,
    /// The circuit's metric.
    pub metric: f32,
    /// `(metric − ablated) / (clean − ablated)`.
    pub value: f32,
}

/// `1, 2, 4, …` up to `total`, with `total` itself last.
pub fn log_steps(total: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut n = 1;
    while n < total {
        out.push(n);
        n *= 2;
    }
    out.push(total);
    out
}
