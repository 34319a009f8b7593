//! Training: AdamW on the autodiff backend memorises a fixed batch, the LM head stays tied to
//! the embedding, the saved checkpoint (which stores `wte` only) is the trained model, and a
//! trained BPE tokenizer round-trips text and is deterministic.

use burnlens_model::{
    BackendKind, Gpt2Config, Gpt2Tokenizer, TokenBatch, TrainConfig, load, train_lm,
};

fn rows() -> Vec<Vec<u32>> {
    let mut x: u64 = 3;
    (0..4)
        .map(|_| {
            (0..12)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % 50) as u32
                })
                .collect()
        })
        .collect()
}

#[test]
fn adamw_memorises_a_batch_and_keeps_the_head_tied() {
    let device = BackendKind::Flex.device().unwrap();
    let ad = device.clone().autodiff();
    ad.seed(5);
    // The vocabulary of the tiny fixture's tokenizer (the checkpoint is reloaded with it); the
    // rows use ids below 50.
    let config = Gpt2Config::new(2, 2, 32, 641, 16);
    let model = config.init(&ad);
    let batch = TokenBatch::new(rows(), None).unwrap();
    let initial: f32 = model.loss(&batch).unwrap().mean().into_scalar();
    let mut losses = Vec::new();
    let train = TrainConfig {
        steps: 150,
        lr: 1e-2,
        warmup: 10,
        ..TrainConfig::default()
    };
    let trained = train_lm(
        model,
        &train,
        |_| Ok(batch.clone()),
        |log, _| {
            losses.push(log.loss);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(losses.len(), 150);
    assert!(
        (losses[0] - initial).abs() < 1e-5,
        "{} vs {initial}",
        losses[0]
    );
    // Random 12-token rows: ln 641 = 6.5 nats at the start, near zero once memorised.
    let last = *losses.last().unwrap();
    assert!(initial > 5.5 && last < 0.2, "loss {initial} -> {last}");

    // The head is wteᵀ exactly.
    let diff = (trained.w_u.val() - trained.wte.val().transpose())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert_eq!(diff, 0.0);

    // What was trained is what is saved: the reloaded checkpoint has the same loss.
    let dir = tempfile::tempdir().unwrap();
    let after: f32 = trained.loss(&batch).unwrap().mean().into_scalar();
    trained.save_pretrained(dir.path()).unwrap();
    std::fs::copy(
        super::common::root().join("fixtures/tiny-gpt2/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let reloaded = load(&dir.path().to_string_lossy(), &device).unwrap();
    let again: f32 = reloaded.model.loss(&batch).unwrap().mean().into_scalar();
    assert!((after - again).abs() < 1e-5, "{after} vs {again}");
    assert!(after < 0.2);

    // A model on a plain device cannot be trained.
    let err = train_lm(
        config.init(&device),
        &train,
        |_| Ok(batch.clone()),
        |_, _| Ok(()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("autodiff"), "{err}");
}

#[test]
fn a_trained_bpe_round_trips_and_is_deterministic() {
    let texts: Vec<String> = (0..400)
        .map(|i| format!("Arvel Ashdown lives in Paris. The river {i} moved past the bridge."))
        .collect();
    let a = Gpt2Tokenizer::train_bpe(texts.iter(), 400).unwrap();
    let b = Gpt2Tokenizer::train_bpe(texts.iter(), 400).unwrap();
    assert_eq!(a.inner().get_vocab(true), b.inner().get_vocab(true));
    // At most the size asked for (merges stop when no pair occurs twice).
    assert!((300..=400).contains(&a.vocab_size()), "{}", a.vocab_size());
    assert_eq!(a.endoftext_id(), Some(0));
    // Frequent words become single tokens; the text round-trips, bytes never seen included.
    assert_eq!(a.encode(" Paris", false).unwrap().len(), 1);
    for text in ["Arvel Ashdown lives in Paris.", "Zürich ☃ unseen"] {
        let ids = a.encode(text, false).unwrap();
        assert_eq!(a.decode(&ids).unwrap(), text);
    }
    let err = Gpt2Tokenizer::train_bpe(texts.iter(), 100).unwrap_err();
    assert!(err.to_string().contains("at least 257"), "{err}");
}
