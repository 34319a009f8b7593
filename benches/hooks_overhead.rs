//! Hook overhead measured interleaved, for noisy shared machines: each round runs the forward
//! with no hook set, with an empty `HookSet`, and capturing every default hook point, one after
//! the other, so drift hits the three alike. The table gives each variant's median time, and
//! its ratio to "no hooks" taken round by round (the median of the per-round ratios, with the
//! quartiles), which a slow spell of the machine moves far less than a ratio of two medians
//! taken over different rounds. `cargo bench -p burnlens-benches --bench hooks_overhead`
//! (ndarray and flex; wgpu with `BURNLENS_BENCH_WGPU=1`). Results: docs/PERFORMANCE.md.

use std::time::{Duration, Instant};

use burnlens_benches::{backends, batch, gpt2_small, shape_wanted};
use burnlens_hooks::{HookSet, Selector};
use burnlens_model::{Gpt2, Hooks, NoHooks, TokenBatch};

fn time(model: &Gpt2, input: &TokenBatch, hooks: &mut dyn Hooks) -> Duration {
    let start = Instant::now();
    let logits = model.forward(input, None, hooks).expect("forward");
    model.device().sync().expect("sync");
    let elapsed = start.elapsed();
    drop(logits);
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median and quartiles of the per-round ratios `a[i] / b[i]`, as "median [q1, q3]".
fn paired_ratio(a: &[Duration], b: &[Duration]) -> String {
    let mut r: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    let q = |f: f64| r[((r.len() - 1) as f64 * f).round() as usize];
    format!("{:.3} [{:.3}, {:.3}]", q(0.5), q(0.25), q(0.75))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    println!(
        "| backend | shape | rounds | no hooks (ms, median) | empty hook set | cache every hook | empty ÷ none (per round: median [quartiles]) | cache ÷ none (per round) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for backend in backends() {
        let model = gpt2_small(backend);
        for (b, t, rounds) in [(1, 20, 41), (8, 128, 15)] {
            if !shape_wanted(b, t) {
                continue;
            }
            let input = batch(b, t);
            // Warm-up (first calls allocate and, on wgpu, compile).
            time(&model, &input, &mut NoHooks);
            let (mut none, mut empty, mut full) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                // Rotate the order each round so no variant always follows another.
                for k in 0..3 {
                    match (round + k) % 3 {
                        0 => none.push(time(&model, &input, &mut NoHooks)),
                        1 => empty.push(time(&model, &input, &mut HookSet::new())),
                        _ => {
                            let mut set = HookSet::new();
                            set.capture(Selector::all());
                            full.push(time(&model, &input, &mut set));
                        }
                    }
                }
            }
            let ms = |v: &[Duration]| format!("{:.1}", median(v.to_vec()).as_secs_f64() * 1e3);
            println!(
                "| {} | {b} × {t} | {rounds} | {} | {} | {} | {} | {} |",
                backend.name(),
                ms(&none),
                ms(&empty),
                ms(&full),
                paired_ratio(&empty, &none),
                paired_ratio(&full, &none),
            );
        }
    }
}
