"""PyTorch anchor for benches/prepend.rs: prompt-prepend scoring, timed.

Loads the checkpoint the Rust benchmark wrote (GPT-2 small's shapes, random weights) with
`transformers`' GPT2LMHeadModel, offline, and scores the candidates in --job the way a Python
prepend search does: for each candidate first token, the sequence `[candidate] + target`, and the
target tokens' mean next-token loss, in batches. Writes the losses and the seconds to --out.

Usage: python bench_prepend.py --model DIR --job job.json --out torch.json [--threads 2]
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.job) as f:
        job = json.load(f)
    model = GPT2LMHeadModel.from_pretrained(args.model, local_files_only=True).eval()
    target = torch.tensor(job["target"])
    candidates = job["candidates"]
    batch = job["batch"]
    n = target.shape[0]
    losses = []
    with torch.no_grad():
        model(torch.tensor([[candidates[0]] + job["target"]]))  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(candidates), batch):
            chunk = torch.tensor(candidates[i:i + batch])
            ids = torch.cat([chunk[:, None], target.expand(len(chunk), n)], dim=1)
            logits = model(ids).logits[:, :-1]  # position j predicts token j + 1
            logp = torch.log_softmax(logits.float(), dim=-1)
            nll = -logp.gather(2, ids[:, 1:, None])[..., 0]
            losses.extend(nll.mean(dim=1).tolist())
        seconds = time.perf_counter() - t0
    with open(args.out, "w") as f:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(),
                   "seconds": seconds, "losses": losses}, f)


if __name__ == "__main__":
    main()
