//! Head detectors as TransformerLens's `head_detector` defines them: a detection pattern (a
//! lower-triangular `[pos, pos]` matrix of the attention a kind of head is expected to show)
//! compared with every head's `attn.hook_pattern`.
//!
//! The patterns are TransformerLens's previous-token, duplicate-token and induction patterns,
//! built from the tokens exactly as its `get_*_detection_pattern` functions build them, and
//! [`HeadPattern::Back`], a head that attends `k` tokens back (previous-token is `k = 1`), the
//! custom pattern the organism's planted offset heads need. The scores are its two error
//! measures ([`ErrorMeasure`]), with its `exclude_bos` and `exclude_current_token` options.
//!
//! One difference, on purpose: TransformerLens's `detect_head` given a *list* of sequences
//! and a named pattern averages the per-sequence scores but drops `exclude_bos`,
//! `exclude_current_token` and `error_measure` on the way (it recurses without them);
//! [`detect_heads`] applies the options to every sequence.

use burn::tensor::Tensor;
use burnlens_model::{Gpt2, HookPoint, Hooks, TokenBatch};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A kind of head, by the attention pattern it is expected to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HeadPattern {
    /// Each token attends to the one before it.
    PreviousToken,
    /// Each token attends to earlier occurrences of itself.
    DuplicateToken,
    /// Each token attends to the token after an earlier occurrence of itself.
    Induction,
    /// Each token attends to the token `k` places back (`k ≥ 1`).
    Back(usize),
}

impl HeadPattern {
    /// TransformerLens's three named patterns.
    pub const STANDARD: [HeadPattern; 3] = [
        HeadPattern::PreviousToken,
        HeadPattern::DuplicateToken,
        HeadPattern::Induction,
    ];

    /// The detection pattern for `ids`: `[n, n]` row-major (query rows, key columns), ones
    /// where the head is expected to attend, zeros elsewhere, lower-triangular.
    pub fn detection_pattern(&self, ids: &[u32]) -> Vec<f32> {
        let n = ids.len();
        let mut d = vec![0.0f32; n * n];
        match *self {
            HeadPattern::PreviousToken => back(&mut d, n, 1),
            HeadPattern::Back(k) => back(&mut d, n, k),
            HeadPattern::DuplicateToken => {
                for q in 0..n {
                    for k in 0..q {
                        if ids[q] == ids[k] {
                            d[q * n + k] = 1.0;
                        }
                    }
                }
            }
            // TransformerLens shifts the duplicate pattern one column right (the first column
            // becomes zero) and keeps the lower triangle: (q, k) is on it when token k − 1 is
            // an earlier occurrence of token q, k ≤ q.
            HeadPattern::Induction => {
                for q in 0..n {
                    for k in 1..=q {
                        if k - 1 < q && ids[q] == ids[k - 1] {
                            d[q * n + k] = 1.0;
                        }
                    }
                }
            }
        }
        d
    }
}

fn back(d: &mut [f32], n: usize, k: usize) {
    for q in k..n {
        d[q * n + q - k] = 1.0;
    }
}

impl std::fmt::Display for HeadPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadPattern::PreviousToken => f.write_str("previous_token"),
            HeadPattern::DuplicateToken => f.write_str("duplicate_token"),
            HeadPattern::Induction => f.write_str("induction"),
            HeadPattern::Back(k) => write!(f, "back_{k}"),
        }
    }
}

impl std::str::FromStr for HeadPattern {
    type Err = Error;

    /// `previous_token`, `duplicate_token`, `induction` or `back_K` (K ≥ 1).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::BadOption {
            option: "head pattern",
            value: s.to_string(),
            expected: "previous_token, duplicate_token, induction or back_K (K ≥ 1, e.g. back_2)"
                .into(),
        };
        match s {
            "previous_token" => Ok(HeadPattern::PreviousToken),
            "duplicate_token" => Ok(HeadPattern::DuplicateToken),
            "induction" => Ok(HeadPattern::Induction),
            _ => match s.strip_prefix("back_").map(str::parse::<usize>) {
                Some(Ok(k)) if k >= 1 => Ok(HeadPattern::Back(k)),
                _ => Err(bad()),
            },
        }
    }
}

/// How a head's pattern is compared with a detection pattern (TransformerLens's
/// `error_measure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ErrorMeasure {
    /// The share of the head's attention on the detection pattern's ones:
    /// `Σ attention · detection / Σ attention` (TransformerLens's default).
    #[default]
    Mul,
    /// `1 − Σ |attention − detection| / pos`, rounded to three decimals as TransformerLens
    /// rounds it: 1 for a perfect match, down to −1.
    Abs,
}

/// The options of a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DetectOptions {
    /// Leave the attention to the first token (BOS) out of the comparison.
    pub exclude_bos: bool,
    /// Leave each token's attention to itself out of the comparison.
    pub exclude_current_token: bool,
    /// The error measure.
    pub measure: ErrorMeasure,
}

/// The score of one head's attention pattern `[n, n]` (row-major) against a detection pattern
/// of the same shape. `None` when the "mul" measure has no attention left to divide by (every
/// entry excluded).
pub fn similarity_score(
    attention: &[f32],
    detection: &[f32],
    n: usize,
    options: DetectOptions,
) -> Option<f32> {
    let kept = |q: usize, k: usize| {
        !(options.exclude_bos && k == 0 || options.exclude_current_token && q == k)
    };
    match options.measure {
        ErrorMeasure::Mul => {
            let (mut hit, mut total) = (0.0f64, 0.0f64);
            for q in 0..n {
                for k in 0..n {
                    if kept(q, k) {
                        let a = f64::from(attention[q * n + k]);
                        hit += a * f64::from(detection[q * n + k]);
                        total += a;
                    }
                }
            }
            (total > 0.0).then(|| (hit / total) as f32)
        }
        ErrorMeasure::Abs => {
            let mut sum = 0.0f64;
            for q in 0..n {
                for k in 0..n {
                    if kept(q, k) {
                        sum += f64::from((attention[q * n + k] - detection[q * n + k]).abs());
                    }
                }
            }
            Some((1.0 - (sum / n as f64 * 1000.0).round() / 1000.0) as f32)
        }
    }
}

/// Every head's score for `pattern`, averaged over `sequences` (each run alone, as
/// TransformerLens runs a list), as `[n_layers × n_heads]` row-major.
///
/// # Errors
/// No sequences, a sequence shorter than 2 tokens or longer than the context (as
/// TransformerLens refuses them), a "mul" score with nothing left after the exclusions, and
/// forward errors.
pub fn detect_heads(
    model: &Gpt2,
    sequences: &[Vec<u32>],
    pattern: HeadPattern,
    options: DetectOptions,
) -> Result<Vec<f32>> {
    let all = detect_heads_many(model, sequences, &[pattern], options)?;
    Ok(all.into_iter().next().expect("one pattern"))
}

/// [`detect_heads`] for several patterns from one forward pass per sequence: one
/// `[n_layers × n_heads]` table per pattern, in order.
///
/// # Errors
/// As [`detect_heads`].
pub fn detect_heads_many(
    model: &Gpt2,
    sequences: &[Vec<u32>],
    patterns: &[HeadPattern],
    options: DetectOptions,
) -> Result<Vec<Vec<f32>>> {
    if sequences.is_empty() {
        return Err(Error::Empty {
            what: "the sequences to detect heads on",
            hint: "",
        });
    }
    let (n_layers, n_heads) = (model.config.n_layer, model.config.n_head);
    let mut sums = vec![vec![0.0f64; n_layers * n_heads]; patterns.len()];
    for (i, ids) in sequences.iter().enumerate() {
        check_length(i, ids.len(), model.config.n_positions)?;
        let mut det = Detector::new(n_layers, n_heads, ids, patterns, options);
        let mut hooks = OnPattern(|layer, pattern: &[f32], _| det.absorb(layer, pattern));
        model.forward(&TokenBatch::single(ids)?, None, &mut hooks)?;
        let scores = det.finish().ok_or(Error::BadOption {
            option: "exclude_bos / exclude_current_token",
            value: format!("both, on sequence {i} of {} tokens", ids.len()),
            expected: "some attention left to score (the \"mul\" measure divides by it)".into(),
        })?;
        for (sum, s) in sums.iter_mut().zip(scores) {
            for (a, b) in sum.iter_mut().zip(s) {
                *a += f64::from(b);
            }
        }
    }
    let n = sequences.len() as f64;
    Ok(sums
        .into_iter()
        .map(|s| s.into_iter().map(|x| (x / n) as f32).collect())
        .collect())
}

fn check_length(i: usize, len: usize, context: usize) -> Result<()> {
    if len < 2 {
        return Err(Error::BadOption {
            option: "sequences",
            value: format!("sequence {i} of {len} token(s)"),
            expected: "at least 2 tokens: a head's pattern needs a token before the query".into(),
        });
    }
    if len > context {
        return Err(Error::TooLong {
            what: format!("sequence {i}"),
            tokens: len,
            limit: context,
            room: "tokens of the model's context",
        });
    }
    Ok(())
}

/// Scores every head of one sequence against several detection patterns, one layer's pattern
/// at a time as the forward produces it (nothing is cached). Also what [`crate::HeadScan`]
/// uses.
pub(crate) struct Detector {
    n_heads: usize,
    n: usize,
    detections: Vec<Vec<f32>>,
    options: DetectOptions,
    /// Per pattern, `[n_layers × n_heads]`; `None` once a head had nothing to score.
    scores: Option<Vec<Vec<f32>>>,
}

impl Detector {
    pub(crate) fn new(
        n_layers: usize,
        n_heads: usize,
        ids: &[u32],
        patterns: &[HeadPattern],
        options: DetectOptions,
    ) -> Self {
        Self {
            n_heads,
            n: ids.len(),
            detections: patterns.iter().map(|p| p.detection_pattern(ids)).collect(),
            options,
            scores: Some(vec![vec![0.0; n_layers * n_heads]; patterns.len()]),
        }
    }

    /// Scores one layer's pattern `[heads, n, n]` (host, row-major).
    pub(crate) fn absorb(&mut self, layer: usize, pattern: &[f32]) {
        let nn = self.n * self.n;
        let Some(scores) = self.scores.as_mut() else {
            return;
        };
        for (table, det) in scores.iter_mut().zip(&self.detections) {
            for h in 0..self.n_heads {
                let a = &pattern[h * nn..(h + 1) * nn];
                match similarity_score(a, det, self.n, self.options) {
                    Some(s) => table[layer * self.n_heads + h] = s,
                    None => {
                        self.scores = None;
                        return;
                    }
                }
            }
        }
    }

    /// The scores, or `None` if some head had no attention left after the exclusions.
    pub(crate) fn finish(self) -> Option<Vec<Vec<f32>>> {
        self.scores
    }
}

/// Hooks that hand each layer's `attn.hook_pattern` `[1, heads, pos, pos]`, copied to the host,
/// to a closure `(layer, pattern, pos)`, and change nothing.
pub(crate) struct OnPattern<F>(pub F);

impl<F: FnMut(usize, &[f32], usize)> Hooks for OnPattern<F> {
    fn is_active(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::Pattern(_))
    }

    fn hook3(&mut self, _point: HookPoint, act: Tensor<3>) -> burnlens_model::Result<Tensor<3>> {
        Ok(act)
    }

    fn hook4(&mut self, point: HookPoint, act: Tensor<4>) -> burnlens_model::Result<Tensor<4>> {
        if let HookPoint::Pattern(layer) = point {
            let [_, _, t, _] = act.dims();
            let host: Vec<f32> = act
                .to_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("float pattern");
            (self.0)(layer, &host, t);
        }
        Ok(act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_transformer_lens_s() {
        // ids: a b a b c — duplicates at (2,0), (3,1); induction at (2,1), (3,2).
        let ids = [5, 6, 5, 6, 7];
        let ones = |p: HeadPattern| -> Vec<(usize, usize)> {
            let d = p.detection_pattern(&ids);
            (0..25)
                .filter(|i| d[*i] == 1.0)
                .map(|i| (i / 5, i % 5))
                .collect()
        };
        assert_eq!(
            ones(HeadPattern::PreviousToken),
            [(1, 0), (2, 1), (3, 2), (4, 3)]
        );
        assert_eq!(ones(HeadPattern::Back(3)), [(3, 0), (4, 1)]);
        assert_eq!(ones(HeadPattern::DuplicateToken), [(2, 0), (3, 1)]);
        assert_eq!(ones(HeadPattern::Induction), [(2, 1), (3, 2)]);
        // A token repeated in place: induction's shifted column lands on the diagonal.
        let d = HeadPattern::Induction.detection_pattern(&[4, 4]);
        assert_eq!(d, [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn scores_of_a_uniform_head_have_closed_forms() {
        // A head spreading its attention evenly over the visible keys: row q is 1/(q+1).
        let n = 4;
        let mut a = vec![0.0f32; n * n];
        for q in 0..n {
            for k in 0..=q {
                a[q * n + k] = 1.0 / (q + 1) as f32;
            }
        }
        let det = HeadPattern::PreviousToken.detection_pattern(&[1, 2, 3, 4]);
        let mul = DetectOptions::default();
        // Σ over q ≥ 1 of 1/(q+1), over Σ a = n.
        let expected = (1.0 / 2.0 + 1.0 / 3.0 + 1.0 / 4.0) / 4.0;
        let got = similarity_score(&a, &det, n, mul).unwrap();
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        // Without the first key: the numerator loses (1,0)'s 1/2; the denominator every
        // row's first entry (1 + 1/2 + 1/3 + 1/4).
        let no_bos = DetectOptions {
            exclude_bos: true,
            ..mul
        };
        let expected = (1.0 / 3.0 + 1.0 / 4.0) / (4.0 - (1.0 + 0.5 + 1.0 / 3.0 + 0.25));
        let got = similarity_score(&a, &det, n, no_bos).unwrap();
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        // abs: Σ|a − d| = 1 (row 0) + 1 (row 1: |1/2 − 1| + 1/2) + 4/3 + 3/2, over n = 4.
        let abs = DetectOptions {
            measure: ErrorMeasure::Abs,
            ..mul
        };
        let sum: f64 =
            1.0 + 1.0 + (1.0 / 3.0 + 2.0 / 3.0 + 1.0 / 3.0) + (0.25 + 0.25 + 0.75 + 0.25);
        let expected = 1.0 - (sum / 4.0 * 1000.0).round() / 1000.0;
        let got = similarity_score(&a, &det, n, abs).unwrap();
        assert!(
            (f64::from(got) - expected).abs() < 1e-6,
            "{got} vs {expected}"
        );
        // Everything excluded: nothing to divide by.
        let none = DetectOptions {
            exclude_bos: true,
            exclude_current_token: true,
            ..mul
        };
        assert_eq!(
            similarity_score(&[1.0, 0.0, 0.0, 1.0], &[0.0; 4], 2, none),
            None
        );
    }

    #[test]
    fn names_round_trip_and_bad_ones_say_what_is_expected() {
        for p in [
            HeadPattern::PreviousToken,
            HeadPattern::DuplicateToken,
            HeadPattern::Induction,
            HeadPattern::Back(3),
        ] {
            assert_eq!(p.to_string().parse::<HeadPattern>().unwrap(), p);
        }
        for bad in ["back_0", "back_", "previous", "back_x"] {
            let e = bad.parse::<HeadPattern>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("back_K"), "{e}");
        }
    }
}
