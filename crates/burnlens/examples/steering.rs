//! Steering (activation addition) on the organism: the difference of two people's block-1
//! MLP outputs at the last name token, added at every position while generating. The organism
//! looks facts up in its early MLPs at the subject, so adding half of "Jessop Emma − Ingram
//! Nathan" makes it answer with Jessop Emma's facts about Ingram Nathan. (The whole
//! difference overshoots: it is added at every position, not only at the name.)
//!
//! `cargo run -p burnlens --example steering`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    for prompt in ["Ingram Nathan lives in", "Ingram Nathan plays the"] {
        let (plain, steered) = run(&lm, prompt, 0.5)?;
        println!("{prompt:<24} →{plain:<10} steered →{steered}");
    }
    Ok(())
}

/// The greedy continuation (two tokens) of `prompt` without and with the steering vector
/// times `coefficient`.
pub fn run(lm: &LoadedModel, prompt: &str, coefficient: f32) -> burnlens::Result<(String, String)> {
    let point = HookPoint::MlpOut(1);
    let (a, b) = (lm.encode("Jessop Emma")?, lm.encode("Ingram Nathan")?);
    let vector = steering_vector(&lm.model, &a, &b, point, None)?;
    let config = GenerationConfig {
        max_new_tokens: 2,
        ..GenerationConfig::default()
    };
    let out = steer_generation(
        &lm.model,
        &lm.encode(prompt)?,
        &config,
        point,
        &vector,
        coefficient,
    )?;
    Ok((
        lm.tokenizer.decode(&out.plain[0].tokens)?,
        lm.tokenizer.decode(&out.steered[0].tokens)?,
    ))
}
