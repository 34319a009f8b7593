//! Head detectors against TransformerLens 3.9's `head_detector` (scripts/reference/
//! heads_reference.py, outputs in fixtures/reference/<fixture>/heads.json): every pattern,
//! both error measures, with and without `exclude_bos` / `exclude_current_token`, on the tiny
//! fixture and on the organism, whose planted offset heads lead their `back_k` detectors.

use crate::common::{ids, root};

use burn::tensor::Device;
use burnlens_experiments::{
    DetectOptions, ErrorMeasure, HeadPattern, HeadScan, HeadScanOptions, detect_heads,
    detect_heads_many,
};
use burnlens_model::load;
use serde_json::Value;

fn reference(fixture: &str) -> Value {
    let path = root().join(format!("fixtures/reference/{fixture}/heads.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every key of the reference, parsed: `pattern/measure/bos=B/cur=C`.
fn parse_key(key: &str) -> (HeadPattern, DetectOptions) {
    let parts: Vec<&str> = key.split('/').collect();
    let options = DetectOptions {
        measure: match parts[1] {
            "mul" => ErrorMeasure::Mul,
            _ => ErrorMeasure::Abs,
        },
        exclude_bos: parts[2] == "bos=1",
        exclude_current_token: parts[3] == "cur=1",
    };
    (parts[0].parse().unwrap(), options)
}

fn check_against_transformer_lens(fixture: &str) {
    let device = Device::flex();
    let model = load(
        root().join("fixtures").join(fixture).to_str().unwrap(),
        &device,
    )
    .unwrap()
    .model;
    let r = reference(fixture);
    let mut checked = 0;
    for seq in r["sequences"].as_array().unwrap() {
        let tokens = ids(&seq["ids"]);
        for (key, table) in seq["scores"].as_object().unwrap() {
            let (pattern, options) = parse_key(key);
            let got =
                detect_heads(&model, std::slice::from_ref(&tokens), pattern, options).unwrap();
            let expected: Vec<f64> = table
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect();
            assert_eq!(got.len(), expected.len());
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                let g = f64::from(*g);
                let ok = match options.measure {
                    ErrorMeasure::Mul => (g - e).abs() <= 1e-4,
                    // Both round to three decimals; an fp32 difference in the sum can tip a
                    // value sitting on a rounding boundary by 0.001, never more.
                    ErrorMeasure::Abs => (g - e).abs() <= 1e-4 || (g - e).abs() <= 1.0001e-3,
                };
                assert!(ok, "{fixture} {key} head {i}: {g} vs TransformerLens {e}");
                checked += 1;
            }
        }
    }
    let (l, h) = (model.config.n_layer, model.config.n_head);
    assert_eq!(checked, 2 * 5 * 8 * l * h, "every table of both sequences");
}

#[test]
fn scores_equal_transformer_lens_on_the_tiny_fixture() {
    check_against_transformer_lens("tiny-gpt2");
}

#[test]
fn scores_equal_transformer_lens_on_the_organism() {
    check_against_transformer_lens("organism");
}

#[test]
fn the_organism_s_planted_offset_heads_lead_their_detectors() {
    // plant.rs: layer 0 head 0 attends two tokens back, head 1 three back. On the organism's
    // retrieval documents (as it was trained on them) they lead the back_2 and back_3 scores.
    let device = Device::flex();
    let lm = load(root().join("fixtures/organism").to_str().unwrap(), &device).unwrap();
    let texts: Vec<Vec<u32>> = std::fs::read_to_string(root().join("fixtures/organism/texts.txt"))
        .unwrap()
        .split("\n\n")
        .filter(|t| !t.trim().is_empty())
        .map(|t| lm.tokenizer.encode(t.trim(), false).unwrap())
        .collect();
    assert!(texts.len() >= 8);
    let patterns = [HeadPattern::Back(2), HeadPattern::Back(3)];
    let tables = detect_heads_many(&lm.model, &texts, &patterns, DetectOptions::default()).unwrap();
    for (p, table, planted) in [(patterns[0], &tables[0], 0), (patterns[1], &tables[1], 1)] {
        let best = (0..table.len())
            .max_by(|&a, &b| table[a].total_cmp(&table[b]))
            .unwrap();
        assert_eq!(best, planted, "{p}: {table:?}");
        let second = table
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != planted)
            .map(|(_, v)| *v)
            .fold(f32::MIN, f32::max);
        assert!(
            table[planted] > 2.0 * second,
            "{p}: {} vs {second}",
            table[planted]
        );
    }
    // The scan computes the same numbers in its one pass.
    let mut scan = HeadScan::new(
        &lm.model,
        HeadScanOptions {
            detectors: patterns.to_vec(),
            ..HeadScanOptions::default()
        },
    );
    for t in &texts {
        scan.add(&lm.model, t).unwrap();
    }
    for ((p, got), want) in scan.detector_scores().iter().zip(&tables) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{p}: {g} vs {w}");
        }
    }
}

#[test]
fn bad_sequences_are_errors_naming_them() {
    let device = Device::flex();
    let model = load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), &device)
        .unwrap()
        .model;
    let e = detect_heads(
        &model,
        &[],
        HeadPattern::Induction,
        DetectOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sequences"), "{e}");
    let e = detect_heads(
        &model,
        &[vec![1, 2, 3], vec![4]],
        HeadPattern::Induction,
        DetectOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sequence 1 of 1 token"), "{e}");
    let all_out = DetectOptions {
        exclude_bos: true,
        exclude_current_token: true,
        ..DetectOptions::default()
    };
    let e = detect_heads(&model, &[vec![1, 2]], HeadPattern::PreviousToken, all_out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exclude_bos") && e.contains("sequence 0"), "{e}");
}
