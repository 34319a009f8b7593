//! Steering vectors: the vector is the difference of the two prompts' cached activations;
//! coefficient 0 changes nothing; with a vector, KV-cached generation takes the argmax of the
//! full, uncached steered forward at every step (the hooked forward itself equals
//! TransformerLens's `run_with_hooks` with an added vector: crates/hooks/tests/parity.rs).

use crate::common;
use common::tiny;

use burnlens_experiments::{steer_generation, steering_vector};
use burnlens_hooks::{HookSet, Intervention, Selector, run_with_cache};
use burnlens_metrics::last_position;
use burnlens_model::{GenerationConfig, HookPoint, TokenBatch, available_devices};

#[test]
fn steering_adds_the_activation_difference_during_generation() {
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        let point: HookPoint = "blocks.1.hook_attn_out".parse().unwrap();
        let (a, b) = ([309u32, 221, 44, 316], [77u32, 12, 500]);
        let v = steering_vector(&model, &a, &b, point, None).unwrap();
        let act = |ids: &[u32]| {
            let (_, c) = run_with_cache(
                &model,
                &TokenBatch::single(ids).unwrap(),
                Selector::point(point).unwrap(),
            )
            .unwrap();
            let x = c.get3(point).unwrap();
            let [_, t, d] = x.dims();
            x.narrow(1, t - 1, 1)
                .reshape([d])
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let want: Vec<f32> = act(&a).iter().zip(act(&b)).map(|(x, y)| x - y).collect();
        let got = v
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let d = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-6, "{kind}: vector");
        let prompt = [268u32, 503, 281];
        let cfg = GenerationConfig {
            max_new_tokens: 6,
            ..GenerationConfig::default()
        };
        let zero = steer_generation(&model, &prompt, &cfg, point, &v, 0.0).unwrap();
        assert_eq!(
            zero.plain, zero.steered,
            "{kind}: coefficient 0 changes nothing"
        );
        let coef = 8.0;
        let s = steer_generation(&model, &prompt, &cfg, point, &v, coef).unwrap();
        assert_ne!(
            s.plain[0].tokens, s.steered[0].tokens,
            "{kind}: the vector matters"
        );
        // Each steered token is the argmax of the full steered forward over what came before.
        let mut seq = prompt.to_vec();
        for &tok in &s.steered[0].tokens {
            let mut hooks = HookSet::new();
            hooks
                .intervene(point, Intervention::add(v.clone() * coef))
                .unwrap();
            let logits = hooks
                .run(&model, &TokenBatch::single(&seq).unwrap())
                .unwrap();
            let best = last_position(logits).argmax(1).into_scalar::<i64>() as u32;
            assert_eq!(tok, best, "{kind}: step {}", seq.len() - prompt.len());
            seq.push(tok);
        }
    }
}
