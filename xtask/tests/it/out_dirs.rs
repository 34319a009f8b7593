//! Output folders belong to one run at a time: a second run into the folder of a running one
//! fails at once, naming the holder, and leaves the first run's work intact; the lock dies
//! with its process, so a killed run leaves no stale lock.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::{read_json, s, spawn_quiet, xtask};

/// Starts a prepend search long enough (six greedy rounds over the organism's vocabulary) to
/// still be running when the next command starts, and waits until it holds `out`.
fn start_long_run(out: &Path) -> Child {
    let child = spawn_quiet(&[
        "prepend",
        "--target",
        " Emma lives in Paris.",
        "--tokens",
        "6",
        "--out",
        s(out),
    ]);
    let lock = out.join(".burnlens-lock");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("pid {}", child.id())))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never took its folder"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn a_second_run_into_a_running_one_s_folder_fails_at_once_and_damages_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut first = start_long_run(&out);
    let t = Instant::now();
    let second = xtask(&["lens", "--prompt", "Jessop Emma lives in", "--out", s(&out)]);
    second.fails_naming(&[
        "--out",
        "another run is writing into this folder",
        &format!("pid {}", first.id()),
        "cargo xtask prepend",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the second run did not fail at once"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run should still be running"
    );
    assert!(first.wait().unwrap().success(), "the first run failed");
    // The first run's report is whole, and the second wrote nothing.
    let r = read_json(&out.join("result.json"));
    assert_eq!(r["experiment"], "prepend_search");
    assert_eq!(r["prefix_ids"].as_array().unwrap().len(), 6);
    // Once it has ended, the folder is free again (and holds a run, which --overwrite
    // replaces).
    xtask(&[
        "lens",
        "--prompt",
        "Jessop Emma lives in",
        "--out",
        s(&out),
        "--overwrite",
    ])
    .succeeds();
    assert_eq!(
        read_json(&out.join("result.json"))["experiment"],
        "logit_lens"
    );
}

#[test]
fn a_killed_run_leaves_no_stale_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut first = start_long_run(&out);
    first.kill().unwrap();
    first.wait().unwrap();
    xtask(&["lens", "--prompt", "Jessop Emma lives in", "--out", s(&out)]).succeeds();
}
