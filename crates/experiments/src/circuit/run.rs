//! A task prepared for circuit discovery: the clean run, the ablated sources and the metric's
//! baselines, then circuits evaluated by edge patching and edges scored by gradients.

use burn::tensor::{Tensor, TensorData};
use burnlens_hooks::{HookSet, Intervention, Selector};
use burnlens_model::{Gpt2, HookPoint, TokenBatch};

use crate::circuit::edges::{EdgePatch, SourceActs, dest_points, edge_cells};
use crate::circuit::graph::EdgeGraph;
use crate::circuit::set::{EdgeScores, EdgeSet, FaithPoint};
use crate::circuit::task::{Ablation, CircuitMetric, CircuitOptions, CircuitTask, per_row};
use crate::error::{Error, Result};

/// The forward of a task under one edge set up to a block: the residual stream entering it
/// and the edge patch's source differences so far (see [`CircuitRun::prefix`]).
pub(crate) struct Prefix {
    /// The block the rest of the forward starts at.
    pub layer: usize,
    resid: Tensor<3>,
    stack: Option<Tensor<4>>,
}

/// A task ready for circuit discovery on one model.
pub struct CircuitRun<'m> {
    model: &'m Gpt2,
    task: CircuitTask,
    graph: EdgeGraph,
    options: CircuitOptions,
    cells: Vec<(usize, usize)>,
    clean_last: Tensor<2>,
    clean_acts: SourceActs,
    ablated: SourceActs,
    /// The raw metric (the logit difference for the normalized one) of the clean and the fully
    /// ablated run.
    raw_clean: f32,
    raw_ablated: f32,
}

impl<'m> CircuitRun<'m> {
    /// Runs the clean prompts, and the corrupted ones for [`Ablation::Corrupted`] (the fully
    /// ablated graph; for the other ablations an edge-patched forward gives that baseline).
    ///
    /// # Errors
    /// Zero `batch_rows`; a normalized metric whose clean and ablated values are equal; forward
    /// and metric errors (token ids outside the vocabulary, prompts longer than the context).
    pub fn new(model: &'m Gpt2, task: &CircuitTask, options: &CircuitOptions) -> Result<Self> {
        if options.batch_rows == 0 {
            return Err(Error::BadOption {
                option: "batch_rows",
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        let graph = EdgeGraph::new(model.config.n_layer, model.config.n_head);
        let (clean_logits, clean_acts) = SourceActs::capture(model, task.clean())?;
        // The corrupted run is the fully ablated graph under corrupted ablation: its logits are
        // the baseline; the other ablations need an edge-patched forward for it.
        let mut corrupted_logits = None;
        let ablated = match options.ablation {
            Ablation::Corrupted => {
                let (logits, acts) = SourceActs::capture(model, task.corrupted())?;
                corrupted_logits = Some(logits);
                acts
            }
            Ablation::Zero => clean_acts.map(|t| t.zeros_like(), |t| t.zeros_like()),
            Ablation::Mean => {
                let n = task.len();
                clean_acts.map(
                    |t| {
                        let [_, p, d] = t.dims();
                        t.mean_dim(0).expand([n, p, d])
                    },
                    |t| {
                        let [_, p, h, d] = t.dims();
                        t.mean_dim(0).expand([n, p, h, d])
                    },
                )
            }
        };
        let clean_last = burnlens_metrics::last_position(clean_logits.clone());
        let mut run = Self {
            model,
            task: task.clone(),
            cells: edge_cells(&graph),
            graph,
            options: options.clone(),
            clean_last,
            clean_acts,
            ablated,
            raw_clean: 0.0,
            raw_ablated: 0.0,
        };
        run.raw_clean = run.raw_mean(clean_logits)?;
        run.raw_ablated = match corrupted_logits {
            Some(logits) => run.raw_mean(logits)?,
            None => run.evaluate_raw(&[EdgeSet::empty(&run.graph)])?[0],
        };
        if run.options.metric == CircuitMetric::NormalizedLogitDiff {
            run.check_baselines()?;
        }
        Ok(run)
    }

    /// The graph.
    pub fn graph(&self) -> &EdgeGraph {
        &self.graph
    }

    /// The task.
    pub fn task(&self) -> &CircuitTask {
        &self.task
    }

    /// The options.
    pub fn options(&self) -> &CircuitOptions {
        &self.options
    }

    /// The metric of the clean run (every edge kept).
    pub fn clean_metric(&self) -> f32 {
        self.scale(self.raw_clean)
    }

    /// The metric with every edge ablated.
    pub fn ablated_metric(&self) -> f32 {
        self.scale(self.raw_ablated)
    }

    fn check_baselines(&self) -> Result<()> {
        let gap = self.raw_clean - self.raw_ablated;
        if !gap.is_finite() || gap.abs() < 1e-6 {
            return Err(Error::Degenerate(format!(
                "the {:?} metric is {} on the clean run and {} with every edge ablated: nothing to normalize or to be faithful to",
                self.options.metric, self.raw_clean, self.raw_ablated
            )));
        }
        Ok(())
    }

    fn scale(&self, raw: f32) -> f32 {
        match self.options.metric {
            CircuitMetric::NormalizedLogitDiff => {
                (raw - self.raw_ablated) / (self.raw_clean - self.raw_ablated)
            }
            _ => raw,
        }
    }

    fn raw_mean(&self, logits: Tensor<3>) -> Result<f32> {
        let v = per_row(self.options.metric, logits, &self.clean_last, &self.task)?;
        Ok(v.mean().into_scalar::<f32>())
    }

    /// Faithfulness of a circuit whose metric is `value`:
    /// `(value − M_ablated) / (M_clean − M_ablated)`.
    ///
    /// # Errors
    /// [`Error::Degenerate`] when the clean and ablated metrics are equal.
    pub fn faithfulness(&self, value: f32) -> Result<f32> {
        self.check_baselines()?;
        let (c, a) = (self.clean_metric(), self.ablated_metric());
        Ok((value - a) / (c - a))
    }

    /// Faithfulness of the pruned top-`n` circuits for each `n` of `sizes` (all in batched
    /// forwards).
    ///
    /// # Errors
    /// As [`EdgeScores::top`], [`CircuitRun::faithfulness`] and [`CircuitRun::evaluate`].
    pub fn faithfulness_curve(
        &self,
        scores: &EdgeScores,
        sizes: &[usize],
    ) -> Result<Vec<FaithPoint>> {
        let graph = &self.graph;
        let sets = sizes
            .iter()
            .map(|&n| Ok(scores.top(graph, n)?.pruned(graph)))
            .collect::<Result<Vec<_>>>()?;
        let metrics = self.evaluate(&sets)?;
        sizes
            .iter()
            .zip(&sets)
            .zip(metrics)
            .map(|((&n, set), metric)| {
                Ok(FaithPoint {
                    n_edges: n,
                    kept: set.count(),
                    metric,
                    value: self.faithfulness(metric)?,
                })
            })
            .collect()
    }

    /// The metric of each edge set (edges outside a set ablated), averaged over the task's
    /// pairs; many sets share a forward (`batch_rows` rows at most, at least one set).
    ///
    /// # Errors
    /// A set of another graph's size, and forward errors.
    pub fn evaluate(&self, sets: &[EdgeSet]) -> Result<Vec<f32>> {
        Ok(self
            .evaluate_raw(sets)?
            .into_iter()
            .map(|r| self.scale(r))
            .collect())
    }

    fn evaluate_raw(&self, sets: &[EdgeSet]) -> Result<Vec<f32>> {
        for (i, s) in sets.iter().enumerate() {
            if s.graph_len() != self.graph.len() {
                return Err(Error::Shape {
                    what: format!("edge set {i}"),
                    got: vec![s.graph_len()],
                    expected: format!("[{}]: one flag per edge of the graph", self.graph.len()),
                });
            }
        }
        let n = self.task.len();
        let per_forward = (self.options.batch_rows / n).max(1);
        let mut out = Vec::with_capacity(sets.len());
        let mut done = 0;
        for chunk in sets.chunks(per_forward) {
            let rows = self.forward_sets(chunk)?;
            // Rows are set-major: set k holds rows k·n .. (k+1)·n.
            for k in 0..chunk.len() {
                out.push(rows[k * n..(k + 1) * n].iter().sum::<f32>() / n as f32);
            }
            done += chunk.len();
            self.options.observer.report(done, sets.len());
        }
        Ok(out)
    }

    /// The ablation mask of `sets` (`[rows, sources, dests]`, set-major rows) and, per
    /// destination, whether any row ablates an edge into it.
    fn mask(&self, sets: &[EdgeSet]) -> (Tensor<3>, Vec<bool>) {
        let (n, k) = (self.task.len(), sets.len());
        let (ns, nd) = (self.graph.n_sources(), self.graph.n_dests());
        let rows = n * k;
        let mut mask = vec![0.0f32; rows * ns * nd];
        let mut any = vec![false; nd];
        for (s, set) in sets.iter().enumerate() {
            for (i, &(src, dst)) in self.cells.iter().enumerate() {
                if set.contains(i) {
                    continue;
                }
                any[dst] = true;
                for r in s * n..(s + 1) * n {
                    mask[(r * ns + src) * nd + dst] = 1.0;
                }
            }
        }
        let device = self.clean_last.device();
        let mask = Tensor::<3>::from_data(TensorData::new(mask, [rows, ns, nd]), &device);
        (mask, any)
    }

    /// `k` copies of the clean prompts, set-major, and the ablated sources repeated to match.
    fn copies(&self, k: usize) -> Result<(TokenBatch, SourceActs)> {
        let (n, clean) = (self.task.len(), self.task.clean());
        let t = clean.seq_len();
        let ids: Vec<Vec<u32>> = (0..n * k)
            .map(|r| clean.ids()[(r % n) * t..(r % n + 1) * t].to_vec())
            .collect();
        let ablated = if k == 1 {
            self.ablated.clone()
        } else {
            self.ablated.repeat(k)
        };
        Ok((TokenBatch::new(ids, None)?, ablated))
    }

    /// One edge-patched forward of `sets.len()` copies of the task: the raw per-row metric.
    fn forward_sets(&self, sets: &[EdgeSet]) -> Result<Vec<f32>> {
        let (mask, any) = self.mask(sets);
        let (batch, ablated) = self.copies(sets.len())?;
        let mut hooks = EdgePatch::new(&self.graph, &ablated, mask, any);
        let logits = self.model.forward(&batch, None, &mut hooks)?;
        let v = per_row(self.options.metric, logits, &self.clean_last, &self.task)?;
        Ok(host_vec(v))
    }

    /// The task's forward under `set` up to block `layer` (one copy): what every edge set that
    /// differs from `set` only in edges read from block `layer` on shares. ACDC evaluates a
    /// destination's candidates from it ([`CircuitRun::evaluate_from`]).
    ///
    /// # Errors
    /// A layer past the model; forward errors.
    pub(crate) fn prefix(&self, set: &EdgeSet, layer: usize) -> Result<Prefix> {
        if layer >= self.graph.n_layers() {
            return Err(Error::OutOfRange {
                what: "layer",
                value: layer,
                limit: format!("the model has {} layers", self.graph.n_layers()),
            });
        }
        let (mask, any) = self.mask(std::slice::from_ref(set));
        let (batch, ablated) = self.copies(1)?;
        let mut hooks = EdgePatch::new(&self.graph, &ablated, mask, any);
        let ctx = self.model.context(&batch, None)?;
        let mut resid = self.model.embed(&batch, &ctx, &mut hooks)?;
        for l in 0..layer {
            resid = self.model.block(l, resid, &ctx, None, &mut hooks)?;
        }
        Ok(Prefix {
            layer,
            resid,
            stack: hooks.into_stack(),
        })
    }

    /// [`CircuitRun::evaluate`] for edge sets that agree with the prefix's set on every edge
    /// read before its block: only the blocks from there on run, on copies of the prefix's
    /// residual stream, and only the last position is unembedded (the metric reads nothing
    /// else).
    ///
    /// # Errors
    /// As [`CircuitRun::evaluate`].
    pub(crate) fn evaluate_from(&self, prefix: &Prefix, sets: &[EdgeSet]) -> Result<Vec<f32>> {
        let n = self.task.len();
        let per_forward = (self.options.batch_rows / n).max(1);
        let mut out = Vec::with_capacity(sets.len());
        for chunk in sets.chunks(per_forward) {
            let k = chunk.len();
            let (mask, any) = self.mask(chunk);
            let (batch, ablated) = self.copies(k)?;
            let repeat4 = |t: &Tensor<4>| Tensor::cat(vec![t.clone(); k], 0);
            let mut hooks = EdgePatch::new(&self.graph, &ablated, mask, any)
                .with_stack(prefix.stack.as_ref().map(repeat4));
            let ctx = self.model.context(&batch, None)?;
            let mut resid = Tensor::cat(vec![prefix.resid.clone(); k], 0);
            for l in prefix.layer..self.graph.n_layers() {
                resid = self.model.block(l, resid, &ctx, None, &mut hooks)?;
            }
            // The metric reads the last position only: unembed just that one.
            let [r, t, d] = resid.dims();
            let logits = self
                .model
                .unembed(resid.slice([0..r, t - 1..t, 0..d]), &mut hooks)?;
            let rows = host_vec(per_row(
                self.options.metric,
                logits,
                &self.clean_last,
                &self.task,
            )?);
            for s in 0..k {
                out.push(self.scale(rows[s * n..(s + 1) * n].iter().sum::<f32>() / n as f32));
            }
        }
        Ok(out)
    }

    /// Edge attribution patching (EAP, Syed et al. 2023): for every edge `u → v`,
    /// `Σ_{pairs, positions} (a_u,ablated − a_u,clean) · ∂M/∂(input of v)`, with the gradient
    /// of the mean metric on the clean run: the first-order estimate of how ablating the edge
    /// alone moves the metric. Two forwards and one backward.
    ///
    /// # Errors
    /// Forward and metric errors.
    pub fn eap(&self) -> Result<EdgeScores> {
        self.gradient_scores(1, false)
    }

    /// EAP-IG with input interpolation (Hanna et al. 2024): as [`CircuitRun::eap`], with the
    /// gradient averaged over `steps` runs whose token embeddings are
    /// `ablated + (k / steps)(clean − ablated)`, `k = 0 … steps − 1` (EAP-IG's
    /// `EAP-IG-inputs`; its README uses 5 steps).
    ///
    /// # Errors
    /// Zero steps, and forward and metric errors.
    pub fn eap_ig(&self, steps: usize) -> Result<EdgeScores> {
        if steps == 0 {
            return Err(Error::BadOption {
                option: "ig_steps",
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        self.gradient_scores(steps, true)
    }

    /// `steps` gradient runs (interpolated inputs when `ig`), averaged.
    fn gradient_scores(&self, steps: usize, ig: bool) -> Result<EdgeScores> {
        let n_layers = self.graph.n_layers();
        let dests = dest_points(n_layers);
        let mut grad_sum: Option<Tensor<2>> = None;
        for k in 0..steps {
            let mut hooks = HookSet::new();
            if ig {
                let (a, c) = (self.ablated.input.clone(), self.clean_acts.input.clone());
                let alpha = k as f64 / steps as f64;
                let x = a.clone() + (c - a) * alpha;
                hooks.intervene(HookPoint::Embed, Intervention::replace(x))?;
            }
            hooks.grad(Selector::points(dests.clone())?);
            let (_, grads) = hooks.try_run_with_grads(self.model, self.task.clean(), |logits| {
                let v = per_row(self.options.metric, logits, &self.clean_last, &self.task)?;
                let m = v.mean();
                Ok::<_, Error>(match self.options.metric {
                    CircuitMetric::NormalizedLogitDiff => m / (self.raw_clean - self.raw_ablated),
                    _ => m,
                })
            })?;
            let g = self.dest_matrix(&grads)?;
            grad_sum = Some(match grad_sum {
                None => g,
                Some(s) => s + g,
            });
            self.options.observer.report(k + 1, steps);
        }
        let grads = grad_sum.expect("at least one step") / steps as f64;
        let diffs = self.source_matrix();
        let scores = diffs.matmul(grads.transpose());
        let all = host_vec(scores.reshape([-1]));
        let nd = self.graph.n_dests();
        let values = self.cells.iter().map(|&(s, d)| all[s * nd + d]).collect();
        Ok(EdgeScores::new(values))
    }

    /// `[sources, pairs · pos · d_model]`: each source's `ablated − clean` output, flattened.
    fn source_matrix(&self) -> Tensor<2> {
        let (a, c) = (&self.ablated, &self.clean_acts);
        let flat3 = |x: Tensor<3>| x.reshape([1, -1]);
        let flat4 = |x: Tensor<4>| {
            let h = x.dims()[2];
            x.permute([2, 0, 1, 3]).reshape([h as i32, -1])
        };
        let mut rows = vec![flat3(a.input.clone() - c.input.clone())];
        for l in 0..self.graph.n_layers() {
            rows.push(flat4(a.heads[l].clone() - c.heads[l].clone()));
            rows.push(flat3(a.mlps[l].clone() - c.mlps[l].clone()));
        }
        Tensor::cat(rows, 0)
    }

    /// `[dests, pairs · pos · d_model]`: each destination's gradient, flattened as
    /// [`Self::source_matrix`] flattens.
    fn dest_matrix(&self, grads: &burnlens_hooks::ActivationCache) -> Result<Tensor<2>> {
        let flat4 = |x: Tensor<4>| {
            let h = x.dims()[2];
            x.permute([2, 0, 1, 3]).reshape([h as i32, -1])
        };
        let n = self.graph.n_layers();
        let mut rows = Vec::with_capacity(4 * n + 1);
        for l in 0..n {
            for p in [
                HookPoint::QInput(l),
                HookPoint::KInput(l),
                HookPoint::VInput(l),
            ] {
                rows.push(flat4(grads.get4(p)?));
            }
            rows.push(grads.get3(HookPoint::MlpIn(l))?.reshape([1, -1]));
        }
        rows.push(grads.get3(HookPoint::ResidPost(n - 1))?.reshape([1, -1]));
        Ok(Tensor::cat(rows, 0))
    }
}

/// A `[n]` float tensor read back to the host.
fn host_vec(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float values")
}
