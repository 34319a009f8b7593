//! The reference engine: one full forward of the corrupted input per patch, as
//! TransformerLens runs it.

use burnlens_hooks::{HookSet, Intervention};
use burnlens_model::{Gpt2, TokenBatch};

use super::patch::Job;
use crate::error::Result;
use crate::metric::host_scores;
use crate::progress::Observer;

/// Scores every patch of `job` on `corrupted`, one forward each, in result order.
pub(crate) fn run(
    model: &Gpt2,
    corrupted: &TokenBatch,
    job: &Job,
    observer: &Observer,
) -> Result<Vec<f32>> {
    let mut values = vec![f32::NAN; job.patches.len()];
    for (done, patch) in job.patches.iter().enumerate() {
        let mut hooks = HookSet::new();
        for layer in patch.layers.clone() {
            let point = job.points[layer];
            let mut intervention = Intervention::replace(job.clean.get(point)?.clone());
            if let Some(p) = patch.pos {
                intervention = intervention.at(vec![p]);
            }
            if let Some(h) = patch.head {
                intervention = intervention.heads([h]);
            }
            hooks.intervene(point, intervention)?;
        }
        let logits = hooks.run(model, corrupted)?;
        values[patch.index] = host_scores(vec![job.metric.score(logits)?])?[0];
        observer.report(done + 1, job.patches.len());
    }
    Ok(values)
}
