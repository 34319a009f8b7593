//! `cargo xtask generate`: continue a prompt (greedy, sampling or beam search).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burnlens_model::generate::EarlyStopping;
use burnlens_model::{GenerationConfig, Strategy};
use clap::Args;

use crate::models::{ModelArgs, open};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long, value_parser = crate::checks::text)]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 20, value_parser = crate::checks::positive)]
    max_new_tokens: usize,
    /// Sample instead of greedy decoding.
    #[arg(long)]
    sample: bool,
    /// Sampling temperature (implies --sample).
    #[arg(long, value_parser = crate::checks::positive_f32)]
    temperature: Option<f32>,
    /// Keep the k most probable tokens when sampling (implies --sample).
    #[arg(long, value_parser = crate::checks::positive)]
    top_k: Option<usize>,
    /// Nucleus sampling mass (implies --sample).
    #[arg(long, value_parser = crate::checks::top_p)]
    top_p: Option<f32>,
    /// Beam search with this many beams.
    #[arg(long, value_parser = crate::checks::positive)]
    num_beams: Option<usize>,
    /// Beam search early stopping: true, false or never.
    #[arg(long, default_value = "false")]
    early_stopping: String,
    /// Beam search length penalty.
    #[arg(long, default_value_t = 1.0, value_parser = crate::checks::finite_f32)]
    length_penalty: f32,
    /// Number of sequences to return.
    #[arg(long, default_value_t = 1, value_parser = crate::checks::positive)]
    num_return_sequences: usize,
    /// Lower each token's logit by this times its count among the generated tokens.
    #[arg(long, default_value_t = 0.0, value_parser = crate::checks::finite_f32)]
    frequency_penalty: f32,
    /// Do not stop at <|endoftext|>.
    #[arg(long)]
    ignore_eos: bool,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the sequences as JSON to this file (`-` for stdout): each one's token ids,
    /// text and score (docs/RESULTS.md).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Generates and prints the continuations.
pub fn run(a: GenerateArgs) -> Result<()> {
    // `--json -` writes the JSON, and only the JSON, to stdout.
    let to_stdout = a.json.as_deref() == Some(std::path::Path::new("-"));
    if let Some(path) = a.json.as_deref().filter(|_| !to_stdout) {
        crate::models::check_out_file("--json", path)?;
    }
    let (lm, _) = open(&a.model)?;
    let prompt = lm.tokenizer.encode(&a.prompt, a.model.prepend_bos)?;
    let strategy = if let Some(num_beams) = a.num_beams {
        let early_stopping = match a.early_stopping.as_str() {
            "true" => EarlyStopping::True,
            "false" => EarlyStopping::False,
            "never" => EarlyStopping::Never,
            other => bail!("--early-stopping must be true, false or never, got {other:?}"),
        };
        Strategy::Beam {
            num_beams,
            early_stopping,
            length_penalty: a.length_penalty,
        }
    } else if a.sample || a.temperature.is_some() || a.top_k.is_some() || a.top_p.is_some() {
        Strategy::Sample {
            temperature: a.temperature.unwrap_or(1.0),
            top_k: a.top_k,
            top_p: a.top_p,
        }
    } else {
        Strategy::Greedy
    };
    let cfg = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        strategy,
        num_return_sequences: a.num_return_sequences,
        frequency_penalty: a.frequency_penalty,
        eos_token_id: if a.ignore_eos {
            None
        } else {
            lm.model.config.eos_token_id.or(lm.tokenizer.endoftext_id())
        },
        seed: a.seed,
    };
    let spinner = crate::progress::bar(0, "{spinner} {msg} ({elapsed})", "generate")
        .with_message(format!("generating up to {} tokens", a.max_new_tokens));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let t = Instant::now();
    let out = lm.model.generate(&prompt, &cfg)?;
    spinner.finish_and_clear();
    let seconds = t.elapsed().as_secs_f64();
    eprintln!("generated in {seconds:.2}s");
    let mut sequences = Vec::with_capacity(out.len());
    for (i, g) in out.iter().enumerate() {
        let text = lm.tokenizer.decode(&g.tokens)?;
        if !to_stdout {
            println!(
                "[{i}] score {:.4}{}",
                g.score,
                if g.finished { " (eos)" } else { "" }
            );
            println!("{}{}", a.prompt, text);
        }
        sequences.push(serde_json::json!({
            "tokens": g.tokens,
            "text": text,
            "score": g.score,
            "finished": g.finished,
        }));
    }
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "experiment": "generate",
            "model": a.model.name(),
            "prompt": a.prompt,
            "prompt_tokens": prompt,
            "strategy": format!("{:?}", cfg.strategy),
            "max_new_tokens": cfg.max_new_tokens,
            "frequency_penalty": cfg.frequency_penalty,
            "eos_token_id": cfg.eos_token_id,
            "seed": cfg.seed,
            "sequences": sequences,
            "seconds_total": seconds,
        });
        let text = serde_json::to_string_pretty(&json)?;
        if to_stdout {
            println!("{text}");
        } else {
            std::fs::write(path, text)
                .with_context(|| format!("--json: writing {}", path.display()))?;
        }
    }
    Ok(())
}
