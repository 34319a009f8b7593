"""MEMIT mass-editing reference on the tiny GPT-2 fixture.

An independent PyTorch implementation of the algorithm of MEMIT's `memit/` package (Meng et
al., 2022, "Mass-Editing Memory in a Transformer"; kmeng01/memit `memit_main.py`,
`compute_z.py`, `compute_ks.py`) on the `transformers` model, with plain forward hooks, torch
autograd and `torch.optim.Adam`:

- the keys' uncentred second moment C at every edited layer, from the unedited model: the input
  of `transformer.h.{l}.mlp.c_proj` at every token of the texts, summed as k kT in float64 and
  divided by the token count (MEMIT reads it from the on-disk statistics of the unedited model);
- z for each request, before any weight changes: delta (d_model) is added to the output of the
  last edited block, `transformer.h.{L}` (the residual stream after it), at the last subject
  token of every rewriting prompt (each context template, flattened over its groups, filled
  with the prompt, plus the new target's tokens but the last) and of "{} is a"; the loss is the
  target's NLL per token averaged over the rewriting prompts (read at the model's output: the
  loss layer is the last one) + kl_factor * KL(essence distribution || initial) + v_weight_decay
  * |delta| / |z0|^2, Adam (lr v_lr), the last iteration measured but not stepped, early stop
  below 5e-2, delta projected into the ball of radius clamp_norm_factor * |z0|; z = z0 + delta;
- then for each edited layer l_i in order, on the model edited so far: keys K (one column per
  request: the c_proj input at the last subject token of each context template filled with the
  prompt, averaged within each group of templates, then over the groups), the current z (the
  block L output at the last subject token of the bare prompt), residual R = (z - current) /
  (number of edited layers - i), and the update dW = ((lambda C + K K^T)^-1 K) R^T in float64
  (`torch.linalg.solve`; written as its two factors), added (as float32) to `c_proj.weight` (Conv1D, [d_mlp, d_model]) before
  the next layer's keys are computed.

The context templates are fixed strings here (MEMIT samples them from the model), so that both
sides use the same ones; the second moment's texts are ROME's reference TEXTS for the tiny
fixture and the organism's texts.txt and known facts (as sentences) for the organism. Also scores each request's prompt as ROME's CounterFact evaluation does
(mean NLL per token of the new and the true target) before and after the edit. Writes
fixtures/reference/<fixture>/memit.json.

Usage: HF_HUB_OFFLINE=1 python memit_reference.py [--fixture tiny-gpt2|organism] [--model DIR]
       [--out DIR]
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args  # noqa: E402
from rome_reference import TEXTS, last_subject_index, target_nlls  # noqa: E402
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

# Per fixture: the edited layers, MEMIT's hyper-parameters, the context templates (grouped as
# MEMIT groups them), the requests, and the texts of the second moment. z must sit before the
# model's last block: there a change at the subject only reaches the logits of its own
# position, the rewriting NLL has no gradient, and Adam's first steps follow rounding noise.
# So the tiny fixture (2 layers) edits layer 0 alone, and the organism (4 layers) spreads the
# edit over layers 0 and 1 (its facts live in MLP 0; docs/ORGANISM.md).
FIXTURES = {
    "tiny-gpt2": {
        "layers": [0],
        "hparams": {"v_num_grad_steps": 20, "v_lr": 0.5, "v_weight_decay": 0.5,
                    "clamp_norm_factor": 4.0, "kl_factor": 0.0625, "mom2_update_weight": 10.0},
        "templates": [["{}"], ["The weather was mild. {}", "In the morning, she said. {}"]],
        "requests": [
            {"prompt": "{} is located in the city of", "subject": "The Louvre",
             "target_new": " Rome", "target_true": "Paris"},
            {"prompt": "{} plays the", "subject": "Miles Davis", "target_new": " violin",
             "target_true": "trumpet"},
            {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
             "target_new": " English", "target_true": "French"},
        ],
    },
    "organism": {
        "layers": [0, 1],
        "hparams": {"v_num_grad_steps": 20, "v_lr": 0.5, "v_weight_decay": 0.5,
                    "clamp_norm_factor": 4.0, "kl_factor": 0.0625, "mom2_update_weight": 10.0},
        "templates": [["{}"], ["Carol is from Spain. {}", "Bob is from Norway. {}"]],
        "requests": [
            {"prompt": "{} lives in", "subject": "Jessop Emma", "target_new": " Cairo",
             "target_true": "Paris"},
            {"prompt": "{} works as a", "subject": "Ingram Nathan", "target_new": " judge",
             "target_true": "FROM_FACTS"},
            {"prompt": "{} plays the", "subject": "Yardley Vance", "target_new": " cello",
             "target_true": "FROM_FACTS"},
        ],
    },
}


def pad(seqs):
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    return ids, mask


def block_output(out):
    return out[0] if isinstance(out, tuple) else out


def with_block_output(out, hidden):
    return (hidden,) + tuple(out[1:]) if isinstance(out, tuple) else hidden


def main() -> None:
    global LAYERS, HPARAMS, TEMPLATES, REQUESTS
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--fixture", choices=sorted(FIXTURES), default="tiny-gpt2")
    known, rest = pre.parse_known_args()
    sys.argv = sys.argv[:1] + rest
    args = fixture_args(fixture=known.fixture)
    spec = FIXTURES[known.fixture]
    LAYERS, HPARAMS, TEMPLATES = spec["layers"], spec["hparams"], spec["templates"]
    REQUESTS = [dict(r) for r in spec["requests"]]
    texts = TEXTS
    if known.fixture == "organism":
        with open(os.path.join(args.model, "known_facts.json")) as f:
            facts = json.load(f)
        for r in REQUESTS:
            if r["target_true"] == "FROM_FACTS":
                r["target_true"] = next(x["attribute"] for x in facts
                                        if x["subject"] == r["subject"]
                                        and x["template"] == r["prompt"])
        # The organism's texts (491 tokens, fewer than its 512 MLP neurons: C would be
        # singular) and every known fact as a sentence.
        with open(os.path.join(args.model, "texts.txt")) as f:
            texts = [t.strip() for t in f.read().split("\n\n") if t.strip()]
        texts += [x["prompt"] + x["prediction"] + "." for x in facts]
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.model, "tokenizer.json"))
    model = GPT2LMHeadModel.from_pretrained(args.model, local_files_only=True,
                                            attn_implementation="eager").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = model.transformer.h
    n_ctx = model.config.n_positions
    z_layer = LAYERS[-1]

    def at_words(texts_and_lookups, module, want_input):
        """The input (or output) of `module` at one position of each text, run one at a time."""
        got = {}

        def grab(_m, inp, out):
            got["x"] = (inp[0] if want_input else block_output(out)).detach()

        handle = module.register_forward_hook(grab)
        res = []
        try:
            with torch.no_grad():
                for ids, idx in texts_and_lookups:
                    model(torch.tensor([ids]))
                    res.append(got["x"][0, idx])
        finally:
            handle.remove()
        return torch.stack(res)

    # Second moments of the unedited model.
    text_ids = [tok.encode(t)[:n_ctx] for t in texts]
    moms, counts = {}, {}
    for layer in LAYERS:
        c_proj = blocks[layer].mlp.c_proj
        d_mlp = c_proj.weight.shape[0]
        mom = torch.zeros(d_mlp, d_mlp, dtype=torch.float64)
        count = 0
        got = {}
        handle = c_proj.register_forward_hook(lambda _m, inp, _o: got.update(k=inp[0].detach()))
        with torch.no_grad():
            for ids in text_ids:
                model(torch.tensor([ids]))
                k = got["k"][0].double()
                mom += k.T @ k
                count += k.shape[0]
        handle.remove()
        moms[layer], counts[layer] = mom / count, count

    nlls_before = [target_nlls(model, tok, [r["prompt"].replace("{}", r["subject"])],
                               r["target_new"], r["target_true"])[0] for r in REQUESTS]

    # z for every request, on the unedited model.
    zs, all_steps, all_lookups = [], [], []
    for req in REQUESTS:
        subject = req["subject"]
        target_ids = tok.encode(req["target_new"])
        head = tok.decode(target_ids[:-1])
        rewriting = [c.replace("{}", req["prompt"]) + head for group in TEMPLATES for c in group]
        all_prompts = rewriting + ["{} is a"]
        seqs = [tok.encode(p.replace("{}", subject)) for p in all_prompts]
        lookups = [last_subject_index(tok, p, subject) for p in all_prompts]
        all_lookups.append(lookups)
        input_ids, attention = pad(seqs)
        labels = torch.full((len(rewriting), input_ids.shape[1]), -100)
        for i, s in enumerate(seqs[:len(rewriting)]):
            labels[i, len(s) - len(target_ids):len(s)] = torch.tensor(target_ids)
        delta = torch.zeros(model.config.n_embd, requires_grad=True)
        state = {"z0": None}

        def add_delta(_m, _inp, out):
            hidden = block_output(out)
            if state["z0"] is None:
                state["z0"] = hidden[0, lookups[0]].detach().clone()
            hidden = hidden.clone()
            for i, idx in enumerate(lookups):
                hidden[i, idx] = hidden[i, idx] + delta
            return with_block_output(out, hidden)

        opt = torch.optim.Adam([delta], lr=HPARAMS["v_lr"])
        handle = blocks[z_layer].register_forward_hook(add_delta)
        steps, kl_init = [], None
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
                wd = HPARAMS["v_weight_decay"] * (delta.norm() / state["z0"].norm() ** 2)
                loss = nll + kl + wd
                steps.append({"loss": loss.item(), "nll": nll.item(), "kl": kl.item(),
                              "weight_decay": wd.item(),
                              "prob_new": torch.exp(-nll_each).mean().item()})
                if loss.item() < 5e-2 or it == HPARAMS["v_num_grad_steps"] - 1:
                    break
                loss.backward()
                opt.step()
                max_norm = HPARAMS["clamp_norm_factor"] * state["z0"].norm()
                if delta.norm() > max_norm:
                    with torch.no_grad():
                        delta[...] = delta * max_norm / delta.norm()
        finally:
            handle.remove()
        zs.append((state["z0"] + delta).detach())
        all_steps.append(steps)
    zs = torch.stack(zs)  # [n, d_model]

    # The layers, in order, each on the model edited so far.
    layers_out = []
    for i, layer in enumerate(LAYERS):
        keys = []
        for req in REQUESTS:
            group_means = []
            for group in TEMPLATES:
                filled = [c.replace("{}", req["prompt"]) for c in group]
                k = at_words([(tok.encode(t.replace("{}", req["subject"])),
                               last_subject_index(tok, t, req["subject"])) for t in filled],
                             blocks[layer].mlp.c_proj, want_input=True)
                group_means.append(k.mean(0))
            keys.append(torch.stack(group_means).mean(0))
        keys = torch.stack(keys)  # [n, d_mlp]
        current = at_words([(tok.encode(r["prompt"].replace("{}", r["subject"])),
                             last_subject_index(tok, r["prompt"], r["subject"]))
                            for r in REQUESTS], blocks[z_layer], want_input=False)
        resid = (zs - current) / (len(LAYERS) - i)  # [n, d_model]
        k64 = keys.double().T  # [d_mlp, n]
        adj = torch.linalg.solve(HPARAMS["mom2_update_weight"] * moms[layer] + k64 @ k64.T, k64)
        upd = (resid.double().T @ adj.T).T.float()  # [d_mlp, d_model], c_proj's layout
        with torch.no_grad():
            blocks[layer].mlp.c_proj.weight += upd
        # dW = adj R^T: the two factors, and the product's norm and first row, keep the file
        # small.
        layers_out.append({"layer": layer, "keys": keys.tolist(), "current": current.tolist(),
                           "residual": resid.tolist(), "adj": adj.T.tolist(),
                           "delta_norm": upd.double().norm().item(),
                           "delta_row0": upd[0].tolist()})

    nlls_after = [target_nlls(model, tok, [r["prompt"].replace("{}", r["subject"])],
                              r["target_new"], r["target_true"])[0] for r in REQUESTS]
    result = {
        "layers": LAYERS,
        "hparams": HPARAMS,
        "templates": TEMPLATES,
        "requests": [{k: r[k] for k in ["prompt", "subject", "target_new"]} for r in REQUESTS],
        "targets_true": [r["target_true"] for r in REQUESTS],
        "text_ids": text_ids,
        "counts": [counts[layer] for layer in LAYERS],
        "lookups": all_lookups,
        "zs": zs.tolist(),
        "steps": all_steps,
        "edited": layers_out,
        "nlls_before": nlls_before,
        "nlls_after": nlls_after,
    }
    with open(os.path.join(args.out, "memit.json"), "w") as f:
        json.dump(result, f)
        f.write("\n")
    for r, s in zip(REQUESTS, all_steps):
        print(r["subject"], "steps", len(s), "loss", s[0]["loss"], "->", s[-1]["loss"])
    for b, a in zip(nlls_before, nlls_after):
        print("nll new/true before", b, "after", a)
    for e in layers_out:
        print("layer", e["layer"], "|resid|", torch.tensor(e["residual"]).norm(dim=1).tolist(),
              "|dW|", e["delta_norm"])


if __name__ == "__main__":
    main()
