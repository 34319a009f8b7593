//! Fuzzing the front end: every reader of a user's file (config.json, safetensors headers,
//! tokenizer.json and vocab.json + merges.txt, the facts / pairs / CounterFact / CSV / JSONL /
//! text readers and recipes) is fed valid files mutated by `proptest` — bytes flipped,
//! inserted, deleted, repeated or cut, and JSON or TOML values replaced by hostile ones
//! (NaN-like strings, 2^64, negative and huge numbers, wrong types, deep nesting, a byte-order
//! mark). A reader may refuse a file with an error; it must not panic, hang, or accept
//! something it then cannot use.
//!
//! `BURNLENS_FUZZ_CASES` sets the cases per target (default 1000, what the test command runs);
//! docs/FUZZING.md records a long run. Each target prints a line: cases, accepted, refused,
//! slowest case, seconds. A panic fails the test with the shrunk input; a case slower than
//! `BURNLENS_FUZZ_MAX_CASE_SECS` (default 5) fails it as a hang.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// A position chosen by proptest, scaled to the size of what it picks from (as proptest's own
/// `sample::Index`, which cannot be built by hand for a test).
#[derive(Debug, Clone, Copy)]
pub struct Index(pub u64);

impl Index {
    /// The position in `0..size` (`size` > 0).
    pub fn index(&self, size: usize) -> usize {
        ((size as u128 * self.0 as u128) >> 64) as usize
    }

    /// The element of `slice` (non-empty) at this position.
    pub fn get<'a, T>(&self, slice: &'a [T]) -> &'a T {
        &slice[self.index(slice.len())]
    }
}

fn pick() -> impl Strategy<Value = Index> {
    any::<u64>().prop_map(Index)
}

/// One edit of a file's bytes or of its parsed JSON / TOML tree.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Insert bytes (often a fragment that means something to a parser).
    Insert(Index, Vec<u8>),
    /// Delete up to this many bytes.
    Delete(Index, u8),
    /// Repeat a stretch of bytes in place.
    Repeat(Index, u8, u8),
    /// Cut the file here.
    Truncate(Index),
    /// Replace one node of the JSON (or TOML) tree with a hostile value.
    Replace(Index, serde_json::Value),
    /// Delete one member of an object or element of an array.
    Remove(Index),
}

/// Fragments that mean something to a JSON, TOML, CSV or number parser.
const FRAGMENTS: &[&str] = &[
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    "\n",
    "\r\n",
    "\u{feff}",
    "\0",
    "null",
    "true",
    "NaN",
    "-inf",
    "1e400",
    "-1",
    "-0",
    "18446744073709551616",
    "4294967296",
    "1e-400",
    "99999999999999999999",
    "0.5",
    "\"\"",
    "\u{fffd}",
    "\\u0000",
    "\\ud800",
    "#",
    "'",
    "\t",
    "[[args]]",
    "{}",
    "[]",
];

fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(FRAGMENTS).prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..8),
    ]
}

/// Hostile JSON values: wrong types, out-of-range and non-finite-looking numbers, empty and
/// odd strings, nesting.
fn hostile_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(2),
            json!(1024),
            json!(1025),
            json!(4_294_967_296u64),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e300),
            json!(-1e300),
            json!(0.5),
            json!(1e-300),
        ]),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "",
            " ",
            "NaN",
            "inf",
            "{}",
            "\u{feff}",
            "\u{0}",
            "gelu_new",
            "gpt2",
            "Paris",
            " Paris",
            "{} lives in",
            "{}{}",
            "<|endoftext|>",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        "[a-z{} ]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (pick(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (pick(), fragment()).prop_map(|(i, f)| Mutation::Insert(i, f)),
        1 => (pick(), 1u8..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (pick(), 1u8..32, 1u8..8).prop_map(|(i, n, k)| Mutation::Repeat(i, n, k)),
        1 => pick().prop_map(Mutation::Truncate),
        4 => (pick(), hostile_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => pick().prop_map(Mutation::Remove),
    ]
}

/// The syntax a seed file's tree mutations parse and write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Syntax {
    /// One JSON document.
    Json,
    /// One JSON document per line.
    JsonLines,
    /// TOML (recipes).
    Toml,
    /// Bytes only (CSV, text).
    Bytes,
}

/// Every node of `v`, depth first, as a path of object keys and array indices.
fn paths(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut serde_json::Value, path: &[String]) -> Option<&'a mut serde_json::Value> {
    path.iter().try_fold(v, |v, k| match v {
        serde_json::Value::Object(m) => m.get_mut(k),
        serde_json::Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// Applies a tree mutation to one JSON document; `None` when it does not apply.
fn mutate_tree(doc: &mut serde_json::Value, m: &Mutation) -> Option<()> {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    match m {
        Mutation::Replace(i, value) => {
            let path: &Vec<String> = i.get(&all);
            *node(doc, path)? = value.clone();
        }
        Mutation::Remove(i) => {
            let path: &Vec<String> = i.get(&all[1.min(all.len() - 1)..]);
            let (last, parent) = path.split_last()?;
            match node(doc, parent)? {
                serde_json::Value::Object(m) => {
                    m.remove(last);
                }
                serde_json::Value::Array(a) => {
                    let i = last.parse::<usize>().ok()?;
                    a.remove(i);
                }
                _ => return None,
            }
        }
        _ => return None,
    }
    Some(())
}

/// Applies `m` to `bytes` (a file in `syntax`).
pub fn apply(bytes: &mut Vec<u8>, m: &Mutation, syntax: Syntax) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Flip(i, bit) if !bytes.is_empty() => {
            let at = i.index(n);
            bytes[at] ^= 1 << bit;
        }
        Mutation::Insert(i, f) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, f.iter().copied());
        }
        Mutation::Delete(i, k) if !bytes.is_empty() => {
            let at = i.index(n);
            let end = (at + *k as usize).min(bytes.len());
            bytes.drain(at..end);
        }
        Mutation::Repeat(i, len, times) if !bytes.is_empty() => {
            let at = i.index(n);
            let end = (at + *len as usize).min(bytes.len());
            let piece = bytes[at..end].to_vec();
            for _ in 0..*times {
                bytes.splice(end..end, piece.iter().copied());
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
        Mutation::Replace(..) | Mutation::Remove(_) => mutate_tree_bytes(bytes, m, syntax),
        _ => {}
    }
}

fn mutate_tree_bytes(bytes: &mut Vec<u8>, m: &Mutation, syntax: Syntax) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let edited = match syntax {
        Syntax::Json => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|mut doc| mutate_tree(&mut doc, m).map(|_| doc.to_string())),
        Syntax::JsonLines => {
            let mut lines: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let mut doc = serde_json::Value::Array(std::mem::take(&mut lines));
            mutate_tree(&mut doc, m).map(|_| match doc {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                other => other.to_string(),
            })
        }
        Syntax::Toml => toml::from_str::<toml::Value>(text)
            .ok()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|mut doc| {
                mutate_tree(&mut doc, m)?;
                // TOML has no null; such a tree is not written.
                let t: toml::Value = serde_json::from_value(doc).ok()?;
                toml::to_string(&t).ok()
            }),
        Syntax::Bytes => None,
    };
    if let Some(e) = edited {
        *bytes = e.into_bytes();
    }
}

/// A reader under test: reads the file at the path, `Ok(true)` when it accepted it,
/// `Ok(false)` when it refused it with an error, `Err` when it accepted something it should not
/// have (a property of accepted input failed).
pub type Reader = fn(&Path) -> Result<bool, String>;

/// Counts of one target's run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Cases run.
    pub cases: u64,
    /// Files the reader accepted.
    pub accepted: u64,
    /// Files it refused with an error.
    pub refused: u64,
    /// The slowest case.
    pub slowest: Duration,
}

fn cases() -> u32 {
    std::env::var("BURNLENS_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

fn max_case() -> Duration {
    let secs = std::env::var("BURNLENS_FUZZ_MAX_CASE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(5.0);
    Duration::from_secs_f64(secs)
}

/// Runs `reader` on `cases()` mutations of `seeds` (each a file name, its bytes and syntax),
/// written as that file name in a temporary directory.
///
/// # Panics
/// When the reader panics, hangs (a case over the limit) or accepts what it should not: the
/// point of the test.
pub fn fuzz(target: &str, seeds: &[(PathBuf, Vec<u8>, Syntax)], reader: Reader) -> Tally {
    let dir = tempfile::tempdir().unwrap();
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    let limit = max_case();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    });
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..4));
    let result = runner.run(&strategy, |(seed, mutations)| {
        let (name, bytes, syntax) = &seeds[seed];
        let mut bytes = bytes.clone();
        for m in &mutations {
            apply(&mut bytes, m, *syntax);
        }
        let path = dir.path().join(name.file_name().unwrap());
        std::fs::write(&path, &bytes).unwrap();
        let t = Instant::now();
        let verdict = reader(&path);
        let took = t.elapsed();
        let mut tally = tally.lock().unwrap();
        tally.cases += 1;
        tally.slowest = tally.slowest.max(took);
        if took > limit {
            return Err(TestCaseError::fail(format!(
                "{}: a case took {took:?} (a hang?)",
                name.display()
            )));
        }
        match verdict {
            Ok(true) => tally.accepted += 1,
            Ok(false) => tally.refused += 1,
            Err(e) => return Err(TestCaseError::fail(format!("{}: {e}", name.display()))),
        }
        Ok(())
    });
    let tally = tally.into_inner().unwrap();
    let verdict = if result.is_ok() {
        "0 panics, 0 hangs"
    } else {
        "FAILED (below)"
    };
    eprintln!(
        "fuzz {target}: {} cases, {} accepted, {} refused, {verdict}, slowest case {:.1} ms, \
         {:.1} s",
        tally.cases,
        tally.accepted,
        tally.refused,
        tally.slowest.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::repo_root;
    use burnlens_model::{Gpt2, Gpt2Config, Gpt2Tokenizer, weights::read_safetensors};

    fn seed(rel: &str, syntax: Syntax) -> (PathBuf, Vec<u8>, Syntax) {
        let path = repo_root().join(rel);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (path, bytes, syntax)
    }

    /// The mutations are real: most mutated config files are refused, some accepted.
    fn assert_both(t: &Tally) {
        if t.cases >= 100 {
            assert!(
                t.refused > 0,
                "{t:?}: nothing refused, are the mutations applied?"
            );
        }
    }

    #[test]
    fn mutations_edit_bytes_and_trees() {
        let mut b = br#"{"a": [1, 2], "b": "x"}"#.to_vec();
        // Of the nodes (root, "a", 1, 2, "b"), the second.
        let at = |k: u128, of: u128| Index(((k << 64) / of + 1) as u64);
        apply(
            &mut b,
            &Mutation::Replace(at(1, 5), serde_json::json!(null)),
            Syntax::Json,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["a"], serde_json::Value::Null);
        let mut b = b"abcdef".to_vec();
        apply(&mut b, &Mutation::Truncate(at(3, 7)), Syntax::Bytes);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn config_json() {
        let t = fuzz(
            "config.json",
            &[
                seed("fixtures/tiny-gpt2/config.json", Syntax::Json),
                seed("fixtures/organism/config.json", Syntax::Json),
            ],
            |p| match Gpt2Config::from_hf_file(p) {
                Ok(c) => {
                    c.validate()
                        .map_err(|e| format!("accepted, then invalid: {e}"))?;
                    c.checked_num_params()
                        .ok_or("accepted a config whose parameter count overflows")?;
                    Ok(true)
                }
                Err(_) => Ok(false),
            },
        );
        assert_both(&t);
    }

    #[test]
    fn safetensors_header() {
        let path = repo_root().join("fixtures/tiny-gpt2/model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        // The header (length prefix and JSON) mutated; the data kept as it is.
        let header = bytes[..8 + n].to_vec();
        static DATA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        DATA.get_or_init(|| bytes[8 + n..].to_vec());
        let t = fuzz(
            "safetensors header",
            &[(path.clone(), header, Syntax::Bytes)],
            |p| {
                let mut file = std::fs::read(p).unwrap();
                // A mutated JSON header keeps its prefix consistent half of the time.
                if file.len() >= 8 && file[0] & 1 == 0 {
                    let len = (file.len() - 8) as u64;
                    file[..8].copy_from_slice(&len.to_le_bytes());
                }
                file.extend_from_slice(DATA.get().unwrap());
                std::fs::write(p, &file).unwrap();
                let Ok(raw) = read_safetensors(p) else {
                    return Ok(false);
                };
                for (name, t) in &raw {
                    if t.data.len() != t.shape.iter().product::<usize>() {
                        return Err(format!("{name}: {} values for {:?}", t.data.len(), t.shape));
                    }
                }
                let config =
                    Gpt2Config::from_hf_file(&repo_root().join("fixtures/tiny-gpt2/config.json"))
                        .unwrap();
                let device = burnlens_model::BackendKind::Flex.device().unwrap();
                Ok(Gpt2::from_raw(&config, raw, p, &device).is_ok())
            },
        );
        assert_both(&t);
    }

    #[test]
    fn tokenizer_json() {
        let t = fuzz(
            "tokenizer.json",
            &[seed("fixtures/tiny-gpt2/tokenizer.json", Syntax::Json)],
            |p| {
                let Ok(tok) = Gpt2Tokenizer::from_file(p) else {
                    return Ok(false);
                };
                let Ok(ids) = tok.encode("Jessop Emma lives in Paris, the city of", false) else {
                    return Ok(true);
                };
                if let Some(id) = ids.iter().find(|&&i| i as usize >= tok.vocab_size()) {
                    return Err(format!(
                        "token id {id} beyond the vocabulary {}",
                        tok.vocab_size()
                    ));
                }
                tok.decode(&ids).ok();
                Ok(true)
            },
        );
        assert_both(&t);
    }

    /// `vocab.json` and `merges.txt` as GPT-2's original release ships them, made from the
    /// tiny fixture's tokenizer.json (each case mutates one of the two; the other is this).
    fn vocab_and_merges_dir() -> &'static Path {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        DIR.get_or_init(|| {
            let text =
                std::fs::read_to_string(repo_root().join("fixtures/tiny-gpt2/tokenizer.json"))
                    .unwrap();
            let tok: serde_json::Value = serde_json::from_str(&text).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let vocab = tok["model"]["vocab"].to_string();
            std::fs::write(dir.path().join("vocab.json"), vocab).unwrap();
            let mut merges = String::from("#version: 0.2\n");
            for pair in tok["model"]["merges"].as_array().unwrap() {
                merges += &format!(
                    "{} {}\n",
                    pair[0].as_str().unwrap(),
                    pair[1].as_str().unwrap()
                );
            }
            std::fs::write(dir.path().join("merges.txt"), merges).unwrap();
            dir
        })
        .path()
    }

    #[test]
    fn vocab_json_and_merges_txt() {
        let dir = vocab_and_merges_dir();
        let seeds = [
            (
                dir.join("vocab.json"),
                std::fs::read(dir.join("vocab.json")).unwrap(),
                Syntax::Json,
            ),
            (
                dir.join("merges.txt"),
                std::fs::read(dir.join("merges.txt")).unwrap(),
                Syntax::Bytes,
            ),
        ];
        // The unmutated pair loads and encodes as tokenizer.json does.
        let plain = Gpt2Tokenizer::from_vocab_merges(&seeds[0].0, &seeds[1].0).unwrap();
        let json = Gpt2Tokenizer::from_file(&repo_root().join("fixtures/tiny-gpt2/tokenizer.json"))
            .unwrap();
        let text = "Jessop Emma lives in Paris, the city of";
        assert_eq!(
            plain.encode(text, false).unwrap(),
            json.encode(text, false).unwrap()
        );
        let t = fuzz("vocab.json + merges.txt", &seeds, |p| {
            let dir = vocab_and_merges_dir();
            let loaded = if p.ends_with("vocab.json") {
                Gpt2Tokenizer::from_vocab_merges(p, &dir.join("merges.txt"))
            } else {
                Gpt2Tokenizer::from_vocab_merges(&dir.join("vocab.json"), p)
            };
            let Ok(tok) = loaded else {
                return Ok(false);
            };
            if let Ok(ids) = tok.encode("Jessop Emma lives in Paris, the city of", false)
                && let Some(id) = ids.iter().find(|&&i| i as usize >= tok.vocab_size())
            {
                return Err(format!(
                    "token id {id} beyond the vocabulary {}",
                    tok.vocab_size()
                ));
            }
            Ok(true)
        });
        assert_both(&t);
    }

    #[test]
    fn facts_and_counterfact() {
        use burnlens_datasets::{load_counterfact, load_facts};
        let t = fuzz(
            "facts / CounterFact",
            &[
                seed("fixtures/datasets/known_facts.json", Syntax::Json),
                seed("fixtures/datasets/tracing.json", Syntax::Json),
                seed("fixtures/datasets/counterfact.json", Syntax::Json),
                seed("fixtures/datasets/tiny_facts.json", Syntax::Json),
            ],
            |p| {
                let name = p.file_name().unwrap().to_string_lossy();
                if name.starts_with("counterfact") {
                    return Ok(load_counterfact(p).is_ok());
                }
                match load_facts(p) {
                    Ok(facts) => {
                        if let Some(f) = facts.iter().find(|f| !f.prompt.contains(&f.subject)) {
                            return Err(format!(
                                "accepted a fact whose prompt lacks its subject: {f:?}"
                            ));
                        }
                        Ok(true)
                    }
                    Err(_) => Ok(false),
                }
            },
        );
        assert_both(&t);
    }

    #[test]
    fn pairs_csv_json_jsonl() {
        let t = fuzz(
            "pairs (CSV, JSON, JSONL)",
            &[
                seed("fixtures/datasets/pairs.csv", Syntax::Bytes),
                seed("fixtures/datasets/pairs.json", Syntax::Json),
                seed("fixtures/datasets/pairs.jsonl", Syntax::JsonLines),
            ],
            |p| Ok(burnlens_datasets::load_pairs(p).is_ok()),
        );
        assert_both(&t);
    }

    #[test]
    fn texts_txt_jsonl() {
        fuzz(
            "texts (.txt, .jsonl)",
            &[
                seed("fixtures/datasets/text.txt", Syntax::Bytes),
                seed("fixtures/datasets/text.jsonl", Syntax::JsonLines),
            ],
            |p| Ok(burnlens_datasets::read_texts(p).is_ok()),
        );
    }

    #[test]
    fn recipes() {
        use clap::Parser;
        let mut seeds = Vec::new();
        for entry in std::fs::read_dir(repo_root().join("recipes")).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            seeds.push((path, bytes, Syntax::Toml));
        }
        seeds.sort_by(|a, b| a.0.cmp(&b.0));
        let t = fuzz("recipes", &seeds, |p| {
            let Ok(text) = std::fs::read_to_string(p) else {
                return Ok(false);
            };
            match crate::recipe::argv(&text) {
                Ok(line) => Ok(crate::Cli::try_parse_from(&line).is_ok()),
                Err(_) => Ok(false),
            }
        });
        assert_both(&t);
    }
}
