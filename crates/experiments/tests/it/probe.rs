//! Candidate pools and embedding interventions against direct computations: swapping two
//! tokens' input embeddings equals feeding the swapped ids; noise at one position leaves
//! earlier positions untouched; pools and ranks match the logits.

use crate::common;
use common::tiny;

use burnlens_experiments::{EmbeddingEdit, candidate_pools, edit_embeddings, pool_jaccard};
use burnlens_model::{TokenBatch, available_devices};

fn host(t: burn::tensor::Tensor<3>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn embedding_edits_and_candidate_pools() {
    for (kind, device) in available_devices() {
        let model = tiny(&device);
        let ids = [309u32, 221, 44, 316, 86, 262, 300, 44];
        // Swap: the same as swapping the ids themselves.
        let (report, edited) =
            edit_embeddings(&model, &ids, &EmbeddingEdit::Swap(44, 86), 5).unwrap();
        let swapped: Vec<u32> = ids
            .iter()
            .map(|&t| match t {
                44 => 86,
                86 => 44,
                t => t,
            })
            .collect();
        let want = host(
            model
                .logits(&TokenBatch::single(&swapped).unwrap())
                .unwrap(),
        );
        let d = host(edited)
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-5, "{kind}: swap vs swapped ids {d}");
        assert!(report.kl > 0.0 && report.before.len() == 5 && report.after.len() == 5);
        // Noise at position 4: positions 0..4 keep their logits, position 4 changes.
        let plain = host(model.logits(&TokenBatch::single(&ids).unwrap()).unwrap());
        let noise = EmbeddingEdit::Noise {
            positions: vec![4],
            std: 1.0,
            seed: 3,
        };
        let (report, edited) = edit_embeddings(&model, &ids, &noise, 5).unwrap();
        let v = model.config.vocab_size;
        let e = host(edited);
        let diff = |p: usize| {
            (0..v)
                .map(|i| (e[p * v + i] - plain[p * v + i]).abs())
                .fold(0.0f32, f32::max)
        };
        assert!((0..4).all(|p| diff(p) <= 1e-5), "{kind}: causality");
        assert!(diff(4) > 1e-3, "{kind}: the noise matters");
        assert!(report.kl >= 0.0);
        let zero = EmbeddingEdit::Noise {
            positions: vec![4],
            std: 0.0,
            seed: 3,
        };
        let (report, _) = edit_embeddings(&model, &ids, &zero, 5).unwrap();
        assert!(
            report.kl.abs() < 1e-6 && report.jaccard == 1.0,
            "{kind}: no noise, no change"
        );
        assert!(
            edit_embeddings(
                &model,
                &ids,
                &EmbeddingEdit::Noise {
                    positions: vec![8],
                    std: 1.0,
                    seed: 0
                },
                5
            )
            .is_err()
        );
        // Pools: the top candidates are the largest logits, the actual next token's rank counts
        // the logits above it.
        let pools = candidate_pools(&model, &ids, 3).unwrap();
        assert_eq!(pools.len(), ids.len());
        for pool in &pools {
            let row = &plain[pool.position * v..(pool.position + 1) * v];
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let top: Vec<u32> = pool.top.iter().map(|c| c.token).collect();
            assert_eq!(
                top,
                order[..3].iter().map(|&i| i as u32).collect::<Vec<_>>(),
                "{kind}"
            );
            if let (Some(n), Some(r)) = (pool.actual_next, pool.actual_rank) {
                assert_eq!(r, row.iter().filter(|&&x| x > row[n as usize]).count());
            }
        }
        assert_eq!(pools.last().unwrap().actual_next, None);
        let (j, a, b) = pool_jaccard(&model, &ids, &ids, 4).unwrap();
        assert_eq!((j, a.len()), (1.0, 4));
        assert_eq!(a, b);
        let (j, _, _) = pool_jaccard(&model, &ids, &[500, 12, 3], 4).unwrap();
        assert!((0.0..=1.0).contains(&j));
    }
}
