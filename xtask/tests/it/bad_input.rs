//! Bad input on the command line, as a new user gives it: each case is one the issue "No
//! silently wrong number" saw exit 0 with a wrong or empty number, hang, or blame the wrong
//! thing. Every command runs as a process, as a user runs it (exit status, stderr, files).

use std::path::{Path, PathBuf};

use crate::{read_json, root, s, xtask, xtask_in};

/// A copy of the tiny fixture in `dir`, with `edit` applied to its config.json.
fn tiny_copy(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let to = dir.join("model");
    std::fs::create_dir_all(&to).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(root().join("fixtures/tiny-gpt2").join(f), to.join(f)).unwrap();
    }
    let path = to.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    to
}

/// Overwrites element 0 of the float32 tensor `name` in the safetensors file at `path` with
/// `value` (the header is read as the format defines it: a little-endian u64 length, then JSON).
fn poke_f32(path: &Path, name: &str, value: f32) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header[name]["dtype"], "F32", "{name} in {}", path.display());
    let start = 8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn non_finite_negative_zero_and_unbounded_options_are_refused_at_parse_time() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["trace", "--noise-level", "nan"],
            &["--noise-level", "not finite"],
        ),
        (
            &["trace", "--noise-level", "inf"],
            &["--noise-level", "not finite"],
        ),
        (
            &["trace", "--noise-factor", "nan"],
            &["--noise-factor", "not finite"],
        ),
        (
            &["trace", "--noise-level", "-1"],
            &["--noise-level", "negative"],
        ),
        (
            &["trace", "--noise-factor", "-3"],
            &["--noise-factor", "negative"],
        ),
        (
            &["generate", "--prompt", "a", "--length-penalty", "nan"],
            &["--length-penalty"],
        ),
        (
            &["generate", "--prompt", "a", "--frequency-penalty", "nan"],
            &["--frequency-penalty"],
        ),
        (
            &["generate", "--prompt", "a", "--temperature", "0"],
            &["--temperature"],
        ),
        (
            &["generate", "--prompt", "a", "--top-p", "1.5"],
            &["--top-p"],
        ),
        (
            &[
                "steer",
                "--prompt",
                "a",
                "--positive",
                "b",
                "--negative",
                "c",
                "--coefficient",
                "nan",
            ],
            &["--coefficient", "not finite"],
        ),
        (
            &["probe", "--prompt", "a", "--noise-std", "nan"],
            &["--noise-std", "not finite"],
        ),
        (
            &["probe", "--prompt", "a", "--noise-std", "-1"],
            &["--noise-std", "negative"],
        ),
        (&["rome", "--v-lr", "nan"], &["--v-lr", "not finite"]),
        (
            &["rome", "--kl-factor", "inf"],
            &["--kl-factor", "not finite"],
        ),
        (
            &["attribute", "--prompt", "a", "--steps", "0"],
            &["--steps", "at least 1"],
        ),
        // Used to run with no bound and no progress.
        (
            &["attribute", "--prompt", "a", "--steps", "100000000000"],
            &["--steps", "4096"],
        ),
        // Used to say the window "is wider than this 2-layer model".
        (&["trace", "--window", "0"], &["--window", "at least 1"]),
        // Used to say the facts file "has no facts".
        (&["trace", "--limit", "0"], &["--limit", "at least 1"]),
        // Empty texts used to be reported as "empty prompt".
        (&["patch", "--answer", ""], &["--answer", "empty"]),
        (
            &["attribute", "--prompt", "a", "--target", ""],
            &["--target", "empty"],
        ),
        (
            &[
                "steer",
                "--prompt",
                "a",
                "--positive",
                "",
                "--negative",
                "b",
            ],
            &["--positive", "empty"],
        ),
        (
            &["probe", "--prompt", "a", "--compare", ""],
            &["--compare", "empty"],
        ),
    ];
    for (args, parts) in cases {
        let ran = xtask(args);
        assert_eq!(
            ran.code,
            Some(2),
            "{args:?} should be a usage error: {}",
            ran.stderr
        );
        ran.fails_naming(parts);
    }
}

#[test]
fn a_non_finite_weight_is_named_and_can_be_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_copy(tmp.path(), |_| {});
    poke_f32(
        &model.join("model.safetensors"),
        "transformer.h.0.attn.c_attn.weight",
        f32::NAN,
    );
    let out = tmp.path().join("logits");
    let args = [
        "logits",
        "--model",
        s(&model),
        "--prompt",
        "hello",
        "--out",
        s(&out),
    ];
    xtask(&args).fails_naming(&[
        "transformer.h.0.attn.c_attn.weight",
        "[0, 0]",
        "NaN",
        "--allow-non-finite",
    ]);
    assert!(!out.with_extension("json").exists());
    // Studying a broken checkpoint is allowed, when asked for.
    let mut allowed = args.to_vec();
    allowed.push("--allow-non-finite");
    xtask(&allowed).succeeds();
}

#[test]
fn config_values_out_of_range_are_refused_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    // This used to hang, building the map of a billion layers' expected tensors.
    let model = tiny_copy(&tmp.path().join("a"), |c| {
        c["n_layer"] = 1_000_000_000.into()
    });
    xtask(&[
        "logits",
        "--model",
        s(&model),
        "--prompt",
        "a",
        "--out",
        "x",
    ])
    .fails_naming(&["n_layer", "1000000000", "at most 1024"]);
    // A token id beyond u32 used to wrap to another token.
    let model = tiny_copy(&tmp.path().join("b"), |c| {
        c["eos_token_id"] = 4_294_967_296u64.into()
    });
    xtask(&["generate", "--model", s(&model), "--prompt", "a"])
        .fails_naming(&["eos_token_id", "4294967296"]);
    let model = tiny_copy(&tmp.path().join("c"), |c| c["eos_token_id"] = 1000.into());
    xtask(&["generate", "--model", s(&model), "--prompt", "a"])
        .fails_naming(&["eos_token_id = 1000", "below vocab_size"]);
}

#[test]
fn a_file_or_a_pickle_checkpoint_as_model_says_what_to_give() {
    let weights = root().join("fixtures/tiny-gpt2/model.safetensors");
    xtask(&[
        "logits",
        "--model",
        s(&weights),
        "--prompt",
        "a",
        "--out",
        "x",
    ])
    .fails_naming(&["is a file", "give the directory"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pickle");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root().join("fixtures/tiny-gpt2/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), b"not read").unwrap();
    xtask(&["logits", "--model", s(&dir), "--prompt", "a", "--out", "x"]).fails_naming(&[
        "pytorch_model.bin",
        "pickle",
        "save_pretrained",
    ]);
}

#[test]
fn a_byte_order_mark_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_copy(tmp.path(), |_| {});
    let config = model.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("\u{feff}{text}")).unwrap();
    let out = tmp.path().join("l");
    xtask(&[
        "logits",
        "--model",
        s(&model),
        "--prompt",
        "a",
        "--out",
        s(&out),
    ])
    .succeeds();
    assert_eq!(
        read_json(&out.with_extension("json"))["token_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let facts = root().join("fixtures/organism/known_facts.json");
    let bom = tmp.path().join("facts.json");
    let text = std::fs::read_to_string(&facts).unwrap();
    std::fs::write(&bom, format!("\u{feff}{text}")).unwrap();
    let trace = tmp.path().join("t");
    xtask(&[
        "trace",
        "--facts",
        s(&bom),
        "--limit",
        "1",
        "--kinds",
        "state",
        "--samples",
        "2",
        "--out",
        s(&trace),
    ])
    .succeeds();
    let first: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        read_json(&trace.join("result.json"))["cases"][0]["prompt"]["text"],
        first[0]["prompt"]
    );
}

#[test]
fn facts_keyed_by_number_are_read_in_numeric_order_and_need_only_the_documented_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let facts: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/organism/known_facts.json")).unwrap(),
    )
    .unwrap();
    // Only what `trace --help` names: subject, prompt, attribute; keyed "0" … "11".
    let keyed: serde_json::Map<String, serde_json::Value> = facts[..12]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let minimal = serde_json::json!({
                "subject": f["subject"], "prompt": f["prompt"], "attribute": f["attribute"],
            });
            (i.to_string(), minimal)
        })
        .collect();
    let path = tmp.path().join("keyed.json");
    std::fs::write(&path, serde_json::Value::Object(keyed).to_string()).unwrap();
    let out = tmp.path().join("t");
    xtask(&[
        "trace",
        "--facts",
        s(&path),
        "--all-facts",
        "--kinds",
        "state",
        "--samples",
        "2",
        "--out",
        s(&out),
    ])
    .succeeds();
    let cases = read_json(&out.join("result.json"))["cases"].clone();
    let got: Vec<&serde_json::Value> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["prompt"]["text"])
        .collect();
    let want: Vec<&serde_json::Value> = facts[..12].iter().map(|f| &f["prompt"]).collect();
    // In string order the third would be fact 10.
    assert_eq!(got, want);
}

#[test]
fn contrastive_degenerate_and_ignored_inputs_are_refused() {
    let (prompt, paris) = ("Jessop Emma lives in", " Paris");
    xtask(&[
        "attribute",
        "--prompt",
        prompt,
        "--target",
        paris,
        "--foil",
        paris,
        "--function",
        "contrast_prob_diff",
        "--out",
        "a",
    ])
    .fails_naming(&["foil", "other than the target"]);
    // A foil with a function that does not use one used to be dropped without a word.
    xtask(&[
        "attribute",
        "--prompt",
        prompt,
        "--target",
        paris,
        "--foil",
        " Rome",
        "--out",
        "a",
    ])
    .fails_naming(&["--foil", "contrast_prob_diff", "ignored"]);
    // With no key left every head scored 0 and one was still ranked first.
    let texts = root().join("fixtures/datasets/text.txt");
    xtask(&[
        "heads",
        "--texts",
        s(&texts),
        "--max-len",
        "1",
        "--suppress-first",
        "--out",
        "h",
    ])
    .fails_naming(&["--suppress-first", "--max-len 1"]);
}

#[test]
fn a_missing_or_non_finite_noise_file_is_named_as_the_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let args = |noise: &Path, out: &Path| {
        vec![
            "trace".to_string(),
            "--prompt".into(),
            "Jessop Emma lives in".into(),
            "--subject".into(),
            "Jessop Emma".into(),
            "--kinds".into(),
            "state".into(),
            "--samples".into(),
            "2".into(),
            "--noise".into(),
            s(noise).into(),
            "--out".into(),
            s(out).into(),
        ]
    };
    let run = |a: Vec<String>| xtask(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // Used to be reported as missing model weights.
    let missing = tmp.path().join("nowhere.safetensors");
    run(args(&missing, &tmp.path().join("a")))
        .fails_naming(&["nowhere.safetensors", "the replayed noise file"]);
    // A noise file the command wrote, replayed, then one of its values made NaN.
    let first = tmp.path().join("first");
    xtask(&[
        "trace",
        "--prompt",
        "Jessop Emma lives in",
        "--subject",
        "Jessop Emma",
        "--kinds",
        "state",
        "--samples",
        "2",
        "--out",
        s(&first),
    ])
    .succeeds();
    let noise = first.join("noise.safetensors");
    run(args(&noise, &tmp.path().join("b"))).succeeds();
    poke_f32(&noise, "noise.0", f32::NAN);
    let ran = run(args(&noise, &tmp.path().join("c")));
    ran.fails_naming(&["noise", "NaN"]);
    assert!(!tmp.path().join("c/result.json").exists());
}

#[test]
fn output_paths_are_checked_before_the_work_and_write_errors_are_write_errors() {
    // ROME used to run every edit and then fail to create the folder.
    let ran = xtask(&["rome", "--out", "/proc/burnlens-x"]);
    ran.fails_naming(&["--out", "/proc/burnlens-x"]);
    assert!(
        !ran.stderr.contains("loaded"),
        "the model was loaded first:\n{}",
        ran.stderr
    );
    // A cache write failure used to be "invalid safetensors file".
    let ran = xtask(&[
        "cache",
        "--prompt",
        "a",
        "--out",
        "/proc/burnlens-x/c.safetensors",
    ]);
    ran.fails_naming(&["--out", "/proc/burnlens-x"]);
    assert!(!ran.stderr.contains("safetensors file"), "{}", ran.stderr);
    let tmp = tempfile::tempdir().unwrap();
    xtask(&["cache", "--prompt", "a", "--out", s(tmp.path())])
        .fails_naming(&["--out", "is a directory"]);
    xtask(&[
        "generate",
        "--prompt",
        "a",
        "--json",
        "/proc/burnlens-x/g.json",
    ])
    .fails_naming(&["--json", "/proc/burnlens-x"]);
    xtask(&["rome", "--stats-dir", "/proc/burnlens-x"]).fails_naming(&["--stats-dir"]);
}

#[test]
fn relative_paths_are_the_users_and_caches_go_to_the_cache_directory() {
    let cwd = tempfile::tempdir().unwrap();
    // The repository has fixtures/tiny-gpt2; this directory does not. It used to resolve
    // against the repository.
    xtask_in(
        cwd.path(),
        &[
            "logits",
            "--model",
            "fixtures/tiny-gpt2",
            "--prompt",
            "a",
            "--out",
            "l",
        ],
        &[],
    )
    .fails_naming(&["fixtures/tiny-gpt2"]);
    let model = root().join("fixtures/tiny-gpt2");
    xtask_in(
        cwd.path(),
        &[
            "logits",
            "--model",
            s(&model),
            "--prompt",
            "a",
            "--out",
            "runs/l",
        ],
        &[],
    )
    .succeeds();
    assert!(cwd.path().join("runs/l.json").is_file());
    // ROME's second moments go to $XDG_CACHE_HOME/burnlens/stats, not into the repository.
    let cache = cwd.path().join("xdg");
    xtask_in(
        cwd.path(),
        &["rome", "--cases", "1", "--steps", "2", "--out", "rome"],
        &[("XDG_CACHE_HOME", s(&cache))],
    )
    .succeeds();
    let stats: Vec<_> = std::fs::read_dir(cache.join("burnlens/stats"))
        .unwrap()
        .collect();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert!(cwd.path().join("rome/result.json").is_file());
}

#[test]
fn the_default_window_runs_on_a_two_layer_model_clipped_as_rome_clips_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t");
    let model = root().join("fixtures/tiny-gpt2");
    // Used to be refused: the default window 10 is wider than the model.
    xtask(&[
        "trace",
        "--model",
        s(&model),
        "--prompt",
        "The Eiffel Tower is in",
        "--subject",
        "The Eiffel Tower",
        "--kinds",
        "mlp",
        "--samples",
        "2",
        "--out",
        s(&out),
    ])
    .succeeds();
    let table = &read_json(&out.join("result.json"))["cases"][0]["tables"][0];
    assert_eq!(table["window"], 10);
    // ROME restores layers max(0, L − 5) .. min(2, L + 5): every layer, for both columns.
    assert_eq!(table["column_layers"], serde_json::json!([[0, 2], [0, 2]]));
}

#[test]
fn progress_is_reported_in_plain_lines_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let fast = [("BURNLENS_PROGRESS_SECS", "0.002")];
    let prompt = "Jessop Emma lives in";
    let runs: &[(&[&str], &str)] = &[
        (
            &[
                "trace",
                "--prompt",
                prompt,
                "--subject",
                "Jessop Emma",
                "--out",
                "t",
            ],
            "elapsed",
        ),
        // attribute used to show no progress at all.
        (
            &[
                "attribute",
                "--prompt",
                prompt,
                "--max-new-tokens",
                "3",
                "--method",
                "integrated_gradients",
                "--steps",
                "200",
                "--out",
                "a",
            ],
            "elapsed",
        ),
        (
            &[
                "circuit",
                "--method",
                "eap-ig",
                "--dual",
                "retrieval",
                "--n",
                "8",
                "--out",
                "c",
            ],
            "circuit (eap-ig): ",
        ),
    ];
    for (args, line) in runs {
        let ran = xtask_in(tmp.path(), args, &fast);
        ran.succeeds();
        assert!(
            ran.stderr.contains(line),
            "{args:?}: no progress line:\n{}",
            ran.stderr
        );
    }
}

#[test]
fn recipe_values_of_the_wrong_kind_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = |body: &str| {
        let path = tmp.path().join("r.toml");
        std::fs::write(&path, format!("command = \"trace\"\n[args]\n{body}\n")).unwrap();
        xtask_in(tmp.path(), &["run", s(&path)], &[])
    };
    // An array for a one-valued option used to be joined with commas into the prompt.
    recipe("prompt = [\"a\", \"b\"]\nsubject = \"a\"\nout = \"o\"")
        .fails_naming(&["prompt", "array"]);
    recipe("samples = { n = 2 }\nout = \"o\"").fails_naming(&["samples", "table"]);
    recipe("all_facts = \"yes\"\nout = \"o\"").fails_naming(&["all_facts"]);
    // A negative number used to get "unexpected argument '-2'"; it is now judged as a value.
    recipe("noise_level = -2\nout = \"o\"").fails_naming(&["--noise-level", "negative"]);
}

#[test]
fn generate_writes_each_sequences_ids_text_and_score_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("fixtures/tiny-gpt2");
    // transformers' greedy and beam-search continuations of the same prompts (reference.json).
    let reference = read_json(&root().join("fixtures/reference/tiny-gpt2/reference.json"));
    let path = tmp.path().join("g.json");
    for p in reference["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let base = [
            "generate",
            "--model",
            s(&model),
            "--prompt",
            text,
            "--json",
            s(&path),
        ];
        let greedy = [&base[..], &["--max-new-tokens", "20"]].concat();
        xtask(&greedy).succeeds();
        let json = read_json(&path);
        assert_eq!(json["prompt_tokens"], p["ids"], "{text}");
        assert_eq!(json["sequences"][0]["tokens"], p["greedy_20"], "{text}");
        assert!(
            json["sequences"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        let beams = [
            &base[..],
            &[
                "--max-new-tokens",
                "12",
                "--num-beams",
                "4",
                "--early-stopping",
                "true",
                "--num-return-sequences",
                "4",
            ],
        ]
        .concat();
        xtask(&beams).succeeds();
        let json = read_json(&path);
        let want = &p["beam4_eos_early_true"];
        let got = json["sequences"].as_array().unwrap();
        assert_eq!(got.len(), 4);
        for (i, g) in got.iter().enumerate() {
            let want_ids = want["sequences"][i].as_array().unwrap();
            // transformers pads shorter hypotheses with EOS to a common length.
            let mut ids = g["tokens"].as_array().unwrap().clone();
            ids.resize(want_ids.len().max(ids.len()), want["eos_token_id"].clone());
            assert_eq!(&ids, want_ids, "{text}: beam {i}");
            let (score, want_score) = (
                g["score"].as_f64().unwrap(),
                want["scores"][i].as_f64().unwrap(),
            );
            assert!(
                (score - want_score).abs() < 1e-4,
                "{text}: beam {i}: {score} vs {want_score}"
            );
        }
    }
    // `--json -` writes the JSON, and only the JSON, to stdout.
    let ran = xtask(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "a",
        "--json",
        "-",
    ]);
    ran.succeeds();
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(json["sequences"].as_array().unwrap().len(), 1);
}

#[test]
fn a_head_outside_the_model_and_an_empty_runs_folder_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = root().join("fixtures/organism/texts.txt");
    let out = tmp.path().join("heads");
    // The organism has 4 layers of 4 heads.
    for (layer, head) in [("4", "0"), ("0", "4")] {
        xtask(&[
            "heads",
            "--texts",
            s(&texts),
            "--layer",
            layer,
            "--head",
            head,
            "--out",
            s(&out),
        ])
        .fails_naming(&[
            &format!("--layer {layer} --head {head}"),
            "outside the model",
            "4 layers of 4 heads",
        ]);
    }
    let empty = tmp.path().join("runs");
    std::fs::create_dir(&empty).unwrap();
    xtask(&["runs", s(&empty)]).fails_naming(&["no runs in", "result.json"]);
    xtask(&["runs", s(&tmp.path().join("missing"))])
        .fails_naming(&["cannot read the runs folder", "missing"]);
}
