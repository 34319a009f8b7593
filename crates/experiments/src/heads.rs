//! Attention-head analysis over a stream of texts: for every (layer, head), the attention each
//! key token receives as a multiple of its query row's average (a weight of 0.2 in a row of 10
//! visible tokens is a multiple of 2), with the top-N and bottom-N multiples, the top for a
//! given token, seeded random samples above average, and how concentrated each head is.
//!
//! The same pass scores every head with TransformerLens's head detectors
//! ([`crate::HeadPattern`]: previous-token, duplicate-token, induction, `k` back), averaged over
//! the texts as TransformerLens averages a list of sequences.
//!
//! Texts are scanned one forward pass at a time by a hook set that reduces each layer's
//! `attn.hook_pattern` into bounded per-head summaries as the forward produces it and keeps
//! nothing else, so memory does not grow with the number of texts.

use burnlens_model::{Gpt2, TokenBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::detect::{DetectOptions, Detector, HeadPattern, OnPattern};
use crate::error::{Error, Result};

/// What to collect per head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadScanOptions {
    /// Entries kept in each top / bottom / token / random list.
    pub n: usize,
    /// Leave out the first token as a key (it often soaks up attention) and renormalise each
    /// row over the other visible keys.
    pub suppress_first: bool,
    /// Also keep the top multiples received by this key token.
    pub token: Option<u32>,
    /// Seed of the random samples above average.
    pub seed: u64,
    /// The head detectors to score every head with (TransformerLens's three by default).
    pub detectors: Vec<HeadPattern>,
    /// Their options (TransformerLens's defaults: the "mul" measure, nothing excluded).
    pub detect: DetectOptions,
}

impl Default for HeadScanOptions {
    fn default() -> Self {
        Self {
            n: 10,
            suppress_first: false,
            token: None,
            seed: 0,
            detectors: HeadPattern::STANDARD.to_vec(),
            detect: DetectOptions::default(),
        }
    }
}

/// One attention weight: text, query and key positions, the weight and its multiple of the
/// row's average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AttentionHit {
    /// Index of the text in the scan.
    pub text: usize,
    /// Query (destination) position.
    pub query: usize,
    /// Key (source) position.
    pub key: usize,
    /// The attention weight (renormalised when the first token is suppressed).
    pub weight: f32,
    /// `weight × visible keys in the row`.
    pub multiple: f32,
}

/// The multiples of one attention row `weights[0..=query]` (causal), as
/// `(key, weight, multiple)`; with `suppress_first`, key 0 is left out and the rest
/// renormalised (a row with only key 0 then has nothing).
pub fn row_multiples(weights: &[f32], suppress_first: bool) -> Vec<(usize, f32, f32)> {
    let start = usize::from(suppress_first);
    if weights.len() <= start {
        return Vec::new();
    }
    let keys = &weights[start..];
    let mass: f32 = if suppress_first {
        keys.iter().sum()
    } else {
        1.0
    };
    let n = keys.len() as f32;
    keys.iter()
        .enumerate()
        .map(|(i, &w)| {
            let w = if mass > 0.0 { w / mass } else { 0.0 };
            (i + start, w, w * n)
        })
        .collect()
}

/// A bounded list keeping the `n` best hits under `better`.
#[derive(Debug, Clone, Default, Serialize)]
struct Best {
    hits: Vec<AttentionHit>,
}

impl Best {
    fn offer(
        &mut self,
        hit: AttentionHit,
        n: usize,
        better: fn(&AttentionHit, &AttentionHit) -> bool,
    ) {
        if n == 0 {
            return;
        }
        if self.hits.len() == n && !better(&hit, self.hits.last().expect("n > 0")) {
            return;
        }
        let at = self.hits.partition_point(|h| !better(&hit, h));
        self.hits.insert(at, hit);
        self.hits.truncate(n);
    }
}

fn higher(a: &AttentionHit, b: &AttentionHit) -> bool {
    a.multiple > b.multiple
}

fn lower(a: &AttentionHit, b: &AttentionHit) -> bool {
    a.multiple < b.multiple
}

/// One head's running summary.
#[derive(Debug, Clone, Default)]
struct HeadState {
    top: Best,
    bottom: Best,
    token: Best,
    /// Reservoir sample of hits above average.
    random: Vec<AttentionHit>,
    above_seen: u64,
    rows: u64,
    sum_max_multiple: f64,
    sum_entropy: f64,
}

/// One head's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadReport {
    /// Layer.
    pub layer: usize,
    /// Head.
    pub head: usize,
    /// Highest multiples, highest first.
    pub top: Vec<AttentionHit>,
    /// Lowest multiples, lowest first.
    pub bottom: Vec<AttentionHit>,
    /// Highest multiples received by the option's token.
    pub top_for_token: Vec<AttentionHit>,
    /// A seeded uniform sample of the hits above average (multiple > 1).
    pub random_above: Vec<AttentionHit>,
    /// Query rows seen.
    pub rows: u64,
    /// Mean over rows of the largest multiple (higher = more concentrated).
    pub mean_max_multiple: f32,
    /// Mean over rows of the attention entropy in nats (lower = more concentrated).
    pub mean_entropy: f32,
}

/// The scan's state over all heads; feed texts with [`HeadScan::add`], read with
/// [`HeadScan::report`] and [`HeadScan::ranking`].
#[derive(Debug)]
pub struct HeadScan {
    options: HeadScanOptions,
    n_layers: usize,
    n_heads: usize,
    heads: Vec<HeadState>,
    texts: Vec<Vec<u32>>,
    rng: StdRng,
    /// Per detector, the sum over scored texts of every head's score.
    detector_sums: Vec<Vec<f64>>,
    /// Texts the detectors scored (those of at least 2 tokens with attention left to score).
    detector_texts: usize,
}

impl HeadScan {
    /// An empty scan for `model`'s heads.
    pub fn new(model: &Gpt2, options: HeadScanOptions) -> Self {
        let (n_layers, n_heads) = (model.config.n_layer, model.config.n_head);
        Self {
            rng: StdRng::seed_from_u64(options.seed),
            detector_sums: vec![vec![0.0; n_layers * n_heads]; options.detectors.len()],
            detector_texts: 0,
            options,
            n_layers,
            n_heads,
            heads: vec![HeadState::default(); n_layers * n_heads],
            texts: Vec::new(),
        }
    }

    /// Query rows scored so far per head (queries with at least one key; with
    /// `suppress_first`, a text's first query has none). Zero means no head has a score.
    pub fn rows_scored(&self) -> u64 {
        self.heads.first().map_or(0, |h| h.rows)
    }

    /// The token ids of every text scanned so far (for showing a hit's context).
    pub fn texts(&self) -> &[Vec<u32>] {
        &self.texts
    }

    /// Scans one text: one forward pass whose attention patterns are reduced into the
    /// summaries layer by layer.
    ///
    /// # Errors
    /// An empty or too long text, and forward errors.
    pub fn add(&mut self, model: &Gpt2, ids: &[u32]) -> Result<()> {
        let text = self.texts.len();
        let detector = (ids.len() >= 2 && !self.options.detectors.is_empty()).then(|| {
            Detector::new(
                self.n_layers,
                self.n_heads,
                ids,
                &self.options.detectors,
                self.options.detect,
            )
        });
        let mut detector = detector;
        let mut hooks = OnPattern(|layer, pattern: &[f32], t| {
            self.absorb(layer, text, ids, pattern, t);
            if let Some(d) = detector.as_mut() {
                d.absorb(layer, pattern);
            }
        });
        model.forward(&TokenBatch::single(ids)?, None, &mut hooks)?;
        if let Some(scores) = detector.and_then(Detector::finish) {
            for (sum, table) in self.detector_sums.iter_mut().zip(scores) {
                for (a, b) in sum.iter_mut().zip(table) {
                    *a += f64::from(b);
                }
            }
            self.detector_texts += 1;
        }
        self.texts.push(ids.to_vec());
        Ok(())
    }

    /// Every head's score for each of the options' detectors, averaged over the texts scored
    /// so far (texts of one token, or with nothing left after the exclusions, are not scored):
    /// `(pattern, [n_layers × n_heads])`, or empty tables when no text was scored.
    pub fn detector_scores(&self) -> Vec<(HeadPattern, Vec<f32>)> {
        let n = self.detector_texts as f64;
        self.options
            .detectors
            .iter()
            .zip(&self.detector_sums)
            .map(|(p, sum)| {
                let table = if self.detector_texts == 0 {
                    Vec::new()
                } else {
                    sum.iter().map(|x| (x / n) as f32).collect()
                };
                (*p, table)
            })
            .collect()
    }

    /// Texts the detectors scored.
    pub fn detector_texts(&self) -> usize {
        self.detector_texts
    }

    fn absorb(&mut self, layer: usize, text: usize, ids: &[u32], pattern: &[f32], t: usize) {
        let opts = self.options.clone();
        let is_token: Vec<bool> = ids.iter().map(|&i| Some(i) == opts.token).collect();
        for h in 0..self.n_heads {
            let state = &mut self.heads[layer * self.n_heads + h];
            for q in 0..t {
                let row = &pattern[(h * t + q) * t..(h * t + q) * t + q + 1];
                let multiples = row_multiples(row, opts.suppress_first);
                if multiples.is_empty() {
                    continue;
                }
                state.rows += 1;
                let mut max_m = 0.0f32;
                let mut entropy = 0.0f64;
                for &(key, weight, multiple) in &multiples {
                    max_m = max_m.max(multiple);
                    if weight > 0.0 {
                        entropy -= f64::from(weight) * f64::from(weight).ln();
                    }
                    let hit = AttentionHit {
                        text,
                        query: q,
                        key,
                        weight,
                        multiple,
                    };
                    state.top.offer(hit, opts.n, higher);
                    state.bottom.offer(hit, opts.n, lower);
                    if is_token[key] {
                        state.token.offer(hit, opts.n, higher);
                    }
                    if multiple > 1.0 {
                        state.above_seen += 1;
                        if state.random.len() < opts.n {
                            state.random.push(hit);
                        } else if opts.n > 0 {
                            let j = self.rng.random_range(0..state.above_seen);
                            if (j as usize) < opts.n {
                                state.random[j as usize] = hit;
                            }
                        }
                    }
                }
                state.sum_max_multiple += f64::from(max_m);
                state.sum_entropy += entropy;
            }
        }
    }

    /// The report of one head.
    ///
    /// # Errors
    /// A layer or head outside the model.
    pub fn report(&self, layer: usize, head: usize) -> Result<HeadReport> {
        let shape = format!(
            "the model has {} layers × {} heads",
            self.n_layers, self.n_heads
        );
        if layer >= self.n_layers {
            return Err(Error::OutOfRange {
                what: "layer",
                value: layer,
                limit: shape,
            });
        }
        if head >= self.n_heads {
            return Err(Error::OutOfRange {
                what: "head",
                value: head,
                limit: shape,
            });
        }
        let s = &self.heads[layer * self.n_heads + head];
        let rows = s.rows.max(1) as f64;
        let mut random = s.random.clone();
        random.sort_by_key(|h| (h.text, h.query, h.key));
        Ok(HeadReport {
            layer,
            head,
            top: s.top.hits.clone(),
            bottom: s.bottom.hits.clone(),
            top_for_token: s.token.hits.clone(),
            random_above: random,
            rows: s.rows,
            mean_max_multiple: (s.sum_max_multiple / rows) as f32,
            mean_entropy: (s.sum_entropy / rows) as f32,
        })
    }

    /// Every head ranked by concentration: highest mean maximum multiple first, as
    /// `(layer, head, mean max multiple, mean entropy)`.
    pub fn ranking(&self) -> Vec<(usize, usize, f32, f32)> {
        let mut out: Vec<(usize, usize, f32, f32)> = (0..self.n_layers)
            .flat_map(|l| (0..self.n_heads).map(move |h| (l, h)))
            .map(|(l, h)| {
                let r = self.report(l, h).expect("in range");
                (l, h, r.mean_max_multiple, r.mean_entropy)
            })
            .collect();
        out.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        out
    }
}
