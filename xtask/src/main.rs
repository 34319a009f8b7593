//! `cargo xtask`: burnlens's command line. This file only parses and dispatches: each
//! command is a module that turns its flags into library calls and writes its report
//! (`report.rs`); `models.rs` opens the model and writes the run header.

mod attribute;
mod cache;
mod checks;
mod circuit;
#[cfg(test)]
mod features;
mod finetune;
mod fixtures;
#[cfg(test)]
mod fuzz;
mod generate;
mod heads;
#[cfg(test)]
mod house;
mod layers;
mod lens;
mod llm;
mod logits;
mod memit;
mod merge;
mod models;
mod npy;
mod organism;
mod patch;
mod prepend;
mod probe;
mod progress;
mod recipe;
mod report;
mod rome;
mod scale;
mod slurm;
mod steer;
mod sweep;
mod trace;
mod tuned;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "burnlens: mechanistic interpretability of GPT-2 in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Replace the earlier run in --out: its files are removed first, so none survives into
    /// this run's folder (without it, a folder holding a run is refused).
    #[arg(long, global = true)]
    overwrite: bool,
}

// Negative numbers are values (`--noise-level -1` is refused for being negative, not taken
// for an unknown option), in every command.
#[derive(Subcommand)]
enum Command {
    /// Continue a prompt (greedy, sampling or beam search).
    #[command(allow_negative_numbers = true)]
    Generate(generate::GenerateArgs),
    /// Write a prompt's token ids, string tokens, top-k predictions (JSON) and full logits (.npy).
    #[command(allow_negative_numbers = true)]
    Logits(logits::LogitsArgs),
    /// Regenerate the fixtures that Rust makes.
    #[command(allow_negative_numbers = true)]
    Fixtures(fixtures::FixturesArgs),
    /// Run a prompt and save hook activations (TransformerLens names) as safetensors.
    #[command(allow_negative_numbers = true)]
    Cache(cache::CacheArgs),
    /// Activation patching sweeps on a clean/corrupted pair: result.json, SVG heatmaps, index.html.
    #[command(allow_negative_numbers = true)]
    Patch(patch::PatchArgs),
    /// ROME's causal tracing of a prompt or a file of facts: result.json, SVG heatmaps, index.html.
    #[command(allow_negative_numbers = true)]
    Trace(trace::TraceArgs),
    /// Gradient attribution of a continuation to its prompt (saliency, input x gradient, IG).
    #[command(allow_negative_numbers = true)]
    Attribute(attribute::AttributeArgs),
    /// Layer gradient x activation in every block over a file of facts, by ROME's token groups.
    #[command(allow_negative_numbers = true)]
    AttributeLayers(layers::LayersArgs),
    /// The logit lens of a prompt: top tokens per layer and position, an answer across layers.
    #[command(allow_negative_numbers = true)]
    Lens(lens::LensArgs),
    /// The token(s) that, prepended to a target string, minimise its perplexity.
    #[command(allow_negative_numbers = true)]
    Prepend(prepend::PrependArgs),
    /// A steering vector from two prompts, and generation with and without it.
    #[command(allow_negative_numbers = true)]
    Steer(steer::SteerArgs),
    /// Attention-head analysis over a text file: concentration ranking and one head's patterns.
    #[command(allow_negative_numbers = true)]
    Heads(heads::HeadsArgs),
    /// Candidates at every position, pool similarity, and embedding swaps or noise.
    #[command(allow_negative_numbers = true)]
    Probe(probe::ProbeArgs),
    /// Circuit discovery on the edge graph (EAP, EAP-IG, ACDC): result.json, diagram, index.html.
    #[command(allow_negative_numbers = true)]
    Circuit(circuit::CircuitArgs),
    /// Train the model organism (planted facts, in-context retrieval), or evaluate it (--eval).
    #[command(allow_negative_numbers = true)]
    Organism(organism::OrganismArgs),
    /// ROME edits of CounterFact cases (edit, evaluate, revert), with ROME's scores.
    #[command(allow_negative_numbers = true)]
    Rome(rome::RomeArgs),
    /// MEMIT edits of CounterFact cases in batches (edit at once, evaluate, revert).
    #[command(allow_negative_numbers = true)]
    Memit(memit::MemitArgs),
    /// MEMIT and sequential ROME rewriting 1, 10, 100, all of the organism's facts of a relation: scores and damage by batch size.
    #[command(allow_negative_numbers = true)]
    EditScale(scale::ScaleArgs),
    /// Teach rewritten facts by gradient steps on chosen parameters: where gradient and change land, steps to learn, damage.
    #[command(allow_negative_numbers = true)]
    Finetune(finetune::FinetuneArgs),
    /// Run a sweep (trace, attribute-layers, rome, memit, edit-scale, finetune, patch, heads) as a Slurm job array of shards and a merge job.
    Slurm(slurm::SlurmArgs),
    /// Merge the output folders of a sharded sweep (--shard i/n) into the folder one run writes.
    Merge(merge::MergeArgs),
    /// Run a recipe: a TOML file naming a command and its options (see recipes/).
    #[command(allow_negative_numbers = true)]
    Run(recipe::RunArgs),
    /// Train a tuned lens (an affine translator per layer) and compare its per-layer KL with the logit lens's.
    #[command(allow_negative_numbers = true)]
    TunedLens(tuned::TunedLensArgs),
    /// Write DIR/index.html listing every run in DIR (command, model, date, headline figure).
    Runs(RunsArgs),
}

/// Options of `cargo xtask runs`.
#[derive(clap::Args)]
struct RunsArgs {
    /// The folder of runs (each subfolder with a result.json is one).
    #[arg(default_value = "runs")]
    dir: PathBuf,
}

/// Training and the experiments allocate and free tensors of a few MB at every step; glibc's
/// malloc returns such blocks to the kernel and faults in zeroed pages for the next (page
/// clearing was 8% of a training step's profile). mimalloc keeps them: 40 organism steps ran
/// about 11% faster (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    // Paths are the user's: relative ones resolve against the current directory (no change of
    // directory); defaults that name the repository's fixtures are absolute.
    models::set_command(models::shell_line(std::env::args().skip(1)));
    let cli = Cli::parse();
    dispatch(cli.command, cli.overwrite)
}

fn dispatch(command: Command, overwrite: bool) -> Result<()> {
    // Output paths are checked before the work starts, not after an hour of it, and the output
    // folder is this run's until it ends; an earlier run in it is refused, replaced
    // (--overwrite) or continued (--resume).
    let resume = sweep_args(&command).is_some_and(|s| s.resume);
    if resume && overwrite {
        anyhow::bail!("--resume continues the run in --out and --overwrite replaces it: give one");
    }
    let _lock = match out_dir(&command) {
        Some(out) => {
            // The organism's --out is a checkpoint folder, rewritten file by file.
            let earlier = match &command {
                Command::Organism(_) => models::Earlier::Keep,
                _ if resume => models::Earlier::Resume,
                _ if overwrite => models::Earlier::Overwrite,
                _ => models::Earlier::Refuse,
            };
            let keep: Vec<PathBuf> = match &command {
                Command::Merge(a) => a.dirs.clone(),
                _ => Vec::new(),
            };
            Some(models::claim_out_dir("--out", &out, earlier, &keep)?)
        }
        None => None,
    };
    match command {
        Command::Generate(a) => generate::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Fixtures(a) => fixtures::run(a),
        Command::Cache(a) => cache::run(a),
        Command::Patch(a) => patch::run(a),
        Command::Trace(a) => trace::trace(a),
        Command::Lens(a) => lens::lens(a),
        Command::Attribute(a) => attribute::run(a),
        Command::AttributeLayers(a) => layers::run(a),
        Command::Prepend(a) => prepend::run(a),
        Command::Steer(a) => steer::run(a),
        Command::Heads(a) => heads::run(a),
        Command::Probe(a) => probe::run(a),
        Command::Circuit(a) => circuit::run(a),
        Command::Organism(a) => organism::run(a),
        Command::Rome(a) => rome::run(a),
        Command::Memit(a) => memit::run(a),
        Command::EditScale(a) => scale::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Merge(a) => merge::merge(a),
        Command::Slurm(a) => slurm::run(a),
        Command::Run(a) => recipe::run(a, overwrite),
        Command::TunedLens(a) => tuned::run(a),
        Command::Runs(a) => {
            let index = report::write_runs_index(&a.dir)?;
            eprintln!("wrote {}", index.display());
            Ok(())
        }
    }
}

/// The sweep flags of a dataset-level command (item by item: shards, resume).
pub(crate) fn sweep_args(command: &Command) -> Option<&sweep::SweepArgs> {
    match command {
        Command::Trace(a) => Some(&a.sweep),
        Command::AttributeLayers(a) => Some(&a.sweep),
        Command::Rome(a) => Some(&a.sweep),
        Command::Memit(a) => Some(&a.sweep),
        Command::EditScale(a) => Some(&a.sweep),
        Command::Finetune(a) => Some(&a.sweep),
        Command::Patch(a) => Some(&a.sweep),
        Command::Heads(a) => Some(&a.sweep),
        _ => None,
    }
}

/// The output directory a command writes, if it writes one.
pub(crate) fn out_dir(command: &Command) -> Option<PathBuf> {
    match command {
        Command::Patch(a) => Some(a.out.clone()),
        Command::Trace(a) => Some(a.out.clone()),
        Command::Lens(a) => Some(a.out.clone()),
        Command::TunedLens(a) => Some(a.out.clone()),
        Command::Attribute(a) => Some(a.out.clone()),
        Command::AttributeLayers(a) => Some(a.out.clone()),
        Command::Prepend(a) => Some(a.out.clone()),
        Command::Steer(a) => Some(a.out.clone()),
        Command::Heads(a) => Some(a.out.clone()),
        Command::Probe(a) => Some(a.out.clone()),
        Command::Rome(a) => Some(a.out.clone()),
        Command::Memit(a) => Some(a.out.clone()),
        Command::EditScale(a) => Some(a.out.clone()),
        Command::Finetune(a) => Some(a.out.clone()),
        Command::Circuit(a) => Some(a.out.clone()),
        Command::Merge(a) => Some(a.out.clone()),
        Command::Organism(a) if !a.eval => {
            Some(a.out.clone().unwrap_or_else(crate::models::organism_dir))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a shell line into words: blanks separate, double quotes group (all the README
    /// uses).
    fn words(line: &str) -> Vec<String> {
        let (mut out, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        for c in line.chars() {
            match c {
                '"' => (quoted, any) = (!quoted, true),
                c if c.is_whitespace() && !quoted => {
                    if any {
                        out.push(std::mem::take(&mut word));
                    }
                    any = false;
                }
                c => (word, any) = (word + &c.to_string(), true),
            }
        }
        if any {
            out.push(word);
        }
        out
    }

    /// Every `cargo xtask …` line of the README parses with today's flags, so the README
    /// cannot name an option that is gone.
    #[test]
    fn readme_commands_parse() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let lines: Vec<&str> = readme
            .lines()
            .filter(|l| l.trim_start().starts_with("cargo xtask "))
            .collect();
        assert!(lines.len() >= 10, "the README shows its commands");
        for line in lines {
            let argv = words(line.trim().trim_start_matches("cargo "));
            if let Err(e) = Cli::try_parse_from(&argv) {
                panic!("README: {line}\n{e}");
            }
        }
    }
}
