//! TransformerLens parity of hooks, caches, interventions, gradients and weight processing, on
//! the tiny fixture, against `scripts/reference/hooks_reference.py` (TransformerLens 3.9.0).

use std::collections::{BTreeMap, BTreeSet};

use crate::common;

use common::{host, max_diff, root, tiny as model};

use burn::tensor::{Int, Tensor, TensorData};
use burnlens_hooks::{
    Act, ActivationCache, HookSet, Intervention, ResidOptions, Selector, run_with_cache,
};
use burnlens_model::weights::{RawTensor, read_safetensors};
use burnlens_model::{
    BackendKind, HookKind, HookPoint, TokenBatch, WeightProcessing, available_devices, load_with,
};
use serde_json::Value;

const TOL: f32 = 1e-4;

struct Reference {
    json: Value,
    tensors: BTreeMap<String, RawTensor>,
}

impl Reference {
    fn load() -> Self {
        let dir = root().join("fixtures/reference/tiny-gpt2");
        let json = serde_json::from_str(&std::fs::read_to_string(dir.join("hooks.json")).unwrap())
            .unwrap();
        let tensors = read_safetensors(&dir.join("hooks.safetensors")).unwrap();
        Self { json, tensors }
    }

    fn t(&self, key: &str) -> &RawTensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("reference has no {key}"))
    }

    fn ids(&self, key: &str) -> Vec<u32> {
        self.json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    }

    fn batch(&self) -> TokenBatch {
        let rows: Vec<Vec<u32>> = self.json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect();
        TokenBatch::new(rows, None).unwrap()
    }

    fn strings(&self, path: &[&str]) -> Vec<String> {
        let mut v = &self.json;
        for p in path {
            v = &v[*p];
        }
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }
}

fn assert_close(what: &str, got: &Act, want: &RawTensor, tol: f32) {
    assert_eq!(got.dims(), want.shape, "{what}: shape");
    let d = max_diff(&got.to_vec(), &want.data);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

fn assert_close_t<const D: usize>(what: &str, got: Tensor<D>, want: &RawTensor, tol: f32) {
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let d = max_diff(&host(got), &want.data);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

#[test]
fn default_and_on_request_hook_names_equal_transformer_lens() {
    let r = Reference::load();
    let ours: BTreeSet<String> = HookPoint::all(2).iter().map(|p| p.to_string()).collect();
    let theirs: BTreeSet<String> = r.strings(&["default_hook_names"]).into_iter().collect();
    assert_eq!(ours, theirs, "default hook set");
    let ours: BTreeSet<String> = HookPoint::every(2).iter().map(|p| p.to_string()).collect();
    let theirs: BTreeSet<String> = r.strings(&["all_hook_names"]).into_iter().collect();
    assert_eq!(ours, theirs, "every hook point");
}

#[test]
fn every_hook_matches_transformer_lens_on_every_backend() {
    let r = Reference::load();
    let batch = r.batch();
    for (kind, device) in available_devices() {
        let m = model(&device);
        // On flex the rows run as blocks on separate threads (where there are two or more),
        // each capturing its rows: the blocks, stacked when read, are what is compared here.
        if kind == BackendKind::Flex && rayon::current_num_threads() >= 2 {
            assert!(m.row_blocks(&batch) >= 2, "flex should split the rows");
        }
        let (logits, cache) = run_with_cache(&m, &batch, Selector::all()).unwrap();
        assert_eq!(
            cache.is_in_blocks(HookPoint::ResidPre(0)),
            m.row_blocks(&batch) >= 2,
            "{kind}: a split forward leaves its captures in blocks until read"
        );
        assert_close_t(&format!("{kind} logits"), logits, r.t("logits"), TOL);
        assert_eq!(
            cache.len(),
            HookPoint::all(2).len(),
            "{kind}: default points only"
        );
        for p in HookPoint::all(2) {
            assert_close(
                &format!("{kind} {p}"),
                cache.get(p).unwrap(),
                r.t(&format!("cache.{p}")),
                TOL,
            );
        }

        // The on-request points, all in one run.
        let mut set = HookSet::new();
        set.capture(Selector::points(HookPoint::on_request(2)).unwrap())
            .capture_point(HookPoint::Ln1Scale(0))
            .unwrap();
        let logits = set.run(&m, &batch).unwrap();
        assert_close_t(
            &format!("{kind} logits (per-head path)"),
            logits,
            r.t("logits"),
            TOL,
        );
        let cache = set.take_cache();
        for p in HookPoint::on_request(2) {
            assert_close(
                &format!("{kind} {p}"),
                cache.get(p).unwrap(),
                r.t(&format!("on_request.{p}")),
                TOL,
            );
        }
        // ln1 runs per head in that mode: rank 4, its last call (the value input) kept.
        assert_close(
            &format!("{kind} per-head ln1.hook_scale"),
            cache.get(HookPoint::Ln1Scale(0)).unwrap(),
            r.t("on_request.split.blocks.0.ln1.hook_scale"),
            TOL,
        );
    }
}

#[test]
fn interventions_match_run_with_hooks() {
    let r = Reference::load();
    let batch = r.batch();
    for (kind, device) in available_devices() {
        let m = model(&device);
        let mut set = HookSet::new();
        set.intervene(("z", 1), Intervention::zero().heads([2]))
            .unwrap();
        assert_close_t(
            &format!("{kind} zero head"),
            set.run(&m, &batch).unwrap(),
            r.t("ablate_head.logits"),
            TOL,
        );

        let mut set = HookSet::new();
        set.intervene("blocks.0.hook_mlp_out", Intervention::mean_ablate())
            .unwrap();
        assert_close_t(
            &format!("{kind} mean-ablate MLP"),
            set.run(&m, &batch).unwrap(),
            r.t("mean_mlp.logits"),
            TOL,
        );

        let v = r.t("steer.vector");
        let vector =
            Tensor::<1>::from_data(TensorData::new(v.data.clone(), [v.data.len()]), &device);
        let mut set = HookSet::new();
        set.intervene(HookPoint::ResidPre(1), Intervention::add(vector))
            .unwrap();
        assert_close_t(
            &format!("{kind} steering"),
            set.run(&m, &batch).unwrap(),
            r.t("steer.logits"),
            TOL,
        );
    }
}

#[test]
fn patching_the_clean_residual_restores_the_clean_logits() {
    let r = Reference::load();
    let clean = r.batch();
    // The corrupted run: the same rows in reverse order (other tokens everywhere).
    let corrupt_rows: Vec<Vec<u32>> = (0..3).rev().map(|i| clean.row(i).to_vec()).collect();
    let corrupt = TokenBatch::new(corrupt_rows, None).unwrap();
    for (kind, device) in available_devices() {
        let m = model(&device);
        let (clean_logits, clean_cache) =
            run_with_cache(&m, &clean, Selector::kind(HookKind::ResidPre)).unwrap();
        let clean_logits = host(clean_logits);
        let corrupt_logits = host(m.logits(&corrupt).unwrap());
        assert!(
            max_diff(&clean_logits, &corrupt_logits) > 0.1,
            "the runs must differ"
        );
        for l in 0..2 {
            let mut set = HookSet::new();
            set.intervene(
                HookPoint::ResidPre(l),
                Intervention::replace(clean_cache.get3(HookPoint::ResidPre(l)).unwrap()),
            )
            .unwrap();
            let patched = host(set.run(&m, &corrupt).unwrap());
            let d = max_diff(&patched, &clean_logits);
            assert!(d <= TOL, "{kind} layer {l}: patched vs clean {d}");
        }
        // Patching the last block's output at the last position only: that position's
        // logits become the clean ones (no attention follows), the others stay corrupted.
        let (_, clean_post) =
            run_with_cache(&m, &clean, Selector::kind(HookKind::ResidPost)).unwrap();
        let mut set = HookSet::new();
        set.intervene(
            HookPoint::ResidPost(1),
            Intervention::replace(clean_post.get3(HookPoint::ResidPost(1)).unwrap()).at(vec![6]),
        )
        .unwrap();
        let patched = set.run(&m, &corrupt).unwrap();
        let v = m.config.vocab_size;
        let head = host(patched.clone().slice([0..3, 0..6, 0..v]));
        let corrupt_head = host(m.logits(&corrupt).unwrap().slice([0..3, 0..6, 0..v]));
        assert!(
            max_diff(&head, &corrupt_head) <= TOL,
            "{kind}: earlier positions unchanged"
        );
        let last = host(patched.slice([0..3, 6..7, 0..v]));
        let clean_last = &clean_logits;
        let want: Vec<f32> = (0..3)
            .flat_map(|b| clean_last[(b * 7 + 6) * v..(b * 7 + 7) * v].to_vec())
            .collect();
        assert!(
            max_diff(&last, &want) <= TOL,
            "{kind}: last position patched"
        );
    }
}

/// `Σ_b logits[b, -1, answer_b] − logits[b, -1, foil_b]` as a `[1]` tensor.
fn logit_diff(logits: Tensor<3>, answer: &[u32], foil: &[u32]) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let last = logits.slice([0..b, t - 1..t, 0..v]).reshape([b, v]);
    let device = last.device();
    let idx = |ids: &[u32]| {
        Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [b, 1]),
            &device,
        )
    };
    let diff = last.clone().gather(1, idx(answer)) - last.gather(1, idx(foil));
    diff.sum()
}

#[test]
fn gradients_match_transformer_lens_backward_hooks() {
    let r = Reference::load();
    let batch = r.batch();
    let (answer, foil) = (r.ids("answer"), r.ids("foil"));
    let names: Vec<String> = r
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("grad.").map(str::to_string))
        .collect();
    assert!(names.len() >= 10);
    let want_metric = r.json["grad_metric"].as_f64().unwrap() as f32;
    for (kind, device) in available_devices() {
        let m = model(&device);
        let mut set = HookSet::new();
        set.grad(Selector::points(names.iter()).unwrap());
        let (value, grads) = set
            .run_with_grads(&m, &batch, |logits| logit_diff(logits, &answer, &foil))
            .unwrap();
        assert!(
            (value - want_metric).abs() <= TOL,
            "{kind}: metric {value} vs {want_metric}"
        );
        assert_eq!(grads.len(), names.len());
        // TransformerLens runs ln1 once each for q, k and v; the reference sums the three
        // backward-hook calls, which is the gradient with respect to the activation.
        assert_eq!(r.json["grad_hook_calls"]["blocks.0.ln1.hook_scale"], 3);
        for name in &names {
            assert_close(
                &format!("{kind} grad {name}"),
                grads.get(name.as_str()).unwrap(),
                r.t(&format!("grad.{name}")),
                TOL,
            );
        }
    }
}

#[test]
fn processed_weights_match_transformer_lens_and_keep_log_probs() {
    let r = Reference::load();
    let batch = r.batch();
    let dir = root().join("fixtures/tiny-gpt2");
    for (kind, device) in available_devices() {
        let m = load_with(
            dir.to_str().unwrap(),
            &device,
            WeightProcessing::transformer_lens(),
        )
        .unwrap()
        .model;
        assert_eq!(m.processing, WeightProcessing::transformer_lens());
        let names: Vec<String> = r
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix("processed.").map(str::to_string))
            .filter(|k| k != "logits")
            .collect();
        let (logits, cache) =
            run_with_cache(&m, &batch, Selector::points(names.iter()).unwrap()).unwrap();
        assert_close_t(
            &format!("{kind} processed logits"),
            logits.clone(),
            r.t("processed.logits"),
            TOL,
        );
        for name in &names {
            assert_close(
                &format!("{kind} processed {name}"),
                cache.get(name.as_str()).unwrap(),
                r.t(&format!("processed.{name}")),
                TOL,
            );
        }
        // Log-probabilities equal the unprocessed model's.
        let lp = host(burn::tensor::activation::log_softmax(logits, 2));
        let raw = r.t("logits");
        let shape = [raw.shape[0], raw.shape[1], raw.shape[2]];
        let want = host(burn::tensor::activation::log_softmax(
            Tensor::<3>::from_data(TensorData::new(raw.data.clone(), shape), &device),
            2,
        ));
        let d = max_diff(&lp, &want);
        assert!(d <= TOL, "{kind}: processed log-probs differ by {d}");
        // Saving a processed model as a Hugging Face checkpoint is refused.
        let tmp = tempfile::tempdir().unwrap();
        let err = m.save_pretrained(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("processed"), "{err}");
    }
}

#[test]
fn cache_analysis_matches_transformer_lens() {
    let r = Reference::load();
    let batch = r.batch();
    let (answer, foil) = (r.ids("answer"), r.ids("foil"));
    let device = BackendKind::NdArray.device().unwrap();
    let m = model(&device);
    let (_, cache) = run_with_cache(&m, &batch, Selector::all()).unwrap();
    let labels = |k: &str| r.strings(&["labels", k]);

    let acc = cache
        .accumulated_resid(&m, ResidOptions::default().apply_ln())
        .unwrap();
    assert_eq!(acc.labels, labels("accumulated_ln"));
    assert_close_t(
        "accumulated_resid(apply_ln)",
        acc.stack,
        r.t("analysis.accumulated_ln"),
        TOL,
    );

    let acc1 = cache
        .accumulated_resid(&m, ResidOptions::default().up_to(1).incl_mid().apply_ln())
        .unwrap();
    assert_eq!(acc1.labels, labels("accumulated_l1_mid_ln"));
    assert_close_t(
        "accumulated_resid(1, incl_mid, apply_ln)",
        acc1.stack,
        r.t("analysis.accumulated_l1_mid_ln"),
        TOL,
    );

    let dec = cache
        .decompose_resid(&m, ResidOptions::default().apply_ln())
        .unwrap();
    assert_eq!(dec.labels, labels("decompose_ln"));
    assert_close_t(
        "decompose_resid(apply_ln)",
        dec.stack,
        r.t("analysis.decompose_ln"),
        TOL,
    );

    let heads = cache.stack_head_results(&m, None, true, true).unwrap();
    assert_eq!(heads.labels, labels("heads_ln"));
    assert_close_t(
        "stack_head_results(apply_ln, remainder)",
        heads.stack,
        r.t("analysis.heads_ln"),
        TOL,
    );

    // logit_attrs at the last position.
    let last = |t: Tensor<3>| {
        let [c, b, p] = t.dims();
        t.slice([0..c, 0..b, p - 1..p]).reshape([c, b])
    };
    let raw = cache
        .accumulated_resid(&m, ResidOptions::default())
        .unwrap();
    let attrs = cache
        .logit_attrs(&m, raw.stack, &answer, Some(&foil))
        .unwrap();
    assert_close_t(
        "logit_attrs(accumulated)",
        last(attrs),
        r.t("analysis.attrs_accumulated"),
        TOL,
    );
    let raw = cache.stack_head_results(&m, None, false, false).unwrap();
    let attrs = cache
        .logit_attrs(&m, raw.stack, &answer, Some(&foil))
        .unwrap();
    assert_close_t(
        "logit_attrs(heads)",
        last(attrs),
        r.t("analysis.attrs_heads"),
        TOL,
    );
}

#[test]
fn cache_round_trips_through_safetensors_with_transformer_lens_names() {
    let r = Reference::load();
    let device = BackendKind::NdArray.device().unwrap();
    let m = model(&device);
    let (_, cache) = run_with_cache(&m, &r.batch(), Selector::layers(0..1)).unwrap();
    assert_eq!(cache.len(), 17);
    let bytes: usize = HookPoint::all(1)
        .into_iter()
        .filter(|p| p.layer() == Some(0))
        .map(|p| cache.get(p).unwrap().num_elements() * 4)
        .sum();
    assert_eq!(cache.memory_bytes(), bytes);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cache.safetensors");
    // A write failure is a write error naming the file (it used to read "invalid safetensors
    // file"), and a missing cache file is named as the activation cache.
    let blocked = tmp.path().join("a-file");
    std::fs::write(&blocked, b"").unwrap();
    let err = cache
        .save(&blocked.join("cache.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot write") && err.contains("a-file"),
        "{err}"
    );
    let err = ActivationCache::load(&tmp.path().join("none.safetensors"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("none.safetensors") && err.contains("activation cache"),
        "{err}"
    );
    cache.save(&path).unwrap();
    let raw = read_safetensors(&path).unwrap();
    assert!(raw.contains_key("blocks.0.attn.hook_pattern"));
    let back = ActivationCache::load(&path, &device).unwrap();
    assert_eq!(back.len(), cache.len());
    for p in cache.points() {
        assert_eq!(
            back.get(p).unwrap().to_vec(),
            cache.get(p).unwrap().to_vec(),
            "{p}"
        );
    }
    // TransformerLens's own values load the same way.
    let theirs = BTreeMap::from_iter(r.tensors.iter().filter_map(|(k, v)| {
        k.strip_prefix("cache.blocks.0.")
            .map(|n| (format!("blocks.0.{n}"), v.clone()))
    }));
    let tl_path = tmp.path().join("tl.safetensors");
    burnlens_model::weights::write_safetensors(&theirs, &tl_path).unwrap();
    let tl = ActivationCache::load(&tl_path, &device).unwrap();
    assert_close(
        "loaded TL resid_mid",
        tl.get(("resid_mid", 0)).unwrap(),
        r.t("cache.blocks.0.hook_resid_mid"),
        0.0,
    );
}
