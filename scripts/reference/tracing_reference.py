"""ROME causal-tracing reference on the tiny GPT-2 fixture.

Implements the algorithm of ROME's `experiments/causal_trace.py` (Meng et al., 2022) on the
`transformers` model with plain PyTorch forward hooks:

- the noise level is `factor` x the standard deviation (unbiased, over every element) of the
  token embeddings of the dataset's subjects, each subject tokenized on its own
  (`collect_embedding_std`);
- each prompt runs as a batch of `samples + 1` copies; rows 1.. get `noise` added to the token
  embeddings (the `transformer.wte` output) of the subject tokens, found by ROME's
  decode-and-join `find_token_range`;
- the noise is `level * RandomState(1).randn(samples, subject_len, d_model)`, drawn anew
  (same seed) for every run as ROME does; it is saved as float32 and added as float32, so that
  another implementation can replay it exactly;
- tables are computed at window 2 and at ROME's default 10 (keys `mlp.w10.<i>`,
  `attn.w10.<i>`), which the 2-layer model clips to both layers;
- a restoration copies row 0's output of `transformer.h.{l}` (state), or of `.mlp` / `.attn`
  for every layer of the window `max(0, L - w // 2) .. min(n_layers, L - (-w // 2))`, into the
  other rows at one token;
- the score is `softmax(logits[1:, -1]).mean(0)[answer]`, the answer being row 0's argmax;
- the dataset roll-up follows ROME's `average_causal_effects.ipynb`: six token groups, their
  mean scores per layer, the mean low score, and 1.96 * std / sqrt(n_prompts) intervals.

Writes fixtures/reference/tiny-gpt2/tracing.{json,safetensors}.

Usage: HF_HUB_OFFLINE=1 python tracing_reference.py [--model DIR] [--out DIR]
"""

import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args  # noqa: E402
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

FACTS = [
    ("The Louvre is located in the city of", "The Louvre"),
    ("Toyota, a company from", "Toyota"),
    ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux"),
]
SAMPLES = 10
FACTOR = 3.0
WINDOW = 2
# ROME's default window, wider than the 2-layer fixture: ROME clips it at the model's ends.
WIDE = 10


def window_layers(kind, layer, window, n_layers):
    """The layers restored for column `layer`: ROME's window, clipped at the model's ends."""
    if kind == "state":
        return [layer]
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


def token_range(tok, ids, subject):
    """ROME's find_token_range: tokens whose decoded text spans the subject."""
    toks = [tok.decode([i]) for i in ids]
    whole = "".join(toks)
    char_loc = whole.index(subject)
    loc, start = 0, None
    for i, t in enumerate(toks):
        loc += len(t)
        if start is None and loc > char_loc:
            start = i
        if loc >= char_loc + len(subject):
            return start, i + 1
    raise ValueError(subject)


def run(model, ids, rows, e_range, noise, restore):
    """One traced forward. `restore` maps module -> list of token indices."""
    b, e = e_range
    handles = []

    def corrupt(_module, _inp, out):
        out = out.clone()
        out[1:, b:e] += noise
        return out

    handles.append(model.transformer.wte.register_forward_hook(corrupt))
    for module, tokens in restore.items():
        def hook(_module, _inp, out, tokens=tokens):
            h = out[0] if isinstance(out, tuple) else out
            for t in tokens:
                h[1:, t] = h[0, t]
            return out
        handles.append(module.register_forward_hook(hook))
    try:
        logits = model(torch.tensor([ids] * rows)).logits
    finally:
        for h in handles:
            h.remove()
    return logits


def layer_module(model, layer, kind):
    block = model.transformer.h[layer]
    return {"state": block, "mlp": block.mlp, "attn": block.attn}[kind]


def main() -> None:
    args = fixture_args()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.model, "tokenizer.json"))
    model = GPT2LMHeadModel.from_pretrained(args.model, local_files_only=True,
                                            attn_implementation="eager").eval()
    n_layers, d = model.config.n_layer, model.config.n_embd
    out = {"samples": SAMPLES, "factor": FACTOR, "window": WINDOW, "prompts": [],
           "wide_window": WIDE,
           "wide_window_layers": [window_layers("mlp", L, WIDE, n_layers) for L in range(n_layers)]}
    tensors = {}
    with torch.no_grad():
        embs = [model.transformer.wte(torch.tensor(tok.encode(s))) for _, s in FACTS]
        std = torch.cat(embs).std().item()
        level = FACTOR * std
        out["embedding_std"] = std
        out["noise_level"] = level
        for i, (prompt, subject) in enumerate(FACTS):
            ids = tok.encode(prompt)
            e_range = token_range(tok, ids, subject)
            sub = e_range[1] - e_range[0]
            rs = numpy.random.RandomState(1)
            noise = torch.from_numpy(level * rs.randn(SAMPLES, sub, d)).float()
            clean = torch.softmax(model(torch.tensor([ids])).logits[0, -1], dim=0)
            answer = int(clean.argmax())
            high = clean[answer].item()

            def score(restore):
                logits = run(model, ids, SAMPLES + 1, e_range, noise, restore)
                return torch.softmax(logits[1:, -1, :], dim=1).mean(dim=0)[answer].item()

            low = score({})
            for kind, window, key in [("state", 1, "state"), ("mlp", WINDOW, "mlp"),
                                      ("attn", WINDOW, "attn"), ("mlp", WIDE, "mlp.w10"),
                                      ("attn", WIDE, "attn.w10")]:
                table = []
                for t in range(len(ids)):
                    row = []
                    for layer in range(n_layers):
                        row.append(score({layer_module(model, L, kind): [t]
                                          for L in window_layers(kind, layer, window, n_layers)}))
                    table.append(row)
                tensors[f"{key}.{i}"] = torch.tensor(table, dtype=torch.float32)
            tensors[f"noise.{i}"] = noise.contiguous()
            out["prompts"].append({"prompt": prompt, "subject": subject, "ids": ids,
                                   "subject_range": list(e_range), "answer_id": answer,
                                   "high_score": high, "low_score": low})
    # ROME's roll-up over the prompts (all of them: every answer is the model's own).
    rollup = {}
    n = len(FACTS)
    for kind in ["state", "mlp", "attn"]:
        groups = [[] for _ in range(6)]
        lows = []
        for i, p in enumerate(out["prompts"]):
            scores = tensors[f"{kind}.{i}"].numpy()
            first_e, first_a = p["subject_range"]
            last_e, last_a = first_a - 1, len(scores) - 1
            lows.append(p["low_score"])
            groups[0].append(scores[first_e][None])
            groups[1].append(scores[first_e + 1:last_e])
            groups[2].append(scores[last_e][None])
            groups[3].append(scores[first_a][None])
            groups[4].append(scores[first_a + 1:last_a])
            groups[5].append(scores[last_a][None])
        mean_low = float(numpy.mean(lows))
        stacked = [numpy.concatenate(g) for g in groups]
        rollup[kind] = {
            "low_score": mean_low,
            "aie": [(g.mean(axis=0) - mean_low).tolist() if len(g) else None for g in stacked],
            "interval": [(g.std(axis=0) * 1.96 / math.sqrt(n)).tolist() if len(g) else None
                         for g in stacked],
            "count": [int(g.shape[0]) for g in stacked],
        }
    out["rollup"] = rollup
    save_file(tensors, os.path.join(args.out, "tracing.safetensors"))
    with open(os.path.join(args.out, "tracing.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(json.dumps({k: v for k, v in out.items() if k != "rollup"}, indent=1)[:2000])


if __name__ == "__main__":
    main()
