"""The embedding-space view of SmolLM2-135M: weights and activations read as tokens.

    .venv/bin/python examples/embedding_space.py [path/to/model.gguf]

1. Head OV circuits: what a name-mover-like head (found by `logit_lens_dla.py`) writes
   when it attends to a name. Fed the raw embedding, its OV circuit says little (a
   layer-23 head never reads raw embeddings); fed the residual stream it actually reads
   at the name's position, it writes the name (it copies).
2. MLP neurons as key-value memories (Geva et al. 2021): on the IOI prompt, the
   neurons of a late layer that push " Mary" most; the tokens their value vectors
   promote (signed by the activation: gated MLPs fire both ways); and, over a token stream (Python's own docstrings, so it runs offline), the
   contexts where they fire most (their keys).
3. Any residual vector: the final residual stream at the last position, projected.

Writes ``out/embedding_space.png``. ~1-2 min on CPU.
"""

from __future__ import annotations

import importlib
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import jaxinterp as ji
from jaxinterp import embedding_space as E
from jaxinterp.analysis.lens import apply_norm_linear
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.loading.tokenizer import load_tokenizer

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: a shorter token stream for the neurons' keys

PROMPT = "When Mary and John went to the store, John gave a drink to"
HEAD = (23, 0)  # a name mover of SmolLM2 on IOI (see examples/logit_lens_dla.py)
LAYER = 27


def offline_text(n_modules: int | None = None) -> str:
    """A few thousand tokens of English prose that every Python install has (the
    docstrings of the first ``n_modules`` modules below; None: all of them)."""
    names = [
        "json",
        "argparse",
        "collections",
        "textwrap",
        "difflib",
        "logging",
        "unittest",
        "pathlib",
        "functools",
        "subprocess",
        "threading",
        "email",
        "csv",
        "pickle",
        "random",
        "statistics",
        "heapq",
        "calendar",
    ]
    return "\n\n".join(importlib.import_module(n).__doc__ or "" for n in names[:n_modules])


def main(path: str) -> None:
    model, tok = ji.load(path), load_tokenizer(path)
    # (The head and neuron picked below are in late layers: the whole model even in quick mode.)
    names = [" Mary", " John", " Tom", " store", " drink"]
    for n in names:  # each must be one token
        tok.to_single_token(n)

    tokens = np.asarray(tok.encode(PROMPT))
    mary = tok.to_single_token(" Mary")
    io_pos = list(tokens).index(mary)
    layer, head = HEAD
    _, cache = model.run_with_cache(tokens, names=["ln1.normalized", "attn.result", "mlp.post", "resid_post"])

    # A head's OV circuit, fed two ways. Raw token embeddings (the full OV circuit) suit
    # early layers; a layer-23 head reads the residual stream, so feed it what it reads
    # at the indirect object's position.
    raw = E.head_ov_top_tokens(model, layer, head, [mary], k=5, tokenizer=tok)
    read = E.head_ov_top_tokens(model, layer, head, cache["ln1.normalized"][layer, io_pos][None], k=5, tokenizer=tok)
    wrote = E.project_to_vocab(model, cache["attn.result"][layer, -1, head], k=5, tokenizer=tok)
    print(f"L{layer}H{head} OV circuit applied to the ' Mary' embedding     -> {raw.strings[0]}")
    print(f"L{layer}H{head} OV circuit applied to the residual at ' Mary'  -> {read.strings[0]}")
    print(f"what L{layer}H{head} actually wrote at the last position         -> {wrote.strings}")

    act = np.asarray(cache["mlp.post"][LAYER, -1])  # [d_mlp] at the last position
    # Each neuron's direct push on " Mary": its activation times its value vector, through
    # the final norm's linear part (scale left out: one positive number per position).
    values_normed = apply_norm_linear(model.ln_final, E.mlp_value_vectors(model, LAYER), np.float32(1.0))
    push = act * np.asarray(values_normed @ model.unembed.W_U[:, mary])
    neurons = np.argsort(-push)[:3]

    text = offline_text(4 if QUICK else None)  # QUICK: a shorter stream (each token runs 28 layers)
    stream = np.asarray(tok.encode(text))
    print(f"\nlayer {LAYER} neurons pushing ' Mary' on the IOI prompt (keys from a {len(stream)}-token stream):")
    # Gated MLPs fire both ways: what a neuron promotes, and where it fires, depend on its sign here.
    # One pass over the stream per sign finds the top activations of all neurons of that sign.
    positive = {n: bool(act[n] > 0) for n in neurons}
    fires = {
        largest: E.neuron_top_activations(model, stream, LAYER, group, k=3, seq_len=64, batch_size=8, largest=largest)
        for largest in (True, False)
        if (group := [n for n in neurons if positive[n] == largest])
    }
    value_rows = []
    for n in neurons:
        sign = 1.0 if positive[n] else -1.0
        promoted = E.project_to_vocab(model, sign * E.mlp_value_vectors(model, LAYER)[n], k=8, tokenizer=tok)
        value_rows.append(promoted)
        found = fires[positive[n]]
        row = list(found.neurons).index(n)
        contexts = E.activation_contexts(stream, found.positions[row : row + 1], tok, before=10, after=2)[0]
        print(
            f"  neuron {n}: push {push[n]:+.2f} (activation {act[n]:+.2f}); sign x value vector promotes {promoted.strings}"
        )
        for v, c in zip(found.values[row], contexts):
            print(f"      activation {v:+.2f} at ...{c!r}")

    final = np.asarray(cache["resid_post"][-1, -1])
    top = E.project_to_vocab(model, final, k=8, tokenizer=tok)
    print("\nfinal residual at the last position promotes:", top.strings)

    fig, axes = plt.subplots(1, 1 + len(neurons), figsize=(4.2 * (1 + len(neurons)), 4))
    axes[0].barh(range(5)[::-1], read.scores[0])
    axes[0].set_yticks(range(5)[::-1], [repr(s) for s in read.strings[0]])
    axes[0].set_title(f"L{layer}H{head} OV on the residual at ' Mary'")
    for ax, n, promoted in zip(axes[1:], neurons, value_rows):
        ax.barh(range(8)[::-1], promoted.scores)
        ax.set_yticks(range(8)[::-1], [repr(s) for s in promoted.strings])
        ax.set_title(f"L{LAYER} neuron {n}: {'+' if act[n] > 0 else '-'}value vector")
    for ax in axes:
        ax.set_xlabel("logit score (through the final norm's weight)")
    fig.tight_layout()
    os.makedirs("out", exist_ok=True)
    fig.savefig("out/embedding_space.png", dpi=110)
    print("wrote out/embedding_space.png")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main(sys.argv[1] if len(sys.argv) > 1 else smollm2_path())
