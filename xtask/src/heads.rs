//! `cargo xtask heads`: attention-head analysis over a text file, streamed one text at a time:
//! every head scored by TransformerLens's head detectors (previous-token, duplicate-token,
//! induction, and `back_K`), heads ranked by concentration, and for one head the top / bottom
//! multiples of the row average with their context, the top for a token and random samples
//! above average; a terminal table, result.json and index.html, plus the prompt that asks a
//! language model to describe the head.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burnlens_datasets::read_texts;
use burnlens_experiments::{
    AttentionHit, DetectOptions, ErrorMeasure, HeadPattern, HeadScan, HeadScanOptions,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_model::{Gpt2Tokenizer, HookKind, HookPoint, TokenBatch};
use clap::Args;

use crate::llm::ChatEndpoint;
use crate::models::{self, ModelArgs, open};
use crate::report::{HeadView, Heatmap, Page, Scale, attention_view, escape};

/// Options of `cargo xtask heads`.
#[derive(Args)]
pub struct HeadsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts: a .txt file (blank-line separated) or .jsonl / .json with a "text" field.
    #[arg(long)]
    pub texts: PathBuf,
    /// At most this many texts.
    #[arg(long, value_parser = crate::checks::positive)]
    pub limit: Option<usize>,
    /// Tokens kept per text (longer texts are cut).
    #[arg(long, default_value_t = 1024, value_parser = crate::checks::positive)]
    pub max_len: usize,
    /// The head to report on (default: the most concentrated one).
    #[arg(long, requires = "head")]
    pub layer: Option<usize>,
    /// The head's index within its layer.
    #[arg(long, requires = "layer")]
    pub head: Option<usize>,
    /// Entries per list.
    #[arg(long, default_value_t = 10, value_parser = crate::checks::positive)]
    pub n: usize,
    /// Leave the first token out as a key and renormalise the rest.
    #[arg(long)]
    pub suppress_first: bool,
    /// Also list the top multiples received by this token (e.g. " the").
    #[arg(long)]
    pub token: Option<String>,
    /// Seed of the random samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Head detectors to score every head with: TransformerLens's previous_token,
    /// duplicate_token and induction, and back_K (a head attending K tokens back).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "previous_token,duplicate_token,induction,back_2,back_3",
        value_parser = parse_pattern
    )]
    pub detect: Vec<HeadPattern>,
    /// Leave the attention to the first token out of the detector scores (TransformerLens's
    /// `exclude_bos`).
    #[arg(long)]
    pub exclude_bos: bool,
    /// Leave each token's attention to itself out of the detector scores
    /// (`exclude_current_token`).
    #[arg(long)]
    pub exclude_current_token: bool,
    /// The detectors' error measure: mul (the share of attention on the pattern,
    /// TransformerLens's default) or abs (1 − mean absolute difference).
    #[arg(long, default_value = "mul", value_parser = ["mul", "abs"])]
    pub measure: String,
    /// An OpenAI-compatible endpoint (e.g. `https://api.openai.com/v1`) to ask for a
    /// description of the head; also `BURNLENS_LLM_URL`. The key comes from
    /// `BURNLENS_LLM_API_KEY` or `OPENAI_API_KEY`. Without one, the prompt is printed.
    #[arg(long)]
    pub llm_url: Option<String>,
    /// The model name sent to the endpoint.
    #[arg(long, default_value = "gpt-4o-mini")]
    pub llm_model: String,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// A hit with its context: the text from a few tokens before the key to the query, the key
/// in square brackets and the query in angle brackets.
fn context(tok: &Gpt2Tokenizer, ids: &[u32], h: &AttentionHit) -> Result<String> {
    let start = h.key.saturating_sub(4);
    let mut s = String::new();
    for (i, t) in tok.str_tokens(&ids[start..=h.query])?.iter().enumerate() {
        let p = start + i;
        let _ = match (p == h.key, p == h.query) {
            (true, true) => write!(s, "<[{t}]>"),
            (true, false) => write!(s, "[{t}]"),
            (false, true) => write!(s, "<{t}>"),
            _ => write!(s, "{t}"),
        };
    }
    Ok(s)
}

/// Runs `cargo xtask heads`.
pub fn run(a: HeadsArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (lm, backend) = open(&a.model)?;
    let tok = &lm.tokenizer;
    let mut texts = read_texts(&a.texts)?;
    if let Some(n) = a.limit {
        texts.truncate(n);
    }
    if texts.is_empty() {
        bail!("{} has no texts", a.texts.display());
    }
    let max_len = a.max_len.min(lm.model.config.n_positions);
    let token = a
        .token
        .as_deref()
        .map(|t| tok.single_token(t))
        .transpose()
        .context("--token must be one token")?;
    let mut scan = HeadScan::new(
        &lm.model,
        HeadScanOptions {
            n: a.n,
            suppress_first: a.suppress_first,
            token,
            seed: a.seed,
            detectors: a.detect.clone(),
            detect: DetectOptions {
                exclude_bos: a.exclude_bos,
                exclude_current_token: a.exclude_current_token,
                measure: if a.measure == "abs" {
                    ErrorMeasure::Abs
                } else {
                    ErrorMeasure::Mul
                },
            },
        },
    );
    let bar = crate::progress::bar(
        texts.len() as u64,
        "scanning [{bar:40}] {pos}/{len} texts ({eta})",
        "texts scanned",
    );
    for text in &texts {
        let mut ids = tok.encode(text, a.model.prepend_bos)?;
        ids.truncate(max_len);
        scan.add(&lm.model, &ids)?;
        bar.inc(1);
    }
    bar.finish();
    if scan.rows_scored() == 0 {
        bail!(
            "no query had a key to score, so no head can be ranked: {} (--max-len {max_len})",
            if a.suppress_first {
                "with --suppress-first every text needs at least 2 tokens"
            } else {
                "every text is empty"
            }
        );
    }
    let ranking = scan.ranking();
    let n_heads = lm.model.config.n_head;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let (layer, head) = match (a.layer, a.head) {
        (Some(l), Some(h)) => (l, h),
        _ => (ranking[0].0, ranking[0].1),
    };
    let n_layers = lm.model.config.n_layer;
    if layer >= n_layers || head >= n_heads {
        bail!(
            "--layer {layer} --head {head} is outside the model: it has {n_layers} layers of \
             {n_heads} heads"
        );
    }
    let mut page = Page::new(&format!("Attention heads over {} texts", texts.len()), "");
    let mut detectors = Vec::new();
    if scan.detector_texts() > 0 {
        println!(
            "head detectors over {} texts ({}):",
            scan.detector_texts(),
            a.measure
        );
        let section = page.section("Head detectors");
        section.note(&format!(
            "TransformerLens's detection patterns (back_K: attends K tokens back), \"{}\" \
             measure, averaged over {} texts.",
            a.measure,
            scan.detector_texts()
        ));
        let name = |i: usize| format!("L{}H{}", i / n_heads, i % n_heads);
        let rows: Vec<String> = (0..n_layers).map(|l| format!("L{l}")).collect();
        let cols: Vec<String> = (0..n_heads).map(|h| format!("H{h}")).collect();
        let mut table_rows = Vec::new();
        for (pattern, table) in scan.detector_scores() {
            let mut order: Vec<usize> = (0..table.len()).collect();
            order.sort_by(|&x, &y| table[y].total_cmp(&table[x]));
            let second = order[1.min(order.len() - 1)];
            println!(
                "  {pattern:<16} best {} {:.3}, then {} {:.3}",
                name(order[0]),
                table[order[0]],
                name(second),
                table[second]
            );
            table_rows.push(vec![
                pattern.to_string(),
                name(order[0]),
                format!("{:.3}", table[order[0]]),
                format!("{} ({:.3})", name(second), table[second]),
            ]);
            let title = format!("{pattern} score");
            section.figure(
                &pattern.to_string(),
                &format!("detector_{pattern}.svg"),
                Heatmap::new(&title, &rows, &cols, &table)
                    .axes("head", "layer", "score")
                    .scale(Scale::Sequential {
                        low: 0.0,
                        high: table.iter().copied().fold(1e-6, f32::max),
                        rgb: (0x6a, 0x3d, 0x9a),
                    })
                    .svg(),
            );
            detectors.push(serde_json::json!({
                "pattern": pattern.to_string(),
                "scores": table.chunks(n_heads).collect::<Vec<_>>(),
                "best": {"layer": order[0] / n_heads, "head": order[0] % n_heads, "score": table[order[0]]},
            }));
        }
        section.table(
            &["detector", "best head", "score", "runner-up"],
            &table_rows,
        );
    }
    // The attention view: every head's pattern on the first text (its first 64 tokens).
    let view_ids: Vec<u32> = scan.texts()[0].iter().copied().take(64).collect();
    if view_ids.len() >= 2 {
        let (_, cache) = run_with_cache(
            &lm.model,
            &TokenBatch::single(&view_ids)?,
            Selector::kind(HookKind::Pattern),
        )?;
        let n = view_ids.len();
        let mut views = Vec::new();
        for l in 0..n_layers {
            let p: Vec<f32> = cache
                .get4(HookPoint::Pattern(l))?
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("layer {l}'s pattern: {e:?}"))?;
            for h in 0..n_heads {
                views.push(HeadView {
                    label: format!("L{l}H{h}"),
                    weights: p[h * n * n..(h + 1) * n * n].to_vec(),
                });
            }
        }
        let tokens = tok.str_tokens(&view_ids)?;
        page.section("Attention patterns on the first text")
            .note(
                "Tokens coloured by the attention the destination token (outlined) pays them. \
                 Hover a token to make it the destination, click to pin it, and choose the \
                 head above.",
            )
            .html(&attention_view(
                "attention",
                &tokens,
                &views,
                layer * n_heads + head,
            )?);
    }
    let report = scan.report(layer, head)?;
    let lists = [
        ("top", &report.top),
        ("bottom", &report.bottom),
        ("top for token", &report.top_for_token),
        ("random above average", &report.random_above),
    ];
    println!(
        "L{layer}H{head}: {} rows, mean max multiple {:.2}, mean entropy {:.3}",
        report.rows, report.mean_max_multiple, report.mean_entropy
    );
    let head_section = page.section(&format!("Head L{layer}H{head}"));
    head_section.note(&format!(
        "{} query rows; mean largest multiple {:.2}, mean entropy {:.3} nats. In each context \
         the key is in [brackets] and the query in <angle brackets>; multiple = weight × \
         visible keys.",
        report.rows, report.mean_max_multiple, report.mean_entropy
    ));
    let mut json_lists = serde_json::Map::new();
    for (name, hits) in lists {
        if hits.is_empty() {
            continue;
        }
        println!("\n{name}:\n{:>8}  {:>7}  context", "multiple", "weight");
        let mut entries = Vec::new();
        let mut rows = Vec::new();
        for h in hits.iter() {
            let ctx = context(tok, &scan.texts()[h.text], h)?;
            println!("{:>8.2}  {:>7.4}  {ctx:?}", h.multiple, h.weight);
            rows.push(vec![
                format!("{:.2}", h.multiple),
                format!("{:.4}", h.weight),
                ctx.clone(),
            ]);
            entries.push(serde_json::json!({"hit": h, "context": ctx}));
        }
        head_section
            .html(&format!("<h3>{}</h3>\n", escape(name)))
            .table(&["multiple", "weight", "context"], &rows);
        json_lists.insert(name.replace(' ', "_"), serde_json::Value::Array(entries));
    }
    let rows: Vec<Vec<String>> = ranking
        .iter()
        .map(|(l, h, m, e)| vec![format!("L{l}H{h}"), format!("{m:.2}"), format!("{e:.3}")])
        .collect();
    page.section("Heads by concentration")
        .table(&["head", "mean max multiple", "mean entropy"], &rows);
    // The prompt a language model would be asked to describe the head with.
    let mut prompt = format!(
        "Below are examples of where attention head L{layer}H{head} of a GPT-2 model attends. In each, the token that receives the attention is in [brackets] and the token that attends is in <angle brackets>; the number is how many times more attention than average it gets.\n\n"
    );
    for h in report.top.iter().chain(&report.random_above) {
        let _ = writeln!(
            prompt,
            "{:.1}: {}",
            h.multiple,
            context(tok, &scan.texts()[h.text], h)?
        );
    }
    prompt.push_str("\nIn one or two sentences, what does this head do?\n");
    std::fs::write(a.out.join("describe_prompt.txt"), &prompt)?;
    let description = match ChatEndpoint::from_flags(a.llm_url.as_deref(), &a.llm_model) {
        Some(endpoint) => {
            let d = endpoint.complete(&prompt)?;
            println!(
                "
description ({}): {d}",
                endpoint.model
            );
            Some(d)
        }
        None => {
            println!("\nno --llm-url: the prompt that would describe the head:\n{prompt}");
            None
        }
    };
    let result = models::result(
        "attention_heads",
        &lm,
        backend,
        serde_json::json!({
            "texts_file": a.texts, "texts": texts.len(), "max_len": max_len,
            "suppress_first": a.suppress_first, "token": a.token, "seed": a.seed, "n": a.n,
            "layer": layer, "head": head, "rows": report.rows,
            "mean_max_multiple": report.mean_max_multiple, "mean_entropy": report.mean_entropy,
            "lists": json_lists,
            "detectors": detectors, "detector_texts": scan.detector_texts(),
            "detect_options": {"measure": a.measure, "exclude_bos": a.exclude_bos, "exclude_current_token": a.exclude_current_token},
            "ranking": ranking.iter().map(|(l, h, m, e)| serde_json::json!({"layer": l, "head": h, "mean_max_multiple": m, "mean_entropy": e})).collect::<Vec<_>>(),
            "describe_prompt": prompt, "description": description,
            "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    page.summary(&format!(
        "{} texts from {}; the head detectors' best heads, the attention patterns of the first \
         text, and head L{layer}H{head} in detail",
        texts.len(),
        a.texts.display()
    ));
    page.write(&a.out, &result, "describe_prompt.txt")
}

/// A head detector's name (`previous_token`, `duplicate_token`, `induction`, `back_K`).
fn parse_pattern(s: &str) -> Result<HeadPattern, String> {
    s.parse()
        .map_err(|e: burnlens_experiments::Error| e.to_string())
}
