"""TransformerLens logit-lens reference on the tiny GPT-2 fixture.

The logit lens as TransformerLens users compute it: `cache.accumulated_resid(apply_ln=True)`
(the residual stream before every block and after the last, through `ln_final`), times `W_U`
plus `b_U`, softmaxed. Writes fixtures/reference/tiny-gpt2/lens.{json,safetensors}: the tokens,
the labels, and the probabilities `[readouts, pos, vocab]`.

Usage: HF_HUB_OFFLINE=1 python lens_reference.py [--model DIR] [--out DIR]
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args, load_tl  # noqa: E402


def main() -> None:
    args = fixture_args()
    torch.manual_seed(2)
    tl = load_tl(args.model)
    tokens = torch.randint(1, tl.cfg.d_vocab, (1, 7))
    with torch.no_grad():
        _, cache = tl.run_with_cache(tokens)
        stack, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
        logits = stack[:, 0] @ tl.W_U + tl.b_U  # [readouts, pos, vocab]
        probs = torch.softmax(logits, dim=-1)
    save_file({"probs": probs.float().contiguous()}, os.path.join(args.out, "lens.safetensors"))
    with open(os.path.join(args.out, "lens.json"), "w") as f:
        json.dump({"transformer_lens": "3.9.0", "tokens": tokens[0].tolist(), "labels": labels}, f,
                  indent=1)
        f.write("\n")
    print(labels, tuple(probs.shape))


if __name__ == "__main__":
    main()
