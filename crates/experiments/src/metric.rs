//! Metrics of patched runs: the [`PatchMetric`] trait every patching experiment scores with,
//! the [`LastPosition`] wrapper that lets the batched engine unembed only the last position,
//! and the default [`NormalizedLogitDiff`].

use burn::tensor::{Tensor, TensorData};
use burnlens_metrics::{last_position, logit_diff, normalized_patch_score};

use crate::error::{Error, Result};

/// A metric of one patched run's logits.
///
/// Any `Fn(Tensor<3>) -> Result<Tensor<1>, E>` is one (reading every position), for any
/// error `E` that converts into a boxed error (this crate's, `burnlens::Error`, `anyhow`'s);
/// wrap it in [`LastPosition`] when it reads only the last position, which lets the batched
/// engine skip the unembedding elsewhere.
///
/// ```
/// use burnlens_experiments::{LastPosition, PatchMetric};
/// use burnlens_metrics::{last_position, logit_diff};
/// use burnlens_model::burn::tensor::{Device, Tensor};
///
/// let metric = LastPosition::new(|logits: Tensor<3>| {
///     Ok(logit_diff(last_position(logits), &[1], &[0])?.mean())
/// });
/// let logits = Tensor::<3>::from_floats([[[0.5, 2.0, 0.0]]], &Device::flex());
/// let score: f32 = metric.score(logits)?.into_scalar();
/// assert_eq!(score, 1.5);
/// # Ok::<(), burnlens_experiments::Error>(())
/// ```
pub trait PatchMetric {
    /// The score of one run: logits `[batch, pos, vocab]` (`pos` = 1, the last position, when
    /// [`PatchMetric::last_position_only`]) to a tensor of shape `[1]`.
    ///
    /// # Errors
    /// Whatever the metric reports (token ids outside the vocabulary, …); a sweep stops at
    /// the first error and returns it.
    fn score(&self, logits: Tensor<3>) -> Result<Tensor<1>>;

    /// Whether the metric reads only the last position's logits.
    fn last_position_only(&self) -> bool {
        false
    }
}

/// A metric closure's error as this crate's: its own errors stay as they are, any other
/// becomes [`Error::CustomMetric`].
fn metric_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> Error {
    match e.into().downcast::<Error>() {
        Ok(own) => *own,
        Err(other) => Error::CustomMetric(other),
    }
}

impl<F, E> PatchMetric for F
where
    F: Fn(Tensor<3>) -> std::result::Result<Tensor<1>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn score(&self, logits: Tensor<3>) -> Result<Tensor<1>> {
        self(logits).map_err(metric_error)
    }
}

/// A metric that reads only the last position: it is given logits `[batch, 1, vocab]`.
pub struct LastPosition<F>(pub F);

impl<F> LastPosition<F>
where
    F: Fn(Tensor<3>) -> Result<Tensor<1>>,
{
    /// Wraps `f`, a closure returning this crate's `Result`: the constructor tells the
    /// compiler the closure's error type, so a closure using `?` on metric, hook or model
    /// errors needs no annotation. (`LastPosition(f)` takes a closure with any error type,
    /// annotated.)
    pub fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F, E> PatchMetric for LastPosition<F>
where
    F: Fn(Tensor<3>) -> std::result::Result<Tensor<1>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn score(&self, logits: Tensor<3>) -> Result<Tensor<1>> {
        let [b, t, v] = logits.dims();
        (self.0)(logits.slice([0..b, t - 1..t, 0..v])).map_err(metric_error)
    }

    fn last_position_only(&self) -> bool {
        true
    }
}

/// The default patching metric: the mean logit difference `answer − foil` at the last
/// position, normalized to 0 at the corrupted run and 1 at the clean run
/// ([`burnlens_metrics::normalized_patch_score`]).
#[derive(Debug, Clone)]
pub struct NormalizedLogitDiff {
    answer: Vec<u32>,
    foil: Vec<u32>,
    clean: f32,
    corrupted: f32,
}

impl NormalizedLogitDiff {
    /// The metric for one prompt pair batch, with its baselines taken from the clean and
    /// corrupted runs' logits.
    ///
    /// # Errors
    /// Token id lists that do not fit the batch or the vocabulary, and a degenerate baseline
    /// (clean and corrupted logit differences equal), reported before any sweep runs.
    pub fn new(
        answer: &[u32],
        foil: &[u32],
        clean_logits: Tensor<3>,
        corrupted_logits: Tensor<3>,
    ) -> Result<Self> {
        let diff = |logits: Tensor<3>| -> Result<f32> {
            Ok(logit_diff(last_position(logits), answer, foil)?
                .mean()
                .into_scalar::<f32>())
        };
        let (clean, corrupted) = (diff(clean_logits)?, diff(corrupted_logits.clone())?);
        let probe = Tensor::<1>::from_floats([corrupted], &corrupted_logits.device());
        normalized_patch_score(probe, clean, corrupted)?;
        Ok(Self {
            answer: answer.to_vec(),
            foil: foil.to_vec(),
            clean,
            corrupted,
        })
    }

    /// The clean run's mean logit difference.
    pub fn clean(&self) -> f32 {
        self.clean
    }

    /// The corrupted run's mean logit difference.
    pub fn corrupted(&self) -> f32 {
        self.corrupted
    }
}

impl PatchMetric for NormalizedLogitDiff {
    fn score(&self, logits: Tensor<3>) -> Result<Tensor<1>> {
        let ld = logit_diff(last_position(logits), &self.answer, &self.foil)?.mean();
        Ok((ld - self.corrupted) / (self.clean - self.corrupted))
    }

    fn last_position_only(&self) -> bool {
        true
    }
}

/// Reads a `[n]` score tensor (or several concatenated) back to the host.
pub(crate) fn host_scores(scores: Vec<Tensor<1>>) -> Result<Vec<f32>> {
    if scores.is_empty() {
        return Ok(Vec::new());
    }
    let n = scores.len();
    let all = Tensor::cat(scores, 0);
    if all.dims()[0] != n {
        return Err(Error::Shape {
            what: format!("the metric's scores of {n} runs"),
            got: all.dims().to_vec(),
            expected: format!("[{n}]: one number (shape [1]) per run"),
        });
    }
    let data: TensorData = all.into_data();
    Ok(data
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float scores"))
}
