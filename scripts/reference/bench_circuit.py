"""Python anchors for benches/circuit.rs: circuit discovery by the reference code, timed.

1. EAP over the whole edge graph of --model (GPT-2 small's shapes, random weights) on the task
   in --task (clean/corrupted ids of one length, answer and foil ids), by EAP-IG's own
   `get_scores_eap` (hannamw/EAP-IG 795f560, with the two shims of circuit_reference.py), with
   the logit difference answer − foil at the last position, summed over the batch (EAP-IG
   divides by the number of examples: the gradient of the batch mean).
2. ACDC on --organism with the task in --organism-task (KL to the clean run, at each τ of the
   task file), by acdc_reference.py's loop (ACDC's algorithm, one forward per edge, TransformerLens
   3.9 hooks).

Writes --out (JSON): per part the seconds (set-up apart from the scoring or the search), EAP's
score of every edge by EAP-IG's name, and per τ ACDC's kept edges, metric and forwards.

Usage: python bench_circuit.py --model DIR --task task.json --organism DIR
       --organism-task acdc_task.json --out anchor.json [--threads 2]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import circuit_reference  # noqa: E402,F401  (installs EAP-IG's two shims)
from acdc_reference import EdgePatcher, acdc  # noqa: E402
from eap import attribute  # noqa: E402
from eap.graph import Graph  # noqa: E402
from hooks_reference import load_tl  # noqa: E402


def circuit_model(model_dir):
    tl = load_tl(model_dir)
    tl.set_use_attn_result(True)
    tl.set_use_split_qkv_input(True)
    tl.set_use_hook_mlp_in(True)
    return tl


def eap(model_dir, task):
    tl = circuit_model(model_dir)
    clean, corrupted = task["clean"], task["corrupted"]
    label = torch.stack([torch.tensor(task["answer"]), torch.tensor(task["foil"])], 1)
    rows = torch.arange(len(clean))

    def metric(logits, clean_logits, input_lengths, label):
        last = logits[rows, -1]
        return (last[rows, label[:, 0]] - last[rows, label[:, 1]]).sum()

    data = [(clean, corrupted, label)]
    with torch.no_grad():
        tl(torch.tensor(clean))  # warm-up
    t0 = time.perf_counter()
    graph = Graph.from_model(tl)
    graph_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = attribute.get_scores_eap(tl, graph, data, metric, quiet=True)
    seconds = time.perf_counter() - t0
    graph.scores[:] = scores.to(graph.scores.device)
    return {"graph_seconds": graph_seconds, "seconds": seconds,
            "n_edges": len(graph.edges),
            "scores": {name: float(edge.score) for name, edge in graph.edges.items()}}


def acdc_run(model_dir, task):
    tl = circuit_model(model_dir)
    clean, corrupted = torch.tensor(task["clean"]), torch.tensor(task["corrupted"])
    t0 = time.perf_counter()
    with torch.no_grad():
        clean_logprobs = F.log_softmax(tl(clean)[:, -1], dim=-1)
    patcher = EdgePatcher(tl, clean, corrupted)
    setup_seconds = time.perf_counter() - t0

    def kl(logits):
        logprobs = F.log_softmax(logits[:, -1], dim=-1)
        return float(F.kl_div(logprobs, clean_logprobs, log_target=True,
                              reduction="none").sum(-1).mean())

    runs = []
    for tau in task["taus"]:
        patcher.forwards = 0
        t0 = time.perf_counter()
        kept, _ = acdc(patcher, kl, tau)
        seconds = time.perf_counter() - t0
        runs.append({"tau": tau, "seconds": seconds, "forwards": patcher.forwards,
                     "kept": sorted(kept), "metric_value": kl(patcher.run(kept))})
    return {"setup_seconds": setup_seconds, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--organism", required=True)
    ap.add_argument("--organism-task", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.task) as f:
        task = json.load(f)
    with open(args.organism_task) as f:
        organism_task = json.load(f)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "eap_ig_commit": "795f560", "transformer_lens": "3.9.0"}
    out["eap"] = eap(args.model, task)
    print(f"EAP-IG get_scores_eap: {out['eap']['seconds']:.2f} s for "
          f"{out['eap']['n_edges']} edges", flush=True)
    out["acdc"] = acdc_run(args.organism, organism_task)
    for r in out["acdc"]["runs"]:
        print(f"ACDC reference loop, tau {r['tau']}: {r['seconds']:.2f} s, {r['forwards']} "
              f"forwards, {len(r['kept'])} edges kept", flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
