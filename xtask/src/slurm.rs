//! `cargo xtask slurm --shards N … -- <command> <options>`: a sharded sweep as a Slurm job
//! array and a merge job, submitted with `sbatch` (or printed with `--dry-run`).
//!
//! Task `i` of the array runs the command with `--shard i/N --out <out>/shard-<i>`, and with
//! `--resume` when its folder already holds a sweep (Slurm requeued the task after a node
//! failure or a preemption, so it continues where it stopped). The merge job runs
//! `merge <out>/shard-0 … --out <out>` once every task has ended (`afterany`, not `afterok`:
//! with `afterok` Slurm never starts the merge when a task fails — it stays pending with
//! `DependencyNeverSatisfied` — so nothing would say which shard failed; `merge` itself refuses
//! an unfinished shard and names it, and its exit code is the job's). Both run the binary this
//! command runs from (built once; `--binary` names another), never `cargo run`. Scripts and
//! logs go to `<out>/slurm/`. On a real cluster `<out>`, the binary, the model and the data
//! files must be on a filesystem every node sees (docs/CLUSTER.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser};

use crate::Cli;
use crate::merge::SWEEP_COMMANDS;

/// Options of `cargo xtask slurm`.
#[derive(Args)]
pub struct SlurmArgs {
    /// Tasks of the job array: the sweep's items are split into this many shards.
    #[arg(long, value_parser = crate::checks::positive)]
    pub shards: usize,
    /// Slurm partition (sbatch --partition; default: the cluster's default partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit of each task (sbatch --time, e.g. 2:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// CPUs per task (sbatch --cpus-per-task).
    #[arg(long, value_parser = crate::checks::positive)]
    pub cpus_per_task: Option<usize>,
    /// GPUs per task (sbatch --gpus-per-task), for `--backend wgpu`.
    #[arg(long, value_parser = crate::checks::positive)]
    pub gpus_per_task: Option<usize>,
    /// The burnlens binary the tasks run [default: the one running now].
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Print the two job scripts instead of writing and submitting them.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the merge job to end (sbatch --wait) and exit with its code.
    #[arg(long)]
    pub wait: bool,
    /// The sweep: a dataset-level command (trace, attribute-layers, rome, patch --pairs, heads)
    /// and its options, with --out (the merged folder) and without --shard or --resume.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// `arg` quoted for a POSIX shell where it needs it.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./,:@+%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `path` made absolute against the current directory (a task may run anywhere).
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// The sweep's command line without its `--out` and the folder it names.
fn split_out(command: &[String]) -> Result<(Vec<String>, PathBuf)> {
    let mut rest = Vec::new();
    let mut out = None;
    let mut words = command.iter();
    while let Some(w) = words.next() {
        if w == "--out" {
            let dir = words.next().context("--out needs a folder")?;
            out = Some(PathBuf::from(dir));
        } else if let Some(dir) = w.strip_prefix("--out=") {
            out = Some(PathBuf::from(dir));
        } else if w == "--shard" || w.starts_with("--shard=") || w == "--resume" {
            bail!("the sweep after -- must not give {w}: each task gets its own --shard");
        } else {
            rest.push(w.clone());
        }
    }
    let out = out.context(
        "the sweep after -- needs --out DIR: the merged result goes there, the shards into \
         DIR/shard-<i>",
    )?;
    Ok((rest, out))
}

/// The array script and the merge script.
fn scripts(a: &SlurmArgs, binary: &Path, rest: &[String], out: &Path) -> Result<(String, String)> {
    let cwd = std::env::current_dir().context("the current directory")?;
    let n = a.shards;
    let slurm = out.join("slurm");
    let name = format!("burnlens-{}", rest[0]);
    let mut head = String::from("#!/bin/bash\n");
    let mut common = String::new();
    let _ = writeln!(common, "#SBATCH --chdir={}", quote(&cwd.to_string_lossy()));
    if let Some(p) = &a.partition {
        let _ = writeln!(common, "#SBATCH --partition={}", quote(p));
    }
    head.push_str("# Written by `cargo xtask slurm`: one task per shard of the sweep.\n");
    let _ = writeln!(head, "#SBATCH --job-name={name}");
    let _ = writeln!(head, "#SBATCH --array=0-{}", n - 1);
    let _ = writeln!(
        head,
        "#SBATCH --output={}",
        quote(&slurm.join("logs/shard-%a.out").to_string_lossy())
    );
    head.push_str(&common);
    if let Some(t) = &a.time {
        let _ = writeln!(head, "#SBATCH --time={}", quote(t));
    }
    if let Some(c) = a.cpus_per_task {
        let _ = writeln!(head, "#SBATCH --cpus-per-task={c}");
    }
    if let Some(g) = a.gpus_per_task {
        let _ = writeln!(head, "#SBATCH --gpus-per-task={g}");
    }
    head.push_str("#SBATCH --requeue\nset -euo pipefail\n");
    let _ = writeln!(head, "i=$SLURM_ARRAY_TASK_ID");
    let _ = writeln!(head, "dir={}/shard-$i", quote(&out.to_string_lossy()));
    head.push_str(
        "# A requeued task continues its shard where it stopped.\n\
         resume=()\nif [ -f \"$dir/sweep.json\" ]; then resume=(--resume); fi\n",
    );
    let words: Vec<String> = rest.iter().map(|w| quote(w)).collect();
    let _ = writeln!(
        head,
        "exec {} {} --shard \"$i/{n}\" --out \"$dir\" \"${{resume[@]}}\"",
        quote(&binary.to_string_lossy()),
        words.join(" ")
    );
    let mut merge = String::from("#!/bin/bash\n");
    merge.push_str(
        "# Written by `cargo xtask slurm`: merges the shards once every task has ended; an \
         unfinished shard is an error naming it.\n",
    );
    let _ = writeln!(merge, "#SBATCH --job-name={name}-merge");
    let _ = writeln!(
        merge,
        "#SBATCH --output={}",
        quote(&slurm.join("logs/merge.out").to_string_lossy())
    );
    merge.push_str(&common);
    merge.push_str("set -euo pipefail\n");
    let dirs: Vec<String> = (0..n)
        .map(|i| quote(&out.join(format!("shard-{i}")).to_string_lossy()))
        .collect();
    let _ = writeln!(
        merge,
        "exec {} merge {} --out {}",
        quote(&binary.to_string_lossy()),
        dirs.join(" "),
        quote(&out.to_string_lossy())
    );
    Ok((head, merge))
}

/// Runs `sbatch` with `args`, returning the job id it prints (`--parsable`: `id[;cluster]`).
fn sbatch(args: &[String]) -> Result<String> {
    let output = std::process::Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run sbatch: is Slurm installed and on PATH?")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "sbatch {} failed ({}){}",
            args.join(" "),
            output.status,
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", stdout.trim())
            }
        );
    }
    let id = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.split(';').next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("sbatch printed no job id: {stdout:?}"))?;
    Ok(id)
}

/// Runs `cargo xtask slurm`.
pub fn run(a: SlurmArgs) -> Result<()> {
    let (rest, out) = split_out(&a.command)?;
    let Some(sub) = rest.first() else {
        bail!(
            "give the sweep after --: one of {}, with its options",
            SWEEP_COMMANDS.join(", ")
        );
    };
    if !SWEEP_COMMANDS.contains(&sub.as_str()) {
        bail!(
            "{sub:?} is not a sweep: `slurm` shards {} (the commands that work item by item)",
            SWEEP_COMMANDS.join(", ")
        );
    }
    // The sweep must parse here, not fail in N tasks on the cluster.
    let mut check = vec!["cargo xtask".to_string()];
    check.extend(rest.iter().cloned());
    check.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    if let Err(e) = Cli::try_parse_from(&check) {
        bail!("the sweep after -- does not parse: {e}");
    }
    let out = absolute(&out)?;
    let binary = match &a.binary {
        Some(b) => absolute(b)?,
        None => std::env::current_exe().context("the running binary's path")?,
    };
    if !binary.is_file() {
        bail!("--binary {}: no such file", binary.display());
    }
    let (array, merge) = scripts(&a, &binary, &rest, &out)?;
    if a.dry_run {
        println!("# array.sh\n{array}\n# merge.sh\n{merge}");
        return Ok(());
    }
    let slurm = out.join("slurm");
    crate::models::prepare_out_dir("--out", &slurm.join("logs"))?;
    let (array_path, merge_path) = (slurm.join("array.sh"), slurm.join("merge.sh"));
    crate::sweep::write_atomic(&array_path, array.as_bytes())?;
    crate::sweep::write_atomic(&merge_path, merge.as_bytes())?;
    let array_id = sbatch(&[array_path.to_string_lossy().into_owned()])?;
    println!(
        "submitted job array {array_id} ({} tasks): {}",
        a.shards,
        array_path.display()
    );
    let mut merge_args = vec![format!("--dependency=afterany:{array_id}")];
    if a.wait {
        merge_args.push("--wait".into());
    }
    merge_args.push(merge_path.to_string_lossy().into_owned());
    if a.wait {
        println!("waiting for the merge job (after {array_id})…");
    }
    let merge_id = sbatch(&merge_args)
        .with_context(|| format!("the merge job (logs in {})", slurm.join("logs").display()))?;
    if a.wait {
        println!(
            "merge job {merge_id} finished: {} holds the merged sweep",
            out.display()
        );
    } else {
        println!(
            "submitted merge job {merge_id} (after {array_id}): {}; logs in {}",
            merge_path.display(),
            slurm.join("logs").display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(shards: usize, command: &[&str]) -> SlurmArgs {
        SlurmArgs {
            shards,
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            cpus_per_task: Some(4),
            gpus_per_task: None,
            binary: None,
            dry_run: true,
            wait: false,
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_scripts_shard_resume_and_merge() {
        let a = args(3, &["trace", "--facts", "f.json", "--out", "/x/run"]);
        let (rest, out) = split_out(&a.command).unwrap();
        assert_eq!(rest, ["trace", "--facts", "f.json"]);
        let (array, merge) = scripts(&a, Path::new("/opt/burnlens"), &rest, &out).unwrap();
        assert!(array.contains("#SBATCH --array=0-2"), "{array}");
        assert!(array.contains("#SBATCH --partition=gpu"));
        assert!(array.contains("#SBATCH --time=1:00:00"));
        assert!(array.contains("#SBATCH --cpus-per-task=4"));
        assert!(array.contains("#SBATCH --requeue"));
        assert!(array.contains(
            "exec /opt/burnlens trace --facts f.json --shard \"$i/3\" --out \"$dir\" \"${resume[@]}\""
        ));
        assert!(array.contains("dir=/x/run/shard-$i"));
        assert!(merge.contains(
            "exec /opt/burnlens merge /x/run/shard-0 /x/run/shard-1 /x/run/shard-2 --out /x/run"
        ));
        for bad in [
            &["trace", "--out", "o", "--shard", "0/2"][..],
            &["trace", "--out", "o", "--resume"],
            &["trace", "--facts", "f"],
        ] {
            assert!(split_out(&args(2, bad).command).is_err(), "{bad:?}");
        }
    }
}
