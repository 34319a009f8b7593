"""TransformerLens reference values for the hooks crate, on the tiny GPT-2 fixture.

Loads `fixtures/tiny-gpt2` into TransformerLens 3.9.0 offline (see ../shared/ORACLE.md) and
writes `fixtures/reference/tiny-gpt2/hooks.json` (tokens, answer/foil ids, names, labels,
metric values) and `hooks.safetensors`:
- `cache.<name>`: every default hook's activation from `run_with_cache`;
- `on_request.<name>`: `attn.hook_result`, `hook_q/k/v_input`, `hook_mlp_in` (run with
  use_attn_result, use_split_qkv_input, use_hook_mlp_in) and `hook_attn_in` (use_attn_in);
  `on_request.split.blocks.0.ln1.hook_scale`: ln1's scale in the split-input mode (last of its
  three calls, the value input);
- `ablate_head.logits`, `mean_mlp.logits`, `steer.logits` (+ `steer.vector`): `run_with_hooks`
  results of a head zero-ablation, an MLP mean-ablation and a steering vector;
- `grad.<name>`: gradients of a logit difference at several hooks, from backward hooks;
- `processed.logits` and `processed.<name>`: the model loaded with fold_ln,
  center_writing_weights, center_unembed and fold_value_biases;
- `analysis.*`: accumulated_resid, decompose_resid, stack_head_results, logit_attrs.

Usage: HF_HUB_OFFLINE=1 python hooks_reference.py [--model DIR] [--out DIR]
"""

import argparse
import importlib.metadata
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

ON_REQUEST_SPLIT = ["attn.hook_result", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in"]
GRAD_HOOKS = [
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_scale",
    "blocks.1.ln1.hook_normalized",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.1.attn.hook_z",
    "blocks.1.hook_resid_mid",
    "blocks.1.mlp.hook_post",
    "blocks.1.hook_mlp_out",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
]
PROCESSED_HOOKS = [
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_v",
    "blocks.1.attn.hook_z",
    "blocks.1.hook_resid_post",
]


def fixture_args(description=None, fixture="tiny-gpt2"):
    """`--model` (default fixtures/<fixture>) and `--out` (default fixtures/reference/<fixture>),
    the options every reference script takes."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default=os.path.join(root, "fixtures", fixture))
    ap.add_argument("--out", default=os.path.join(root, "fixtures", "reference", fixture))
    return ap.parse_args()


def load_tl(model_dir, **processing):
    hf = GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, n_layers=c.n_layer, n_ctx=c.n_positions,
        eps=c.layer_norm_epsilon, d_vocab=c.vocab_size, act_fn=c.activation_function,
        normalization_type="LN", positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", tokenizer_name=None, default_prepend_bos=False,
        scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx, init_weights=False,
        device="cpu", dtype=torch.float32)
    tl = HookedTransformer(cfg)
    opts = dict(fold_ln=False, center_writing_weights=False, center_unembed=False,
                fold_value_biases=False)
    opts.update(processing)
    tl.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), **opts)
    return tl.eval()


def main() -> None:
    args = fixture_args()
    torch.manual_seed(0)

    tl = load_tl(args.model)
    n_layers, d_vocab, d_model = tl.cfg.n_layers, tl.cfg.d_vocab, tl.cfg.d_model
    tokens = torch.randint(1, d_vocab, (3, 7))
    answer = torch.randint(1, d_vocab, (3,))
    foil = torch.randint(1, d_vocab, (3,))
    steer = torch.randn(d_model) * 2.0
    out = {"transformer_lens": importlib.metadata.version("transformer_lens"),
           "torch": torch.__version__,
           "tokens": tokens.tolist(), "answer": answer.tolist(), "foil": foil.tolist(),
           "all_hook_names": sorted(tl.hook_dict.keys())}
    t = {"steer.vector": steer}

    with torch.no_grad():
        logits, cache = tl.run_with_cache(tokens)
        t["logits"] = logits
        out["default_hook_names"] = sorted(cache.keys())
        for name, value in cache.items():
            t[f"cache.{name}"] = value

        # On-request hooks.
        tl.set_use_attn_result(True)
        tl.set_use_split_qkv_input(True)
        tl.set_use_hook_mlp_in(True)
        logits_split, c2 = tl.run_with_cache(tokens)
        assert torch.allclose(logits_split, logits, atol=1e-5)
        for name, value in c2.items():
            if any(name.endswith(s) for s in ON_REQUEST_SPLIT):
                t[f"on_request.{name}"] = value
        t["on_request.split.blocks.0.ln1.hook_scale"] = c2["blocks.0.ln1.hook_scale"]
        tl.set_use_attn_result(False)
        tl.set_use_split_qkv_input(False)
        tl.set_use_hook_mlp_in(False)
        tl.set_use_attn_in(True)
        _, c3 = tl.run_with_cache(tokens)
        for name, value in c3.items():
            if name.endswith("hook_attn_in"):
                t[f"on_request.{name}"] = value
        tl.set_use_attn_in(False)

        # Interventions.
        def zero_head(z, hook):
            z[:, :, 2, :] = 0.0
            return z

        def mean_ablate(x, hook):
            return x.mean(0, keepdim=True).expand_as(x).clone()

        def add_steer(x, hook):
            return x + steer

        t["ablate_head.logits"] = tl.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)])
        t["mean_mlp.logits"] = tl.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_mlp_out", mean_ablate)])
        t["steer.logits"] = tl.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_pre", add_steer)])

        # Cache analysis.
        acc, acc_labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
        t["analysis.accumulated_ln"] = acc
        acc1, acc1_labels = cache.accumulated_resid(layer=1, incl_mid=True, apply_ln=True, return_labels=True)
        t["analysis.accumulated_l1_mid_ln"] = acc1
        dec, dec_labels = cache.decompose_resid(apply_ln=True, return_labels=True)
        t["analysis.decompose_ln"] = dec
        heads, head_labels = cache.stack_head_results(apply_ln=True, incl_remainder=True, return_labels=True)
        t["analysis.heads_ln"] = heads
        raw_acc = cache.accumulated_resid()
        t["analysis.attrs_accumulated"] = cache.logit_attrs(raw_acc[:, :, -1], answer, foil, pos_slice=-1)
        raw_heads = cache.stack_head_results()
        t["analysis.attrs_heads"] = cache.logit_attrs(raw_heads[:, :, -1], answer, foil, pos_slice=-1)
        out["labels"] = {"accumulated_ln": acc_labels, "accumulated_l1_mid_ln": acc1_labels,
                         "decompose_ln": dec_labels, "heads_ln": head_labels}

    # Gradients of a logit difference through TransformerLens backward hooks. TransformerLens
    # calls ln1 three times per block (for the query, key and value inputs, even when they are
    # the same tensor), so its ln1 hooks fire three times and each call sees only its own
    # share of the gradient: the gradient with respect to the activation is their sum.
    grads, calls = {}, {}

    def keep(grad, hook):
        grads[hook.name] = grads.get(hook.name, 0) + grad.detach().clone()
        calls[hook.name] = calls.get(hook.name, 0) + 1

    with tl.hooks(bwd_hooks=[(name, keep) for name in GRAD_HOOKS]):
        lg = tl(tokens)
        rows = torch.arange(tokens.shape[0])
        metric = (lg[rows, -1, answer] - lg[rows, -1, foil]).sum()
        metric.backward()
    out["grad_metric"] = metric.item()
    out["grad_hook_calls"] = calls
    for name in GRAD_HOOKS:
        t[f"grad.{name}"] = grads[name]

    # Weight processing.
    proc = load_tl(args.model, fold_ln=True, center_writing_weights=True, center_unembed=True,
                   fold_value_biases=True)
    with torch.no_grad():
        plogits, pcache = proc.run_with_cache(tokens)
    t["processed.logits"] = plogits
    for name in PROCESSED_HOOKS:
        t[f"processed.{name}"] = pcache[name]

    t = {k: v.detach().float().contiguous().clone() for k, v in t.items()}
    os.makedirs(args.out, exist_ok=True)
    save_file(t, os.path.join(args.out, "hooks.safetensors"))
    with open(os.path.join(args.out, "hooks.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(t)} tensors")


if __name__ == "__main__":
    main()
