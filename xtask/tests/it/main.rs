//! xtask's command-line tests: each runs the built `xtask` as a user runs it (one test binary,
//! as for every crate; `cargo test -p xtask --test it <module>::`).

mod bad_input;
mod browser;
mod lenses;
mod memit;
mod out_dirs;
mod patch_pairs;
mod recipes;
mod slurm;
mod sweeps;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository (for the fixtures and recipes).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What a run of xtask left: its exit status, stdout and stderr.
pub struct Ran {
    /// The exit status (None when killed by a signal).
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Ran {
    /// Asserts that the run failed and that its stderr names every one of `parts`.
    pub fn fails_naming(&self, parts: &[&str]) -> &Self {
        assert_ne!(self.code, Some(0), "exited 0; stderr:\n{}", self.stderr);
        for p in parts {
            assert!(
                self.stderr.contains(p),
                "stderr should name {p:?}:\n{}",
                self.stderr
            );
        }
        assert!(
            !self.stderr.contains("panicked"),
            "a panic, not an error:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that the run succeeded.
    pub fn succeeds(&self) -> &Self {
        assert_eq!(self.code, Some(0), "stderr:\n{}", self.stderr);
        self
    }
}

/// Starts xtask with `args` in the background, its output discarded (for tests that signal
/// it or race it).
pub fn spawn_quiet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs xtask with `args` in `cwd` (with `env` set), killing it after 120 s: a hang is a
/// failure, not a stuck test run.
pub fn xtask_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().ok();
            panic!("xtask {args:?} hung (killed after 120 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code: status.code(),
        stdout: std::fs::read_to_string(out).unwrap(),
        stderr: std::fs::read_to_string(err).unwrap(),
    }
}

/// Runs xtask with `args` in a fresh temporary directory.
pub fn xtask(args: &[&str]) -> Ran {
    let cwd = tempfile::tempdir().unwrap();
    xtask_in(cwd.path(), args, &[])
}

/// The JSON file at `path`.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `p` as a string (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
