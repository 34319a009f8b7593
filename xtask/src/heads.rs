//! `cargo xtask heads`: attention-head analysis over a text file, streamed one text at a time:
//! every head scored by TransformerLens's head detectors (previous-token, duplicate-token,
//! induction, and `back_K`), heads ranked by concentration, and for one head the top / bottom
//! multiples of the row average with their context, the top for a token and random samples
//! above average; a terminal table, result.json and index.html, plus the prompt that asks a
//! language model to describe the head.
//!
//! A sweep item by item (`sweep.rs`: `--shard`, `--resume`, `merge`): each text's summary
//! ([`TextScan`]: every head's bounded hit lists and sums, its detector scores) is recorded in
//! items.jsonl with its string tokens, the first text's also with every head's attention
//! pattern (its first 64 tokens) for the attention view; the report absorbs the summaries in
//! text order, which gives the numbers one scan of every text gives.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_datasets::read_texts;
use burnlens_experiments::{
    AttentionHit, DetectOptions, ErrorMeasure, HeadPattern, HeadScan, HeadScanOptions, TextScan,
};
use burnlens_hooks::{Selector, run_with_cache};
use burnlens_model::{Gpt2, Gpt2Tokenizer, HookKind, HookPoint, TokenBatch};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::llm::ChatEndpoint;
use crate::models::{self, ModelArgs, open};
use crate::report::{HeadView, Heatmap, Page, Scale, attention_view, escape};
use crate::sweep::{self, Manifest, SweepArgs};

/// Options of `cargo xtask heads` (serialised into sweep.json, but for --out and the sweep
/// flags).
#[derive(Args, serde::Serialize)]
pub struct HeadsArgs {
    #[command(flatten)]
    #[serde(flatten)]
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
    /// The head to report on (default: the most concentrated one). Giving it keeps the hit
    /// lists of this head only (every head's are kept otherwise, n × 4 hits per head and text
    /// in items.jsonl).
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
    #[serde(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    #[serde(skip)]
    pub sweep: SweepArgs,
}

/// The options `finish` reads back from sweep.json (HeadsArgs' fields by name).
#[derive(Deserialize)]
struct Saved {
    texts: PathBuf,
    layer: Option<usize>,
    head: Option<usize>,
    n: usize,
    suppress_first: bool,
    token: Option<String>,
    seed: u64,
    detect: Vec<HeadPattern>,
    exclude_bos: bool,
    exclude_current_token: bool,
    measure: String,
    llm_url: Option<String>,
    llm_model: String,
}

impl Saved {
    /// The scan's options: `token_id` is `token`'s id (computed when the sweep started).
    fn scan_options(&self, token_id: Option<u32>) -> HeadScanOptions {
        HeadScanOptions {
            n: self.n,
            suppress_first: self.suppress_first,
            token: token_id,
            seed: self.seed,
            detectors: self.detect.clone(),
            detect: DetectOptions {
                exclude_bos: self.exclude_bos,
                exclude_current_token: self.exclude_current_token,
                measure: if self.measure == "abs" {
                    ErrorMeasure::Abs
                } else {
                    ErrorMeasure::Mul
                },
            },
            focus: self.layer.zip(self.head),
        }
    }
}

/// A hit with its context (`tokens`, the text's string tokens): the text from a few tokens
/// before the key to the query, the key in square brackets and the query in angle brackets.
fn context(tokens: &[String], h: &AttentionHit) -> String {
    let start = h.key.saturating_sub(4);
    let mut s = String::new();
    for (i, t) in tokens[start..=h.query.min(tokens.len() - 1)]
        .iter()
        .enumerate()
    {
        let p = start + i;
        let _ = match (p == h.key, p == h.query) {
            (true, true) => write!(s, "<[{t}]>"),
            (true, false) => write!(s, "[{t}]"),
            (false, true) => write!(s, "<{t}>"),
            _ => write!(s, "{t}"),
        };
    }
    s
}

/// Tokens of the attention view: the first text's first this many.
const VIEW_TOKENS: usize = 64;

/// Runs `cargo xtask heads`: one text after another, each text's summary recorded in
/// items.jsonl as it is done (see `sweep.rs`: --shard, --resume), then the report from the
/// items.
pub fn run(a: HeadsArgs) -> Result<()> {
    let mut texts = read_texts(&a.texts)?;
    if let Some(n) = a.limit {
        texts.truncate(n);
    }
    if texts.is_empty() {
        bail!("{} has no texts", a.texts.display());
    }
    let mut sw = sweep::Sweep::open(&a.out, "heads", serde_json::to_value(&a)?, &a.sweep)?;
    let (lm, backend) = open(&a.model)?;
    let tok = &lm.tokenizer;
    let (n_layers, n_heads) = (lm.model.config.n_layer, lm.model.config.n_head);
    if let (Some(layer), Some(head)) = (a.layer, a.head)
        && (layer >= n_layers || head >= n_heads)
    {
        bail!(
            "--layer {layer} --head {head} is outside the model: it has {n_layers} layers of \
             {n_heads} heads"
        );
    }
    let max_len = a.max_len.min(lm.model.config.n_positions);
    let token = a
        .token
        .as_deref()
        .map(|t| tok.single_token(t))
        .transpose()
        .context("--token must be one token")?;
    let saved: Saved = serde_json::from_value(serde_json::to_value(&a)?)?;
    let scan = HeadScan::new(&lm.model, saved.scan_options(token));
    sw.begin(
        texts.len(),
        models::header("attention_heads", &lm, backend),
        json!({"n_layers": n_layers, "n_heads": n_heads, "max_len": max_len, "token_id": token}),
    )?;
    let todo = sw.todo();
    let bar = crate::progress::bar(
        todo.len() as u64,
        "scanning [{bar:40}] {pos}/{len} texts ({eta})",
        "texts scanned",
    );
    for k in todo {
        let t0 = std::time::Instant::now();
        let mut ids = tok.encode(&texts[k], a.model.prepend_bos)?;
        ids.truncate(max_len);
        let text = scan
            .scan(&lm.model, k, &ids)
            .with_context(|| format!("text {k} of {}", a.texts.display()))?;
        let mut item = json!({"tokens": tok.str_tokens(&ids)?, "scan": text});
        if k == 0 {
            item["view"] = view(&lm.model, tok, &ids)?;
        }
        item["seconds"] = json!(t0.elapsed().as_secs_f64());
        sw.record(k, item)?;
        bar.inc(1);
    }
    bar.finish();
    let items = sw.finish()?;
    sweep::write_report(sw.manifest()?, &items, &a.out, finish)
}

/// Every head's attention pattern on the first [`VIEW_TOKENS`] tokens of `ids`, for the
/// attention view: `{"tokens": [...], "heads": [[q × k weights] per layer × head]}`, or null
/// for a text of one token.
fn view(model: &Gpt2, tok: &Gpt2Tokenizer, ids: &[u32]) -> Result<Value> {
    let ids = &ids[..ids.len().min(VIEW_TOKENS)];
    if ids.len() < 2 {
        return Ok(Value::Null);
    }
    let (_, cache) = run_with_cache(
        model,
        &TokenBatch::single(ids)?,
        Selector::kind(HookKind::Pattern),
    )?;
    let (n, n_heads) = (ids.len(), model.config.n_head);
    let mut heads = Vec::new();
    for l in 0..model.config.n_layer {
        let p: Vec<f32> = cache
            .get4(HookPoint::Pattern(l))?
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("layer {l}'s pattern: {e:?}"))?;
        for h in 0..n_heads {
            heads.push(p[h * n * n..(h + 1) * n * n].to_vec());
        }
    }
    Ok(json!({"tokens": tok.str_tokens(ids)?, "heads": heads}))
}

/// What `heads` computed before the first text, as `sweep.json` keeps it.
#[derive(Deserialize)]
struct Prep {
    n_layers: usize,
    n_heads: usize,
    max_len: usize,
    token_id: Option<u32>,
}

/// One scanned text, as `items.jsonl` keeps it.
#[derive(Deserialize)]
struct Item {
    tokens: Vec<String>,
    scan: TextScan,
    #[serde(default)]
    view: Option<View>,
}

/// The first text's attention patterns.
#[derive(Deserialize)]
struct View {
    tokens: Vec<String>,
    heads: Vec<Vec<f32>>,
}

/// Writes `heads`' report (result.json, the SVGs, index.html, describe_prompt.txt) from its
/// items: what a run does at its end and `merge` does for the shards' items.
///
/// # Errors
/// An item or `sweep.json` that does not parse, no query with a key to score, the language
/// model's endpoint failing, a file that cannot be written.
pub fn finish(m: &Manifest, items: &[sweep::Item], out: &Path) -> Result<()> {
    let prep: Prep = serde_json::from_value(m.prep.clone()).context("sweep.json: heads' prep")?;
    let a: Saved = serde_json::from_value(Value::Object(m.options.clone()))
        .context("sweep.json: heads' options")?;
    let sweep::Parsed {
        items: parsed,
        seconds_total,
        ..
    } = sweep::parse_items::<Item>(items)?;
    let (n_layers, n_heads) = (prep.n_layers, prep.n_heads);
    let mut scan = HeadScan::with_shape(n_layers, n_heads, a.scan_options(prep.token_id));
    let mut tokens = std::collections::BTreeMap::new();
    let mut first_view = None;
    for (k, item) in parsed {
        if item.scan.text != k || item.tokens.len() != item.scan.ids.len() {
            bail!("items.jsonl: item {k} is not text {k}'s summary");
        }
        tokens.insert(k, item.tokens);
        first_view = first_view.or(item.view);
        scan.absorb(item.scan)
            .with_context(|| format!("items.jsonl: item {k}"))?;
    }
    let n_texts = tokens.len();
    if scan.rows_scored() == 0 {
        bail!(
            "no query had a key to score, so no head can be ranked: {} (--max-len {})",
            if a.suppress_first {
                "with --suppress-first every text needs at least 2 tokens"
            } else {
                "every text is empty"
            },
            prep.max_len
        );
    }
    let ranking = scan.ranking();
    let (layer, head) = match (a.layer, a.head) {
        (Some(l), Some(h)) => (l, h),
        _ => (ranking[0].0, ranking[0].1),
    };
    let hit_context = |h: &AttentionHit| -> Result<String> {
        let t = tokens
            .get(&h.text)
            .with_context(|| format!("items.jsonl: no text {} for a hit", h.text))?;
        Ok(context(t, h))
    };
    let mut page = Page::new(&format!("Attention heads over {n_texts} texts"), "");
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
            detectors.push(json!({
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
    if let Some(v) = first_view {
        let views: Vec<HeadView> = v
            .heads
            .into_iter()
            .enumerate()
            .map(|(i, weights)| HeadView {
                label: format!("L{}H{}", i / n_heads, i % n_heads),
                weights,
            })
            .collect();
        page.section("Attention patterns on the first text")
            .note(
                "Tokens coloured by the attention the destination token (outlined) pays them. \
                 Hover a token to make it the destination, click to pin it, and choose the \
                 head above.",
            )
            .html(&attention_view(
                "attention",
                &v.tokens,
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
            let ctx = hit_context(h)?;
            println!("{:>8.2}  {:>7.4}  {ctx:?}", h.multiple, h.weight);
            rows.push(vec![
                format!("{:.2}", h.multiple),
                format!("{:.4}", h.weight),
                ctx.clone(),
            ]);
            entries.push(json!({"hit": h, "context": ctx}));
        }
        head_section
            .html(&format!("<h3>{}</h3>\n", escape(name)))
            .table(&["multiple", "weight", "context"], &rows);
        json_lists.insert(name.replace(' ', "_"), Value::Array(entries));
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
        let _ = writeln!(prompt, "{:.1}: {}", h.multiple, hit_context(h)?);
    }
    prompt.push_str("\nIn one or two sentences, what does this head do?\n");
    sweep::write_atomic(&out.join("describe_prompt.txt"), prompt.as_bytes())?;
    let description = match ChatEndpoint::from_flags(a.llm_url.as_deref(), &a.llm_model) {
        Some(endpoint) => {
            let d = endpoint.complete(&prompt)?;
            println!("\ndescription ({}): {d}", endpoint.model);
            Some(d)
        }
        None => {
            println!("\nno --llm-url: the prompt that would describe the head:\n{prompt}");
            None
        }
    };
    let result = models::result_from(
        &m.header,
        json!({
            "texts_file": a.texts, "texts": n_texts, "max_len": prep.max_len,
            "suppress_first": a.suppress_first, "token": a.token, "seed": a.seed, "n": a.n,
            "layer": layer, "head": head, "rows": report.rows,
            "mean_max_multiple": report.mean_max_multiple, "mean_entropy": report.mean_entropy,
            "lists": json_lists,
            "detectors": detectors, "detector_texts": scan.detector_texts(),
            "detect_options": {"measure": a.measure, "exclude_bos": a.exclude_bos, "exclude_current_token": a.exclude_current_token},
            "ranking": ranking.iter().map(|(l, h, m, e)| json!({"layer": l, "head": h, "mean_max_multiple": m, "mean_entropy": e})).collect::<Vec<_>>(),
            "describe_prompt": prompt, "description": description,
            "seconds_total": seconds_total, "shard": m.shard, "n_items": m.n_items,
        }),
    );
    page.summary(&format!(
        "{n_texts} texts from {}; the head detectors' best heads, the attention patterns of the \
         first text, and head L{layer}H{head} in detail",
        a.texts.display()
    ));
    page.write(out, &result, "describe_prompt.txt")
}

/// A head detector's name (`previous_token`, `duplicate_token`, `induction`, `back_K`).
fn parse_pattern(s: &str) -> Result<HeadPattern, String> {
    s.parse()
        .map_err(|e: burnlens_experiments::Error| e.to_string())
}
