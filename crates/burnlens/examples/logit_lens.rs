//! The logit lens on a planted fact: the residual stream before every block (and after the
//! last) read out through the organism's own final LayerNorm and unembedding. Where does the
//! planted answer become the top prediction?
//!
//! `cargo run -p burnlens --example logit_lens`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    let lens = run(&lm, "Jessop Emma lives in", " Paris")?;
    for (i, label) in lens.labels.iter().enumerate() {
        let top = lm.tokenizer.decode(&[lens.top[i][0].token])?;
        println!(
            "{label:<10} p(' Paris') {:.3}  rank {:>4}  top {top:?}",
            lens.answer_prob[i], lens.answer_rank[i]
        );
    }
    Ok(())
}

/// The lens at the prompt's last position, with the answer's probability and rank.
pub fn run(
    lm: &LoadedModel,
    prompt: &str,
    answer: &str,
) -> burnlens::Result<burnlens::experiments::LogitLens> {
    let batch = lm.batch(prompt)?;
    let mut positions = logit_lens(&lm.model, &batch, Some(lm.token(answer)?), 5)?;
    Ok(positions.pop().expect("one lens per position"))
}
