//! ACDC (Conmy et al. 2023), exact: destinations are visited from the logits back to the first
//! layer; each incoming edge of a destination is ablated in turn and removed for good when the
//! loss (KL to the clean run, or the negated logit or probability difference) rises by less
//! than `τ`, else restored.
//!
//! The original runs one forward per edge. Here the candidates of one destination are
//! evaluated speculatively in batches of rows: the forward for the `j`-th candidate assumes the
//! candidates before it in the batch were removed (ACDC removes most edges), and the walk
//! through the batch stops at the first candidate that is kept, whose successors are then
//! evaluated again from the new state. Every decision is made on exactly the edge set the
//! sequential algorithm would evaluate, so the result is the same.
//!
//! Only the blocks a destination's candidates can change run: every candidate of a
//! destination of block `l` (the logits: the last block) agrees with the current state on the
//! edges read before block `l`, and those do not change while block `l`'s destinations are
//! visited, so the forward up to block `l` runs once per block ([`CircuitRun::prefix`]).

use serde::Serialize;

use crate::circuit::graph::Dest;
use crate::circuit::run::CircuitRun;
use crate::circuit::set::EdgeSet;
use crate::circuit::task::CircuitMetric;
use crate::error::{Error, Result};

/// Options of [`acdc`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AcdcOptions {
    /// `τ`: an edge goes when removing it raises the loss by less than this.
    pub tau: f32,
    /// Compare `|Δ loss|` with `τ` instead of `Δ loss` (ACDC's `abs_value_threshold`).
    pub abs_value: bool,
}

impl AcdcOptions {
    /// ACDC at threshold `tau` (signed comparison, ACDC's default).
    pub fn new(tau: f32) -> Self {
        Self {
            tau,
            abs_value: false,
        }
    }
}

/// What [`acdc`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct AcdcResult {
    /// The edges kept.
    pub kept: EdgeSet,
    /// Per edge, the loss change its removal was judged by (`None` for the edges of a node
    /// that no longer reached the logits, removed without a forward).
    pub effects: Vec<Option<f32>>,
    /// The circuit's metric (the run's metric, not the loss).
    pub metric: f32,
    /// Edge-patched forwards run (those up to a block, the ones that start there, and the
    /// final evaluation of the circuit).
    pub forwards: usize,
}

/// The loss ACDC minimises: KL as it is, the other metrics negated.
fn loss(metric: CircuitMetric, value: f32) -> f32 {
    match metric {
        CircuitMetric::Kl => value,
        _ => -value,
    }
}

/// Runs ACDC on `run`'s task from the full graph.
///
/// # Errors
/// A `τ` that is negative or not finite ([`Error::BadOption`]), and forward errors.
pub fn acdc(run: &CircuitRun<'_>, options: &AcdcOptions) -> Result<AcdcResult> {
    if !options.tau.is_finite() || options.tau < 0.0 {
        return Err(Error::BadOption {
            option: "tau",
            value: options.tau.to_string(),
            expected: "a finite number ≥ 0".into(),
        });
    }
    let graph = run.graph();
    let metric = run.options().metric;
    let per_forward = (run.options().batch_rows / run.task().len()).max(1);
    let mut state = EdgeSet::full(graph);
    let mut effects = vec![None; graph.len()];
    let mut cur = loss(metric, run.clean_metric());
    let mut forwards = 0;
    let mut prefix: Option<crate::circuit::run::Prefix> = None;
    let mut dests: Vec<Dest> = graph.edges().iter().map(|e| e.dst).collect();
    dests.sort_by_key(|d| std::cmp::Reverse(graph.dest_index(*d)));
    dests.dedup();
    for (done, dst) in dests.iter().enumerate() {
        // Incoming edges, latest source first.
        let mut incoming: Vec<usize> = (0..graph.len())
            .filter(|&i| graph.edges()[i].dst == *dst && state.contains(i))
            .collect();
        incoming.sort_by_key(|&i| std::cmp::Reverse(graph.source_index(graph.edges()[i].src)));
        if !reaches_logits(run, &state, *dst) {
            for i in incoming {
                state.set(i, false);
            }
            continue;
        }
        let layer = match *dst {
            Dest::Head { layer, .. } | Dest::Mlp(layer) => layer,
            Dest::Logits => graph.n_layers() - 1,
        };
        if prefix.as_ref().is_none_or(|p| p.layer != layer) {
            prefix = Some(run.prefix(&state, layer)?);
            forwards += 1;
        }
        let from = prefix.as_ref().expect("set above");
        let mut next = 0;
        while next < incoming.len() {
            let batch = &incoming[next..(next + per_forward).min(incoming.len())];
            let mut sets = Vec::with_capacity(batch.len());
            let mut s = state.clone();
            for &i in batch {
                s.set(i, false);
                sets.push(s.clone());
            }
            let values = run.evaluate_from(from, &sets)?;
            forwards += 1;
            for (&i, &v) in batch.iter().zip(&values) {
                next += 1;
                let delta = loss(metric, v) - cur;
                effects[i] = Some(delta);
                let judged = if options.abs_value {
                    delta.abs()
                } else {
                    delta
                };
                if judged < options.tau {
                    state.set(i, false);
                    cur = loss(metric, v);
                } else {
                    // Kept: the rest of the batch assumed its removal.
                    break;
                }
            }
        }
        run.options().observer.report(done + 1, dests.len());
    }
    let metric_value = run.evaluate(std::slice::from_ref(&state))?[0];
    Ok(AcdcResult {
        kept: state,
        effects,
        metric: metric_value,
        forwards: forwards + 1,
    })
}

/// Whether `dst`'s node still has an edge out (the logits always "reach").
fn reaches_logits(run: &CircuitRun<'_>, state: &EdgeSet, dst: Dest) -> bool {
    let Some(node) = dst.node() else {
        return true;
    };
    let g = run.graph();
    state.indices().any(|i| g.edges()[i].src == node)
}
