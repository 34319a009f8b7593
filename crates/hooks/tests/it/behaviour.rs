//! Hook-set behaviour that needs no reference: ordering, regions, noise, custom hooks, errors.

use crate::common;

use common::{host, max_diff, tiny as model};

use burn::tensor::{Device, Tensor, TensorData};
use burnlens_hooks::{Act, HookSet, Intervention, Positions, Selector, run_with_cache};
use burnlens_model::{BackendKind, HookKind, HookPoint, NoHooks, TokenBatch};

fn device() -> Device {
    BackendKind::NdArray.device().unwrap()
}

fn batch() -> TokenBatch {
    TokenBatch::new(vec![vec![5, 17, 300, 42, 8], vec![99, 1, 2, 3, 640]], None).unwrap()
}

#[test]
fn an_empty_hook_set_gives_the_plain_logits() {
    let d = device();
    let m = model(&d);
    let plain = host(m.forward(&batch(), None, &mut NoHooks).unwrap());
    let hooked = host(HookSet::new().run(&m, &batch()).unwrap());
    assert_eq!(plain, hooked);
}

#[test]
fn hooks_on_one_point_run_in_the_order_they_were_added() {
    let d = device();
    let m = model(&d);
    let p = HookPoint::MlpOut(0);
    let (_, plain) = run_with_cache(&m, &batch(), Selector::point(p).unwrap()).unwrap();
    let original = plain.get(p).unwrap().to_vec();

    // capture, scale by 3, capture again into a second set's view through a custom hook.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let mut set = HookSet::new();
    set.capture_point(p).unwrap();
    set.intervene(p, Intervention::scale(3.0)).unwrap();
    set.intervene(
        p,
        Intervention::custom(move |_, act| {
            seen2.lock().unwrap().extend(act.to_vec());
            Ok(act)
        }),
    )
    .unwrap();
    set.run(&m, &batch()).unwrap();
    assert_eq!(
        set.cache().get(p).unwrap().to_vec(),
        original,
        "capture before the change"
    );
    let tripled: Vec<f32> = original.iter().map(|x| x * 3.0).collect();
    assert!(
        max_diff(&seen.lock().unwrap(), &tripled) < 1e-5,
        "the custom hook sees the scaled value"
    );
}

#[test]
fn interventions_restricted_to_positions_and_heads_change_only_those() {
    let d = device();
    let m = model(&d);
    let p = HookPoint::Z(1);
    let mut set = HookSet::new();
    set.intervene(p, Intervention::zero().heads([1, 3]).at(vec![0, 4]))
        .unwrap();
    set.capture_point(p).unwrap();
    set.run(&m, &batch()).unwrap();
    let got = set.cache().get4(p).unwrap();
    let (_, plain) = run_with_cache(&m, &batch(), Selector::point(p).unwrap()).unwrap();
    let want = plain.get4(p).unwrap();
    let [b, t, h, dh] = got.dims();
    let (got, want) = (host(got), host(want));
    for i in 0..b * t * h * dh {
        let (pos, head) = ((i / (h * dh)) % t, (i / dh) % h);
        let inside = [0, 4].contains(&pos) && [1, 3].contains(&head);
        let expect = if inside { 0.0 } else { want[i] };
        assert_eq!(got[i], expect, "pos {pos} head {head}");
    }
    // On the pattern, positions are query positions and heads are axis 1.
    let p = HookPoint::Pattern(0);
    let mut set = HookSet::new();
    set.intervene(p, Intervention::zero().heads([0]).at(Positions::last()))
        .unwrap();
    set.capture_point(p).unwrap();
    set.run(&m, &batch()).unwrap();
    let pat = set.cache().get4(p).unwrap();
    let [_, _, q, k] = pat.dims();
    let row = host(pat.clone().slice([0..1, 0..1, q - 1..q, 0..k]));
    assert!(row.iter().all(|&x| x == 0.0));
    let other = host(pat.slice([0..1, 1..2, q - 1..q, 0..k]));
    assert!(
        (other.iter().sum::<f32>() - 1.0).abs() < 1e-5,
        "other heads untouched"
    );
}

#[test]
fn noise_is_seeded_and_has_the_requested_spread() {
    let d = device();
    let m = model(&d);
    let p = HookPoint::Embed;
    let run = |seed: u64| {
        let mut set = HookSet::new();
        set.capture_point(p).unwrap();
        set.intervene(p, Intervention::noise(0.5, seed)).unwrap();
        set.capture_point(HookPoint::ResidPre(0)).unwrap();
        set.run(&m, &batch()).unwrap();
        let cache = set.take_cache();
        (
            cache.get(p).unwrap().to_vec(),
            cache.get(HookPoint::ResidPre(0)).unwrap().to_vec(),
        )
    };
    let (clean, a) = run(7);
    let (_, b) = run(7);
    let (_, c) = run(8);
    assert_eq!(a, b, "same seed, same noise");
    assert_ne!(a, c, "another seed, other noise");
    // resid_pre = embed + noise + pos_embed: recover the noise and check its moments.
    let (_, plain) = run_with_cache(
        &m,
        &batch(),
        Selector::point(HookPoint::ResidPre(0)).unwrap(),
    )
    .unwrap();
    let plain = plain.get(HookPoint::ResidPre(0)).unwrap().to_vec();
    let noise: Vec<f64> = a
        .iter()
        .zip(&plain)
        .map(|(x, y)| f64::from(x - y))
        .collect();
    assert_eq!(noise.len(), clean.len());
    let n = noise.len() as f64;
    let mean = noise.iter().sum::<f64>() / n;
    let std = (noise.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    // 640 draws: the sample std is within ~3 standard errors (0.5 / sqrt(2 * 640) ≈ 0.014).
    assert!(mean.abs() < 0.07, "mean {mean}");
    assert!((std - 0.5).abs() < 0.05, "std {std}");
}

#[test]
fn mean_ablation_with_a_given_mean_broadcasts_over_the_batch() {
    let d = device();
    let m = model(&d);
    let p = HookPoint::MlpOut(0);
    let mean = Tensor::<3>::from_data(TensorData::new(vec![0.25f32; 5 * 64], [1, 5, 64]), &d);
    let mut set = HookSet::new();
    set.intervene(p, Intervention::mean_ablate_with(mean))
        .unwrap();
    set.capture_point(p).unwrap();
    set.run(&m, &batch()).unwrap();
    assert!(
        set.cache()
            .get(p)
            .unwrap()
            .to_vec()
            .iter()
            .all(|&x| x == 0.25)
    );
}

#[test]
fn bad_hooks_are_clear_errors() {
    let d = device();
    let m = model(&d);
    // Unknown names.
    let err = HookSet::new()
        .capture_point("blocks.0.hook_nothing")
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.0.hook_nothing"), "{err}");
    assert!(Selector::points(["hook_embed", "blocks.0.attn.hook_zz"]).is_err());
    // A layer out of range.
    let mut set = HookSet::new();
    set.intervene(("resid_pre", 5), Intervention::zero())
        .unwrap();
    let err = set.run(&m, &batch()).unwrap_err().to_string();
    assert!(
        err.contains("blocks.5.hook_resid_pre") && err.contains("2 blocks"),
        "{err}"
    );
    // A replacement of the wrong shape.
    let wrong = Tensor::<3>::zeros([2, 4, 64], &d);
    let mut set = HookSet::new();
    set.intervene(HookPoint::ResidPre(0), Intervention::replace(wrong))
        .unwrap();
    let err = set.run(&m, &batch()).unwrap_err().to_string();
    assert!(
        err.contains("blocks.0.hook_resid_pre")
            && err.contains("[2, 4, 64]")
            && err.contains("[2, 5, 64]"),
        "{err}"
    );
    // A steering vector of the wrong length, heads on a point without heads, a head out of range.
    let mut set = HookSet::new();
    set.intervene(
        HookPoint::ResidPre(0),
        Intervention::add(Tensor::zeros([10], &d)),
    )
    .unwrap();
    assert!(
        set.run(&m, &batch())
            .unwrap_err()
            .to_string()
            .contains("length 10")
    );
    let mut set = HookSet::new();
    set.intervene(HookPoint::MlpOut(0), Intervention::zero().heads([0]))
        .unwrap();
    assert!(
        set.run(&m, &batch())
            .unwrap_err()
            .to_string()
            .contains("no head axis")
    );
    let mut set = HookSet::new();
    set.intervene(HookPoint::Z(0), Intervention::zero().heads([4]))
        .unwrap();
    assert!(
        set.run(&m, &batch())
            .unwrap_err()
            .to_string()
            .contains("head 4 is out of range")
    );
    // A custom hook that changes the shape, and one that fails.
    let mut set = HookSet::new();
    set.intervene(
        HookPoint::Embed,
        Intervention::custom(|_, a| Ok(Act::R3(a.r3().unwrap().slice([0..1, 0..5, 0..64])))),
    )
    .unwrap();
    assert!(
        set.run(&m, &batch())
            .unwrap_err()
            .to_string()
            .contains("custom hook returned shape")
    );
    let mut set = HookSet::new();
    set.intervene(
        HookPoint::Embed,
        Intervention::custom(|_, _| Err("refused".into())),
    )
    .unwrap();
    assert!(
        set.run(&m, &batch())
            .unwrap_err()
            .to_string()
            .contains("hook hook_embed: refused")
    );
    // Looking up a point that was not cached.
    let (_, cache) = run_with_cache(&m, &batch(), Selector::kind(HookKind::ResidPre)).unwrap();
    let err = cache.get(("result", 0)).unwrap_err().to_string();
    assert!(
        err.contains("blocks.0.attn.hook_result") && err.contains("on-request"),
        "{err}"
    );
    // Gradients without gradient points.
    let err = HookSet::new()
        .run_with_grads(&m, &batch(), |l| l.sum())
        .unwrap_err();
    assert!(
        matches!(err, burnlens_hooks::Error::NoGradient(_))
            && err.to_string().contains("no gradient point"),
        "{err}"
    );
    // A metric that ignores the logits, and one that is not a single number.
    let mut set = HookSet::new();
    set.grad(Selector::kind(HookKind::ResidPre));
    let err = set
        .run_with_grads(&m, &batch(), |l| Tensor::zeros([1], &l.device()).inner())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not depend"), "{err}");
    let err = set
        .run_with_grads(&m, &batch(), |l| l.sum_dim(2).sum_dim(1).reshape([2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("one number"), "{err}");
}

#[test]
fn capture_at_positions_slices_the_position_axis() {
    let d = device();
    let m = model(&d);
    let mut set = HookSet::new();
    set.capture_at(
        Selector::points([HookPoint::ResidPost(1), HookPoint::Pattern(0)]).unwrap(),
        Positions::last(),
    );
    set.run(&m, &batch()).unwrap();
    let (_, full) = run_with_cache(&m, &batch(), Selector::all()).unwrap();
    let resid = set.cache().get3(HookPoint::ResidPost(1)).unwrap();
    assert_eq!(resid.dims(), [2, 1, 64]);
    let want = full
        .get3(HookPoint::ResidPost(1))
        .unwrap()
        .slice([0..2, 4..5, 0..64]);
    assert_eq!(host(resid), host(want));
    assert_eq!(
        set.cache().get4(HookPoint::Pattern(0)).unwrap().dims(),
        [2, 4, 1, 5]
    );
}
