//! `cargo xtask steer`: a steering vector from two prompts' activations at a hook point, and
//! generation with and without it, side by side (terminal, result.json, index.html).

use std::path::PathBuf;

use anyhow::{Context, Result};
use burnlens_experiments::{steer_generation, steering_vector};
use burnlens_model::{GenerationConfig, HookPoint, Strategy};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::Page;

/// Options of `cargo xtask steer`.
#[derive(Args)]
pub struct SteerArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt to continue.
    #[arg(long, value_parser = crate::checks::text)]
    pub prompt: String,
    /// The prompt whose activation the vector points towards ("Love").
    #[arg(long, value_parser = crate::checks::text)]
    pub positive: String,
    /// The prompt it points away from ("Hate").
    #[arg(long, value_parser = crate::checks::text)]
    pub negative: String,
    /// The hook point, e.g. blocks.10.hook_attn_out or blocks.6.hook_resid_pre.
    #[arg(long)]
    pub point: String,
    /// The multiple of the vector added at every position.
    #[arg(long, default_value_t = 4.0, value_parser = crate::checks::finite_f32)]
    pub coefficient: f32,
    /// Tokens to generate.
    #[arg(long, default_value_t = 20, value_parser = crate::checks::positive)]
    pub max_new_tokens: usize,
    /// Sample (seeded) instead of greedy decoding, at this temperature.
    #[arg(long, value_parser = crate::checks::positive_f32)]
    pub temperature: Option<f32>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `cargo xtask steer`.
pub fn run(a: SteerArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (lm, backend) = open(&a.model)?;
    let tok = &lm.tokenizer;
    let point: HookPoint = a.point.parse()?;
    let enc = |s: &str| tok.encode(s, a.model.prepend_bos);
    let vector = steering_vector(
        &lm.model,
        &enc(&a.positive)?,
        &enc(&a.negative)?,
        point,
        None,
    )?;
    let cfg = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        strategy: match a.temperature {
            Some(temperature) => Strategy::Sample {
                temperature,
                top_k: None,
                top_p: None,
            },
            None => Strategy::Greedy,
        },
        seed: a.seed,
        eos_token_id: lm.model.config.eos_token_id.or(tok.endoftext_id()),
        ..GenerationConfig::default()
    };
    let prompt = enc(&a.prompt)?;
    let s = steer_generation(&lm.model, &prompt, &cfg, point, &vector, a.coefficient)?;
    let text = |g: &[burnlens_model::Generated]| -> Result<String> {
        Ok(format!("{}{}", a.prompt, tok.decode(&g[0].tokens)?))
    };
    let (plain, steered) = (text(&s.plain)?, text(&s.steered)?);
    println!("without: {plain}\n   with: {steered}");
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let norm = vector.clone().square().sum().sqrt().into_scalar::<f32>();
    let result = models::result(
        "steering",
        &lm,
        backend,
        serde_json::json!({
            "prompt": a.prompt, "positive": a.positive, "negative": a.negative, "point": point,
            "coefficient": a.coefficient, "vector_norm": norm, "temperature": a.temperature,
            "seed": a.seed, "plain": s.plain, "steered": s.steered,
            "plain_text": plain, "steered_text": steered,
            "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    let mut page = Page::new(
        "Steering",
        &format!(
            "{} × ({:?} − {:?}) at {point} (norm {norm:.3}), added at every position",
            a.coefficient, a.positive, a.negative
        ),
    );
    page.section("The continuation without and with the vector")
        .table(
            &["without", "with"],
            &[vec![plain.clone(), steered.clone()]],
        );
    page.write(&a.out, &result, "")
}
