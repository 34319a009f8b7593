//! `cargo xtask attribute-layers`: layer gradient × activation at one hook kind in every block,
//! over a file of facts, each fact's `[tokens, layers]` table rolled up into ROME's six token
//! groups (as causal tracing is), as result.json, SVGs and index.html.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burnlens_experiments::{
    AttributedFn, TokenReduce, TokenTable, TracePrompt, group_rollup, layer_sweep,
};
use burnlens_model::HookKind;
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{self, Heatmap, Page};
use crate::sweep::{self, Manifest, Sweep, SweepArgs};
use burnlens_datasets::load_facts;

/// Options of `cargo xtask attribute-layers` (serialised into sweep.json, but for --out and
/// the sweep flags).
#[derive(Args, serde::Serialize)]
pub struct LayersArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// Counterfact-tracing rows (.json/.jsonl/.csv: prompt, subject, target_true, target_false)
    /// or known facts (.json/.jsonl: prompt, subject, attribute).
    #[arg(long)]
    pub facts: PathBuf,
    /// At most this many facts.
    #[arg(long, value_parser = crate::checks::positive)]
    pub limit: Option<usize>,
    /// The hook kind attributed in every block: mlp_out, attn_out, resid_post, …
    #[arg(long, default_value = "mlp_out")]
    pub kind: HookKind,
    /// probability, log_probability, logit, contrast_prob_diff or contrast_logits_diff (the
    /// contrast ones need target_false); default: contrast_prob_diff when the facts have
    /// foils, else probability.
    #[arg(long)]
    pub function: Option<String>,
    /// Per-token reduction of the hidden dimension: sum (signed) or l2.
    #[arg(long, default_value = "sum")]
    pub reduce: String,
    /// Output directory.
    #[arg(long)]
    #[serde(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    #[serde(skip)]
    pub sweep: SweepArgs,
}

/// Runs `cargo xtask attribute-layers`: one fact after another, each recorded in items.jsonl
/// as it is done (see `sweep.rs`: --shard, --resume), then the report from the items.
pub fn run(a: LayersArgs) -> Result<()> {
    let mut facts = load_facts(&a.facts)?;
    if let Some(n) = a.limit {
        facts.truncate(n);
    }
    if facts.is_empty() {
        bail!("{} has no facts", a.facts.display());
    }
    let has_foils = facts.iter().all(|f| f.foil.is_some());
    let function = match a.function.as_deref() {
        None if has_foils => AttributedFn::ContrastProbDiff,
        None | Some("probability") => AttributedFn::Probability,
        Some("log_probability") => AttributedFn::LogProbability,
        Some("logit") => AttributedFn::Logit,
        Some("contrast_prob_diff") => AttributedFn::ContrastProbDiff,
        Some("contrast_logits_diff") => AttributedFn::ContrastLogitsDiff,
        Some(other) => bail!("unknown --function {other:?}"),
    };
    if function.is_contrastive() && !has_foils {
        bail!("{function:?} needs facts with a target_false (counterfact-tracing rows)");
    }
    let reduce = match a.reduce.as_str() {
        "sum" => TokenReduce::Sum,
        "l2" => TokenReduce::L2Norm,
        other => bail!("unknown --reduce {other:?}: sum or l2"),
    };
    let mut sweep = Sweep::open(
        &a.out,
        "attribute-layers",
        serde_json::to_value(&a)?,
        &a.sweep,
    )?;
    let (lm, backend) = open(&a.model)?;
    let tok = &lm.tokenizer;
    let n_layers = lm.model.config.n_layer;
    sweep.begin(
        facts.len(),
        models::header("layer_attribution_sweep", &lm, backend),
        serde_json::json!({
            "attributed_fn": function, "reduce": reduce, "kind": a.kind, "n_layers": n_layers,
        }),
    )?;
    let todo = sweep.todo();
    let bar = crate::progress::bar(
        todo.len() as u64,
        "attributing [{bar:40}] {pos}/{len} facts ({eta})",
        "facts attributed",
    );
    for k in todo {
        let f = &facts[k];
        let t0 = std::time::Instant::now();
        let prompt =
            TracePrompt::new(tok, &f.prompt, &f.subject).with_context(|| format!("fact {k}"))?;
        let target_text = f.target.as_deref().context("a fact without a target")?;
        let target = tok
            .single_token(target_text)
            .with_context(|| format!("fact {k}: the target must be one token"))?;
        let foil = f
            .foil
            .as_deref()
            .map(|x| tok.single_token(x))
            .transpose()
            .with_context(|| format!("fact {k}: the foil must be one token"))?;
        let table = layer_sweep(
            &lm.model,
            &prompt.ids,
            target,
            foil,
            function,
            a.kind,
            reduce,
        )
        .with_context(|| format!("fact {k}"))?;
        sweep.record(
            k,
            serde_json::json!({
                "prompt": prompt, "target": target_text, "target_id": target, "foil": f.foil,
                "foil_id": foil, "table": table, "shape": [prompt.ids.len(), n_layers],
                "seconds": t0.elapsed().as_secs_f64(),
            }),
        )?;
        bar.inc(1);
    }
    bar.finish();
    let items = sweep.finish()?;
    sweep::write_report(sweep.manifest()?, &items, &a.out, finish)
}

/// What `attribute-layers` computed before the first fact, as `sweep.json` keeps it.
#[derive(serde::Deserialize)]
struct Prep {
    attributed_fn: serde_json::Value,
    reduce: serde_json::Value,
    kind: String,
    n_layers: usize,
}

/// One attributed fact, as `items.jsonl` keeps it.
#[derive(serde::Deserialize)]
struct Item {
    prompt: TracePrompt,
    target: String,
    table: Vec<f32>,
}

/// Writes `attribute-layers`' report (result.json, the SVGs, index.html) from its items: what
/// a run does at its end and `merge` does for the shards' items.
///
/// # Errors
/// An item or `sweep.json` that does not parse, a file that cannot be written.
pub fn finish(m: &Manifest, items: &[sweep::Item], out: &Path) -> Result<()> {
    let prep: Prep =
        serde_json::from_value(m.prep.clone()).context("sweep.json: attribute-layers' prep")?;
    let n_layers = prep.n_layers;
    let facts_file = m.options.get("facts").cloned().unwrap_or_default();
    let sweep::Parsed {
        items: parsed,
        cases,
        seconds_total,
    } = sweep::parse_items::<Item>(items)?;
    let token_tables: Vec<TokenTable> = parsed
        .iter()
        .map(|(_, it)| TokenTable {
            values: &it.table,
            n_tokens: it.prompt.ids.len(),
            n_layers,
            subject_range: it.prompt.subject_range.clone(),
        })
        .collect();
    let groups = group_rollup(&token_tables, 0.0)?;
    let function = prep.attributed_fn.as_str().unwrap_or("").to_string();
    let title = format!(
        "{function} attribution at {} per layer, {} facts",
        prep.kind,
        items.len()
    );
    let mut page = Page::new("Layer attribution over facts", &title);
    report::group_figures(
        page.section(&format!(
            "Over {} facts, by ROME's token groups",
            items.len()
        )),
        "groups",
        "attribution",
        &title,
        "mean attribution",
        &groups,
        n_layers,
        None,
    );
    let cols: Vec<String> = (0..n_layers).map(|l| l.to_string()).collect();
    let cases_section = page.section(&format!("Each fact ({})", items.len()));
    for (k, it) in &parsed {
        let p = &it.prompt;
        let rows = report::token_labels(&p.tokens);
        let subject: Vec<usize> = p.subject_range.clone().collect();
        let fig_title = format!("{:?} → {:?}", p.text, it.target);
        cases_section.figure(
            &format!("fact {k}"),
            &format!("fact_{k}.svg"),
            Heatmap::new(&fig_title, &rows, &cols, &it.table)
                .axes("layer", "token (subject marked)", "attribution")
                .mark_rows(&subject)
                .svg(),
        );
    }
    let result = models::result_from(
        &m.header,
        serde_json::json!({
            "facts_file": facts_file, "kind": prep.kind, "attributed_fn": prep.attributed_fn,
            "reduce": prep.reduce, "method": "layer_gradient_x_activation", "cases": cases,
            "groups": groups, "seconds_total": seconds_total, "shard": m.shard,
            "n_items": m.n_items,
        }),
    );
    page.write(out, &result, "")
}
