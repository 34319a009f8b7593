//! The logit lens against TransformerLens (`accumulated_resid(apply_ln=True) @ W_U + b_U`,
//! `scripts/reference/lens_reference.py`) on every backend, and its last readout against the
//! model's own output probabilities.

use crate::common;
use common::{root, tiny};

use burnlens_experiments::{logit_lens, output_probs};
use burnlens_model::weights::read_safetensors;
use burnlens_model::{TokenBatch, available_devices};
use serde_json::Value;

#[test]
fn logit_lens_matches_transformer_lens_and_ends_at_the_output() {
    let dir = root().join("fixtures/reference/tiny-gpt2");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lens.json")).unwrap()).unwrap();
    let want = &read_safetensors(&dir.join("lens.safetensors")).unwrap()["probs"];
    let tokens: Vec<u32> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let labels: Vec<String> = json["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let [c, t, v] = [want.shape[0], want.shape[1], want.shape[2]];
    let batch = TokenBatch::single(&tokens).unwrap();
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        for answer in [7u32, 300] {
            let lens = logit_lens(&model, &batch, Some(answer), 5).unwrap();
            assert_eq!(lens.len(), t);
            for (p, at) in lens.iter().enumerate() {
                assert_eq!(at.labels, labels, "{kind}");
                for layer in 0..c {
                    let row = &want.data[(layer * t + p) * v..(layer * t + p + 1) * v];
                    // The answer's probability and rank, and the top-k, as the reference has them.
                    let got = at.answer_prob[layer];
                    let w = row[answer as usize];
                    assert!(
                        (got - w).abs() <= 1e-5,
                        "{kind} pos {p} layer {layer}: {got} vs {w}"
                    );
                    let rank = row.iter().filter(|&&x| x > w).count();
                    assert_eq!(at.answer_rank[layer], rank, "{kind} pos {p} layer {layer}");
                    for cand in &at.top[layer] {
                        let w = row[cand.token as usize];
                        assert!((cand.prob - w).abs() <= 1e-5, "{kind}: top-k probability");
                    }
                    let best = row.iter().copied().fold(f32::MIN, f32::max);
                    assert!(
                        (at.top[layer][0].prob - best).abs() <= 1e-5,
                        "{kind}: top-1"
                    );
                }
                // The last readout is the model's output.
                let out = output_probs(&model, &batch, p).unwrap();
                let d = (0..v)
                    .map(|i| {
                        let w = want.data[((c - 1) * t + p) * v + i];
                        (out[i] - w).abs()
                    })
                    .fold(0.0f32, f32::max);
                assert!(d <= 1e-5, "{kind} pos {p}: output vs reference {d}");
                assert!((at.answer_prob[c - 1] - out[answer as usize]).abs() <= 1e-5);
            }
        }
        assert!(logit_lens(&model, &batch, Some(641), 5).is_err());
        assert!(logit_lens(&model, &batch, None, 0).is_err());
    }
}
