"""PyTorch anchor for benches/forward.rs: transformers' GPT-2 forward on GPT-2 small's shapes.

Random weights (seeded), eval mode, no_grad, float32, batch 1 x 20 and 8 x 128, with the same
thread count as the Rust benchmark (default 2). Prints the median and mean of timed runs.

Usage: python bench_forward.py [--threads 2] [--runs 30]

With --serve it times nothing on its own: it reads one shape a line from stdin (e.g. `8x128`),
runs one forward of that shape and answers with its time in seconds on stdout, so that
benches/forward_paired.rs can alternate PyTorch's forwards with burnlens's in one run (the
machine's drift then hits both sides alike). Warm-up: the first request of each shape runs
three untimed forwards first.
"""

import argparse
import statistics
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).eval()
    g = torch.Generator().manual_seed(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    if args.serve:
        serve(model, g)
        return
    for b, t in [(1, 20), (8, 128)]:
        ids = torch.randint(0, 50257, (b, t), generator=g)
        runs = args.runs if b * t <= 100 else max(5, args.runs // 3)
        with torch.no_grad():
            for _ in range(3):
                model(ids)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                model(ids)
                times.append(time.perf_counter() - t0)
        print(f"forward/gpt2-small/{b}x{t}: median {1e3 * statistics.median(times):.1f} ms, "
              f"mean {1e3 * statistics.mean(times):.1f} ms over {runs} runs")


def serve(model, g) -> None:
    inputs = {}
    with torch.no_grad():
        for line in sys.stdin:
            b, t = (int(x) for x in line.strip().split("x"))
            if (b, t) not in inputs:
                inputs[(b, t)] = torch.randint(0, 50257, (b, t), generator=g)
                for _ in range(3):
                    model(inputs[(b, t)])
            t0 = time.perf_counter()
            out = model(inputs[(b, t)])
            elapsed = time.perf_counter() - t0
            del out
            print(f"{elapsed:.6f}", flush=True)


if __name__ == "__main__":
    main()
