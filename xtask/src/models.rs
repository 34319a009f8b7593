//! Which model a command opens, on which backend, and the run header every `result.json`
//! starts with.

use std::time::Instant;

use anyhow::{Context, Result};
use burnlens_model::{BackendKind, LoadedModel, load};
use clap::Args;

/// Which model, on which backend.
#[derive(Args)]
pub struct ModelArgs {
    /// A local directory in Hugging Face layout, or a hub id (needs `--features hub`); the
    /// default is the model organism.
    #[arg(long, default_value = "fixtures/organism")]
    pub model: String,
    /// Backend: ndarray, flex or wgpu.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Prepend <|endoftext|> as BOS (TransformerLens's default; transformers' is not to).
    #[arg(long)]
    pub prepend_bos: bool,
}

/// Loads `args.model` on `args.backend`, saying what was loaded on stderr.
pub fn open(args: &ModelArgs) -> Result<(LoadedModel, BackendKind)> {
    let backend: BackendKind = args.backend.parse()?;
    let device = backend.device()?;
    let t = Instant::now();
    let lm = load(&args.model, &device).with_context(|| format!("loading model {}", args.model))?;
    eprintln!(
        "loaded {} ({} layers, d_model {}, {} parameters) on {backend} in {:.2?}",
        lm.dir.display(),
        lm.model.config.n_layer,
        lm.model.config.n_embd,
        lm.model.num_params(),
        t.elapsed()
    );
    Ok((lm, backend))
}

/// The commit of the checkout the command runs from, if git can tell.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A command's `result.json`: the run header (`experiment`, `model`, `backend`, `git_commit`)
/// and then `fields`, an object of the command's own results.
pub fn result(
    experiment: &str,
    lm: &LoadedModel,
    backend: BackendKind,
    fields: serde_json::Value,
) -> serde_json::Value {
    let mut out = serde_json::json!({
        "experiment": experiment,
        "model": lm.dir,
        "backend": backend.name(),
        "git_commit": git_commit(),
    });
    if let (Some(map), serde_json::Value::Object(fields)) = (out.as_object_mut(), fields) {
        map.extend(fields);
    }
    out
}
