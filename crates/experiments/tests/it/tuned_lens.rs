//! The tuned lens on the model organism: trained on its texts, it reads every layer closer to
//! the model's output than the logit lens does (held-out KL lower at every layer but the last,
//! where both are the output); an untrained lens is the logit lens; a saved lens loads back to
//! the same readouts; a lens for another model's width is refused, naming the file.

use crate::common::{ids, root};

use burnlens_experiments::{
    TunedLens, TunedLensConfig, TunedLensTraining, lens_kl, train_tuned_lens,
};
use burnlens_model::{BackendKind, load};

/// The organism's texts and its known facts as sentences, tokenized: (training, held out).
fn organism_texts(tok: &burnlens_model::Gpt2Tokenizer) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let dir = root().join("fixtures/organism");
    let paragraphs: Vec<String> = std::fs::read_to_string(dir.join("texts.txt"))
        .unwrap()
        .split("\n\n")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("known_facts.json")).unwrap())
            .unwrap();
    let sentences: Vec<String> = facts
        .as_array()
        .unwrap()
        .chunks(4)
        .map(|four| {
            four.iter()
                .map(|f| {
                    format!(
                        "{}{}.",
                        f["prompt"].as_str().unwrap(),
                        f["prediction"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let all: Vec<Vec<u32>> = paragraphs
        .iter()
        .chain(&sentences)
        .map(|t| tok.encode(t, false).unwrap())
        .collect();
    // Every fifth text is held out.
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, t) in all.into_iter().enumerate() {
        if i % 5 == 4 {
            held.push(t)
        } else {
            train.push(t)
        }
    }
    (train, held)
}

#[test]
fn the_tuned_lens_reads_every_layer_closer_to_the_output_than_the_logit_lens() {
    let device = BackendKind::Flex.device().unwrap();
    let lm = load(root().join("fixtures/organism").to_str().unwrap(), &device).unwrap();
    let (train, held) = organism_texts(&lm.tokenizer);
    let n = lm.model.config.n_layer;
    let logit = lens_kl(&lm.model, None, &held, 64).unwrap();
    // An untrained lens (zero translators) is the logit lens.
    let zero = TunedLensConfig::for_model(&lm.model).init(&device);
    assert_eq!(lens_kl(&lm.model, Some(&zero), &held, 64).unwrap(), logit);
    let options = TunedLensTraining {
        steps: 120,
        ..TunedLensTraining::default()
    };
    let (lens, losses) = train_tuned_lens(&lm.model, &train, &options).unwrap();
    assert_eq!(losses.len(), 120);
    assert!(losses.iter().all(|l| l.is_finite()));
    let tuned = lens_kl(&lm.model, Some(&lens), &held, 64).unwrap();
    eprintln!("held-out KL per readout: logit lens {logit:?}, tuned lens {tuned:?}");
    assert_eq!(tuned.len(), n + 1);
    for l in 0..n {
        assert!(
            tuned[l] < logit[l],
            "layer {l}: tuned {} is not below the logit lens's {}",
            tuned[l],
            logit[l]
        );
    }
    // The last readout is the output itself for both.
    assert!(
        logit[n].abs() < 1e-6 && tuned[n].abs() < 1e-6,
        "{logit:?} {tuned:?}"
    );

    // Saved and loaded, the same readouts; for a model of another width, a clear error.
    let dir = tempfile_dir();
    let path = dir.join("lens.safetensors");
    lens.save(&path).unwrap();
    let back = TunedLens::load(&path, &lm.model).unwrap();
    assert_eq!(lens_kl(&lm.model, Some(&back), &held, 64).unwrap(), tuned);
    let tiny = load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), &device).unwrap();
    let e = TunedLens::load(&path, &tiny.model).unwrap_err().to_string();
    assert!(
        e.contains("lens.safetensors") && e.contains("another model"),
        "{e}"
    );
    let e = lens_kl(&tiny.model, Some(&lens), &held, 64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tuned lens"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    // No text to train on.
    let e = train_tuned_lens(&lm.model, &[vec![]], &options)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    let _ = ids;
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("burnlens-tuned-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
