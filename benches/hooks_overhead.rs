//! Hook overhead measured interleaved, for noisy shared machines: each round runs the forward
//! with no hook set, with an empty `HookSet`, and capturing every default hook point, one after
//! the other, so drift hits the three alike; the table gives medians over rounds and the
//! ratios to "no hooks". `cargo bench -p burnlens-benches --bench hooks_overhead`
//! (ndarray and flex; wgpu with `BURNLENS_BENCH_WGPU=1`). Results: docs/PERFORMANCE.md.

use std::time::{Duration, Instant};

use burnlens_benches::{backends, batch, gpt2_small};
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

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    println!(
        "| backend | shape | rounds | no hooks (ms, median / min) | empty hook set | cache every hook | empty ÷ none (median / min) | cache ÷ none (median / min) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for backend in backends() {
        let model = gpt2_small(backend);
        for (b, t, rounds) in [(1, 20, 41), (8, 128, 15)] {
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
            let stats = |v: Vec<Duration>| (*v.iter().min().expect("rounds"), median(v));
            let ((n0, n), (e0, e), (f0, f)) = (stats(none), stats(empty), stats(full));
            let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
            let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
            println!(
                "| {} | {b} × {t} | {rounds} | {} / {} | {} / {} | {} / {} | {:.3} / {:.3} | {:.3} / {:.3} |",
                backend.name(),
                ms(n),
                ms(n0),
                ms(e),
                ms(e0),
                ms(f),
                ms(f0),
                r(e, n),
                r(e0, n0),
                r(f, n),
                r(f0, n0),
            );
        }
    }
}
