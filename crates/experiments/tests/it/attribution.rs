//! Attribution patching against central finite differences of exact patching: patching in
//! `corrupted + ε (clean − corrupted)` and `corrupted − ε (clean − corrupted)` with the naive
//! engine and dividing the metric's change by 2ε gives the directional derivative that
//! attribution patching computes by autodiff, site by site, for every sweep shape.

use crate::common;
use common::tiny;

use burn::tensor::Tensor;
use burnlens_experiments::{
    Engine, LastPosition, PatchOptions, Sweep, attribution_patch, patch_sweep_with, pearson,
};
use burnlens_hooks::{Act, ActivationCache, Selector, run_with_cache};
use burnlens_metrics::{last_position, logit_diff};
use burnlens_model::{TokenBatch, available_devices};

/// `corrupted + t (clean − corrupted)` at every cached point.
fn interpolate(clean: &ActivationCache, corrupt: &ActivationCache, t: f32) -> ActivationCache {
    let mut out = ActivationCache::default();
    for p in clean.points() {
        let (c, x) = (clean.get(p).unwrap(), corrupt.get(p).unwrap());
        let v = match (c, x) {
            (Act::R3(c), Act::R3(x)) => Act::R3(x.clone() + (c.clone() - x.clone()) * t),
            (Act::R4(c), Act::R4(x)) => Act::R4(x.clone() + (c.clone() - x.clone()) * t),
            _ => unreachable!(),
        };
        out.insert(p, v);
    }
    out
}

#[test]
fn attribution_equals_finite_differences_of_exact_patching() {
    let sweeps = [
        Sweep::RESID_PRE,
        Sweep::ATTN_OUT,
        Sweep::MLP_OUT,
        Sweep::HEAD_OUT_ALL_POS,
        Sweep::HEAD_OUT_BY_POS,
        Sweep::HEAD_V_ALL_POS,
        Sweep::HEAD_PATTERN_BY_POS,
    ];
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        let clean = TokenBatch::new(
            vec![vec![5, 17, 99, 240, 31, 8], vec![61, 3, 140, 9, 12, 310]],
            None,
        )
        .unwrap();
        let corrupted = TokenBatch::new(
            vec![vec![5, 17, 98, 240, 31, 8], vec![61, 3, 140, 9, 500, 310]],
            None,
        )
        .unwrap();
        let (answer, foil) = ([20u32, 30], [21u32, 33]);
        let metric = LastPosition::new(|l: Tensor<3>| {
            Ok(logit_diff(last_position(l), &answer, &foil)?.mean())
        });
        let all = Selector::every();
        let (_, clean_cache) = run_with_cache(&model, &clean, all.clone()).unwrap();
        let (_, corrupt_cache) = run_with_cache(&model, &corrupted, all).unwrap();
        let attr = attribution_patch(&model, &corrupted, &clean_cache, &sweeps, &metric).unwrap();
        let eps = 0.02;
        let plus = interpolate(&clean_cache, &corrupt_cache, eps);
        let minus = interpolate(&clean_cache, &corrupt_cache, -eps);
        for (sweep, a) in sweeps.iter().zip(&attr) {
            let run = |cache: &ActivationCache| {
                patch_sweep_with(
                    &model,
                    &corrupted,
                    cache,
                    *sweep,
                    &metric,
                    &PatchOptions::default().engine(Engine::Naive),
                )
                .unwrap()
            };
            let (p, m) = (run(&plus), run(&minus));
            assert_eq!(a.shape, p.shape, "{kind} {sweep:?}");
            let scale = a.values.iter().fold(0.0f32, |s, v| s.max(v.abs()));
            assert!(scale > 1e-3, "{kind} {sweep:?}: attributions are all zero");
            for (i, (&got, (&hi, &lo))) in a
                .values
                .iter()
                .zip(p.values.iter().zip(&m.values))
                .enumerate()
            {
                let fd = (hi - lo) / (2.0 * eps);
                assert!(
                    (got - fd).abs() <= 2e-3 + 0.02 * fd.abs(),
                    "{kind} {sweep:?} [{i}]: attribution {got} vs finite difference {fd}"
                );
            }
        }
    }
}

#[test]
fn pearson_is_the_sample_correlation() {
    // Closed form: a perfect line, its reverse, and a hand-computed case.
    assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
    assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    // x = [1, 2, 3, 4], y = [1, 3, 2, 4]: Σdxdy = 4, Σdx² = Σdy² = 5, r = 0.8.
    assert!((pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12);
    assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
}
