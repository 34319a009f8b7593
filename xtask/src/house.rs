//! The workspace's layout rules (docs/ARCHITECTURE.md, "Invariants"), checked on its sources:
//! no file of a crate uses a file that uses it back, and no function of a library crate runs
//! past 120 lines.
//!
//! Written by hand on purpose: both rules read rustfmt-formatted source line by line, which a
//! parser crate (syn) would do more slowly and with more dependencies than the rules need.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside a crate (`["engine", "batched"]`); the crate root is `[]`.
type ModPath = Vec<String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source directories of the library crates and of xtask.
fn source_dirs(libraries_only: bool) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("an entry").path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    if !libraries_only {
        dirs.push(root().join("xtask/src"));
    }
    dirs.sort();
    dirs
}

/// A file's module path: `engine/mod.rs` is `engine`, `lib.rs` and `main.rs` the root.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// The source before its tests, with `//` comments removed.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Splits a `{a, b::{c, d}}` group's inside at its top-level commas.
fn split_group(inside: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in inside.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&inside[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&inside[start..]);
    out
}

/// The paths a use tree (`a::b`, `{a, b::{c, d}}`, `a::{b, c}`) names, after `prefix`.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<ModPath>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(inside) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        for item in split_group(inside) {
            expand(prefix, item, out);
        }
        return;
    }
    if let Some(brace) = tree.find("::{") {
        let mut p = prefix.to_vec();
        p.extend(tree[..brace].split("::").map(str::to_string));
        expand(&p, &tree[brace + 2..], out);
        return;
    }
    let mut p = prefix.to_vec();
    let path = tree.split_whitespace().next().unwrap_or("");
    p.extend(
        path.split("::")
            .filter(|s| !s.is_empty() && *s != "self")
            .map(str::to_string),
    );
    out.push(p);
}

/// The use tree starting at `rest`: a path, ending in a braced group or not.
fn tree_at(rest: &str) -> &str {
    let mut end = 0;
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        if is_ident(c) || c == ':' {
            end = i + c.len_utf8();
            k += 1;
        } else if c == '{' {
            let mut depth = 0;
            for &(j, d) in &chars[k..] {
                depth += match d {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    return &rest[..j + 1];
                }
            }
            return rest;
        } else {
            break;
        }
    }
    &rest[..end]
}

/// The files (module paths in `modules`) that `text`, the source of module `me`, names through
/// `crate::`, `super::` or `self::`.
fn uses(text: &str, me: &ModPath, modules: &BTreeSet<ModPath>) -> BTreeSet<ModPath> {
    let code = code(text);
    let mut named = Vec::new();
    for base in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(base) {
            if code[..at].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let prefix: ModPath = match base {
                "crate::" => Vec::new(),
                "super::" => me[..me.len().saturating_sub(1)].to_vec(),
                _ => me.clone(),
            };
            expand(&prefix, tree_at(&code[at + base.len()..]), &mut named);
        }
    }
    named
        .into_iter()
        .filter_map(|path| {
            (1..=path.len())
                .rev()
                .map(|k| path[..k].to_vec())
                .find(|p| modules.contains(p))
        })
        .filter(|p| p != me)
        .collect()
}

/// The cycles of file uses in the crate whose sources are in `src` (the crate root, which
/// declares and re-exports the modules, is no node).
fn cycles(src: &Path) -> Vec<Vec<ModPath>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(src, f)).collect();
    let graph: BTreeMap<ModPath, BTreeSet<ModPath>> = files
        .iter()
        .map(|f| (module_of(src, f), f))
        .filter(|(m, _)| !m.is_empty())
        .map(|(m, f)| {
            let text = std::fs::read_to_string(f).expect("a source file");
            let used = uses(&text, &m, &modules);
            (m, used)
        })
        .collect();
    let mut found = Vec::new();
    let mut state: BTreeMap<ModPath, bool> = BTreeMap::new(); // false: on the stack
    fn visit(
        u: &ModPath,
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        state: &mut BTreeMap<ModPath, bool>,
        stack: &mut Vec<ModPath>,
        found: &mut Vec<Vec<ModPath>>,
    ) {
        state.insert(u.clone(), false);
        stack.push(u.clone());
        for v in graph.get(u).into_iter().flatten() {
            match state.get(v) {
                Some(false) => {
                    let at = stack.iter().position(|s| s == v).expect("on the stack");
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(v.clone());
                    found.push(cycle);
                }
                None if graph.contains_key(v) => visit(v, graph, state, stack, found),
                _ => {}
            }
        }
        stack.pop();
        state.insert(u.clone(), true);
    }
    for u in graph.keys() {
        if !state.contains_key(u) {
            visit(u, &graph, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[test]
fn the_use_scanner_sees_groups_nested_paths_and_super() {
    let modules: BTreeSet<ModPath> = [
        vec!["engine".to_string()],
        vec!["engine".into(), "patch".into()],
        vec!["metric".into()],
        vec!["error".into()],
    ]
    .into_iter()
    .collect();
    let me = vec!["engine".to_string(), "batched".to_string()];
    let text = "use super::patch::{Job, Patch};\nuse crate::{error::Result, metric::{host_scores}};\n// use crate::tracing::X;\n";
    let got = uses(text, &me, &modules);
    let want: BTreeSet<ModPath> = [
        vec!["engine".to_string(), "patch".to_string()],
        vec!["error".into()],
        vec!["metric".into()],
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn no_file_of_a_crate_uses_a_file_that_uses_it_back() {
    let mut all = Vec::new();
    for src in source_dirs(false) {
        for cycle in cycles(&src) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("/")).collect();
            all.push(format!("{}: {}", src.display(), names.join(" -> ")));
        }
    }
    assert!(
        all.is_empty(),
        "import cycles between files:\n{}",
        all.join("\n")
    );
}

/// `(file, function, lines)` for every function of the library crates longer than `limit`
/// lines (rustfmt's layout: a function ends at the first `}` at its own indentation).
fn long_functions(limit: usize) -> Vec<(PathBuf, String, usize)> {
    let mut out = Vec::new();
    for src in source_dirs(true) {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file");
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let body = line.trim_start();
                let indent = &line[..line.len() - body.len()];
                let body = body
                    .strip_prefix("pub(crate) ")
                    .or_else(|| body.strip_prefix("pub "))
                    .unwrap_or(body);
                let body = body.strip_prefix("const ").unwrap_or(body);
                let Some(rest) = body.strip_prefix("fn ") else {
                    continue;
                };
                if line.trim_end().ends_with(';') {
                    continue;
                }
                let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
                let close = format!("{indent}}}");
                let end = lines[i + 1..]
                    .iter()
                    .position(|l| *l == close)
                    .map_or(lines.len(), |k| i + 1 + k);
                let n = end - i + 1;
                if n > limit {
                    out.push((file.clone(), name, n));
                }
            }
        }
    }
    out
}

#[test]
fn no_library_function_runs_past_120_lines() {
    let long = long_functions(120);
    let list: Vec<String> = long
        .iter()
        .map(|(f, name, n)| format!("{}: fn {name}, {n} lines", f.display()))
        .collect();
    assert!(
        list.is_empty(),
        "split these functions:\n{}",
        list.join("\n")
    );
    // The counter itself sees long functions: `rome_edit` is over 40 lines.
    assert!(
        long_functions(40)
            .iter()
            .any(|(_, name, _)| name == "rome_edit"),
        "the line counter found no function over 40 lines in the library crates"
    );
}
