//! `memit` on the model organism, as a user runs it: a hundred planted cities rewritten at once
//! are written and their neighbours (people outside the batch with the same city) kept; the
//! batches shard and merge; bad options are errors naming them.

use crate::{read_json, s, xtask};

#[test]
fn a_hundred_planted_cities_rewritten_at_once_are_written_and_their_neighbours_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("memit");
    let stats = tmp.path().join("stats");
    xtask(&[
        "memit",
        "--cases",
        "100",
        "--stats-dir",
        s(&stats),
        "--out",
        s(&out),
    ])
    .succeeds();
    let r = read_json(&out.join("result.json"));
    assert_eq!(r["preset"], "organism");
    assert_eq!(r["config"]["layers"], serde_json::json!([0]));
    assert_eq!(r["cases"].as_array().unwrap().len(), 100);
    let (pre, post) = (&r["summary"]["pre"]["mean"], &r["summary"]["post"]["mean"]);
    let get = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    // Before: the planted facts hold (the new city is not preferred, the neighbours keep theirs).
    assert!(get(pre, "efficacy") <= 0.05, "{pre}");
    assert!(get(pre, "neighborhood") >= 0.95, "{pre}");
    // After: 100 facts at once (MEMIT's claim), neighbours kept.
    assert!(get(post, "efficacy") >= 0.9, "{post}");
    assert!(get(post, "neighborhood") >= 0.9, "{post}");
    assert!(get(post, "paraphrase") >= 0.7, "{post}");
    // Every neighbourhood prompt names someone outside the batch.
    let subjects: std::collections::BTreeSet<&str> = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["request"]["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects.len(), 100);
    assert!(out.join("index.html").exists() && out.join("efficacy.svg").exists());
}

#[test]
fn bad_memit_options_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let o = s(&tmp.path().join("o")).to_string();
    xtask(&["memit", "--layers", "7", "--cases", "2", "--out", &o]).fails_naming(&[
        "--layers",
        "layer 7 is out of range",
        "4 layers",
    ]);
    xtask(&["memit", "--layers", "3-1", "--out", &o]).fails_naming(&["--layers", "ascending"]);
    xtask(&["memit", "--mom2-update-weight", "0", "--out", &o])
        .fails_naming(&["--mom2-update-weight"]);
    xtask(&["memit", "--relation", "colour", "--cases", "2", "--out", &o])
        .fails_naming(&["colour", "city, job, instrument"]);
    xtask(&["memit", "--cases", "241", "--out", &o]).fails_naming(&["241", "240 people"]);
}
