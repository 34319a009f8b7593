//! Generation equals `transformers`' `generate` on the tiny fixture: greedy (20 tokens) and
//! beam search (4 beams, early stopping on and off, with and without EOS hits). Sampling only
//! draws from the top-k / top-p set (property test) and repeats for a seed.

use crate::common;

use burnlens_model::generate::{EarlyStopping, filtered_candidates};
use burnlens_model::{GenerationConfig, Strategy, load};
use common::*;
use proptest::prelude::*;

#[test]
fn greedy_matches_transformers() {
    let r = reference();
    for (kind, device) in devices() {
        let lm = load(tiny_dir().to_str().unwrap(), &device).unwrap();
        let eos = lm.model.config.eos_token_id;
        for p in r["prompts"].as_array().unwrap() {
            let cfg = GenerationConfig {
                max_new_tokens: 20,
                eos_token_id: eos,
                ..Default::default()
            };
            let out = lm.model.generate(&ids(&p["ids"]), &cfg).unwrap();
            assert_eq!(
                out[0].tokens,
                ids(&p["greedy_20"]),
                "{kind}: {:?}",
                p["text"]
            );
        }
    }
}

#[test]
fn beam_search_matches_transformers() {
    let r = reference();
    // Beam search on lavapipe is slow; the CPU backends cover the algorithm, wgpu the logits.
    for (kind, device) in devices()
        .into_iter()
        .filter(|(k, _)| *k != burnlens_model::BackendKind::Wgpu)
    {
        let lm = load(tiny_dir().to_str().unwrap(), &device).unwrap();
        for p in r["prompts"].as_array().unwrap() {
            for tag in ["eos", "stand_in_eos"] {
                for early in [true, false] {
                    let want = &p[format!("beam4_{tag}_early_{early}")];
                    let cfg = GenerationConfig {
                        max_new_tokens: 12,
                        num_return_sequences: 4,
                        eos_token_id: Some(want["eos_token_id"].as_u64().unwrap() as u32),
                        strategy: Strategy::Beam {
                            num_beams: 4,
                            early_stopping: if early {
                                EarlyStopping::True
                            } else {
                                EarlyStopping::False
                            },
                            length_penalty: 1.0,
                        },
                        ..Default::default()
                    };
                    let out = lm.model.generate(&ids(&p["ids"]), &cfg).unwrap();
                    let seqs = want["sequences"].as_array().unwrap();
                    let scores = floats(&want["scores"]);
                    // transformers fills with `pad_token_id or eos_token_id`: the pad id is 0 here,
                    // which Python reads as false, so the fill is this run's EOS.
                    let pad = want["eos_token_id"].as_u64().unwrap() as u32;
                    for (i, g) in out.iter().enumerate() {
                        // transformers pads shorter hypotheses to a common length.
                        let mut got = g.tokens.clone();
                        let width = seqs[i].as_array().unwrap().len();
                        got.resize(width.max(got.len()), pad);
                        assert_eq!(
                            got,
                            ids(&seqs[i]),
                            "{kind} {tag} early={early} beam {i}: {:?}",
                            p["text"]
                        );
                        assert!(
                            (g.score - scores[i]).abs() <= 1e-4,
                            "{kind} score {} vs {}",
                            g.score,
                            scores[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn seeded_sampling_repeats_and_seeds_differ() {
    let lm = load(tiny_dir().to_str().unwrap(), &burn::tensor::Device::flex()).unwrap();
    let prompt = lm.tokenizer.encode("The Eiffel Tower is", false).unwrap();
    let cfg = |seed| GenerationConfig {
        max_new_tokens: 15,
        num_return_sequences: 3,
        seed,
        strategy: Strategy::Sample {
            temperature: 1.0,
            top_k: Some(50),
            top_p: Some(0.95),
        },
        ..Default::default()
    };
    let a = lm.model.generate(&prompt, &cfg(7)).unwrap();
    let b = lm.model.generate(&prompt, &cfg(7)).unwrap();
    let c = lm.model.generate(&prompt, &cfg(8)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|g| g.tokens.len() == 15));
}

#[test]
fn frequency_penalty_discourages_repeats() {
    let lm = load(tiny_dir().to_str().unwrap(), &burn::tensor::Device::flex()).unwrap();
    let prompt = lm.tokenizer.encode("Hello, world!", false).unwrap();
    let run = |penalty| {
        let cfg = GenerationConfig {
            max_new_tokens: 30,
            frequency_penalty: penalty,
            ..Default::default()
        };
        let toks = lm.model.generate(&prompt, &cfg).unwrap().remove(0).tokens;
        let mut uniq = toks.clone();
        uniq.sort_unstable();
        uniq.dedup();
        uniq.len()
    };
    // With a huge penalty every generated token must be new.
    assert_eq!(run(1e4), 30);
    assert!(run(0.0) < 30);
}

#[test]
fn invalid_generation_options_are_errors() {
    let lm = load(tiny_dir().to_str().unwrap(), &burn::tensor::Device::flex()).unwrap();
    let p = [5u32, 6, 7];
    let bad = [
        GenerationConfig {
            max_new_tokens: 200,
            ..Default::default()
        },
        GenerationConfig {
            num_return_sequences: 2,
            ..Default::default()
        },
        GenerationConfig {
            strategy: Strategy::Sample {
                temperature: 0.0,
                top_k: None,
                top_p: None,
            },
            ..Default::default()
        },
        GenerationConfig {
            strategy: Strategy::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(1.5),
            },
            ..Default::default()
        },
        GenerationConfig {
            strategy: Strategy::Beam {
                num_beams: 2,
                early_stopping: EarlyStopping::True,
                length_penalty: 1.0,
            },
            num_return_sequences: 3,
            ..Default::default()
        },
    ];
    for cfg in bad {
        assert!(lm.model.generate(&p, &cfg).is_err(), "{cfg:?}");
    }
    assert!(
        lm.model
            .generate(&[], &GenerationConfig::default())
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Top-k / top-p filtering keeps exactly the most probable tokens: no kept token is less
    /// probable than a dropped one, top-k keeps ≥ k (ties) and top-p reaches its mass.
    #[test]
    fn filtered_set_is_the_most_probable(
        logits in prop::collection::vec(-10.0f32..10.0, 2..60),
        k in 1usize..20,
        p in 0.05f32..1.0,
        temp in 0.2f32..3.0,
    ) {
        let kept = filtered_candidates(&logits, temp, Some(k), Some(p));
        prop_assert!(!kept.is_empty());
        let min_kept = kept.iter().map(|&i| logits[i]).fold(f32::INFINITY, f32::min);
        for (i, &l) in logits.iter().enumerate() {
            if !kept.contains(&i) {
                prop_assert!(l <= min_kept);
            }
        }
        let topk = filtered_candidates(&logits, temp, Some(k), None);
        prop_assert!(topk.len() >= k.min(logits.len()));
        let max = logits.iter().map(|l| l / temp).fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = topk.iter().map(|&i| ((logits[i] / temp - max) as f64).exp()).sum();
        let mass: f64 = kept.iter().map(|&i| ((logits[i] / temp - max) as f64).exp()).sum::<f64>() / z;
        prop_assert!(mass >= p as f64 - 1e-6 || kept.len() == topk.len());
    }

    /// Sampling with top-k / top-p only ever draws from the filtered set.
    #[test]
    fn sampling_draws_only_from_the_filtered_set(seed in 0u64..1000, k in 1usize..8, p in 0.1f32..0.9) {
        thread_local! {
            static LM: burnlens_model::LoadedModel =
                load(tiny_dir().to_str().unwrap(), &burn::tensor::Device::flex()).unwrap();
        }
        LM.with(|lm| {
            let prompt = [5u32, 17, 33];
            let cfg = GenerationConfig {
                max_new_tokens: 1,
                num_return_sequences: 4,
                seed,
                strategy: Strategy::Sample { temperature: 1.0, top_k: Some(k), top_p: Some(p) },
                ..Default::default()
            };
            let logits = lm.model.logits(&burnlens_model::TokenBatch::single(&prompt).unwrap()).unwrap();
            let last = to_vec(logits);
            let vocab = lm.model.config.vocab_size;
            let last = &last[2 * vocab..3 * vocab];
            let allowed = filtered_candidates(last, 1.0, Some(k), Some(p));
            for g in lm.model.generate(&prompt, &cfg).unwrap() {
                assert!(allowed.contains(&(g.tokens[0] as usize)), "drew {} outside {allowed:?}", g.tokens[0]);
            }
        });
    }
}
