//! Prompt-prepend search on GPT-2 small's shapes, burnlens against PyTorch in one run on one
//! machine.
//!
//! The search scores every vocabulary token as a first token before a target string (the
//! target's mean next-token loss after it) and keeps the lowest. Its cost is one forward per
//! candidate, so the benchmark times [`prepend_losses`] on `N` candidates spread over the
//! vocabulary (`BURNLENS_BENCH_PREPEND_N`, default 512; batches of 128, the `xtask prepend`
//! default) before an 8-token target, and projects the time of one round over all 50257
//! tokens. With `BURNLENS_ORACLE_PYTHON=/path/to/venv/bin/python` the same checkpoint and
//! candidates go through `scripts/reference/bench_prepend.py` (transformers' GPT2LMHeadModel,
//! PyTorch CPU) first, and the table gives the ratio and the largest difference between the
//! two sides' losses. With `BURNLENS_BENCH_PREPEND_FULL=1` it also runs the whole one-token
//! search on flex and reports its wall time.
//!
//! `RAYON_NUM_THREADS=2 BURNLENS_ORACLE_PYTHON=... cargo bench -p burnlens-benches --bench prepend`
//! Results: docs/PERFORMANCE.md.

use std::time::Instant;

use burnlens_benches::{backends, batch, gpt2_small_checkpoint, python_anchor};
use burnlens_experiments::{Observer, SearchOptions, prepend_losses, prepend_search};
use burnlens_model::{BackendKind, load};
use serde_json::{Value, json};

const VOCAB: usize = 50257;
const BATCH: usize = 128;

fn main() {
    let dir = gpt2_small_checkpoint();
    let n: usize = std::env::var("BURNLENS_BENCH_PREPEND_N")
        .ok()
        .map(|v| v.parse().expect("BURNLENS_BENCH_PREPEND_N: a number"))
        .unwrap_or(512)
        .clamp(1, VOCAB);
    let candidates: Vec<u32> = (0..n).map(|i| (i * VOCAB / n) as u32).collect();
    let target: Vec<u32> = batch(1, 8).row(0).to_vec();
    let job = dir.join("prepend_job.json");
    std::fs::write(
        &job,
        json!({"target": target, "candidates": candidates, "batch": BATCH}).to_string(),
    )
    .expect("job");

    let torch: Option<Value> = python_anchor(
        "bench_prepend.py",
        &dir,
        &[("--job", &job)],
        &dir.join("prepend_torch.json"),
    );
    let torch_s = torch.as_ref().and_then(|t| t["seconds"].as_f64());
    let torch_losses: Option<Vec<f32>> = torch.as_ref().map(|t| {
        t["losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    });

    println!(
        "{n} candidates × ({} target tokens + 1), batches of {BATCH}; one full round = {VOCAB} candidates",
        target.len()
    );
    println!(
        "| side | seconds ({n} candidates) | candidates/s | projected full round (min) | PyTorch ÷ burnlens | max abs diff vs PyTorch |"
    );
    println!("|---|---|---|---|---|---|");
    if let Some(s) = torch_s {
        println!(
            "| PyTorch {} | {s:.2} | {:.0} | {:.1} | 1.0 | |",
            torch.as_ref().unwrap()["torch"].as_str().unwrap_or("?"),
            n as f64 / s,
            s * VOCAB as f64 / n as f64 / 60.0
        );
    }
    for backend in backends() {
        let device = backend.device().expect("device");
        let model = load(dir.to_str().unwrap(), &device).expect("load").model;
        // Warm-up.
        prepend_losses(&model, &candidates[..1], &[], &target).unwrap();
        let t0 = Instant::now();
        let mut losses = Vec::with_capacity(n);
        for chunk in candidates.chunks(BATCH) {
            losses.extend(prepend_losses(&model, chunk, &[], &target).unwrap());
        }
        let s = t0.elapsed().as_secs_f64();
        let diff = torch_losses.as_ref().map(|t| {
            t.iter()
                .zip(&losses)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        });
        println!(
            "| burnlens {} | {s:.2} | {:.0} | {:.1} | {} | {} |",
            backend.name(),
            n as f64 / s,
            s * VOCAB as f64 / n as f64 / 60.0,
            torch_s.map_or("–".into(), |t| format!("{:.2}×", t / s)),
            diff.map_or("–".into(), |d| format!("{d:.1e}")),
        );
    }
    if std::env::var("BURNLENS_BENCH_PREPEND_FULL").is_ok_and(|x| x == "1") {
        let device = BackendKind::Flex.device().expect("flex");
        let model = load(dir.to_str().unwrap(), &device).expect("load").model;
        let t0 = Instant::now();
        let options = SearchOptions {
            batch: BATCH,
            observer: Observer::new(move |d, t| {
                if d % (BATCH * 40) == 0 || d == t {
                    eprintln!("{d}/{t} candidates, {:.0} s", t0.elapsed().as_secs_f64());
                }
            }),
            ..SearchOptions::default()
        };
        let found = prepend_search(&model, &target, &options).unwrap();
        println!(
            "full one-token search on flex: {:.1} min, best first token {} (loss {:.4})",
            t0.elapsed().as_secs_f64() / 60.0,
            found.prefix[0],
            found.rounds[0].loss
        );
    }
}
