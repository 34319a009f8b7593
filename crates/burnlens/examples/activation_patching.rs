//! Activation patching of every attention head at the last position, on in-context
//! retrieval: "… Bob is from Japan. … Bob is from" → " Japan". The corrupted prompt queries
//! another name of the same context. Which heads carry the query? The organism was planted
//! with a two-head circuit (L0H0 brings the name two tokens back to the last position, L1H0
//! matches it and copies the country; `xtask/src/plant.rs`).
//!
//! `cargo run -p burnlens --example activation_patching`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    let found = run(&lm)?;
    println!("clean:     {}\ncorrupted: {}", found.clean, found.corrupted);
    for (layer, row) in found.last_position.iter().enumerate() {
        println!("layer {layer}, heads 0..: {row:.2?}");
    }
    Ok(())
}

/// The sweep at the last position.
pub struct Found {
    /// The clean prompt.
    pub clean: String,
    /// The corrupted prompt.
    pub corrupted: String,
    /// `[layer][head]`: the normalized logit difference with that head's output (`hook_z`)
    /// at the last position patched from the clean run (1: the clean answer is back).
    pub last_position: Vec<Vec<f32>>,
}

/// Sweeps `z` by position and head on one retrieval pair and keeps the last position.
pub fn run(lm: &LoadedModel) -> burnlens::Result<Found> {
    let config = DualConfig {
        form: DualForm::Retrieval,
        n_shots: 3,
        n_prompts: 1,
        seed: 3,
    };
    let pair = generate_dual(&config, Some(&lm.tokenizer))?.remove(0);
    let (clean, corrupted) = (lm.batch(&pair.prompt)?, lm.batch(&pair.corrupted)?);
    let (clean_logits, cache) = lm.run_with_cache(&clean, Selector::kind(HookKind::Z))?;
    let (answer, foil) = (lm.token(&pair.answer)?, lm.token(&pair.foil)?);
    let metric =
        NormalizedLogitDiff::new(&[answer], &[foil], clean_logits, lm.logits(&corrupted)?)?;
    let heads = patch_sweep(
        &lm.model,
        &corrupted,
        &cache,
        Sweep::HEAD_OUT_BY_POS,
        &metric,
    )?;
    let [layers, n_pos, n_heads] = [heads.shape[0], heads.shape[1], heads.shape[2]];
    let last_position = (0..layers)
        .map(|l| {
            (0..n_heads)
                .map(|h| heads.get(&[l, n_pos - 1, h]).unwrap_or(f32::NAN))
                .collect()
        })
        .collect();
    Ok(Found {
        clean: pair.prompt,
        corrupted: pair.corrupted,
        last_position,
    })
}
