//! Patching sweeps against TransformerLens's `patching` module on the tiny fixture
//! (`scripts/reference/patching_reference.py`), on every backend.

use crate::common;
use common::{ids, root, tiny};

use burn::tensor::Tensor;
use burnlens_experiments::{
    Engine, PatchOptions, PatchResult, Sweep, patch_sweep, patch_sweep_with,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_metrics::{MetricError, last_position, logit_diff};
use burnlens_model::weights::read_safetensors;
use burnlens_model::{HookKind, TokenBatch, available_devices};
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
    let metric = |logits: Tensor<3>| -> Result<Tensor<1>, MetricError> {
        Ok(logit_diff(last_position(logits), &answer, &foil)?.mean())
    };
    // The sweeps the reference has, by TransformerLens's names.
    let sweeps = Sweep::parse_list(
        "resid_pre,resid_mid,attn_out,mlp_out,head_all_pos_every,head_out_by_pos,head_pattern_by_pos",
    )
    .unwrap();
    assert_eq!(sweeps.len(), 11);
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        let (clean_logits, cache) = run_with_cache(&model, &clean, Selector::all()).unwrap();
        let clean_metric = json["clean_metric"].as_f64().unwrap() as f32;
        assert!((metric(clean_logits).unwrap().into_scalar::<f32>() - clean_metric).abs() < 1e-4);
        for &sweep in &sweeps {
            let name = sweep.name().unwrap();
            let got: PatchResult = patch_sweep_with(
                &model,
                &corrupted,
                &cache,
                sweep,
                &metric,
                &PatchOptions::default().engine(Engine::Naive),
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
    let (_, cache) = run_with_cache(&model, &clean, Selector::kind(HookKind::ResidPre)).unwrap();
    let metric = |l: Tensor<3>| Ok::<_, MetricError>(l.sum());
    let err = patch_sweep(&model, &longer, &cache, Sweep::RESID_PRE, &metric)
        .unwrap_err()
        .to_string();
    assert!(err.contains("same length"), "{err}");
    let err = patch_sweep(&model, &clean, &cache, Sweep::ATTN_OUT, &metric)
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.0.hook_attn_out"), "{err}");
    // A sweep of a kind outside the blocks names the kind; an unknown sweep name lists the
    // names there are.
    let nonsense = Sweep {
        kind: HookKind::Embed,
        index: burnlens_experiments::PatchIndex::LayerPos,
    };
    assert_eq!(nonsense.to_string(), "embed by layer × pos");
    let err = patch_sweep(&model, &clean, &cache, nonsense, &metric)
        .unwrap_err()
        .to_string();
    assert!(err.contains("embed") && err.contains("no layer"), "{err}");
    let err = Sweep::parse_list("resid_pre, resid_sideways")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("resid_sideways") && err.contains("head_out_by_pos"),
        "{err}"
    );
    for (name, sweep) in Sweep::NAMED {
        assert_eq!(name.parse::<Sweep>().unwrap(), sweep);
        assert_eq!(sweep.to_string(), name);
    }
    assert_eq!(
        Sweep::parse_list("block_every").unwrap(),
        Sweep::BLOCK_EVERY.to_vec()
    );
    // A metric's own error stops the sweep and is returned, named as the metric's.
    let failing = |_: Tensor<3>| -> Result<Tensor<1>, std::io::Error> {
        Err(std::io::Error::other("no answer token in this vocabulary"))
    };
    for engine in [Engine::Naive, Engine::default()] {
        let err = patch_sweep_with(
            &model,
            &clean,
            &cache,
            Sweep::RESID_PRE,
            &failing,
            &PatchOptions::default().engine(engine),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("the metric failed") && err.contains("no answer token"),
            "{engine:?}: {err}"
        );
    }
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
