"""Build the seeded random-weight tiny GPT-2 fixture in Hugging Face layout.

Writes `fixtures/tiny-gpt2/{config.json, generation_config.json, model.safetensors, tokenizer.json}`:
a 2-layer, d_model 64, 4-head, n_ctx 128 GPT-2 with its own byte-level BPE vocabulary (at most 1024 tokens)
trained (deterministically) on the small corpus below.

Hugging Face's initialisation leaves LayerNorms at 1/0 and biases at 0, which would hide bugs in
bias handling; every LayerNorm and bias is perturbed here (seeded). The weights are drawn with a
large `initializer_range` (0.25) so that the random model's predictions are far from uniform and
its greedy continuations vary (argmax comparisons are then stable against fp32 noise).

Usage: python make_tiny.py [--out fixtures/tiny-gpt2]
"""

import argparse
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel

CORPUS = """
The quick brown fox jumps over the lazy dog. A stitch in time saves nine.
Interpretability researchers study how language models compute their answers.
The Eiffel Tower is located in the city of Paris, the capital of France.
Rome is the capital of Italy, and Berlin is the capital of Germany.
When Mary and John went to the store, John gave a drink to Mary.
def forward(self, x):\n    return self.mlp(self.attn(x)) + x\n
Numbers like 12345, 3.14159 and 2026 appear in text; so do dates such as 2026-11-23.
Causal tracing restores hidden states from a clean run into a corrupted run.
Activation patching measures how much of a behaviour a component carries.
Hello, world! How are you today? I'm fine, thanks -- and you?
Emoji and unicode: café, naïve, Zürich, Δx, 東京, 🙂.
Attention heads move information between token positions; MLPs store facts.
""" * 4


def build_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--out", default=os.path.join(root, "fixtures", "tiny-gpt2"))
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    tok = build_tokenizer(1024)
    eot = tok.token_to_id("<|endoftext|>")
    tok.save(os.path.join(args.out, "tokenizer.json"))

    cfg = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        initializer_range=0.25,
        bos_token_id=eot,
        eos_token_id=eot,
        scale_attn_by_inverse_layer_idx=False,
    )
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(cfg).eval()
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(args.out, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: vocab {cfg.vocab_size}, {n} parameters")


if __name__ == "__main__":
    main()
