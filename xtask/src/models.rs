//! Which model a command opens, on which backend, and the run header every `result.json`
//! starts with.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burnlens_model::{BackendKind, LoadOptions, LoadedModel, ModelSource, load_from_with};
use clap::Args;

/// Which model, on which backend.
#[derive(Args)]
pub struct ModelArgs {
    /// A local directory in Hugging Face layout (relative paths resolve against the current
    /// directory), or a hub id (needs `--features hub`) [default: the model organism, the
    /// repository's fixtures/organism].
    #[arg(long)]
    pub model: Option<String>,
    /// Backend: ndarray, flex or wgpu.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Prepend <|endoftext|> as BOS (TransformerLens's default; transformers' is not to).
    #[arg(long)]
    pub prepend_bos: bool,
    /// Load a checkpoint even if some weights are NaN or infinite (for studying broken
    /// checkpoints; by default the first such weight is an error naming the tensor).
    #[arg(long)]
    pub allow_non_finite: bool,
}

impl ModelArgs {
    /// The model given, or the organism's directory.
    pub fn name(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| organism_dir().to_string_lossy().into_owned())
    }
}

/// The repository xtask was built from: its `fixtures/` hold the defaults.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The committed model organism, every command's default model.
pub fn organism_dir() -> PathBuf {
    repo_root().join("fixtures").join("organism")
}

/// Where burnlens caches what it can recompute (ROME's second moments): `$XDG_CACHE_HOME/burnlens`,
/// else `$HOME/.cache/burnlens`.
///
/// # Errors
/// Neither variable is set (pass the directory explicitly then).
pub fn cache_dir() -> Result<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("XDG_CACHE_HOME")
        .or_else(|| from("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("burnlens"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "neither XDG_CACHE_HOME nor HOME is set: name a cache directory explicitly"
            )
        })
}

/// Creates `dir`, the output directory given by `option`, and checks that a file can be
/// written into it, before any work is done.
///
/// # Errors
/// Naming `option` and the directory, with the system's reason.
pub fn prepare_out_dir(option: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the output directory {option} {}",
            dir.display()
        )
    })?;
    let probe = dir.join(".burnlens-write-check");
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "cannot write into the output directory {option} {}",
            dir.display()
        )
    })?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// Checks, before any work is done, that the file `path` given by `option` can be written: its
/// folder is created and written into.
///
/// # Errors
/// As [`prepare_out_dir`], or when `path` is an existing directory.
pub fn check_out_file(option: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!(
            "{option} {} is a directory; give a file name",
            path.display()
        );
    }
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => prepare_out_dir(option, dir),
        None => prepare_out_dir(option, Path::new(".")),
    }
}

/// Loads `args.model` on `args.backend`, saying what was loaded on stderr.
pub fn open(args: &ModelArgs) -> Result<(LoadedModel, BackendKind)> {
    let backend: BackendKind = args.backend.parse()?;
    let device = backend.device()?;
    let t = Instant::now();
    let options = LoadOptions {
        allow_non_finite: args.allow_non_finite,
    };
    let name = args.name();
    let lm = load_from_with(&ModelSource::parse(&name), &device, options)
        .with_context(|| format!("loading model {name}"))?;
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

static COMMAND: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Records the command line this process runs (for `result.json`'s `command`).
pub fn set_command(line: String) {
    *COMMAND.lock().unwrap_or_else(|e| e.into_inner()) = line;
}

/// `cargo xtask` and `args`, each quoted for a POSIX shell where it needs it.
pub fn shell_line(args: impl IntoIterator<Item = String>) -> String {
    let mut line = String::from("cargo xtask");
    for a in args {
        line.push(' ');
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=./,:@+%".contains(c));
        if plain {
            line.push_str(&a);
        } else {
            line.push('\'');
            line.push_str(&a.replace('\'', r"'\''"));
            line.push('\'');
        }
    }
    line
}

/// A command's `result.json`: the run header (`experiment`, `model`, `backend`, `git_commit`,
/// `command`, `created`) and then `fields`, an object of the command's own results.
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
        "command": *COMMAND.lock().unwrap_or_else(|e| e.into_inner()),
        "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    });
    if let (Some(map), serde_json::Value::Object(fields)) = (out.as_object_mut(), fields) {
        map.extend(fields);
    }
    out
}
