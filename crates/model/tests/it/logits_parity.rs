//! The tiny fixture's logits equal `transformers`' on every backend (max abs diff ≤ 1e-4):
//! single prompts, padded batches (left and right) and KV-cached incremental decoding.

use crate::common;

use burn::tensor::Tensor;
use burnlens_model::{BackendKind, KvCache, NoHooks, PaddingSide, TokenBatch, load};
use common::*;

#[test]
fn tokenizer_ids_match_the_python_tokenizer() {
    let lm = load(tiny_dir().to_str().unwrap(), &burn::tensor::Device::flex()).unwrap();
    for p in reference()["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        assert_eq!(
            lm.tokenizer.encode(text, false).unwrap(),
            ids(&p["ids"]),
            "{text:?}"
        );
        let strs: Vec<String> = p["str_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        assert_eq!(lm.tokenizer.str_tokens(&ids(&p["ids"])).unwrap(), strs);
        assert_eq!(lm.tokenizer.decode(&ids(&p["ids"])).unwrap(), text);
    }
}

#[test]
fn prompt_logits_match_transformers() {
    let r = reference();
    let refs = reference_logits();
    for (kind, device) in devices() {
        let lm = load(tiny_dir().to_str().unwrap(), &device).unwrap();
        for (i, p) in r["prompts"].as_array().unwrap().iter().enumerate() {
            let ids = ids(&p["ids"]);
            let logits = lm.model.logits(&TokenBatch::single(&ids).unwrap()).unwrap();
            let want = &refs[&format!("prompt.{i}")];
            assert_eq!(logits.dims()[1..], want.shape[..]);
            let diff = max_abs_diff(&to_vec(logits), &want.data);
            eprintln!("{kind}: prompt {i}: max abs diff {diff:.2e}");
            assert!(diff <= TOL, "{kind}: prompt {i}: max abs diff {diff}");
        }
    }
}

#[test]
fn padded_batches_match_transformers_and_the_unpadded_run() {
    let r = reference();
    let refs = reference_logits();
    let prompts = r["prompts"].as_array().unwrap();
    let seqs: Vec<Vec<u32>> = (0..3).map(|i| ids(&prompts[i]["ids"])).collect();
    let vocab = refs["prompt.0"].shape[1];
    for (kind, device) in devices() {
        let lm = load(tiny_dir().to_str().unwrap(), &device).unwrap();
        for (side, name) in [(PaddingSide::Left, "left"), (PaddingSide::Right, "right")] {
            let pad = lm.tokenizer.endoftext_id().unwrap();
            let batch = TokenBatch::padded(&seqs, pad, side).unwrap();
            assert_eq!(
                batch.ids(),
                ids(&serde_json::Value::Array(
                    r["batch"][name]["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|row| row.as_array().unwrap().clone())
                        .collect()
                ))
                .as_slice()
            );
            // On flex the three rows run as blocks on separate threads (where there are
            // two or more): the split forward is what this compares with transformers.
            let blocks = lm.model.row_blocks(&batch);
            if kind == BackendKind::Flex && rayon::current_num_threads() >= 2 {
                assert!(
                    blocks >= 2,
                    "flex should split the rows, got {blocks} block"
                );
            }
            eprintln!("{kind}: {name} padding as {blocks} block(s) of rows");
            let logits = to_vec(lm.model.logits(&batch).unwrap());
            let t = batch.seq_len();
            // Real tokens equal transformers' padded run and the unpadded single-prompt run.
            let want_batch = &refs[&format!("batch.{name}")].data;
            for (row, seq) in seqs.iter().enumerate() {
                let off = if side == PaddingSide::Left {
                    t - seq.len()
                } else {
                    0
                };
                let got: Vec<f32> = (0..seq.len())
                    .flat_map(|p| {
                        logits[((row * t) + off + p) * vocab..((row * t) + off + p + 1) * vocab]
                            .to_vec()
                    })
                    .collect();
                let single = &refs[&format!("prompt.{row}")].data;
                let hf: Vec<f32> = (0..seq.len())
                    .flat_map(|p| {
                        want_batch[((row * t) + off + p) * vocab..((row * t) + off + p + 1) * vocab]
                            .to_vec()
                    })
                    .collect();
                let (d1, d2) = (max_abs_diff(&got, single), max_abs_diff(&got, &hf));
                eprintln!(
                    "{kind}: {name} padding, row {row}: vs unpadded {d1:.2e}, vs transformers batch {d2:.2e}"
                );
                assert!(d1 <= TOL && d2 <= TOL, "{kind} {name} row {row}: {d1} {d2}");
            }
        }
    }
}

#[test]
fn kv_cached_decoding_matches_the_full_pass() {
    let r = reference();
    let refs = reference_logits();
    let p = &r["prompts"][2];
    let ids = ids(&p["ids"]);
    let want = &refs["prompt.2"];
    let vocab = want.shape[1];
    for (kind, device) in devices() {
        let lm = load(tiny_dir().to_str().unwrap(), &device).unwrap();
        let mut cache = KvCache::new(lm.model.config.n_layer, 1);
        // A 5-token prefill, then one token at a time.
        let mut got = to_vec(
            lm.model
                .forward(
                    &TokenBatch::single(&ids[..5]).unwrap(),
                    Some(&mut cache),
                    &mut NoHooks,
                )
                .unwrap(),
        );
        for &id in &ids[5..] {
            let step: Tensor<3> = lm
                .model
                .forward(
                    &TokenBatch::single(&[id]).unwrap(),
                    Some(&mut cache),
                    &mut NoHooks,
                )
                .unwrap();
            got.extend(to_vec(step));
        }
        assert_eq!(cache.len(), ids.len());
        assert_eq!(got.len(), ids.len() * vocab);
        let diff = max_abs_diff(&got, &want.data);
        eprintln!("{kind}: cached decoding max abs diff {diff:.2e}");
        assert!(diff <= TOL, "{kind}: {diff}");
    }
}

#[test]
fn kv_cache_with_left_padding_continues_each_row_at_its_own_position() {
    let r = reference();
    let refs = reference_logits();
    let prompts = r["prompts"].as_array().unwrap();
    let full: Vec<Vec<u32>> = (0..3).map(|i| ids(&prompts[i]["ids"])).collect();
    let vocab = refs["prompt.0"].shape[1];
    let device = burn::tensor::Device::flex();
    let lm = load(tiny_dir().to_str().unwrap(), &device).unwrap();
    // Prefill all but the last token of each prompt (left-padded), then feed the last tokens.
    let prefix: Vec<Vec<u32>> = full.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let mut cache = KvCache::new(lm.model.config.n_layer, 3);
    lm.model
        .forward(
            &TokenBatch::padded(&prefix, 0, PaddingSide::Left).unwrap(),
            Some(&mut cache),
            &mut NoHooks,
        )
        .unwrap();
    let last = TokenBatch::new(
        full.iter().map(|s| vec![*s.last().unwrap()]).collect(),
        None,
    )
    .unwrap();
    let step = to_vec(
        lm.model
            .forward(&last, Some(&mut cache), &mut NoHooks)
            .unwrap(),
    );
    for (row, s) in full.iter().enumerate() {
        let want = &refs[&format!("prompt.{row}")].data[(s.len() - 1) * vocab..s.len() * vocab];
        let diff = max_abs_diff(&step[row * vocab..(row + 1) * vocab], want);
        assert!(diff <= TOL, "row {row}: {diff}");
    }
}

#[test]
fn losses_and_perplexity_match_transformers() {
    let r = reference();
    let prompts = r["prompts"].as_array().unwrap();
    for (kind, device) in devices() {
        let lm = load(tiny_dir().to_str().unwrap(), &device).unwrap();
        for p in prompts {
            let loss = lm
                .model
                .loss(&TokenBatch::single(&ids(&p["ids"])).unwrap())
                .unwrap();
            let mean: f32 = loss.mean().into_scalar();
            let ppl = to_vec(loss.perplexity())[0];
            let per_tok = to_vec(loss.per_token.clone());
            assert!(
                (mean - p["loss"].as_f64().unwrap() as f32).abs() <= TOL,
                "{kind}: loss {mean}"
            );
            // Perplexity is exp(loss) ~ 1e3 here: compare relative to its size.
            let want_ppl = p["perplexity"].as_f64().unwrap() as f32;
            assert!(
                ((ppl - want_ppl) / want_ppl).abs() <= TOL,
                "{kind}: ppl {ppl} vs {want_ppl}"
            );
            let d = max_abs_diff(&per_tok, &floats(&p["per_token_loss"]));
            assert!(d <= TOL, "{kind}: per-token loss diff {d}");
        }
        // Right padding: transformers' labels=-100 convention gives the same numbers.
        let seqs: Vec<Vec<u32>> = (0..3).map(|i| ids(&prompts[i]["ids"])).collect();
        let batch = TokenBatch::padded(&seqs, 0, PaddingSide::Right).unwrap();
        let loss = lm.model.loss(&batch).unwrap();
        let want = &r["batch"]["right"];
        let mean: f32 = loss.mean().into_scalar();
        assert!(
            (mean - want["mean_loss"].as_f64().unwrap() as f32).abs() <= TOL,
            "{kind}: batch loss {mean}"
        );
        let ppl = to_vec(loss.perplexity());
        for (got, want) in ppl.iter().zip(floats(&want["sequence_perplexity"])) {
            assert!(
                ((got - want) / want).abs() <= TOL,
                "{kind}: {got} vs {want}"
            );
        }
        // Left padding: each row's losses equal its unpadded losses.
        let batch = TokenBatch::padded(&seqs, 0, PaddingSide::Left).unwrap();
        let loss = lm.model.loss(&batch).unwrap();
        let seq_loss = to_vec(loss.per_sequence());
        for (row, p) in prompts.iter().take(3).enumerate() {
            let want = p["loss"].as_f64().unwrap() as f32;
            assert!(
                (seq_loss[row] - want).abs() <= TOL,
                "{kind}: left row {row}: {} vs {want}",
                seq_loss[row]
            );
        }
    }
}

/// The model organism (`fixtures/organism`, trained by `cargo xtask organism`) is a real GPT-2
/// checkpoint: `transformers` loads it and its tokenizer (`scripts/reference/organism_reference.py`)
/// and gives the same ids and logits, on every backend.
#[test]
fn the_organism_matches_transformers() {
    let dir = root().join("fixtures/reference/organism");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("logits.json")).unwrap()).unwrap();
    let want = burnlens_model::weights::read_safetensors(&dir.join("logits.safetensors")).unwrap();
    for (kind, device) in devices() {
        let lm = load(root().join("fixtures/organism").to_str().unwrap(), &device).unwrap();
        for (i, p) in json["prompts"].as_array().unwrap().iter().enumerate() {
            let text = p["prompt"].as_str().unwrap();
            let expected = ids(&p["ids"]);
            assert_eq!(
                lm.tokenizer.encode(text, false).unwrap(),
                expected,
                "{text:?}"
            );
            let logits = lm
                .model
                .logits(&TokenBatch::single(&expected).unwrap())
                .unwrap();
            let w = &want[&format!("prompt.{i}")];
            assert_eq!(logits.dims()[1..], w.shape[..]);
            let diff = max_abs_diff(&to_vec(logits), &w.data);
            eprintln!("{kind}: organism prompt {i}: max abs diff {diff:.2e}");
            assert!(diff <= TOL, "{kind} {text:?}: max abs diff {diff}");
        }
    }
}
