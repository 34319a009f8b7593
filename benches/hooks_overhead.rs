//! Hook overhead measured interleaved, for noisy shared machines: each round runs the forward
//! with no hook set, with an empty `HookSet`, and capturing every default hook point, one after
//! the other, so drift hits the three alike. The table gives each variant's median time, and
//! its ratio to "no hooks" taken round by round (the median of the per-round ratios, with the
//! quartiles), which a slow spell of the machine moves far less than a ratio of two medians
//! taken over different rounds. `cargo bench -p burnlens-benches --bench hooks_overhead`
//! (ndarray and flex; wgpu with `BURNLENS_BENCH_WGPU=1`). Results: docs/PERFORMANCE.md.

use burnlens_benches::{
    backends, batch, gpt2_small, median, per_round_ratios, shape_wanted, time_forward_ms,
};
use burnlens_hooks::{HookSet, Selector};
use burnlens_model::NoHooks;

/// A variant's per-round ratio to another, as "median [q1, q3]".
fn paired_ratio(a: &[f64], b: &[f64]) -> String {
    let [q1, m, q3] = per_round_ratios(a, b);
    format!("{m:.3} [{q1:.3}, {q3:.3}]")
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
            time_forward_ms(&model, &input, &mut NoHooks);
            let (mut none, mut empty, mut full) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                // Rotate the order each round so no variant always follows another.
                for k in 0..3 {
                    match (round + k) % 3 {
                        0 => none.push(time_forward_ms(&model, &input, &mut NoHooks)),
                        1 => empty.push(time_forward_ms(&model, &input, &mut HookSet::new())),
                        _ => {
                            let mut set = HookSet::new();
                            set.capture(Selector::all());
                            full.push(time_forward_ms(&model, &input, &mut set));
                        }
                    }
                }
            }
            let ms = |v: &[f64]| format!("{:.1}", median(v));
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
