"""KV-cached generation with SmolLM2-135M-Instruct: a batch of chat prompts of different
lengths, greedy and sampled, a steering vector applied only to the generated tokens,
and the residual stream recorded at the generated tokens.

    .venv/bin/python examples/generation.py
    JAXINTERP_QUICK=1 .venv/bin/python examples/generation.py    # a few tokens, one prompt set

1. Greedy answers to three chat prompts (left-padded into one batch, stopping at
   ``<|im_end|>``), in one compiled call.
2. The same prompts sampled (temperature 0.8, top-p 0.9) with two seeds.
3. A "positive minus negative" sentiment vector (the mean-difference recipe of
   docs/steering.md) added at layer 6 to the generated tokens only, at three coefficients.
4. The norm of the residual stream at the last layer over the generated tokens, from the
   generation's own cache (no second pass).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

import jaxinterp as ji
from jaxinterp.editing.generation import generate
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.steering import steering_vector

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
QUESTIONS = ["What is the capital of France?", "Name three colours.", "Write one sentence about the sea."]
POSITIVE = ["I love this, it is wonderful", "What a great and happy day", "This is excellent and delightful"]
NEGATIVE = ["I hate this, it is terrible", "What an awful and sad day", "This is horrible and disgusting"]


def chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def main():
    path = smollm2_path()
    model, tok = ji.load(path, n_layers=8 if QUICK else None), ji.load_tokenizer(path)  # QUICK: every code path, on the first layers
    n_new = 8 if QUICK else 48
    questions = QUESTIONS[:2] if QUICK else QUESTIONS
    prompts = [tok.encode(chat(q)) for q in questions]
    stop = [tok.to_single_token("<|im_end|>")]

    t0 = time.perf_counter()
    out = generate(model, prompts, n_new, stop_tokens=stop, pad_token_id=stop[0])
    print(
        f"1. greedy, {len(prompts)} prompts of {[len(p) for p in prompts]} tokens, {n_new} new tokens "
        f"({time.perf_counter() - t0:.1f} s with compilation):"
    )
    for q, row in zip(questions, np.asarray(out.tokens)):
        print(f"   {q!r} -> {tok.decode(row, skip_special_tokens=True)!r}")

    print("2. sampled (temperature 0.8, top-p 0.9):")
    for seed in (0, 1):
        out = generate(
            model,
            prompts[:1],
            n_new,
            temperature=0.8,
            top_p=0.9,
            key=jax.random.key(seed),
            stop_tokens=stop,
            pad_token_id=stop[0],
        )
        print(f"   seed {seed}: {tok.decode(np.asarray(out.tokens)[0], skip_special_tokens=True)!r}")

    layer = 6
    v = steering_vector(model, tok, POSITIVE, NEGATIVE, layer)
    prompt = tok.encode("My review of the movie: it was")
    print(f"3. sentiment vector at layer {layer}, added to the generated tokens only:")
    for coef in [0.0, 4.0] if QUICK else [-4.0, 0.0, 4.0]:
        steer = [ji.Add("resid_pre", coef * v, layer=layer)]
        out = generate(model, prompt, n_new // 2 if QUICK else 16, interventions=steer, apply_to="generated")
        print(f"   {coef:+.0f}: {tok.decode(np.asarray(out.tokens))!r}")

    out = generate(model, prompts[:1], n_new, cache=["resid_post"])
    norms = np.linalg.norm(np.asarray(out.cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"])[0], axis=-1)
    print(
        f"4. |resid_post| at the last layer over the {n_new} generated tokens: "
        f"min {norms.min():.1f}, median {np.median(norms):.1f}, max {norms.max():.1f}"
    )


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
