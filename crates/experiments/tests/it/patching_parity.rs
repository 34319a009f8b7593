//! Patching sweeps against TransformerLens's `patching` module on the tiny fixture
//! (`scripts/reference/patching_reference.py`), on every backend.

use crate::common;
use common::{ids, root, tiny};

use burn::tensor::Tensor;
use burnlens_experiments::{Engine, PatchResult, Sweep, patch_sweep, patch_sweep_with};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_metrics::{last_position, logit_diff};
use burnlens_model::weights::read_safetensors;
use burnlens_model::{TokenBatch, available_devices};
use serde_json::Value;

fn rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

#[test]
fn sweeps_match_transformer_lens_on_every_backend() {
    let dir = root().join("fixtures/reference/tiny-gpt2");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("patching.json")).unwrap()).unwrap();
    let want = read_safetensors(&dir.join("patching.safetensors")).unwrap();
    let clean = TokenBatch::new(rows(&json["clean"]), None).unwrap();
    let corrupted = TokenBatch::new(rows(&json["corrupted"]), None).unwrap();
    let (answer, foil) = (ids(&json["answer"]), ids(&json["foil"]));
    let metric = |logits: Tensor<3>| -> Tensor<1> {
        logit_diff(last_position(logits), &answer, &foil)
            .unwrap()
            .mean()
    };
    let sweeps = [
        ("resid_pre", Sweep::RESID_PRE),
        ("resid_mid", Sweep::RESID_MID),
        ("attn_out", Sweep::ATTN_OUT),
        ("mlp_out", Sweep::MLP_OUT),
        ("head_out_all_pos", Sweep::HEAD_OUT_ALL_POS),
        ("head_q_all_pos", Sweep::HEAD_Q_ALL_POS),
        ("head_k_all_pos", Sweep::HEAD_K_ALL_POS),
        ("head_v_all_pos", Sweep::HEAD_V_ALL_POS),
        ("head_pattern_all_pos", Sweep::HEAD_PATTERN_ALL_POS),
        ("head_out_by_pos", Sweep::HEAD_OUT_BY_POS),
        ("head_pattern_by_pos", Sweep::HEAD_PATTERN_BY_POS),
    ];
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        let (clean_logits, cache) = run_with_cache(&model, &clean, Selector::all()).unwrap();
        let clean_metric = json["clean_metric"].as_f64().unwrap() as f32;
        assert!((metric(clean_logits).into_scalar::<f32>() - clean_metric).abs() < 1e-4);
        for (name, sweep) in sweeps {
            let got: PatchResult = patch_sweep_with(
                &model,
                &corrupted,
                &cache,
                sweep,
                &metric,
                Engine::Naive,
                &mut |_, _| {},
            )
            .unwrap();
            let w = &want[name];
            assert_eq!(got.shape, w.shape, "{kind} {name}: shape");
            let d = got
                .values
                .iter()
                .zip(&w.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d <= 1e-4, "{kind} {name}: max abs diff {d}");
            // The default (batched) engine against TransformerLens directly, too.
            let fast = patch_sweep(&model, &corrupted, &cache, sweep, &metric).unwrap();
            let d = fast
                .values
                .iter()
                .zip(&w.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d <= 1e-4, "{kind} {name} (batched): max abs diff {d}");
        }
        // The corruption matters somewhere (the sweep is not flat at the clean value), and
        // results index as TransformerLens's tensors do.
        let r = patch_sweep(&model, &corrupted, &cache, Sweep::RESID_PRE, &metric).unwrap();
        assert!(r.values.iter().any(|v| (v - clean_metric).abs() > 1e-3));
        assert_eq!(r.get(&[0, 9]), None);
        assert_eq!(r.get(&[1, 2]), Some(r.values[6 + 2]));
    }
}

#[test]
fn mismatched_runs_and_missing_cache_entries_are_errors() {
    let device = available_devices()[0].1.clone();
    let model = tiny(&device);
    let clean = TokenBatch::new(vec![vec![1, 2, 3, 4]], None).unwrap();
    let longer = TokenBatch::new(vec![vec![1, 2, 3, 4, 5]], None).unwrap();
    let (_, cache) = run_with_cache(&model, &clean, Selector::kind("resid_pre")).unwrap();
    let metric = |l: Tensor<3>| l.sum();
    let err = patch_sweep(&model, &longer, &cache, Sweep::RESID_PRE, &metric)
        .unwrap_err()
        .to_string();
    assert!(err.contains("same length"), "{err}");
    let err = patch_sweep(&model, &clean, &cache, Sweep::ATTN_OUT, &metric)
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.0.hook_attn_out"), "{err}");
    // An unknown site names itself.
    let nonsense = Sweep {
        kind: "resid_sideways",
        index: burnlens_experiments::PatchIndex::LayerPos,
    };
    let err = patch_sweep(&model, &clean, &cache, nonsense, &metric)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resid_sideways"), "{err}");
    // An answer id outside the vocabulary is caught before any sweep runs.
    let logits = model.logits(&clean).unwrap();
    let err = burnlens_experiments::NormalizedLogitDiff::new(
        &[999_999],
        &[1],
        logits.clone(),
        logits.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("999999"), "{err}");
    // Equal clean and corrupted runs leave nothing to normalize by.
    let err = burnlens_experiments::NormalizedLogitDiff::new(&[1], &[2], logits.clone(), logits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("degenerate") || err.contains("equal"), "{err}");
}
