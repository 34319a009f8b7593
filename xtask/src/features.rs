//! A check, not a command: the README's two commands (`cargo xtask run …`, which builds the
//! `xtask` package, and the test command, which builds the whole workspace with its
//! dev-dependencies and the `hub` feature) must resolve every shared dependency with the same
//! features. Otherwise cargo compiles burn and most of its graph a second time for the tests
//! (17.5 minutes on 2 cores before xtask's Cargo.toml turned the same features on).

use std::collections::BTreeMap;
use std::process::Command;

/// `package version → features` of `cargo tree` with `args`, from the workspace root.
fn resolved(args: &[&str]) -> BTreeMap<String, String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["tree", "--locked", "--offline", "--prefix", "none"])
        .args(["-f", "{p}|{f}"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim_end_matches(" (*)").split_once('|'))
        .map(|(p, f)| (p.trim().to_string(), f.trim().to_string()))
        .collect()
}

#[test]
fn the_main_command_and_the_test_command_resolve_the_same_features() {
    let main = resolved(&["-p", "xtask", "-e", "normal,build"]);
    let tests = resolved(&[
        "--workspace",
        "--features",
        "burnlens-model/hub",
        "-e",
        "normal,build,dev",
    ]);
    assert!(main.keys().any(|p| p.starts_with("burn-core ")), "{main:?}");
    let differ: Vec<String> = main
        .iter()
        .filter_map(|(p, f)| match tests.get(p) {
            Some(g) if g != f => Some(format!("{p}: xtask [{f}], tests [{g}]")),
            None => Some(format!("{p}: not in the test build")),
            _ => None,
        })
        .collect();
    assert!(
        differ.is_empty(),
        "turn these features on in xtask/Cargo.toml (or drop them from the dev-dependencies), \
         so that the test command reuses `cargo xtask`'s build:\n{}",
        differ.join("\n")
    );
}
