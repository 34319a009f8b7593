//! `cargo xtask attribute-layers`: layer gradient × activation at one hook kind in every block,
//! over a file of facts, each fact's `[tokens, layers]` table rolled up into ROME's six token
//! groups (as causal tracing is), as result.json, SVGs and index.html.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burnlens_experiments::{
    AttributedFn, TokenReduce, TokenTable, TracePrompt, group_rollup, layer_sweep,
};
use burnlens_model::HookKind;
use clap::Args;

use crate::models::{self, ModelArgs, open};
use crate::report::{self, Heatmap, Page};
use burnlens_datasets::load_facts;

/// Options of `cargo xtask attribute-layers`.
#[derive(Args)]
pub struct LayersArgs {
    #[command(flatten)]
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
    pub out: PathBuf,
}

/// Runs `cargo xtask attribute-layers`.
pub fn run(a: LayersArgs) -> Result<()> {
    let started = std::time::Instant::now();
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
    let (lm, backend) = open(&a.model)?;
    let tok = &lm.tokenizer;
    let n_layers = lm.model.config.n_layer;
    let bar = crate::progress::bar(
        facts.len() as u64,
        "attributing [{bar:40}] {pos}/{len} facts ({eta})",
        "facts attributed",
    );
    let mut prompts = Vec::new();
    let mut tables = Vec::new();
    let mut cases = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        let prompt =
            TracePrompt::new(tok, &f.prompt, &f.subject).with_context(|| format!("fact {i}"))?;
        let target_text = f.target.as_deref().context("a fact without a target")?;
        let target = tok
            .single_token(target_text)
            .with_context(|| format!("fact {i}: the target must be one token"))?;
        let foil = f
            .foil
            .as_deref()
            .map(|x| tok.single_token(x))
            .transpose()
            .with_context(|| format!("fact {i}: the foil must be one token"))?;
        let table = layer_sweep(
            &lm.model,
            &prompt.ids,
            target,
            foil,
            function,
            a.kind,
            reduce,
        )?;
        cases.push(serde_json::json!({
            "prompt": prompt, "target": target_text, "target_id": target, "foil": f.foil,
            "foil_id": foil, "table": table, "shape": [prompt.ids.len(), n_layers],
        }));
        prompts.push(prompt);
        tables.push(table);
        bar.inc(1);
    }
    bar.finish();
    let token_tables: Vec<TokenTable> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| TokenTable {
            values: t,
            n_tokens: p.ids.len(),
            n_layers,
            subject_range: p.subject_range.clone(),
        })
        .collect();
    let groups = group_rollup(&token_tables, 0.0)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let title = format!(
        "{:?} attribution at {} per layer, {} facts",
        function,
        a.kind,
        facts.len()
    );
    let mut page = Page::new("Layer attribution over facts", &title);
    report::group_figures(
        page.section(&format!(
            "Over {} facts, by ROME's token groups",
            facts.len()
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
    let cases_section = page.section(&format!("Each fact ({})", facts.len()));
    for (i, (p, t)) in prompts.iter().zip(&tables).enumerate() {
        let rows = report::token_labels(&p.tokens);
        let subject: Vec<usize> = p.subject_range.clone().collect();
        let fig_title = format!(
            "{:?} → {:?}",
            p.text,
            facts[i].target.as_deref().unwrap_or("")
        );
        cases_section.figure(
            &format!("fact {i}"),
            &format!("fact_{i}.svg"),
            Heatmap::new(&fig_title, &rows, &cols, t)
                .axes("layer", "token (subject marked)", "attribution")
                .mark_rows(&subject)
                .svg(),
        );
    }
    let result = models::result(
        "layer_attribution_sweep",
        &lm,
        backend,
        serde_json::json!({
            "facts_file": a.facts, "kind": a.kind, "attributed_fn": function, "reduce": reduce,
            "method": "layer_gradient_x_activation", "cases": cases, "groups": groups,
            "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    page.write(&a.out, &result, "")
}
