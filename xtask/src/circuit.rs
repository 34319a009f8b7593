//! `cargo xtask circuit`: circuit discovery on the edge graph (EAP, EAP-IG, ACDC) over a file of
//! prompt pairs or generated dual-setting prompts; result.json, a circuit diagram, the
//! faithfulness curve, a table of the top edges and index.html.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burnlens_datasets::{DualConfig, DualForm, generate_dual, load_pairs};
use burnlens_experiments::circuit::{
    Ablation, AcdcOptions, CircuitMetric, CircuitOptions, CircuitRun, CircuitTask, Dest, EdgeGraph,
    EdgeScores, EdgeSet, FaithPoint, Source, acdc, log_steps, path_patch,
};
use burnlens_model::Gpt2Tokenizer;
use clap::Args;
use serde_json::json;

use crate::models::{self, ModelArgs, open};
use crate::report::{Heatmap, Page, Series, escape, line_plot_svg_ticks};

/// Options of `cargo xtask circuit`.
#[derive(Args)]
pub struct CircuitArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// eap, eap-ig or acdc.
    #[arg(long, default_value = "eap-ig")]
    pub method: String,
    /// Prompt pairs (.json, .jsonl or .csv with clean, corrupted, answer, foil), all of one
    /// token length.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Generated prompts instead: explicit, implicit or retrieval (the dual setting's forms).
    #[arg(long)]
    pub dual: Option<String>,
    /// Pairs to generate with --dual (those of the most common token length are kept).
    #[arg(long, default_value_t = 8, value_parser = crate::checks::positive)]
    pub n: usize,
    /// Seed of --dual.
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
    /// kl, logit-diff, normalized-logit-diff or prob-diff.
    #[arg(long, default_value = "logit-diff")]
    pub metric: String,
    /// corrupted, mean or zero.
    #[arg(long, default_value = "corrupted")]
    pub ablation: String,
    /// Interpolation steps of EAP-IG.
    #[arg(long, default_value_t = 5, value_parser = crate::checks::steps)]
    pub ig_steps: usize,
    /// Edges of the EAP / EAP-IG circuit (before pruning).
    #[arg(long, default_value_t = 10, value_parser = crate::checks::positive)]
    pub top_n: usize,
    /// ACDC's threshold.
    #[arg(long, default_value_t = 0.03, value_parser = crate::checks::non_negative_f32)]
    pub tau: f32,
    /// With --method acdc, also run ACDC at each of these thresholds (comma-separated) and
    /// plot the circuit's size and faithfulness by τ.
    #[arg(long, value_delimiter = ',', value_parser = crate::checks::non_negative_f32)]
    pub tau_sweep: Vec<f32>,
    /// Path patching to these receivers (comma-separated destinations: `a1.h0<q>`, `m2`,
    /// `logits`): for every sender, the metric with its edges into the receivers ablated.
    #[arg(long, value_delimiter = ',')]
    pub path_to: Vec<String>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// The task: pairs from a file, or generated ones of the most common length.
fn task(a: &CircuitArgs, tok: &Gpt2Tokenizer) -> Result<(CircuitTask, usize)> {
    match (&a.pairs, &a.dual) {
        (Some(path), None) => {
            let pairs: Vec<[String; 4]> = load_pairs(path)?
                .into_iter()
                .map(|p| [p.clean, p.corrupted, p.answer, p.foil])
                .collect();
            let task = CircuitTask::from_text(tok, &pairs)
                .with_context(|| format!("--pairs {}", path.display()))?;
            Ok((task, 0))
        }
        (None, Some(form)) => {
            let form = match form.as_str() {
                "explicit" => DualForm::Explicit,
                "implicit" => DualForm::Implicit,
                "retrieval" => DualForm::Retrieval,
                other => bail!("--dual {other:?}: expected explicit, implicit or retrieval"),
            };
            if a.n == 0 {
                bail!("--n 0: at least one pair");
            }
            let config = DualConfig {
                form,
                n_shots: 3,
                n_prompts: 4 * a.n,
                seed: a.seed,
            };
            let pairs: Vec<[String; 4]> = generate_dual(&config, Some(tok))?
                .into_iter()
                .map(|p| [p.prompt, p.corrupted, p.answer, p.foil])
                .collect();
            Ok(CircuitTask::from_text_of_common_length(tok, &pairs, a.n).context("--dual")?)
        }
        _ => bail!("give exactly one of --pairs FILE and --dual FORM"),
    }
}

/// Runs `cargo xtask circuit`.
pub fn run(a: CircuitArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let metric: CircuitMetric = a.metric.parse().context("--metric")?;
    let ablation: Ablation = a.ablation.parse().context("--ablation")?;
    if !a.tau_sweep.is_empty() && a.method != "acdc" {
        bail!("--tau-sweep goes with --method acdc, not {}", a.method);
    }
    let (lm, backend) = open(&a.model)?;
    let (task, dropped) = task(&a, &lm.tokenizer)?;
    eprintln!(
        "{} pairs of {} tokens{}",
        task.len(),
        task.clean().seq_len(),
        if dropped > 0 {
            format!(" ({dropped} generated pairs left out: another length, or beyond --n)")
        } else {
            String::new()
        }
    );
    let bar = crate::progress::bar(
        0,
        "circuit [{bar:40}] {pos}/{len} ({eta})",
        &format!("circuit ({})", a.method),
    );
    let options = CircuitOptions::default()
        .metric(metric)
        .ablation(ablation)
        .observer(crate::progress::observer(&bar));
    let run = CircuitRun::new(&lm.model, &task, &options)?;
    let graph = run.graph().clone();
    let (scores, circuit, kept) = match a.method.as_str() {
        "eap" | "eap-ig" => {
            let scores = if a.method == "eap" {
                run.eap()?
            } else {
                run.eap_ig(a.ig_steps)?
            };
            let circuit = scores
                .top(&graph, a.top_n)
                .context("--top-n")?
                .pruned(&graph);
            (scores, circuit, None)
        }
        "acdc" => {
            let found = acdc(&run, &AcdcOptions::new(a.tau)).context("--tau")?;
            let scores = EdgeScores::new(found.effects.iter().map(|e| e.unwrap_or(0.0)).collect());
            (scores, found.kept.clone(), Some(found.kept))
        }
        other => bail!("--method {other:?}: expected eap, eap-ig or acdc"),
    };
    // The chosen circuit, measured once: ACDC's curve is this one point.
    let circuit_metric = run.evaluate(std::slice::from_ref(&circuit))?[0];
    let circuit_point = FaithPoint {
        n_edges: circuit.count(),
        kept: circuit.count(),
        metric: circuit_metric,
        value: run.faithfulness(circuit_metric)?,
    };
    let faithfulness: Vec<FaithPoint> = if kept.is_some() {
        vec![circuit_point]
    } else {
        run.faithfulness_curve(&scores, &log_steps(graph.len()))?
    };
    let by_tau = tau_sweep(&a, &run)?;
    let receivers: Vec<Dest> = a
        .path_to
        .iter()
        .map(|r| r.trim().parse::<Dest>().context("--path-to"))
        .collect::<Result<_>>()?;
    let paths = if receivers.is_empty() {
        Vec::new()
    } else {
        path_patch(&run, &receivers).context("--path-to")?
    };
    bar.finish_and_clear();
    let ranked = scores.ranked(&graph);
    let edges: Vec<serde_json::Value> = ranked
        .iter()
        .map(|s| {
            let mut e = json!({"name": s.edge.to_string(), "score": s.score});
            if let Some(k) = &kept {
                e["kept"] = json!(k.contains(s.index));
            }
            e
        })
        .collect();
    let circuit_edges: Vec<String> = circuit
        .indices()
        .map(|i| graph.edges()[i].to_string())
        .collect();
    let result = models::result(
        "circuit",
        &lm,
        backend,
        json!({
            "method": a.method, "metric": metric, "ablation": ablation, "pairs": task.len(),
            "tokens": task.clean().seq_len(), "ig_steps": a.ig_steps, "top_n": a.top_n, "tau": a.tau,
            "graph": {"n_layers": graph.n_layers(), "n_heads": graph.n_heads(), "edges": graph.len()},
            "clean_metric": run.clean_metric(), "ablated_metric": run.ablated_metric(),
            "edges": edges,
            "circuit": {"edges": circuit_edges, "nodes": circuit.nodes(&graph)},
            "faithfulness": faithfulness,
            "faithfulness_by_tau": by_tau,
            "path_patching": (!paths.is_empty()).then(|| json!({
                "receivers": a.path_to, "senders": paths,
            })),
            "seconds_total": started.elapsed().as_secs_f64(),
        }),
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut page = Page::new("Circuit", "");
    let section = page.section("The circuit and its faithfulness");
    section.figure(
        "The circuit",
        "circuit.svg",
        diagram(&graph, &circuit, &scores),
    );
    let curve = |title: &str, x: &str, values: &[f32], ticks: &[String]| {
        line_plot_svg_ticks(
            title,
            x,
            "faithfulness",
            &[Series {
                name: "faithfulness",
                values,
                band: &[],
            }],
            ticks,
        )
    };
    if faithfulness.len() > 1 {
        let values: Vec<f32> = faithfulness.iter().map(|p| p.value).collect();
        let ticks: Vec<String> = faithfulness.iter().map(|p| p.n_edges.to_string()).collect();
        let svg = curve(
            "Faithfulness of the top-n circuit",
            "edges kept (n)",
            &values,
            &ticks,
        );
        section.figure("Faithfulness curve", "faithfulness.svg", svg);
    }
    if !by_tau.is_empty() {
        let values: Vec<f32> = by_tau.iter().map(|p| p.faithfulness).collect();
        let ticks: Vec<String> = by_tau
            .iter()
            .map(|p| format!("{} ({})", p.tau, p.edges))
            .collect();
        let svg = curve(
            "Faithfulness of ACDC's circuit by τ",
            "τ (edges kept)",
            &values,
            &ticks,
        );
        section.figure("Faithfulness by τ", "faithfulness_by_tau.svg", svg);
    }
    if !paths.is_empty() {
        let (rows, cols, values) = sender_table(&graph, &paths);
        let title = format!("Path patching to {}", a.path_to.join(", "));
        page.section("Path patching")
            .note(&format!(
                "For every sender, the {metric:?} metric with its edges into {} ablated \
                 ({ablation:?}) and every other edge kept; the clean run's is {:.4}. Cells \
                 with no edge into the receivers are left blank.",
                a.path_to.join(", "),
                run.clean_metric()
            ))
            .figure(
                "Senders",
                "path_patching.svg",
                Heatmap::new(&title, &rows, &cols, &values)
                    .axes("sender head (or MLP)", "layer", "metric")
                    .svg(),
            );
    }
    let summary = format!(
        "{} on {} pairs ({:?} metric, {:?} ablation): a circuit of {} edges, faithfulness {:.3} (clean {:.4}, ablated {:.4}).",
        a.method,
        task.len(),
        metric,
        ablation,
        circuit.count(),
        circuit_point.value,
        run.clean_metric(),
        run.ablated_metric()
    );
    let top: Vec<Vec<String>> = ranked
        .iter()
        .take(20)
        .map(|s| {
            vec![
                s.edge.to_string(),
                format!("{:.4}", s.score),
                if circuit.contains(s.index) { "yes" } else { "" }.to_string(),
            ]
        })
        .collect();
    page.section("Top edges")
        .table(&["edge", "score", "in circuit"], &top);
    page.summary(&summary);
    page.write(&a.out, &result, "")?;
    eprintln!("{summary}");
    Ok(())
}

/// ACDC's circuit at each τ of `--tau-sweep`: its size, metric, faithfulness and forwards.
#[derive(serde::Serialize)]
struct TauPoint {
    tau: f32,
    edges: usize,
    metric: f32,
    faithfulness: f32,
    forwards: usize,
}

fn tau_sweep(a: &CircuitArgs, run: &CircuitRun<'_>) -> Result<Vec<TauPoint>> {
    if a.tau_sweep.is_empty() {
        return Ok(Vec::new());
    }
    let mut taus = a.tau_sweep.clone();
    taus.sort_by(f32::total_cmp);
    taus.dedup();
    taus.iter()
        .map(|&tau| {
            let found = acdc(run, &AcdcOptions::new(tau)).context("--tau-sweep")?;
            Ok(TauPoint {
                tau,
                edges: found.kept.count(),
                metric: found.metric,
                faithfulness: run.faithfulness(found.metric)?,
                forwards: found.forwards,
            })
        })
        .collect()
}

/// Path patching's senders as a table: a row for the input (its value in the first cell) and
/// one per layer, a column per head and one for the MLP; NaN where no sender is.
fn sender_table(
    graph: &EdgeGraph,
    paths: &[burnlens_experiments::circuit::PathPatch],
) -> (Vec<String>, Vec<String>, Vec<f32>) {
    let (l, h) = (graph.n_layers(), graph.n_heads());
    let mut rows = vec!["input".to_string()];
    rows.extend((0..l).map(|i| format!("L{i}")));
    let mut cols: Vec<String> = (0..h).map(|i| format!("H{i}")).collect();
    cols.push("MLP".into());
    let mut values = vec![f32::NAN; (l + 1) * (h + 1)];
    for p in paths {
        let cell = match p.sender {
            Source::Input => 0,
            Source::Head { layer, head } => (layer + 1) * (h + 1) + head,
            Source::Mlp(layer) => (layer + 1) * (h + 1) + h,
        };
        values[cell] = p.metric;
    }
    (rows, cols, values)
}

/// The circuit drawn by layer: `input` at the bottom, `logits` at the top, each layer's heads
/// and MLP as boxes; an edge's colour is its score's sign (red positive, blue negative), its
/// width grows with |score|, and an edge into a head is marked q, k or v.
fn diagram(graph: &EdgeGraph, circuit: &EdgeSet, scores: &EdgeScores) -> String {
    let (h, l) = (graph.n_heads(), graph.n_layers());
    let (col, row, bw, bh, left) = (90.0f32, 110.0f32, 64.0f32, 26.0f32, 40.0f32);
    let width = left * 2.0 + col * (h + 1) as f32;
    let height = row * (l + 2) as f32;
    let y_of_row = |r: usize| height - row * (r as f32 + 0.5);
    let pos = |s: Source| -> (f32, f32) {
        match s {
            Source::Input => (width / 2.0, y_of_row(0)),
            Source::Head { layer, head } => (left + col * (head as f32 + 0.5), y_of_row(layer + 1)),
            Source::Mlp(layer) => (left + col * (h as f32 + 0.5), y_of_row(layer + 1)),
        }
    };
    let nodes = circuit.nodes(graph);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let max = circuit
        .indices()
        .map(|i| scores.values()[i].abs())
        .fold(0.0f32, f32::max)
        .max(1e-12);
    for i in circuit.indices() {
        let e = graph.edges()[i];
        let (x1, y1) = pos(e.src);
        let (x2, y2, mark) = match e.dst {
            Dest::Head { layer, head, qkv } => {
                let (x, y) = pos(Source::Head { layer, head });
                let dx = (qkv.index() as f32 - 1.0) * 20.0;
                (x + dx, y + bh / 2.0, Some(["q", "k", "v"][qkv.index()]))
            }
            Dest::Mlp(layer) => {
                let (x, y) = pos(Source::Mlp(layer));
                (x, y + bh / 2.0, None)
            }
            Dest::Logits => (width / 2.0, y_of_row(l + 1) + bh / 2.0, None),
        };
        let v = scores.values()[i];
        let colour = if v >= 0.0 { "#d62728" } else { "#1f77b4" };
        let w = 1.0 + 5.0 * v.abs() / max;
        // A head's output into its own layer's MLP stays in the row: drawn as an arc over the
        // boxes between them, from the head's top to the MLP's top, instead of through them.
        let same_row = (y2 - bh / 2.0 - y1).abs() < 1e-3;
        let (y1, y2) = if same_row {
            (y1 - bh / 2.0, y2 - bh)
        } else {
            (y1 - bh / 2.0, y2)
        };
        let d = if same_row {
            format!(
                "M{x1:.1} {y1:.1} Q{:.1} {:.1} {x2:.1} {y2:.1}",
                (x1 + x2) / 2.0,
                y1 - 0.6 * (row - bh)
            )
        } else {
            format!("M{x1:.1} {y1:.1} L{x2:.1} {y2:.1}")
        };
        let _ = writeln!(
            s,
            "<path class=\"edge\" d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{w:.2}\" opacity=\"0.8\"><title>{} {v:.4}</title></path>",
            escape(&e.to_string())
        );
        if let Some(m) = mark {
            let _ = writeln!(
                s,
                "<text x=\"{x2:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{m}</text>",
                y2 + 11.0
            );
        }
    }
    let mut boxes: Vec<(String, f32, f32)> =
        vec![("input".into(), pos(Source::Input).0, pos(Source::Input).1)];
    for layer in 0..l {
        for head in 0..h {
            let p = pos(Source::Head { layer, head });
            boxes.push((Source::Head { layer, head }.to_string(), p.0, p.1));
        }
        let p = pos(Source::Mlp(layer));
        boxes.push((Source::Mlp(layer).to_string(), p.0, p.1));
    }
    boxes.push(("logits".into(), width / 2.0, y_of_row(l + 1)));
    for (name, x, y) in boxes {
        let on = nodes.contains(&name);
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw}\" height=\"{bh}\" rx=\"4\" fill=\"{}\" stroke=\"{}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{}\">{name}</text>",
            x - bw / 2.0,
            y - bh / 2.0,
            if on { "#fff7e0" } else { "#f4f4f4" },
            if on { "#333" } else { "#ccc" },
            y + 4.0,
            if on { "#000" } else { "#aaa" },
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use crate::recipe::argv;
    use crate::{Cli, dispatch};
    use clap::Parser;

    /// The shipped recipe finds the organism's planted query path and draws it.
    #[test]
    fn the_retrieval_recipe_finds_the_planted_query_path() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("recipes/circuit-retrieval.toml")).unwrap();
        let out = std::env::temp_dir().join(format!("burnlens-circuit-{}", std::process::id()));
        let mut line = argv(&text).unwrap();
        let at = line.iter().position(|a| a.starts_with("--out=")).unwrap();
        line[at] = format!("--out={}", out.display());
        let at = line.iter().position(|a| a.starts_with("--model=")).unwrap();
        line[at] = format!("--model={}", root.join("fixtures/organism").display());
        dispatch(Cli::try_parse_from(&line).unwrap().command, true).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap())
                .unwrap();
        assert_eq!(json["graph"]["edges"], 479);
        let top: Vec<&str> = json["edges"].as_array().unwrap()[..3]
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let svg = std::fs::read_to_string(out.join("circuit.svg")).unwrap();
        for planted in ["input->a0.h0<v>", "a0.h0->a1.h0<q>", "a1.h0->logits"] {
            assert!(top.contains(&planted), "{planted} not in {top:?}");
            assert!(
                svg.contains(&format!("<title>{}", crate::report::escape(planted))),
                "{planted} not drawn"
            );
        }
        let curve = json["faithfulness"].as_array().unwrap();
        let last = curve.last().unwrap();
        assert_eq!(last["n_edges"], 479);
        assert!(
            (last["value"].as_f64().unwrap() - 1.0).abs() < 1e-4,
            "{last}"
        );
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.contains("circuit.svg") && html.contains("Top edges"));
        std::fs::remove_dir_all(&out).ok();
    }

    /// ACDC over a sweep of τ on the organism's query-swap task: the circuit shrinks as τ
    /// grows, and at τ = 0.03 is the run's own circuit (the planted query path); path patching
    /// to the retrieval head's query finds the planted sender, layer 0 head 0, as the one whose
    /// path moves the KL most. Both are drawn; a sweep with another method is refused.
    #[test]
    fn acdc_by_tau_and_path_patching_show_the_planted_circuit() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = std::env::temp_dir().join(format!("burnlens-acdc-tau-{}", std::process::id()));
        let model = format!("--model={}", root.join("fixtures/organism").display());
        let line = [
            "xtask",
            "circuit",
            &model,
            "--method",
            "acdc",
            "--metric",
            "kl",
            "--dual",
            "retrieval",
            "--n",
            "8",
            "--tau",
            "0.03",
            "--tau-sweep",
            "0.1,0.01,0.03",
            "--path-to",
            "a1.h0<q>",
            "--out",
        ];
        let mut line: Vec<String> = line.iter().map(|s| s.to_string()).collect();
        line.push(out.display().to_string());
        dispatch(Cli::try_parse_from(&line).unwrap().command, true).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap())
                .unwrap();
        let by_tau = json["faithfulness_by_tau"].as_array().unwrap();
        let taus: Vec<f64> = by_tau.iter().map(|p| p["tau"].as_f64().unwrap()).collect();
        assert_eq!(taus.len(), 3);
        assert!(taus.windows(2).all(|w| w[0] < w[1]), "{taus:?}");
        let edges: Vec<u64> = by_tau
            .iter()
            .map(|p| p["edges"].as_u64().unwrap())
            .collect();
        assert!(edges.windows(2).all(|w| w[0] >= w[1]), "{edges:?}");
        let circuit = json["circuit"]["edges"].as_array().unwrap();
        assert_eq!(
            edges[1] as usize,
            circuit.len(),
            "τ 0.03 is the run's own τ"
        );
        assert_eq!(circuit.len(), 3, "{circuit:?}");
        let senders = json["path_patching"]["senders"].as_array().unwrap();
        let worst = senders
            .iter()
            .max_by(|a, b| {
                a["metric"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["metric"].as_f64().unwrap())
            })
            .unwrap();
        assert_eq!(worst["sender"], "a0.h0", "{senders:?}");
        for svg in ["faithfulness_by_tau.svg", "path_patching.svg"] {
            assert!(out.join(svg).exists(), "{svg}");
        }
        let bad = [
            "xtask",
            "circuit",
            &model,
            "--method",
            "eap",
            "--dual",
            "retrieval",
            "--tau-sweep",
            "0.1",
            "--out",
        ];
        let mut bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        bad.push(out.join("refused").display().to_string());
        let e = dispatch(Cli::try_parse_from(bad).unwrap().command, false).unwrap_err();
        assert!(
            format!("{e:#}").contains("--tau-sweep goes with --method acdc"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&out).ok();
    }
}
