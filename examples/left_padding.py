"""Left-padded batches on a real model: each prompt's logits in a left-padded batch (with
its attention mask) equal the prompt run alone, because positions count real tokens.

    .venv/bin/python examples/left_padding.py [path/to/model.gguf | hf_dir | hub_id]

Defaults to the bundled SmolLM2-135M-Instruct GGUF (30 layers, rotary, GQA). Prints, per
prompt, the largest |logit difference| between its row of the left-padded batch and
the prompt alone, and the same for the right-padded batch. ``JAXINTERP_QUICK=1``: two
short prompts.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import jaxinterp
from jaxinterp.loading.bundled import smollm2_path

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The capital of France is",
    "Hello",
    "One, two, three, four, five, six,",
]


def main(path: str) -> None:
    quick = os.environ.get("JAXINTERP_QUICK") == "1"
    prompts = PROMPTS[1:3] if quick else PROMPTS
    model, tok = jaxinterp.load(path, n_layers=8 if quick else None), jaxinterp.load_tokenizer(path)  # quick: every code path, on the first layers
    alone = [np.asarray(model(tok.to_tokens(p))) for p in prompts]
    for side in ("left", "right"):
        tokens, mask = tok.to_tokens_and_mask(prompts, padding_side=side)
        batch = np.asarray(model(tokens, attention_mask=mask))
        for row, prompt in enumerate(prompts):
            diff = np.abs(batch[row, mask[row] == 1] - alone[row]).max()
            top_same = (batch[row, mask[row] == 1].argmax(-1) == alone[row].argmax(-1)).all()
            print(
                f"{side:5s}-padded  {len(alone[row]):2d} tokens  max|logit diff| {diff:.2e}  "
                f"top tokens equal: {bool(top_same)}  {prompt!r}"
            )


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main(sys.argv[1] if len(sys.argv) > 1 else smollm2_path())
