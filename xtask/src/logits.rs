//! `cargo xtask logits`: a prompt's token ids, string tokens, top-k predictions (JSON) and full
//! logits (`.npy`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use burnlens_model::TokenBatch;
use clap::Args;

use crate::models::{ModelArgs, open};
use crate::npy;

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long, value_parser = crate::checks::text)]
    prompt: String,
    /// Output path stem: writes STEM.json and STEM.npy ([pos, vocab] float32).
    #[arg(long)]
    out: PathBuf,
    /// Number of top predictions at the last position.
    #[arg(long, default_value_t = 10, value_parser = crate::checks::positive)]
    top_k: usize,
}

/// Writes the logits and the top predictions.
pub fn run(a: LogitsArgs) -> Result<()> {
    crate::models::check_out_file("--out", &a.out.with_extension("json"))?;
    let (lm, backend) = open(&a.model)?;
    let ids = lm.tokenizer.encode(&a.prompt, a.model.prepend_bos)?;
    let logits = lm.model.logits(&TokenBatch::single(&ids)?)?;
    let [_, t, v] = logits.dims();
    let data: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let last = &data[(t - 1) * v..];
    let max = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = last.iter().map(|x| (x - max).exp()).sum();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&x, &y| last[y].total_cmp(&last[x]));
    let top: Vec<serde_json::Value> = order
        .iter()
        .take(a.top_k)
        .map(|&i| {
            Ok(serde_json::json!({
                "id": i,
                "token": lm.tokenizer.str_tokens(&[i as u32])?[0],
                "logit": last[i],
                "prob": (last[i] - max).exp() / z,
            }))
        })
        .collect::<Result<_>>()?;
    let npy = a.out.with_extension("npy");
    npy::write_f32(&npy, &[t, v], &data)?;
    let json = serde_json::json!({
        "model": lm.dir,
        "backend": backend.name(),
        "prompt": a.prompt,
        "prepend_bos": a.model.prepend_bos,
        "token_ids": ids,
        "str_tokens": lm.tokenizer.str_tokens(&ids)?,
        "top_k_last_position": top,
        "logits_npy": npy,
        "logits_shape": [t, v],
    });
    let json_path = a.out.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("wrote {} and {}", json_path.display(), npy.display());
    for entry in json["top_k_last_position"].as_array().into_iter().flatten() {
        println!(
            "{:>8.4}  {:?}",
            entry["prob"].as_f64().unwrap_or(0.0),
            entry["token"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
