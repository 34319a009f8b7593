//! Attention-head analysis against brute force: every multiple computed directly from the
//! cached `attn.hook_pattern`, sorted, for the top, bottom and token lists, the row counts and
//! the concentration statistics; the summaries stay bounded however many texts are scanned.

use crate::common;
use common::tiny;

use burnlens_experiments::{AttentionHit, HeadScan, HeadScanOptions, row_multiples};
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
