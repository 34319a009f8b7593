//! `runs/index.html`: every run under a folder (each subfolder with a `result.json`), with its
//! command, model, date and headline figure, linking to its report.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::escape;

/// One run, as its `result.json` describes it.
struct Run {
    folder: String,
    result: serde_json::Value,
}

/// Writes `dir/index.html` listing every run in `dir`'s subfolders (those holding a
/// `result.json`), newest first; returns its path.
///
/// # Errors
/// `dir` missing or unreadable, no run in it, a `result.json` that is not JSON (named), or the
/// index not writable.
pub fn write_runs_index(dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the runs folder {}", dir.display()))?;
    let mut runs = Vec::new();
    for e in entries {
        let path = e?.path();
        let json = path.join("result.json");
        if !json.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("cannot read {}", json.display()))?;
        let result: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", json.display()))?;
        runs.push(Run {
            folder: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string(),
            result,
        });
    }
    if runs.is_empty() {
        bail!(
            "no runs in {}: no subfolder has a result.json (run one first, e.g. `cargo xtask run \
             recipes/causal-trace.toml`)",
            dir.display()
        );
    }
    let field = |r: &Run, k: &str| -> String {
        r.result
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    runs.sort_by(|a, b| {
        field(b, "created")
            .cmp(&field(a, "created"))
            .then(a.folder.cmp(&b.folder))
    });
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Runs in {d}</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;font-size:13px}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}\
         code{{font-size:12px}}img{{max-width:260px;max-height:170px}}</style></head>\n<body>\n\
         <h1>Runs in {d}</h1>\n<p>{n} runs, newest first. Each links to its report.</p>\n\
         <table><tr><th>run</th><th>experiment</th><th>summary</th><th>model · backend</th><th>date</th><th>command</th><th>headline</th></tr>\n",
        d = escape(&dir.display().to_string()),
        n = runs.len()
    );
    for r in &runs {
        let report = r.result.get("report");
        let text = |k: &str| {
            report
                .and_then(|x| x.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let folder = escape(&r.folder);
        let headline = text("headline");
        let figure = if headline.is_empty() {
            String::new()
        } else {
            format!(
                "<a href=\"{folder}/index.html\"><img src=\"{folder}/{}\" alt=\"{}\"></a>",
                escape(&headline),
                escape(&text("title"))
            )
        };
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{folder}/index.html\">{folder}</a></td><td>{}</td><td>{}</td><td><code>{}</code> · {}</td><td>{}</td><td><code>{}</code></td><td>{figure}</td></tr>",
            escape(&text("title")),
            escape(&text("summary")),
            escape(&field(r, "model")),
            escape(&field(r, "backend")),
            escape(&field(r, "created")),
            escape(&field(r, "command")),
        );
    }
    html.push_str("</table>\n</body></html>\n");
    let index = dir.join("index.html");
    std::fs::write(&index, html).with_context(|| format!("cannot write {}", index.display()))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_is_listed_newest_first_and_an_empty_folder_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = write_runs_index(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("no runs in") && e.contains("result.json"), "{e}");
        for (name, created) in [
            ("old", "2026-01-01T00:00:00Z"),
            ("new", "2026-02-01T00:00:00Z"),
        ] {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            let r = serde_json::json!({
                "experiment": "x", "model": "m", "backend": "flex", "created": created,
                "command": format!("cargo xtask lens --out runs/{name}"),
                "report": {"title": format!("T {name}"), "summary": "s", "headline": "a.svg"},
            });
            std::fs::write(d.join("result.json"), r.to_string()).unwrap();
        }
        std::fs::create_dir(tmp.path().join("not-a-run")).unwrap();
        let html = std::fs::read_to_string(write_runs_index(tmp.path()).unwrap()).unwrap();
        assert!(html.contains("2 runs"));
        let (new, old) = (html.find("T new").unwrap(), html.find("T old").unwrap());
        assert!(new < old, "newest first");
        assert!(html.contains("<img src=\"new/a.svg\""));
        assert!(html.contains("href=\"old/index.html\""));
        std::fs::write(tmp.path().join("old/result.json"), "{").unwrap();
        let e = write_runs_index(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("old") && e.contains("is not JSON"), "{e}");
    }
}
