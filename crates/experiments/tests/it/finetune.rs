//! The damage report and fine-tuning localisation on the organism: the damage report's recall
//! and perplexity against one unpadded forward per prompt and per text, and against the
//! planted mechanism (the organism keeps its facts in MLP 0: zeroing its output projection
//! erases them); fine-tuning's bookkeeping against closed forms (one SGD step moves the free
//! group by exactly `lr` × its gradient and nothing else; the objective is the mean target NLL
//! that the CounterFact scorer computes by another path); the stop rule; the errors.

use crate::common::root;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use burnlens_datasets::{Manifest, filler_documents};
use burnlens_experiments::{
    DamageProbe, EditCase, Error, FinetuneConfig, FinetuneOptimizer, RomeRequest, finetune,
    free_groups, param_groups, target_nlls,
};
use burnlens_metrics::last_position;
use burnlens_model::{LoadedModel, TokenBatch, load};

fn organism() -> (LoadedModel, Manifest) {
    let dir = root().join("fixtures/organism");
    let lm = load(dir.to_str().unwrap(), &Device::flex()).unwrap();
    (lm, Manifest::load(&dir).unwrap())
}

fn cases(m: &Manifest, n: usize) -> Vec<EditCase> {
    m.world
        .counterfact_batch("city", Some(n), 0)
        .unwrap()
        .iter()
        .map(EditCase::from)
        .collect()
}

#[test]
fn damage_report_equals_one_unpadded_forward_per_prompt_and_per_text() {
    let (lm, m) = organism();
    let tok = &lm.tokenizer;
    let edited = cases(&m, 3);
    let probe = DamageProbe::organism(&m.world, tok, &edited, 12, 5).unwrap();
    // 240 people × 3 relations, less the 3 rewritten cities.
    assert_eq!(probe.facts.len(), 717);
    assert!(probe.facts.iter().all(|f| {
        !edited
            .iter()
            .any(|c| c.request.subject == f.subject && f.relation == "city")
    }));
    let d = probe.measure(&lm.model, tok).unwrap();
    // Recall, one prompt at a time.
    let mut hits = 0;
    let mut same = (0, 0);
    for f in &probe.facts {
        let ids = tok.encode(&f.prompt, false).unwrap();
        let top: Vec<i64> =
            last_position(lm.model.logits(&TokenBatch::single(&ids).unwrap()).unwrap())
                .argmax(1)
                .into_data()
                .iter::<i64>()
                .collect();
        let hit = top[0] == i64::from(f.answer);
        hits += usize::from(hit);
        if edited.iter().any(|c| c.request.subject == f.subject) {
            same = (same.0 + usize::from(hit), same.1 + 1);
        }
    }
    assert_eq!(d.facts, 717);
    assert!((d.fact_recall - hits as f64 / 717.0).abs() < 1e-12);
    assert_eq!(same.1, 6, "the rewritten people's job and instrument");
    assert!((d.recall_edited_subjects - same.0 as f64 / 6.0).abs() < 1e-12);
    // The unedited organism recalls almost all of its facts (its manifest: 98.9% held out).
    assert!(d.fact_recall > 0.95, "{}", d.fact_recall);
    // Perplexity, one text at a time (each cut to the context), pooled over tokens.
    let (mut nll, mut n) = (0.0f64, 0.0f64);
    for text in filler_documents(12, 4, 5) {
        let ids = tok.encode(&text, false).unwrap();
        let ids = &ids[..ids.len().min(lm.model.config.n_positions)];
        let loss = lm.model.loss(&TokenBatch::single(ids).unwrap()).unwrap();
        nll += f64::from(loss.per_token.sum().into_scalar::<f32>());
        n += (ids.len() - 1) as f64;
    }
    assert_eq!(d.tokens, n as usize);
    let ppl = (nll / n).exp();
    assert!(
        (d.perplexity - ppl).abs() / ppl < 1e-4,
        "{} vs {ppl}",
        d.perplexity
    );
}

#[test]
fn damage_report_sees_the_facts_erased_where_the_organism_keeps_them() {
    let (mut lm, m) = organism();
    let probe = DamageProbe::organism(&m.world, &lm.tokenizer, &[], 8, 0).unwrap();
    let before = probe.measure(&lm.model, &lm.tokenizer).unwrap();
    // docs/ORGANISM.md: the facts are looked up by MLP 0 at the subject's last token.
    let w = lm.model.blocks[0].mlp.c_proj.weight.val();
    lm.model.blocks[0].mlp.c_proj.weight = Param::from_tensor(w.zeros_like());
    let after = probe.measure(&lm.model, &lm.tokenizer).unwrap();
    assert!(before.fact_recall > 0.95, "{}", before.fact_recall);
    assert!(after.fact_recall < 0.5, "{}", after.fact_recall);
    // Nothing was edited: no edited subject to report on.
    assert!(before.recall_edited_subjects.is_nan());
    assert!((before.recall_other_subjects - before.fact_recall).abs() < 1e-12);
}

fn requests(c: &[EditCase]) -> Vec<RomeRequest> {
    c.iter().map(|c| c.request.clone()).collect()
}

#[test]
fn one_sgd_step_moves_only_the_free_group_by_lr_times_its_gradient() {
    let (lm, m) = organism();
    let tok = &lm.tokenizer;
    let c = cases(&m, 4);
    let groups = param_groups(4);
    for (free, lr) in [("mlp.1", 0.01), ("embed", 0.02)] {
        let config = FinetuneConfig {
            free: vec![free.into()],
            lr,
            optimizer: FinetuneOptimizer::Sgd,
            max_steps: 1,
        };
        let run = finetune(&lm.model, tok, &requests(&c), &config, |_, _| Ok(())).unwrap();
        assert_eq!(run.groups, groups);
        assert_eq!(run.steps.len(), 2);
        let s = &run.steps[1];
        let grads = s.grad_norms.as_ref().unwrap();
        for (i, g) in groups.iter().enumerate() {
            if g == free {
                let want = lr * grads[i];
                assert!(
                    (s.change_norms[i] - want).abs() / want < 1e-4,
                    "{free}: {} vs {want}",
                    s.change_norms[i]
                );
            } else {
                assert!(s.change_norms[i] < 1e-9, "{g} moved: {}", s.change_norms[i]);
            }
            assert!(grads[i] > 0.0, "{g} has no gradient");
        }
        // The objective is the mean NLL of the new targets (one token each), which the
        // CounterFact scorer computes by its own forward.
        let mut nll = 0.0;
        for case in &c {
            let r = &case.request;
            let t = target_nlls(
                &lm.model,
                tok,
                &[r.filled()],
                &r.target_new,
                &case.target_true,
            )
            .unwrap();
            nll += f64::from(t[0].target_new);
        }
        let want = nll / c.len() as f64;
        assert!(
            (s.loss.unwrap() - want).abs() < 1e-4 * want,
            "{:?} vs {want}",
            s.loss
        );
        // The unembedding stays tied to the trained embedding.
        let wte = run.model.wte.val();
        let diff: Tensor<2> = run.model.w_u.val() - wte.transpose();
        assert_eq!(diff.abs().max().into_scalar::<f32>(), 0.0);
    }
}

#[test]
fn a_run_stops_at_the_first_step_that_answers_every_fact() {
    let (lm, m) = organism();
    let c = cases(&m, 4);
    let config = FinetuneConfig {
        free: free_groups("all", 4).unwrap(),
        lr: 0.05,
        optimizer: FinetuneOptimizer::Sgd,
        max_steps: 60,
    };
    let mut seen = 0;
    let run = finetune(&lm.model, &lm.tokenizer, &requests(&c), &config, |s, m| {
        // The model handed over is the one the step describes.
        if s.step == 0 {
            assert_eq!(m.wte.val().into_data(), lm.model.wte.val().into_data());
        }
        seen += 1;
        Ok(())
    })
    .unwrap();
    let at = run.learned_at().expect("learned within 60 steps");
    assert_eq!(run.steps.len(), at + 1);
    assert_eq!(seen, at + 1);
    assert!(run.steps.last().unwrap().ranks.iter().all(|&r| r == 0));
    assert!(run.steps[..at].iter().all(|s| !s.answered));
    // Before training the organism prefers the planted cities.
    assert!(run.steps[0].ranks.iter().all(|&r| r > 0));
}

#[test]
fn bad_runs_are_refused_naming_what_is_wrong() {
    let (lm, m) = organism();
    let c = cases(&m, 2);
    let tok = &lm.tokenizer;
    let msg = free_groups("mlp.9", 4).unwrap_err().to_string();
    assert!(
        msg.contains("free") && msg.contains("mlp.9") && msg.contains("mlp.3"),
        "{msg}"
    );
    assert_eq!(
        free_groups("block.2+embed", 4).unwrap(),
        ["attn.2", "mlp.2", "embed"]
    );
    let config = |lr: f64| FinetuneConfig {
        free: vec!["mlp.0".into()],
        lr,
        optimizer: FinetuneOptimizer::Adam,
        max_steps: 2,
    };
    let err = finetune(&lm.model, tok, &[], &config(0.01), |_, _| Ok(())).unwrap_err();
    assert!(matches!(err, Error::Empty { .. }), "{err}");
    let err = finetune(&lm.model, tok, &requests(&c), &config(0.0), |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("lr"), "{err}");
    let mut bad = requests(&c);
    bad[1].prompt = "lives in".into();
    let err = finetune(&lm.model, tok, &bad, &config(0.01), |_, _| Ok(())).unwrap_err();
    assert!(matches!(err, Error::Request { index: 1, .. }), "{err}");
    let err = DamageProbe::organism(&m.world, tok, &c, 0, 0).unwrap_err();
    assert!(err.to_string().contains("n_texts"), "{err}");
}
