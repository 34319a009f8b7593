//! Inseq-style gradient attribution on a planted fact: integrated gradients of p(" Paris")
//! with respect to the token embeddings of "Jessop Emma lives in", from the
//! `<|endoftext|>` baseline, with Inseq's default aggregation (L2 norm per token, summing to
//! one). Integrated gradients are complete: the raw attributions sum to
//! f(input) − f(baseline), which the example prints as a check of the quadrature.
//!
//! `cargo run -p burnlens --example attribution`

use burnlens::experiments::Aggregation;
use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    let found = run(&lm, "Jessop Emma lives in", " Paris")?;
    for (token, share) in found.tokens.iter().zip(&found.shares) {
        println!("{token:>10?} {share:.3}");
    }
    println!(
        "sum of attributions {:.4}, f(input) - f(baseline) {:.4}",
        found.total, found.delta
    );
    Ok(())
}

/// Per-token attribution and the completeness check.
pub struct Found {
    /// The prompt's tokens.
    pub tokens: Vec<String>,
    /// Each token's share of the attribution (Inseq's aggregation).
    pub shares: Vec<f32>,
    /// The sum of the raw attributions.
    pub total: f64,
    /// `p(answer | prompt) − p(answer | baseline embeddings)`.
    pub delta: f64,
}

/// Integrated gradients (50 Gauss–Legendre nodes) of p(`answer`) for `prompt`.
pub fn run(lm: &LoadedModel, prompt: &str, answer: &str) -> burnlens::Result<Found> {
    let (ids, target) = (lm.encode(prompt)?, [lm.token(answer)?]);
    let eot = lm.token("<|endoftext|>")?;
    let input = AttributionInput::new(&ids, &target);
    let options = AttributeOptions::new(AttrMethod::IntegratedGradients { steps: 50 }, eot)
        .function(AttributedFn::Probability);
    let attribution = attribute(&lm.model, &input, &options)?;
    let base = baseline_score(&lm.model, &input, &options, 0)?;
    Ok(Found {
        tokens: lm.tokenizer.str_tokens(&ids)?,
        shares: attribution.aggregate(Aggregation::L2NormSumOne)[..ids.len()].to_vec(),
        total: attribution.step_total(0),
        delta: f64::from(attribution.attributed_values[0]) - f64::from(base),
    })
}
