//! Load the organism and complete prompts: greedy completions of its planted facts under
//! the training phrasing, compared with the value we planted.
//!
//! `cargo run -p burnlens --example generate`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    let completions = run(&lm, 12)?;
    for c in &completions {
        let mark = if c.completion.starts_with(&c.planted) {
            "ok"
        } else {
            "WRONG"
        };
        println!(
            "{:<32} →{:<12} planted{:<10} {mark}",
            c.prompt, c.completion, c.planted
        );
    }
    Ok(())
}

/// One prompt, the organism's completion and the planted value.
pub struct Completion {
    /// `"<name> lives in"`, `"<name> works as a"`, …
    pub prompt: String,
    /// What the organism writes next (three tokens).
    pub completion: String,
    /// The planted value, with its leading space.
    pub planted: String,
}

/// Completes the first `n` people's facts (every relation).
pub fn run(lm: &LoadedModel, n: usize) -> burnlens::Result<Vec<Completion>> {
    let world = burnlens::organism::manifest()?.world;
    let mut out = Vec::new();
    for person in world.people.iter().take(n) {
        for relation in &burnlens::datasets::RELATIONS {
            let prompt = relation.relation_prompt.replace("{}", &person.name);
            out.push(Completion {
                completion: lm.complete(&prompt, 3)?,
                planted: format!(" {}", person.attributes[relation.id]),
                prompt,
            });
        }
    }
    Ok(out)
}
