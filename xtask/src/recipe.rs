//! `cargo xtask run recipes/<name>.toml`: a recipe names a command (`patch`, `trace`, …) and
//! its options, exactly the command's flags without the dashes:
//!
//! ```toml
//! command = "trace"
//! [args]
//! model = "fixtures/tiny-gpt2"   # --model
//! backend = "flex"               # --backend
//! kinds = ["state", "mlp", "attn"]  # lists become comma-separated values
//! all_facts = true               # true becomes a bare flag; false leaves it out
//! out = "runs/causal-trace"
//! ```
//!
//! The recipe is parsed by the same command-line parser as the flags, so a recipe and a
//! command line do the same thing, and a misspelt option is an error naming it. The recipe is
//! copied into the output directory next to result.json.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser};

use crate::{Cli, dispatch};

/// Options of `cargo xtask run`.
#[derive(Args)]
pub struct RunArgs {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    /// Continue the recipe's interrupted sweep (trace, attribute-layers, rome, patch, heads) in its folder.
    #[arg(long)]
    pub resume: bool,
}

/// The command line a recipe stands for.
pub fn argv(text: &str) -> Result<Vec<String>> {
    let table: toml::Table = toml::from_str(text)?;
    let command = table
        .get("command")
        .and_then(|c| c.as_str())
        .context("the recipe needs `command = \"patch\"` (or trace, cache, …)")?;
    if command == "run" {
        bail!("a recipe cannot run another recipe");
    }
    if let Some(key) = table.keys().find(|k| *k != "command" && *k != "args") {
        bail!("unknown top-level key {key:?}: put options under [args]");
    }
    let cli = <Cli as clap::CommandFactory>::command();
    let sub = cli
        .find_subcommand(command)
        .with_context(|| format!("unknown command {command:?} (see `cargo xtask --help`)"))?;
    let mut argv = vec!["cargo xtask".to_string(), command.to_string()];
    if let Some(args) = table.get("args") {
        let args = args
            .as_table()
            .context("[args] must be a table of options")?;
        for (key, value) in args {
            let long = key.replace('_', "-");
            let flag = format!("--{long}");
            let arg = sub.get_arguments().find(|a| a.get_long() == Some(&long));
            // A list only where the option takes one (`kinds = ["state", "mlp"]`); elsewhere an
            // array would be joined into one value, say a prompt, without a word.
            let takes_list = arg.is_some_and(|a| a.get_value_delimiter().is_some());
            let is_flag = arg.is_some_and(|a| !a.get_action().takes_values());
            let scalar = |v: &toml::Value| -> Result<String> {
                Ok(match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(_) => {
                        bail!("option {key:?}: true/false is for flags, and {flag} takes a value")
                    }
                    other => bail!(
                        "option {key:?}: expected a string or a number, got {} {other}",
                        other.type_str()
                    ),
                })
            };
            match value {
                toml::Value::Boolean(b) if is_flag || arg.is_none() => {
                    if *b {
                        argv.push(flag)
                    }
                }
                _ if is_flag => {
                    bail!("option {key:?}: {flag} is a flag: write `{key} = true` or leave it out")
                }
                toml::Value::Array(items) if takes_list => {
                    let parts: Vec<String> = items.iter().map(scalar).collect::<Result<_>>()?;
                    argv.push(format!("{flag}={}", parts.join(",")));
                }
                toml::Value::Array(_) => bail!(
                    "option {key:?}: {flag} takes one value, not an array (only list options \
                     such as `kinds` take arrays)"
                ),
                // `--flag=value`, so that a negative number is a value, not an option.
                v => argv.push(format!("{flag}={}", scalar(v)?)),
            }
        }
    }
    Ok(argv)
}

/// Runs `cargo xtask run`.
/// `overwrite` is `run`'s own `--overwrite`, passed on to the recipe's command.
pub fn run(a: RunArgs, overwrite: bool) -> Result<()> {
    let text = std::fs::read_to_string(&a.recipe)
        .with_context(|| format!("reading the recipe {}", a.recipe.display()))?;
    let mut argv = argv(&text).with_context(|| format!("in {}", a.recipe.display()))?;
    if a.resume {
        argv.push("--resume".into());
    }
    let cli =
        Cli::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("{}: {e}", a.recipe.display()))?;
    let out = crate::out_dir(&cli.command);
    eprintln!("{}: {}", a.recipe.display(), argv[1..].join(" "));
    // The run records the command the recipe stands for.
    crate::models::set_command(crate::models::shell_line(argv[1..].iter().cloned()));
    dispatch(cli.command, overwrite || cli.overwrite)?;
    if let Some(out) = out {
        std::fs::write(out.join("recipe.toml"), &text)
            .with_context(|| format!("copying the recipe into {}", out.display()))?;
        // The list of runs beside this one (runs/index.html for the shipped recipes).
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            let index = crate::report::write_runs_index(parent)?;
            eprintln!("updated {}", index.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_become_the_command_line() {
        let line = argv(
            "command = \"trace\"\n[args]\nprompt = \"a b\"\nkinds = [\"state\", \"mlp\"]\nwindow = 2\nnoise_factor = 2.5\nall_facts = true\nreplace = false\n",
        )
        .unwrap();
        assert_eq!(
            line,
            [
                "cargo xtask",
                "trace",
                "--all-facts",
                "--kinds=state,mlp",
                "--noise-factor=2.5",
                "--prompt=a b",
                "--window=2"
            ]
        );
        // Values of the wrong kind name the key and what it takes.
        for (args, needle) in [
            (
                "prompt = [\"a\", \"b\"]",
                "\"prompt\": --prompt takes one value, not an array",
            ),
            (
                "prompt = { a = 1 }",
                "\"prompt\": expected a string or a number, got table",
            ),
            ("all_facts = 1", "\"all_facts\": --all-facts is a flag"),
            ("window = true", "\"window\": true/false is for flags"),
        ] {
            let err = argv_err(&format!("command = \"trace\"\n[args]\n{args}"));
            assert!(err.contains(needle), "{args}: {err}");
        }
        let err = argv_err("command = \"tracee\"");
        assert!(err.contains("unknown command \"tracee\""), "{err}");
        // A negative number is a value (refused by the option's own check), not an option.
        let line = argv("command = \"trace\"\n[args]\nnoise_level = -2\nout = \"x\"").unwrap();
        let err = Cli::try_parse_from(line).err().unwrap().to_string();
        assert!(
            err.contains("--noise-level") && err.contains("-2 is negative"),
            "{err}"
        );
        let err = argv_err("command = \"run\"");
        assert!(err.contains("cannot run another recipe"), "{err}");
        let err = argv_err("[args]\nout = \"x\"");
        assert!(err.contains("needs `command"), "{err}");
        let err = argv_err("command = \"trace\"\nout = \"x\"");
        assert!(err.contains("unknown top-level key \"out\""), "{err}");
        // A misspelt option is the parser's error, naming it.
        let line = argv("command = \"trace\"\n[args]\nwindoww = 3\nout = \"x\"").unwrap();
        let err = Cli::try_parse_from(line).err().unwrap().to_string();
        assert!(err.contains("--windoww"), "{err}");
    }

    /// Every shipped recipe parses, and the causal-tracing one writes its report (into a
    /// temporary directory instead of `runs/`).
    #[test]
    fn shipped_recipes_run() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::env::set_current_dir(&root).unwrap();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(root.join("recipes")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let line = argv(&text).unwrap();
            Cli::try_parse_from(&line).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(path.file_name().unwrap().to_string_lossy().to_string());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "activation-patching.toml",
                "attribute-layers.toml",
                "attribute.toml",
                "attribution-patching.toml",
                "causal-trace.toml",
                "circuit-retrieval.toml",
                "edit-scale.toml",
                "finetune.toml",
                "heads.toml",
                "logit-lens.toml",
                "memit-edit.toml",
                "prepend-search.toml",
                "probe.toml",
                "rome-edit.toml",
                "steering.toml",
                "tuned-lens.toml"
            ]
        );
        let text = std::fs::read_to_string(root.join("recipes/causal-trace.toml")).unwrap();
        let out = std::env::temp_dir().join(format!("burnlens-recipe-{}", std::process::id()));
        let mut line = argv(&text).unwrap();
        let at = line.iter().position(|a| a.starts_with("--out=")).unwrap();
        line[at] = format!("--out={}", out.display());
        dispatch(Cli::try_parse_from(&line).unwrap().command, true).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap())
                .unwrap();
        // The organism recalls most of its first 12 facts; only those are traced.
        let cases = json["cases"].as_array().unwrap().len();
        assert!((6..=12).contains(&cases), "{cases} facts traced");
        for kind in ["state", "mlp", "attn"] {
            assert!(out.join(format!("trace_0_{kind}.svg")).is_file());
            assert!(out.join(format!("aie_{kind}.svg")).is_file());
        }
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.contains("trace_5_attn.svg"));
        // Token labels can decode to control characters, which XML forbids.
        for entry in std::fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "svg") {
                let svg = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !svg.chars().any(|c| c.is_control() && c != '\n'),
                    "{} has control characters",
                    path.display()
                );
            }
        }
        std::fs::remove_dir_all(&out).ok();
    }

    fn argv_err(text: &str) -> String {
        argv(text).unwrap_err().to_string()
    }
}
