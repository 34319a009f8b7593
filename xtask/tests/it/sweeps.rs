//! Sweeps item by item: the merge of 3 shards equals one run, a run interrupted (SIGINT,
//! SIGKILL, a torn last line) and resumed equals one never interrupted, and every kind of bad
//! sweep input is an error naming what is wrong. Runs the real binary as a user does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{read_json, root, s, spawn_quiet, xtask};

/// The fields of a result.json that differ between two runs of the same sweep by design: when
/// and how it ran (the command line names --shard and --out), the timings, the shard.
const VOLATILE: &[&str] = &[
    "created",
    "command",
    "seconds",
    "seconds_total",
    "seconds_all_sweeps",
    "shard",
];

/// `v` without the volatile fields, at any depth.
fn stable(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), stable(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(a) => a.iter().map(stable).collect(),
        v => v.clone(),
    }
}

/// The files of a run folder a reader looks at: every file but the lock, the items (whose
/// timings differ) and the sweep manifest (whose shard differs).
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !n.starts_with('.') && !n.starts_with("shard-") && n != "slurm" && n != "items.jsonl"
        })
        .collect();
    names.sort();
    names
}

/// The page without its run line (command and date) and the result without volatile fields.
fn page(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("index.html"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("<p class=\"meta\">"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `a` and `b` first differ (a JSON path and both values), if they do.
fn first_diff(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value::{Array, Object};
    match (a, b) {
        (Object(x), Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_diff(u, v, &format!("{path}/{k}")),
                (u, v) => Some(format!("{path}/{k}: {u:?} vs {v:?}")),
            })
        }
        (Array(x), Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_diff(u, v, &format!("{path}/{i}"))),
        (x, y) if x == y => None,
        (x, y) => Some(format!("{path}: {x} vs {y}")),
    }
}

/// Asserts that two folders of one sweep hold the same report: the same files, the same
/// numbers in result.json (every one, exactly), the same SVGs and noise byte for byte, the
/// same page but for the run line, the same items.
pub fn assert_same_run(a: &Path, b: &Path) {
    assert_eq!(files(a), files(b), "{} vs {}", a.display(), b.display());
    let (ra, rb) = (
        stable(&read_json(&a.join("result.json"))),
        stable(&read_json(&b.join("result.json"))),
    );
    if let Some(d) = first_diff(&ra, &rb, "") {
        panic!("result.json of {} vs {}: {d}", a.display(), b.display());
    }
    for f in files(a) {
        if f.ends_with(".svg") || f.ends_with(".safetensors") {
            assert!(
                std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(),
                "{f} differs between {} and {}",
                a.display(),
                b.display()
            );
        }
    }
    assert_eq!(page(a), page(b), "index.html");
    let items = |d: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("items.jsonl"))
            .unwrap()
            .lines()
            .map(|l| stable(&serde_json::from_str(l).unwrap()))
            .collect()
    };
    assert_eq!(items(a), items(b), "items.jsonl");
}

fn organism(file: &str) -> String {
    root()
        .join("fixtures/organism")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

/// The causal trace sweep the tests shard: 5 of the organism's facts, 3 samples.
fn trace_args() -> Vec<String> {
    [
        "trace",
        "--facts",
        &organism("known_facts.json"),
        "--limit",
        "5",
        "--samples",
        "3",
        "--window",
        "2",
        "--all-facts",
    ]
    .map(String::from)
    .to_vec()
}

fn layers_args() -> Vec<String> {
    [
        "attribute-layers",
        "--facts",
        &organism("known_facts.json"),
        "--limit",
        "7",
        "--function",
        "probability",
    ]
    .map(String::from)
    .to_vec()
}

fn rome_args(stats: &Path) -> Vec<String> {
    [
        "rome",
        "--cases",
        "4",
        "--layer",
        "0",
        "--steps",
        "5",
        "--stats-dir",
        s(stats),
    ]
    .map(String::from)
    .to_vec()
}

/// MEMIT on six of the organism's cities in batches of two (three items).
fn memit_args(stats: &Path) -> Vec<String> {
    [
        "memit",
        "--cases",
        "6",
        "--batch",
        "2",
        "--mom2-samples",
        "300",
        "--stats-dir",
        s(stats),
    ]
    .map(String::from)
    .to_vec()
}

/// MEMIT and sequential ROME rewriting 1 and 3 planted cities (4 rows).
fn edit_scale_args(stats: &Path) -> Vec<String> {
    [
        "edit-scale",
        "--sizes",
        "1,3",
        "--mom2-samples",
        "300",
        "--damage-texts",
        "20",
        "--stats-dir",
        s(stats),
    ]
    .map(String::from)
    .to_vec()
}

/// Three fine-tuning runs of 4 rewritten cities (all free, MLP 0, attention 3).
fn finetune_args() -> Vec<String> {
    [
        "finetune",
        "--facts",
        "4",
        "--free",
        "all,mlp.0,attn.3",
        "--max-steps",
        "8",
        "--damage-texts",
        "20",
    ]
    .map(String::from)
    .to_vec()
}

/// Activation and attribution patching of the organism's retrieval pairs (9 kept of 11).
fn patch_args() -> Vec<String> {
    [
        "patch",
        "--pairs",
        &organism("retrieval_pairs.jsonl"),
        "--sweeps",
        "head_out_all_pos,head_out_by_pos,resid_pre",
        "--attribution",
    ]
    .map(String::from)
    .to_vec()
}

/// The head scan of `texts`: every head's lists kept (no --layer), the first token left out.
fn heads_args(texts: &Path) -> Vec<String> {
    [
        "heads",
        "--texts",
        s(texts),
        "--n",
        "4",
        "--suppress-first",
        "--seed",
        "3",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `args` with `extra` appended.
fn run(args: &[String], extra: &[&str]) -> crate::Ran {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    xtask(&all)
}

/// One run into `tmp/single`, three shards into `tmp/shard-i`, merged into `tmp/merged`.
fn shard_and_merge(args: &[String], tmp: &Path) -> (PathBuf, PathBuf) {
    let single = tmp.join("single");
    run(args, &["--out", s(&single)]).succeeds();
    let shards: Vec<PathBuf> = (0..3).map(|i| tmp.join(format!("shard-{i}"))).collect();
    for (i, dir) in shards.iter().enumerate() {
        run(args, &["--shard", &format!("{i}/3"), "--out", s(dir)]).succeeds();
        let m = read_json(&dir.join("sweep.json"));
        assert_eq!(m["shard"]["index"], i);
    }
    let merged = tmp.join("merged");
    let mut merge = vec!["merge"];
    merge.extend(shards.iter().map(|d| s(d)));
    merge.extend(["--out", s(&merged)]);
    xtask(&merge).succeeds();
    (single, merged)
}

#[test]
fn three_shards_of_a_causal_trace_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, merged) = shard_and_merge(&trace_args(), tmp.path());
    assert_same_run(&single, &merged);
    // Each shard reports its own facts under their indices in the dataset.
    let r = read_json(&tmp.path().join("shard-1/result.json"));
    let idx: Vec<u64> = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [1, 4]);
    assert!(tmp.path().join("shard-1/trace_4_state.svg").exists());
    let whole = read_json(&single.join("result.json"));
    assert_eq!(whole["cases"].as_array().unwrap().len(), 5);
    assert_eq!(
        whole["average_indirect_effect"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn three_shards_of_a_layer_attribution_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, merged) = shard_and_merge(&layers_args(), tmp.path());
    assert_same_run(&single, &merged);
    assert_eq!(
        read_json(&merged.join("result.json"))["cases"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
}

#[test]
fn three_shards_of_rome_edits_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("stats");
    let (single, merged) = shard_and_merge(&rome_args(&stats), tmp.path());
    assert_same_run(&single, &merged);
    let r = read_json(&merged.join("result.json"));
    assert_eq!(r["cases"].as_array().unwrap().len(), 4);
    assert!(r["summary"]["post"]["mean"]["efficacy"].as_f64().unwrap() > 0.5);
}

#[test]
fn three_shards_of_memit_batches_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("stats");
    let (single, merged) = shard_and_merge(&memit_args(&stats), tmp.path());
    assert_same_run(&single, &merged);
    let r = read_json(&merged.join("result.json"));
    assert_eq!(r["cases"].as_array().unwrap().len(), 6);
    assert_eq!(r["batches"].as_array().unwrap().len(), 3);
}

#[test]
fn three_shards_of_edit_scale_rows_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("stats");
    let (single, merged) = shard_and_merge(&edit_scale_args(&stats), tmp.path());
    assert_same_run(&single, &merged);
    let r = read_json(&merged.join("result.json"));
    let rows = r["rows"].as_array().unwrap();
    let keys: Vec<(String, u64)> = rows
        .iter()
        .map(|x| {
            (
                x["method"].as_str().unwrap().into(),
                x["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("memit".into(), 1),
            ("rome".into(), 1),
            ("memit".into(), 3),
            ("rome".into(), 3)
        ]
    );
    // The damage report leaves the rewritten facts out: 240 people × 3 relations less them.
    for x in rows {
        let size = x["size"].as_u64().unwrap();
        assert_eq!(x["damage_post"]["facts"].as_u64().unwrap(), 720 - size);
    }
}

#[test]
fn three_shards_of_finetune_runs_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, merged) = shard_and_merge(&finetune_args(), tmp.path());
    assert_same_run(&single, &merged);
    let r = read_json(&merged.join("result.json"));
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[1]["groups_free"], serde_json::json!(["mlp.0"]));
}

#[test]
fn three_shards_of_patched_pairs_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, merged) = shard_and_merge(&patch_args(), tmp.path());
    assert_same_run(&single, &merged);
    let r = read_json(&merged.join("result.json"));
    assert_eq!(r["n_pairs"], 9);
    assert_eq!(r["dropped"].as_array().unwrap().len(), 2);
    // Each shard patched its own pairs: shard 1 the kept pairs 1, 4 and 7.
    let r1 = read_json(&tmp.path().join("shard-1/result.json"));
    assert_eq!(r1["n_pairs"], 3);
}

#[test]
fn three_shards_of_a_head_scan_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, merged) =
        shard_and_merge(&heads_args(Path::new(&organism("texts.txt"))), tmp.path());
    assert_same_run(&single, &merged);
    let r = read_json(&merged.join("result.json"));
    assert_eq!(r["texts"], 16);
    assert_eq!(
        r["lists"]["random_above_average"].as_array().unwrap().len(),
        4
    );
    // The attention view of the first text comes from shard 0's items.
    assert!(
        std::fs::read_to_string(merged.join("index.html"))
            .unwrap()
            .contains("Attention patterns on the first text")
    );
}

/// A pseudo-random number in `0..n` from the clock (the moment of the interrupt).
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos % n
}

/// Lines in `dir/items.jsonl`.
fn items_done(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("items.jsonl")).map_or(0, |t| t.lines().count())
}

/// Starts `args --out dir` and sends it `signal` once a random number (from 1 to half of `n`,
/// so the run is still going) of its items are done, at a random moment of the next item;
/// waits for it to die.
fn interrupt(args: &[String], dir: &Path, n: usize, signal: &str) {
    let mut child = spawn_quiet(&[args, &["--out".to_string(), s(dir).to_string()]].concat());
    let target = 1 + random_below((n as u64 / 2).max(2) - 1) as usize;
    let start = Instant::now();
    while items_done(dir) < target {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was interrupted"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_micros(random_below(5000)));
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "{signal} did not stop the run");
    let done = items_done(dir);
    assert!(done < n, "the run finished before {signal} ({done} of {n})");
    assert!(
        !dir.join("result.json").exists(),
        "an interrupted run has no result.json"
    );
}

#[test]
fn a_trace_interrupted_by_sigint_or_sigkill_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = trace_args();
    args[4] = "8".into(); // --limit 8
    let whole = tmp.path().join("whole");
    run(&args, &["--out", s(&whole)]).succeeds();
    for signal in ["-INT", "-KILL"] {
        let dir = tmp.path().join(format!("cut{signal}"));
        interrupt(&args, &dir, 8, signal);
        // SIGKILL may land in the middle of a line: model the worst case, a torn last line.
        if signal == "-KILL" {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("items.jsonl"))
                .unwrap();
            f.write_all(b"{\"index\":7,\"item\":{\"trace\":{\"prom")
                .unwrap();
        }
        // Resuming with another option is refused, naming it, and changes nothing.
        let mut other = args.clone();
        other[6] = "4".into(); // --samples 4
        run(&other, &["--out", s(&dir), "--resume"])
            .fails_naming(&["--resume", "--samples is 4 here but 3 there"]);
        let resumed = run(&args, &["--out", s(&dir), "--resume"]);
        resumed.succeeds();
        assert!(resumed.stderr.contains("resuming"), "{}", resumed.stderr);
        assert_same_run(&whole, &dir);
    }
}

#[test]
fn an_attribution_sweep_interrupted_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = layers_args();
    args[4] = "30".into(); // --limit 30
    let whole = tmp.path().join("whole");
    run(&args, &["--out", s(&whole)]).succeeds();
    let dir = tmp.path().join("cut");
    interrupt(&args, &dir, 30, "-KILL");
    run(&args, &["--out", s(&dir), "--resume"]).succeeds();
    assert_same_run(&whole, &dir);
}

#[test]
fn a_rome_sweep_interrupted_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("stats");
    let mut args = rome_args(&stats);
    args[2] = "5".into(); // --cases 5
    let whole = tmp.path().join("whole");
    run(&args, &["--out", s(&whole)]).succeeds();
    let dir = tmp.path().join("cut");
    interrupt(&args, &dir, 5, "-INT");
    run(&args, &["--out", s(&dir), "--resume"]).succeeds();
    assert_same_run(&whole, &dir);
}

#[test]
fn a_patch_sweep_interrupted_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let args = patch_args();
    let whole = tmp.path().join("whole");
    run(&args, &["--out", s(&whole)]).succeeds();
    let dir = tmp.path().join("cut");
    interrupt(&args, &dir, 9, "-KILL");
    run(&args, &["--out", s(&dir), "--resume"]).succeeds();
    assert_same_run(&whole, &dir);
}

#[test]
fn a_head_scan_interrupted_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    // The organism's texts twelve times over (192 texts), so that the interrupt lands mid-run.
    let one = std::fs::read_to_string(organism("texts.txt")).unwrap();
    let texts = tmp.path().join("texts.txt");
    std::fs::write(&texts, [one.trim_end(); 12].join("\n\n")).unwrap();
    let args = heads_args(&texts);
    let whole = tmp.path().join("whole");
    run(&args, &["--out", s(&whole)]).succeeds();
    assert_eq!(read_json(&whole.join("result.json"))["texts"], 192);
    let dir = tmp.path().join("cut");
    interrupt(&args, &dir, 192, "-INT");
    run(&args, &["--out", s(&dir), "--resume"]).succeeds();
    assert_same_run(&whole, &dir);
}

#[test]
fn a_memit_sweep_interrupted_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("stats");
    let mut args = memit_args(&stats);
    args[2] = "10".into(); // --cases 10
    args[4] = "1".into(); // --batch 1: ten items
    let whole = tmp.path().join("whole");
    run(&args, &["--out", s(&whole)]).succeeds();
    let dir = tmp.path().join("cut");
    interrupt(&args, &dir, 10, "-KILL");
    run(&args, &["--out", s(&dir), "--resume"]).succeeds();
    assert_same_run(&whole, &dir);
}

#[test]
fn an_edit_scale_sweep_killed_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("stats");
    let mut args = edit_scale_args(&stats);
    args[2] = "1,2,3".into(); // --sizes 1,2,3: six rows
    let whole = tmp.path().join("whole");
    run(&args, &["--out", s(&whole)]).succeeds();
    let dir = tmp.path().join("cut");
    interrupt(&args, &dir, 6, "-KILL");
    run(&args, &["--out", s(&dir), "--resume"]).succeeds();
    assert_same_run(&whole, &dir);
}

#[test]
fn a_finetune_sweep_interrupted_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = finetune_args();
    args[4] = "all,mlp.0,mlp.1,mlp.2,mlp.3,attn.0,attn.1,attn.2".into(); // --free: eight runs
    let whole = tmp.path().join("whole");
    run(&args, &["--out", s(&whole)]).succeeds();
    for signal in ["-INT", "-KILL"] {
        let dir = tmp.path().join(format!("cut{signal}"));
        interrupt(&args, &dir, 8, signal);
        run(&args, &["--out", s(&dir), "--resume"]).succeeds();
        assert_same_run(&whole, &dir);
    }
}

#[test]
fn bad_sweep_input_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let args = trace_args();
    run(&args, &["--shard", "3/3", "--out", s(&t.join("a"))]).fails_naming(&[
        "--shard",
        "no shard 3 of 3",
        "from 0 to 2",
    ]);
    run(&args, &["--shard", "0/0", "--out", s(&t.join("a"))])
        .fails_naming(&["--shard", "at least one shard"]);
    run(&args, &["--resume", "--out", s(&t.join("empty"))])
        .fails_naming(&["--resume", "no readable sweep.json"]);
    run(
        &args,
        &["--resume", "--overwrite", "--out", s(&t.join("a"))],
    )
    .fails_naming(&["--resume", "--overwrite", "give one"]);

    // Shards of two different sweeps.
    let (s0, s1) = (t.join("s0"), t.join("s1"));
    run(&args, &["--shard", "0/2", "--out", s(&s0)]).succeeds();
    let mut other = args.clone();
    other[8] = "1".into(); // --window 1
    run(&other, &["--shard", "1/2", "--out", s(&s1)]).succeeds();
    xtask(&["merge", s(&s0), s(&s1), "--out", s(&t.join("m"))])
        .fails_naming(&["not shards of one sweep", "--window is 1 here but 2 there"]);
    // A missing shard, named.
    xtask(&["merge", s(&s0), "--out", s(&t.join("m"))])
        .fails_naming(&["item 1 is missing", "no folder given is shard 1/2"]);
    // The same shard twice.
    xtask(&["merge", s(&s0), s(&s0), "--out", s(&t.join("m"))])
        .fails_naming(&["are both shard 0/2"]);
    // An item present twice (a shard's items copied into the other's).
    let s1 = t.join("s1b");
    run(&args, &["--shard", "1/2", "--out", s(&s1)]).succeeds();
    let first_line = std::fs::read_to_string(s0.join("items.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut items = std::fs::read_to_string(s1.join("items.jsonl")).unwrap();
    items.push_str(&first_line);
    items.push('\n');
    std::fs::write(s1.join("items.jsonl"), items).unwrap();
    xtask(&["merge", s(&s0), s(&s1), "--out", s(&t.join("m"))])
        .fails_naming(&["item 0 is in both"]);
    // A folder that is not a sweep's.
    xtask(&["merge", s(&s0), s(t), "--out", s(&t.join("m"))])
        .fails_naming(&["is not a sweep's folder"]);
}

#[test]
fn a_folder_holding_a_run_is_refused_and_overwrite_leaves_nothing_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = trace_args();
    run(&args, &["--out", s(&out)]).succeeds();
    assert!(out.join("trace_4_state.svg").exists());
    let again = run(&args, &["--out", s(&out)]);
    again.fails_naming(&["--out", "already holds a run", "--overwrite", "--resume"]);
    // Nothing of the first run was touched.
    assert_eq!(
        read_json(&out.join("result.json"))["cases"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // --overwrite removes the earlier files first: no SVG of fact 4 survives a 2-fact run.
    let mut two = args.clone();
    two[4] = "2".into();
    run(&two, &["--out", s(&out), "--overwrite"]).succeeds();
    assert!(
        !out.join("trace_4_state.svg").exists(),
        "a stale SVG survived"
    );
    assert_eq!(
        read_json(&out.join("result.json"))["cases"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A folder burnlens did not write is never emptied.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "precious").unwrap();
    run(&args, &["--out", s(&foreign), "--overwrite"])
        .fails_naming(&["no burnlens run wrote", "nothing was removed"]);
    assert!(foreign.join("thesis.tex").exists());
}
