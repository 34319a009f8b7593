//! What hooks cost: the GPT-2-small-shaped forward pass with no hook set, with an empty
//! `HookSet`, and with a `HookSet` capturing every default hook point (TransformerLens's
//! `run_with_cache`), on ndarray and flex (and wgpu with `BURNLENS_BENCH_WGPU=1`).
//! Results are in docs/PERFORMANCE.md.

use burnlens_benches::{backends, batch, gpt2_small};
use burnlens_hooks::{HookSet, Selector};
use burnlens_model::NoHooks;
use criterion::{Criterion, criterion_group, criterion_main};

fn hooks(c: &mut Criterion) {
    for backend in backends() {
        let model = gpt2_small(backend);
        let device = model.device();
        for (b, t) in [(1, 20), (8, 128)] {
            let input = batch(b, t);
            let mut group =
                c.benchmark_group(format!("hooks/gpt2-small/{b}x{t}/{}", backend.name()));
            group.sample_size(if b * t > 100 { 10 } else { 30 });
            // The three variants run back to back, so slow drift on a noisy machine hits
            // them alike.
            group.bench_function("no hooks", |bench| {
                bench.iter(|| {
                    let logits = model.forward(&input, None, &mut NoHooks).expect("forward");
                    device.sync().expect("sync");
                    logits
                })
            });
            group.bench_function("empty hook set", |bench| {
                bench.iter(|| {
                    let mut set = HookSet::new();
                    let logits = model.forward(&input, None, &mut set).expect("forward");
                    device.sync().expect("sync");
                    logits
                })
            });
            group.bench_function("cache every hook", |bench| {
                bench.iter(|| {
                    let mut set = HookSet::new();
                    set.capture(Selector::all());
                    let logits = model.forward(&input, None, &mut set).expect("forward");
                    device.sync().expect("sync");
                    (logits, set.take_cache())
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, hooks);
criterion_main!(benches);
