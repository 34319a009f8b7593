//! Activation patching, burnlens against TransformerLens in one run on one machine.
//!
//! GPT-2 small's shapes with seeded random weights, one 20-token clean/corrupted pair, the
//! `resid_pre`, `attn_out`, `mlp_out` and head-out-all-positions sweeps with the mean logit
//! difference at the last position as the metric. burnlens runs its batched engine (and, with
//! `BURNLENS_BENCH_NAIVE=1`, the naive one-forward-per-patch engine) on ndarray and flex; with
//! `BURNLENS_ORACLE_PYTHON=/path/to/venv/bin/python` the same checkpoint and pair go through
//! `scripts/reference/bench_patching.py` (TransformerLens 3.9.0, PyTorch CPU) first, and the
//! table gives the ratios and the largest difference between the two results.
//!
//! `RAYON_NUM_THREADS=2 BURNLENS_ORACLE_PYTHON=... cargo bench -p burnlens-benches --bench patching`
//! (wgpu too with `BURNLENS_BENCH_WGPU=1`). Results: docs/PERFORMANCE.md.

use std::time::Instant;

use burn::tensor::Tensor;
use burnlens_benches::{backends, batch, gpt2_small_checkpoint, python_anchor};
use burnlens_experiments::{Engine, LastPosition, PatchOptions, Sweep, patch_sweep_with};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_metrics::{last_position, logit_diff};
use burnlens_model::{TokenBatch, load};
use serde_json::{Value, json};

const SWEEPS: [Sweep; 4] = [
    Sweep::RESID_PRE,
    Sweep::ATTN_OUT,
    Sweep::MLP_OUT,
    Sweep::HEAD_OUT_ALL_POS,
];

fn main() {
    let dir = gpt2_small_checkpoint();
    let clean_ids: Vec<u32> = batch(1, 20).row(0).to_vec();
    let mut corrupted_ids = clean_ids.clone();
    corrupted_ids[3] = (corrupted_ids[3] + 1234) % 50257;
    corrupted_ids[11] = (corrupted_ids[11] + 777) % 50257;
    let (answer, foil) = (vec![464u32], vec![383u32]);
    let pair =
        json!({"clean": [clean_ids], "corrupted": [corrupted_ids], "answer": answer, "foil": foil});
    let pair_path = dir.join("pair.json");
    std::fs::write(&pair_path, pair.to_string()).expect("pair");

    let tl: Option<Value> = python_anchor(
        "bench_patching.py",
        &dir,
        &[("--pair", &pair_path)],
        &dir.join("transformer_lens.json"),
    );
    // The naive engine takes minutes per backend on GPT-2 small: opt in.
    let naive_too = std::env::var("BURNLENS_BENCH_NAIVE").is_ok_and(|x| x == "1");

    println!(
        "| backend | sweep | patches | TransformerLens (s) | burnlens naive (s) | burnlens batched (s) | TL ÷ batched | max abs diff vs TL |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for backend in backends() {
        let device = backend.device().expect("device");
        let model = load(dir.to_str().unwrap(), &device).expect("load").model;
        let clean = TokenBatch::single(&clean_ids).unwrap();
        let corrupted = TokenBatch::single(&corrupted_ids).unwrap();
        let metric = LastPosition::new(|logits: Tensor<3>| {
            Ok(logit_diff(last_position(logits), &answer, &foil)?.mean())
        });
        // Warm-up.
        model.logits(&corrupted).unwrap();
        let (mut tl_total, mut naive_total, mut fast_total) = (0.0, 0.0, 0.0);
        let t0 = Instant::now();
        let (_, cache) = run_with_cache(&model, &clean, Selector::all()).unwrap();
        let cache_s = t0.elapsed().as_secs_f64();
        for sweep in SWEEPS {
            let name = sweep.to_string();
            let name = name.as_str();
            let run = |engine| {
                let t0 = Instant::now();
                let r = patch_sweep_with(
                    &model,
                    &corrupted,
                    &cache,
                    sweep,
                    &metric,
                    &PatchOptions::default().engine(engine),
                )
                .unwrap();
                (r, t0.elapsed().as_secs_f64())
            };
            let naive = naive_too.then(|| run(Engine::Naive));
            // Best of three for the batched engine (it is short enough to repeat).
            let mut fast_s = f64::INFINITY;
            let mut fast = None;
            for _ in 0..3 {
                let (r, s) = run(Engine::default());
                fast_s = fast_s.min(s);
                fast = Some(r);
            }
            let fast = fast.unwrap();
            let max_diff = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max)
            };
            if let Some((naive, _)) = &naive {
                assert!(
                    max_diff(&naive.values, &fast.values) <= 1e-5,
                    "{name}: engines disagree"
                );
            }
            let naive_s = naive.as_ref().map(|(_, s)| *s);
            let (tl_s, diff) = match &tl {
                Some(tl) => {
                    let s = &tl["sweeps"][name];
                    let values: Vec<f32> = s["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap() as f32)
                        .collect();
                    (s["seconds"].as_f64(), Some(max_diff(&values, &fast.values)))
                }
                None => (None, None),
            };
            tl_total += tl_s.unwrap_or(0.0);
            naive_total += naive_s.unwrap_or(0.0);
            fast_total += fast_s;
            let opt =
                |x: Option<f64>, p: usize| x.map_or("–".to_string(), |v| format!("{v:.p$}"));
            println!(
                "| {} | {name} | {} | {} | {} | {fast_s:.3} | {} | {} |",
                backend.name(),
                fast.values.len(),
                opt(tl_s, 2),
                opt(naive_s, 3),
                opt(tl_s.map(|t| t / fast_s), 1),
                diff.map_or("–".to_string(), |d| format!("{d:.1e}")),
            );
        }
        let tl_cache = tl.as_ref().and_then(|t| t["cache_seconds"].as_f64());
        let tl_all = tl.as_ref().map(|_| tl_total + tl_cache.unwrap_or(0.0));
        let ours = fast_total + cache_s;
        println!(
            "| {} | **all four** (with the clean cache) | | {} | {} | {ours:.3} | {} | |",
            backend.name(),
            tl_all.map_or("–".into(), |t| format!("{t:.2}")),
            if naive_too {
                format!("{:.3}", naive_total + cache_s)
            } else {
                "–".into()
            },
            tl_all.map_or("–".into(), |t| format!("**{:.1}×**", t / ours)),
        );
    }
}
