//! Every shipped recipe runs on the organism and shows its known answer (each recipe's comment
//! says which; [`known_answer`] asserts it), and its result.json holds a number wherever
//! docs/RESULTS.md promises one: serde writes NaN and infinities as `null`, so a `null` that
//! the documentation does not allow for that field is a non-finite number that got through.

use std::path::PathBuf;

use crate::{browser, root};
use std::process::Command;

use serde_json::Value;

/// The fields a command's section of docs/RESULTS.md allows to be `null`: those named (in
/// backticks) on a table row that says `null`.
fn nullable_fields(results_md: &str, command: &str) -> Vec<String> {
    let heading = format!("## `cargo xtask {command}`");
    let Some(start) = results_md.find(&heading) else {
        panic!("docs/RESULTS.md has no section {heading:?}");
    };
    let section = &results_md[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    // The header's nullable fields are documented once, at the top, for every command.
    let mut fields = vec!["git_commit".to_string(), "headline".to_string()];
    for row in section
        .lines()
        .filter(|l| l.starts_with('|') && l.contains("null"))
    {
        fields.extend(row.split('`').skip(1).step_by(2).map(str::to_string));
    }
    fields
}

/// The paths (`cases[].prompt.foil`) of every `null` in `v`, with the nearest named field.
fn nulls(v: &serde_json::Value, path: &str, field: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Null => out.push((path.to_string(), field.to_string())),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                nulls(x, &format!("{path}.{k}"), k, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                nulls(x, &format!("{path}[]"), field, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_recipe_writes_a_number_wherever_results_md_promises_one() {
    let root = root();
    let results_md = std::fs::read_to_string(root.join("docs/RESULTS.md")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut ran = 0;
    let chromium = browser::chromium();
    let mut recipes: Vec<PathBuf> = std::fs::read_dir(root.join("recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    recipes.sort();
    for recipe in recipes {
        let name = recipe.file_stem().unwrap().to_string_lossy().to_string();
        let mut table: toml::Table =
            toml::from_str(&std::fs::read_to_string(&recipe).unwrap()).unwrap();
        let command = table["command"].as_str().unwrap().to_string();
        // Everything the recipe writes goes into the temporary directory, not runs/.
        let out = tmp.path().join(&name);
        let args = table["args"].as_table_mut().unwrap();
        args.insert("out".into(), out.to_string_lossy().to_string().into());
        if args.contains_key("save_edited") {
            let edited = out.join("edited-model").to_string_lossy().to_string();
            args.insert("save_edited".into(), edited.into());
        }
        let copy = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&copy, toml::to_string(&table).unwrap()).unwrap();
        // From the repository root, where the recipes' relative paths point.
        let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["run", copy.to_str().unwrap()])
            .current_dir(&root)
            .env("XDG_CACHE_HOME", tmp.path().join("cache"))
            .env("RUST_BACKTRACE", "0")
            .status()
            .unwrap();
        assert!(status.success(), "recipes/{name}.toml failed");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap())
                .unwrap();
        let allowed = nullable_fields(&results_md, &command);
        let mut found = Vec::new();
        nulls(&json, "", "", &mut found);
        let bad: Vec<&(String, String)> = found
            .iter()
            .filter(|(_, field)| !allowed.contains(field))
            .collect();
        assert!(
            bad.is_empty(),
            "recipes/{name}.toml: null (a non-finite number?) where docs/RESULTS.md promises a \
             number: {bad:?}"
        );
        known_answer(&name, &json);
        if let Some(c) = &chromium {
            browser::check_page(c, &out.join("index.html"), &expected_page(&name));
        }
        ran += 1;
    }
    assert_eq!(ran, 16);
    // The list of runs the recipes updated as they ran, with each run's headline figure.
    let runs = tmp.path().join("index.html");
    let list = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(
        list.matches("/index.html\">").count(),
        2 * 16 - 2,
        "two links a run, one for runs without a figure"
    );
    if let Some(c) = &chromium {
        browser::check_page(
            c,
            &runs,
            &browser::Expect {
                images: 14,
                ..Default::default()
            },
        );
    }
}

#[test]
fn the_null_check_sees_a_nan() {
    // The check above is only as good as this: a NaN reaches result.json as null.
    let v = serde_json::json!({"score": f32::NAN, "rows": [{"p": f64::INFINITY}], "ok": 1.0});
    let mut found = Vec::new();
    nulls(&v, "", "", &mut found);
    found.sort();
    assert_eq!(
        found,
        [
            (".rows[].p".to_string(), "p".to_string()),
            (".score".to_string(), "score".to_string())
        ]
    );
    let md = "## `cargo xtask x` — y\n| `a`, `b` | number or null | m |\n| `c` | number | n |\n";
    assert_eq!(
        nullable_fields(md, "x"),
        ["git_commit", "headline", "a", "b"]
    );
}

/// `v` as f64 (a number in result.json).
fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// The numbers of a JSON array.
fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

/// The index of the largest value.
fn argmax(v: &[f64]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

/// The sweep called `name` of a patch result.
fn sweep<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["sweeps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sweep {name}"))
}

/// The organism's planted mechanism as each recipe shows it (the recipe's own comment says
/// what it should show; docs/ORGANISM.md and crates/organism/src/plant.rs say why).
fn known_answer(name: &str, r: &Value) {
    match name {
        "activation-patching" => {
            // 11 pairs, 2 dropped by the alignment; per head over all positions: the copy
            // head L1H0 restores everything, the two offset heads of layer 0 share the rest
            // (the query swaps need L0H0, the statement swaps L0H1), nothing else matters.
            assert_eq!(
                (r["n_pairs"].as_u64(), r["dropped"].as_array().map(Vec::len)),
                (Some(9), Some(2))
            );
            let heads = floats(&sweep(r, "head_out_all_pos")["values"]);
            assert_eq!(argmax(&heads), 4, "L1H0 first: {heads:?}");
            assert!(
                heads[4] > 0.9 && heads[0] > 0.3 && heads[1] > 0.2,
                "{heads:?}"
            );
            for (i, v) in heads.iter().enumerate() {
                if ![0, 1, 4].contains(&i) {
                    assert!(v.abs() < 0.05, "head {i}: {v}");
                }
            }
        }
        "attribution-patching" => {
            // Both rank the copy head first; the linear estimate misses layer 0's heads,
            // whose effect goes through layer 1's attention pattern (attribution patching's
            // known blind spot for early heads), and says so with a lower correlation.
            let s = sweep(r, "head_out_all_pos");
            let (exact, est) = (floats(&s["values"]), floats(&s["attribution"]["values"]));
            assert_eq!(
                (argmax(&exact), argmax(&est)),
                (4, 4),
                "{exact:?} / {est:?}"
            );
            assert!(
                exact[0] > 0.3 && est[0] < 0.2,
                "L0H0: exact {}, estimate {}",
                exact[0],
                est[0]
            );
            let by_pos = f(&sweep(r, "head_out_by_pos")["attribution"]["pearson_with_exact"]);
            assert!(by_pos > 0.8, "correlation per head and position: {by_pos}");
        }
        "attribute" => {
            // "Alice is from France. Bob is from Japan. Carol is from Peru. Bob is from":
            // the weight is on the queried statement (tokens 5-8) and the query (15-17).
            let a = floats(&Value::Array(
                r["attribution"].as_array().unwrap()[..18].to_vec(),
            ));
            let mut order: Vec<usize> = (0..a.len()).collect();
            order.sort_by(|&x, &y| a[y].total_cmp(&a[x]));
            for &i in &order[..3] {
                assert!(
                    (5..=8).contains(&i) || (15..=17).contains(&i),
                    "top tokens {:?}: {a:?}",
                    &order[..3]
                );
            }
            let queried: f64 = a[5..=8].iter().sum();
            for other in [&a[0..=3], &a[10..=13]] {
                let o: f64 = other.iter().sum();
                assert!(
                    queried > 3.0 * o,
                    "queried statement {queried} vs another {o}"
                );
            }
        }
        "attribute-layers" => {
            // Peaks where causal tracing does: layer 0's MLP at the last subject token.
            let mut best = (String::new(), 0, f64::MIN);
            for g in r["groups"].as_array().unwrap() {
                for (l, v) in floats(&g["aie"]).into_iter().enumerate() {
                    if v > best.2 {
                        best = (g["name"].as_str().unwrap().to_string(), l, v);
                    }
                }
            }
            assert_eq!(
                (best.0.as_str(), best.1),
                ("Last subject token", 0),
                "{best:?}"
            );
        }
        "causal-trace" => {
            // ROME's picture: MLPs at the last subject token in the first layers, attention
            // at the last token in the middle layers.
            for kind in r["average_indirect_effect"].as_array().unwrap() {
                let mut best = (String::new(), 0, f64::MIN);
                for g in kind["groups"].as_array().unwrap() {
                    for (l, v) in floats(&g["aie"]).into_iter().enumerate() {
                        if v > best.2 {
                            best = (g["name"].as_str().unwrap().to_string(), l, v);
                        }
                    }
                }
                match kind["kind"].as_str().unwrap() {
                    "mlp" => assert!(
                        best.0 == "Last subject token" && best.1 <= 1,
                        "mlp {best:?}"
                    ),
                    "attn" => assert!(
                        best.0 == "Last token" && (1..=2).contains(&best.1),
                        "attn {best:?}"
                    ),
                    "state" => assert_eq!(best.0, "Last token", "state {best:?}"),
                    k => panic!("unexpected kind {k}"),
                }
            }
        }
        "circuit-retrieval" => {
            // The query's name swapped for another in-context name: the query path and the
            // copy carry the difference (plant.rs), and they are EAP-IG's top three edges.
            let mut edges: Vec<(String, f64)> = r["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        f(&e["score"]).abs(),
                    )
                })
                .collect();
            edges.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut top: Vec<&str> = edges[..3].iter().map(|e| e.0.as_str()).collect();
            top.sort();
            assert_eq!(top, ["a0.h0->a1.h0<q>", "a1.h0->logits", "input->a0.h0<v>"]);
            let at10 = r["faithfulness"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["n_edges"].as_u64().unwrap() <= 10)
                .map(|p| f(&p["value"]))
                .fold(f64::MIN, f64::max);
            assert!(at10 >= 0.8, "faithfulness of at most 10 edges: {at10}");
        }
        "heads" => {
            // plant.rs: L0H0 attends two back, L0H1 three back.
            let best = |p: &str| {
                let d = r["detectors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["pattern"] == p)
                    .unwrap_or_else(|| panic!("no detector {p}"));
                (
                    d["best"]["layer"].as_u64().unwrap(),
                    d["best"]["head"].as_u64().unwrap(),
                )
            };
            assert_eq!(best("back_2"), (0, 0));
            assert_eq!(best("back_3"), (0, 1));
        }
        "logit-lens" => {
            // " Paris" at the last position: far down at the embeddings, top after the last
            // block; at the subject's last token (" Emma") already top entering block 2.
            let positions = r["positions"].as_array().unwrap();
            let ranks = |p: &Value| -> Vec<u64> {
                p["answer_rank"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect()
            };
            let last = ranks(positions.last().unwrap());
            assert!(last[0] > 100 && *last.last().unwrap() == 0, "{last:?}");
            assert_eq!(positions[1]["token"], " Emma");
            assert_eq!(r["readouts"][2], "2_pre");
            assert_eq!(ranks(&positions[1])[2], 0, "{:?}", ranks(&positions[1]));
        }
        "prepend-search" => {
            // " Emma lives in Paris.": of the five "… Emma", Jessop Emma lives in Paris.
            let prefix: Vec<&str> = r["prefix_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert!(prefix.last().unwrap().ends_with("Jessop"), "{prefix:?}");
            let found = f(&r["rounds"].as_array().unwrap().last().unwrap()["perplexity"]);
            let baseline = f(&r["baseline"]["perplexity"]);
            assert!(found < baseline / 2.0, "{found} vs {baseline}");
        }
        "probe" => {
            // Swapping "Holloway" and "Yardley" swaps the two Vances' cities.
            let edit = &r["edits"][0];
            assert_eq!(edit["before"][0]["token"], " Warsaw");
            assert_eq!(edit["after"][0]["token"], " Madrid");
            assert_eq!(r["compare"]["other_pool"][0], " Madrid");
        }
        "rome-edit" => {
            // ROME's edits take (efficacy and paraphrase from 0) without breaking neighbours.
            let (pre, post) = (&r["summary"]["pre"]["mean"], &r["summary"]["post"]["mean"]);
            assert!(
                f(&pre["efficacy"]) <= 0.1 && f(&post["efficacy"]) >= 0.9,
                "{pre} -> {post}"
            );
            assert!(f(&post["paraphrase"]) >= 0.8, "{post}");
            assert!(f(&post["neighborhood"]) >= 0.9, "{post}");
        }
        "steering" => {
            // Jessop Emma's MLP-0 fact vector swapped for Ingram Nathan's: Paris -> Nairobi.
            let prompt = r["prompt"].as_str().unwrap();
            let (plain, steered) = (
                r["plain_text"].as_str().unwrap(),
                r["steered_text"].as_str().unwrap(),
            );
            assert!(plain.starts_with(&format!("{prompt} Paris")), "{plain}");
            assert!(
                steered.starts_with(&format!("{prompt} Nairobi")),
                "{steered}"
            );
        }
        "memit-edit" => {
            // A hundred planted cities at once (MEMIT's claim), neighbours outside the batch.
            let (pre, post) = (&r["summary"]["pre"]["mean"], &r["summary"]["post"]["mean"]);
            assert_eq!(r["cases"].as_array().unwrap().len(), 100);
            assert!(f(&pre["efficacy"]) <= 0.05, "{pre}");
            assert!(f(&pre["neighborhood"]) >= 0.95, "{pre}");
            assert!(f(&post["efficacy"]) >= 0.9, "{post}");
            assert!(f(&post["neighborhood"]) >= 0.9, "{post}");
            assert!(f(&post["paraphrase"]) >= 0.7, "{post}");
        }
        "edit-scale" => {
            // Rows: (method, size) for 1, 10, 100 and all 240 people.
            let rows = r["rows"].as_array().unwrap();
            assert_eq!(rows.len(), 8);
            let row = |m: &str, n: u64| {
                rows.iter()
                    .find(|x| x["method"] == m && x["size"].as_u64() == Some(n))
                    .unwrap_or_else(|| panic!("no row {m} × {n}"))
            };
            let (memit, rome) = (row("memit", 100), row("rome", 100));
            let post = |x: &Value, k: &str| f(&x["post"]["mean"][k]);
            assert!(post(memit, "efficacy") >= 0.9, "{memit}");
            assert!(post(memit, "neighborhood") >= 0.9, "{memit}");
            // Sequential ROME breaks down where MEMIT does not.
            assert!(post(rome, "neighborhood") < post(memit, "neighborhood"));
            let recall = |x: &Value| f(&x["damage_post"]["fact_recall"]);
            assert!(
                recall(rome) < recall(memit),
                "{} vs {}",
                recall(rome),
                recall(memit)
            );
            // Every person rewritten: no neighbour is left (null, documented).
            assert!(row("memit", 240)["post"]["mean"]["neighborhood"].is_null());
        }
        "finetune" => {
            let groups: Vec<&str> = r["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_str().unwrap())
                .collect();
            let runs = r["runs"].as_array().unwrap();
            assert_eq!(runs.len(), 9);
            // The trace: MLP 0 holds the facts at the subject's last token.
            let mlp = floats(&r["trace_last_subject_token"]["mlp"]);
            assert!(mlp[1..].iter().all(|&x| x < mlp[0]), "{mlp:?}");
            // Everything free: the embeddings and block 0 take most of the first gradient.
            let share = floats(&runs[0]["first_step_grad_share"]);
            let early: f64 = groups
                .iter()
                .zip(&share)
                .filter(|(g, _)| ["embed", "attn.0", "mlp.0"].contains(g))
                .map(|(_, s)| s)
                .sum();
            assert!(early > 0.5, "{share:?}");
            // One MLP at a time: MLP 0 learns first.
            let learned = |i: usize| runs[i]["learned_at"].as_u64().unwrap_or(u64::MAX);
            assert_eq!(runs[1]["free"], "mlp.0");
            assert!((2..5).all(|i| learned(1) < learned(i)), "{runs:?}");
        }
        "tuned-lens" => {
            let (logit, tuned) = (floats(&r["kl_logit_lens"]), floats(&r["kl_tuned_lens"]));
            assert_eq!(logit.len(), 5, "4 layers and the output");
            for l in 0..4 {
                assert!(tuned[l] < logit[l], "readout {l}: {tuned:?} vs {logit:?}");
            }
            assert!(logit[4].abs() < 1e-6 && tuned[4].abs() < 1e-6);
        }
        other => panic!("recipes/{other}.toml has no known answer in this test: add one"),
    }
}

/// What each recipe's page must show in the browser beyond what every page must.
fn expected_page(name: &str) -> browser::Expect {
    let svgs = match name {
        "activation-patching" => 5,
        "attribution-patching" => 18,
        "attribute" | "prepend-search" | "rome-edit" | "memit-edit" => 1,
        "tuned-lens" => 2,
        "edit-scale" => 1,
        "finetune" => 7,
        "attribute-layers" => 2 + 48,
        "causal-trace" => 6 + 3 * 12,
        "circuit-retrieval" => 2,
        "heads" => 5,
        "logit-lens" => 3,
        "probe" | "steering" => 0,
        other => panic!("no expected page for {other}"),
    };
    browser::Expect {
        svgs,
        attention_view: name == "heads",
        ..Default::default()
    }
}
