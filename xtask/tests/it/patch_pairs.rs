//! `patch --pairs` on the organism's retrieval pairs (fixtures/organism/retrieval_pairs.jsonl,
//! written by scripts/organism/retrieval_pairs.py): the alignment drops the pairs it must and
//! says why, the batch's mean equals patching each pair alone and averaging, and the planted
//! heads light up where they read.

use crate::{read_json, root, s, xtask};

const SWEEPS: &str = "head_out_all_pos,head_out_by_pos,resid_pre";

#[test]
fn patching_a_file_of_pairs_is_the_mean_of_patching_each_pair_alone() {
    let pairs = root().join("fixtures/organism/retrieval_pairs.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("all");
    let ran = xtask(&[
        "patch",
        "--pairs",
        s(&pairs),
        "--sweeps",
        SWEEPS,
        "--out",
        s(&out),
    ]);
    ran.succeeds();
    // The two pairs the seed workflow's filter drops, each named with its reason.
    assert!(
        ran.stderr.contains("dropped pair 9 of")
            && ran
                .stderr
                .contains("clean prompt has 19 tokens, corrupted 18"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("dropped pair 10 of")
            && ran
                .stderr
                .contains("answer \" Buenos Aires\" is 2 tokens, not one"),
        "{}",
        ran.stderr
    );
    let all = read_json(&out.join("result.json"));
    assert_eq!(all["n_pairs"], 9);
    assert_eq!(all["dropped"].as_array().unwrap().len(), 2);
    let n_pos = all["str_tokens"].as_array().unwrap().len();
    assert_eq!(n_pos, 18, "three-shot prompts are 18 tokens");

    // Each kept pair alone: its raw logit differences are v·(clean − corrupted) + corrupted.
    let (mut clean_sum, mut corrupt_sum) = (0.0f64, 0.0f64);
    let mut raw_sum: Vec<Vec<f64>> = Vec::new();
    let kept = all["pairs"].as_array().unwrap();
    for (k, pair) in kept.iter().enumerate() {
        let one = tmp.path().join(format!("pair{k}"));
        let get = |f: &str| pair[f].as_str().unwrap().to_string();
        let (c, x, a, f) = (get("clean"), get("corrupted"), get("answer"), get("foil"));
        let ran = xtask(&[
            "patch",
            "--clean",
            &c,
            "--corrupted",
            &x,
            "--answer",
            &a,
            "--foil",
            &f,
            "--sweeps",
            SWEEPS,
            "--out",
            s(&one),
        ]);
        ran.succeeds();
        let r = read_json(&one.join("result.json"));
        let (cl, co) = (
            r["clean_logit_diff"].as_f64().unwrap(),
            r["corrupted_logit_diff"].as_f64().unwrap(),
        );
        clean_sum += cl;
        corrupt_sum += co;
        // Left padding: the pair's position p is the batch's p + offset.
        let len = r["str_tokens"].as_array().unwrap().len();
        let offset = n_pos - len;
        for (i, sweep) in r["sweeps"].as_array().unwrap().iter().enumerate() {
            let axes: Vec<&str> = sweep["axes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let shape: Vec<usize> = sweep["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let values: Vec<f64> = sweep["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let batch_shape: Vec<usize> = all["sweeps"][i]["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let total: usize = batch_shape.iter().product();
            if raw_sum.len() <= i {
                raw_sum.push(vec![0.0; total]);
            }
            // Every batch cell: the pair's own cell, or (a padded position) no change.
            for (flat, acc) in raw_sum[i].iter_mut().enumerate() {
                let mut idx = vec![0; batch_shape.len()];
                let mut rest = flat;
                for d in (0..batch_shape.len()).rev() {
                    idx[d] = rest % batch_shape[d];
                    rest /= batch_shape[d];
                }
                if let Some(p) = axes.iter().position(|&a| a == "pos") {
                    if idx[p] < offset {
                        *acc += co;
                        continue;
                    }
                    idx[p] -= offset;
                }
                let mut own = 0;
                for d in 0..shape.len() {
                    own = own * shape[d] + idx[d];
                }
                *acc += values[own] * (cl - co) + co;
            }
        }
    }
    let n = kept.len() as f64;
    let (clean, corrupt) = (clean_sum / n, corrupt_sum / n);
    assert!((all["clean_logit_diff"].as_f64().unwrap() - clean).abs() < 1e-4);
    assert!((all["corrupted_logit_diff"].as_f64().unwrap() - corrupt).abs() < 1e-4);
    let mut worst = 0.0f64;
    for (i, sums) in raw_sum.iter().enumerate() {
        let batch = all["sweeps"][i]["values"].as_array().unwrap();
        for (acc, b) in sums.iter().zip(batch) {
            let expected = (acc / n - corrupt) / (clean - corrupt);
            worst = worst.max((b.as_f64().unwrap() - expected).abs());
        }
    }
    eprintln!("largest difference {worst:e}");
    assert!(worst <= 1e-5, "largest difference {worst:e}");

    // The planted heads, where they read (plant.rs): at the query (the last position) layer 0
    // head 0 (the name two back) and layer 1 head 0 (the copy); at the countries, layer 0
    // head 1 (the name three back), which only the statement swaps change.
    let by_pos = &all["sweeps"][1];
    assert_eq!(by_pos["name"], "head_out_by_pos");
    let v =
        |l: usize, p: usize, h: usize| by_pos["values"][(l * n_pos + p) * 4 + h].as_f64().unwrap();
    let last = n_pos - 1;
    assert!(v(1, last, 0) > 0.9, "the copy head: {}", v(1, last, 0));
    assert!(
        v(0, last, 0) > 0.3,
        "the query's two-back head: {}",
        v(0, last, 0)
    );
    for country in [3, 8, 13] {
        assert!(
            v(0, country, 1) > 0.05,
            "three-back head at {country}: {}",
            v(0, country, 1)
        );
    }
    // Nothing else carries more than a few percent.
    for l in 0..4 {
        for p in 0..n_pos {
            for h in 0..4 {
                let planted = p == last && [(1, 0), (0, 0)].contains(&(l, h))
                    || (l, h) == (0, 1) && [3, 8, 13].contains(&p);
                if !planted {
                    assert!(v(l, p, h).abs() < 0.05, "L{l}H{h} at {p}: {}", v(l, p, h));
                }
            }
        }
    }
}

#[test]
fn a_pairs_file_with_no_usable_pair_says_why_each_was_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        concat!(
            r#"{"clean": "Bob is from Japan. Bob is from", "corrupted": "Bob is from the USA. Bob is from", "answer": " Japan", "foil": " the"}"#,
            "\n",
            r#"{"clean": "Bob is from Japan. Bob is from", "corrupted": "Bob is from Japan. Bob is from", "answer": " Japan", "foil": " Peru"}"#,
            "\n"
        ),
    )
    .unwrap();
    xtask(&[
        "patch",
        "--pairs",
        s(&pairs),
        "--out",
        s(&tmp.path().join("o")),
    ])
    .fails_naming(&[
        "pairs.jsonl",
        "every prompt pair was dropped",
        "pair 0: clean prompt has 8 tokens, corrupted 9",
        "pair 1: clean and corrupted prompts are the same tokens",
    ]);
    xtask(&[
        "patch",
        "--pairs",
        s(&pairs),
        "--clean",
        "x",
        "--out",
        s(&tmp.path().join("o")),
    ])
    .fails_naming(&["--clean", "--pairs"]);
}
