"""EAP and EAP-IG edge scores on the tiny GPT-2 fixture, computed by the reference
implementation (hannamw/EAP-IG at 795f560, `eap.attribute.get_scores_eap` /
`get_scores_eap_ig`) with TransformerLens 3.9.0.

Writes `fixtures/reference/tiny-gpt2/circuit.json`: the token ids of the clean and corrupted
prompts, the answer and foil ids, and every edge's EAP and EAP-IG (5 steps) score keyed by
EAP-IG's edge name. The metric is the logit difference answer - foil at the last position,
summed over the batch, so that EAP-IG's division by the number of examples makes the score the
gradient of the batch mean (burnlens's definition).

Two shims, neither touching the algorithm: EAP-IG allocates its score matrix with
`device='cuda'`, mapped here to the CPU; and its `tokenize_plus` (which needs a tokenizer)
is replaced by one that takes token ids as they are (no BOS, no padding: all prompts have one
length).

Install: pip install --no-deps <a checkout of hannamw/EAP-IG> einops tqdm (besides
requirements.txt).

Usage: HF_HUB_OFFLINE=1 python circuit_reference.py [--model DIR] [--out DIR]
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args, load_tl  # noqa: E402

_zeros = torch.zeros


def _cpu_zeros(*args, **kwargs):
    if kwargs.get("device") == "cuda":
        kwargs["device"] = "cpu"
    return _zeros(*args, **kwargs)


torch.zeros = _cpu_zeros

import eap.attribute as attribute  # noqa: E402
from eap.graph import Graph  # noqa: E402


def ids_as_tokens(model, inputs, max_length=None):
    tokens = torch.tensor(inputs)
    mask = torch.ones_like(tokens)
    return tokens, mask, mask.sum(1), tokens.shape[1]


attribute.tokenize_plus = ids_as_tokens


def main() -> None:
    args = fixture_args()
    torch.manual_seed(3)
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

    def metric(logits, clean_logits, input_lengths, label):
        last = logits[rows, -1]
        return (last[rows, label[:, 0]] - last[rows, label[:, 1]]).sum()

    label = torch.stack([answer, foil], 1)
    data = [(clean.tolist(), corrupted.tolist(), label)]
    out = {"eap_ig_commit": "795f560", "transformer_lens": "3.9.0", "clean": clean.tolist(),
           "corrupted": corrupted.tolist(), "answer": answer.tolist(), "foil": foil.tolist(),
           "ig_steps": 5}
    for key, run in [
        ("eap", lambda g: attribute.get_scores_eap(tl, g, data, metric, quiet=True)),
        ("eap_ig", lambda g: attribute.get_scores_eap_ig(tl, g, data, metric, steps=5, quiet=True)),
    ]:
        graph = Graph.from_model(tl)
        graph.scores[:] = run(graph).to(graph.scores.device)
        out[key] = {name: float(edge.score) for name, edge in graph.edges.items()}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "circuit.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}: {len(out['eap'])} edges")


if __name__ == "__main__":
    main()
