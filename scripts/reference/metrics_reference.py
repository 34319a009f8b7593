"""torch reference values for the metrics crate, on seeded random logits.

Writes `fixtures/reference/metrics.json` (ids, positions, masks, scalars, top-k lists) and
`fixtures/reference/metrics.safetensors` (inputs and tensor outputs). Each metric is written
out with its formula in plain torch, independently of burnlens.

Usage: python metrics_reference.py [--out fixtures/reference]
"""

import argparse
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(root, "fixtures", "reference"))
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    b, t, v = 4, 6, 50
    logits = torch.randn(b, t, v, generator=g) * 3.0
    other = torch.randn(b, t, v, generator=g) * 3.0
    tokens = torch.randint(0, v, (b, t), generator=g)
    mask = torch.ones(b, t)
    mask[1, :2] = 0.0  # left padding
    mask[2, 4:] = 0.0  # right padding
    positions = torch.tensor([5, 3, 3, 0])
    answer = torch.randint(0, v, (b,), generator=g)
    foil = torch.randint(0, v, (b,), generator=g)
    rows = torch.arange(b)

    at = logits[rows, positions]  # [b, v]
    other_at = other[rows, positions]
    ld = at[rows, answer] - at[rows, foil]
    clean, corrupt = 2.5, -0.5
    probs = at.softmax(-1)
    logp = at.log_softmax(-1)
    ranks = (at > at[rows, answer][:, None]).sum(-1)
    kl = F.kl_div(other.log_softmax(-1), logits.log_softmax(-1), log_target=True,
                  reduction="none").sum(-1)  # KL(P_logits || Q_other), [b, t]
    top = probs.topk(5, dim=-1)
    cpd = probs[rows, answer] - other_at.softmax(-1)[rows, foil]
    cld = at[rows, answer] - other_at[rows, foil]

    # Next-token cross-entropy with the mask: a prediction counts when context and target are real.
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, v), tokens[:, 1:].reshape(-1),
                          reduction="none").reshape(b, t - 1)
    w = mask[:, :-1] * mask[:, 1:]
    per_seq = (nll * w).sum(1) / w.sum(1)

    tensors = {
        "logits": logits, "other": other, "mask": mask,
        "logit_diff": ld, "patch_score": (ld - corrupt) / (clean - corrupt),
        "probs": probs[rows, answer], "log_probs": logp[rows, answer], "kl": kl,
        "contrast_prob_diff": cpd, "contrast_logits_diff": cld,
        "per_token_loss": nll * w, "per_sequence_loss": per_seq,
        "perplexity": per_seq.exp(), "mean_loss": ((nll * w).sum() / w.sum()).reshape(1),
    }
    meta = {
        "torch": torch.__version__,
        "tokens": tokens.tolist(), "positions": positions.tolist(),
        "answer": answer.tolist(), "foil": foil.tolist(), "clean": clean, "corrupt": corrupt,
        "ranks": ranks.tolist(),
        "top5_tokens": top.indices.tolist(), "top5_probs": top.values.tolist(),
    }
    os.makedirs(args.out, exist_ok=True)
    save_file({k: x.contiguous() for k, x in tensors.items()},
              os.path.join(args.out, "metrics.safetensors"))
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
