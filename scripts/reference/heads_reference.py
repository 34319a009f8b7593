"""TransformerLens head-detector reference (`transformer_lens.head_detector`, 3.9).

TransformerLens scores a head by comparing its attention pattern with a detection pattern:
previous-token, duplicate-token and induction patterns are built from the tokens by its own
`get_*_detection_pattern` functions, and `compute_head_attention_similarity_score` gives the
"mul" score (the share of attention on the pattern) or the "abs" score (1 minus the rounded
mean absolute difference), optionally leaving the first key or the current token out.

`detect_head` itself tokenizes strings with the model's tokenizer; the checkpoints here are
loaded without one (../shared/ORACLE.md), so this script runs its two building blocks on token
ids, which is what `detect_head` does after tokenizing. A custom detection pattern (a head
attending k tokens back) goes through the same scorer, as `detect_head` accepts one.

Writes fixtures/reference/<fixture>/heads.json: per sequence, the token ids, and per
(pattern, measure, exclude_bos, exclude_current_token) the [n_layers, n_heads] scores.

Usage: HF_HUB_OFFLINE=1 python heads_reference.py [--fixture tiny-gpt2|organism] [--model DIR] [--out DIR]
"""

import argparse
import itertools
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformer_lens import head_detector as hd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args, load_tl  # noqa: E402


def back_pattern(n, k):
    """A head that attends exactly k tokens back (k = 1 is the previous-token pattern)."""
    d = torch.zeros(n, n)
    for i in range(k, n):
        d[i, i - k] = 1.0
    return d


def main() -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--fixture", choices=["tiny-gpt2", "organism"], default="tiny-gpt2")
    known, rest = pre.parse_known_args()
    fixture = known.fixture
    sys.argv = sys.argv[:1] + rest
    args = fixture_args(fixture=fixture)
    tl = load_tl(args.model)
    torch.manual_seed(5)
    if fixture == "organism":
        # Retrieval-style token ids of the organism: a random segment said twice.
        vocab = tl.cfg.d_vocab
        seqs = [torch.randint(300, vocab, (9,)).repeat(2).tolist() for _ in range(2)]
    else:
        vocab = tl.cfg.d_vocab
        seg = torch.randint(1, vocab, (6,))
        seqs = [
            torch.cat([seg, seg, torch.randint(1, vocab, (3,))]).tolist(),
            torch.randint(1, 20, (12,)).tolist(),  # few distinct ids: many duplicates
        ]
    out = []
    for ids in seqs:
        tokens = torch.tensor([ids])
        _, cache = tl.run_with_cache(tokens, remove_batch_dim=True)
        patterns = {
            "previous_token": hd.get_previous_token_head_detection_pattern(tokens),
            "duplicate_token": hd.get_duplicate_token_head_detection_pattern(tokens),
            "induction": hd.get_induction_head_detection_pattern(tokens),
            "back_2": back_pattern(len(ids), 2),
            "back_3": back_pattern(len(ids), 3),
        }
        scores = {}
        for (name, det), measure, bos, cur in itertools.product(
            patterns.items(), ["mul", "abs"], [False, True], [False, True]
        ):
            table = []
            for layer in range(tl.cfg.n_layers):
                row = []
                for head in range(tl.cfg.n_heads):
                    # The scorer zeroes excluded entries in place: give it a copy.
                    a = cache["pattern", layer, "attn"][head].clone()
                    row.append(hd.compute_head_attention_similarity_score(
                        a, detection_pattern=det.clone(), exclude_bos=bos,
                        exclude_current_token=cur, error_measure=measure))
                table.append(row)
            scores[f"{name}/{measure}/bos={int(bos)}/cur={int(cur)}"] = table
        out.append({"ids": ids, "scores": scores})
    path = os.path.join(args.out, "heads.json")
    with open(path, "w") as f:
        json.dump({"transformer_lens": "3.9.0", "sequences": out}, f, indent=1)
        f.write("\n")
    print(path, len(out), "sequences")


if __name__ == "__main__":
    main()
