//! The batched patching engine against the naive one-forward-per-patch engine, on every sweep
//! and backend: with several prompts per batch, with padding, with metrics that read every
//! position or only the last, and with chunks smaller than a sweep.

use crate::common;
use common::tiny;

use burn::tensor::Tensor;
use burnlens_experiments::{
    Engine, LastPosition, NormalizedLogitDiff, PatchMetric, PatchOptions, Sweep, patch_sweep_with,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_metrics::{last_position, logit_diff};
use burnlens_model::{Gpt2, PaddingSide, TokenBatch, available_devices};

const SWEEPS: [Sweep; 16] = [
    Sweep::RESID_PRE,
    Sweep::RESID_MID,
    Sweep::RESID_POST,
    Sweep::ATTN_OUT,
    Sweep::MLP_OUT,
    Sweep::HEAD_OUT_ALL_POS,
    Sweep::HEAD_Q_ALL_POS,
    Sweep::HEAD_K_ALL_POS,
    Sweep::HEAD_V_ALL_POS,
    Sweep::HEAD_PATTERN_ALL_POS,
    Sweep::HEAD_OUT_BY_POS,
    Sweep::HEAD_Q_BY_POS,
    Sweep::HEAD_K_BY_POS,
    Sweep::HEAD_V_BY_POS,
    Sweep::HEAD_PATTERN_BY_POS,
    Sweep::RESID_PRE,
];

/// Max |batched − naive| over every sweep.
fn compare(
    model: &Gpt2,
    clean: &TokenBatch,
    corrupted: &TokenBatch,
    metric: &dyn PatchMetric,
    max_rows: usize,
) -> f32 {
    let (_, cache) = run_with_cache(model, clean, Selector::every()).unwrap();
    let mut worst = 0.0f32;
    for sweep in SWEEPS {
        let run = |engine| {
            patch_sweep_with(
                model,
                corrupted,
                &cache,
                sweep,
                metric,
                &PatchOptions::default().engine(engine),
            )
            .unwrap()
        };
        let naive = run(Engine::Naive);
        let fast = run(Engine::Batched { max_rows });
        assert_eq!(naive.shape, fast.shape, "{sweep:?}");
        let d = naive
            .values
            .iter()
            .zip(&fast.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d.is_finite(), "{sweep:?}: non-finite values");
        // The patches must matter, or the comparison would prove nothing.
        let spread = naive.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(spread > 1e-3, "{sweep:?}: the sweep is flat");
        worst = worst.max(d);
    }
    worst
}

#[test]
fn batched_engine_equals_the_naive_engine_on_every_backend() {
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        // Two prompt pairs in one batch, unpadded.
        let clean = TokenBatch::new(
            vec![
                vec![5, 17, 99, 240, 31, 8, 77],
                vec![61, 3, 140, 9, 12, 310, 44],
            ],
            None,
        )
        .unwrap();
        let corrupted = TokenBatch::new(
            vec![
                vec![5, 17, 99, 241, 31, 8, 77],
                vec![61, 3, 140, 9, 500, 310, 44],
            ],
            None,
        )
        .unwrap();
        let (answer, foil) = ([20u32, 30], [21u32, 33]);
        let last = LastPosition::new(|logits: Tensor<3>| {
            Ok(logit_diff(last_position(logits), &answer, &foil)?.mean())
        });
        let d = compare(&model, &clean, &corrupted, &last, 128);
        assert!(d <= 1e-5, "{kind}: last-position metric, max diff {d}");
        if kind == burnlens_model::BackendKind::Wgpu {
            // lavapipe is ~100× slower than the CPU backends; the metric and chunking
            // variants below exercise no backend-specific code.
            continue;
        }
        // A metric of every position (mean log-softmax entropy proxy), in small chunks.
        let every = |logits: Tensor<3>| -> burnlens_experiments::Result<Tensor<1>> {
            Ok(burn::tensor::activation::log_softmax(logits, 2)
                .slice([0..2, 0..7, 20..21])
                .mean()
                .reshape([1]))
        };
        let d = compare(&model, &clean, &corrupted, &every, 6);
        assert!(d <= 1e-5, "{kind}: every-position metric, max diff {d}");
        // The normalized score the reports use.
        let norm = NormalizedLogitDiff::new(
            &answer,
            &foil,
            model.logits(&clean).unwrap(),
            model.logits(&corrupted).unwrap(),
        )
        .unwrap();
        let d = compare(&model, &clean, &corrupted, &norm, 40);
        assert!(d <= 1e-5, "{kind}: normalized metric, max diff {d}");
    }
}

#[test]
fn batched_engine_equals_the_naive_engine_with_padding() {
    let device = available_devices()[0].1.clone();
    let model = tiny(&device);
    for side in [PaddingSide::Left, PaddingSide::Right] {
        let clean =
            TokenBatch::padded(&[vec![5, 17, 99, 240, 31, 8], vec![61, 3, 140, 9]], 0, side)
                .unwrap();
        let corrupted = TokenBatch::padded(
            &[vec![5, 17, 98, 240, 31, 8], vec![61, 300, 140, 9]],
            0,
            side,
        )
        .unwrap();
        let every = |logits: Tensor<3>| -> burnlens_experiments::Result<Tensor<1>> {
            Ok(logits.slice([0..2, 0..6, 20..24]).mean().reshape([1]))
        };
        let d = compare(&model, &clean, &corrupted, &every, 16);
        assert!(d <= 1e-5, "{side:?} padding: max diff {d}");
    }
}
