"""Logit lens and direct logit attribution on SmolLM2-135M, indirect-object identification.

    .venv/bin/python examples/logit_lens_dla.py [path/to/model.gguf]

"When Mary and John went to the store, John gave a drink to" -> " Mary". We ask:

1. Which heads write the answer directly? Direct logit attribution (DLA) of every
   head onto ``W_U[:, IO] - W_U[:, S]`` (through the final norm's cached scale; the
   components sum to the logit difference exactly). The top heads sit in the last
   third of the model, and the leading ones attend from the last token to a name:
   name-mover-like heads.
2. When does the answer appear? The logit lens reads every layer's residual stream
   through the final norm and unembedding: the answer reaches top-1 only at the end.

Writes ``out/logit_lens_dla.png`` and ``out/logit_lens_table.png``. ~1 min on CPU.
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import jaxinterp as ji
from jaxinterp import lens
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.loading.tokenizer import load_tokenizer
from jaxinterp.viz import logit_lens_table

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: the first 4 layers, small budgets

PROMPTS = [  # (prompt, indirect object = answer, subject)
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("When John and Mary went to the store, Mary gave a drink to", " John", " Mary"),
    ("When Tom and James went to the park, James gave a ball to", " Tom", " James"),
    ("When James and Tom went to the park, Tom gave a ball to", " James", " Tom"),
]


def main(path: str) -> None:
    model, tok = ji.load(path, n_layers=4 if QUICK else None), load_tokenizer(path)
    tokens = np.array([tok.encode(p) for p, _, _ in PROMPTS])  # same length: one batch
    answers = np.array([tok.to_single_token(a) for _, a, _ in PROMPTS])
    subjects = np.array([tok.to_single_token(s) for _, _, s in PROMPTS])
    names = ["embed", "attn_out", "mlp_out", "ln_final.scale", "attn.result", "attn.pattern", "resid_pre", "resid_post"]
    logits, cache = model.run_with_cache(tokens, names=names)  # one run feeds every analysis below
    rows = np.arange(len(PROMPTS))
    diff = np.asarray(logits)[rows, -1, answers] - np.asarray(logits)[rows, -1, subjects]
    print("logit difference IO - S per prompt:", np.round(diff, 2))

    dla = lens.direct_logit_attribution(model, tokens, answers, subjects, cache=cache)
    print(f"sum of all {dla.shape[0]} DLA components:", np.round(np.asarray(dla).sum(0), 4), "(equals the above)")
    heads = lens.head_logit_attribution(model, tokens, answers, subjects, cache=cache)
    H = model.cfg.n_heads
    pattern = np.asarray(cache["attn.pattern"])[:, :, :, -1]  # [layer, batch, head, key]: from the last token
    io_pos = [list(tokens[b]).index(answers[b]) for b in rows]
    s_pos = [max(i for i, t in enumerate(tokens[b]) if t == subjects[b]) for b in rows]  # the second S
    print("top heads by DLA (mean over prompts), with their attention from the last token:")
    for i in np.argsort(-np.asarray(heads).ravel())[:6]:
        l, h = divmod(int(i), H)
        to_io = np.mean([pattern[l, b, h, io_pos[b]] for b in rows])
        to_s = np.mean([pattern[l, b, h, s_pos[b]] for b in rows])
        print(f"  L{l}H{h}: DLA {np.asarray(heads)[l, h]:+.2f}   attention to IO {to_io:.2f}, to S2 {to_s:.2f}")

    lensed = lens.logit_lens(model, cache=cache)  # [layer, batch, d_vocab]
    ranks = lens.token_ranks(np.asarray(lensed), answers[None, :])
    first_top1 = [lensed.labels["layer"][int(np.argmax(ranks[:, b] == 0))] for b in rows]
    print("first layer where the answer is top-1, per prompt:", first_top1)

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    heads.plot(ax=axes[0], title="direct logit attribution per head (IO - S)")
    axes[1].plot(np.median(ranks, axis=1) + 1, marker="o")
    axes[1].set_yscale("log")
    axes[1].set_xticks(range(len(lensed.labels["layer"]))[::3], lensed.labels["layer"][::3], rotation=90)
    axes[1].set(title="logit lens: rank of the answer (median over prompts)", ylabel="rank (1 = top)")
    fig.tight_layout()
    os.makedirs("out", exist_ok=True)
    fig.savefig("out/logit_lens_dla.png", dpi=110)

    # The lens at every position of the first prompt: top token and its probability.
    every = np.asarray(lens.logit_lens(model, cache=cache, pos=None))[:, 0]  # [layer, pos, d_vocab]
    probs = np.exp(every - every.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = probs.argmax(-1)
    logit_lens_table(
        [[tok.decode([int(t)]) for t in row] for row in top[::2]],
        probs.max(-1)[::2],
        row_labels=lensed.labels["layer"][::2],
        col_labels=tok.to_str_tokens(tokens[0]),
        title="logit lens (every other layer): top next token",
        path="out/logit_lens_table.png",
    )
    print("wrote out/logit_lens_dla.png and out/logit_lens_table.png")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main(sys.argv[1] if len(sys.argv) > 1 else smollm2_path())
