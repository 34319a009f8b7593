//! Every example of `crates/burnlens/examples/` runs here on the model organism, and what it
//! finds is checked against what was planted in the organism (`xtask/src/plant.rs`,
//! `docs/ORGANISM.md`) or against a closed form. The examples are compiled into this test
//! binary as modules, so `cargo test` runs the very code `cargo run --example` runs.

use burnlens::prelude::*;

#[allow(dead_code)]
#[path = "../examples/activation_patching.rs"]
mod activation_patching;
#[allow(dead_code)]
#[path = "../examples/attribution.rs"]
mod attribution;
#[allow(dead_code)]
#[path = "../examples/cache.rs"]
mod cache;
#[allow(dead_code)]
#[path = "../examples/causal_trace.rs"]
mod causal_trace;
#[allow(dead_code)]
#[path = "../examples/circuit_discovery.rs"]
mod circuit_discovery;
#[allow(dead_code)]
#[path = "../examples/generate.rs"]
mod generate;
#[allow(dead_code)]
#[path = "../examples/logit_lens.rs"]
mod logit_lens;
#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;
#[allow(dead_code)]
#[path = "../examples/rome_edit.rs"]
mod rome_edit;
#[allow(dead_code)]
#[path = "../examples/steering.rs"]
mod steering;

fn organism() -> LoadedModel {
    burnlens::organism::load(&Device::flex()).expect("the committed organism loads")
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .expect("not empty")
}

/// The quickstart's sweep finds the person at the subject's last token entering block 1 and
/// the fact at the last token from block 2 on: ROME's two sites, planted by the organism's
/// subject-exit loss (block 2's input must predict the facts at the last name token). Block
/// 0's input is only the token embeddings, so patching it swaps a token and is not checked.
#[test]
fn quickstart_patching_finds_the_fact_at_the_subject_then_at_the_end() {
    let lm = organism();
    let result = quickstart::run(&lm).unwrap();
    let (_, subject) = lm
        .tokenizer
        .encode_with_span("Ingram Nathan lives in", "Ingram Nathan", false)
        .unwrap();
    let [layers, n_pos] = [result.shape[0], result.shape[1]];
    assert_eq!(layers, lm.model.config.n_layer);
    let row = |l: usize| &result.values[l * n_pos..(l + 1) * n_pos];
    assert_eq!(argmax(row(1)), subject.end - 1, "layer 1: {:?}", row(1));
    assert!(row(1)[subject.end - 1] > 0.9, "{:?}", row(1));
    assert_eq!(
        argmax(row(layers - 1)),
        n_pos - 1,
        "last layer: {:?}",
        row(layers - 1)
    );
    assert!(row(layers - 1)[n_pos - 1] > 0.9, "{:?}", row(layers - 1));
}

/// The organism completes its planted facts.
#[test]
fn generate_completes_the_planted_facts() {
    let completions = generate::run(&organism(), 12).unwrap();
    assert_eq!(completions.len(), 36);
    let right = completions
        .iter()
        .filter(|c| c.completion.starts_with(&c.planted))
        .count();
    assert!(
        right >= 33,
        "{right} of 36 completions start with the planted value"
    );
}

/// The cache shows the planted offset heads of layer 0: head 0 attends two tokens back,
/// head 1 three.
#[test]
fn cache_shows_the_planted_offset_heads() {
    let found = cache::run(&organism()).unwrap();
    assert_eq!(found.points, HookPoint::all(4).len());
    let by_offset = &found.attention_by_offset;
    assert_eq!(argmax(&by_offset[0]), 1, "L0H0: {:?}", by_offset[0]);
    assert_eq!(argmax(&by_offset[1]), 2, "L0H1: {:?}", by_offset[1]);
    assert!(
        by_offset[0][1] > 0.5 && by_offset[1][2] > 0.5,
        "{by_offset:?}"
    );
}

/// Patching heads at the last position finds the planted retrieval circuit: L0H0 and L1H0
/// each carry the query, no other head of those layers does.
#[test]
fn activation_patching_finds_the_planted_retrieval_heads() {
    let found = activation_patching::run(&organism()).unwrap();
    let heads = &found.last_position;
    assert!(heads[0][0] > 0.5 && heads[1][0] > 0.5, "{heads:?}");
    for (l, row) in heads.iter().enumerate().take(2) {
        for (h, &v) in row.iter().enumerate().skip(1) {
            assert!(v < 0.2, "L{l}H{h} = {v}: {heads:?}");
        }
    }
}

/// Causal tracing: restoring the state at the last subject token matters most early, at the
/// last token late (ROME's two sites).
#[test]
fn causal_trace_finds_romes_two_sites() {
    let effects = causal_trace::run(&organism(), 8).unwrap();
    assert_eq!(effects.len(), 3);
    let state = &effects[0];
    assert_eq!(state.kind, TraceKind::State);
    assert_eq!(state.prompts, 8);
    let (subject, last) = (&state.groups[2].aie, &state.groups[5].aie);
    let late = subject.len() - 1;
    assert!(subject[0] > last[0], "layer 0: {subject:?} vs {last:?}");
    assert!(
        last[late] > subject[late],
        "last layer: {subject:?} vs {last:?}"
    );
}

/// The logit lens: the final readout is the model's own prediction (the planted value); the
/// embedding alone does not predict it.
#[test]
fn logit_lens_ends_on_the_planted_answer() {
    let lens = logit_lens::run(&organism(), "Jessop Emma lives in", " Paris").unwrap();
    let last = lens.labels.len() - 1;
    assert_eq!(lens.labels.len(), 5, "{:?}", lens.labels);
    assert_eq!(lens.answer_rank[last], 0, "{:?}", lens.answer_rank);
    assert!(lens.answer_rank[0] > 0, "{:?}", lens.answer_rank);
}

/// Integrated gradients are complete: the attributions sum to f(input) − f(baseline).
#[test]
fn attribution_is_complete() {
    let found = attribution::run(&organism(), "Jessop Emma lives in", " Paris").unwrap();
    assert!(found.delta.abs() > 0.1, "{}", found.delta);
    let gap = (found.total - found.delta).abs();
    assert!(
        gap <= 0.02 * found.delta.abs(),
        "sum {} vs delta {}",
        found.total,
        found.delta
    );
    let shares: f32 = found.shares.iter().sum();
    assert!((shares - 1.0).abs() < 1e-4, "{shares}");
}

/// ROME rewrites the fact and its paraphrase, leaves the neighbour, and reverts exactly.
#[test]
fn rome_edit_rewrites_and_reverts() {
    let mut lm = organism();
    let found = rome_edit::run(&mut lm).unwrap();
    let rows = &found.rows;
    assert_eq!(rows[0].1, " Paris", "{rows:?}");
    assert_eq!(rows[0].2, " Tokyo", "{rows:?}");
    assert_eq!(rows[1].2, " Tokyo", "paraphrase: {rows:?}");
    assert_eq!(rows[2].2, rows[2].1, "neighbour: {rows:?}");
    for (prompt, before, _, reverted) in rows {
        assert_eq!(before, reverted, "{prompt}");
    }
}

/// Steering with "Jessop Emma − Ingram Nathan" at block 1's MLP output gives Ingram Nathan
/// Jessop Emma's city and instrument.
#[test]
fn steering_moves_the_answer_to_the_other_persons_facts() {
    let lm = organism();
    for (prompt, own, other) in [
        ("Ingram Nathan lives in", " Nairobi", " Paris"),
        ("Ingram Nathan plays the", " oboe", " guitar"),
    ] {
        let (plain, steered) = steering::run(&lm, prompt, 0.5).unwrap();
        assert!(plain.starts_with(own), "{prompt}: {plain}");
        assert!(steered.starts_with(other), "{prompt}: steered {steered}");
    }
}

/// The README's code is the quickstart example, so it cannot drift from what compiles.
#[test]
fn readme_shows_the_quickstart_example() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/quickstart.rs"
    ))
    .unwrap();
    let code: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        readme.contains(&code),
        "README.md must show examples/quickstart.rs from its first `use` line:\n{code}"
    );
}

/// EAP-IG ranks the planted query path and the copy first (only the query differs between the
/// clean and corrupted prompts), its pruned top-10 circuit keeps the behaviour, and ACDC keeps
/// exactly those three edges.
#[test]
fn circuit_discovery_finds_the_planted_query_path() {
    let lm = organism();
    let found = circuit_discovery::run(&lm).unwrap();
    let planted = ["input->a0.h0<v>", "a0.h0->a1.h0<q>", "a1.h0->logits"];
    for edge in planted {
        assert!(
            found.top[..3].contains(&edge.to_string()),
            "{edge} not in {:?}",
            found.top
        );
    }
    assert!(found.faithfulness >= 0.8, "{}", found.faithfulness);
    assert_eq!(found.acdc, planted);
}
