//! Circuit discovery on the edge graph: the graph's size in closed form, edge patching's
//! extremes (every edge kept is the clean run, none the ablated run), EAP's scores summing per
//! destination to the gradient times the residual difference computed from hook caches, and
//! the organism's planted retrieval circuit found by EAP-IG.

use crate::common::{root, tiny};

use burnlens_datasets::{DualConfig, DualForm, generate_dual};
use burnlens_experiments::circuit::{
    Ablation, CircuitMetric, CircuitOptions, CircuitRun, CircuitTask, Dest, EdgeGraph, EdgeSet,
    Source,
};
use burnlens_hooks::{HookSet, Selector, run_with_cache};
use burnlens_metrics::{last_position, logit_diff};
use burnlens_model::{BackendKind, Gpt2, HookPoint, LoadedModel, load};

#[test]
fn the_graph_has_eap_igs_edges() {
    // GPT-2 small: 32,491 edges (EAP-IG's count).
    assert_eq!(EdgeGraph::new(12, 12).len(), 32_491);
    for (l, h) in [(1, 1), (2, 4), (4, 4), (12, 12), (24, 16)] {
        let g = EdgeGraph::new(l, h);
        // Count every (source, destination) pair the residual stream joins, by brute force.
        let mut srcs = vec![Source::Input];
        let mut dsts = vec![Dest::Logits];
        for layer in 0..l {
            srcs.push(Source::Mlp(layer));
            dsts.push(Dest::Mlp(layer));
            for head in 0..h {
                srcs.push(Source::Head { layer, head });
                for qkv in burnlens_experiments::circuit::Qkv::ALL {
                    dsts.push(Dest::Head { layer, head, qkv });
                }
            }
        }
        let brute = srcs
            .iter()
            .flat_map(|&s| dsts.iter().map(move |&d| (s, d)))
            .filter(|&(s, d)| g.reaches(s, d))
            .count();
        assert_eq!(g.len(), brute, "{l} layers × {h} heads");
        assert_eq!(g.len(), EdgeGraph::edge_count(l, h));
        assert_eq!(g.n_sources(), srcs.len());
        assert_eq!(g.n_dests(), dsts.len());
    }
    let g = EdgeGraph::new(2, 4);
    for name in [
        "a0.h3->a1.h2<q>",
        "input->a1.h0<v>",
        "m0->logits",
        "a1.h0->m1",
    ] {
        assert_eq!(g.edges()[g.find(name).unwrap()].to_string(), name);
    }
    for (bad, says) in [
        ("a1.h0->a0.h1<q>", "writes after"),
        ("m1->a1.h0<k>", "writes after"),
        ("a0.h9->m1", "4 heads"),
        ("a0.h0->a1.h0", "destination"),
        ("input-m0", "source->destination"),
    ] {
        let e = g.find(bad).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains(says), "{bad}: {e}");
    }
}

/// Pairs of random token ids of one length on the tiny fixture (vocabulary 641).
fn tiny_task(n: usize, t: usize) -> CircuitTask {
    let ids =
        |seed: u32| -> Vec<u32> { (0..t as u32).map(|i| (seed * 97 + i * 31) % 641).collect() };
    CircuitTask::new(
        (0..n as u32).map(ids).collect(),
        (0..n as u32).map(|i| ids(i + 50)).collect(),
        (0..n as u32).map(|i| 3 + i).collect(),
        (0..n as u32).map(|i| 400 + i).collect(),
    )
    .unwrap()
}

fn mean_ld(model: &Gpt2, task: &CircuitTask, corrupted: bool) -> f32 {
    let batch = if corrupted {
        task.corrupted()
    } else {
        task.clean()
    };
    let logits = model.logits(batch).unwrap();
    logit_diff(last_position(logits), task.answer(), task.foil())
        .unwrap()
        .mean()
        .into_scalar()
}

#[test]
fn edge_patching_keeps_the_clean_run_and_ablates_to_the_corrupted_one() {
    let device = BackendKind::Flex.device().unwrap();
    let model = tiny(&device);
    let task = tiny_task(3, 6);
    let run = CircuitRun::new(&model, &task, &CircuitOptions::default().batch_rows(4)).unwrap();
    let g = run.graph();
    let (clean, corrupted) = (mean_ld(&model, &task, false), mean_ld(&model, &task, true));
    assert!((clean - corrupted).abs() > 1e-3, "the pairs differ");
    let some = EdgeSet::from_names(g, &["input->a0.h1<v>", "a0.h1->logits", "m1->logits"]).unwrap();
    // Three sets in one forward (4 rows per forward: one set of 3 pairs at a time) and each
    // alone give the same numbers.
    let together = run
        .evaluate(&[EdgeSet::full(g), EdgeSet::empty(g), some.clone()])
        .unwrap();
    assert!(
        (together[0] - clean).abs() <= 1e-5,
        "{together:?} vs {clean}"
    );
    assert!(
        (together[1] - corrupted).abs() <= 1e-5,
        "{together:?} vs {corrupted}"
    );
    let wide = CircuitRun::new(&model, &task, &CircuitOptions::default().batch_rows(64)).unwrap();
    let batched = wide
        .evaluate(&[EdgeSet::full(g), EdgeSet::empty(g), some])
        .unwrap();
    for (a, b) in together.iter().zip(&batched) {
        assert!((a - b).abs() <= 1e-5, "{together:?} vs {batched:?}");
    }
    assert_eq!(run.clean_metric(), together[0]);
    assert!((run.ablated_metric() - corrupted).abs() <= 1e-5);
    // Zero ablation of every edge: every destination reads only the position embeddings (and
    // biases): the same as a run whose token embeddings are zero.
    let zero = CircuitRun::new(
        &model,
        &task,
        &CircuitOptions::default().ablation(Ablation::Zero),
    )
    .unwrap();
    let mut hooks = HookSet::new();
    hooks
        .intervene(HookPoint::Embed, burnlens_hooks::Intervention::zero())
        .unwrap();
    let logits = hooks.run(&model, task.clean()).unwrap();
    let zeroed: f32 = logit_diff(last_position(logits), task.answer(), task.foil())
        .unwrap()
        .mean()
        .into_scalar();
    // Not equal: with zero token embeddings the heads still write; with every edge ablated
    // their outputs are replaced by zero too. Patching only the input's edges is that run.
    let input_only: Vec<usize> = (0..g.len())
        .filter(|&i| g.edges()[i].src != Source::Input)
        .collect();
    let mut set = EdgeSet::empty(g);
    for i in input_only {
        set.set(i, true);
    }
    let v = zero.evaluate(&[set]).unwrap()[0];
    assert!((v - zeroed).abs() <= 1e-4, "{v} vs {zeroed}");
}

#[test]
fn eap_scores_sum_per_destination_to_gradient_times_residual_difference() {
    let device = BackendKind::Flex.device().unwrap();
    let model = tiny(&device);
    let task = tiny_task(2, 5);
    let run = CircuitRun::new(&model, &task, &CircuitOptions::default()).unwrap();
    let g = run.graph().clone();
    let scores = run.eap().unwrap();
    // Independently: the gradient of the mean logit difference at the destinations' inputs
    // on the clean run, and each destination's input in the clean and corrupted runs, from
    // hook caches. With corrupted ablation every source differs and the position embeddings
    // and biases do not, so Σ_u score(u→v) = ∇_v M · (input_v(corrupted) − input_v(clean)).
    let last = g.n_layers() - 1;
    let points = [
        HookPoint::ResidPre(1),
        HookPoint::ResidMid(1),
        HookPoint::ResidPost(last),
    ];
    let (_, clean) =
        run_with_cache(&model, task.clean(), Selector::points(points).unwrap()).unwrap();
    let (_, corr) =
        run_with_cache(&model, task.corrupted(), Selector::points(points).unwrap()).unwrap();
    let mut hooks = HookSet::new();
    hooks.grad(
        Selector::points([
            HookPoint::QInput(1),
            HookPoint::MlpIn(1),
            HookPoint::ResidPost(last),
        ])
        .unwrap(),
    );
    let (_, grads) = hooks
        .run_with_grads(&model, task.clean(), |logits| {
            logit_diff(last_position(logits), task.answer(), task.foil())
                .unwrap()
                .mean()
        })
        .unwrap();
    let dot = |a: Vec<f32>, b: Vec<f32>| -> f32 { a.iter().zip(&b).map(|(x, y)| x * y).sum() };
    let diff = |p: HookPoint| -> Vec<f32> {
        let (c, k) = (
            clean.get(p).unwrap().to_vec(),
            corr.get(p).unwrap().to_vec(),
        );
        k.iter().zip(&c).map(|(a, b)| a - b).collect()
    };
    let sum_into = |d: Dest| -> f32 {
        g.edges()
            .iter()
            .zip(scores.values())
            .filter(|(e, _)| e.dst == d)
            .map(|(_, s)| s)
            .sum()
    };
    let close = |a: f32, b: f32, what: &str| {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{what}: {a} vs {b}"
        );
    };
    close(
        sum_into(Dest::Logits),
        dot(
            grads.get(HookPoint::ResidPost(last)).unwrap().to_vec(),
            diff(HookPoint::ResidPost(last)),
        ),
        "logits",
    );
    close(
        sum_into(Dest::Mlp(1)),
        dot(
            grads.get(HookPoint::MlpIn(1)).unwrap().to_vec(),
            diff(HookPoint::ResidMid(1)),
        ),
        "m1",
    );
    // Head 2's query input: its slice of hook_q_input's gradient [batch, pos, head, d].
    let gq = grads.get4(HookPoint::QInput(1)).unwrap();
    let [b, t, _, d] = gq.dims();
    let gq2 = gq.slice([0..b, 0..t, 2..3, 0..d]).reshape([b * t * d]);
    let gq2: Vec<f32> = gq2.into_data().try_into_vec().unwrap();
    close(
        sum_into(Dest::Head {
            layer: 1,
            head: 2,
            qkv: burnlens_experiments::circuit::Qkv::Q,
        }),
        dot(gq2, diff(HookPoint::ResidPre(1))),
        "a1.h2<q>",
    );
}

fn organism() -> LoadedModel {
    let device = BackendKind::Flex.device().unwrap();
    load(root().join("fixtures/organism").to_str().unwrap(), &device).unwrap()
}

/// Retrieval prompts of the organism ("… Name is from Country. … Name is from") with the
/// query's name swapped for another name of the context, all of the most common length.
fn retrieval_task(lm: &LoadedModel, n: usize) -> CircuitTask {
    let prompts = generate_dual(
        &DualConfig {
            form: DualForm::Retrieval,
            n_shots: 3,
            n_prompts: 4 * n,
            seed: 11,
        },
        Some(&lm.tokenizer),
    )
    .unwrap();
    let pairs: Vec<[String; 4]> = prompts
        .into_iter()
        .map(|p| [p.prompt, p.corrupted, p.answer, p.foil])
        .collect();
    CircuitTask::from_text_of_common_length(&lm.tokenizer, &pairs, n)
        .unwrap()
        .0
}

#[test]
fn eap_ig_finds_the_planted_query_path_on_the_organism() {
    let lm = organism();
    let task = retrieval_task(&lm, 8);
    let run = CircuitRun::new(&lm.model, &task, &CircuitOptions::default()).unwrap();
    let g = run.graph();
    let scores = run.eap_ig(5).unwrap();
    let ranked = scores.ranked(g);
    let top: Vec<String> = ranked
        .iter()
        .take(8)
        .map(|s| format!("{} {:.3}", s.edge, s.score))
        .collect();
    eprintln!("{} pairs; top edges: {top:#?}", task.len());
    let circuit = scores.top(g, 10).unwrap().pruned(g);
    let m = run.evaluate(std::slice::from_ref(&circuit)).unwrap()[0];
    let f = run.faithfulness(m).unwrap();
    eprintln!("circuit {:?}: faithfulness {f}", circuit.nodes(g));
    // Only the query differs: the query path and the copy's output, not the key path.
    let names: Vec<String> = ranked.iter().take(3).map(|s| s.edge.to_string()).collect();
    for planted in ["input->a0.h0<v>", "a0.h0->a1.h0<q>", "a1.h0->logits"] {
        assert!(
            names.contains(&planted.to_string()),
            "{planted} not in {names:?}"
        );
    }
    assert!(f >= 0.8, "faithfulness {f}");
    // The KL metric is 0 on the clean run and positive with everything ablated.
    let kl = CircuitRun::new(
        &lm.model,
        &task,
        &CircuitOptions::default().metric(CircuitMetric::Kl),
    )
    .unwrap();
    assert!(
        kl.clean_metric().abs() < 1e-5 && kl.ablated_metric() > 0.1,
        "{} {}",
        kl.clean_metric(),
        kl.ablated_metric()
    );
}

/// The query's statement rewritten to another name, which appears nowhere else in the
/// prompt: "A is from X. D is from Y. C is from Z. B is from" — the query matches no key.
fn statement_swapped(lm: &LoadedModel, n: usize) -> CircuitTask {
    let base = retrieval_task(lm, 4 * n);
    let decode = |ids: &[u32]| lm.tokenizer.decode(ids).unwrap();
    let t = base.clean().seq_len();
    let prompts: Vec<String> = (0..base.len())
        .map(|i| decode(&base.clean().ids()[i * t..(i + 1) * t]))
        .collect();
    let query = |p: &str| -> String {
        let last = p.rsplit(". ").next().unwrap();
        last.trim_end_matches(" is from").to_string()
    };
    let names: Vec<String> = prompts.iter().map(|p| query(p)).collect();
    let len = |s: &str| lm.tokenizer.encode(s, false).unwrap().len();
    let mut pairs = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let q = &names[i];
        let statement = format!("{q} is from");
        let Some(other) = names.iter().find(|o| {
            !p.contains(o.as_str()) && len(&p.replacen(&statement, &format!("{o} is from"), 1)) == t
        }) else {
            continue;
        };
        let corrupted = p.replacen(&statement, &format!("{other} is from"), 1);
        let answer = lm.tokenizer.decode(&[base.answer()[i]]).unwrap();
        let foil = lm.tokenizer.decode(&[base.foil()[i]]).unwrap();
        pairs.push([p.clone(), corrupted, answer, foil]);
        if pairs.len() == n {
            break;
        }
    }
    CircuitTask::from_text(&lm.tokenizer, &pairs).unwrap()
}

fn top_edges(run: &CircuitRun<'_>, k: usize) -> (Vec<String>, f32) {
    let g = run.graph();
    let scores = run.eap_ig(5).unwrap();
    let ranked = scores.ranked(g);
    let shown: Vec<String> = ranked
        .iter()
        .take(k + 4)
        .map(|s| format!("{} {:.3}", s.edge, s.score))
        .collect();
    let circuit = scores.top(g, 10).unwrap().pruned(g);
    let f = run
        .faithfulness(run.evaluate(&[circuit]).unwrap()[0])
        .unwrap();
    eprintln!("top edges {shown:#?}; faithfulness of the top 10: {f}");
    (
        ranked.iter().take(k).map(|s| s.edge.to_string()).collect(),
        f,
    )
}

/// With the query's statement rewritten (the query then matches no key), the key path carries
/// the difference and the query path does not. Unlike the other two corruptions, a route that
/// was not planted also does: `m2->logits` ranks first (measured: -15.4, then the key path's
/// -11.3 and -10.1), and the circuit needs more edges — faithfulness 0.43 with the top 10,
/// 0.75 with 40, 0.95 with 64 (8 pairs, EAP-IG with 5 steps).
#[test]
fn eap_ig_finds_the_key_path_when_the_statement_changes() {
    let lm = organism();
    let task = statement_swapped(&lm, 8);
    assert_eq!(task.len(), 8);
    let run = CircuitRun::new(&lm.model, &task, &CircuitOptions::default()).unwrap();
    let (top, _) = top_edges(&run, 10);
    for key in ["input->a0.h1<v>", "a0.h1->a1.h0<k>"] {
        assert!(
            top[..3].contains(&key.to_string()),
            "{key} not in {:?}",
            &top[..3]
        );
    }
    for query in ["input->a0.h0<v>", "a0.h0->a1.h0<q>"] {
        assert!(!top.contains(&query.to_string()), "{query} in {top:?}");
    }
    let scores = run.eap_ig(5).unwrap();
    let curve = run.faithfulness_curve(&scores, &[10, 64]).unwrap();
    assert!(curve[1].value >= 0.8, "{curve:?}");
}

/// Mean ablation over retrieval prompts of one template removes what every prompt shares
/// too: EAP-IG's six highest-scoring edges are the six planted ones.
#[test]
fn eap_ig_finds_all_six_planted_edges_under_mean_ablation() {
    let lm = organism();
    let task = retrieval_task(&lm, 8);
    let options = CircuitOptions::default().ablation(Ablation::Mean);
    let run = CircuitRun::new(&lm.model, &task, &options).unwrap();
    let (top, f) = top_edges(&run, 6);
    for planted in PLANTED {
        assert!(
            top.contains(&planted.to_string()),
            "{planted} not in {top:?}"
        );
    }
    assert!(f >= 0.8, "faithfulness {f}");
}

/// The organism's planted retrieval circuit (`burnlens_organism::plant_retrieval`): the query
/// path, the key path and the copy.
const PLANTED: [&str; 6] = [
    "input->a0.h0<v>",
    "a0.h0->a1.h0<q>",
    "input->a0.h1<v>",
    "a0.h1->a1.h0<k>",
    "input->a1.h0<v>",
    "a1.h0->logits",
];

#[test]
fn bad_tasks_and_sizes_are_named() {
    let e = |r: burnlens_experiments::Result<CircuitTask>| r.unwrap_err().to_string();
    let msg = e(CircuitTask::new(
        vec![vec![1, 2], vec![3, 4]],
        vec![vec![1, 2], vec![3]],
        vec![0, 0],
        vec![1, 1],
    ));
    assert!(
        msg.contains("pair 1") && msg.contains("2 tokens") && msg.contains("1"),
        "{msg}"
    );
    let msg = e(CircuitTask::new(
        vec![vec![1, 2], vec![3, 4, 5]],
        vec![vec![1, 2], vec![3, 4, 5]],
        vec![0, 0],
        vec![1, 1],
    ));
    assert!(
        msg.contains("pair 1") && msg.contains("pair 0 has 2"),
        "{msg}"
    );
    let msg = e(CircuitTask::new(vec![], vec![], vec![], vec![]));
    assert!(msg.contains("at least one prompt pair"), "{msg}");
    let lm = organism();
    let msg = e(CircuitTask::from_text(
        &lm.tokenizer,
        &[[
            "Jessop Emma lives in",
            "Ingram Nathan lives in",
            " Paris Nairobi",
            " Nairobi",
        ]],
    ));
    assert!(
        msg.contains("pair 0") && msg.contains("answer") && msg.contains("not one"),
        "{msg}"
    );
    let g = EdgeGraph::new(4, 4);
    let scores = burnlens_experiments::circuit::EdgeScores::new(vec![1.0; g.len()]);
    for n in [0, g.len() + 1] {
        let msg = scores.top(&g, n).unwrap_err().to_string();
        assert!(
            msg.contains("top_n") && msg.contains(&g.len().to_string()),
            "{msg}"
        );
    }
    let mut v = vec![1.0; g.len()];
    v[7] = f32::NAN;
    let msg = burnlens_experiments::circuit::EdgeScores::new(v)
        .top(&g, 3)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&g.edges()[7].to_string()) && msg.contains("NaN"),
        "{msg}"
    );
    assert!(
        "nope"
            .parse::<CircuitMetric>()
            .unwrap_err()
            .to_string()
            .contains("kl, logit-diff")
    );
    assert!(
        "half"
            .parse::<Ablation>()
            .unwrap_err()
            .to_string()
            .contains("corrupted, mean or zero")
    );
}

/// ACDC's loop written the plain way, one evaluation per edge, from the same public pieces.
fn sequential_acdc(run: &CircuitRun<'_>, tau: f32) -> EdgeSet {
    let g = run.graph();
    let sign = if run.options().metric == CircuitMetric::Kl {
        1.0
    } else {
        -1.0
    };
    let mut state = EdgeSet::full(g);
    let mut cur = sign * run.clean_metric();
    let mut dests: Vec<Dest> = g.edges().iter().map(|e| e.dst).collect();
    dests.sort_by_key(|d| std::cmp::Reverse(g.dest_index(*d)));
    dests.dedup();
    for dst in dests {
        let mut incoming: Vec<usize> = (0..g.len()).filter(|&i| g.edges()[i].dst == dst).collect();
        incoming.sort_by_key(|&i| std::cmp::Reverse(g.source_index(g.edges()[i].src)));
        let used = dst
            .node()
            .is_none_or(|n| state.indices().any(|i| g.edges()[i].src == n));
        for i in incoming {
            state.set(i, false);
            if !used {
                continue;
            }
            let v = sign * run.evaluate(std::slice::from_ref(&state)).unwrap()[0];
            if v - cur < tau {
                cur = v;
            } else {
                state.set(i, true);
            }
        }
    }
    state
}

#[test]
fn batched_acdc_keeps_what_sequential_acdc_keeps() {
    use burnlens_experiments::circuit::{AcdcOptions, acdc};
    let device = BackendKind::Flex.device().unwrap();
    let model = tiny(&device);
    let task = tiny_task(2, 5);
    for (metric, tau) in [
        (CircuitMetric::Kl, 2e-3),
        (CircuitMetric::Kl, 2e-2),
        (CircuitMetric::LogitDiff, 1e-3),
    ] {
        let options = CircuitOptions::default().metric(metric).batch_rows(16);
        let run = CircuitRun::new(&model, &task, &options).unwrap();
        let found = acdc(&run, &AcdcOptions::new(tau)).unwrap();
        let plain = sequential_acdc(&run, tau);
        let g = run.graph();
        let names = |s: &EdgeSet| {
            s.indices()
                .map(|i| g.edges()[i].to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&found.kept), names(&plain), "{metric:?}");
        assert!(
            found.kept.count() > 0 && found.kept.count() < g.len(),
            "{metric:?}: {}",
            found.kept.count()
        );
        let v = run.evaluate(std::slice::from_ref(&plain)).unwrap()[0];
        assert!((found.metric - v).abs() <= 1e-5, "{} vs {v}", found.metric);
        eprintln!(
            "{metric:?} τ {tau}: kept {} of {} edges in {} forwards",
            found.kept.count(),
            g.len(),
            found.forwards
        );
    }
    let run = CircuitRun::new(&model, &task, &CircuitOptions::default()).unwrap();
    for tau in [-1.0, f32::NAN, f32::INFINITY] {
        let e = acdc(&run, &AcdcOptions::new(tau)).unwrap_err().to_string();
        assert!(e.contains("tau"), "{e}");
    }
}

/// ACDC with KL on the query-swap task keeps the edges that carry the difference: at τ = 0.03
/// exactly the query path and the copy's output (measured: KL 0.040 to the clean run, 11
/// batched forwards instead of 479 one-edge ones); at τ = 0.01 two more edges through MLP 1.
#[test]
fn acdc_keeps_the_planted_query_path_on_the_organism() {
    use burnlens_experiments::circuit::{AcdcOptions, acdc};
    let lm = organism();
    let task = retrieval_task(&lm, 8);
    let options = CircuitOptions::default().metric(CircuitMetric::Kl);
    let run = CircuitRun::new(&lm.model, &task, &options).unwrap();
    let g = run.graph();
    let query = ["input->a0.h0<v>", "a0.h0->a1.h0<q>", "a1.h0->logits"];
    for tau in [0.01f32, 0.03] {
        let found = acdc(&run, &AcdcOptions::new(tau)).unwrap();
        let names: Vec<String> = found
            .kept
            .indices()
            .map(|i| g.edges()[i].to_string())
            .collect();
        let f = run.faithfulness(found.metric).unwrap();
        eprintln!(
            "τ {tau}: {} edges, KL {}, faithfulness {f}, {} forwards: {names:?}",
            names.len(),
            found.metric,
            found.forwards
        );
        for q in query {
            assert!(
                names.contains(&q.to_string()),
                "τ {tau}: {q} not in {names:?}"
            );
        }
        assert!(names.len() <= 10, "τ {tau}: {names:?}");
        assert!(f >= 0.8, "τ {tau}: faithfulness {f}");
        assert!(
            found.forwards < g.len() / 10,
            "τ {tau}: {} forwards",
            found.forwards
        );
        if tau == 0.03 {
            assert_eq!(names, query, "τ {tau}");
        }
    }
}

/// The task a reference script wrote: clean and corrupted ids, answers and foils.
fn reference_task(r: &serde_json::Value) -> CircuitTask {
    let rows = |k: &str| -> Vec<Vec<u32>> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(crate::common::ids)
            .collect()
    };
    CircuitTask::new(
        rows("clean"),
        rows("corrupted"),
        crate::common::ids(&r["answer"]),
        crate::common::ids(&r["foil"]),
    )
    .unwrap()
}

/// EAP and EAP-IG (5 steps) equal the reference implementation (hannamw/EAP-IG with
/// TransformerLens 3.9, `scripts/reference/circuit_reference.py`) on the tiny fixture, edge by
/// edge by name, to 1e-4 of the largest score, on every backend.
#[test]
fn eap_and_eap_ig_match_the_reference_implementation() {
    let text =
        std::fs::read_to_string(root().join("fixtures/reference/tiny-gpt2/circuit.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let task = reference_task(&r);
    for (kind, device) in burnlens_model::available_devices() {
        let model = tiny(&device);
        let run = CircuitRun::new(&model, &task, &CircuitOptions::default()).unwrap();
        let g = run.graph();
        for (key, scores) in [
            ("eap", run.eap().unwrap()),
            ("eap_ig", run.eap_ig(5).unwrap()),
        ] {
            let theirs = r[key].as_object().unwrap();
            assert_eq!(theirs.len(), g.len(), "{key}: one score per edge");
            let max = theirs
                .values()
                .map(|v| v.as_f64().unwrap().abs())
                .fold(0.0, f64::max);
            assert!(max > 1e-3, "{key}: the reference scores are not all zero");
            for (name, v) in theirs {
                let ours = scores.of(g, name).unwrap() as f64;
                let want = v.as_f64().unwrap();
                assert!(
                    (ours - want).abs() <= 1e-4 * max,
                    "{kind} {key} {name}: {ours} vs {want} (largest {max})"
                );
            }
        }
    }
}

/// ACDC equals the reference loop (`scripts/reference/acdc_reference.py`: ACDC's algorithm
/// from ArthurConmy/Automatic-Circuit-Discovery, one forward per edge over TransformerLens 3.9
/// hooks, on EAP-IG's graph) on the tiny fixture at fixed τ, for KL and the logit difference:
/// the same kept edges, every edge's effect to 1e-4 (the reference's decisions are at least
/// 3e-4 from τ), and the circuit's metric to 1e-4.
#[test]
fn acdc_matches_the_reference_loop() {
    use burnlens_experiments::circuit::{AcdcOptions, acdc};
    let text =
        std::fs::read_to_string(root().join("fixtures/reference/tiny-gpt2/acdc.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let task = reference_task(&r);
    let device = BackendKind::Flex.device().unwrap();
    let model = tiny(&device);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for want in runs {
        let metric: CircuitMetric = want["metric"].as_str().unwrap().parse().unwrap();
        let tau = want["tau"].as_f64().unwrap() as f32;
        let options = CircuitOptions::default().metric(metric).batch_rows(12);
        let run = CircuitRun::new(&model, &task, &options).unwrap();
        let found = acdc(&run, &AcdcOptions::new(tau)).unwrap();
        let g = run.graph();
        let mut kept: Vec<String> = found
            .kept
            .indices()
            .map(|i| g.edges()[i].to_string())
            .collect();
        kept.sort();
        let theirs: Vec<String> = want["kept"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert!(
            !theirs.is_empty() && theirs.len() < g.len(),
            "the reference keeps some edges and removes others"
        );
        assert_eq!(kept, theirs, "{metric:?} τ {tau}: kept edges");
        let effects = want["effects"].as_object().unwrap();
        assert_eq!(effects.len(), g.len());
        for (name, e) in effects {
            let ours = found.effects[g.find(name).unwrap()];
            match (ours, e.as_f64()) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!(
                    (f64::from(a) - b).abs() <= 1e-4,
                    "{metric:?} τ {tau} {name}: effect {a} vs {b}"
                ),
                (a, b) => panic!("{metric:?} τ {tau} {name}: evaluated {a:?} vs {b:?}"),
            }
        }
        let value = want["metric_value"].as_f64().unwrap();
        assert!(
            (f64::from(found.metric) - value).abs() <= 1e-4 * value.abs().max(1.0),
            "{metric:?} τ {tau}: metric {} vs {value}",
            found.metric
        );
        eprintln!(
            "{metric:?} τ {tau}: {} of {} edges kept, metric {} (reference {value}), {} batched \
             forwards (the reference ran {})",
            kept.len(),
            g.len(),
            found.metric,
            found.forwards,
            want["forwards"]
        );
    }
}

/// Path patching to the planted retrieval head's query on the organism's query-swap task: the
/// planted query path is `input → a0.h0 → a1.h0<q>`, so of every sender into `a1.h0<q>`, only
/// layer 0 head 0 carries the swapped name (its path patched, the normalized logit difference
/// falls to about the ablated run's); every other sender leaves it near the clean run's. Each
/// sender's value is the metric of the graph without its edge into the receiver, evaluated
/// alone (1e-5), and an unknown or empty receiver list is an error.
#[test]
fn path_patching_to_the_retrieval_query_finds_the_planted_sender() {
    use burnlens_experiments::circuit::{Qkv, path_patch};
    let lm = organism();
    let task = retrieval_task(&lm, 8);
    let options = CircuitOptions::default().metric(CircuitMetric::NormalizedLogitDiff);
    let run = CircuitRun::new(&lm.model, &task, &options).unwrap();
    let receiver = Dest::Head {
        layer: 1,
        head: 0,
        qkv: Qkv::Q,
    };
    let senders = path_patch(&run, &[receiver]).unwrap();
    // input, layer 0's heads and MLP.
    let n_heads = lm.model.config.n_head;
    assert_eq!(senders.len(), 1 + n_heads + 1);
    for p in &senders {
        eprintln!("{} -> a1.h0<q>: {:.4}", p.sender, p.metric);
        assert_eq!(p.edges, 1);
        let planted = p.sender == Source::Head { layer: 0, head: 0 };
        if planted {
            assert!(p.metric < 0.3, "{}: {}", p.sender, p.metric);
        } else {
            assert!(p.metric > 0.8, "{}: {}", p.sender, p.metric);
        }
        let name = format!("{}->a1.h0<q>", p.sender);
        let mut set = EdgeSet::full(run.graph());
        set.set(run.graph().find(&name).unwrap(), false);
        let alone = run.evaluate(std::slice::from_ref(&set)).unwrap()[0];
        assert!(
            (alone - p.metric).abs() <= 1e-5,
            "{name}: {alone} vs {}",
            p.metric
        );
    }
    assert!(
        path_patch(&run, &[])
            .unwrap_err()
            .to_string()
            .contains("receivers")
    );
    let outside = Dest::Head {
        layer: 9,
        head: 0,
        qkv: Qkv::Q,
    };
    assert!(
        path_patch(&run, &[outside])
            .unwrap_err()
            .to_string()
            .contains("a9.h0<q>")
    );
}
