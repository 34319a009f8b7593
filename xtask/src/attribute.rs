//! `cargo xtask attribute`: Inseq-style gradient attribution of a continuation to its prompt,
//! as result.json (tokens, the aggregated matrix, step scores, optionally the raw values), an
//! SVG heatmap and index.html.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burnlens_experiments::{
    Aggregation, AttrMethod, AttributeOptions, AttributedFn, AttributionInput, attribute,
};
use burnlens_model::{GenerationConfig, Gpt2Tokenizer};
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{self, Heatmap, Page, Scale};

/// Options of `cargo xtask attribute`.
#[derive(Args)]
pub struct AttributeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(long, value_parser = crate::checks::text)]
    pub prompt: String,
    /// The continuation to attribute (as text following the prompt); without it the model's
    /// greedy continuation of --max-new-tokens tokens is attributed, as Inseq does.
    #[arg(long, value_parser = crate::checks::text)]
    pub target: Option<String>,
    /// Tokens to generate when no --target is given.
    #[arg(long, default_value_t = 3, value_parser = crate::checks::positive)]
    pub max_new_tokens: usize,
    /// The contrastive continuation for contrast_prob_diff / contrast_logits_diff (same
    /// number of tokens as the target), or the full alternative text (prompt included), as
    /// Inseq's `contrast_targets` takes it.
    #[arg(long, value_parser = crate::checks::text)]
    pub foil: Option<String>,
    /// The contrastive prompt for kl_divergence: the next-token distribution after the prompt
    /// is compared, step by step, with the one after this prompt followed by the same target
    /// (the two must tokenize to the same length).
    #[arg(long, value_parser = crate::checks::text)]
    pub contrast_prompt: Option<String>,
    /// saliency, input_x_gradient, integrated_gradients, layer_gradient_x_activation or
    /// layer_integrated_gradients (the layer methods attribute at --point).
    #[arg(long, default_value = "integrated_gradients")]
    pub method: String,
    /// The hook point the layer methods attribute at, e.g. blocks.0.hook_mlp_out (the output
    /// of Hugging Face's transformer.h.0.mlp).
    #[arg(long)]
    pub point: Option<String>,
    /// Integration steps (integrated gradients).
    #[arg(long, default_value_t = 64, value_parser = crate::checks::steps)]
    pub steps: usize,
    /// probability, log_probability, logit, contrast_prob_diff, contrast_logits_diff or
    /// kl_divergence (with --contrast-prompt).
    #[arg(long, default_value = "probability")]
    pub function: String,
    /// Per-step normalisation of the L2 norms: sum (Inseq's default) or max.
    #[arg(long, default_value = "sum")]
    pub normalize: String,
    /// Also write the raw attributions [tokens, steps, d_model] into result.json.
    #[arg(long)]
    pub raw: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// The ids `text` adds after `prompt` when the two are tokenized together (Inseq's way of
/// splitting a full generated text into prompt and target).
fn continuation(tok: &Gpt2Tokenizer, prompt: &[u32], full: &str, what: &str) -> Result<Vec<u32>> {
    let ids = tok.encode(full, false)?;
    if !ids.starts_with(prompt) {
        bail!(
            "the prompt's tokens change when the {what} follows it ({:?}); start the {what} with a space or punctuation",
            tok.str_tokens(&ids)?
        );
    }
    Ok(ids[prompt.len()..].to_vec())
}

/// Runs `cargo xtask attribute`.
pub fn run(a: AttributeArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let method = match a.method.as_str() {
        "saliency" => AttrMethod::Saliency,
        "input_x_gradient" => AttrMethod::InputXGradient,
        "integrated_gradients" => AttrMethod::IntegratedGradients { steps: a.steps },
        "layer_gradient_x_activation" | "layer_integrated_gradients" => {
            let point: burnlens_model::HookPoint = a
                .point
                .as_deref()
                .context("the layer methods need --point (e.g. blocks.0.hook_mlp_out)")?
                .parse()?;
            if a.method == "layer_gradient_x_activation" {
                AttrMethod::LayerGradientXActivation { point }
            } else {
                AttrMethod::LayerIntegratedGradients {
                    point,
                    steps: a.steps,
                }
            }
        }
        other => bail!(
            "unknown --method {other:?}: saliency, input_x_gradient, integrated_gradients, layer_gradient_x_activation or layer_integrated_gradients"
        ),
    };
    let function = match a.function.as_str() {
        "probability" => AttributedFn::Probability,
        "log_probability" => AttributedFn::LogProbability,
        "logit" => AttributedFn::Logit,
        "contrast_prob_diff" => AttributedFn::ContrastProbDiff,
        "contrast_logits_diff" => AttributedFn::ContrastLogitsDiff,
        "kl_divergence" => AttributedFn::KlDivergence,
        other => bail!(
            "unknown --function {other:?}: probability, log_probability, logit, contrast_prob_diff, contrast_logits_diff or kl_divergence"
        ),
    };
    if a.foil.is_some()
        && !matches!(
            function,
            AttributedFn::ContrastProbDiff | AttributedFn::ContrastLogitsDiff
        )
    {
        bail!(
            "--foil is used only by --function contrast_prob_diff or contrast_logits_diff; \
             with --function {} it would be ignored",
            a.function
        );
    }
    if a.contrast_prompt.is_some() && function != AttributedFn::KlDivergence {
        bail!(
            "--contrast-prompt is used only by --function kl_divergence; with --function {} it \
             would be ignored",
            a.function
        );
    }
    let normalize = match a.normalize.as_str() {
        "sum" => Aggregation::L2NormSumOne,
        "max" => Aggregation::L2NormMaxOne,
        other => bail!("unknown --normalize {other:?}: sum or max"),
    };
    if a.model.prepend_bos {
        bail!("attribution tokenizes as Inseq does for GPT-2, without BOS; drop --prepend-bos");
    }
    let (lm, backend) = open(&a.model)?;
    let tok = &lm.tokenizer;
    let prompt = tok.encode(&a.prompt, false)?;
    let target = match &a.target {
        Some(t) => continuation(tok, &prompt, &format!("{}{t}", a.prompt), "target")?,
        None => {
            let cfg = GenerationConfig {
                max_new_tokens: a.max_new_tokens,
                ..GenerationConfig::default()
            };
            let generated = lm.model.generate(&prompt, &cfg)?;
            generated
                .first()
                .map(|g| g.tokens.clone())
                .context("generation returned nothing")?
        }
    };
    let foil = if function == AttributedFn::KlDivergence {
        let c = a
            .contrast_prompt
            .as_deref()
            .context("kl_divergence needs --contrast-prompt")?;
        let seq = tok.encode(c, false)?;
        if seq.len() != prompt.len() {
            bail!(
                "the contrastive prompt is {} tokens and the prompt {}: the KL divergence compares them position by position",
                seq.len(),
                prompt.len()
            );
        }
        Some(seq.into_iter().chain(target.iter().copied()).collect())
    } else {
        // The foil is the alternative continuation, or the full alternative text (prompt and
        // continuation) as Inseq takes `contrast_targets`.
        a.foil
            .as_ref()
            .map(|f| {
                let full = if f.starts_with(&a.prompt) {
                    f.clone()
                } else {
                    format!("{}{f}", a.prompt)
                };
                continuation(tok, &prompt, &full, "foil")
            })
            .transpose()?
    };
    let baseline = tok
        .endoftext_id()
        .context("the vocabulary has no <|endoftext|> for the integrated-gradients baseline")?;
    let input = AttributionInput {
        prompt: &prompt,
        target: &target,
        foil: foil.as_deref(),
    };
    let bar = crate::progress::bar(
        target.len() as u64,
        "attributing [{bar:40}] {pos}/{len} target tokens ({eta})",
        "target tokens attributed",
    );
    let options = AttributeOptions::new(method, baseline)
        .function(function)
        .observer(crate::progress::observer(&bar));
    let attr = attribute(&lm.model, &input, &options)?;
    bar.finish_and_clear();
    let matrix = attr.aggregate(normalize);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let tokens = tok.str_tokens(&attr.tokens)?;
    let target_tokens = tok.str_tokens(&target)?;
    let rows: Vec<String> = report::token_labels(&tokens);
    let cols: Vec<String> = report::token_labels(&target_tokens);
    let title = format!("{} of {} per target token", a.method, a.function);
    let svg = Heatmap::new(&title, &rows, &cols, &matrix)
        .axes(
            "target token (attributed step)",
            "source token",
            "share of the step's attribution",
        )
        .scale(Scale::Sequential {
            low: 0.0,
            high: matrix
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(1e-6, f32::max),
            rgb: (0xb3, 0x00, 0x00),
        })
        .svg();
    let mut result = models::result(
        "feature_attribution",
        &lm,
        backend,
        serde_json::json!({
            "method": method, "attributed_fn": function, "aggregation": normalize,
            "prompt": a.prompt, "target": a.target, "foil": a.foil,
            "contrast_prompt": a.contrast_prompt,
            "source_tokens": tokens[..attr.prompt_len], "target_tokens": target_tokens,
            "token_ids": attr.tokens, "foil_ids": foil, "baseline_id": baseline,
            "attribution": matrix, "shape": [attr.tokens.len(), attr.n_steps],
            "attributed_values": attr.attributed_values, "step_scores": attr.step_scores, "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    if a.raw {
        result["raw"] = serde_json::json!(attr.raw);
        result["raw_shape"] = serde_json::json!([attr.tokens.len(), attr.n_steps, attr.d_model]);
    }
    let mut page = Page::new(
        "Feature attribution",
        &format!("{:?} → {:?}", a.prompt, target_tokens.concat()),
    );
    page.section("Attribution of each target token to the tokens before it")
        .note(
            "Each column is one generation step: the L2 norm of each source token's \
             attribution, normalised per step (empty cells: tokens after the step).",
        )
        .figure("attribution", "attribution.svg", svg);
    page.write(&a.out, &result, "")
}
