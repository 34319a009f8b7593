//! Load → cache → patch → print, on the model organism: which residual-stream states carry
//! the fact that Jessop Emma lives in Paris? The clean run's `resid_pre` at each (layer,
//! position) is patched into the run on another person, one at a time, and scored by the
//! normalized logit difference ` Paris` − ` Nairobi` (1: the clean answer is back).
//!
//! `cargo run -p burnlens --example quickstart`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    let patched = run(&lm)?;
    for (layer, row) in patched.values.chunks(patched.shape[1]).enumerate() {
        println!("resid_pre {layer}: {row:.2?}");
    }
    Ok(())
}

/// The `[layer, pos]` sweep.
pub fn run(lm: &LoadedModel) -> burnlens::Result<PatchResult> {
    let clean = lm.batch("Jessop Emma lives in")?;
    let corrupted = lm.batch("Ingram Nathan lives in")?;
    let (clean_logits, clean_cache) = lm.run_with_cache(&clean, Selector::all())?;
    let (paris, nairobi) = (lm.token(" Paris")?, lm.token(" Nairobi")?);
    let metric =
        NormalizedLogitDiff::new(&[paris], &[nairobi], clean_logits, lm.logits(&corrupted)?)?;
    Ok(patch_sweep(
        &lm.model,
        &corrupted,
        &clean_cache,
        Sweep::RESID_PRE,
        &metric,
    )?)
}
