//! Metrics against torch on seeded random logits (`scripts/reference/metrics_reference.py`)
//! and closed forms; tolerance 1e-5.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burnlens_metrics::*;
use serde_json::Value;

const TOL: f32 = 1e-5;

struct Ref {
    json: Value,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

fn reference() -> Ref {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/reference");
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("metrics.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect();
    Ref { json, tensors }
}

impl Ref {
    fn vals(&self, k: &str) -> &[f32] {
        &self.tensors[k].1
    }
    fn t3(&self, k: &str, d: &Device) -> Tensor<3> {
        let (s, v) = &self.tensors[k];
        Tensor::from_data(TensorData::new(v.clone(), [s[0], s[1], s[2]]), d)
    }
    fn t2(&self, k: &str, d: &Device) -> Tensor<2> {
        let (s, v) = &self.tensors[k];
        Tensor::from_data(TensorData::new(v.clone(), [s[0], s[1]]), d)
    }
    fn ids(&self, k: &str) -> Vec<u32> {
        self.json[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }
    fn usizes(&self, k: &str) -> Vec<usize> {
        self.ids(k).into_iter().map(|x| x as usize).collect()
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(d <= TOL, "{what}: max abs diff {d}");
}

/// Both CPU backends (ndarray is deprecated upstream in favour of flex but still offered).
#[allow(deprecated)]
fn devices() -> Vec<Device> {
    vec![Device::ndarray(), Device::flex()]
}

#[test]
fn position_metrics_match_torch() {
    let r = reference();
    let (answer, foil, positions) = (r.ids("answer"), r.ids("foil"), r.usizes("positions"));
    for d in devices() {
        let at = at_positions(r.t3("logits", &d), &positions).unwrap();
        let other = at_positions(r.t3("other", &d), &positions).unwrap();
        let ld = logit_diff(at.clone(), &answer, &foil).unwrap();
        close("logit_diff", &host(ld.clone()), r.vals("logit_diff"));
        let (clean, corrupt) = (
            r.json["clean"].as_f64().unwrap() as f32,
            r.json["corrupt"].as_f64().unwrap() as f32,
        );
        close(
            "patch score",
            &host(normalized_patch_score(ld, clean, corrupt).unwrap()),
            r.vals("patch_score"),
        );
        close(
            "probs",
            &host(token_probs(at.clone(), &answer).unwrap()),
            r.vals("probs"),
        );
        close(
            "log probs",
            &host(token_log_probs_at(at.clone(), &answer).unwrap()),
            r.vals("log_probs"),
        );
        assert_eq!(token_ranks(at.clone(), &answer).unwrap(), r.usizes("ranks"));
        close(
            "contrast_prob_diff",
            &host(contrast_prob_diff(at.clone(), &answer, other.clone(), &foil).unwrap()),
            r.vals("contrast_prob_diff"),
        );
        close(
            "contrast_logits_diff",
            &host(contrast_logits_diff(at.clone(), &answer, other, &foil).unwrap()),
            r.vals("contrast_logits_diff"),
        );
        let top = top_k(at, 5).unwrap();
        let want_tokens = &r.json["top5_tokens"];
        let want_probs = &r.json["top5_probs"];
        for (b, row) in top.iter().enumerate() {
            for (i, c) in row.iter().enumerate() {
                assert_eq!(
                    u64::from(c.token),
                    want_tokens[b][i].as_u64().unwrap(),
                    "top-k row {b}"
                );
                assert!(
                    (f64::from(c.prob) - want_probs[b][i].as_f64().unwrap()).abs()
                        <= f64::from(TOL)
                );
            }
        }
    }
}

#[test]
fn kl_and_losses_match_torch() {
    let r = reference();
    for d in devices() {
        let kl = kl_divergence(r.t3("logits", &d), r.t3("other", &d)).unwrap();
        assert_eq!(kl.dims(), [4, 6, 1]);
        close("kl", &host(kl), r.vals("kl"));
        let tokens: Vec<i64> = r.json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
            .collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(tokens, [4, 6]), &d);
        let loss = next_token_loss(r.t3("logits", &d), tokens, Some(r.t2("mask", &d)));
        close(
            "per-token loss",
            &host(loss.per_token.clone()),
            r.vals("per_token_loss"),
        );
        close(
            "per-sequence loss",
            &host(loss.per_sequence()),
            r.vals("per_sequence_loss"),
        );
        close("perplexity", &host(loss.perplexity()), r.vals("perplexity"));
        close("mean loss", &host(loss.mean()), r.vals("mean_loss"));
    }
}

#[test]
fn closed_forms() {
    let d = Device::flex();
    // KL of a distribution with itself is 0; against uniform it is ln V − H(P).
    let p = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.0, 0.0, 0.0], [1, 4]), &d);
    let kl_self = host(kl_divergence(p.clone(), p.clone()).unwrap())[0];
    assert!(kl_self.abs() < 1e-7);
    let u = Tensor::<2>::zeros([1, 4], &d);
    let e2 = 2.0f32.exp();
    let z = e2 + 3.0;
    let probs = [e2 / z, 1.0 / z, 1.0 / z, 1.0 / z];
    let entropy: f32 = -probs.iter().map(|q| q * q.ln()).sum::<f32>();
    let kl = host(kl_divergence(p.clone(), u).unwrap())[0];
    assert!((kl - (4.0f32.ln() - entropy)).abs() < 1e-6, "{kl}");
    // Probability, rank and logit difference of a known row.
    assert!((host(token_probs(p.clone(), &[0]).unwrap())[0] - e2 / z).abs() < 1e-6);
    assert_eq!(token_ranks(p.clone(), &[0]).unwrap(), vec![0]);
    assert_eq!(token_ranks(p.clone(), &[3]).unwrap(), vec![1]);
    assert_eq!(host(logit_diff(p.clone(), &[0], &[1]).unwrap()), vec![2.0]);
    // Patch score endpoints, and the degenerate baseline.
    let m = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 3.0], [2]), &d);
    assert_eq!(
        host(normalized_patch_score(m.clone(), 3.0, 1.0).unwrap()),
        vec![0.0, 1.0]
    );
    let err = normalized_patch_score(m, 1.0, 1.0).unwrap_err();
    assert!(matches!(err, MetricError::DegenerateBaseline { .. }));
    assert!(err.to_string().contains("equal"));
    // Jaccard.
    assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
    assert_eq!(jaccard(&[], &[]), 1.0);
    assert_eq!(jaccard(&[1], &[2]), 0.0);
}

#[test]
fn bad_input_is_an_error() {
    let d = Device::flex();
    let logits = Tensor::<2>::zeros([2, 10], &d);
    assert!(
        logit_diff(logits.clone(), &[1], &[2])
            .unwrap_err()
            .to_string()
            .contains("batch of 2")
    );
    assert!(
        token_probs(logits.clone(), &[1, 10])
            .unwrap_err()
            .to_string()
            .contains("outside the vocabulary")
    );
    assert!(top_k(logits.clone(), 11).is_err() && top_k(logits, 0).is_err());
    let l3 = Tensor::<3>::zeros([2, 3, 10], &d);
    assert!(
        at_positions(l3.clone(), &[0, 3])
            .unwrap_err()
            .to_string()
            .contains("position 3")
    );
    assert!(at_positions(l3.clone(), &[0]).is_err());
    assert!(kl_divergence(l3, Tensor::<3>::zeros([2, 3, 9], &d)).is_err());
}
