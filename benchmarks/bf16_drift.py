"""bf16 drift on SmolLM2-135M: jaxinterp bf16 vs fp32, vs transformers' own bf16 run.

jaxinterp computes in the parameter dtype (bf16 matmuls, bf16 residual stream) with the
norms and the attention softmax accumulated in float32, as transformers does. This
script loads the bundled SmolLM2 GGUF (Q4_1, dequantised) four ways -- jaxinterp fp32 and
bf16, transformers fp32 and bf16 (``from_pretrained(gguf_file=..., dtype=...)``, eager
attention) -- and compares

- logits at every position of a few prompts: max |diff|, that relative to the largest
  |logit| of the reference, mean |diff|, and how often the top-1 token agrees;
- an activation-patching sweep: ``resid_pre`` over every (layer, position) on the IOI
  pair ("When Mary and John went to the store, John/Mary gave a drink to"), metric the
  logit difference " Mary" - " John" at the last position, denoising. transformers'
  sweep is the same patches done with forward pre-hooks on its decoder layers (one
  batched forward per layer, a row per position). Columns: max |diff| of the
  [layer, pos] grids, that relative to the reference grid's largest |value|, and the
  correlation of the two grids.

    python benchmarks/bf16_drift.py           # logits on 4 prompts + both sweeps (~6 CPU-minutes)
    python benchmarks/bf16_drift.py --quick   # logits on the IOI prompt only
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import equinox as eqx
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxinterp  # noqa: E402
from jaxinterp.causal.patching import activation_patch  # noqa: E402
from jaxinterp.core.metrics import logit_diff  # noqa: E402
from jaxinterp.loading.bundled import smollm2_path  # noqa: E402

IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
PROMPTS = [
    IOI_CLEAN,
    "The capital of France is Paris, and the capital of Germany is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "<|im_start|>user\nWhat is 2 + 2? Answer in one word.<|im_end|>\n<|im_start|>assistant\n",
]


@eqx.filter_jit
def forward(model, tokens):
    return model(tokens)


def hf_model(path: str, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    folder, name = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=getattr(torch, dtype), attn_implementation="eager"
    )
    return model.eval()


def hf_logits(model, tokens) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float().numpy()


def hf_sweep(model, clean, corrupt, answer: int, wrong: int) -> np.ndarray:
    """transformers' resid_pre [layer, pos] denoising sweep: at layer l, row p of a batch of
    corrupted prompts gets the clean run's input to layer l at position p."""
    import torch

    layers = model.model.layers
    n = len(clean)
    with torch.no_grad():
        hidden = model(torch.tensor([clean]), output_hidden_states=True).hidden_states  # [0] = embeddings
        batch = torch.tensor([corrupt] * n)
        out = np.zeros((len(layers), n), np.float32)
        for layer in range(len(layers)):
            clean_in = hidden[layer][0]  # [pos, d_model]: what enters layer `layer` in the clean run

            def patch(module, args, kwargs, clean_in=clean_in):
                h = (args[0] if args else kwargs["hidden_states"]).clone()
                rows = torch.arange(n)
                h[rows, rows] = clean_in[rows]
                if args:
                    return (h, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": h}

            handle = layers[layer].register_forward_pre_hook(patch, with_kwargs=True)
            try:
                logits = model(batch).logits[:, -1].float()
            finally:
                handle.remove()
            out[layer] = (logits[:, answer] - logits[:, wrong]).numpy()
    return out


def compare(a: np.ndarray, ref: np.ndarray, top1: bool) -> str:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    diff = np.abs(a - ref)
    row = f"{diff.max():>10.4f} {diff.max() / np.abs(ref).max():>9.2%} {diff.mean():>10.4f}"
    if top1:
        return row + f" {np.mean(a.argmax(-1) == ref.argmax(-1)):>9.1%}"
    return row + f" {np.corrcoef(a.ravel(), ref.ravel())[0, 1]:>9.5f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="logits on the IOI prompt only, no sweeps")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("JAXINTERP_QUICK") == "1"
    path = smollm2_path()
    tok = jaxinterp.load_tokenizer(path)
    prompts = PROMPTS[:1] if quick else PROMPTS
    tokens = [tok.encode(p) for p in prompts]
    ours = {d: jaxinterp.load(path, dtype=getattr(jnp, d)) for d in ("float32", "bfloat16")}
    theirs = {d: hf_model(path, d) for d in ("float32", "bfloat16")}
    logits = {
        (who, d): np.concatenate(
            [
                np.asarray(forward(ours[d], jnp.asarray(t)), np.float32)
                if who == "jaxinterp"
                else hf_logits(theirs[d], t)
                for t in tokens
            ]
        )
        for who in ("jaxinterp", "transformers")
        for d in ("float32", "bfloat16")
    }
    pairs = [
        (("jaxinterp", "bfloat16"), ("jaxinterp", "float32")),
        (("transformers", "bfloat16"), ("transformers", "float32")),
        (("jaxinterp", "bfloat16"), ("transformers", "bfloat16")),
        (("jaxinterp", "bfloat16"), ("transformers", "float32")),
        (("jaxinterp", "float32"), ("transformers", "float32")),
    ]
    n_pos = sum(len(t) for t in tokens)
    print(f"SmolLM2-135M-Instruct (Q4_1 GGUF), logits at {n_pos} positions of {len(prompts)} prompt(s)")
    header = f"{'compared':<48} {'max|diff|':>10} {'rel':>9} {'mean|diff|':>10} {'top-1 =':>9}"
    print(header + "\n" + "-" * len(header))
    for a, b in pairs:
        print(f"{a[0] + ' ' + a[1] + ' vs ' + b[0] + ' ' + b[1]:<48} {compare(logits[a], logits[b], True)}")
    if quick:
        return

    clean, corrupt = tok.encode(IOI_CLEAN), tok.encode(IOI_CORRUPT)
    mary, john = tok.to_single_token(" Mary"), tok.to_single_token(" John")
    metric = logit_diff(mary, john)
    sweeps = {}
    for d in ("float32", "bfloat16"):
        grid = activation_patch(ours[d], jnp.asarray(clean), jnp.asarray(corrupt), metric, "resid_pre")
        sweeps[("jaxinterp", d)] = np.asarray(grid.values, np.float32)
        sweeps[("transformers", d)] = hf_sweep(theirs[d], clean, corrupt, mary, john)
    n_layers = ours["float32"].cfg.n_layers
    print(
        f"\nresid_pre patching sweep, {n_layers} layers x {len(clean)} positions, IOI pair, "
        f"logit diff ' Mary' - ' John' (fp32 range {sweeps[('jaxinterp', 'float32')].min():.2f}.."
        f"{sweeps[('jaxinterp', 'float32')].max():.2f})"
    )
    header = f"{'compared':<48} {'max|diff|':>10} {'rel':>9} {'mean|diff|':>10} {'corr':>9}"
    print(header + "\n" + "-" * len(header))
    for a, b in pairs:
        print(f"{a[0] + ' ' + a[1] + ' vs ' + b[0] + ' ' + b[1]:<48} {compare(sweeps[a], sweeps[b], False)}")


if __name__ == "__main__":
    main()
