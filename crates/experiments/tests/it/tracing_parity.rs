//! Causal tracing against the ROME-algorithm reference (`scripts/reference/tracing_reference.py`)
//! on the tiny fixture, with the reference's noise replayed: subject token ranges, the 3σ noise
//! level, clean/corrupted scores, the state/MLP/attention tables and the dataset roll-up.

use crate::common;
use common::root;

use burnlens_experiments::{
    TraceConfig, TraceKind, TracePrompt, average_indirect_effect, causal_trace, load_noise,
    subject_embedding_std,
};
use burnlens_model::weights::read_safetensors;
use burnlens_model::{BackendKind, available_devices, load};
use serde_json::Value;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn causal_traces_match_the_rome_reference_on_every_backend() {
    let dir = root().join("fixtures/reference/tiny-gpt2");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tracing.json")).unwrap()).unwrap();
    let tensors_path = dir.join("tracing.safetensors");
    let want = read_safetensors(&tensors_path).unwrap();
    let prompts = json["prompts"].as_array().unwrap();
    let config = TraceConfig {
        samples: json["samples"].as_u64().unwrap() as usize,
        window: json["window"].as_u64().unwrap() as usize,
        ..TraceConfig::default()
    };
    for (kind, device) in available_devices() {
        let lm = load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), &device).unwrap();
        let subjects: Vec<&str> = prompts
            .iter()
            .map(|p| p["subject"].as_str().unwrap())
            .collect();
        let std = subject_embedding_std(&lm.model, &lm.tokenizer, &subjects).unwrap();
        let want_std = json["embedding_std"].as_f64().unwrap() as f32;
        assert!(
            (std - want_std).abs() <= 1e-5 * want_std,
            "{kind}: std {std} vs {want_std}"
        );
        let level = json["noise_level"].as_f64().unwrap() as f32;
        assert!((3.0 * std - level).abs() <= 1e-5 * level, "{kind}: 3σ rule");
        // lavapipe is slow: one prompt there, all of them on the CPU backends.
        let n = if kind == BackendKind::Wgpu {
            1
        } else {
            prompts.len()
        };
        let mut traces = Vec::new();
        for (i, p) in prompts.iter().enumerate().take(n) {
            let prompt = TracePrompt::new(
                &lm.tokenizer,
                p["prompt"].as_str().unwrap(),
                p["subject"].as_str().unwrap(),
            )
            .unwrap();
            let ids: Vec<u32> = p["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(prompt.ids, ids, "{kind}: prompt {i} ids");
            let range = p["subject_range"].as_array().unwrap();
            assert_eq!(
                (prompt.subject_range.start, prompt.subject_range.end),
                (
                    range[0].as_u64().unwrap() as usize,
                    range[1].as_u64().unwrap() as usize
                ),
                "{kind}: prompt {i} subject range"
            );
            let noise = load_noise(&tensors_path, &format!("noise.{i}"), &device).unwrap();
            let trace = causal_trace(&lm.model, &prompt, &TraceKind::ALL, &config, &noise).unwrap();
            assert_eq!(trace.answer_id as u64, p["answer_id"].as_u64().unwrap());
            let close = |got: f32, key: &str| {
                let w = p[key].as_f64().unwrap() as f32;
                assert!(
                    (got - w).abs() <= 1e-5,
                    "{kind}: prompt {i} {key} {got} vs {w}"
                );
            };
            close(trace.high_score, "high_score");
            close(trace.low_score, "low_score");
            for table in &trace.tables {
                let w = &want[&format!("{}.{i}", table.kind.name())];
                assert_eq!(w.shape, vec![table.n_tokens, table.n_layers]);
                let d = max_diff(&table.scores, &w.data);
                assert!(
                    d <= 1e-4,
                    "{kind}: prompt {i} {:?} max diff {d}",
                    table.kind
                );
                // The restorations matter: the table is not flat at the low score.
                let spread = max_diff(&table.scores, &vec![trace.low_score; table.scores.len()]);
                assert!(spread > 1e-3, "{kind}: prompt {i} {:?} is flat", table.kind);
            }
            traces.push(trace);
            // ROME's default window (10) on this 2-layer model: clipped at the model's ends,
            // every column restores both layers, as ROME's own loop does.
            if kind != BackendKind::Wgpu {
                let wide = TraceConfig {
                    window: json["wide_window"].as_u64().unwrap() as usize,
                    ..config.clone()
                };
                assert_eq!(wide.window, TraceConfig::default().window);
                let kinds = [TraceKind::Mlp, TraceKind::Attn];
                let trace = causal_trace(&lm.model, &prompt, &kinds, &wide, &noise).unwrap();
                for table in &trace.tables {
                    let w = &want[&format!("{}.w10.{i}", table.kind.name())];
                    let d = max_diff(&table.scores, &w.data);
                    assert!(
                        d <= 1e-4,
                        "{kind}: prompt {i} {:?} window 10: {d}",
                        table.kind
                    );
                    let layers: Vec<[usize; 2]> = json["wide_window_layers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| {
                            let c: Vec<usize> = c
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|l| l.as_u64().unwrap() as usize)
                                .collect();
                            [c[0], c[c.len() - 1] + 1]
                        })
                        .collect();
                    assert_eq!(table.column_layers, layers, "{:?}", table.kind);
                }
            }
        }
        if n == prompts.len() {
            for kind in TraceKind::ALL {
                let got = average_indirect_effect(&traces, kind).unwrap();
                let w = &json["rollup"][kind.name()];
                assert!((got.low_score - w["low_score"].as_f64().unwrap() as f32).abs() <= 1e-6);
                for (g, (aie, interval)) in got.groups.iter().zip(
                    w["aie"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .zip(w["interval"].as_array().unwrap()),
                ) {
                    let floats = |v: &Value| -> Vec<f32> {
                        v.as_array()
                            .map(|a| a.iter().map(|x| x.as_f64().unwrap() as f32).collect())
                            .unwrap_or_default()
                    };
                    assert!(
                        max_diff(&g.aie, &floats(aie)) <= 1e-4,
                        "{kind:?} {}",
                        g.name
                    );
                    assert!(
                        max_diff(&g.interval, &floats(interval)) <= 1e-4,
                        "{kind:?} {}",
                        g.name
                    );
                }
            }
        }
    }
}

#[test]
fn tracing_input_errors_are_clear() {
    let device = available_devices()[0].1.clone();
    let lm = load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), &device).unwrap();
    let err = TracePrompt::new(&lm.tokenizer, "Toyota, a company from", "Honda")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"Honda\" does not occur in the prompt"),
        "{err}"
    );
    let prompt = TracePrompt::new(&lm.tokenizer, "Toyota, a company from", "Toyota").unwrap();
    let d = lm.model.config.n_embd;
    let sub = prompt.subject_range.len();
    let noise = burn::tensor::Tensor::<3>::zeros([10, sub, d], &device);
    let zero = TraceConfig {
        window: 0,
        ..TraceConfig::default()
    };
    let err = causal_trace(&lm.model, &prompt, &[TraceKind::Mlp], &zero, &noise)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`window` = 0: a restoration window of at least 1 layer"),
        "{err}"
    );
    let ok = TraceConfig {
        window: 2,
        ..TraceConfig::default()
    };
    let bad_noise = burn::tensor::Tensor::<3>::zeros([10, sub + 1, d], &device);
    let err = causal_trace(&lm.model, &prompt, &[TraceKind::State], &ok, &bad_noise)
        .unwrap_err()
        .to_string();
    assert!(err.contains("noise has shape"), "{err}");
    assert!(
        "hidden_state"
            .parse::<TraceKind>()
            .unwrap_err()
            .to_string()
            .contains("unknown trace kind")
    );
}
