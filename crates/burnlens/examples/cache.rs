//! Cache a run and read it: the attention patterns of layer 0 on an in-context retrieval
//! prompt. The organism was planted with two offset heads in layer 0 (head 0 attends two
//! tokens back, head 1 three tokens back; `xtask/src/plant.rs`); the cache shows whether
//! training kept them.
//!
//! `cargo run -p burnlens --example cache`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    let found = run(&lm)?;
    println!("{}", found.prompt);
    println!(
        "cached {} hook points, {} KiB",
        found.points,
        found.bytes / 1024
    );
    for (head, by_offset) in found.attention_by_offset.iter().enumerate() {
        println!("L0H{head}: mean attention 1/2/3 tokens back {by_offset:.2?}");
    }
    Ok(())
}

/// What the cache shows.
pub struct Found {
    /// The prompt.
    pub prompt: String,
    /// Hook points in the cache.
    pub points: usize,
    /// Their memory.
    pub bytes: usize,
    /// Per head of layer 0: the mean attention from each query to the key 1, 2 and 3 tokens
    /// back (queries from position 4 on).
    pub attention_by_offset: Vec<[f32; 3]>,
}

/// Caches every default hook point of one retrieval prompt and reads layer 0's pattern.
pub fn run(lm: &LoadedModel) -> burnlens::Result<Found> {
    let config = DualConfig {
        form: DualForm::Retrieval,
        n_shots: 3,
        n_prompts: 1,
        seed: 7,
    };
    let prompt = generate_dual(&config, Some(&lm.tokenizer))?
        .remove(0)
        .prompt;
    let (_logits, cache) = lm.run_with_cache(&lm.batch(&prompt)?, Selector::all())?;
    let pattern = cache.get4(("pattern", 0))?; // [batch, head, query, key]
    let [_, heads, n, _] = pattern.dims();
    let p: Vec<f32> = pattern
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32");
    let at = |h: usize, q: usize, k: usize| p[(h * n + q) * n + k];
    let attention_by_offset = (0..heads)
        .map(|h| {
            let mean = |o: usize| (4..n).map(|q| at(h, q, q - o)).sum::<f32>() / (n - 4) as f32;
            [mean(1), mean(2), mean(3)]
        })
        .collect();
    Ok(Found {
        prompt,
        points: cache.len(),
        bytes: cache.memory_bytes(),
        attention_by_offset,
    })
}
