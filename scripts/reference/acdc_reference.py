"""ACDC (Conmy et al. 2023) at fixed thresholds on the tiny GPT-2 fixture: an independent
PyTorch implementation of ACDC's loop over TransformerLens 3.9 hooks, written from
ArthurConmy/Automatic-Circuit-Discovery (bc99ace, `acdc/TLACDCExperiment.py` `step` /
`receiver_hook` / `current_node_connected`, `acdc/TLACDCCorrespondence.py` `setup_from_model`,
`acdc/main.py`'s defaults) on EAP-IG's edge graph.

Why not the original itself: its GPT-2 correspondence also has a "direct computation" edge
from every head's q/k/v input to its q/k/v (removing it patches the head's query, key or value
as a whole), which EAP-IG's graph (burnlens's) does not have, so its kept sets are not
comparable edge for edge; and it needs wandb and its own TransformerLens fork to run. What this
script keeps of ACDC, point by point:

- the edge patch: a destination's input is its value in the corrupted run plus, for every edge
  still present, the source's output in the current (patched) forward minus its output in the
  corrupted run (ACDC's `receiver_hook` with `online_cache` and `corrupted_cache`);
- the order: destinations from the logits back, in the reverse order TransformerLens fires
  their hooks (per layer: the MLP input, then the heads' value, key and query inputs, each
  from the last head to the first); a destination's incoming edges latest source first (per
  layer the MLP, then the heads from the last to the first: `setup_from_model`'s order with
  `main.py`'s `names_mode` and `indices_mode` "normal");
- a destination whose node no longer has an outgoing edge loses its incoming edges without a
  forward (`current_node_connected`);
- the rule: with the edge removed, run the task; `result = new − current`; remove the edge
  for good (and take `new` as current) when `result < τ`, else restore it
  (`abs_value_threshold` off); the current metric is recomputed from a forward at each
  destination (`step`'s `update_cur_metric`);
- the metrics: KL(clean ‖ patched) of the next-token distributions at the last position,
  averaged over the batch (ACDC's `kl_divergence`, its default), and the negated mean logit
  difference answer − foil.

Writes `fixtures/reference/tiny-gpt2/acdc.json`: the task's token ids, and per run (metric, τ)
the kept edges by EAP-IG's name, every edge's effect (`null` for edges removed without a
forward), the kept circuit's metric, the number of forwards, and the smallest distance of an
effect from τ (how robust the decisions are to float noise).

Usage: HF_HUB_OFFLINE=1 python acdc_reference.py [--model DIR] [--out DIR]
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args, load_tl  # noqa: E402


class Graph:
    """EAP-IG's edge graph: sources `input`, `a{l}.h{h}`, `m{l}`; destinations the heads'
    q/k/v inputs, the MLPs' inputs and the logits."""

    def __init__(self, n_layers, n_heads):
        self.n_layers, self.n_heads = n_layers, n_heads
        # Sources in the order they write to the residual stream.
        self.sources = ["input"]
        for l in range(n_layers):
            self.sources += [f"a{l}.h{h}" for h in range(n_heads)] + [f"m{l}"]

    def sources_before(self, dest):
        """The sources that write before `dest` reads, latest first (ACDC's sender order)."""
        kind, l = dest[0], dest[1]
        if kind == "logits":
            n = len(self.sources)
        elif kind == "mlp":
            n = 1 + l * (self.n_heads + 1) + self.n_heads
        else:
            n = 1 + l * (self.n_heads + 1)
        return list(reversed(self.sources[:n]))

    def dests_backwards(self):
        """Destinations from the logits back, in reverse hook-firing order."""
        out = [("logits", self.n_layers)]
        for l in reversed(range(self.n_layers)):
            out.append(("mlp", l))
            for letter in "vkq":
                out += [(letter, l, h) for h in reversed(range(self.n_heads))]
        return out

    @staticmethod
    def dest_name(dest):
        if dest[0] == "logits":
            return "logits"
        if dest[0] == "mlp":
            return f"m{dest[1]}"
        return f"a{dest[1]}.h{dest[2]}<{dest[0]}>"

    @staticmethod
    def node_of(dest):
        if dest[0] == "logits":
            return None
        if dest[0] == "mlp":
            return f"m{dest[1]}"
        return f"a{dest[1]}.h{dest[2]}"


def source_value(cache, name):
    """A source's output `[batch, pos, d_model]` from a cache of TransformerLens hooks."""
    if name == "input":
        return cache["blocks.0.hook_resid_pre"]
    if name.startswith("m"):
        return cache[f"blocks.{int(name[1:])}.hook_mlp_out"]
    l, h = name[1:].split(".h")
    return cache[f"blocks.{int(l)}.attn.hook_result"][:, :, int(h)]


SOURCE_HOOKS = ("hook_resid_pre", "attn.hook_result", "hook_mlp_out")


class EdgePatcher:
    """Forwards of the clean prompts with some edges ablated to the corrupted run, as ACDC's
    receiver hooks do it."""

    def __init__(self, tl, clean, corrupted):
        self.tl, self.clean = tl, clean
        self.graph = Graph(tl.cfg.n_layers, tl.cfg.n_heads)
        L = tl.cfg.n_layers
        _, cache = tl.run_with_cache(corrupted)
        self.corrupted = {k: v.clone() for k, v in cache.items()}
        self.dest_hooks = {f"blocks.{L - 1}.hook_resid_post": ("logits", L)}
        for l in range(L):
            self.dest_hooks[f"blocks.{l}.hook_mlp_in"] = ("mlp", l)
            for letter in "qkv":
                self.dest_hooks[f"blocks.{l}.hook_{letter}_input"] = (letter, l)
        self.forwards = 0

    def run(self, present):
        """Logits of the clean prompts with only the edges in `present` (a set of names) carrying
        the clean-side value."""
        online = {}
        g = self.graph

        def save(z, hook):
            online[hook.name] = z
            return z

        def receive(z, hook):
            kind = self.dest_hooks[hook.name]
            new = self.corrupted[hook.name].clone()
            if kind[0] in "qkv":
                l = kind[1]
                for h in range(g.n_heads):
                    dest = (kind[0], l, h)
                    for src in g.sources_before(dest):
                        if f"{src}->{g.dest_name(dest)}" in present:
                            new[:, :, h] += source_value(online, src) - source_value(
                                self.corrupted, src)
            else:
                dest = kind
                for src in g.sources_before(dest):
                    if f"{src}->{g.dest_name(dest)}" in present:
                        new += source_value(online, src) - source_value(self.corrupted, src)
            return new

        hooks = [(name, receive) for name in self.dest_hooks]
        hooks += [(lambda n: any(n.endswith(s) for s in SOURCE_HOOKS), save)]
        self.forwards += 1
        with torch.no_grad():
            return self.tl.run_with_hooks(self.clean, fwd_hooks=hooks)


def acdc(patcher, loss, tau):
    """ACDC's loop (see the module doc); returns (kept names, effects by name)."""
    g = patcher.graph
    present = set()
    for dest in g.dests_backwards():
        for src in g.sources_before(dest):
            present.add(f"{src}->{g.dest_name(dest)}")
    effects = {name: None for name in present}
    for dest in g.dests_backwards():
        node = g.node_of(dest)
        incoming = [f"{src}->{g.dest_name(dest)}" for src in g.sources_before(dest)]
        if node is not None and not any(e.startswith(node + "->") for e in present):
            present.difference_update(incoming)
            continue
        current = loss(patcher.run(present))
        for edge in incoming:
            present.discard(edge)
            new = loss(patcher.run(present))
            result = new - current
            effects[edge] = result
            if result < tau:
                current = new
            else:
                present.add(edge)
    return present, effects


def main() -> None:
    args = fixture_args()
    torch.manual_seed(5)
    tl = load_tl(args.model)
    tl.set_use_attn_result(True)
    tl.set_use_split_qkv_input(True)
    tl.set_use_hook_mlp_in(True)
    vocab = tl.cfg.d_vocab
    n, t = 3, 6
    clean = torch.randint(1, vocab, (n, t))
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(1, vocab, (n,))
    corrupted[:, 3] = torch.randint(1, vocab, (n,))
    answer = torch.randint(1, vocab, (n,))
    foil = torch.randint(1, vocab, (n,))
    rows = torch.arange(n)
    with torch.no_grad():
        clean_logprobs = F.log_softmax(tl(clean)[:, -1], dim=-1)

    def kl(logits):
        logprobs = F.log_softmax(logits[:, -1], dim=-1)
        return float(F.kl_div(logprobs, clean_logprobs, log_target=True,
                              reduction="none").sum(-1).mean())

    def neg_logit_diff(logits):
        last = logits[:, -1]
        return float(-(last[rows, answer] - last[rows, foil]).mean())

    out = {"acdc_commit": "bc99ace", "transformer_lens": "3.9.0", "clean": clean.tolist(),
           "corrupted": corrupted.tolist(), "answer": answer.tolist(), "foil": foil.tolist(),
           "runs": []}
    for metric, loss, tau in [("kl", kl, 5e-3), ("kl", kl, 1e-2), ("logit-diff", neg_logit_diff, 1e-2)]:
        patcher = EdgePatcher(tl, clean, corrupted)
        start = time.perf_counter()
        kept, effects = acdc(patcher, loss, tau)
        seconds = time.perf_counter() - start
        value = loss(patcher.run(kept))
        evaluated = [v for v in effects.values() if v is not None]
        margin = min(abs(v - tau) for v in evaluated)
        out["runs"].append({
            "metric": metric, "tau": tau,
            "kept": sorted(kept),
            "metric_value": value if metric == "kl" else -value,
            "effects": effects, "forwards": patcher.forwards, "seconds": seconds,
            "min_margin": margin,
        })
        print(f"{metric} tau {tau}: kept {len(kept)} of {len(effects)} edges, "
              f"{patcher.forwards} forwards, {seconds:.2f} s, metric {value:.6g}, "
              f"closest effect to tau {margin:.2e}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "acdc.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
