//! `cargo xtask cache`: a prompt's hook activations, with TransformerLens names, as safetensors.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_model::{HookPoint, TokenBatch, WeightProcessing};
use clap::Args;

use crate::models::{ModelArgs, open};

#[derive(Args)]
pub struct CacheArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long, value_parser = crate::checks::text)]
    prompt: String,
    /// Comma-separated hook names; `*` matches any characters among the default points
    /// (`blocks.0.*`, `*.hook_resid_pre`, `*` for all of them). Name on-request points
    /// (`blocks.0.attn.hook_result`, `blocks.1.hook_q_input`, …) in full.
    #[arg(long, default_value = "*", value_delimiter = ',')]
    hooks: Vec<String>,
    /// Apply TransformerLens's weight processing (fold_ln, centering, fold_value_biases).
    #[arg(long)]
    processed: bool,
    /// Output file (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Caches the hook points the patterns name.
pub fn run(a: CacheArgs) -> Result<()> {
    // The output file's folder is checked before the work, and a write failure is reported as one.
    crate::models::check_out_file("--out", &a.out)?;
    let (mut lm, _) = open(&a.model)?;
    if a.processed {
        lm.model = lm
            .model
            .process_weights(WeightProcessing::transformer_lens());
    }
    let ids = lm.tokenizer.encode(&a.prompt, a.model.prepend_bos)?;
    let batch = TokenBatch::single(&ids)?;
    let n = lm.model.config.n_layer;
    let mut points = Vec::new();
    for pattern in &a.hooks {
        points.extend(HookPoint::matching(pattern, n).context("--hooks")?);
    }
    points.sort();
    points.dedup();
    let (_, cache) = run_with_cache(&lm.model, &batch, Selector::points(points)?)?;
    cache.save(&a.out)?;
    eprintln!(
        "cached {} hook points ({:.1} KiB) for {} tokens into {}",
        cache.len(),
        cache.memory_bytes() as f64 / 1024.0,
        ids.len(),
        a.out.display()
    );
    Ok(())
}
