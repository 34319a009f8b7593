"""TransformerLens anchor for benches/patching.rs: the same patching sweeps, timed.

Loads the checkpoint the Rust benchmark wrote (GPT-2 small's shapes, random weights) into
TransformerLens 3.9.0 offline, runs `get_act_patch_resid_pre`, `..._attn_out`, `..._mlp_out` and
`..._attn_head_out_all_pos` on the clean/corrupted pair in --pair with the mean logit difference
at the last position as the metric, and writes every sweep's values and seconds to --out (JSON).

Usage: python bench_patching.py --model DIR --pair pair.json --out tl.json [--threads 2]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformer_lens import patching  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import load_tl  # noqa: E402

SWEEPS = {
    "resid_pre": patching.get_act_patch_resid_pre,
    "attn_out": patching.get_act_patch_attn_out,
    "mlp_out": patching.get_act_patch_mlp_out,
    "head_out_all_pos": patching.get_act_patch_attn_head_out_all_pos,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--pair", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.pair) as f:
        pair = json.load(f)
    tl = load_tl(args.model)
    clean = torch.tensor(pair["clean"])
    corrupted = torch.tensor(pair["corrupted"])
    answer = torch.tensor(pair["answer"])
    foil = torch.tensor(pair["foil"])
    rows = torch.arange(clean.shape[0])

    def metric(logits):
        return (logits[rows, -1, answer] - logits[rows, -1, foil]).mean()

    out = {"transformer_lens": "3.9.0", "torch": torch.__version__,
           "threads": torch.get_num_threads(), "sweeps": {}}
    with torch.no_grad():
        tl(corrupted)  # warm-up
        t0 = time.perf_counter()
        _, clean_cache = tl.run_with_cache(clean)
        out["cache_seconds"] = time.perf_counter() - t0
        for name, fn in SWEEPS.items():
            t0 = time.perf_counter()
            values = fn(tl, corrupted, clean_cache, metric)
            seconds = time.perf_counter() - t0
            out["sweeps"][name] = {"seconds": seconds, "shape": list(values.shape),
                                   "values": values.flatten().tolist()}
            print(f"transformer_lens {name}: {seconds:.2f} s", file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
