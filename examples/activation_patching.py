"""Activation patching on SmolLM2-135M: the IOI picture from one compiled sweep per site.

    .venv/bin/python examples/activation_patching.py [path/to/model.gguf]

Clean prompt: "When Mary and John went to the store, John gave a drink to" (the
indirect object, " Mary", is the answer); corrupted: the same with Mary as the second
subject (S2). Metric: the logit difference " Mary" - " John" at the last position,
normalised to 0 on the corrupted run and 1 on the clean run. Each sweep patches the
clean activation into the corrupted run at one location at a time (denoising).

Expected (the known IOI picture): in the residual stream the S2 position carries the
answer in early and middle layers; in the late layers it has moved to the final
position (moved there by attention heads: see the attn_out and per-head maps).

Writes ``out/activation_patching_resid_pre.png``, ``..._attn_out.png``,
``..._mlp_out.png`` and ``..._heads.png``. A few minutes on 2 CPU cores, most of it
loading the GGUF and compiling.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import jaxinterp
from jaxinterp.causal.patching import activation_patch
from jaxinterp.core.metrics import normalized_logit_diff
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.viz.heatmap import patching_heatmap

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: the first 4 layers, small budgets

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
SWEEPS = {
    "resid_pre": ("layer", "pos"),
    "attn_out": ("layer", "pos"),
    "mlp_out": ("layer", "pos"),
    "attn.z": ("layer", "head"),  # each head at every position
}


def main(path: str) -> None:
    model = jaxinterp.load(path, n_layers=4 if QUICK else None)
    tokenizer = jaxinterp.load_tokenizer(path)
    clean = np.asarray(tokenizer.encode(CLEAN))
    corrupt = np.asarray(tokenizer.encode(CORRUPT))
    mary, john = tokenizer.to_single_token(" Mary"), tokenizer.to_single_token(" John")
    metric = normalized_logit_diff(mary, john, model(clean), model(corrupt))
    words = tokenizer.to_str_tokens(clean.tolist())
    s2 = int(np.flatnonzero(clean != corrupt)[0])
    print(f"tokens: {words}\nS2 (the corrupted token) is position {s2}: {words[s2]!r}")

    os.makedirs("out", exist_ok=True)
    results = {}
    for site, over in SWEEPS.items():
        t = time.perf_counter()
        # A one-off sweep of a 30-layer model: compile time dominates, so skip XLA's
        # slow optimisations; shortcuts skip patches where the prompts agree (before S2).
        result = activation_patch(
            model, clean, corrupt, metric, site, over, tokenizer=tokenizer, shortcuts=True, quick_compile=True
        )
        results[site] = result
        name = "heads" if site == "attn.z" else site
        patching_heatmap(
            result,
            title=f"SmolLM2-135M IOI: patching {site} (clean -> corrupted)",
            path=f"out/activation_patching_{name}.png",
            annotate=False,
        )
        print(f"{site:>9} over {over}: {np.asarray(result).shape} in {time.perf_counter() - t:.1f} s")

    resid = np.asarray(results["resid_pre"])
    best = resid.argmax(axis=1)
    print("\nresid_pre: position that restores the most, per layer:")
    print("  " + " ".join(f"L{layer}:{words[p].strip() or repr(words[p])}" for layer, p in enumerate(best)))
    moved = int(np.argmax(best == len(words) - 1))
    print(f"S2 matters in layers 0-{moved - 1}; the final position from layer {moved} on.")
    heads = np.asarray(results["attn.z"])
    top = np.dstack(np.unravel_index(np.argsort(heads, axis=None)[::-1][:5], heads.shape))[0]
    print(
        "top heads (layer.head: normalised logit diff restored): "
        + ", ".join(f"{l}.{h}: {heads[l, h]:.2f}" for l, h in top)
    )
    print("figures in out/activation_patching_*.png")


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main(sys.argv[1] if len(sys.argv) > 1 else smollm2_path())
