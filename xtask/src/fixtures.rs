//! `cargo xtask fixtures`: the fixtures Rust makes (random-weight checkpoints with the shapes
//! of GPT-2 small, medium, large or XL).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_model::{BackendKind, Gpt2Config, Gpt2Tokenizer};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct FixturesArgs {
    /// Write a random-weight checkpoint with GPT-2 small's shapes (HF layout) into DIR.
    /// Used by loading tests and benchmarks; never committed.
    #[arg(long, value_name = "DIR", conflicts_with = "gpt2_random")]
    gpt2_small_random: Option<PathBuf>,
    /// Write a random-weight checkpoint with the shapes of --size into DIR.
    #[arg(long, value_name = "DIR")]
    gpt2_random: Option<PathBuf>,
    /// The size of --gpt2-random: small (124M parameters, 0.5 GB), medium (355M, 1.4 GB),
    /// large (774M, 3.1 GB) or xl (1.56B, 6.2 GB).
    #[arg(long, default_value = "small", value_parser = ["small", "medium", "large", "xl"])]
    size: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Writes the fixtures asked for.
pub fn run(a: FixturesArgs) -> Result<()> {
    let (dir, size) = match (a.gpt2_small_random, a.gpt2_random) {
        (Some(dir), None) => (dir, "small"),
        (None, Some(dir)) => (dir, a.size.as_str()),
        _ => bail!("nothing to do: pass --gpt2-random DIR [--size …] (or --gpt2-small-random DIR)"),
    };
    let config = Gpt2Config::gpt2_size(size).context("--size")?;
    let bar =
        ProgressBar::new(3).with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    bar.set_message(format!("initialising GPT-2 {size} (random weights)"));
    let device = BackendKind::Flex.device()?;
    device.seed(a.seed);
    let model = config.init(&device);
    bar.inc(1);
    bar.set_message("writing config.json and model.safetensors");
    model.save_pretrained(&dir)?;
    bar.inc(1);
    bar.set_message("writing the GPT-2 tokenizer");
    let bpe = Path::new("fixtures/gpt2-bpe");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(bpe.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
    }
    Gpt2Tokenizer::from_dir(bpe)?.save(&dir.join("tokenizer.json"))?;
    bar.finish_with_message(format!(
        "wrote {} ({} parameters)",
        dir.display(),
        model.num_params()
    ));
    Ok(())
}
