//! `cargo xtask fixtures`: the fixtures Rust makes (a random-weight GPT-2 small checkpoint).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_model::{BackendKind, Gpt2Config, Gpt2Tokenizer};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct FixturesArgs {
    /// Write a random-weight checkpoint with GPT-2 small's shapes (HF layout) into DIR.
    /// Used by loading tests and benchmarks; never committed.
    #[arg(long, value_name = "DIR")]
    gpt2_small_random: Option<PathBuf>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Writes the fixtures asked for.
pub fn run(a: FixturesArgs) -> Result<()> {
    let Some(dir) = a.gpt2_small_random else {
        bail!("nothing to do: pass --gpt2-small-random DIR");
    };
    let bar =
        ProgressBar::new(3).with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    bar.set_message("initialising GPT-2 small (random weights)");
    let device = BackendKind::Flex.device()?;
    device.seed(a.seed);
    let model = Gpt2Config::gpt2_small().init(&device);
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
