//! Every shipped recipe runs, and its result.json holds a number wherever docs/RESULTS.md
//! promises one: serde writes NaN and infinities as `null`, so a `null` that the documentation
//! does not allow for that field is a non-finite number that got through.

use std::path::PathBuf;

use crate::root;
use std::process::Command;

/// The fields a command's section of docs/RESULTS.md allows to be `null`: those named (in
/// backticks) on a table row that says `null`.
fn nullable_fields(results_md: &str, command: &str) -> Vec<String> {
    let heading = format!("## `cargo xtask {command}`");
    let Some(start) = results_md.find(&heading) else {
        panic!("docs/RESULTS.md has no section {heading:?}");
    };
    let section = &results_md[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    // `git_commit` is documented once, in the first section, for every command.
    let mut fields = vec!["git_commit".to_string()];
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
        ran += 1;
    }
    assert_eq!(ran, 12);
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
    assert_eq!(nullable_fields(md, "x"), ["git_commit", "a", "b"]);
}
