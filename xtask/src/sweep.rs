//! Sweeps that work item by item (a fact, a case), so that they can be sharded over processes,
//! resumed after an interrupt and merged: `--shard i/n`, `--resume`, `items.jsonl`,
//! `sweep.json` and `cargo xtask merge`.
//!
//! A sweep's output folder holds:
//! - `sweep.json`, written when the sweep starts: the command, its options (every flag that
//!   can change a number; not `--out`, `--shard`, `--resume`, `--overwrite`), the shard, the
//!   number of items in the whole dataset and what the command computed from the whole dataset
//!   before the first item (`prep`: the noise level of causal tracing, ROME's context
//!   templates…), so that a resumed run and the other shards can be checked against it;
//! - `items.jsonl`, one line `{"index": k, "item": {...}}` per finished item, appended as soon
//!   as the item is done (flushed and synced to disk), `k` its index in the whole dataset;
//! - at the end, `result.json`, the SVGs and `index.html`, written from `items.jsonl` (by the
//!   command, or by `merge` from several shards' folders), each atomically.
//!
//! Shards: `--shard i/n` takes the items whose index `k` has `k mod n = i` (round robin, so
//! every shard gets long and short items alike); `n` processes with `i = 0 … n−1` cover the
//! dataset exactly once. Randomness is seeded per item from the seed and `k` ([`item_seed`]),
//! so an item's numbers do not depend on the shard, the resume or the order.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `sweep.json`'s format version.
const FORMAT: u32 = 1;

/// One shard of a sweep: the items `k` with `k mod count = index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: usize,
    /// How many shards the sweep has.
    pub count: usize,
}

impl Shard {
    /// Whether item `k` (its index in the whole dataset) is this shard's.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected i/n, shard i of n counted from 0 (0/4, 1/4, 2/4, 3/4)";
        let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: {usage}"))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("{s:?}: {x:?} is not a whole number; {usage}"))
        };
        let (index, count) = (parse(i)?, parse(n)?);
        if count == 0 {
            return Err(format!("{s:?}: a sweep has at least one shard; {usage}"));
        }
        if index >= count {
            return Err(format!(
                "{s:?}: there is no shard {index} of {count}: shards count from 0 to {}",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }
}

/// The seed of item `k` of a sweep seeded with `seed`: `seed + k · 0x9E3779B97F4A7C15`
/// (wrapping; the golden-ratio increment of splitmix64), so item 0 keeps the seed itself and
/// every item's noise is the same whichever shard, order or resume computes it.
pub fn item_seed(seed: u64, k: usize) -> u64 {
    seed.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The sweep flags of a dataset-level command.
#[derive(Args, Debug, Clone, Default)]
pub struct SweepArgs {
    /// Compute only shard i of n of the items (counted from 0: item k goes to shard k mod n);
    /// n runs with i = 0 … n−1 cover the dataset once; `cargo xtask merge` joins their folders.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Continue the interrupted run in --out: the items in its items.jsonl are kept, the rest
    /// computed; the options must be the ones it was started with.
    #[arg(long)]
    pub resume: bool,
}

/// `sweep.json`: what a sweep is, so that a resume and the other shards can be checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The format of this file.
    pub sweep_format: u32,
    /// The command (`trace`, `attribute-layers`, `rome`).
    pub command: String,
    /// Every option that can change a number, by its field name (`samples`, `noise_factor`).
    pub options: Map<String, Value>,
    /// The shard this folder computes (`null`: every item).
    pub shard: Option<Shard>,
    /// Items in the whole dataset.
    pub n_items: usize,
    /// The run header of `result.json` (experiment, model, backend, commit, command line).
    pub header: Value,
    /// What the command computed from the whole dataset before the first item.
    pub prep: Value,
}

/// One finished item: its index in the whole dataset and what the command recorded.
pub type Item = (usize, Value);

/// A sweep in progress in its output folder.
pub struct Sweep {
    dir: PathBuf,
    command: String,
    options: Map<String, Value>,
    shard: Option<Shard>,
    resume: bool,
    manifest: Option<Manifest>,
    done: BTreeMap<usize, Value>,
    items: Option<File>,
}

/// `value` as it reads back from JSON text (numbers written and parsed once), so that a value
/// computed now compares equal to the same value read from a file.
fn reread(value: &Value) -> Value {
    serde_json::from_str(&value.to_string()).unwrap_or(Value::Null)
}

/// The option named by a field (`noise_factor` → `--noise-factor`).
fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "not given".into(),
        Some(v) => v.to_string(),
    }
}

/// The first option whose value differs between `now` and `then`, as a sentence.
pub(crate) fn first_difference(
    now: &Map<String, Value>,
    then: &Map<String, Value>,
) -> Option<String> {
    let keys: std::collections::BTreeSet<&String> = now.keys().chain(then.keys()).collect();
    keys.into_iter()
        .find(|k| now.get(*k) != then.get(*k))
        .map(|k| {
            format!(
                "{} is {} here but {} there",
                flag(k),
                show(now.get(k)),
                show(then.get(k))
            )
        })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, then
/// renamed into place, so a reader (or an interrupt) sees the old file or the new one.
///
/// # Errors
/// Naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a folder's `sweep.json`.
///
/// # Errors
/// Naming the folder: no `sweep.json` (not a sweep's folder), or one that does not parse.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("sweep.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a sweep's folder: it has no readable sweep.json",
            dir.display()
        )
    })?;
    let m: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    if m.sweep_format != FORMAT {
        bail!(
            "{} has format {} and this burnlens reads format {FORMAT}",
            path.display(),
            m.sweep_format
        );
    }
    Ok(m)
}

/// Reads a folder's `items.jsonl`. A last line without its newline is an item cut off by an
/// interrupt: with `repair` the file is truncated before it (a resume), else it is an error
/// (a folder being merged must be finished). A complete line that does not parse, or an index
/// that occurs twice, is an error naming the line.
///
/// # Errors
/// As above, naming the file and line.
pub fn read_items(dir: &Path, repair: bool) -> Result<BTreeMap<usize, Value>> {
    Ok(read_item_lines(dir, repair)?
        .into_iter()
        .map(|(k, (v, _))| (k, v))
        .collect())
}

/// [`read_items`], each item with its line as written (without the newline), so that `merge`
/// copies items byte for byte: a number parsed and written again may not keep its last digit.
///
/// # Errors
/// As [`read_items`].
pub fn read_item_lines(dir: &Path, repair: bool) -> Result<BTreeMap<usize, (Value, String)>> {
    let path = dir.join("items.jsonl");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        if !repair {
            bail!(
                "{}: the last item is cut off (the run was interrupted): resume it with --resume",
                path.display()
            );
        }
        eprintln!(
            "{}: dropping a last item cut off by the interrupt ({} bytes)",
            path.display(),
            bytes.len() - complete
        );
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(complete as u64).and_then(|()| f.sync_all()))
            .with_context(|| format!("cannot repair {}", path.display()))?;
    }
    let text = std::str::from_utf8(&bytes[..complete])
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        #[derive(Deserialize)]
        struct Line {
            index: usize,
            item: Value,
        }
        let l: Line = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not an item ({{\"index\": k, \"item\": …}}); the file is damaged",
                path.display(),
                n + 1
            )
        })?;
        if out.insert(l.index, (l.item, line.to_string())).is_some() {
            bail!(
                "{} line {}: item {} occurs twice",
                path.display(),
                n + 1,
                l.index
            );
        }
    }
    Ok(out)
}

impl Sweep {
    /// Opens the sweep of `command` in `dir` with `options` (a serialised options struct: an
    /// object; fields `out`, `sweep` are not options). With `--resume` the folder's
    /// `sweep.json` must name the same command, options and shard; its finished items are read
    /// (a torn last line dropped). Without it the folder is empty (`dispatch` has checked).
    ///
    /// # Errors
    /// `--resume` on a folder that is not a sweep's, or was started with other options (the
    /// first different option named), or whose items file is damaged.
    pub fn open(dir: &Path, command: &str, options: Value, args: &SweepArgs) -> Result<Self> {
        let Value::Object(options) = reread(&options) else {
            bail!("internal: the options of {command} are not an object");
        };
        let mut sweep = Self {
            dir: dir.to_path_buf(),
            command: command.to_string(),
            options,
            shard: args.shard,
            resume: args.resume,
            manifest: None,
            done: BTreeMap::new(),
            items: None,
        };
        if args.resume {
            let m = read_manifest(dir).context("--resume: nothing to resume")?;
            if m.command != command {
                bail!(
                    "--resume: {} holds a {} sweep, not {command}",
                    dir.display(),
                    m.command
                );
            }
            if let Some(diff) = first_difference(&sweep.options, &m.options) {
                bail!(
                    "--resume: {diff} ({} was started with other options; resume with the same \
                     ones, or start again with --overwrite)",
                    dir.display()
                );
            }
            if m.shard != sweep.shard {
                bail!(
                    "--resume: --shard is {} here but {} there",
                    sweep.shard.map_or("not given".into(), |s| s.to_string()),
                    m.shard.map_or("not given".into(), |s| s.to_string())
                );
            }
            sweep.done = read_items(dir, true)?;
            sweep.manifest = Some(m);
        }
        Ok(sweep)
    }

    /// Starts (or, resuming, checks) the sweep once the dataset is known: `n_items` in the
    /// whole dataset, the run `header`, and `prep`, what was computed from the whole dataset.
    /// Writes `sweep.json`, and opens `items.jsonl` for appending.
    ///
    /// # Errors
    /// Resuming: the dataset or what was computed from it changed since the folder was
    /// started (the number of items, or the first differing `prep` value named), or a
    /// finished item that is not this shard's. A file that cannot be written.
    pub fn begin(&mut self, n_items: usize, header: Value, prep: Value) -> Result<()> {
        let prep = reread(&prep);
        match &self.manifest {
            Some(m) => {
                if m.n_items != n_items {
                    bail!(
                        "--resume: the dataset has {n_items} items here but {} when {} was \
                         started (did the file change?)",
                        m.n_items,
                        self.dir.display()
                    );
                }
                if m.prep != prep {
                    let diff = match (&prep, &m.prep) {
                        (Value::Object(a), Value::Object(b)) => {
                            first_difference(a, b).map(|d| d.trim_start_matches("--").to_string())
                        }
                        _ => None,
                    };
                    bail!(
                        "--resume: what was computed from the whole dataset before the first \
                         item differs from {}'s ({}): the model or the data changed",
                        self.dir.display(),
                        diff.unwrap_or_default()
                    );
                }
                if let Some(&k) = self.done.keys().find(|&&k| k >= n_items || !self.owns(k)) {
                    bail!(
                        "--resume: {} holds item {k}, which is not this run's",
                        self.dir.join("items.jsonl").display()
                    );
                }
                if !self.done.is_empty() {
                    eprintln!(
                        "resuming {}: {} of {} items already done",
                        self.dir.display(),
                        self.done.len(),
                        self.owned(n_items).len()
                    );
                }
            }
            None => {
                let m = Manifest {
                    sweep_format: FORMAT,
                    command: self.command.clone(),
                    options: self.options.clone(),
                    shard: self.shard,
                    n_items,
                    header,
                    prep,
                };
                write_atomic(
                    &self.dir.join("sweep.json"),
                    serde_json::to_string_pretty(&m)?.as_bytes(),
                )?;
                self.manifest = Some(m);
            }
        }
        let path = self.dir.join("items.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.items = Some(file);
        if self.resume {
            // The partial report of the interrupted run is rewritten at the end.
            for stale in ["result.json", "index.html"] {
                std::fs::remove_file(self.dir.join(stale)).ok();
            }
        }
        Ok(())
    }

    fn owns(&self, k: usize) -> bool {
        self.shard.is_none_or(|s| s.owns(k))
    }

    /// This run's items of a dataset of `n` (all of them, or the shard's), ascending.
    pub fn owned(&self, n: usize) -> Vec<usize> {
        (0..n).filter(|&k| self.owns(k)).collect()
    }

    /// The items this run still has to compute, ascending.
    pub fn todo(&self) -> Vec<usize> {
        let n = self.manifest.as_ref().map_or(0, |m| m.n_items);
        self.owned(n)
            .into_iter()
            .filter(|k| !self.done.contains_key(k))
            .collect()
    }

    /// Appends finished item `k` to `items.jsonl`, flushed and synced before it returns.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn record(&mut self, k: usize, item: Value) -> Result<()> {
        let path = self.dir.join("items.jsonl");
        let file = self
            .items
            .as_mut()
            .context("internal: Sweep::record before begin")?;
        let mut line = serde_json::to_string(&serde_json::json!({"index": k, "item": item}))?;
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.done.insert(k, reread(&item));
        Ok(())
    }

    /// The manifest (after [`Sweep::begin`]).
    pub fn manifest(&self) -> Result<&Manifest> {
        self.manifest
            .as_ref()
            .context("internal: Sweep::manifest before begin")
    }

    /// Every item of this run, read back from `items.jsonl` (so a single run, a resumed one and
    /// a merge report the very same numbers), ascending.
    ///
    /// # Errors
    /// An item of this run is missing, or the file cannot be read.
    pub fn finish(&self) -> Result<Vec<Item>> {
        let items = read_items(&self.dir, false)?;
        let m = self.manifest()?;
        if let Some(k) = self
            .owned(m.n_items)
            .into_iter()
            .find(|k| !items.contains_key(k))
        {
            bail!(
                "{}: item {k} is missing",
                self.dir.join("items.jsonl").display()
            );
        }
        Ok(items.into_iter().collect())
    }
}

/// A finished sweep's items read back for its report.
pub struct Parsed<T> {
    /// Each item typed, with its index in the whole dataset.
    pub items: Vec<(usize, T)>,
    /// Each item as it was recorded, with its `index` added: the report's cases.
    pub cases: Vec<Value>,
    /// The sum of the items' `seconds` (the compute time, whatever the shards and resumes).
    pub seconds_total: f64,
}

/// Reads a sweep's items back as `T`, each item's JSON with its index, and their total seconds.
///
/// # Errors
/// An item that is not a `T` or has no `seconds` (named by its index).
pub fn parse_items<T: serde::de::DeserializeOwned>(items: &[Item]) -> Result<Parsed<T>> {
    let mut parsed = Parsed {
        items: Vec::with_capacity(items.len()),
        cases: Vec::with_capacity(items.len()),
        seconds_total: 0.0,
    };
    for (k, v) in items {
        let item: T =
            serde_json::from_value(v.clone()).with_context(|| format!("items.jsonl: item {k}"))?;
        parsed.seconds_total += v
            .get("seconds")
            .and_then(Value::as_f64)
            .with_context(|| format!("items.jsonl: item {k} has no seconds"))?;
        let mut case = v.clone();
        if let Some(map) = case.as_object_mut() {
            map.insert("index".into(), (*k).into());
        }
        parsed.cases.push(case);
        parsed.items.push((*k, item));
    }
    Ok(parsed)
}

/// How a sweep command writes its report from its items.
pub type Finish = fn(&Manifest, &[Item], &Path) -> Result<()>;

/// Writes a finished run's report with the command's `finish`, unless the shard got no items
/// (then it says so and writes nothing more than `sweep.json`).
///
/// # Errors
/// The command's report writer's.
pub fn write_report(m: &Manifest, items: &[Item], out: &Path, finish: Finish) -> Result<()> {
    if items.is_empty() {
        eprintln!(
            "shard {} has none of the {} items: only sweep.json is written",
            m.shard.map_or("-".into(), |s| s.to_string()),
            m.n_items
        );
        return Ok(());
    }
    finish(m, items, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_cover_the_items_once() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for k in 0..20 {
            assert_eq!(shards.iter().filter(|s| s.owns(k)).count(), 1, "item {k}");
        }
        for (bad, needle) in [
            ("3/3", "no shard 3 of 3"),
            ("0/0", "at least one shard"),
            ("1", "expected i/n"),
            ("a/2", "not a whole number"),
            ("-1/2", "not a whole number"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn item_seeds_differ_and_item_zero_keeps_the_seed() {
        assert_eq!(item_seed(7, 0), 7);
        let seeds: std::collections::BTreeSet<u64> = (0..1000).map(|k| item_seed(7, k)).collect();
        assert_eq!(seeds.len(), 1000);
    }

    #[test]
    fn a_torn_last_line_is_dropped_only_when_repairing() {
        let dir = std::env::temp_dir().join(format!("burnlens-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("items.jsonl");
        std::fs::write(
            &path,
            "{\"index\":0,\"item\":{\"a\":1}}\n{\"index\":2,\"item\":{\"a\":2}}\n{\"index\":4,\"it",
        )
        .unwrap();
        let e = read_items(&dir, false).unwrap_err();
        assert!(format!("{e:#}").contains("cut off"), "{e:#}");
        let items = read_items(&dir, true).unwrap();
        assert_eq!(items.keys().copied().collect::<Vec<_>>(), [0, 2]);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}}\n"));
        std::fs::write(
            &path,
            "{\"index\":0,\"item\":1}\n{\"index\":0,\"item\":2}\n",
        )
        .unwrap();
        let e = read_items(&dir, true).unwrap_err();
        assert!(
            format!("{e:#}").contains("line 2: item 0 occurs twice"),
            "{e:#}"
        );
        std::fs::write(&path, "{\"index\":0,\"item\":1}\nnot json\n").unwrap();
        let e = read_items(&dir, true).unwrap_err();
        assert!(format!("{e:#}").contains("line 2: not an item"), "{e:#}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_changed_option_is_named() {
        let now = serde_json::json!({"samples": 5, "seed": 1})
            .as_object()
            .unwrap()
            .clone();
        let then = serde_json::json!({"samples": 10, "seed": 1})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            first_difference(&now, &then).unwrap(),
            "--samples is 5 here but 10 there"
        );
        assert!(first_difference(&now, &now).is_none());
    }
}
