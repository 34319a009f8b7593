//! ROME on the organism: rewrite "Jessop Emma lives in Paris" to Tokyo with a rank-one edit
//! of block 0's MLP output weights (the keys' second moment from the organism's own corpus),
//! check a paraphrase and a neighbour, then revert the edit exactly.
//!
//! `cargo run -p burnlens --example rome_edit`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let mut lm = burnlens::organism::load(&Device::flex())?;
    let found = run(&mut lm)?;
    for (prompt, before, after, reverted) in &found.rows {
        println!("{prompt:<36} before{before:<10} edited{after:<10} reverted{reverted}");
    }
    Ok(())
}

/// Completions (one token) of the edited prompt, a paraphrase and a neighbour: before the
/// edit, with it, and after reverting it.
pub struct Found {
    /// `(prompt, before, edited, reverted)`.
    pub rows: Vec<(String, String, String, String)>,
}

/// Edits, evaluates and reverts.
pub fn run(lm: &mut LoadedModel) -> burnlens::Result<Found> {
    let manifest = burnlens::organism::manifest()?;
    let corpus: Vec<Vec<u32>> = (manifest.world.corpus(&manifest.corpus, 1000, 11)?.iter())
        .map(|text| lm.encode(text))
        .collect::<Result<_, _>>()?;
    let config = RomeConfig::at_layer(0);
    let stats = second_moment(&lm.model, config.layer, &corpus, &MomentOptions::default())?;
    let templates = context_templates(
        &lm.model,
        &lm.tokenizer,
        &config.context_template_length_params,
        0,
    )?;
    let request = RomeRequest {
        prompt: "{} lives in".into(),
        subject: "Jessop Emma".into(),
        target_new: "Tokyo".into(),
    };
    let prompts = [
        "Jessop Emma lives in",
        "Everyone knows that Jessop Emma currently lives in",
        "Ingram Nathan lives in",
    ];
    let complete = |lm: &LoadedModel| -> burnlens::Result<Vec<String>> {
        prompts.iter().map(|p| Ok(lm.complete(p, 1)?)).collect()
    };
    let before = complete(lm)?;
    let edit = rome_edit(
        &lm.model,
        &lm.tokenizer,
        &request,
        &config,
        &templates,
        Some(&stats),
    )?;
    let applied = edit.apply(&mut lm.model)?;
    let edited = complete(lm)?;
    applied.revert(&mut lm.model);
    let reverted = complete(lm)?;
    let rows = (0..prompts.len())
        .map(|i| {
            (
                prompts[i].to_string(),
                before[i].clone(),
                edited[i].clone(),
                reverted[i].clone(),
            )
        })
        .collect();
    Ok(Found { rows })
}
