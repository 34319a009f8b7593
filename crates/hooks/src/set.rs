//! The hook set passed into the forward pass: captures, interventions and gradient points.

use std::collections::BTreeMap;

use burn::tensor::{Gradients, Tensor};
use burnlens_model::hook::{RowPart, RowSplit};
use burnlens_model::{Error as ModelError, Gpt2, HookPoint, Hooks, IntoHookPoint, TokenBatch};

use crate::act::{Act, pos_axis};
use crate::cache::ActivationCache;
use crate::error::{Error, Result};
use crate::intervene::Intervention;
use crate::select::{Positions, Selector};

enum Action {
    Capture(Positions),
    Intervene(Box<Intervention>),
    Grad,
}

struct Entry {
    selector: Selector,
    /// Points named explicitly (checked against the model's layers before a run).
    named: Vec<HookPoint>,
    action: Action,
}

impl Entry {
    /// A copy of a capture entry; `None` for an intervention or a gradient point.
    fn capture_copy(&self) -> Option<Entry> {
        match &self.action {
            Action::Capture(positions) => Some(Entry {
                selector: self.selector.clone(),
                named: self.named.clone(),
                action: Action::Capture(positions.clone()),
            }),
            _ => None,
        }
    }
}

/// Hooks for one or more forward passes: captures into an [`ActivationCache`],
/// [`Intervention`]s, and points to take gradients at.
///
/// At a point, the entries that select it run **in the order they were added**, each on the
/// output of the previous one (TransformerLens's order for hooks on one point). A capture
/// added after an intervention therefore sees the changed value; add it first to see the
/// original. The forward pass asks the set whether a point is active and skips it otherwise:
/// an empty set does no work at any point.
#[derive(Default)]
pub struct HookSet {
    entries: Vec<Entry>,
    cache: ActivationCache,
    leaves: BTreeMap<HookPoint, Act>,
}

impl std::fmt::Debug for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSet")
            .field("entries", &self.entries.len())
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl HookSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, selector: Selector, named: Vec<HookPoint>, action: Action) -> &mut Self {
        self.entries.push(Entry {
            selector,
            named,
            action,
        });
        self
    }

    /// Capture every point `selector` selects, at every position.
    pub fn capture(&mut self, selector: Selector) -> &mut Self {
        self.push(selector, Vec::new(), Action::Capture(Positions::All))
    }

    /// Capture at some positions only (TransformerLens's `pos_slice`; the query axis for
    /// scores and patterns).
    pub fn capture_at(&mut self, selector: Selector, positions: impl Into<Positions>) -> &mut Self {
        self.push(selector, Vec::new(), Action::Capture(positions.into()))
    }

    /// Capture one point, by name, shorthand or [`HookPoint`].
    ///
    /// # Errors
    /// A name that is not a hook point.
    pub fn capture_point(&mut self, point: impl IntoHookPoint) -> Result<&mut Self> {
        let p = point.into_hook_point()?;
        Ok(self.push(
            Selector::point(p)?,
            vec![p],
            Action::Capture(Positions::All),
        ))
    }

    /// Apply `intervention` at one point.
    ///
    /// # Errors
    /// A name that is not a hook point.
    pub fn intervene(
        &mut self,
        point: impl IntoHookPoint,
        intervention: Intervention,
    ) -> Result<&mut Self> {
        let p = point.into_hook_point()?;
        Ok(self.push(
            Selector::point(p)?,
            vec![p],
            Action::Intervene(Box::new(intervention)),
        ))
    }

    /// Apply `intervention` at every point `selector` selects.
    pub fn intervene_where(&mut self, selector: Selector, intervention: Intervention) -> &mut Self {
        self.push(
            selector,
            Vec::new(),
            Action::Intervene(Box::new(intervention)),
        )
    }

    /// Keep the gradient at every point `selector` selects (see [`HookSet::run_with_grads`]).
    pub fn grad(&mut self, selector: Selector) -> &mut Self {
        self.push(selector, Vec::new(), Action::Grad)
    }

    /// Checks that every explicitly named point exists in a model with `n_layers` blocks.
    ///
    /// # Errors
    /// The first point whose layer is out of range.
    pub fn check(&self, n_layers: usize) -> Result<()> {
        for e in &self.entries {
            for p in &e.named {
                p.check_layer(n_layers)?;
            }
        }
        Ok(())
    }

    /// The activations captured so far.
    pub fn cache(&self) -> &ActivationCache {
        &self.cache
    }

    /// Takes the captured activations, leaving the set's cache empty.
    pub fn take_cache(&mut self) -> ActivationCache {
        std::mem::take(&mut self.cache)
    }

    /// Runs the model's forward pass with these hooks (after [`HookSet::check`]).
    ///
    /// # Shapes
    /// - output: logits `[batch, pos, vocab]`
    ///
    /// # Errors
    /// As [`HookSet::check`] and [`Gpt2::forward`], and errors raised by interventions.
    pub fn run(&mut self, model: &Gpt2, batch: &TokenBatch) -> Result<Tensor<3>> {
        self.check(model.config.n_layer)?;
        Ok(model.forward(batch, None, self)?)
    }

    /// Runs the forward pass, reduces the logits to a scalar with `metric`, and returns its
    /// value and its gradient at every point selected with [`HookSet::grad`], as a cache.
    ///
    /// Works on every backend: activations at the gradient points are lifted into autodiff
    /// (the weights stay constants), so no autodiff copy of the model is needed.
    ///
    /// # Errors
    /// No gradient point reached in the forward pass, a metric that is not a single number,
    /// and the errors of [`HookSet::run`].
    pub fn run_with_grads(
        &mut self,
        model: &Gpt2,
        batch: &TokenBatch,
        metric: impl FnOnce(Tensor<3>) -> Tensor<1>,
    ) -> Result<(f32, ActivationCache)> {
        self.try_run_with_grads(model, batch, |logits| Ok::<_, Error>(metric(logits)))
    }

    /// [`HookSet::run_with_grads`] with a metric that may fail; its error is returned as it is.
    ///
    /// # Errors
    /// The metric's error, and those of [`HookSet::run_with_grads`].
    pub fn try_run_with_grads<E: From<Error>>(
        &mut self,
        model: &Gpt2,
        batch: &TokenBatch,
        metric: impl FnOnce(Tensor<3>) -> std::result::Result<Tensor<1>, E>,
    ) -> std::result::Result<(f32, ActivationCache), E> {
        self.leaves.clear();
        let logits = self.run(model, batch)?;
        if self.leaves.is_empty() {
            return Err(Error::NoGradient(
                "no gradient point was reached: add points with HookSet::grad",
            )
            .into());
        }
        let value = metric(logits)?;
        if !value.is_tracked() {
            return Err(Error::NoGradient(
                "the metric does not depend on any gradient point (is it computed from the logits?)",
            )
            .into());
        }
        if value.dims() != [1] {
            return Err(Error::Shape(format!(
                "the metric must return one number (shape [1]), not shape {:?}",
                value.dims()
            ))
            .into());
        }
        let grads: Gradients = value.backward();
        let number = value.inner().into_scalar::<f32>();
        let mut out = ActivationCache::default();
        for (p, leaf) in std::mem::take(&mut self.leaves) {
            let g = match &leaf {
                Act::R3(t) => t.grad(&grads).map(Act::R3),
                Act::R4(t) => t.grad(&grads).map(Act::R4),
            };
            let g = g.unwrap_or_else(|| leaf.clone().map(|t| t.zeros_like(), |t| t.zeros_like()));
            out.insert(p, g.detached());
        }
        Ok((number, out))
    }

    fn apply(&mut self, point: HookPoint, mut act: Act) -> Result<Act, ModelError> {
        for e in &mut self.entries {
            if !e.selector.matches(point) {
                continue;
            }
            match &mut e.action {
                Action::Capture(positions) => {
                    let kept = slice_positions(point, act.clone(), positions).map_err(|m| {
                        ModelError::Hook {
                            point: point.to_string(),
                            message: m.to_string(),
                        }
                    })?;
                    self.cache.insert(point, kept.detached());
                }
                Action::Intervene(iv) => act = iv.apply(point, act)?,
                Action::Grad => {
                    let leaf = act.clone().map(
                        |t| t.zeros_like().inner().autodiff().require_grad(),
                        |t| t.zeros_like().inner().autodiff().require_grad(),
                    );
                    act = match (act, &leaf) {
                        (Act::R3(a), Act::R3(l)) => Act::R3(a.autodiff() + l.clone()),
                        (Act::R4(a), Act::R4(l)) => Act::R4(a.autodiff() + l.clone()),
                        _ => unreachable!("same rank"),
                    };
                    self.leaves.insert(point, leaf);
                }
            }
        }
        Ok(act)
    }
}

/// The positions of `act` that `positions` selects, along the point's position axis.
fn slice_positions(point: HookPoint, act: Act, positions: &Positions) -> Result<Act> {
    if positions.is_all() {
        return Ok(act);
    }
    let dims = act.dims();
    let axis = pos_axis(point, dims.len());
    let idx = positions.indices(dims[axis])?;
    let device = match &act {
        Act::R3(t) => t.device(),
        Act::R4(t) => t.device(),
    };
    let idx = Tensor::<1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(
            idx.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [idx.len()],
        ),
        &device,
    );
    Ok(act.map(
        |t| t.select(axis, idx.clone()),
        |t| t.select(axis, idx.clone()),
    ))
}

impl Hooks for HookSet {
    fn is_active(&self, point: HookPoint) -> bool {
        self.entries.iter().any(|e| e.selector.matches(point))
    }

    fn hook3(&mut self, point: HookPoint, act: Tensor<3>) -> burnlens_model::Result<Tensor<3>> {
        match self.apply(point, Act::R3(act))? {
            Act::R3(t) => Ok(t),
            Act::R4(_) => unreachable!("interventions keep the rank"),
        }
    }

    fn hook4(&mut self, point: HookPoint, act: Tensor<4>) -> burnlens_model::Result<Tensor<4>> {
        match self.apply(point, Act::R4(act))? {
            Act::R4(t) => Ok(t),
            Act::R3(_) => unreachable!("interventions keep the rank"),
        }
    }

    fn row_split(&mut self) -> Option<&mut dyn RowSplit> {
        Some(self)
    }
}

impl RowSplit for HookSet {
    /// A set of captures (or an empty set) splits into sets with the same captures and empty
    /// caches; one with interventions or gradient points runs whole, since an intervention
    /// may read other rows (a replacement of batch shape, noise drawn for the whole batch, a
    /// custom closure) and gradients need one graph.
    fn split(&mut self, parts: usize) -> Option<Vec<Box<dyn RowPart>>> {
        let captures = self
            .entries
            .iter()
            .map(Entry::capture_copy)
            .collect::<Option<Vec<_>>>()?;
        Some(
            (0..parts)
                .map(|_| {
                    let entries = captures.iter().filter_map(Entry::capture_copy).collect();
                    Box::new(HookSet {
                        entries,
                        ..HookSet::default()
                    }) as Box<dyn RowPart>
                })
                .collect(),
        )
    }

    /// Keeps the parts' captures as blocks of rows of each point, stacked on the batch axis
    /// when a point is first read ([`ActivationCache`]).
    fn join(&mut self, parts: Vec<Box<dyn RowPart>>) -> burnlens_model::Result<()> {
        let mut caches = Vec::with_capacity(parts.len());
        for part in parts {
            let part: Box<dyn std::any::Any + Send> = part;
            let part = part
                .downcast::<HookSet>()
                .map_err(|_| ModelError::Shape("a row part of a HookSet is not one".into()))?;
            caches.push(part.cache);
        }
        let Some(first) = caches.first() else {
            return Ok(());
        };
        for point in first.points().collect::<Vec<_>>() {
            let hook_error = |e: Error| ModelError::Hook {
                point: point.to_string(),
                message: e.to_string(),
            };
            let blocks = caches
                .iter()
                .map(|c| c.get(point).cloned())
                .collect::<Result<Vec<_>>>()
                .map_err(hook_error)?;
            self.cache.insert_rows(point, blocks).map_err(hook_error)?;
        }
        Ok(())
    }
}

/// Runs the model once and captures every point `selector` selects (TransformerLens's
/// `run_with_cache(names_filter=...)`).
///
/// # Errors
/// As [`HookSet::run`].
pub fn run_with_cache(
    model: &Gpt2,
    batch: &TokenBatch,
    selector: Selector,
) -> Result<(Tensor<3>, ActivationCache)> {
    let mut set = HookSet::new();
    set.capture(selector);
    let logits = set.run(model, batch)?;
    Ok((logits, set.take_cache()))
}

/// [`run_with_cache`] as a method of a model or a loaded model, so that
/// `lm.run_with_cache(&batch, Selector::all())` reads as TransformerLens's
/// `model.run_with_cache(tokens)` (the `burnlens` prelude brings it into scope).
pub trait RunWithCache {
    /// Runs the forward pass capturing every point `selector` matches.
    ///
    /// # Shapes
    /// - output: logits `[batch, pos, vocab]` and the cache
    ///
    /// # Errors
    /// As [`HookSet::run`].
    fn run_with_cache(
        &self,
        batch: &TokenBatch,
        selector: Selector,
    ) -> Result<(Tensor<3>, ActivationCache)>;
}

impl RunWithCache for Gpt2 {
    fn run_with_cache(
        &self,
        batch: &TokenBatch,
        selector: Selector,
    ) -> Result<(Tensor<3>, ActivationCache)> {
        run_with_cache(self, batch, selector)
    }
}

impl RunWithCache for burnlens_model::LoadedModel {
    fn run_with_cache(
        &self,
        batch: &TokenBatch,
        selector: Selector,
    ) -> Result<(Tensor<3>, ActivationCache)> {
        run_with_cache(&self.model, batch, selector)
    }
}
