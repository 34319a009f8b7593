"""TransformerLens activation-patching reference on the tiny GPT-2 fixture.

Runs `transformer_lens.patching`'s sweeps (TransformerLens 3.9.0) on a clean/corrupted pair of
token batches and writes `fixtures/reference/tiny-gpt2/patching.json` (tokens, answer/foil ids,
metric values of the unpatched runs) and `patching.safetensors` (one tensor per sweep, shaped as
TransformerLens returns it). The metric is the mean logit difference at the last position.

Usage: HF_HUB_OFFLINE=1 python patching_reference.py [--model DIR] [--out DIR]
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformer_lens import patching  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args, load_tl  # noqa: E402

SWEEPS = {
    "resid_pre": patching.get_act_patch_resid_pre,
    "resid_mid": patching.get_act_patch_resid_mid,
    "attn_out": patching.get_act_patch_attn_out,
    "mlp_out": patching.get_act_patch_mlp_out,
    "head_out_all_pos": patching.get_act_patch_attn_head_out_all_pos,
    "head_q_all_pos": patching.get_act_patch_attn_head_q_all_pos,
    "head_k_all_pos": patching.get_act_patch_attn_head_k_all_pos,
    "head_v_all_pos": patching.get_act_patch_attn_head_v_all_pos,
    "head_pattern_all_pos": patching.get_act_patch_attn_head_pattern_all_pos,
    "head_out_by_pos": patching.get_act_patch_attn_head_out_by_pos,
    "head_pattern_by_pos": patching.get_act_patch_attn_head_pattern_by_pos,
}


def main() -> None:
    args = fixture_args()
    torch.manual_seed(1)
    tl = load_tl(args.model)
    vocab = tl.cfg.d_vocab
    clean = torch.randint(1, vocab, (2, 6))
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(1, vocab, (2,))
    corrupted[0, 4] = torch.randint(1, vocab, (1,))
    answer = torch.randint(1, vocab, (2,))
    foil = torch.randint(1, vocab, (2,))
    rows = torch.arange(2)

    def metric(logits):
        return (logits[rows, -1, answer] - logits[rows, -1, foil]).mean()

    with torch.no_grad():
        clean_logits, clean_cache = tl.run_with_cache(clean)
        corrupted_logits = tl(corrupted)
        out = {"transformer_lens": "3.9.0", "clean": clean.tolist(), "corrupted": corrupted.tolist(),
               "answer": answer.tolist(), "foil": foil.tolist(),
               "clean_metric": metric(clean_logits).item(),
               "corrupted_metric": metric(corrupted_logits).item()}
        tensors = {name: fn(tl, corrupted, clean_cache, metric).float().contiguous()
                   for name, fn in SWEEPS.items()}
    save_file(tensors, os.path.join(args.out, "patching.safetensors"))
    with open(os.path.join(args.out, "patching.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print({k: tuple(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
