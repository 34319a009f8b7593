//! ROME's causal tracing on the organism's planted facts: noise on the subject's embeddings
//! (3σ of the subjects' embeddings, 10 samples), then each (token, layer) state, MLP window
//! or attention window restored from the clean run. Averaged over facts by ROME's six token
//! groups, the indirect effect shows where the fact is looked up (the last subject token,
//! early layers) and where it is read out (the last token, late layers).
//!
//! `cargo run -p burnlens --example causal_trace`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    for effects in run(&lm, 8)? {
        println!("{} (over {} facts):", effects.kind.name(), effects.prompts);
        for group in effects.groups.iter().filter(|g| !g.aie.is_empty()) {
            println!("  {:<22} {:.3?}", group.name, group.aie);
        }
    }
    Ok(())
}

/// The average indirect effect of state, MLP and attention restorations over the first
/// `n` facts the organism recalls.
pub fn run(
    lm: &LoadedModel,
    n: usize,
) -> burnlens::Result<Vec<burnlens::experiments::IndirectEffects>> {
    let facts = load_known_facts(&burnlens::organism::dir().join("known_facts.json"))?;
    let subjects: Vec<&str> = facts.iter().map(|f| f.subject.as_str()).collect();
    let level = 3.0 * subject_embedding_std(&lm.model, &lm.tokenizer, &subjects)?;
    let config = TraceConfig {
        window: 2,
        ..TraceConfig::default()
    };
    let mut traces = Vec::new();
    for (seed, fact) in facts.iter().enumerate() {
        let prompt = TracePrompt::new(&lm.tokenizer, &fact.prompt, &fact.subject)?;
        let shape = [
            config.samples,
            prompt.subject_range.len(),
            lm.model.config.n_embd,
        ];
        let noise = NoiseSpec::Gaussian { level }.sample(shape, seed as u64, &lm.device());
        let trace = causal_trace(&lm.model, &prompt, &TraceKind::ALL, &config, &noise)?;
        if trace.answer_id == lm.token(&format!(" {}", fact.attribute))? {
            traces.push(trace); // ROME traces only the facts the model knows
        }
        if traces.len() == n {
            break;
        }
    }
    TraceKind::ALL
        .iter()
        .map(|&kind| Ok(average_indirect_effect(&traces, kind)?))
        .collect()
}
