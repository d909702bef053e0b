"""Causal tracing benchmark: the full-forward path vs the fast engine, same run.

The trace of ``examples/causal_tracing.py`` (SmolLM2-135M, "The Eiffel Tower is located
in the city of" -> " Paris", noise on the subject "The Eiffel Tower"): every layer x
position, three kinds (hidden state, MLP window, attention window; window 10), 10 noise
samples. Prints, for each method, the wall time of the first call (compile included) and
of a second call (``--repeat``), the matmul FLOPs (`trace_flops`) relative to the full
path, and the largest difference between the two methods' maps.

    nice -n 10 python benchmarks/causal_tracing.py              # the real trace (minutes)
    python benchmarks/causal_tracing.py --layers 4 --samples 2  # a smoke run

Timings on a shared machine are noisy: compare the ratios printed by one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxinterp  # noqa: E402
from jaxinterp.causal.causal_tracing import causal_trace, trace_flops  # noqa: E402
from jaxinterp.loading.bundled import smollm2_path  # noqa: E402
from jaxinterp.loading.tokenizer import load_tokenizer  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "The Eiffel Tower"
ANSWER = " Paris"
KINDS = ("hidden", "mlp", "attn")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(n_layers: int, n_samples: int, repeat: int, methods: tuple) -> None:
    path = smollm2_path()
    model, tok = jaxinterp.load(path), load_tokenizer(path)
    if n_layers < model.cfg.n_layers:
        model = model.first_layers(n_layers)
    tokens = tok.to_tokens(PROMPT)
    n_pos = int(tokens.shape[0])
    subject = list(range(len(tok.to_tokens(SUBJECT))))
    answer = tok.to_single_token(ANSWER)
    cfg = model.cfg
    print(
        f"SmolLM2-135M: {cfg.n_layers} layers x {n_pos} positions x {len(KINDS)} kinds x {n_samples} samples "
        f"(window 10), devices {jax.devices()}"
    )
    flops = trace_flops(model, n_pos, n_samples=n_samples)
    print(
        f"matmul FLOPs: full {flops['full'] / 1e12:.2f} TFLOP ({flops['full'] / flops['forward']:.0f} forward passes), "
        f"fast {flops['fast'] / 1e12:.2f} TFLOP: {flops['ratio']:.3f} of the full path"
    )

    results, times = {}, {}
    for method in methods:
        runs = []
        for _ in range(1 + repeat):
            trace, seconds = timed(
                lambda: causal_trace(model, tokens, subject, answer=answer, n_samples=n_samples, method=method)
            )
            runs.append(seconds)
        results[method], times[method] = trace, runs
        steady = f", then {', '.join(f'{s:.1f}' for s in runs[1:])} s" if repeat else ""
        print(f"  {method:5s}: first call {runs[0]:.1f} s (compile included){steady}")

    if len(methods) == 2:
        full, fast = results["full"], results["fast"]
        dev = max(float(np.max(np.abs(getattr(full, k).values - getattr(fast, k).values))) for k in KINDS)
        dev = max(dev, abs(full.corrupted_prob - fast.corrupted_prob))
        print(f"speedup (first calls): {times['full'][0] / times['fast'][0]:.2f}x", end="")
        if repeat:
            print(f"; (second calls): {times['full'][1] / times['fast'][1]:.2f}x", end="")
        print(f"; FLOPs ratio {flops['ratio']:.3f} (1/{1 / flops['ratio']:.2f})")
        print(f"max |p(full) - p(fast)| over the three maps and the corrupted run: {dev:.2e}")
        print(f"p({ANSWER!r}): clean {fast.clean_prob:.4f}, corrupted {fast.corrupted_prob:.4f}")
        assert dev <= 1e-5, f"the fast maps differ from the full path by {dev:.2e}"


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")  # as examples/causal_tracing.py
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=30, help="run the first N layers only (smoke runs)")
    parser.add_argument("--samples", type=int, default=10, help="noise samples per cell")
    parser.add_argument("--repeat", type=int, default=0, help="extra calls per method (steady-state time)")
    parser.add_argument("--methods", default="full,fast", help="comma-separated: full, fast")
    args = parser.parse_args()
    main(args.layers, args.samples, args.repeat, tuple(args.methods.split(",")))
