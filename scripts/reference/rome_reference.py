"""ROME rank-one editing reference on the tiny GPT-2 fixture.

An independent PyTorch implementation of the algorithm of ROME's `rome/` package (Meng et al.,
2022) on the `transformers` model, with plain forward hooks, torch autograd and
`torch.optim.Adam`:

- the keys' uncentred second moment at the edited layer: the input of
  `transformer.h.{l}.mlp.c_proj` at every token of TEXTS (each text run on its own), summed as
  k kT in float64 and divided by the token count (`layer_stats` with `mom2`);
- the last subject token of a template is found as ROME's `get_words_idxs_in_templates` does
  (the prefix tokenized without its trailing space, the word with a leading space);
- k* = the key at the last subject token averaged over TEMPLATES filled with the prompt;
  u = C^-1 k* (solved in float64), normalised;
- v*: delta (d_model) is added to the output of `transformer.h.{l}.mlp` at the lookup index of
  every rewriting prompt (template + prompt + the target's tokens but the last) and of the
  essence prompt "{} is a"; the loss is the target's NLL per token (averaged over the rewriting
  prompts) + kl_factor * KL(current essence distribution || initial) (`kl_div(init, cur,
  log_target=True, reduction="batchmean")`) + v_weight_decay * |delta| / |v0|^2; Adam (lr
  v_lr) for v_num_grad_steps, the last iteration measured but not stepped, early stop below
  5e-2, delta projected into the ball of radius clamp_norm_factor * |v0| after each step;
- right = (v0 + delta - W k) / (k . u) with k, W k at the last subject token of the bare prompt;
  the update u right^T is added to `c_proj.weight` (Conv1D, [d_mlp, d_model]).

The context templates are fixed strings here (ROME samples them from the model), so that both
sides use the same ones. It also scores prompts as ROME's CounterFact evaluation does (`test_batch_prediction`: the mean
NLL per token of " " + target after the prompt) before and after the edit, and computes ROME's
n-gram entropy (bigram and trigram entropies in bits, weighted 2/3 and 4/3, averaged) with a
regex word tokenizer in place of NLTK's. Writes fixtures/reference/tiny-gpt2/rome.json.

Usage: HF_HUB_OFFLINE=1 python rome_reference.py [--model DIR] [--out DIR]
"""

import json
import math
import os
import re
import sys
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args  # noqa: E402
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

LAYER = 0
HPARAMS = {
    "v_num_grad_steps": 20,
    "v_lr": 0.5,
    "v_weight_decay": 0.5,
    "clamp_norm_factor": 4.0,
    "kl_factor": 0.0625,
}
TEMPLATES = ["{}", "The weather was mild. {}", "In the morning, she said. {}"]
REQUEST = {"prompt": "{} is located in the city of", "subject": "The Louvre",
           "target_new": " Rome and"}
TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Interpretability research tries to explain what neural networks compute.",
    "Activation patching replaces an activation from one run with another run's.",
    "Paris is the capital of France, and Rome is the capital of Italy.",
    "A rank-one update changes a weight matrix along a single direction.",
    "The museum opened its doors to visitors early on a cold Tuesday morning.",
    "Numbers like 1234, 56 and 7.89 appear in tables, prices and dates.",
    "She plays the violin every evening, while he practices the piano.",
    "Language models predict the next token from the tokens that came before it.",
    "Mountains rise above the valley; snow covers their peaks in winter.",
    "The committee will meet again next week to discuss the budget proposal.",
    "Fresh bread, warm soup and a glass of water made a simple dinner.",
    "def add(a, b):\n    return a + b  # a tiny function in Python",
    "Trains leave the station every fifteen minutes during rush hour.",
    "Causal tracing corrupts the subject and restores one hidden state at a time.",
    "The Louvre is located in the city of Paris, on the right bank of the Seine.",
    "Birds migrate south when the days grow short and the air turns cold.",
]


NLL_PROMPTS = ["The Louvre is located in the city of", "The Louvre is in", "Paris is home to"]
TARGET_TRUE = "Paris"
ENTROPY_TEXTS = [
    "the cat sat on the mat and the cat sat on the mat again.",
    "Rome, Paris and Berlin are capitals; Paris is the largest of them, isn't it?",
]


def target_nlls(model, tok, prompts, target_new, target_true):
    """ROME's test_batch_prediction: mean NLL per token of ' ' + target after each prompt."""
    out = []
    with torch.no_grad():
        for p in prompts:
            pre = tok.encode(p)
            row = []
            for t in [target_new, target_true]:
                t_ids = tok.encode(" " + t.lstrip(" "))
                logits = model(torch.tensor([pre + t_ids])).logits[0]
                lp = torch.log_softmax(logits, dim=1)
                row.append(-sum(lp[len(pre) + j - 1, t_ids[j]].item()
                                for j in range(len(t_ids))) / len(t_ids))
            out.append({"target_new": row[0], "target_true": row[1]})
    return out


def ngram_entropy(text):
    """ROME's compute_n_gram_entropy with a regex word tokenizer instead of NLTK's."""
    words = re.findall(r"[\w']+|[^\w\s]", text)
    parts = []
    for n, weight in [(2, 2 / 3), (3, 4 / 3)]:
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        parts.append(weight * sum(-c / total * math.log2(c / total) for c in grams.values()))
    return sum(parts) / len(parts)


def last_subject_index(tok, template, word):
    """ROME's get_words_idxs_in_templates(subtoken='last') for one template."""
    i = template.index("{}")
    prefix = template[:i]
    if prefix:
        assert prefix[-1] == " "
        prefix = prefix[:-1]
        word = " " + word.strip()
    n_prefix = len(tok.encode(prefix)) if prefix else 0
    return n_prefix + len(tok.encode(word)) - 1


def main() -> None:
    args = fixture_args()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.model, "tokenizer.json"))
    model = GPT2LMHeadModel.from_pretrained(args.model, local_files_only=True,
                                            attn_implementation="eager").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    mlp = model.transformer.h[LAYER].mlp
    n_ctx = model.config.n_positions

    def keys_and_outputs(ids_list):
        """c_proj inputs and mlp outputs for each sequence (run one at a time)."""
        got = {}

        def grab_in(_m, inp, _out):
            got["k"] = inp[0].detach()

        def grab_out(_m, _inp, out):
            got["v"] = out.detach()

        h1 = mlp.c_proj.register_forward_hook(grab_in)
        h2 = mlp.register_forward_hook(grab_out)
        res = []
        try:
            with torch.no_grad():
                for ids in ids_list:
                    model(torch.tensor([ids]))
                    res.append((got["k"][0], got["v"][0]))
        finally:
            h1.remove()
            h2.remove()
        return res

    # Second moment.
    text_ids = [tok.encode(t)[:n_ctx] for t in TEXTS]
    d_mlp = mlp.c_proj.weight.shape[0]
    mom = torch.zeros(d_mlp, d_mlp, dtype=torch.float64)
    count = 0
    for k, _ in keys_and_outputs(text_ids):
        k = k.double()
        mom += k.T @ k
        count += k.shape[0]
    mom /= count

    subject, prompt = REQUEST["subject"], REQUEST["prompt"]
    filled = prompt.replace("{}", subject)

    # k* and u.
    key_templates = [t.replace("{}", prompt) for t in TEMPLATES]
    kstar = []
    for t, (k, _) in zip(key_templates, keys_and_outputs(
            [tok.encode(t.replace("{}", subject)) for t in key_templates])):
        kstar.append(k[last_subject_index(tok, t, subject)])
    kstar = torch.stack(kstar).mean(0)
    u = torch.linalg.solve(mom, kstar.double().unsqueeze(1)).squeeze(1)
    u = (u / u.norm()).float()

    # v*.
    target_ids = tok.encode(REQUEST["target_new"])
    head = tok.decode(target_ids[:-1])
    rewriting = [t.replace("{}", prompt) + head for t in TEMPLATES]
    all_prompts = rewriting + ["{} is a"]
    seqs = [tok.encode(p.replace("{}", subject)) for p in all_prompts]
    lookups = [last_subject_index(tok, p, subject) for p in all_prompts]
    width = max(len(s) for s in seqs)
    input_ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    labels = torch.full((len(rewriting), width), -100)
    for i, s in enumerate(seqs[:len(rewriting)]):
        labels[i, len(s) - len(target_ids):len(s)] = torch.tensor(target_ids)

    d_model = model.config.n_embd
    delta = torch.zeros(d_model, requires_grad=True)
    state = {"v0": None}

    def add_delta(_m, _inp, out):
        if state["v0"] is None:
            state["v0"] = out[0, lookups[0]].detach().clone()
        out = out.clone()
        for i, idx in enumerate(lookups):
            out[i, idx] = out[i, idx] + delta
        return out

    opt = torch.optim.Adam([delta], lr=HPARAMS["v_lr"])
    handle = mlp.register_forward_hook(add_delta)
    steps = []
    kl_init = None
    try:
        for it in range(HPARAMS["v_num_grad_steps"]):
            opt.zero_grad()
            logits = model(input_ids=input_ids, attention_mask=attention).logits
            kl_lp = torch.log_softmax(logits[len(rewriting), lookups[-1]].unsqueeze(0), dim=1)
            if kl_init is None:
                kl_init = kl_lp.detach().clone()
            lp = torch.log_softmax(logits[:len(rewriting)], dim=2)
            picked = torch.gather(lp, 2, torch.where(labels != -100, labels, 0).unsqueeze(2))
            picked = picked.squeeze(2) * (labels != -100).float()
            nll_each = -picked.sum(1) / len(target_ids)
            nll = nll_each.mean()
            kl = HPARAMS["kl_factor"] * torch.nn.functional.kl_div(
                kl_init, kl_lp, log_target=True, reduction="batchmean")
            wd = HPARAMS["v_weight_decay"] * (delta.norm() / state["v0"].norm() ** 2)
            loss = nll + kl + wd
            steps.append({"loss": loss.item(), "nll": nll.item(), "kl": kl.item(),
                          "weight_decay": wd.item(),
                          "prob_new": torch.exp(-nll_each).mean().item()})
            if loss.item() < 5e-2 or it == HPARAMS["v_num_grad_steps"] - 1:
                break
            loss.backward()
            opt.step()
            max_norm = HPARAMS["clamp_norm_factor"] * state["v0"].norm()
            if delta.norm() > max_norm:
                with torch.no_grad():
                    delta[...] = delta * max_norm / delta.norm()
    finally:
        handle.remove()
    target = (state["v0"] + delta).detach()

    # Right vector from the bare prompt, then the edit.
    bare_ids = tok.encode(filled)
    bare_idx = last_subject_index(tok, prompt, subject)
    (k, v), = keys_and_outputs([bare_ids])
    key, out = k[bare_idx], v[bare_idx]
    right = (target - out) / torch.dot(key, u)
    nlls_before = target_nlls(model, tok, NLL_PROMPTS, REQUEST["target_new"], TARGET_TRUE)
    with torch.no_grad():
        before = torch.log_softmax(model(torch.tensor([bare_ids])).logits[0, -1], 0)
        mlp.c_proj.weight += u.unsqueeze(1) @ right.unsqueeze(0)
        after = torch.log_softmax(model(torch.tensor([bare_ids])).logits[0, -1], 0)
        (_, v_after), = keys_and_outputs([bare_ids])
    first = target_ids[0]
    nlls_after = target_nlls(model, tok, NLL_PROMPTS, REQUEST["target_new"], TARGET_TRUE)

    result = {
        "layer": LAYER,
        "hparams": HPARAMS,
        "templates": TEMPLATES,
        "request": REQUEST,
        "texts": TEXTS,
        "text_ids": text_ids,
        "count": count,
        "mom2_diag": torch.diagonal(mom).tolist(),
        "mom2_row0": mom[0].tolist(),
        "target_ids": target_ids,
        "lookups": lookups,
        "bare_ids": bare_ids,
        "bare_index": bare_idx,
        "k_star": kstar.tolist(),
        "u": u.tolist(),
        "v0": state["v0"].tolist(),
        "target": target.tolist(),
        "key": key.tolist(),
        "right": right.tolist(),
        "steps": steps,
        "edited_mlp_out": v_after[bare_idx].tolist(),
        "logprob_first_target_before": before[first].item(),
        "logprob_first_target_after": after[first].item(),
        "nll_prompts": NLL_PROMPTS,
        "target_true": TARGET_TRUE,
        "nlls_before": nlls_before,
        "nlls_after": nlls_after,
        "entropy_texts": ENTROPY_TEXTS,
        "ngram_entropy": [ngram_entropy(t) for t in ENTROPY_TEXTS],
    }
    with open(os.path.join(args.out, "rome.json"), "w") as f:
        json.dump(result, f)
        f.write("\n")
    print(json.dumps({k: result[k] for k in ["count", "lookups", "bare_index", "steps"]},
                     indent=1)[:3000])
    print("log p(first target token):", result["logprob_first_target_before"], "->",
          result["logprob_first_target_after"])


if __name__ == "__main__":
    main()
