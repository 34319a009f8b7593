//! Shared set-up for burnlens's criterion benchmarks (see `forward.rs`).

use burnlens_model::{BackendKind, Gpt2, Gpt2Config, Hooks, TokenBatch};

/// The backends to benchmark: ndarray and flex always; wgpu only when
/// `BURNLENS_BENCH_WGPU=1` (on lavapipe a GPT-2-small forward takes seconds).
/// `BURNLENS_BENCH_BACKENDS=ndarray,flex,…` keeps only the named ones.
pub fn backends() -> Vec<BackendKind> {
    let mut v = vec![BackendKind::NdArray, BackendKind::Flex];
    if std::env::var("BURNLENS_BENCH_WGPU").is_ok_and(|x| x == "1") {
        v.push(BackendKind::Wgpu);
    }
    if let Ok(only) = std::env::var("BURNLENS_BENCH_BACKENDS") {
        v.retain(|b| only.split(',').any(|name| name.trim() == b.name()));
    }
    v
}

/// Whether the shape `batch × len` is to be benchmarked: every shape, unless
/// `BURNLENS_BENCH_SHAPES=8x128,…` names the ones to keep.
pub fn shape_wanted(batch: usize, len: usize) -> bool {
    std::env::var("BURNLENS_BENCH_SHAPES").map_or(true, |only| {
        only.split(',')
            .any(|s| s.trim() == format!("{batch}x{len}"))
    })
}

/// One timed forward of `input` through `model` with `hooks`, in milliseconds, waiting for the
/// device; the logits are dropped after the clock stops.
pub fn time_forward_ms(model: &Gpt2, input: &TokenBatch, hooks: &mut dyn Hooks) -> f64 {
    let start = std::time::Instant::now();
    let logits = model.forward(input, None, hooks).expect("forward");
    model.device().sync().expect("sync");
    let elapsed = start.elapsed();
    drop(logits);
    elapsed.as_secs_f64() * 1e3
}

/// The median of `v` (the upper middle for an even length).
pub fn median(v: &[f64]) -> f64 {
    quantiles(v.to_vec())[1]
}

/// The smallest value of `v`.
pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The per-round ratios `a[i] / b[i]` of two variants timed in the same rounds, as
/// `[first quartile, median, third quartile]`: a slow spell of the machine moves them far
/// less than a ratio of two medians taken over different rounds.
pub fn per_round_ratios(a: &[f64], b: &[f64]) -> [f64; 3] {
    quantiles(a.iter().zip(b).map(|(a, b)| a / b).collect())
}

/// First quartile, median and third quartile (nearest rank) of `v`.
fn quantiles(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    [q(0.25), q(0.5), q(0.75)]
}

/// A GPT-2-small-shaped model with seeded random weights on `backend`.
pub fn gpt2_small(backend: BackendKind) -> Gpt2 {
    let device = backend.device().expect("backend device");
    device.seed(0);
    Gpt2Config::gpt2_small().init(&device)
}

/// A `[batch, len]` batch of pseudo-random token ids below 50257.
pub fn batch(batch: usize, len: usize) -> TokenBatch {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let rows = (0..batch)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 50257) as u32
                })
                .collect()
        })
        .collect();
    TokenBatch::new(rows, None).expect("rectangular batch")
}

/// The workspace root.
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the Python anchor `scripts/reference/<script>` with `BURNLENS_ORACLE_PYTHON`
/// (`--model <model> <args…> --out <out> --threads 2`) and returns the JSON it wrote; `None`
/// when the variable is not set (the benchmark then times burnlens only).
///
/// # Panics
/// When the script fails or writes no JSON: a benchmark has no one to report an error to.
pub fn python_anchor(
    script: &str,
    model: &std::path::Path,
    args: &[(&str, &std::path::Path)],
    out: &std::path::Path,
) -> Option<serde_json::Value> {
    let Ok(python) = std::env::var("BURNLENS_ORACLE_PYTHON") else {
        eprintln!("BURNLENS_ORACLE_PYTHON is not set: timing burnlens only");
        return None;
    };
    let mut cmd = std::process::Command::new(python);
    cmd.arg(workspace().join("scripts/reference").join(script))
        .args(["--model", model.to_str().expect("utf-8 path")]);
    for (flag, path) in args {
        cmd.args([*flag, path.to_str().expect("utf-8 path")]);
    }
    let status = cmd
        .args(["--out", out.to_str().expect("utf-8 path")])
        .args(["--threads", "2"])
        .status()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(status.success(), "{script} failed");
    Some(serde_json::from_str(&std::fs::read_to_string(out).expect("anchor output")).expect("JSON"))
}

/// Writes (once per run) GPT-2 small's shapes with seeded random weights, and GPT-2's real BPE
/// files, to `target/bench-gpt2-small`: the checkpoint both burnlens and the Python anchors load
/// (the loader wants a tokenizer; the benchmarks feed ids). Returns its directory.
pub fn gpt2_small_checkpoint() -> std::path::PathBuf {
    gpt2_checkpoint("small", true)
}

/// The seeded random checkpoint of a GPT-2 size (`small`, `medium`, `large`, `xl`: see
/// `Gpt2Config::gpt2_size`) in `target/bench-gpt2-<size>`, with GPT-2's BPE files; written when
/// `rewrite` or when it is not there yet. Returns its directory.
pub fn gpt2_checkpoint(size: &str, rewrite: bool) -> std::path::PathBuf {
    let dir = workspace().join(format!("target/bench-gpt2-{size}"));
    if !rewrite && dir.join("model.safetensors").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).expect("bench dir");
    let device = BackendKind::Flex.device().expect("flex");
    device.seed(0);
    Gpt2Config::gpt2_size(size)
        .expect("a GPT-2 size")
        .init(&device)
        .save_pretrained(&dir)
        .expect("save checkpoint");
    let bpe = workspace().join("fixtures/gpt2-bpe");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(bpe.join(f), dir.join(f)).expect("copy the BPE files");
    }
    dir
}
