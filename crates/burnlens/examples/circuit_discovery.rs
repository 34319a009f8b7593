//! Circuit discovery on in-context retrieval ("… Bob is from Japan. … Bob is from" → " Japan";
//! the corrupted prompt queries another name of the context): EAP-IG scores every edge of the
//! organism's graph at once, the top 10 are pruned to what connects the input to the logits,
//! and edge patching measures how much of the behaviour that circuit keeps. ACDC then prunes
//! the graph edge by edge. The organism was planted with the circuit (docs/ORGANISM.md).
//!
//! `cargo run -p burnlens --example circuit_discovery`

use burnlens::prelude::*;

fn main() -> burnlens::Result<()> {
    let lm = burnlens::organism::load(&Device::flex())?;
    let found = run(&lm)?;
    println!("EAP-IG's top edges: {:?}", found.top);
    println!(
        "its top-10 circuit keeps {:.3} of the behaviour",
        found.faithfulness
    );
    println!("ACDC (KL, τ = 0.03) keeps {:?}", found.acdc);
    Ok(())
}

/// What the example finds.
pub struct Found {
    /// EAP-IG's five highest-scoring edges (by |score|).
    pub top: Vec<String>,
    /// Faithfulness of the pruned top-10 EAP-IG circuit.
    pub faithfulness: f32,
    /// The edges ACDC keeps.
    pub acdc: Vec<String>,
}

/// EAP-IG and ACDC on 8 retrieval pairs of the most common token length.
pub fn run(lm: &LoadedModel) -> burnlens::Result<Found> {
    let config = DualConfig {
        form: DualForm::Retrieval,
        n_shots: 3,
        n_prompts: 40,
        seed: 11,
    };
    let pairs: Vec<[String; 4]> = generate_dual(&config, Some(&lm.tokenizer))?
        .into_iter()
        .map(|p| [p.prompt, p.corrupted, p.answer, p.foil])
        .collect();
    let (task, _) = CircuitTask::from_text_of_common_length(&lm.tokenizer, &pairs, 8)?;
    let run = CircuitRun::new(&lm.model, &task, &CircuitOptions::default())?;
    let graph = run.graph();
    let scores = run.eap_ig(5)?;
    let top = scores
        .ranked(graph)
        .iter()
        .take(5)
        .map(|s| s.edge.to_string())
        .collect();
    let circuit = scores.top(graph, 10)?.pruned(graph);
    let faithfulness = run.faithfulness(run.evaluate(&[circuit])?[0])?;
    let kl = CircuitRun::new(
        &lm.model,
        &task,
        &CircuitOptions::default().metric(CircuitMetric::Kl),
    )?;
    let kept = acdc(&kl, &AcdcOptions::new(0.03))?.kept;
    let acdc = kept
        .indices()
        .map(|i| graph.edges()[i].to_string())
        .collect();
    Ok(Found {
        top,
        faithfulness,
        acdc,
    })
}
