//! The organism's evaluation: top-1 fact recall under held-out and training templates, and
//! in-context retrieval accuracy, as `cargo xtask organism` records them in the manifest.

use burnlens_datasets::organism::Evaluation;
use burnlens_datasets::{
    DualConfig, DualForm, DualPrompt, FactPrompt, RELATIONS, World, generate_dual,
};
use burnlens_metrics::last_position;
use burnlens_model::{Gpt2, Gpt2Tokenizer, PaddingSide, TokenBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Held-out in-context retrieval prompts evaluated.
pub const RETRIEVAL_EVAL_PROMPTS: usize = 300;

/// Every answer must be one token and every name more than one, or the organism's tests
/// would measure something else.
pub fn check_tokens(world: &World, tok: &Gpt2Tokenizer) -> Result<()> {
    for r in &RELATIONS {
        for v in r.values {
            if tok.encode(&format!(" {v}"), false)?.len() != 1 {
                return Err(Error::Vocabulary(format!(
                    "the answer {v:?} is not one token"
                )));
            }
        }
    }
    for p in &world.people {
        if tok.encode(&format!(" {}", p.name), false)?.len() < 2 {
            return Err(Error::Vocabulary(format!(
                "the name {:?} is a single token",
                p.name
            )));
        }
    }
    Ok(())
}

/// For each `(prompt, answer)` pair, whether the top next token after the prompt is the answer.
fn top1_correct(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    items: &[(String, String)],
) -> Result<Vec<bool>> {
    let pad = tok
        .endoftext_id()
        .ok_or_else(|| Error::Vocabulary("no <|endoftext|> to pad with".into()))?;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(64) {
        let seqs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|(p, _)| tok.encode(p, false))
            .collect::<std::result::Result<_, _>>()?;
        let batch = TokenBatch::padded(&seqs, pad, PaddingSide::Left)?;
        let top: Vec<i64> = last_position(model.logits(&batch)?)
            .argmax(1)
            .into_data()
            .iter::<i64>()
            .collect();
        for ((_, answer), &pred) in chunk.iter().zip(&top) {
            out.push(tok.single_token(answer)? as i64 == pred);
        }
    }
    Ok(out)
}

/// The fraction of `true` among `correct[i]` for the `i` that `keep` selects.
fn accuracy(correct: &[bool], keep: impl Fn(usize) -> bool) -> f64 {
    let (hits, n) = correct
        .iter()
        .enumerate()
        .filter(|&(i, _)| keep(i))
        .fold((0usize, 0usize), |(h, n), (_, &c)| (h + c as usize, n + 1));
    hits as f64 / n.max(1) as f64
}

/// Fact recall on held-out and training templates, and in-context retrieval accuracy.
pub fn evaluate(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    world: &World,
    retrieval_seed: u64,
) -> Result<Evaluation> {
    let pairs = |ps: &[FactPrompt]| -> Vec<(String, String)> {
        ps.iter()
            .map(|p| (p.prompt.clone(), p.answer.clone()))
            .collect()
    };
    let held = world.held_out_prompts();
    // One forward per prompt; the per-relation and per-template figures are subsets of it.
    let held_correct = top1_correct(model, tok, &pairs(&held))?;
    let held_out_recall = accuracy(&held_correct, |_| true);
    let mut by_relation = Vec::new();
    let mut by_template = Vec::new();
    for r in &RELATIONS {
        by_relation.push((
            r.id.to_string(),
            accuracy(&held_correct, |i| held[i].relation == r.id),
        ));
        let mut templates: Vec<&str> = held
            .iter()
            .filter(|p| p.relation == r.id)
            .map(|p| p.template.as_str())
            .collect();
        templates.sort_unstable();
        templates.dedup();
        for t in templates {
            let acc = accuracy(&held_correct, |i| {
                held[i].relation == r.id && held[i].template == t
            });
            by_template.push((r.id.to_string(), t.to_string(), acc));
        }
    }
    // Every training template of a random tenth of the facts (all of them takes longer and
    // says the same).
    let mut rng = StdRng::seed_from_u64(7);
    let train: Vec<FactPrompt> = world
        .training_prompts()
        .into_iter()
        .filter(|_| rng.random_bool(0.1))
        .collect();
    let training_recall = accuracy(&top1_correct(model, tok, &pairs(&train))?, |_| true);
    let retrieval = retrieval_prompts(tok, retrieval_seed)?;
    let items: Vec<(String, String)> = retrieval
        .iter()
        .map(|p| (p.prompt.clone(), p.answer.clone()))
        .collect();
    let retrieval_accuracy = accuracy(&top1_correct(model, tok, &items)?, |_| true);
    Ok(Evaluation {
        held_out_recall,
        held_out_recall_by_relation: by_relation,
        held_out_recall_by_template: by_template,
        training_recall,
        retrieval_accuracy,
        counts: [held.len(), train.len(), items.len()],
    })
}

/// Held-out recall on every tenth held-out prompt, and retrieval accuracy: a cheap look at a
/// model in training.
pub fn quick_eval(
    model: &Gpt2,
    tok: &Gpt2Tokenizer,
    world: &World,
    retrieval_seed: u64,
) -> Result<(f64, f64)> {
    let held: Vec<(String, String)> = world
        .held_out_prompts()
        .into_iter()
        .step_by(10)
        .map(|p| (p.prompt, p.answer))
        .collect();
    let held = accuracy(&top1_correct(model, tok, &held)?, |_| true);
    let items: Vec<(String, String)> = retrieval_prompts(tok, retrieval_seed)?
        .into_iter()
        .map(|p| (p.prompt, p.answer))
        .collect();
    let retrieval = accuracy(&top1_correct(model, tok, &items)?, |_| true);
    Ok((held, retrieval))
}

/// The held-out in-context retrieval prompts (3 shots).
pub fn retrieval_prompts(tok: &Gpt2Tokenizer, seed: u64) -> Result<Vec<DualPrompt>> {
    Ok(generate_dual(
        &DualConfig {
            form: DualForm::Retrieval,
            n_shots: 3,
            n_prompts: RETRIEVAL_EVAL_PROMPTS,
            seed,
        },
        Some(tok),
    )?)
}
