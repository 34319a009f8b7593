//! Gradient attribution against Inseq 0.7.1 (`scripts/reference/attribution_reference.py`) on
//! every backend: raw attributions `[tokens, steps, d_model]` and Inseq's default aggregation,
//! for saliency, input × gradient and integrated gradients with several attributed functions;
//! integrated gradients' completeness; input errors.

use std::path::PathBuf;

use burnlens_experiments::{
    Aggregation, AttrMethod, AttributedFn, attribute, baseline_score, gauss_legendre,
};
use burnlens_model::weights::read_safetensors;
use burnlens_model::{BackendKind, available_devices, load};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

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
    let ig_steps = json["ig_steps"].as_u64().unwrap() as usize;
    for (kind, device) in available_devices() {
        let model = load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), &device)
            .unwrap()
            .model;
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
                (other, _) => panic!("unknown function {other}"),
            };
            let got = attribute(
                &model,
                &prompt,
                &target,
                Some(&foil),
                method,
                function,
                baseline,
            )
            .unwrap();
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
        }
    }
}

#[test]
fn integrated_gradients_are_complete_at_64_steps() {
    let device = available_devices()[0].1.clone();
    let model = load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), &device)
        .unwrap()
        .model;
    let (prompt, target) = (vec![309u32, 221, 44, 316, 86, 262, 300], vec![268u32, 279]);
    for function in [
        AttributedFn::Logit,
        AttributedFn::LogProbability,
        AttributedFn::Probability,
    ] {
        let a = attribute(
            &model,
            &prompt,
            &target,
            None,
            AttrMethod::IntegratedGradients { steps: 64 },
            function,
            0,
        )
        .unwrap();
        for step in 0..target.len() {
            let f_x = f64::from(a.step_scores[step]);
            let f_b = f64::from(
                baseline_score(&model, &prompt, &target, None, function, 0, step, None).unwrap(),
            );
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
    let model = load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), &device)
        .unwrap()
        .model;
    let (prompt, target) = (vec![309u32, 221, 44, 316, 86, 262, 300], vec![268u32, 279]);
    for point in [
        "blocks.1.hook_resid_pre",
        "blocks.0.hook_mlp_out",
        "blocks.1.mlp.hook_post",
    ] {
        let point: burnlens_model::HookPoint = point.parse().unwrap();
        let method = AttrMethod::LayerIntegratedGradients { point, steps: 64 };
        let a = attribute(
            &model,
            &prompt,
            &target,
            None,
            method,
            AttributedFn::Logit,
            0,
        )
        .unwrap();
        for step in 0..target.len() {
            let f_x = f64::from(a.step_scores[step]);
            let f_b = f64::from(
                baseline_score(
                    &model,
                    &prompt,
                    &target,
                    None,
                    AttributedFn::Logit,
                    0,
                    step,
                    Some(point),
                )
                .unwrap(),
            );
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
    let e = attribute(&model, &prompt, &target, None, bad, AttributedFn::Logit, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer attribution at blocks.0.attn.hook_pattern"),
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
    let model = load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), &device)
        .unwrap()
        .model;
    let p = [309u32, 221, 44];
    let err = |target: &[u32], foil: Option<&[u32]>, f: AttributedFn| {
        attribute(&model, &p, target, foil, AttrMethod::Saliency, f, 0)
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[], None, AttributedFn::Probability).contains("target is empty"));
    let e = err(&[5, 6], Some(&[7]), AttributedFn::ContrastProbDiff);
    assert!(e.contains("foil has 1 tokens and the target 2"), "{e}");
    assert!(err(&[5], None, AttributedFn::ContrastLogitsDiff).contains("needs a foil"));
}
