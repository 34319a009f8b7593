//! Which model a command opens, on which backend, and the run header every `result.json`
//! starts with.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burnlens_model::{BackendKind, LoadOptions, LoadedModel, ModelSource, load_from_with};
use clap::Args;

/// Which model, on which backend.
#[derive(Args, serde::Serialize)]
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

/// An output directory claimed by this run: the lock on its `.burnlens-lock` file, held until
/// the value is dropped (the end of the command) and released by the system if the process
/// dies, so no stale lock survives a crash. The file stays (removing it could let two runs
/// lock two different files of one name) and says who holds it.
pub struct OutDirLock {
    _file: std::fs::File,
}

/// What a run does with an earlier run's files in its output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earlier {
    /// Refuse a folder that holds anything (the default).
    Refuse,
    /// Remove the earlier run's files first (`--overwrite`).
    Overwrite,
    /// Continue it (`--resume`; the sweep checks that it is the same run).
    Resume,
    /// Write over it file by file (a checkpoint folder: `organism --out`).
    Keep,
}

/// The names of the entries of `dir` that belong to a run (not the lock, not `keep`'s).
fn run_entries(dir: &Path, keep: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let keep: Vec<PathBuf> = keep
        .iter()
        .filter_map(|k| std::fs::canonicalize(k).ok())
        .collect();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if matches!(
            name.as_deref(),
            Some(".burnlens-lock" | ".burnlens-write-check" | "slurm")
        ) {
            continue;
        }
        if std::fs::canonicalize(&path).is_ok_and(|p| keep.contains(&p)) {
            continue;
        }
        out.push(path);
    }
    out.sort();
    Ok(out)
}

/// Creates `dir`, the output directory given by `option`, checks that it can be written and
/// locks it for this run, before any work is done: a second run into the same directory fails
/// at once, naming the process that holds it, and writes nothing there. Then, by `earlier`,
/// a folder holding files of an earlier run is refused (naming them and the flags that say
/// what to do), emptied (`--overwrite`: only in a folder a burnlens run wrote, one with a
/// `.burnlens-lock`, `result.json` or `sweep.json`), or left for the resume. Entries under
/// `keep` (the folders `merge` reads) and `slurm/` (the job scripts and logs) are not a run's.
///
/// # Errors
/// Naming `option` and the directory: it cannot be created or written, another run holds it,
/// or it holds an earlier run (or, for `--overwrite`, files burnlens did not write). Where
/// the filesystem cannot lock files, a warning says so and the run goes on.
pub fn claim_out_dir(
    option: &str,
    dir: &Path,
    earlier: Earlier,
    keep: &[PathBuf],
) -> Result<OutDirLock> {
    use std::io::{Read, Seek, Write};
    let ours = [".burnlens-lock", "result.json", "sweep.json"]
        .iter()
        .any(|f| dir.join(f).exists());
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the output directory {option} {}",
            dir.display()
        )
    })?;
    let path = dir.join(".burnlens-lock");
    let had_lock = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot write into the output directory {option} {}",
                dir.display()
            )
        })?;
    // A folder refused below keeps no lock file of ours (which would make it look like a run
    // burnlens wrote).
    let refuse = |e: anyhow::Error| -> anyhow::Error {
        if !had_lock {
            std::fs::remove_file(&path).ok();
        }
        e
    };
    match file.try_lock() {
        Ok(()) => {
            let holder = format!(
                "pid {} since {}: {}\n",
                std::process::id(),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                COMMAND.lock().unwrap_or_else(|e| e.into_inner())
            );
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(holder.as_bytes()))
                .with_context(|| {
                    format!(
                        "cannot write into the output directory {option} {}",
                        dir.display()
                    )
                })?;
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_string(&mut holder))
                .ok();
            anyhow::bail!(
                "{option} {}: another run is writing into this folder ({}); wait for it to \
                 finish or choose another folder",
                dir.display(),
                holder.trim()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            eprintln!(
                "warning: cannot lock {} ({e}); a second run into this folder will not be stopped",
                path.display()
            );
        }
    }
    let entries = run_entries(dir, keep)?;
    match earlier {
        _ if entries.is_empty() => {}
        Earlier::Keep | Earlier::Resume => {}
        Earlier::Refuse => {
            let names: Vec<String> = entries
                .iter()
                .take(4)
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            return Err(refuse(anyhow::anyhow!(
                "{option} {} already holds a run ({}{}): pass --overwrite to replace it (its files \
                 are removed first), --resume to continue an interrupted sweep (trace, \
                 attribute-layers, rome), or choose another folder",
                dir.display(),
                names.join(", "),
                if entries.len() > 4 { ", …" } else { "" }
            )));
        }
        Earlier::Overwrite => {
            if !ours {
                return Err(refuse(anyhow::anyhow!(
                    "--overwrite: {option} {} holds files that no burnlens run wrote (it has no \
                     .burnlens-lock, result.json or sweep.json); nothing was removed: choose an \
                     empty folder",
                    dir.display()
                )));
            }
            for p in &entries {
                let removed = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                };
                removed.with_context(|| format!("--overwrite: cannot remove {}", p.display()))?;
            }
            eprintln!(
                "--overwrite: removed the earlier run's {} entries from {}",
                entries.len(),
                dir.display()
            );
        }
    }
    Ok(OutDirLock { _file: file })
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

/// The commit of the checkout xtask was built from (not of the current directory), if git
/// can tell.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo_root())
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

/// The command line this process runs (`cargo xtask …`).
pub fn command_line() -> String {
    COMMAND.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The run header of `result.json` but its date: `experiment`, `model`, `backend`,
/// `git_commit`, `command`.
pub fn header(experiment: &str, lm: &LoadedModel, backend: BackendKind) -> serde_json::Value {
    serde_json::json!({
        "experiment": experiment,
        "model": lm.dir,
        "backend": backend.name(),
        "git_commit": git_commit(),
        "command": command_line(),
    })
}

/// A `result.json` from a run header ([`header`]): the header, `created` (now), then
/// `fields`, an object of the command's own results.
pub fn result_from(header: &serde_json::Value, fields: serde_json::Value) -> serde_json::Value {
    let mut out = header.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert(
            "created".into(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        if let serde_json::Value::Object(fields) = fields {
            map.extend(fields);
        }
    }
    out
}

/// A command's `result.json`: the run header (`experiment`, `model`, `backend`, `git_commit`,
/// `command`, `created`) and then `fields`, an object of the command's own results.
pub fn result(
    experiment: &str,
    lm: &LoadedModel,
    backend: BackendKind,
    fields: serde_json::Value,
) -> serde_json::Value {
    result_from(&header(experiment, lm, backend), fields)
}
