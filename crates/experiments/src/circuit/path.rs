//! Path patching (Wang et al. 2022, "Interpretability in the Wild", as TransformerLens's IOI
//! notebooks run it) on the edge graph: for every sender, the task's metric when the sender's
//! output reaches the chosen receivers (heads' query, key or value inputs, MLP inputs, or the
//! logits) from the ablated run, and everything else from the clean run.
//!
//! On the edge graph a path from a sender to a receiver through the residual stream is the
//! edge between them, so patching the path is ablating those edges: one edge set per sender,
//! all evaluated in batched edge-patched forwards. This is path patching with every other
//! component frozen, MLPs included (the variant that isolates the direct path); to follow a
//! path through an MLP, make the MLP a receiver, or a sender of its own.

use serde::Serialize;

use crate::circuit::graph::{Dest, Source};
use crate::circuit::run::CircuitRun;
use crate::circuit::set::EdgeSet;
use crate::error::{Error, Result};

/// One sender's path-patching result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PathPatch {
    /// The sender (`input`, `a{l}.h{h}` or `m{l}`).
    #[serde(serialize_with = "crate::circuit::path::as_name")]
    pub sender: Source,
    /// How many of its edges into the receivers were ablated.
    pub edges: usize,
    /// The run's metric with those edges ablated.
    pub metric: f32,
}

fn as_name<S: serde::Serializer>(s: &Source, out: S) -> std::result::Result<S::Ok, S::Error> {
    out.collect_str(s)
}

/// Path patching from every source that writes before one of `receivers` reads to those
/// receivers: per sender, the metric with its edges into the receivers ablated (the run's
/// ablation: the corrupted prompt's output, the mean or zero) and every other edge kept, in
/// the graph's source order. Compare each with [`CircuitRun::clean_metric`] (nothing patched).
///
/// # Errors
/// [`Error::Empty`] without receivers; [`Error::UnknownEdge`] for a receiver outside the
/// model; forward errors.
pub fn path_patch(run: &CircuitRun<'_>, receivers: &[Dest]) -> Result<Vec<PathPatch>> {
    if receivers.is_empty() {
        return Err(Error::Empty {
            what: "the receivers",
            hint: ": name at least one (a1.h0<q>, m2, logits)",
        });
    }
    let graph = run.graph();
    let mut per_sender: Vec<(Source, Vec<usize>)> = Vec::new();
    for &dst in receivers {
        // A receiver outside the model is named by the graph's own check.
        graph.index_of(crate::circuit::graph::Edge {
            src: Source::Input,
            dst,
        })?;
        for (i, e) in graph.edges().iter().enumerate() {
            if e.dst != dst {
                continue;
            }
            match per_sender.iter_mut().find(|(s, _)| *s == e.src) {
                Some((_, edges)) => edges.push(i),
                None => per_sender.push((e.src, vec![i])),
            }
        }
    }
    per_sender.sort_by_key(|(s, _)| graph.source_index(*s));
    let sets: Vec<EdgeSet> = per_sender
        .iter()
        .map(|(_, edges)| {
            let mut set = EdgeSet::full(graph);
            for &i in edges {
                set.set(i, false);
            }
            set
        })
        .collect();
    let metrics = run.evaluate(&sets)?;
    Ok(per_sender
        .into_iter()
        .zip(metrics)
        .map(|((sender, edges), metric)| PathPatch {
            sender,
            edges: edges.len(),
            metric,
        })
        .collect())
}
