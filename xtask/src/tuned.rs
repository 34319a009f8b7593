//! `cargo xtask tuned-lens`: trains a tuned lens (one affine translator per layer) for a model
//! on a text corpus, writes it as `tuned_lens.safetensors` (`cargo xtask lens --tuned FILE`
//! reads through it), and reports each readout's held-out KL to the model's output for the
//! logit lens and the tuned lens (result.json, SVG, index.html).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burnlens_datasets::read_texts;
use burnlens_experiments::{TunedLensTraining, lens_kl, train_tuned_lens};
use clap::Args;
use serde_json::json;

use crate::models::{self, ModelArgs, open};
use crate::report::{Page, Series, line_plot_svg, line_plot_svg_ticks};

/// Options of `cargo xtask tuned-lens`.
#[derive(Args)]
pub struct TunedLensArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts to train on (.txt paragraphs, .jsonl/.json `text` fields); every fifth is held
    /// out for the KL report. Without it: the organism's corpus (from its manifest).
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// Texts drawn from the organism's corpus without --texts.
    #[arg(long, default_value_t = 1000, value_parser = crate::checks::positive)]
    pub samples: usize,
    /// Optimiser steps (SGD, Nesterov momentum, the rate decaying linearly to zero).
    #[arg(long, default_value_t = 250, value_parser = crate::checks::positive)]
    pub steps: usize,
    /// The tuned-lens trainer's lr_scale: the first step's rate is lr × (1 − momentum 0.9).
    #[arg(long, default_value_t = 1.0, value_parser = crate::checks::positive_f64)]
    pub lr: f64,
    /// Texts per step.
    #[arg(long, default_value_t = 8, value_parser = crate::checks::positive)]
    pub batch_size: usize,
    /// Tokens kept per text.
    #[arg(long, default_value_t = 64, value_parser = crate::checks::positive)]
    pub seq_len: usize,
    /// Seed of the batches' draw (and of the organism's corpus).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `cargo xtask tuned-lens`.
pub fn run(a: TunedLensArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (lm, backend) = open(&a.model)?;
    let texts: Vec<String> = match &a.texts {
        Some(path) => read_texts(path)?,
        None => {
            let m = burnlens_datasets::Manifest::load(&lm.dir)
                .context("without --texts the model must be the organism (fixtures/organism)")?;
            m.world.corpus(&m.corpus, a.samples, a.seed ^ 0x7e5e)?
        }
    };
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| lm.tokenizer.encode(t, a.model.prepend_bos))
        .collect::<std::result::Result<_, _>>()?;
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, t) in ids.into_iter().filter(|t| !t.is_empty()).enumerate() {
        if i % 5 == 4 {
            held.push(t);
        } else {
            train.push(t);
        }
    }
    if held.is_empty() {
        bail!(
            "{} texts: at least 5 are needed (every fifth is held out)",
            train.len()
        );
    }
    let bar = crate::progress::bar(
        a.steps as u64,
        "training [{bar:40}] {pos}/{len} steps ({eta})",
        "tuned lens steps",
    );
    let options = TunedLensTraining {
        steps: a.steps,
        lr: a.lr,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        seed: a.seed,
        observer: crate::progress::observer(&bar),
        ..TunedLensTraining::default()
    };
    let (lens, losses) = train_tuned_lens(&lm.model, &train, &options)?;
    bar.finish();
    let path = a.out.join("tuned_lens.safetensors");
    lens.save(&path)?;
    let logit = lens_kl(&lm.model, None, &held, a.seq_len)?;
    let tuned = lens_kl(&lm.model, Some(&lens), &held, a.seq_len)?;
    let n = lm.model.config.n_layer;
    let labels: Vec<String> = (0..n)
        .map(|l| format!("{l}_pre"))
        .chain(std::iter::once("final_post".to_string()))
        .collect();
    for (l, label) in labels.iter().enumerate() {
        println!(
            "{label:>10}: KL logit lens {:.4}, tuned lens {:.4}",
            logit[l], tuned[l]
        );
    }
    let as_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (logit32, tuned32) = (as_f32(&logit), as_f32(&tuned));
    let mut page = Page::new(
        "Tuned lens",
        &format!(
            "{} training texts, {} held out; {} steps",
            train.len(),
            held.len(),
            a.steps
        ),
    );
    page.section("Held-out KL(output ‖ readout) at every readout")
        .note(
            "The residual stream entering each block read out through the final LayerNorm and \
             the unembedding, as it is (logit lens) or through the layer's trained translator \
             (tuned lens); the last readout is the output itself.",
        )
        .figure(
            "KL per readout",
            "kl.svg",
            line_plot_svg_ticks(
                "KL(output ‖ readout), mean over held-out tokens (nats)",
                "readout",
                "KL (nats)",
                &[
                    Series {
                        name: "logit lens",
                        values: &logit32,
                        band: &[],
                    },
                    Series {
                        name: "tuned lens",
                        values: &tuned32,
                        band: &[],
                    },
                ],
                &labels,
            ),
        )
        .figure(
            "training loss",
            "loss.svg",
            line_plot_svg(
                "Training loss: KL summed over the layers",
                "step",
                "loss (nats)",
                &[Series {
                    name: "loss",
                    values: &losses,
                    band: &[],
                }],
            ),
        );
    let result = models::result(
        "tuned_lens",
        &lm,
        backend,
        json!({
            "texts_file": a.texts, "train_texts": train.len(), "held_out_texts": held.len(),
            "steps": a.steps, "lr": a.lr, "momentum": options.momentum,
            "weight_decay": options.weight_decay, "batch_size": a.batch_size,
            "seq_len": a.seq_len, "seed": a.seed, "readouts": labels,
            "kl_logit_lens": logit, "kl_tuned_lens": tuned, "losses": losses,
            "lens_file": path, "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    page.summary(&format!(
        "held-out KL to the output: logit lens {:.3} → tuned lens {:.3} at the first readout",
        logit[0], tuned[0]
    ));
    page.write(&a.out, &result, "tuned_lens.safetensors")
}
