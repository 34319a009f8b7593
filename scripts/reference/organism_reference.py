"""`transformers` logits of the model organism, to show it is a real GPT-2 checkpoint.

Loads fixtures/organism (config.json, model.safetensors, tokenizer.json) with
`GPT2LMHeadModel.from_pretrained` and `PreTrainedTokenizerFast(tokenizer_file=...)`, runs a few
prompts built from its manifest (held-out fact templates and an in-context retrieval prompt),
and writes fixtures/reference/organism/{logits.json,logits.safetensors}: the token ids the
Python tokenizer gives, the full logits `[pos, vocab]` of each prompt, and the top prediction.

Usage: HF_HUB_OFFLINE=1 python organism_reference.py [--model DIR] [--out DIR]
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args  # noqa: E402


def main() -> None:
    args = fixture_args(fixture="organism")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.model, "manifest.json")) as f:
        manifest = json.load(f)
    people = manifest["world"]["people"]
    relations = manifest["relations"]
    held_prefix = manifest["prefixes"]["held_out"][0]
    prompts = [
        held_prefix + people[0]["name"] + relations[0]["phrases"][0],
        people[1]["name"] + relations[1]["held_out_phrases"][0],
        people[2]["name"] + relations[2]["phrases"][1],
        "Alice is from France. Bob is from Japan. Carol is from Peru. Bob is from",
    ]
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.model, "tokenizer.json"))
    model = GPT2LMHeadModel.from_pretrained(args.model, local_files_only=True).eval()
    tensors, records = {}, []
    for i, p in enumerate(prompts):
        ids = tok(p)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        tensors[f"prompt.{i}"] = logits.float().contiguous()
        top = int(logits[-1].argmax())
        records.append({"prompt": p, "ids": ids, "top": top, "top_token": tok.decode([top])})
    save_file(tensors, os.path.join(args.out, "logits.safetensors"))
    with open(os.path.join(args.out, "logits.json"), "w") as f:
        json.dump({"transformers": __import__("transformers").__version__, "prompts": records}, f,
                  indent=1)
        f.write("\n")
    for r in records:
        print(repr(r["prompt"]), "->", repr(r["top_token"]))


if __name__ == "__main__":
    main()
