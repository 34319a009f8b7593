//! `cargo xtask slurm` on a real one-node Slurm cluster (`.ci/slurm start`, which `.ci/run`
//! runs): a 4-shard causal trace of the organism's facts as a job array and a merge job equals
//! a single-process run exactly, and a failed task makes the merge job fail naming the shard.
//! Skipped with a reason where no cluster answers; required when `BURNLENS_REQUIRE_SLURM=1`.

use std::path::Path;

use crate::sweeps::assert_same_run;
use crate::{root, s, xtask};

/// Whether a Slurm controller answers with an idle node; a reason when not.
fn cluster() -> Result<(), String> {
    let out = std::process::Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .map_err(|e| {
            format!("sinfo cannot run ({e}); start a cluster with `.ci/slurm start DIR`")
        })?;
    let state = String::from_utf8_lossy(&out.stdout);
    if out.status.success()
        && state
            .lines()
            .any(|l| l.trim() == "idle" || l.trim() == "mixed")
    {
        Ok(())
    } else {
        Err(format!(
            "no idle Slurm node (sinfo: {:?} {}); start one with `.ci/slurm start DIR` and export \
             SLURM_CONF",
            state.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Skips (returns false) without a cluster, or fails where one is required.
fn have_cluster(test: &str) -> bool {
    match cluster() {
        Ok(()) => true,
        Err(why) if std::env::var("BURNLENS_REQUIRE_SLURM").as_deref() == Ok("1") => {
            panic!("{test}: BURNLENS_REQUIRE_SLURM=1 but {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

fn sweep() -> Vec<String> {
    let facts = root().join("fixtures/organism/known_facts.json");
    [
        "trace",
        "--facts",
        s(&facts),
        "--limit",
        "6",
        "--samples",
        "3",
        "--window",
        "2",
    ]
    .map(String::from)
    .to_vec()
}

/// `cargo xtask slurm --shards 4 --wait -- <sweep> --out out`.
fn submit(out: &Path) -> crate::Ran {
    let mut args: Vec<String> = ["slurm", "--shards", "4", "--wait", "--"]
        .map(String::from)
        .to_vec();
    args.extend(sweep());
    args.extend(["--out".into(), s(out).into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    xtask(&args)
}

#[test]
fn a_four_shard_trace_through_slurm_equals_the_single_run() {
    if !have_cluster("a_four_shard_trace_through_slurm_equals_the_single_run") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let ran = submit(&out);
    ran.succeeds();
    eprintln!("{}", ran.stdout);
    assert!(ran.stdout.contains("submitted job array"), "{}", ran.stdout);
    assert!(ran.stdout.contains("merge job"), "{}", ran.stdout);
    for i in 0..4 {
        let log = out.join(format!("slurm/logs/shard-{i}.out"));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("loaded"), "task {i} log: {text}");
        assert!(out.join(format!("shard-{i}/sweep.json")).exists());
    }
    let single = tmp.path().join("single");
    let mut args = sweep();
    args.extend(["--out".into(), s(&single).into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    xtask(&args).succeeds();
    assert_same_run(&single, &out);
}

#[test]
fn a_failed_task_makes_the_merge_job_fail_naming_its_shard() {
    if !have_cluster("a_failed_task_makes_the_merge_job_fail_naming_its_shard") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    // Task 2 finds its folder holding someone else's file and refuses to run.
    std::fs::create_dir_all(out.join("shard-2")).unwrap();
    std::fs::write(out.join("shard-2/notes.txt"), "not a run").unwrap();
    let ran = submit(&out);
    assert_ne!(ran.code, Some(0), "the sweep should fail: {}", ran.stdout);
    let task = std::fs::read_to_string(out.join("slurm/logs/shard-2.out")).unwrap();
    assert!(task.contains("already holds a run"), "task 2's log: {task}");
    let merge = std::fs::read_to_string(out.join("slurm/logs/merge.out")).unwrap();
    assert!(
        merge.contains("shard-2"),
        "the merge log names the shard: {merge}"
    );
    assert!(!out.join("result.json").exists());
}
