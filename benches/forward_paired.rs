//! burnlens's forward against PyTorch's, alternated in one run: each round times one
//! burnlens forward and one transformers forward (`scripts/reference/bench_forward.py --serve`,
//! a process kept alive for the whole run, `torch.set_num_threads(2)`), in an order that
//! alternates every round, with a pause between them so neither side's idle threads are still
//! spinning when the other starts. The machine's drift then hits both sides alike, and the
//! ratio of medians is what to read. GPT-2 small's shapes, random weights, 1 × 20 and 8 × 128.
//!
//! `BURNLENS_ORACLE_PYTHON=/path/to/python cargo bench -p burnlens-benches --bench forward_paired`
//! (ndarray and flex; wgpu with `BURNLENS_BENCH_WGPU=1`). Without the variable it says so and
//! exits. Results: docs/PERFORMANCE.md.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use burnlens_benches::{
    backends, batch, gpt2_small, median, min, per_round_ratios, shape_wanted, time_forward_ms,
    workspace,
};
use burnlens_model::NoHooks;

/// The PyTorch side: a `bench_forward.py --serve` process.
struct Torch {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Torch {
    fn start(python: &str) -> Self {
        let mut child = Command::new(python)
            .arg(workspace().join("scripts/reference/bench_forward.py"))
            .args(["--serve", "--threads", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {python}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = String::new();
        stdout.read_line(&mut banner).expect("banner");
        eprintln!("PyTorch side: {}", banner.trim());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// One timed forward of shape `b × t`, as measured inside Python.
    fn forward(&mut self, b: usize, t: usize) -> Duration {
        writeln!(self.stdin, "{b}x{t}").expect("write to the PyTorch side");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from the PyTorch side");
        let secs: f64 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the PyTorch side answered {line:?}"));
        Duration::from_secs_f64(secs)
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let Ok(python) = std::env::var("BURNLENS_ORACLE_PYTHON") else {
        eprintln!("BURNLENS_ORACLE_PYTHON is not set: this benchmark needs the PyTorch side");
        return;
    };
    let mut torch = Torch::start(&python);
    let pause = Duration::from_millis(200);
    println!(
        "| backend | shape | rounds | burnlens (ms, median / min) | PyTorch (ms, median / min) | burnlens ÷ PyTorch (ratio of medians) | per-round ratios (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for backend in backends() {
        let model = gpt2_small(backend);
        for (b, t, rounds) in [(1, 20, 31), (8, 128, 11)] {
            if !shape_wanted(b, t) {
                continue;
            }
            let input = batch(b, t);
            let ours = || time_forward_ms(&model, &input, &mut NoHooks);
            // Warm-up on both sides (first calls allocate; PyTorch warms up on its own too).
            ours();
            torch.forward(b, t);
            let (mut rust, mut py) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                let (r, p) = if round % 2 == 0 {
                    let r = ours();
                    std::thread::sleep(pause);
                    (r, torch.forward(b, t))
                } else {
                    let p = torch.forward(b, t);
                    std::thread::sleep(pause);
                    (ours(), p)
                };
                std::thread::sleep(pause);
                rust.push(r);
                py.push(p.as_secs_f64() * 1e3);
            }
            let (rm, pm) = (median(&rust), median(&py));
            println!(
                "| {} | {b} × {t} | {rounds} | {rm:.1} / {:.1} | {pm:.1} / {:.1} | {:.3} | {:.3} |",
                backend.name(),
                min(&rust),
                min(&py),
                rm / pm,
                per_round_ratios(&rust, &py)[1],
            );
        }
    }
}
