//! Gradient attribution against Inseq 0.7.1 (`scripts/reference/attribution_reference.py`) on
//! every backend: raw attributions `[tokens, steps, d_model]` and Inseq's default aggregation,
//! for saliency, input × gradient and integrated gradients with several attributed functions;
//! integrated gradients' completeness; input errors.

use crate::common;
use common::{ids, root, tiny};

use burnlens_experiments::{
    Aggregation, AttrMethod, AttributeOptions, AttributedFn, AttributionInput, attribute,
    baseline_score, gauss_legendre,
};
use burnlens_model::weights::read_safetensors;
use burnlens_model::{BackendKind, available_devices};
use serde_json::Value;

/// Max |a − b| over entries that are not NaN in `b`, checking NaN positions agree; and the
/// largest |b| (to judge the tolerance against).
fn compare(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    let mut scale = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.is_nan(), y.is_nan(), "NaN layout differs");
        if !y.is_nan() {
            worst = worst.max((x - y).abs());
            scale = scale.max(y.abs());
        }
    }
    (worst, scale)
}

#[test]
fn attributions_match_inseq_on_every_backend() {
    let dir = root().join("fixtures/reference/tiny-gpt2");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("attribution.json")).unwrap())
            .unwrap();
    let want = read_safetensors(&dir.join("attribution.safetensors")).unwrap();
    let (prompt, target, foil) = (
        ids(&json["prompt_ids"]),
        ids(&json["target_ids"]),
        ids(&json["foil_ids"]),
    );
    let baseline = json["baseline_id"].as_u64().unwrap() as u32;
    let contrast = ids(&json["contrast_ids"]);
    let ig_steps = json["ig_steps"].as_u64().unwrap() as usize;
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        for case in json["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let method = match case["method"].as_str().unwrap() {
                "saliency" => AttrMethod::Saliency,
                "input_x_gradient" => AttrMethod::InputXGradient,
                "integrated_gradients" => AttrMethod::IntegratedGradients { steps: ig_steps },
                "layer_gradient_x_activation" => AttrMethod::LayerGradientXActivation {
                    point: json["layer"]["hook"].as_str().unwrap().parse().unwrap(),
                },
                other => panic!("unknown method {other}"),
            };
            if kind == BackendKind::Wgpu && matches!(method, AttrMethod::IntegratedGradients { .. })
            {
                continue; // lavapipe is slow; the IG batch is the same code as on the CPU.
            }
            let function = match (
                case["attributed_fn"].as_str().unwrap(),
                case["logprob"].as_bool().unwrap(),
            ) {
                ("probability", false) => AttributedFn::Probability,
                ("probability", true) => AttributedFn::LogProbability,
                ("logit", _) => AttributedFn::Logit,
                ("contrast_prob_diff", _) => AttributedFn::ContrastProbDiff,
                ("contrast_logits_diff", _) => AttributedFn::ContrastLogitsDiff,
                ("kl_divergence", _) => AttributedFn::KlDivergence,
                (other, _) => panic!("unknown function {other}"),
            };
            // The KL divergence contrasts with a whole position-aligned sequence; the other
            // contrastive functions with the foil continuation.
            let contrast = if function == AttributedFn::KlDivergence {
                &contrast
            } else {
                &foil
            };
            let mut input = AttributionInput::new(&prompt, &target);
            if function.is_contrastive() {
                input = input.foil(contrast);
            }
            let options = AttributeOptions::new(method, baseline).function(function);
            let got = attribute(&model, &input, &options).unwrap();
            let raw = &want[&format!("{name}.raw")];
            assert_eq!(raw.shape, vec![got.tokens.len(), got.n_steps, got.d_model]);
            let (d, scale) = compare(&got.raw, &raw.data);
            // Raw gradients of a probability are tiny here (p ≈ 1e-4), so they are judged
            // relative to their largest magnitude; the aggregated (normalized) values
            // absolutely. Integrated gradients get 1e-3, the rest 1e-4.
            let tol = if matches!(method, AttrMethod::IntegratedGradients { .. }) {
                1e-3
            } else {
                1e-4
            };
            eprintln!(
                "{kind} {name}: raw max diff {d:.3e}, relative {:.3e}",
                d / scale
            );
            assert!(
                scale > 0.0 && d <= tol * scale,
                "{kind} {name}: raw diff {d} (scale {scale})"
            );
            let agg = &want[&format!("{name}.aggregated")];
            let (d, _) = compare(&got.aggregate(Aggregation::L2NormSumOne), &agg.data);
            assert!(d <= tol, "{kind} {name}: aggregated diff {d}");
            // Inseq's step score of a contrastive difference runs the foil with its own prefix
            // (" a" at step 1, where the target has " the"), not the target's.
            if let Some(steps) = want.get(&format!("{name}.step_scores")) {
                assert_ne!(foil[0], target[0], "the prefixes must differ at step 1");
                for (s, (&g, &w)) in got.step_scores.iter().zip(&steps.data).enumerate() {
                    let d = (g - w).abs();
                    assert!(
                        d <= 1e-4 * w.abs().max(1e-3),
                        "{kind} {name}: step {s} score {g} vs Inseq's {w}"
                    );
                }
                assert_eq!(got.step_scores[0], got.attributed_values[0]);
                assert!(
                    (got.step_scores[1] - got.attributed_values[1]).abs() > 1e-6,
                    "{name}: the foil's own prefix must change step 1's score"
                );
            }
        }
    }
}

#[test]
fn integrated_gradients_are_complete_at_64_steps() {
    let device = available_devices()[0].1.clone();
    let model = tiny(&device);
    let (prompt, target) = (vec![309u32, 221, 44, 316, 86, 262, 300], vec![268u32, 279]);
    for function in [
        AttributedFn::Logit,
        AttributedFn::LogProbability,
        AttributedFn::Probability,
    ] {
        let input = AttributionInput::new(&prompt, &target);
        let options = AttributeOptions::new(AttrMethod::IntegratedGradients { steps: 64 }, 0)
            .function(function);
        let a = attribute(&model, &input, &options).unwrap();
        for step in 0..target.len() {
            let f_x = f64::from(a.attributed_values[step]);
            let f_b = f64::from(baseline_score(&model, &input, &options, step).unwrap());
            let total = a.step_total(step);
            let gap = f_x - f_b;
            assert!(
                gap.abs() > 1e-6,
                "{function:?}: input and baseline score alike"
            );
            assert!(
                (total - gap).abs() <= 0.01 * gap.abs(),
                "{function:?} step {step}: sum {total} vs f(x) − f(x0) = {gap}"
            );
        }
    }
}

#[test]
fn layer_integrated_gradients_are_complete_at_64_steps() {
    let device = available_devices()[0].1.clone();
    let model = tiny(&device);
    let (prompt, target) = (vec![309u32, 221, 44, 316, 86, 262, 300], vec![268u32, 279]);
    for point in [
        "blocks.1.hook_resid_pre",
        "blocks.0.hook_mlp_out",
        "blocks.1.mlp.hook_post",
    ] {
        let point: burnlens_model::HookPoint = point.parse().unwrap();
        let method = AttrMethod::LayerIntegratedGradients { point, steps: 64 };
        let input = AttributionInput::new(&prompt, &target);
        let options = AttributeOptions::new(method, 0).function(AttributedFn::Logit);
        let a = attribute(&model, &input, &options).unwrap();
        for step in 0..target.len() {
            let f_x = f64::from(a.attributed_values[step]);
            let f_b = f64::from(baseline_score(&model, &input, &options, step).unwrap());
            let (total, gap) = (a.step_total(step), f_x - f_b);
            assert!(gap.abs() > 1e-6, "{point}: no gap");
            assert!(
                (total - gap).abs() <= 0.01 * gap.abs(),
                "{point} step {step}: sum {total} vs {gap}"
            );
        }
    }
    // Not every point can be attributed at.
    let bad = AttrMethod::LayerGradientXActivation {
        point: "blocks.0.attn.hook_pattern".parse().unwrap(),
    };
    let options = AttributeOptions::new(bad, 0).function(AttributedFn::Logit);
    let e = attribute(&model, &AttributionInput::new(&prompt, &target), &options)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer attribution cannot run at blocks.0.attn.hook_pattern"),
        "{e}"
    );
}

#[test]
fn gauss_legendre_integrates_polynomials_exactly() {
    // n nodes integrate degree 2n − 1 exactly on [0, 1]: ∫ x^k = 1 / (k + 1).
    for n in [1, 2, 5, 16, 64] {
        let (x, w) = gauss_legendre(n);
        for k in 0..(2 * n).min(20) {
            let q: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(k as i32)).sum();
            assert!(
                (q - 1.0 / (k as f64 + 1.0)).abs() < 1e-12,
                "n {n} k {k}: {q}"
            );
        }
    }
}

#[test]
fn bad_requests_are_clear_errors() {
    let device = available_devices()[0].1.clone();
    let model = tiny(&device);
    let p = [309u32, 221, 44];
    let err = |target: &[u32], foil: Option<&[u32]>, f: AttributedFn| {
        let input = AttributionInput {
            prompt: &p,
            target,
            foil,
        };
        let options = AttributeOptions::new(AttrMethod::Saliency, 0).function(f);
        attribute(&model, &input, &options).unwrap_err().to_string()
    };
    assert!(err(&[], None, AttributedFn::Probability).contains("target is empty"));
    let e = err(&[5, 6], Some(&[7]), AttributedFn::ContrastProbDiff);
    assert!(e.contains("the foil has shape [1]; expected [2]"), "{e}");
    let e = err(&[5, 6], Some(&[7, 8]), AttributedFn::KlDivergence);
    assert!(e.contains("contrastive sequence has shape [2]"), "{e}");
    assert!(err(&[5], None, AttributedFn::ContrastLogitsDiff).contains("needs a foil"));
    // Token ids past the vocabulary are named before any forward (the tiny model has 641).
    let e = err(&[641], None, AttributedFn::Probability);
    assert!(e.contains("target token id 641 is out of range"), "{e}");
    let e = err(&[5], Some(&[4000]), AttributedFn::ContrastProbDiff);
    assert!(e.contains("foil token id 4000 is out of range"), "{e}");
    // A foil equal to the target makes every attribution 0; a foil the function does not use
    // would be dropped without a word.
    let e = err(&[5, 6], Some(&[5, 6]), AttributedFn::ContrastProbDiff);
    assert!(
        e.contains("`foil`") && e.contains("other than the target"),
        "{e}"
    );
    let e = err(&[5], Some(&[7]), AttributedFn::Probability);
    assert!(e.contains("no foil with Probability"), "{e}");
    // A baseline score exists for the integrated methods only, and for a step of the target.
    let input = AttributionInput::new(&p, &[5]);
    let e = baseline_score(
        &model,
        &input,
        &AttributeOptions::new(AttrMethod::Saliency, 0),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`method` = Saliency"), "{e}");
    let ig = AttributeOptions::new(AttrMethod::IntegratedGradients { steps: 4 }, 0);
    let e = baseline_score(&model, &input, &ig, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("step 1 is out of range"), "{e}");
}

#[test]
fn layer_sweep_columns_are_the_per_layer_attributions() {
    use burnlens_experiments::{TokenReduce, layer_sweep};
    let device = available_devices()[0].1.clone();
    let model = tiny(&device);
    let prompt = [309u32, 221, 44, 316, 86, 262, 300];
    let (target, foil) = (268u32, 258u32);
    let f = AttributedFn::ContrastProbDiff;
    for (reduce, kind) in [
        (TokenReduce::Sum, burnlens_model::HookKind::MlpOut),
        (TokenReduce::L2Norm, burnlens_model::HookKind::AttnOut),
    ] {
        let same = layer_sweep(&model, &prompt, target, Some(target), f, kind, reduce);
        let e = same.unwrap_err().to_string();
        assert!(
            e.contains("`foil`") && e.contains("other than the target"),
            "{e}"
        );
        let table = layer_sweep(&model, &prompt, target, Some(foil), f, kind, reduce).unwrap();
        let n = model.config.n_layer;
        assert_eq!(table.len(), prompt.len() * n);
        for layer in 0..n {
            // Each column is layer gradient × activation at that point (checked against Inseq
            // above), reduced per token.
            let point = kind.at(layer).unwrap();
            let (target, foil) = ([target], [foil]);
            let input = AttributionInput::new(&prompt, &target).foil(&foil);
            let method = AttrMethod::LayerGradientXActivation { point };
            let a = attribute(
                &model,
                &input,
                &AttributeOptions::new(method, 0).function(f),
            )
            .unwrap();
            for (i, row) in a.raw.chunks(a.d_model).enumerate().take(prompt.len()) {
                let want: f64 = match reduce {
                    TokenReduce::Sum => row.iter().map(|&x| f64::from(x)).sum(),
                    TokenReduce::L2Norm => row
                        .iter()
                        .map(|&x| f64::from(x).powi(2))
                        .sum::<f64>()
                        .sqrt(),
                };
                let got = f64::from(table[i * n + layer]);
                assert!(
                    (got - want).abs() <= 1e-6 + 1e-4 * want.abs(),
                    "{kind} L{layer} token {i}: {got} vs {want}"
                );
            }
        }
    }
    let e = layer_sweep(
        &model,
        &prompt,
        target,
        None,
        f,
        burnlens_model::HookKind::MlpOut,
        TokenReduce::Sum,
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs a foil"), "{e}");
    let e = layer_sweep(
        &model,
        &prompt,
        target,
        None,
        AttributedFn::Logit,
        burnlens_model::HookKind::Pattern,
        TokenReduce::Sum,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("a layer sweep cannot run at pattern"),
        "{e}"
    );
}

#[test]
fn group_rollup_averages_rome_token_groups() {
    use burnlens_experiments::{TokenTable, group_rollup};
    // Two prompts, one layer. Prompt A: 5 tokens, subject 1..3 (tokens 1, 2); prompt B: 4
    // tokens, subject 0..3 (tokens 0, 1, 2). Token i of A has value i, of B 10 + i.
    let a = [0.0, 1.0, 2.0, 3.0, 4.0];
    let b = [10.0, 11.0, 12.0, 13.0];
    let tables = [
        TokenTable {
            values: &a,
            n_tokens: 5,
            n_layers: 1,
            subject_range: 1..3,
        },
        TokenTable {
            values: &b,
            n_tokens: 4,
            n_layers: 1,
            subject_range: 0..3,
        },
    ];
    let g = group_rollup(&tables, 1.0).unwrap();
    // first subject: A1, B10 → 5.5; middle: B11 → 11; last subject: A2, B12 → 7;
    // first subsequent: A3, B13 → 8; further: none in A (3 + 1 .. 4), none in B → empty;
    // last token: A4, B13 → 8.5. Minus the offset 1.
    let means: Vec<Option<f32>> = g.iter().map(|x| x.aie.first().copied()).collect();
    assert_eq!(
        means,
        vec![Some(4.5), Some(10.0), Some(6.0), Some(7.0), None, Some(7.5)]
    );
    assert_eq!(
        g.iter().map(|x| x.count).collect::<Vec<_>>(),
        vec![2, 1, 2, 2, 0, 2]
    );
    // Interval: 1.96 · population std / sqrt(2 prompts); first subject std = 4.5.
    assert!((g[0].interval[0] - (1.96 * 4.5 / 2f64.sqrt()) as f32).abs() < 1e-5);
    let bad = [TokenTable {
        values: &a,
        n_tokens: 5,
        n_layers: 1,
        subject_range: 4..6,
    }];
    assert!(group_rollup(&bad, 0.0).is_err());
}
