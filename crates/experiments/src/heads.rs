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
//!
//! A text's summary ([`TextScan`], from [`HeadScan::scan`]) is a value of its own, and
//! [`HeadScan::absorb`] merges summaries: scanning texts in several processes and absorbing
//! their summaries in text order gives exactly the numbers one process scanning them all gives
//! (what `cargo xtask heads --shard` relies on). The random samples are therefore not a
//! reservoir drawn from one random stream but the `n` hits with the smallest [`hit_rank`], a
//! seeded hash of the hit's coordinates: a uniform sample without replacement whatever order
//! or grouping the texts come in.

use burnlens_model::{Gpt2, TokenBatch};
use serde::{Deserialize, Serialize};

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
    /// Keep the lists (top, bottom, token, random) of this `(layer, head)` only; every head's
    /// concentration and detector scores are still computed. `None`: every head's lists
    /// (`n_layers × n_heads × 4n` hits per text summary).
    pub focus: Option<(usize, usize)>,
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
            focus: None,
        }
    }
}

/// One attention weight: text, query and key positions, the weight and its multiple of the
/// row's average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

/// A bounded list keeping the `n` best hits under `better` (the earlier of equal ones).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
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

/// The rank of a hit in the random samples: a hash of the seed and the hit's coordinates
/// (splitmix64's finalizer over each in turn). Each head's sample is the `n` hits above average
/// with the smallest rank: a uniform sample without replacement that does not depend on the
/// order or grouping in which texts are scanned.
pub fn hit_rank(
    seed: u64,
    text: usize,
    layer: usize,
    head: usize,
    query: usize,
    key: usize,
) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    [text, layer, head, query, key]
        .into_iter()
        .fold(mix(seed), |h, x| mix(h ^ x as u64))
}

/// A hit of a random sample with its rank ([`hit_rank`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankedHit {
    /// [`hit_rank`] of the hit.
    pub rank: u64,
    /// The hit.
    pub hit: AttentionHit,
}

/// One head's summary of one text, or of every text absorbed so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeadSummary {
    top: Best,
    bottom: Best,
    token: Best,
    /// The hits above average with the smallest ranks, smallest first.
    random: Vec<RankedHit>,
    rows: u64,
    sum_max_multiple: f64,
    sum_entropy: f64,
}

impl HeadSummary {
    fn offer_random(&mut self, hit: RankedHit, n: usize) {
        if n == 0 || (self.random.len() == n && hit.rank >= self.random[n - 1].rank) {
            return;
        }
        let at = self.random.partition_point(|h| h.rank <= hit.rank);
        self.random.insert(at, hit);
        self.random.truncate(n);
    }

    /// Adds `other`'s hits and sums (a later text's) to this summary.
    fn merge(&mut self, other: &HeadSummary, n: usize) {
        for &h in &other.top.hits {
            self.top.offer(h, n, higher);
        }
        for &h in &other.bottom.hits {
            self.bottom.offer(h, n, lower);
        }
        for &h in &other.token.hits {
            self.token.offer(h, n, higher);
        }
        for &h in &other.random {
            self.offer_random(h, n);
        }
        self.rows += other.rows;
        self.sum_max_multiple += other.sum_max_multiple;
        self.sum_entropy += other.sum_entropy;
    }
}

/// The summary of one text: every head's, and its detector scores. Serializable, so that texts
/// scanned elsewhere (another process, an earlier run) can be [`HeadScan::absorb`]ed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextScan {
    /// The text's index (its hits carry it).
    pub text: usize,
    /// The text's token ids (for showing a hit's context).
    pub ids: Vec<u32>,
    /// Per head, `layer × n_heads + head`.
    pub heads: Vec<HeadSummary>,
    /// Per detector, every head's score on this text (`None`: not scored: one token, or no
    /// attention left after the exclusions).
    pub detector_scores: Option<Vec<Vec<f32>>>,
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
    /// A seeded uniform sample of the hits above average (multiple > 1): those with the
    /// smallest [`hit_rank`], in text, query and key order.
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
    heads: Vec<HeadSummary>,
    texts: Vec<Vec<u32>>,
    /// Per detector, the sum over scored texts of every head's score.
    detector_sums: Vec<Vec<f64>>,
    /// Texts the detectors scored (those of at least 2 tokens with attention left to score).
    detector_texts: usize,
}

impl HeadScan {
    /// An empty scan for `model`'s heads.
    pub fn new(model: &Gpt2, options: HeadScanOptions) -> Self {
        Self::with_shape(model.config.n_layer, model.config.n_head, options)
    }

    /// An empty scan for a model of `n_layers` layers of `n_heads` heads, to absorb summaries
    /// scanned elsewhere ([`HeadScan::absorb`]).
    pub fn with_shape(n_layers: usize, n_heads: usize, options: HeadScanOptions) -> Self {
        Self {
            detector_sums: vec![vec![0.0; n_layers * n_heads]; options.detectors.len()],
            detector_texts: 0,
            options,
            n_layers,
            n_heads,
            heads: vec![HeadSummary::default(); n_layers * n_heads],
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

    /// Scans one text and absorbs it: [`HeadScan::scan`] as text number
    /// [`HeadScan::texts`]`.len()`, then [`HeadScan::absorb`].
    ///
    /// # Errors
    /// An empty or too long text, and forward errors.
    pub fn add(&mut self, model: &Gpt2, ids: &[u32]) -> Result<()> {
        let scan = self.scan(model, self.texts.len(), ids)?;
        self.absorb(scan)
    }

    /// Scans one text, numbered `text` (its index in the whole dataset), without changing the
    /// scan: one forward pass whose attention patterns are reduced into the text's summary
    /// layer by layer.
    ///
    /// # Errors
    /// An empty or too long text, and forward errors.
    pub fn scan(&self, model: &Gpt2, text: usize, ids: &[u32]) -> Result<TextScan> {
        let mut detector = (ids.len() >= 2 && !self.options.detectors.is_empty()).then(|| {
            Detector::new(
                self.n_layers,
                self.n_heads,
                ids,
                &self.options.detectors,
                self.options.detect,
            )
        });
        let mut heads = vec![HeadSummary::default(); self.n_layers * self.n_heads];
        let mut hooks = OnPattern(|layer, pattern: &[f32], t| {
            self.summarize(&mut heads, layer, text, ids, pattern, t);
            if let Some(d) = detector.as_mut() {
                d.absorb(layer, pattern);
            }
        });
        model.forward(&TokenBatch::single(ids)?, None, &mut hooks)?;
        Ok(TextScan {
            text,
            ids: ids.to_vec(),
            heads,
            detector_scores: detector.and_then(Detector::finish),
        })
    }

    /// Adds a text's summary (from [`HeadScan::scan`] of this model, here or in another
    /// process) to the scan. Absorbing the summaries of texts in the order of their numbers
    /// gives the same numbers whichever processes scanned them.
    ///
    /// # Errors
    /// A summary of another model's shape (heads or detectors).
    pub fn absorb(&mut self, scan: TextScan) -> Result<()> {
        let n = self.n_layers * self.n_heads;
        let bad_detectors = scan.detector_scores.as_ref().is_some_and(|d| {
            d.len() != self.options.detectors.len() || d.iter().any(|t| t.len() != n)
        });
        if scan.heads.len() != n || bad_detectors {
            return Err(Error::Shape {
                what: format!("the summary of text {}", scan.text),
                got: vec![scan.heads.len()],
                expected: format!(
                    "{n} heads ({} layers × {} heads) and {} detectors",
                    self.n_layers,
                    self.n_heads,
                    self.options.detectors.len()
                ),
            });
        }
        for (state, head) in self.heads.iter_mut().zip(&scan.heads) {
            state.merge(head, self.options.n);
        }
        if let Some(scores) = scan.detector_scores {
            for (sum, table) in self.detector_sums.iter_mut().zip(scores) {
                for (a, b) in sum.iter_mut().zip(table) {
                    *a += f64::from(b);
                }
            }
            self.detector_texts += 1;
        }
        self.texts.push(scan.ids);
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

    /// Reduces one layer's pattern `[heads, t, t]` of text `text` into `heads`.
    fn summarize(
        &self,
        heads: &mut [HeadSummary],
        layer: usize,
        text: usize,
        ids: &[u32],
        pattern: &[f32],
        t: usize,
    ) {
        let opts = &self.options;
        let is_token: Vec<bool> = ids.iter().map(|&i| Some(i) == opts.token).collect();
        for h in 0..self.n_heads {
            let lists = opts.focus.is_none_or(|f| f == (layer, h));
            let state = &mut heads[layer * self.n_heads + h];
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
                    if !lists {
                        continue;
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
                        let rank = hit_rank(opts.seed, text, layer, h, q, key);
                        state.offer_random(RankedHit { rank, hit }, opts.n);
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
        let mut random: Vec<AttentionHit> = s.random.iter().map(|r| r.hit).collect();
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
