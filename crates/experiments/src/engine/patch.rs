//! What the engines run: patches, and the job that scores them.

use burnlens_hooks::ActivationCache;
use burnlens_model::HookPoint;

use crate::metric::PatchMetric;

/// One patch of a sweep: its flat result index and where it applies.
#[derive(Debug, Clone)]
pub(crate) struct Patch {
    /// Flat index into the result.
    pub index: usize,
    /// The layers patched (one for a sweep; a window for causal tracing).
    pub layers: std::ops::Range<usize>,
    /// The one position (query position for patterns) patched, or `None` for all.
    pub pos: Option<usize>,
    /// The one head patched, or `None` for all.
    pub head: Option<usize>,
}

/// Patches to score: the patched hook point at every layer, the clean activations patched in,
/// the patches and the metric of each patched run.
pub(crate) struct Job<'a> {
    /// The patched point at each layer (`points[l]` is patched at layer `l`).
    pub points: &'a [HookPoint],
    /// The clean run's activations at `points`.
    pub clean: &'a ActivationCache,
    /// The patches, in any order; scores come back by `Patch::index`.
    pub patches: &'a [Patch],
    /// The metric of one patched run.
    pub metric: &'a dyn PatchMetric,
}
