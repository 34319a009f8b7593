"""transformers anchor for benches/load.rs: loading a checkpoint, timed, with its peak memory.

Loads --model (a GPT-2 checkpoint directory in Hugging Face's layout) with transformers'
`GPT2LMHeadModel.from_pretrained` and `GPT2TokenizerFast.from_pretrained` (offline), then runs
one forward of 20 token ids; writes to --out (JSON) the seconds of each, the process's peak
resident memory (`ru_maxrss`, as VmHWM) and its resident memory after the imports, before the
load (what torch and transformers take whatever the model).

Usage: python bench_load.py --model DIR --out load.json [--threads 2]
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import GPT2LMHeadModel, GPT2TokenizerFast  # noqa: E402


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    before = rss_bytes()
    t0 = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(args.model, local_files_only=True).eval()
    t1 = time.perf_counter()
    GPT2TokenizerFast.from_pretrained(args.model, local_files_only=True)
    t2 = time.perf_counter()
    ids = torch.arange(20).unsqueeze(0) * 997 % model.config.vocab_size
    with torch.no_grad():
        model(ids)
        t3 = time.perf_counter()
        model(ids)
        t4 = time.perf_counter()
    out = {"transformers_seconds": t1 - t0, "tokenizer_seconds": t2 - t1,
           "first_forward_seconds": t3 - t2, "forward_seconds": t4 - t3,
           "rss_after_imports": before,
           "vm_hwm": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
