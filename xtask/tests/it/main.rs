//! xtask's command-line tests: each runs the built `xtask` as a user runs it (one test binary,
//! as for every crate; `cargo test -p xtask --test it <module>::`).

mod bad_input;
mod recipes;

use std::path::{Path, PathBuf};

/// The repository (for the fixtures and recipes).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
