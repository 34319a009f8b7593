//! GPT-2-small-shaped forward pass (random weights): batch 1 × 20 tokens and 8 × 128, on
//! ndarray and flex (and wgpu with `BURNLENS_BENCH_WGPU=1`). The PyTorch anchor is
//! `scripts/reference/bench_forward.py`; both tables are in docs/PERFORMANCE.md.

use burnlens_benches::{backends, batch, gpt2_small};
use criterion::{Criterion, criterion_group, criterion_main};

fn forward(c: &mut Criterion) {
    for backend in backends() {
        let model = gpt2_small(backend);
        let device = model.device();
        for (b, t) in [(1, 20), (8, 128)] {
            let input = batch(b, t);
            let mut group = c.benchmark_group(format!("forward/gpt2-small/{b}x{t}"));
            group.sample_size(if b * t > 100 { 10 } else { 30 });
            group.bench_function(backend.name(), |bench| {
                bench.iter(|| {
                    let logits = model.logits(&input).expect("forward");
                    device.sync().expect("sync");
                    logits
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
