"""Reference outputs of Hugging Face `transformers` on the tiny GPT-2 fixture.

Writes `fixtures/reference/tiny-gpt2/`:
- `reference.json`: prompts and their token ids, padded batches, greedy and beam-search
  continuations, mean and per-token losses, perplexities;
- `logits.safetensors`: full logits for every prompt (`prompt.{i}` -> [pos, vocab]) and for the
  padded batches (`batch.left`, `batch.right` -> [batch, pos, vocab]).

Usage: python reference.py [--model fixtures/tiny-gpt2] [--out fixtures/reference/tiny-gpt2]
Runs offline (HF_HUB_OFFLINE=1); never needs the hub.
"""

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "Hello, world!",
    "When Mary and John went to the store, John gave a drink to",
    "def forward(self, x):\n    return",
    "café in Zürich 🙂 costs 12345",
]


def padded(ids_list, pad_id, side):
    """Pads to one length; positions are derived from the mask (cumsum - 1, clamped at 0)."""
    t = max(len(x) for x in ids_list)
    ids, mask = [], []
    for x in ids_list:
        pad = [pad_id] * (t - len(x))
        m0, m1 = [0] * (t - len(x)), [1] * len(x)
        ids.append(pad + x if side == "left" else x + pad)
        mask.append(m0 + m1 if side == "left" else m1 + m0)
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(root, "fixtures", "tiny-gpt2"))
    ap.add_argument("--out", default=os.path.join(root, "fixtures", "reference", "tiny-gpt2"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    model = GPT2LMHeadModel.from_pretrained(
        args.model, local_files_only=True, attn_implementation="eager"
    ).eval()
    eos = model.config.eos_token_id
    tensors, out = {}, {"transformers": __import__("transformers").__version__,
                        "torch": torch.__version__, "prompts": []}

    with torch.no_grad():
        for i, text in enumerate(PROMPTS):
            ids = tok.encode(text).ids
            x = torch.tensor([ids])
            res = model(x, labels=x)
            logits = res.logits[0]
            tensors[f"prompt.{i}"] = logits.contiguous()
            per_tok = F.cross_entropy(logits[:-1], x[0, 1:], reduction="none")
            greedy = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=20,
                                    do_sample=False, pad_token_id=eos)
            entry = {
                "text": text,
                "ids": ids,
                "str_tokens": [tok.decode([t]) for t in ids],
                "loss": res.loss.item(),
                "per_token_loss": per_tok.tolist(),
                "perplexity": torch.exp(res.loss).item(),
                "greedy_20": greedy[0, len(ids):].tolist(),
            }
            # Beam search, once with the real EOS (rarely produced by a random model) and once
            # with the third greedy token standing in as EOS, so that finished hypotheses,
            # early stopping and padding of finished beams are exercised.
            stand_in = entry["greedy_20"][2]
            for eos_id, tag in ((eos, "eos"), (stand_in, "stand_in_eos")):
                for early in (True, False):
                    beam = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12,
                                          do_sample=False, num_beams=4, num_return_sequences=4,
                                          early_stopping=early, eos_token_id=eos_id,
                                          pad_token_id=eos, output_scores=True,
                                          return_dict_in_generate=True)
                    entry[f"beam4_{tag}_early_{str(early).lower()}"] = {
                        "eos_token_id": eos_id,
                        "sequences": [s[len(ids):].tolist() for s in beam.sequences],
                        "scores": beam.sequences_scores.tolist(),
                    }
            out["prompts"].append(entry)

        # Padded batches of unequal lengths (prompts 0..3), left and right padding.
        ids_list = [p["ids"] for p in out["prompts"][:3]]
        out["batch"] = {"prompt_indices": [0, 1, 2]}
        for side in ("left", "right"):
            ids, mask, pos = padded(ids_list, eos, side)
            logits = model(ids, attention_mask=mask, position_ids=pos).logits
            tensors[f"batch.{side}"] = logits.contiguous()
            labels = ids.masked_fill(mask == 0, -100)
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            per_tok = F.cross_entropy(shift_logits.reshape(-1, logits.shape[-1]),
                                      shift_labels.reshape(-1), reduction="none",
                                      ignore_index=-100).reshape(shift_labels.shape)
            valid = (shift_labels != -100)
            mean = per_tok[valid].mean()
            seq = (per_tok * valid).sum(-1) / valid.sum(-1)
            out["batch"][side] = {
                "ids": ids.tolist(),
                "mask": mask.tolist(),
                "positions": pos.tolist(),
                "mean_loss": mean.item(),
                "per_token_loss": per_tok.tolist(),
                "sequence_perplexity": torch.exp(seq).tolist(),
            }

    save_file(tensors, os.path.join(args.out, "logits.safetensors"))
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
