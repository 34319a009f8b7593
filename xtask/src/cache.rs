//! `cargo xtask cache`: a prompt's hook activations, with TransformerLens names, as safetensors.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_model::{HookPoint, TokenBatch, WeightProcessing};
use clap::Args;

use crate::models::{ModelArgs, open};

#[derive(Args)]
pub struct CacheArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Comma-separated hook names; `*` matches any characters among the default points
    /// (`blocks.0.*`, `*.hook_resid_pre`, `*` for all of them). Name on-request points
    /// (`blocks.0.attn.hook_result`, `blocks.1.hook_q_input`, …) in full.
    #[arg(long, default_value = "*")]
    hooks: String,
    /// Apply TransformerLens's weight processing (fold_ln, centering, fold_value_biases).
    #[arg(long)]
    processed: bool,
    /// Output file (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

/// Caches the hook points the patterns name.
pub fn run(a: CacheArgs) -> Result<()> {
    let (mut lm, _) = open(&a.model)?;
    if a.processed {
        lm.model = lm
            .model
            .process_weights(WeightProcessing::transformer_lens());
    }
    let ids = lm.tokenizer.encode(&a.prompt, a.model.prepend_bos)?;
    let batch = TokenBatch::single(&ids)?;
    let n = lm.model.config.n_layer;
    let patterns: Vec<String> = a.hooks.split(',').map(|p| p.trim().to_string()).collect();
    let mut points = Vec::new();
    for pattern in &patterns {
        let matched: Vec<HookPoint> = if pattern.contains('*') {
            HookPoint::all(n)
                .into_iter()
                .filter(|p| glob(pattern, &p.to_string()))
                .collect()
        } else {
            let p: HookPoint = pattern.parse()?;
            p.check_layer(n)?;
            vec![p]
        };
        if matched.is_empty() {
            bail!("--hooks: {pattern:?} matches no hook point of this {n}-block model");
        }
        points.extend(matched);
    }
    points.sort();
    points.dedup();
    let (_, cache) = run_with_cache(&lm.model, &batch, Selector::points(points)?)?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
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
