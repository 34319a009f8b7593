//! Hook overhead measured interleaved, for noisy shared machines: each round runs the forward
//! with no hook set, with an empty `HookSet`, capturing every default hook point, and capturing
//! every point then reading every point of the cache (after `ActivationCache::stack_all`), one
//! after the other, so drift hits the four alike. (A forward run as blocks of rows leaves each
//! capture as blocks, stacked when first read: the last variant includes that stacking.) The
//! table gives each variant's median time, and its ratio to "no hooks" taken round by round
//! (the median of the per-round ratios, with the quartiles), which a slow spell of the machine
//! moves far less than a ratio of two medians taken over different rounds.
//! `cargo bench -p burnlens-benches --bench hooks_overhead` (ndarray and flex; wgpu with
//! `BURNLENS_BENCH_WGPU=1`). Results: docs/PERFORMANCE.md.

use burnlens_benches::{
    backends, batch, gpt2_small, median, per_round_ratios, shape_wanted, time_forward_ms,
};
use burnlens_hooks::{HookSet, Selector};
use burnlens_model::{Gpt2, NoHooks, TokenBatch};

/// A variant's per-round ratio to another, as "median [q1, q3]".
fn paired_ratio(a: &[f64], b: &[f64]) -> String {
    let [q1, m, q3] = per_round_ratios(a, b);
    format!("{m:.3} [{q1:.3}, {q3:.3}]")
}

/// A forward capturing every default point, then reading every point of the cache (stacking
/// the blocks of rows of a row-parallel forward first, in parallel), in milliseconds.
fn time_capture_and_read_ms(model: &Gpt2, input: &TokenBatch) -> f64 {
    let mut set = HookSet::new();
    set.capture(Selector::all());
    let start = std::time::Instant::now();
    let logits = model.forward(input, None, &mut set).expect("forward");
    let cache = set.cache();
    cache.stack_all();
    for p in cache.points() {
        cache.get(p).expect("captured");
    }
    model.device().sync().expect("sync");
    let elapsed = start.elapsed();
    drop((logits, set));
    elapsed.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    println!(
        "| backend | shape | rounds | no hooks (ms, median) | empty hook set | cache every hook | cache, then stack and read it all | empty ÷ none (per round: median [quartiles]) | cache ÷ none (per round) | cache + read ÷ none (per round) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for backend in backends() {
        let model = gpt2_small(backend);
        for (b, t, rounds) in [(1, 20, 41), (8, 128, 15)] {
            if !shape_wanted(b, t) {
                continue;
            }
            let input = batch(b, t);
            // Warm-up (first calls allocate and, on wgpu, compile).
            time_forward_ms(&model, &input, &mut NoHooks);
            let (mut none, mut empty, mut full, mut read) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                // Rotate the order each round so no variant always follows another.
                for k in 0..4 {
                    match (round + k) % 4 {
                        0 => none.push(time_forward_ms(&model, &input, &mut NoHooks)),
                        1 => empty.push(time_forward_ms(&model, &input, &mut HookSet::new())),
                        2 => {
                            let mut set = HookSet::new();
                            set.capture(Selector::all());
                            full.push(time_forward_ms(&model, &input, &mut set));
                        }
                        _ => read.push(time_capture_and_read_ms(&model, &input)),
                    }
                }
            }
            let ms = |v: &[f64]| format!("{:.1}", median(v));
            println!(
                "| {} | {b} × {t} | {rounds} | {} | {} | {} | {} | {} | {} | {} |",
                backend.name(),
                ms(&none),
                ms(&empty),
                ms(&full),
                ms(&read),
                paired_ratio(&empty, &none),
                paired_ratio(&full, &none),
                paired_ratio(&read, &none),
            );
        }
    }
}
