//! ROME against an independent PyTorch implementation of its algorithm
//! (`scripts/reference/rome_reference.py`) on the tiny fixture: the keys' second moment, `k*`,
//! `u`, the optimised `v*` step by step, the right vector and the edited model; the second
//! moment against a direct computation; the edit's exact revert; and its errors.

use crate::common::{floats, host, ids, rel_diff, root};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burnlens_experiments::{
    CaseScores, MomentOptions, Observer, RomeConfig, RomeRequest, SecondMoment, TargetNll,
    context_templates, harmonic_mean, ngram_entropy, rome_edit, second_moment,
    second_moment_cached, summarize, target_nlls,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_model::{BackendKind, HookPoint, LoadedModel, TokenBatch, available_devices, load};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/reference/tiny-gpt2/rome.json")).unwrap(),
    )
    .unwrap()
}

fn tiny(device: &burn::tensor::Device) -> LoadedModel {
    load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), device).unwrap()
}

fn texts(r: &Value) -> Vec<Vec<u32>> {
    r["text_ids"].as_array().unwrap().iter().map(ids).collect()
}

fn request(r: &Value) -> RomeRequest {
    serde_json::from_value(r["request"].clone()).unwrap()
}

fn config(r: &Value) -> RomeConfig {
    let h = &r["hparams"];
    RomeConfig {
        v_num_grad_steps: h["v_num_grad_steps"].as_u64().unwrap() as usize,
        v_lr: h["v_lr"].as_f64().unwrap(),
        v_weight_decay: h["v_weight_decay"].as_f64().unwrap(),
        clamp_norm_factor: h["clamp_norm_factor"].as_f64().unwrap(),
        kl_factor: h["kl_factor"].as_f64().unwrap(),
        ..RomeConfig::at_layer(r["layer"].as_u64().unwrap() as usize)
    }
}

#[test]
fn the_second_moment_equals_a_direct_computation_and_the_reference() {
    let r = reference();
    let texts = texts(&r);
    let layer = r["layer"].as_u64().unwrap() as usize;
    let device = BackendKind::Flex.device().unwrap();
    let lm = tiny(&device);
    // Batched (3 texts per forward, right-padded) through second_moment.
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let options = MomentOptions {
        batch_size: 3,
        observer: Observer::new(move |done, _| s.store(done, Ordering::SeqCst)),
    };
    let m = second_moment(&lm.model, layer, &texts, &options).unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), texts.len());
    assert_eq!(m.count, r["count"].as_u64().unwrap());
    // Directly: each text alone, its keys' outer products summed in f64.
    let d = m.d;
    let mut direct = vec![0f64; d * d];
    let mut count = 0usize;
    for t in &texts {
        let (_, cache) = run_with_cache(
            &lm.model,
            &TokenBatch::single(t).unwrap(),
            Selector::point(HookPoint::MlpPost(layer)).unwrap(),
        )
        .unwrap();
        let k = host(cache.get3(HookPoint::MlpPost(layer)).unwrap());
        for row in k.chunks_exact(d) {
            for i in 0..d {
                for j in 0..d {
                    direct[i * d + j] += row[i] as f64 * row[j] as f64;
                }
            }
            count += 1;
        }
    }
    let direct: Vec<f32> = direct.iter().map(|v| (v / count as f64) as f32).collect();
    let ours: Vec<f32> = m.matrix().iter().map(|&v| v as f32).collect();
    let rel = rel_diff(&ours, &direct);
    assert!(rel <= 1e-5, "second moment vs direct: relative {rel}");
    // Against PyTorch's (diagonal and first row).
    let diag: Vec<f32> = (0..d).map(|i| ours[i * d + i]).collect();
    let rel = rel_diff(&diag, &floats(&r["mom2_diag"]));
    assert!(rel <= 1e-5, "diagonal vs PyTorch: relative {rel}");
    let rel = rel_diff(&ours[..d], &floats(&r["mom2_row0"]));
    assert!(rel <= 1e-5, "first row vs PyTorch: relative {rel}");

    // The disk cache: written once, then read back identical without a forward pass.
    let dir = std::env::temp_dir().join(format!("burnlens-mom2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let four = MomentOptions {
        batch_size: 4,
        ..MomentOptions::default()
    };
    let (a, path) = second_moment_cached(&lm.model, "tiny", layer, &texts, &dir, &four).unwrap();
    assert!(path.exists());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let counting = MomentOptions {
        batch_size: 4,
        observer: Observer::new(move |_, _| {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    };
    let (b, again) =
        second_moment_cached(&lm.model, "tiny", layer, &texts, &dir, &counting).unwrap();
    assert_eq!(
        (again, calls.load(Ordering::SeqCst)),
        (path.clone(), 0),
        "the cached moment is reused"
    );
    assert_eq!(a.matrix(), b.matrix());
    let loaded = SecondMoment::load(&path).unwrap();
    assert_eq!((loaded.layer, loaded.count), (layer, a.count));
    // Another corpus gets another file.
    let (_, other) =
        second_moment_cached(&lm.model, "tiny", layer, &texts[1..], &dir, &four).unwrap();
    assert_ne!(other, path);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rome_matches_the_pytorch_reference_and_reverts_exactly_on_every_backend() {
    let r = reference();
    let texts = texts(&r);
    let templates: Vec<String> = serde_json::from_value(r["templates"].clone()).unwrap();
    let config = config(&r);
    let request = request(&r);
    for (kind, device) in available_devices() {
        let mut lm = tiny(&device);
        let stats = second_moment(
            &lm.model,
            config.layer,
            &texts,
            &MomentOptions {
                batch_size: 8,
                ..Default::default()
            },
        )
        .unwrap();
        let edit = rome_edit(
            &lm.model,
            &lm.tokenizer,
            &request,
            &config,
            &templates,
            Some(&stats),
        )
        .unwrap();
        let close = |name: &str, ours: &[f32], want: &Value, tol: f32| {
            let rel = rel_diff(ours, &floats(want));
            assert!(
                rel <= tol,
                "{kind}: {name}: relative difference {rel} > {tol}"
            );
        };
        close("k*", &edit.k_star, &r["k_star"], 1e-4);
        close("u", &edit.u, &r["u"], 1e-4);
        close("k", &edit.key, &r["key"], 1e-4);
        // The optimisation: same number of steps, same losses along the way.
        let steps = r["steps"].as_array().unwrap();
        assert_eq!(edit.steps.len(), steps.len(), "{kind}: steps");
        for (i, (ours, want)) in edit.steps.iter().zip(steps).enumerate() {
            for (name, v) in [
                ("loss", ours.loss),
                ("nll", ours.nll),
                ("kl", ours.kl),
                ("weight_decay", ours.weight_decay),
                ("prob_new", ours.prob_new),
            ] {
                let w = want[name].as_f64().unwrap() as f32;
                assert!(
                    (v - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "{kind}: step {i} {name}: {v} vs {w}"
                );
            }
        }
        close("v*", &edit.target, &r["target"], 1e-4);
        close("right vector", &edit.right, &r["right"], 1e-4);

        // Applied: the edited MLP maps the bare prompt's key to v*.
        let bare = TokenBatch::single(&ids(&r["bare_ids"])).unwrap();
        let idx = r["bare_index"].as_u64().unwrap() as usize;
        let original = host(lm.model.blocks[config.layer].mlp.c_proj.weight.val());
        let logits_before = host(lm.model.logits(&bare).unwrap());
        let prompts: Vec<String> = serde_json::from_value(r["nll_prompts"].clone()).unwrap();
        let target_true = r["target_true"].as_str().unwrap();
        let nlls = |m: &burnlens_model::Gpt2, want: &Value, when: &str| {
            let got =
                target_nlls(m, &lm.tokenizer, &prompts, &request.target_new, target_true).unwrap();
            let want: Vec<TargetNll> = serde_json::from_value(want.clone()).unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g.target_new - w.target_new).abs() <= 1e-4
                        && (g.target_true - w.target_true).abs() <= 1e-4,
                    "{kind}: NLLs {when} the edit: {g:?} vs {w:?}"
                );
            }
        };
        nlls(&lm.model, &r["nlls_before"], "before");
        let applied = edit.apply(&mut lm.model).unwrap();
        let (logits, cache) = run_with_cache(
            &lm.model,
            &bare,
            Selector::point(HookPoint::MlpOut(config.layer)).unwrap(),
        )
        .unwrap();
        let out = host(cache.get3(HookPoint::MlpOut(config.layer)).unwrap());
        let d = lm.model.config.n_embd;
        close(
            "c_proj(k) after the edit",
            &out[idx * d..(idx + 1) * d],
            &r["target"],
            1e-4,
        );
        nlls(&lm.model, &r["nlls_after"], "after");
        let rel = rel_diff(&out[idx * d..(idx + 1) * d], &edit.target);
        assert!(rel <= 1e-5, "{kind}: c_proj(k) vs v*: {rel}");
        // The new target became likelier, as in PyTorch.
        let v = lm.model.config.vocab_size;
        let first = r["target_ids"][0].as_u64().unwrap() as usize;
        let last_row = |l: &[f32]| -> Vec<f32> { l[l.len() - v..].to_vec() };
        let log_p = |row: Vec<f32>| -> f32 {
            let m = row.iter().copied().fold(f32::MIN, f32::max);
            let z: f32 = row.iter().map(|x| (x - m).exp()).sum();
            row[first] - m - z.ln()
        };
        let after = log_p(last_row(&host(logits)));
        let before = log_p(last_row(&logits_before));
        let want_after = r["logprob_first_target_after"].as_f64().unwrap() as f32;
        assert!(
            (after - want_after).abs() <= 1e-3,
            "{kind}: {after} vs {want_after}"
        );
        assert!(after > before + 0.5, "{kind}: log p {before} -> {after}");

        // Reverted: the weight and the logits are exactly the original ones.
        applied.revert(&mut lm.model);
        assert_eq!(
            host(lm.model.blocks[config.layer].mlp.c_proj.weight.val()),
            original,
            "{kind}: revert"
        );
        assert_eq!(
            host(lm.model.logits(&bare).unwrap()),
            logits_before,
            "{kind}"
        );
    }
}

#[test]
fn counterfact_summaries_and_ngram_entropy_follow_romes_definitions() {
    let r = reference();
    for (text, want) in r["entropy_texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["ngram_entropy"].as_array().unwrap())
    {
        let got = ngram_entropy(text.as_str().unwrap());
        assert!(
            (got - want.as_f64().unwrap()).abs() < 1e-9,
            "{text}: {got} vs {want}"
        );
    }
    // A repeated phrase has lower entropy than varied text.
    assert!(ngram_entropy("a b a b a b a b a b") < ngram_entropy("a b c d e f g h i j"));
    // hmean(1, 0.5, 0.25) = 3 / (1 + 2 + 4).
    assert!((harmonic_mean(&[1.0, 0.5, 0.25]) - 3.0 / 7.0).abs() < 1e-12);
    assert_eq!(harmonic_mean(&[1.0, 0.0]), 0.0);
    let case = |e: f64, p: f64, n: f64| CaseScores {
        efficacy: e,
        paraphrase: p,
        neighborhood: n,
        ..CaseScores::default()
    };
    let s = summarize(&[case(1.0, 0.5, 1.0), case(1.0, 1.0, 0.5)]);
    assert_eq!(s.cases, 2);
    assert!((s.mean.paraphrase - 0.75).abs() < 1e-12);
    assert!((s.score - harmonic_mean(&[1.0, 0.75, 0.75])).abs() < 1e-12);
}

#[test]
fn context_templates_are_seeded_and_shaped_like_romes() {
    let device = BackendKind::Flex.device().unwrap();
    let lm = tiny(&device);
    let params = [[5, 3], [10, 2]];
    let a = context_templates(&lm.model, &lm.tokenizer, &params, 4).unwrap();
    let b = context_templates(&lm.model, &lm.tokenizer, &params, 4).unwrap();
    assert_eq!(a, b, "seeded");
    assert_eq!(a.len(), 1 + 3 + 2);
    assert_eq!(a[0], "{}");
    for t in &a[1..] {
        assert!(t.ends_with(". {}") && t.matches("{}").count() == 1, "{t:?}");
        assert!(!t.contains("<|endoftext|>"), "{t:?}");
    }
    assert_ne!(
        a,
        context_templates(&lm.model, &lm.tokenizer, &params, 5).unwrap(),
        "another seed, other templates"
    );
}

#[test]
fn bad_edits_are_clear_errors() {
    let r = reference();
    let device = BackendKind::Flex.device().unwrap();
    let lm = tiny(&device);
    let config = config(&r);
    let stats = second_moment(
        &lm.model,
        config.layer,
        &texts(&r),
        &MomentOptions {
            batch_size: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let templates = vec!["{}".to_string()];
    let edit = |req: &RomeRequest, cfg: &RomeConfig, tpl: &[String], s: Option<&SecondMoment>| {
        rome_edit(&lm.model, &lm.tokenizer, req, cfg, tpl, s)
            .unwrap_err()
            .to_string()
    };
    let good = request(&r);
    let no_slot = RomeRequest {
        prompt: "The Louvre is in".into(),
        ..good.clone()
    };
    assert!(edit(&no_slot, &config, &templates, Some(&stats)).contains("{}"));
    let absent = RomeRequest {
        subject: "".into(),
        ..good.clone()
    };
    assert!(!edit(&absent, &config, &templates, Some(&stats)).is_empty());
    let far = RomeConfig::at_layer(7);
    assert!(edit(&good, &far, &templates, Some(&stats)).contains("out of range"));
    assert!(edit(&good, &config, &templates, None).contains("second moment"));
    let other = 1 - config.layer;
    let other_layer = second_moment(
        &lm.model,
        other,
        &texts(&r),
        &MomentOptions {
            batch_size: 8,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        edit(&good, &config, &templates, Some(&other_layer)).contains(&format!("layer {other}"))
    );
    assert!(edit(&good, &config, &["{} and".to_string()], Some(&stats)).contains("end in"));
    assert!(
        edit(&good, &config, &[], Some(&stats)).contains("the list of context templates is empty")
    );
    // Too few tokens for a full-rank moment: a clear error, not a NaN edit.
    let short = second_moment(
        &lm.model,
        config.layer,
        &[vec![1, 2, 3]],
        &MomentOptions {
            batch_size: 8,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(edit(&good, &config, &templates, Some(&short)).contains("positive definite"));
}
