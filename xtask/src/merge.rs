//! `cargo xtask merge`: the shards of one sweep (each folder written with `--shard i/n`)
//! into the folder one process running the whole sweep would have written.
//!
//! Kept apart from [`crate::sweep`], which the sweep commands use, because merging needs every
//! sweep command's report writer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::sweep::{
    Finish, Item, Manifest, Shard, first_difference, read_item_lines, read_manifest, write_atomic,
    write_report,
};

/// The commands that work item by item (sharded, resumed and merged), as a user names them.
pub const SWEEP_COMMANDS: &[&str] = &[
    "trace",
    "attribute-layers",
    "rome",
    "memit",
    "edit-scale",
    "finetune",
    "patch",
    "heads",
];

/// The report writer of a sweep command.
fn finisher(command: &str) -> Option<Finish> {
    match command {
        "trace" => Some(crate::trace::finish),
        "attribute-layers" => Some(crate::layers::finish),
        "rome" => Some(crate::rome::finish),
        "memit" => Some(crate::memit::finish),
        "edit-scale" => Some(crate::scale::finish),
        "finetune" => Some(crate::finetune::finish),
        "patch" => Some(crate::patch::finish),
        "heads" => Some(crate::heads::finish),
        _ => None,
    }
}

/// Options of `cargo xtask merge`.
#[derive(Args)]
pub struct MergeArgs {
    /// The shards' output folders (each written with --shard i/n of one sweep).
    #[arg(required = true, num_args = 1..)]
    pub dirs: Vec<PathBuf>,
    /// Where the merged run goes: the folder one process running the whole sweep would have
    /// written (sweep.json, items.jsonl, result.json, SVGs, index.html).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `cargo xtask merge`.
///
/// # Errors
/// A folder that is not a finished shard of the same sweep as the first (the first differing
/// option named), two folders of one shard, a shard missing, an item missing or twice.
pub fn merge(a: MergeArgs) -> Result<()> {
    let mut shards: Vec<(PathBuf, Manifest)> = Vec::new();
    for dir in &a.dirs {
        shards.push((dir.clone(), read_manifest(dir)?));
    }
    let (first_dir, first) = &shards[0];
    for (dir, m) in &shards[1..] {
        let other = format!("{} and {}", dir.display(), first_dir.display());
        if m.command != first.command {
            bail!(
                "{other} are not shards of one sweep: {} against {}",
                m.command,
                first.command
            );
        }
        if let Some(diff) = first_difference(&m.options, &first.options) {
            bail!(
                "{other} are not shards of one sweep: {diff} ({} against {})",
                dir.display(),
                first_dir.display()
            );
        }
        if m.n_items != first.n_items || m.prep != first.prep {
            bail!(
                "{other} are not shards of one sweep: their datasets differ ({} against {} items, \
                 or what was computed from them)",
                m.n_items,
                first.n_items
            );
        }
    }
    let count = match first.shard {
        Some(s) => s.count,
        None => bail!(
            "{} is a whole run, not a shard: nothing to merge",
            first_dir.display()
        ),
    };
    let mut by_shard: BTreeMap<usize, &PathBuf> = BTreeMap::new();
    for (dir, m) in &shards {
        let Some(s) = m.shard.filter(|s| s.count == count) else {
            bail!(
                "{} is not one of {count} shards (its --shard is {})",
                dir.display(),
                m.shard.map_or("not given".into(), |s| s.to_string())
            );
        };
        if let Some(other) = by_shard.insert(s.index, dir) {
            bail!(
                "{} and {} are both shard {s}",
                other.display(),
                dir.display()
            );
        }
    }
    let mut items: BTreeMap<usize, (Value, String, &PathBuf)> = BTreeMap::new();
    for (dir, _) in &shards {
        for (k, (v, line)) in read_item_lines(dir, false)? {
            if let Some((_, _, other)) = items.get(&k) {
                bail!(
                    "item {k} is in both {} and {}",
                    other.display(),
                    dir.display()
                );
            }
            items.insert(k, (v, line, dir));
        }
    }
    if let Some(k) = (0..first.n_items).find(|k| !items.contains_key(k)) {
        let s = Shard {
            index: k % count,
            count,
        };
        match by_shard.get(&s.index) {
            Some(dir) => bail!(
                "item {k} is missing: shard {s} ({}) has not finished it (resume it with --resume)",
                dir.display()
            ),
            None => bail!("item {k} is missing: no folder given is shard {s}"),
        }
    }
    if let Some(k) = items.keys().find(|&&k| k >= first.n_items) {
        bail!(
            "item {k} is in {}, but the sweep has {} items",
            items[k].2.display(),
            first.n_items
        );
    }
    let mut header = first.header.clone();
    if let Some(map) = header.as_object_mut() {
        map.insert(
            "command".into(),
            Value::String(crate::models::command_line()),
        );
    }
    let manifest = Manifest {
        shard: None,
        header,
        ..first.clone()
    };
    write_atomic(
        &a.out.join("sweep.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    // The shards' lines as they are: the merged items.jsonl is the single run's, byte for byte.
    let mut lines = String::new();
    for (_, line, _) in items.values() {
        lines.push_str(line);
        lines.push('\n');
    }
    let items: Vec<Item> = items.into_iter().map(|(k, (v, _, _))| (k, v)).collect();
    write_atomic(&a.out.join("items.jsonl"), lines.as_bytes())?;
    eprintln!(
        "merged {} shards of {} ({} items) into {}",
        shards.len(),
        manifest.command,
        items.len(),
        a.out.display()
    );
    let finish = finisher(&manifest.command)
        .with_context(|| format!("{} is not a sweep command", manifest.command))?;
    write_report(&manifest, &items, &a.out, finish)
}
