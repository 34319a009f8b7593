//! Circuit discovery, burnlens against the reference code in one run on one machine.
//!
//! 1. EAP over the whole edge graph of GPT-2 small's shapes (32,491 edges, seeded random
//!    weights) on 8 clean/corrupted pairs of 16 tokens, the logit difference at the last
//!    position as the metric: burnlens's `CircuitRun::new` + `eap()` (two forwards, one
//!    backward) against hannamw/EAP-IG's `get_scores_eap` (795f560) with TransformerLens 3.9.
//! 2. ACDC at τ = 0.03 and 0.003 (KL to the clean run) on the model organism's retrieval task (8 pairs
//!    with the query's name swapped): burnlens's `acdc` (speculative batches of candidate
//!    removals) against the reference loop of `scripts/reference/acdc_reference.py` (ACDC's
//!    algorithm, one forward per edge over TransformerLens hooks).
//!
//! With `BURNLENS_ORACLE_PYTHON=/path/to/venv/bin/python` (requirements.txt, EAP-IG installed)
//! both references run first through `scripts/reference/bench_circuit.py`, and the tables give
//! the ratios and check the results agree: EAP's scores to 1e-4 of the largest, ACDC's kept
//! edges equal and its metric to 1e-4. Without it, burnlens alone is timed.
//!
//! `RAYON_NUM_THREADS=2 BURNLENS_ORACLE_PYTHON=... cargo bench -p burnlens-benches --bench circuit`
//! Results: docs/PERFORMANCE.md.

use std::time::Instant;

use burnlens_benches::{backends, batch, gpt2_small_checkpoint, python_anchor, workspace};
use burnlens_datasets::{DualConfig, DualForm, generate_dual};
use burnlens_experiments::circuit::{
    AcdcOptions, CircuitMetric, CircuitOptions, CircuitRun, CircuitTask, acdc,
};
use burnlens_model::{BackendKind, load};
use serde_json::{Value, json};

/// ACDC's thresholds: the circuit tests' τ, and a tenth of it (a larger circuit, so more
/// destinations stay connected and are searched).
const TAUS: [f32; 2] = [0.03, 0.003];

/// 8 pairs of 16 pseudo-random tokens, the corrupted prompt differing at positions 3 and 11.
fn eap_task() -> (CircuitTask, Value) {
    let b = batch(8, 16);
    let clean: Vec<Vec<u32>> = (0..8).map(|r| b.row(r).to_vec()).collect();
    let corrupted: Vec<Vec<u32>> = clean
        .iter()
        .map(|row| {
            let mut c = row.clone();
            c[3] = (c[3] + 1234) % 50257;
            c[11] = (c[11] + 777) % 50257;
            c
        })
        .collect();
    let answer: Vec<u32> = (0..8).map(|i| 464 + i).collect();
    let foil: Vec<u32> = (0..8).map(|i| 383 + 7 * i).collect();
    let json = json!({"clean": clean, "corrupted": corrupted, "answer": answer, "foil": foil});
    let task = CircuitTask::new(clean, corrupted, answer, foil).expect("task");
    (task, json)
}

/// The organism's retrieval prompts with the query's name swapped (the circuit tests' task).
fn organism_task() -> (CircuitTask, Value) {
    let device = BackendKind::Flex.device().expect("flex");
    let lm = load(
        workspace().join("fixtures/organism").to_str().unwrap(),
        &device,
    )
    .expect("organism");
    let prompts = generate_dual(
        &DualConfig {
            form: DualForm::Retrieval,
            n_shots: 3,
            n_prompts: 32,
            seed: 11,
        },
        Some(&lm.tokenizer),
    )
    .expect("prompts");
    let pairs: Vec<[String; 4]> = prompts
        .into_iter()
        .map(|p| [p.prompt, p.corrupted, p.answer, p.foil])
        .collect();
    let task = CircuitTask::from_text_of_common_length(&lm.tokenizer, &pairs, 8)
        .expect("task")
        .0;
    let rows = |b: &burnlens_model::TokenBatch| -> Vec<Vec<u32>> {
        (0..b.batch_size()).map(|r| b.row(r).to_vec()).collect()
    };
    let json = json!({
        "clean": rows(task.clean()), "corrupted": rows(task.corrupted()),
        "answer": task.answer(), "foil": task.foil(), "taus": TAUS,
    });
    (task, json)
}

fn main() {
    let dir = gpt2_small_checkpoint();
    let (task, task_json) = eap_task();
    let task_path = dir.join("circuit_task.json");
    std::fs::write(&task_path, task_json.to_string()).expect("task");
    let (otask, otask_json) = organism_task();
    let otask_path = dir.join("acdc_task.json");
    std::fs::write(&otask_path, otask_json.to_string()).expect("organism task");
    let organism = workspace().join("fixtures/organism");
    let anchor: Option<Value> = python_anchor(
        "bench_circuit.py",
        &dir,
        &[
            ("--task", &task_path),
            ("--organism", &organism),
            ("--organism-task", &otask_path),
        ],
        &dir.join("circuit_anchor.json"),
    );

    println!("EAP, GPT-2 small's shapes, 8 pairs × 16 tokens, whole graph:\n");
    println!(
        "| backend | edges | EAP-IG get_scores_eap (s) | burnlens (s) | EAP-IG ÷ burnlens | max abs diff ÷ largest score |"
    );
    println!("|---|---|---|---|---|---|");
    let reference_eap = anchor.as_ref().map(|a| &a["eap"]);
    for backend in backends() {
        let device = backend.device().expect("device");
        let model = load(dir.to_str().unwrap(), &device).expect("load").model;
        model.logits(task.clean()).expect("warm-up");
        let options = CircuitOptions::default().metric(CircuitMetric::LogitDiff);
        let mut best = f64::INFINITY;
        let mut scores = None;
        for _ in 0..3 {
            let t0 = Instant::now();
            let run = CircuitRun::new(&model, &task, &options).expect("run");
            let s = run.eap().expect("eap");
            best = best.min(t0.elapsed().as_secs_f64());
            scores = Some((run.graph().clone(), s));
        }
        let (graph, scores) = scores.expect("three runs");
        let (theirs, ratio, diff) = match reference_eap {
            Some(r) => {
                let want = r["scores"].as_object().expect("scores");
                assert_eq!(want.len(), graph.len(), "one score per edge");
                let max = want
                    .values()
                    .map(|v| v.as_f64().unwrap().abs())
                    .fold(0.0, f64::max);
                let diff = want
                    .iter()
                    .map(|(name, v)| {
                        (f64::from(scores.of(&graph, name).expect("edge")) - v.as_f64().unwrap())
                            .abs()
                    })
                    .fold(0.0, f64::max);
                assert!(
                    diff <= 1e-4 * max,
                    "{}: EAP differs from EAP-IG's by {diff} (largest score {max})",
                    backend.name()
                );
                let s = r["seconds"].as_f64().unwrap();
                (
                    format!("{s:.3}"),
                    format!("{:.2}×", s / best),
                    format!("{:.1e}", diff / max),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {theirs} | {best:.3} | {ratio} | {diff} |",
            backend.name(),
            graph.len()
        );
    }

    println!(
        "\nACDC, KL, the organism's retrieval task (8 pairs); set-up (clean and corrupted runs) included:\n"
    );
    println!(
        "| backend | τ | reference loop (s) | its forwards | burnlens (s) | burnlens forwards | reference ÷ burnlens | same edges | metric diff |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let reference_acdc = anchor.as_ref().map(|a| &a["acdc"]);
    for backend in backends() {
        let device = backend.device().expect("device");
        let model = load(organism.to_str().unwrap(), &device)
            .expect("organism")
            .model;
        model.logits(otask.clean()).expect("warm-up");
        for (k, tau) in TAUS.into_iter().enumerate() {
            let options = CircuitOptions::default().metric(CircuitMetric::Kl);
            let t0 = Instant::now();
            let run = CircuitRun::new(&model, &otask, &options).expect("run");
            let found = acdc(&run, &AcdcOptions::new(tau)).expect("acdc");
            let ours = t0.elapsed().as_secs_f64();
            let g = run.graph();
            let mut kept: Vec<String> = found
                .kept
                .indices()
                .map(|i| g.edges()[i].to_string())
                .collect();
            kept.sort();
            let cells = match reference_acdc {
                Some(r) => {
                    let want = &r["runs"][k];
                    let names: Vec<String> = want["kept"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect();
                    assert_eq!(kept, names, "{} τ {tau}: ACDC's kept edges", backend.name());
                    let diff =
                        (f64::from(found.metric) - want["metric_value"].as_f64().unwrap()).abs();
                    assert!(
                        diff <= 1e-4,
                        "{} τ {tau}: metric differs by {diff}",
                        backend.name()
                    );
                    let s =
                        r["setup_seconds"].as_f64().unwrap() + want["seconds"].as_f64().unwrap();
                    [
                        format!("{s:.2}"),
                        want["forwards"].to_string(),
                        format!("{:.1}×", s / ours),
                        format!("yes ({})", kept.len()),
                        format!("{diff:.1e}"),
                    ]
                }
                None => [
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("{kept:?}"),
                    "-".into(),
                ],
            };
            println!(
                "| {} | {tau} | {} | {} | {ours:.3} | {} | {} | {} | {} |",
                backend.name(),
                cells[0],
                cells[1],
                found.forwards,
                cells[2],
                cells[3],
                cells[4]
            );
        }
    }
}
