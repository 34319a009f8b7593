//! Attention-head analysis against brute force: every multiple computed directly from the
//! cached `attn.hook_pattern`, sorted, for the top, bottom and token lists, the row counts and
//! the concentration statistics; the summaries stay bounded however many texts are scanned;
//! the random sample is the brute-force bottom of the documented hash; text summaries scanned
//! apart and absorbed in order give exactly one scan's numbers.

use crate::common;
use common::tiny;

use burnlens_experiments::{
    AttentionHit, HeadPattern, HeadScan, HeadScanOptions, hit_rank, row_multiples,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_model::{Gpt2, HookPoint, TokenBatch, available_devices};

fn texts(n: usize, len: usize) -> Vec<Vec<u32>> {
    let mut x: u64 = 7;
    (0..n)
        .map(|i| {
            (0..len + i % 3)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % 641) as u32
                })
                .collect()
        })
        .collect()
}

/// Every hit of one head over `texts`, straight from the cached pattern.
fn brute(
    model: &Gpt2,
    texts: &[Vec<u32>],
    layer: usize,
    head: usize,
    suppress: bool,
) -> Vec<AttentionHit> {
    let mut out = Vec::new();
    for (text, ids) in texts.iter().enumerate() {
        let point = HookPoint::Pattern(layer);
        let (_, cache) = run_with_cache(
            model,
            &TokenBatch::single(ids).unwrap(),
            Selector::point(point).unwrap(),
        )
        .unwrap();
        let p: Vec<f32> = cache
            .get4(point)
            .unwrap()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let t = ids.len();
        for q in 0..t {
            let row = &p[(head * t + q) * t..(head * t + q) * t + q + 1];
            let start = usize::from(suppress);
            let mass: f32 = if suppress { row[1..].iter().sum() } else { 1.0 };
            let visible = (q + 1 - start) as f32;
            for (key, &w) in row.iter().enumerate().skip(start) {
                let weight = w / mass;
                out.push(AttentionHit {
                    text,
                    query: q,
                    key,
                    weight,
                    multiple: weight * visible,
                });
            }
        }
    }
    out
}

#[test]
fn row_multiples_are_weights_times_visible_keys() {
    let m = row_multiples(&[0.5, 0.3, 0.2], false);
    let want = [(0, 0.5, 1.5), (1, 0.3, 0.9), (2, 0.2, 0.6)];
    for (g, w) in m.iter().zip(want) {
        assert_eq!(g.0, w.0);
        assert!((g.1 - w.1).abs() < 1e-6 && (g.2 - w.2).abs() < 1e-6);
    }
    // Suppressing the first token renormalises over the rest: 0.3/0.5, 0.2/0.5, times 2.
    let m = row_multiples(&[0.5, 0.3, 0.2], true);
    assert_eq!(m.len(), 2);
    assert!((m[0].2 - 1.2).abs() < 1e-6 && (m[1].2 - 0.8).abs() < 1e-6);
    assert!(row_multiples(&[1.0], true).is_empty());
}

#[test]
fn head_scan_matches_brute_force_and_stays_bounded() {
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        let batch = texts(4, 9);
        for suppress in [false, true] {
            let token = batch[1][3];
            let opts = HeadScanOptions {
                n: 6,
                suppress_first: suppress,
                token: Some(token),
                seed: 5,
                ..HeadScanOptions::default()
            };
            let mut scan = HeadScan::new(&model, opts);
            for ids in &batch {
                scan.add(&model, ids).unwrap();
            }
            for (layer, head) in [(0, 0), (1, 3)] {
                let r = scan.report(layer, head).unwrap();
                let mut all = brute(&model, &batch, layer, head, suppress);
                let rows: usize = batch.iter().map(|t| t.len() - usize::from(suppress)).sum();
                assert_eq!(r.rows as usize, rows, "{kind}");
                all.sort_by(|a, b| b.multiple.total_cmp(&a.multiple));
                let close = |a: &[AttentionHit], b: &[AttentionHit]| {
                    a.len() == b.len()
                        && a.iter()
                            .zip(b)
                            .all(|(x, y)| (x.multiple - y.multiple).abs() <= 1e-4)
                };
                assert!(close(&r.top, &all[..6]), "{kind} L{layer}H{head} top");
                let mut low = all.clone();
                low.reverse();
                assert!(close(&r.bottom, &low[..6]), "{kind} L{layer}H{head} bottom");
                let for_token: Vec<AttentionHit> = all
                    .iter()
                    .filter(|h| batch[h.text][h.key] == token)
                    .copied()
                    .take(6)
                    .collect();
                assert!(close(&r.top_for_token, &for_token), "{kind} token");
                // Each hit is what the pattern says at its coordinates.
                for h in r.top.iter().chain(&r.random_above) {
                    let b = all
                        .iter()
                        .find(|x| (x.text, x.query, x.key) == (h.text, h.query, h.key))
                        .unwrap();
                    assert!((b.multiple - h.multiple).abs() <= 1e-4);
                }
                assert!(r.random_above.iter().all(|h| h.multiple > 1.0));
                assert_eq!(
                    r.random_above.len(),
                    6.min(all.iter().filter(|h| h.multiple > 1.0).count())
                );
                // The sample: the six hits above average with the smallest seeded hash.
                let mut above: Vec<(u64, (usize, usize, usize))> = all
                    .iter()
                    .filter(|h| h.multiple > 1.0)
                    .map(|h| {
                        let rank = hit_rank(5, h.text, layer, head, h.query, h.key);
                        (rank, (h.text, h.query, h.key))
                    })
                    .collect();
                above.sort();
                let mut want: Vec<_> = above.iter().take(6).map(|x| x.1).collect();
                want.sort();
                let got: Vec<_> = r
                    .random_above
                    .iter()
                    .map(|h| (h.text, h.query, h.key))
                    .collect();
                assert_eq!(got, want, "{kind} L{layer}H{head} random sample");
                // Concentration: the mean over rows of the row's largest multiple.
                let mut maxes = std::collections::BTreeMap::new();
                for h in &all {
                    let m = maxes.entry((h.text, h.query)).or_insert(0.0f32);
                    *m = m.max(h.multiple);
                }
                let mean = maxes.values().map(|&m| f64::from(m)).sum::<f64>() / maxes.len() as f64;
                assert!(
                    (f64::from(r.mean_max_multiple) - mean).abs() < 1e-4,
                    "{kind}"
                );
            }
            let ranking = scan.ranking();
            assert_eq!(ranking.len(), model.config.n_layer * model.config.n_head);
            assert!(ranking.windows(2).all(|w| w[0].2 >= w[1].2));
        }
        // Many texts: the summaries stay at n entries.
        let mut scan = HeadScan::new(
            &model,
            HeadScanOptions {
                n: 4,
                ..HeadScanOptions::default()
            },
        );
        for ids in texts(60, 6) {
            scan.add(&model, &ids).unwrap();
        }
        let r = scan.report(1, 2).unwrap();
        assert_eq!(
            (r.top.len(), r.bottom.len(), r.random_above.len()),
            (4, 4, 4)
        );
        assert!(scan.report(2, 0).is_err(), "{kind}");
    }
}

#[test]
fn texts_scanned_apart_and_absorbed_in_order_give_one_scans_numbers() {
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        let batch = texts(7, 8);
        let opts = HeadScanOptions {
            n: 3,
            token: Some(batch[2][4]),
            seed: 11,
            detectors: vec![HeadPattern::PreviousToken, HeadPattern::Back(2)],
            ..HeadScanOptions::default()
        };
        let mut one = HeadScan::new(&model, opts.clone());
        for ids in &batch {
            one.add(&model, ids).unwrap();
        }
        // Three "processes" scan the texts k ≡ i (mod 3); their summaries travel as JSON.
        let n = model.config.n_layer;
        let mut merged = HeadScan::with_shape(n, model.config.n_head, opts.clone());
        let mut summaries = Vec::new();
        for i in 0..3 {
            let shard = HeadScan::new(&model, opts.clone());
            for (k, ids) in batch.iter().enumerate().filter(|(k, _)| k % 3 == i) {
                let s = shard.scan(&model, k, ids).unwrap();
                summaries.push((k, serde_json::to_string(&s).unwrap()));
            }
        }
        summaries.sort();
        for (_, json) in summaries {
            merged.absorb(serde_json::from_str(&json).unwrap()).unwrap();
        }
        assert_eq!(merged.ranking(), one.ranking(), "{kind}");
        assert_eq!(merged.detector_scores(), one.detector_scores(), "{kind}");
        assert_eq!(merged.texts(), one.texts(), "{kind}");
        for l in 0..n {
            for h in 0..model.config.n_head {
                assert_eq!(merged.report(l, h).unwrap(), one.report(l, h).unwrap());
            }
        }
        // A summary of another model's shape is refused, naming the text.
        let mut small = HeadScan::with_shape(1, 1, opts.clone());
        let s = one.scan(&model, 0, &batch[0]).unwrap();
        let e = small.absorb(s).unwrap_err().to_string();
        assert!(e.contains("text 0"), "{e}");
        // Focused on one head, the others keep their statistics but no lists.
        let mut focused = HeadScan::new(
            &model,
            HeadScanOptions {
                focus: Some((1, 2)),
                ..opts.clone()
            },
        );
        for ids in &batch {
            focused.add(&model, ids).unwrap();
        }
        assert_eq!(focused.report(1, 2).unwrap(), one.report(1, 2).unwrap());
        assert_eq!(focused.ranking(), one.ranking());
        let other = focused.report(0, 0).unwrap();
        assert!(other.top.is_empty() && other.random_above.is_empty());
        assert_eq!(other.rows, one.report(0, 0).unwrap().rows);
    }
}
