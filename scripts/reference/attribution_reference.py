"""Inseq feature-attribution reference on the tiny GPT-2 fixture.

Runs Inseq 0.7.1 (Captum underneath) on the `transformers` model with a forced two-token
continuation of one prompt, for several (method, attributed function) cases, and writes
fixtures/reference/tiny-gpt2/attribution.{json,safetensors}: per case the raw target
attributions `[tokens, steps, d_model]` (NaN where a token is not yet in the prefix) and
Inseq's default aggregation (L2 norm over the hidden size, then L1-normalised per step)
`[tokens, steps]`, and for the contrastive functions Inseq's step score `[steps]`. Layer gradient × activation attributes at the output of block 0's MLP.
(Inseq's layer integrated gradients returns zeros on this model, so burnlens checks its own by
completeness instead.)

Inseq pins typeguard<=2.13.3 while TransformerLens 3.9 needs typeguard>=4.2; both import with
typeguard 4.x, so install Inseq with `--no-deps` (see README.md in this folder).

Usage: HF_HUB_OFFLINE=1 python attribution_reference.py [--model DIR] [--out DIR]
"""

import json
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import inseq  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hooks_reference import fixture_args  # noqa: E402
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

PROMPT = "The Louvre is located in the city of"
TARGET = " the in"
FOIL = " a of"
CONTRAST_PROMPT = "The Louvre is located in the city in"
IG_STEPS = 16

# (name, method, attributed_fn, extra attribute() kwargs)
CASES = [
    ("saliency.probability", "saliency", "probability", {}),
    ("saliency.log_probability", "saliency", "probability", {"attributed_fn_args": {"logprob": True}}),
    ("input_x_gradient.probability", "input_x_gradient", "probability", {}),
    ("input_x_gradient.logit", "input_x_gradient", "logit", {}),
    # Also Inseq's step score of the same function: it runs the contrast sequence with its own
    # prefix (at step 1 " a" where the target has " the"), while the attributed function keeps
    # the target's prefix and swaps only the predicted token.
    ("input_x_gradient.contrast_prob_diff", "input_x_gradient", "contrast_prob_diff",
     {"contrast_targets": PROMPT + FOIL, "step_scores": ["contrast_prob_diff"]}),
    ("input_x_gradient.contrast_logits_diff", "input_x_gradient", "contrast_logits_diff",
     {"contrast_targets": PROMPT + FOIL, "step_scores": ["contrast_logits_diff"]}),
    # KL(p(. | prompt) || p(. | contrastive prompt)), the contrast a constant.
    ("input_x_gradient.kl_divergence", "input_x_gradient", "kl_divergence",
     {"contrast_targets": CONTRAST_PROMPT + TARGET, "contrast_force_inputs": True}),
    ("integrated_gradients.probability", "integrated_gradients", "probability", {"n_steps": IG_STEPS}),
    ("integrated_gradients.logit", "integrated_gradients", "logit", {"n_steps": IG_STEPS}),
    # At the output of block 0's MLP (burnlens: blocks.0.hook_mlp_out).
    ("layer_gradient_x_activation.logit", "layer_gradient_x_activation", "logit", {}),
    ("layer_gradient_x_activation.probability", "layer_gradient_x_activation", "probability", {}),
]
LAYER = {"module": "transformer.h.0.mlp", "hook": "blocks.0.hook_mlp_out"}


def main() -> None:
    args = fixture_args()
    special = "<|endoftext|>"
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.model, "tokenizer.json"),
                                  eos_token=special, bos_token=special, unk_token=special)
    hf = GPT2LMHeadModel.from_pretrained(args.model, local_files_only=True,
                                         attn_implementation="eager").eval()
    prompt_ids = tok.encode(PROMPT)
    full = tok.encode(PROMPT + TARGET)
    foil = tok.encode(PROMPT + FOIL)
    contrast = tok.encode(CONTRAST_PROMPT + TARGET)
    assert len(contrast) == len(full), "the contrastive sequence must align by position"
    assert full[:len(prompt_ids)] == prompt_ids and foil[:len(prompt_ids)] == prompt_ids
    out = {"inseq": "0.7.1", "prompt": PROMPT, "target": TARGET, "foil": FOIL,
           "prompt_ids": prompt_ids, "target_ids": full[len(prompt_ids):],
           "foil_ids": foil[len(prompt_ids):], "contrast_ids": contrast,
           "baseline_id": tok.unk_token_id,
           "ig_steps": IG_STEPS, "layer": LAYER, "cases": []}
    tensors = {}
    for name, method, fn, kwargs in CASES:
        layer = {"target_layer": hf.transformer.h[0].mlp} if method.startswith("layer_") else {}
        model = inseq.load_model(hf, method, tokenizer=tok, **layer)
        res = model.attribute(PROMPT, PROMPT + TARGET, attributed_fn=fn, show_progress=False,
                              **kwargs)
        seq = res.sequence_attributions[0]
        tensors[f"{name}.raw"] = seq.target_attributions.float().contiguous()
        agg = res.aggregate().sequence_attributions[0]
        tensors[f"{name}.aggregated"] = agg.target_attributions.float().contiguous()
        for score in kwargs.get("step_scores", []):
            tensors[f"{name}.step_scores"] = seq.step_scores[score].float().contiguous()
            print(name, "step scores", seq.step_scores[score].tolist())
        out["cases"].append({"name": name, "method": method, "attributed_fn": fn,
                             "logprob": kwargs.get("attributed_fn_args", {}).get("logprob", False)})
        print(name, tuple(seq.target_attributions.shape))
    save_file(tensors, os.path.join(args.out, "attribution.safetensors"))
    with open(os.path.join(args.out, "attribution.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
