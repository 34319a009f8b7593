//! Mechanism tests on the committed model organism (`fixtures/organism`, trained by
//! `cargo xtask organism`): its planted facts are recalled where ROME finds recall in GPT-2
//! (the last subject token in early layers, the last token in late layers; MLPs at the
//! subject, attention at the end), and in-context retrieval moves with the query and is
//! carried by attention heads at the last position. The assertions are on located peaks and
//! orderings, never on magic numbers.

use crate::common::root;

use burn::tensor::Tensor;
use burnlens_datasets::{DualConfig, DualForm, Manifest, generate_dual};
use burnlens_experiments::{
    CausalTrace, MomentOptions, NoiseSpec, Sweep, TraceConfig, TraceKind, TracePrompt,
    average_indirect_effect, causal_trace, patch_sweep, subject_embedding_std,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_metrics::{MetricError, last_position, logit_diff};
use burnlens_model::{BackendKind, LoadedModel, TokenBatch, load};
use serde_json::Value;

fn organism() -> LoadedModel {
    let device = BackendKind::Flex.device().unwrap();
    load(root().join("fixtures/organism").to_str().unwrap(), &device).unwrap()
}

fn manifest() -> Manifest {
    Manifest::load(&root().join("fixtures/organism")).unwrap()
}

/// Traces of the first facts of `known_facts.json` that the organism completes correctly.
fn traces(lm: &LoadedModel, n: usize) -> Vec<CausalTrace> {
    let facts: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/organism/known_facts.json")).unwrap(),
    )
    .unwrap();
    let config = TraceConfig {
        samples: 10,
        window: 2,
        ..TraceConfig::default()
    };
    let prompts: Vec<TracePrompt> = facts
        .iter()
        .map(|f| {
            TracePrompt::new(
                &lm.tokenizer,
                f["prompt"].as_str().unwrap(),
                f["subject"].as_str().unwrap(),
            )
            .unwrap()
        })
        .collect();
    // ROME's noise: 3 × the standard deviation of the subjects' embeddings.
    let subjects: Vec<&str> = facts
        .iter()
        .map(|f| f["subject"].as_str().unwrap())
        .collect();
    let level = 3.0 * subject_embedding_std(&lm.model, &lm.tokenizer, &subjects).unwrap();
    let mut out = Vec::new();
    for (i, (p, f)) in prompts.iter().zip(&facts).enumerate() {
        let shape = [
            config.samples,
            p.subject_range.len(),
            lm.model.config.n_embd,
        ];
        let noise = NoiseSpec::Gaussian { level }.sample(shape, i as u64, &lm.model.device());
        let t = causal_trace(
            &lm.model,
            p,
            &[TraceKind::State, TraceKind::Mlp, TraceKind::Attn],
            &config,
            &noise,
        )
        .unwrap();
        let answer = lm
            .tokenizer
            .single_token(f["prediction"].as_str().unwrap())
            .unwrap();
        if t.answer_id == answer {
            out.push(t);
        }
        if out.len() == n {
            break;
        }
    }
    assert_eq!(out.len(), n, "the organism recalls too few of its facts");
    out
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

#[test]
fn causal_tracing_finds_romes_two_sites() {
    let lm = organism();
    let n_layers = lm.model.config.n_layer;
    let traces = traces(&lm, 24);
    // ROME's six groups: first, middle, last subject token, first subsequent, further, last.
    const LAST_SUBJECT: usize = 2;
    const LAST_TOKEN: usize = 5;

    let state = average_indirect_effect(&traces, TraceKind::State).unwrap();
    let subject = &state.groups[LAST_SUBJECT].aie;
    let last = &state.groups[LAST_TOKEN].aie;
    // Early layers: restoring the last subject token's state restores the answer more than
    // restoring the last token's; late layers: the other way round.
    assert!(
        subject[0] > last[0],
        "state, layer 0: {subject:?} vs {last:?}"
    );
    assert!(
        last[n_layers - 1] > subject[n_layers - 1],
        "state, last layer: {subject:?} vs {last:?}"
    );
    // The subject site peaks in the early-to-middle layers, the last-token site late.
    assert!(argmax(subject) < n_layers / 2, "{subject:?}");
    assert!(argmax(last) >= n_layers / 2, "{last:?}");

    // MLP windows matter most at the last subject token; attention windows at the last token.
    let peak = |kind: TraceKind| -> usize {
        let e = average_indirect_effect(&traces, kind).unwrap();
        let maxima: Vec<f32> = e
            .groups
            .iter()
            .map(|g| g.aie.iter().copied().fold(f32::MIN, f32::max))
            .collect();
        argmax(&maxima)
    };
    assert_eq!(peak(TraceKind::Mlp), LAST_SUBJECT, "MLP windows");
    assert_eq!(peak(TraceKind::Attn), LAST_TOKEN, "attention windows");
}

#[test]
fn in_context_retrieval_moves_with_the_query_through_heads_at_the_last_position() {
    let lm = organism();
    let m = manifest();
    let (seed, planted) = (m.retrieval_eval_seed, m.planted_retrieval);
    let prompts = generate_dual(
        &DualConfig {
            form: DualForm::Retrieval,
            n_shots: 3,
            n_prompts: 6,
            seed,
        },
        Some(&lm.tokenizer),
    )
    .unwrap();
    for p in &prompts {
        let clean = TokenBatch::single(&lm.tokenizer.encode(&p.prompt, false).unwrap()).unwrap();
        let corrupted =
            TokenBatch::single(&lm.tokenizer.encode(&p.corrupted, false).unwrap()).unwrap();
        let answer = [lm.tokenizer.single_token(&p.answer).unwrap()];
        let foil = [lm.tokenizer.single_token(&p.foil).unwrap()];
        let metric = |logits: Tensor<3>| -> Result<Tensor<1>, MetricError> {
            Ok(logit_diff(last_position(logits), &answer, &foil)?.mean())
        };
        let (clean_logits, cache) = run_with_cache(&lm.model, &clean, Selector::all()).unwrap();
        let clean_ld: f32 = metric(clean_logits).unwrap().into_scalar();
        let corrupted_ld: f32 = metric(lm.model.logits(&corrupted).unwrap())
            .unwrap()
            .into_scalar();
        // Changing the queried name moves the answer to the other name's country.
        assert!(
            clean_ld > 0.0 && corrupted_ld < 0.0,
            "{}: {clean_ld} / {corrupted_ld}",
            p.prompt
        );

        // Which attention outputs carry the change: patch each block's attention output at
        // each position from the clean run into the corrupted one.
        let attn = patch_sweep(&lm.model, &corrupted, &cache, Sweep::ATTN_OUT, &metric).unwrap();
        let [n_layers, n_pos] = [attn.shape[0], attn.shape[1]];
        let recovered = |v: f32| (v - corrupted_ld) / (clean_ld - corrupted_ld);
        let best_last = (0..n_layers)
            .map(|l| recovered(attn.get(&[l, n_pos - 1]).unwrap()))
            .fold(f32::MIN, f32::max);
        // The last position's attention output alone recovers most of the clean answer (the
        // context positions are the same in both runs: only the query name and what follows
        // it differ).
        assert!(best_last > 0.5, "{}: {best_last}", p.prompt);

        // Within that block, single heads at the last position carry it.
        let heads = patch_sweep(
            &lm.model,
            &corrupted,
            &cache,
            Sweep::HEAD_OUT_BY_POS,
            &metric,
        )
        .unwrap();
        let n_heads = heads.shape[2];
        let head = |l: usize, h: usize| recovered(heads.get(&[l, n_pos - 1, h]).unwrap());
        let best_head = (0..n_layers)
            .flat_map(|l| (0..n_heads).map(move |h| (l, h)))
            .map(|(l, h)| head(l, h))
            .fold(f32::MIN, f32::max);
        assert!(best_head > 0.5, "{}: best head {best_head}", p.prompt);
        // An organism trained from the planted circuit (xtask/src/plant.rs) still retrieves
        // with it: each planted head alone carries the query — 0.0, which brings the name two
        // back to the last position, and 1.0, which matches it and copies the country — and
        // no other head of those layers does.
        if planted {
            for (l, h) in [(0, 0), (1, 0)] {
                assert!(
                    head(l, h) > 0.5,
                    "{}: head {l}.{h}: {}",
                    p.prompt,
                    head(l, h)
                );
            }
            for (l, h) in (0..2).flat_map(|l| (1..n_heads).map(move |h| (l, h))) {
                assert!(
                    head(l, h) < 0.2,
                    "{}: head {l}.{h}: {}",
                    p.prompt,
                    head(l, h)
                );
            }
        }
    }
}

/// ROME's acceptance on the organism: 20 planted facts rewritten one at a time (each edit
/// reverted before the next), the keys' second moment from the organism's own corpus.
#[test]
fn rome_rewrites_planted_facts_without_touching_their_neighbours() {
    use burnlens_experiments::{
        EditCase, RomeConfig, case_scores, context_templates, rome_edit, second_moment, summarize,
    };
    let mut lm = organism();
    let m = manifest();
    let (world, corpus) = (m.world, m.corpus);
    let texts: Vec<Vec<u32>> = world
        .corpus(&corpus, 1000, 11)
        .unwrap()
        .iter()
        .map(|t| lm.tokenizer.encode(t, false).unwrap())
        .collect();
    let config = RomeConfig::at_layer(0);
    let stats = second_moment(
        &lm.model,
        config.layer,
        &texts,
        &MomentOptions {
            batch_size: 32,
            ..Default::default()
        },
    )
    .unwrap();
    let templates = context_templates(
        &lm.model,
        &lm.tokenizer,
        &config.context_template_length_params,
        0,
    )
    .unwrap();
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    for r in world.counterfact(20, 0).unwrap() {
        let case = EditCase::from(&r);
        pre.push(case_scores(&lm.model, &lm.tokenizer, &case).unwrap());
        let edit = rome_edit(
            &lm.model,
            &lm.tokenizer,
            &case.request,
            &config,
            &templates,
            Some(&stats),
        )
        .unwrap();
        let applied = edit.apply(&mut lm.model).unwrap();
        post.push(case_scores(&lm.model, &lm.tokenizer, &case).unwrap());
        applied.revert(&mut lm.model);
    }
    let (pre, post) = (summarize(&pre), summarize(&post));
    // Before: the organism knows the planted values (the new ones are unlikely).
    assert!(pre.mean.efficacy < 0.2, "{pre:?}");
    // After (the acceptance): efficacy ≥ 90%, neighbourhood ≥ 80%.
    assert!(post.mean.efficacy >= 0.9, "{post:?}");
    assert!(post.mean.neighborhood >= 0.8, "{post:?}");
    assert!(
        post.mean.paraphrase > pre.mean.paraphrase,
        "{pre:?} -> {post:?}"
    );
}
