//! Prompt-prepend search against brute force on the tiny fixture: every vocabulary token tried
//! alone, its target loss computed on the host from single-sequence logits.

use crate::common;
use common::tiny;

use std::sync::{Arc, Mutex};

use burnlens_experiments::{Observer, SearchOptions, prepend_search};
use burnlens_model::{Gpt2, TokenBatch, available_devices};

/// Mean `−log p(target_i | ..)` for `prefix + target`, in f64 on the host.
fn brute_loss(model: &Gpt2, prefix: &[u32], target: &[u32]) -> f64 {
    let seq: Vec<u32> = prefix.iter().chain(target).copied().collect();
    let logits = model.logits(&TokenBatch::single(&seq).unwrap()).unwrap();
    let v = logits.dims()[2];
    let host: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    let k = prefix.len();
    let mut total = 0.0;
    for (i, &t) in target.iter().enumerate() {
        let row = &host[(k - 1 + i) * v..(k + i) * v];
        let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        total += lse - row[t as usize] as f64;
    }
    total / target.len() as f64
}

#[test]
fn prepend_search_finds_the_brute_force_minimiser() {
    let device = available_devices()[0].1.clone();
    let model = tiny(&device);
    let target = [268u32, 503, 281]; // " the city of"
    let vocab = model.config.vocab_size as u32;
    let found = prepend_search(&model, &target, &options(2, 100)).unwrap();
    let mut prefix: Vec<u32> = Vec::new();
    for round in &found.rounds {
        let (mut best, mut best_loss) = (0, f64::INFINITY);
        for c in 0..vocab {
            let p: Vec<u32> = std::iter::once(c).chain(prefix.iter().copied()).collect();
            let loss = brute_loss(&model, &p, &target);
            if loss < best_loss {
                (best, best_loss) = (c, loss);
            }
        }
        assert_eq!(
            round.token,
            best,
            "round {}: search vs brute force",
            prefix.len()
        );
        assert!((f64::from(round.loss) - best_loss).abs() < 1e-5);
        assert!((round.perplexity - round.loss.exp()).abs() < 1e-6);
        prefix.insert(0, best);
    }
    assert_eq!(found.prefix, prefix);
    // The batch size changes nothing.
    let again = prepend_search(&model, &target, &options(1, 641)).unwrap();
    assert_eq!(again.rounds[0].token, found.rounds[0].token);
    // Progress reaches the whole vocabulary per round.
    let last = Arc::new(Mutex::new((0, 0)));
    let l = last.clone();
    let observed = SearchOptions {
        observer: Observer::new(move |d, t| *l.lock().unwrap() = (d, t)),
        ..options(1, 256)
    };
    prepend_search(&model, &target, &observed).unwrap();
    assert_eq!(*last.lock().unwrap(), (vocab as usize, vocab as usize));
    let e = prepend_search(&model, &[], &options(1, 8)).unwrap_err();
    assert!(e.to_string().contains("the target is empty"), "{e}");
    let e = prepend_search(&model, &target, &options(0, 8)).unwrap_err();
    assert!(e.to_string().contains("`n_tokens` = 0"), "{e}");
}

fn options(n_tokens: usize, batch: usize) -> SearchOptions {
    SearchOptions {
        n_tokens,
        batch,
        ..SearchOptions::default()
    }
}
