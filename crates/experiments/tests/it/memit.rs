//! MEMIT against an independent PyTorch implementation of its algorithm
//! (`scripts/reference/memit_reference.py`): on the tiny fixture (layer 0, on every backend)
//! and on the organism (spread over layers 0 and 1), every number of the edit — each
//! request's `z` and its optimisation, each layer's keys, current outputs, residuals,
//! `(λ C + K Kᵀ)⁻¹ K` and `ΔW` — and the edited model's NLLs; the exact revert; and the errors.

use crate::common::{floats, host, ids, rel_diff, root};

use burn::tensor::Device;
use burnlens_experiments::{
    Error, MemitConfig, MemitEdit, MomentOptions, RomeRequest, SecondMoment, TargetNll,
    memit_context_templates, memit_edit, second_moment, target_nlls,
};
use burnlens_model::{BackendKind, LoadedModel, TokenBatch, available_devices, load};
use serde_json::Value;

fn reference(fixture: &str) -> Value {
    let path = root().join(format!("fixtures/reference/{fixture}/memit.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn model(fixture: &str, device: &Device) -> LoadedModel {
    load(
        root().join("fixtures").join(fixture).to_str().unwrap(),
        device,
    )
    .unwrap()
}

fn config(r: &Value) -> MemitConfig {
    let h = &r["hparams"];
    let f = |k: &str| h[k].as_f64().unwrap();
    MemitConfig {
        layers: serde_json::from_value(r["layers"].clone()).unwrap(),
        v_num_grad_steps: h["v_num_grad_steps"].as_u64().unwrap() as usize,
        v_lr: f("v_lr"),
        v_weight_decay: f("v_weight_decay"),
        clamp_norm_factor: f("clamp_norm_factor"),
        kl_factor: f("kl_factor"),
        mom2_update_weight: f("mom2_update_weight"),
        ..MemitConfig::gpt2_xl()
    }
}

struct Case {
    r: Value,
    requests: Vec<RomeRequest>,
    templates: Vec<Vec<String>>,
    config: MemitConfig,
}

fn case(fixture: &str) -> Case {
    let r = reference(fixture);
    Case {
        requests: serde_json::from_value(r["requests"].clone()).unwrap(),
        templates: serde_json::from_value(r["templates"].clone()).unwrap(),
        config: config(&r),
        r,
    }
}

fn stats(lm: &LoadedModel, c: &Case) -> Vec<SecondMoment> {
    let texts: Vec<Vec<u32>> = c.r["text_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    c.config
        .layers
        .iter()
        .zip(c.r["counts"].as_array().unwrap())
        .map(|(&l, count)| {
            let s = second_moment(&lm.model, l, &texts, &MomentOptions::default()).unwrap();
            assert_eq!(s.count, count.as_u64().unwrap(), "layer {l}'s token count");
            s
        })
        .collect()
}

/// Compares an edit with the reference, applies it, checks the NLLs and the revert.
fn check(kind: &str, lm: &mut LoadedModel, c: &Case, edit: &MemitEdit) {
    let r = &c.r;
    let close = |name: &str, ours: &[f32], want: &Value, tol: f32| {
        let rel = rel_diff(ours, &floats(want));
        assert!(
            rel <= tol,
            "{kind}: {name}: relative difference {rel} > {tol}"
        );
    };
    for (i, z) in edit.zs.iter().enumerate() {
        close(&format!("z of request {i}"), z, &r["zs"][i], 1e-4);
        let want = r["steps"][i].as_array().unwrap();
        assert_eq!(
            edit.steps[i].len(),
            want.len(),
            "{kind}: request {i}'s steps"
        );
        for (s, (ours, w)) in edit.steps[i].iter().zip(want).enumerate() {
            for (name, v) in [("loss", ours.loss), ("nll", ours.nll), ("kl", ours.kl)] {
                let w = w[name].as_f64().unwrap() as f32;
                assert!(
                    (v - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "{kind}: request {i} step {s} {name}: {v} vs {w}"
                );
            }
        }
    }
    let edited = r["edited"].as_array().unwrap();
    assert_eq!(edit.layers.len(), edited.len());
    for (ours, want) in edit.layers.iter().zip(edited) {
        let l = ours.layer;
        assert_eq!(l as u64, want["layer"].as_u64().unwrap());
        for (i, req) in c.requests.iter().enumerate() {
            let what = |x: &str| format!("layer {l} {x} of {:?}", req.subject);
            close(&what("key"), &ours.keys[i], &want["keys"][i], 1e-4);
            close(
                &what("current z"),
                &ours.current[i],
                &want["current"][i],
                1e-4,
            );
            close(
                &what("residual"),
                &ours.residual[i],
                &want["residual"][i],
                1e-4,
            );
            let adj: Vec<f32> = ours.adj[i].iter().map(|&x| x as f32).collect();
            close(&what("(λC + KKᵀ)⁻¹k"), &adj, &want["adj"][i], 1e-4);
        }
        let norm = ours
            .delta
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        let want_norm = want["delta_norm"].as_f64().unwrap();
        assert!(
            (norm - want_norm).abs() <= 1e-4 * want_norm,
            "{kind}: layer {l} |ΔW| {norm} vs {want_norm}"
        );
        let d_model = ours.residual[0].len();
        close(
            &format!("layer {l} ΔW row 0"),
            &ours.delta[..d_model],
            &want["delta_row0"],
            1e-4,
        );
    }
    // Applied: the NLLs of the reference's edited model; reverted: the model exactly as before.
    let originals: Vec<Vec<f32>> = edit
        .layers
        .iter()
        .map(|l| host(lm.model.blocks[l.layer].mlp.c_proj.weight.val()))
        .collect();
    let probe = TokenBatch::single(&[1, 2, 3]).unwrap();
    let logits_before = host(lm.model.logits(&probe).unwrap());
    let nlls = |lm: &LoadedModel, want: &Value, when: &str| {
        for (i, req) in c.requests.iter().enumerate() {
            let truth = r["targets_true"][i].as_str().unwrap();
            let got = target_nlls(
                &lm.model,
                &lm.tokenizer,
                &[req.filled()],
                &req.target_new,
                truth,
            )
            .unwrap();
            let w: TargetNll = serde_json::from_value(want[i].clone()).unwrap();
            let tol = 1e-4 * w.target_new.abs().max(w.target_true.abs()).max(1.0);
            assert!(
                (got[0].target_new - w.target_new).abs() <= tol
                    && (got[0].target_true - w.target_true).abs() <= tol,
                "{kind}: request {i}'s NLLs {when} the edit: {:?} vs {w:?}",
                got[0]
            );
        }
    };
    nlls(lm, &r["nlls_before"], "before");
    let applied = edit.apply(&mut lm.model).unwrap();
    nlls(lm, &r["nlls_after"], "after");
    applied.revert(&mut lm.model);
    for (l, w) in edit.layers.iter().zip(&originals) {
        assert_eq!(
            &host(lm.model.blocks[l.layer].mlp.c_proj.weight.val()),
            w,
            "{kind}: revert"
        );
    }
    assert_eq!(host(lm.model.logits(&probe).unwrap()), logits_before);
}

#[test]
fn memit_matches_the_pytorch_reference_on_the_tiny_fixture_on_every_backend() {
    let c = case("tiny-gpt2");
    for (kind, device) in available_devices() {
        let mut lm = model("tiny-gpt2", &device);
        let stats = stats(&lm, &c);
        let edit = memit_edit(
            &lm.model,
            &lm.tokenizer,
            &c.requests,
            &c.config,
            &c.templates,
            &stats,
        )
        .unwrap();
        check(&kind.to_string(), &mut lm, &c, &edit);
    }
}

#[test]
fn memit_spread_over_two_layers_matches_the_pytorch_reference_on_the_organism() {
    let c = case("organism");
    assert_eq!(
        c.config.layers,
        [0, 1],
        "the spread over two layers is what is checked"
    );
    let device = BackendKind::Flex.device().unwrap();
    let mut lm = model("organism", &device);
    let stats = stats(&lm, &c);
    let edit = memit_edit(
        &lm.model,
        &lm.tokenizer,
        &c.requests,
        &c.config,
        &c.templates,
        &stats,
    )
    .unwrap();
    check("flex", &mut lm, &c, &edit);
    // The second layer wrote what the first left: half the residual, then all of what remained.
    assert_eq!(edit.layers.len(), 2);
}

#[test]
fn bad_memit_input_is_an_error_naming_it() {
    let c = case("tiny-gpt2");
    let device = BackendKind::Flex.device().unwrap();
    let lm = model("tiny-gpt2", &device);
    let stats = stats(&lm, &c);
    let run = |requests: &[RomeRequest], config: &MemitConfig, stats: &[SecondMoment]| {
        memit_edit(
            &lm.model,
            &lm.tokenizer,
            requests,
            config,
            &c.templates,
            stats,
        )
        .unwrap_err()
        .to_string()
    };
    let fast = MemitConfig {
        v_num_grad_steps: 1,
        ..c.config.clone()
    };
    // A request whose prompt does not hold the subject's place.
    let mut bad = c.requests.clone();
    bad[1].prompt = "Miles Davis plays the".into();
    let e = run(&bad, &fast, &stats);
    assert!(e.contains("request 1") && e.contains("exactly once"), "{e}");
    let e = run(&[], &fast, &stats);
    assert!(e.contains("batch of requests is empty"), "{e}");
    let e = run(
        &c.requests,
        &MemitConfig {
            layers: vec![0, 2],
            ..fast.clone()
        },
        &stats,
    );
    assert!(e.contains("layer 2 is out of range"), "{e}");
    let e = run(
        &c.requests,
        &MemitConfig {
            layers: vec![1, 0],
            ..fast.clone()
        },
        &stats,
    );
    assert!(e.contains("ascending"), "{e}");
    let e = run(
        &c.requests,
        &MemitConfig {
            layers: vec![],
            ..fast.clone()
        },
        &stats,
    );
    assert!(e.contains("edited layers is empty"), "{e}");
    for lambda in [0.0, -1.0, f64::NAN] {
        let e = run(
            &c.requests,
            &MemitConfig {
                mom2_update_weight: lambda,
                ..fast.clone()
            },
            &stats,
        );
        assert!(
            e.contains("mom2_update_weight") && e.contains("positive"),
            "{e}"
        );
    }
    let e = run(
        &c.requests,
        &MemitConfig {
            layers: vec![0, 1],
            ..fast.clone()
        },
        &stats,
    );
    assert!(e.contains("1 missing"), "{e}");
    // A request error is typed, with the request's index.
    let err = memit_edit(&lm.model, &lm.tokenizer, &bad, &fast, &c.templates, &stats).unwrap_err();
    assert!(matches!(err, Error::Request { index: 1, .. }), "{err:?}");
}

#[test]
fn memit_context_templates_are_seeded_and_shaped_like_memits() {
    let device = BackendKind::Flex.device().unwrap();
    let lm = model("tiny-gpt2", &device);
    let a = memit_context_templates(&lm.model, &lm.tokenizer, 10, 3).unwrap();
    assert_eq!(
        a,
        memit_context_templates(&lm.model, &lm.tokenizer, 10, 3).unwrap()
    );
    assert_eq!(a[0], ["{}"]);
    assert_eq!(a[1].len(), 5);
    for (t, start) in a[1].iter().zip(["The", "Therefore", "Because", "I", "You"]) {
        assert!(t.starts_with(start) && t.ends_with(". {}"), "{t:?}");
        assert_eq!(t.matches("{}").count(), 1, "{t:?}");
    }
    assert_ne!(
        a,
        memit_context_templates(&lm.model, &lm.tokenizer, 10, 4).unwrap()
    );
    let e = memit_context_templates(&lm.model, &lm.tokenizer, 1, 3).unwrap_err();
    assert!(e.to_string().contains("length"), "{e}");
}
