//! Loading checkpoints of GPT-2 small's, medium's, large's and XL's shapes, burnlens against
//! transformers' `from_pretrained` in one run on one machine: load time (weights and
//! tokenizer), peak resident memory, and a 1 × 20 forward.
//!
//! Each size's seeded random checkpoint is written once to `target/bench-gpt2-<size>` (as
//! `cargo xtask fixtures --gpt2-random DIR --size <size>` writes it). burnlens loads it in a
//! child process of this benchmark (flex, the default backend), so that the peak memory
//! (`VmHWM`) is the load's alone; with `BURNLENS_ORACLE_PYTHON=/path/to/venv/bin/python`,
//! `scripts/reference/bench_load.py` loads the same directory with transformers.
//!
//! `RAYON_NUM_THREADS=2 BURNLENS_ORACLE_PYTHON=... cargo bench -p burnlens-benches --bench load`
//! (`BURNLENS_BENCH_SIZES=small,medium,large,xl`, default `small,medium`). Results:
//! docs/PERFORMANCE.md.

use std::path::Path;
use std::time::Instant;

use burnlens_benches::{batch, gpt2_checkpoint, python_anchor};
use burnlens_model::{BackendKind, load};
use serde_json::{Value, json};

const CHILD: &str = "BURNLENS_LOAD_CHILD";

/// The process's peak resident memory in bytes (`VmHWM`).
fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// In the child: load `dir`, run two 1 × 20 forwards, print the timings and the peak memory.
fn child(dir: &str) {
    let device = BackendKind::Flex.device().expect("flex");
    let t0 = Instant::now();
    let lm = load(dir, &device).expect("load");
    let load_s = t0.elapsed().as_secs_f64();
    let input = batch(1, 20);
    let t1 = Instant::now();
    lm.model.logits(&input).expect("forward");
    let first = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    lm.model.logits(&input).expect("forward");
    let second = t2.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"load_seconds": load_s, "first_forward_seconds": first,
               "forward_seconds": second, "vm_hwm": vm_hwm()})
    );
}

/// Loads `dir` in a child process; the best of three loads, the largest peak.
fn burnlens(dir: &Path) -> (f64, f64, u64) {
    let (mut load_s, mut fwd, mut peak) = (f64::INFINITY, f64::INFINITY, 0);
    for _ in 0..3 {
        let out = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
            .env(CHILD, dir)
            .output()
            .expect("child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("child JSON");
        load_s = load_s.min(v["load_seconds"].as_f64().unwrap());
        fwd = fwd.min(v["forward_seconds"].as_f64().unwrap());
        peak = peak.max(v["vm_hwm"].as_u64().unwrap());
    }
    (load_s, fwd, peak)
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(&dir);
        return;
    }
    let sizes = std::env::var("BURNLENS_BENCH_SIZES").unwrap_or_else(|_| "small,medium".into());
    println!(
        "| size | file (GB) | burnlens load (s) | transformers load (s) | transformers ÷ burnlens | burnlens peak (GB) | ÷ file | transformers peak (GB; after imports) | burnlens 1 × 20 forward (ms) | transformers (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for size in sizes.split(',').map(str::trim) {
        let dir = gpt2_checkpoint(size, false);
        let file = std::fs::metadata(dir.join("model.safetensors"))
            .expect("weights")
            .len();
        let (load_s, fwd, peak) = burnlens(&dir);
        let anchor = python_anchor(
            "bench_load.py",
            &dir,
            &[],
            &dir.join("transformers_load.json"),
        );
        let (tl, ratio, tpeak, tfwd) = match anchor {
            Some(a) => {
                let t = a["transformers_seconds"].as_f64().unwrap()
                    + a["tokenizer_seconds"].as_f64().unwrap();
                let hwm = a["vm_hwm"].as_u64().unwrap();
                let base = a["rss_after_imports"].as_u64().unwrap();
                (
                    format!("{t:.2}"),
                    format!("{:.2}×", t / load_s),
                    format!("{:.2} ({:.2})", gb(hwm), gb(hwm.saturating_sub(base))),
                    format!("{:.0}", a["forward_seconds"].as_f64().unwrap() * 1e3),
                )
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {size} | {:.2} | {load_s:.2} | {tl} | {ratio} | {:.2} | {:.2} | {tpeak} | {:.0} | {tfwd} |",
            gb(file),
            gb(peak),
            peak as f64 / file as f64,
            fwd * 1e3
        );
    }
}
