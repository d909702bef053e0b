"""Causal tracing benchmark: the full-forward path vs the fast engine, same run.

The trace of ``examples/causal_tracing.py`` (SmolLM2-135M, "The Eiffel Tower is located
in the city of" -> " Paris", noise on the subject "The Eiffel Tower"): every layer x
position, three kinds (hidden state, MLP window, attention window; window 10), 10 noise
samples.

The machine is shared, and its load changes over minutes. So the two methods are
timed in matched chunks, interleaved: one kind's map with one method, the same map with
the other, then the next kind (the order alternates, full first then fast first), and
the whole sequence again for each ``--rounds``. Each chunk's compile time (JAX's
compile events, `jaxinterp.engine.compile_cache.CompileTimer`) is reported separately
and subtracted: the steady-state time of a chunk is its wall time less its compile
time (in rounds after the first there is no compile). Printed: per chunk, both
methods' steady seconds, their ratio and the load average; the ratio of the summed
steady times, the median of the per-chunk ratios, the same from process CPU time;
the matmul FLOPs (`trace_flops`) of both; and the largest difference between the maps.

    nice -n 10 python benchmarks/causal_tracing.py                   # the real trace (minutes)
    python benchmarks/causal_tracing.py --layers 4 --samples 2      # a smoke run

Timings on a shared machine are noisy: compare the ratios printed by one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxinterp  # noqa: E402
from jaxinterp.causal.causal_tracing import causal_trace, trace_flops  # noqa: E402
from jaxinterp.engine.compile_cache import CompileTimer  # noqa: E402
from jaxinterp.loading.bundled import smollm2_path  # noqa: E402
from jaxinterp.loading.tokenizer import load_tokenizer  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "The Eiffel Tower"
ANSWER = " Paris"
KINDS = ("hidden", "mlp", "attn")
METHODS = ("full", "fast")


def load() -> float:
    return os.getloadavg()[0]


def chunk(fn):
    """Run ``fn``; return its result, wall seconds, compile seconds, process CPU seconds,
    and the 1-minute load average at the end."""
    with CompileTimer() as compiled:
        cpu, t = time.process_time(), time.perf_counter()
        out = fn()
        jax.block_until_ready(jax.tree_util.tree_leaves(out))
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return out, wall, compiled.total, cpu, load()


def main(n_layers: int, n_samples: int, rounds: int, kinds: tuple) -> None:
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
        f"SmolLM2-135M: {cfg.n_layers} layers x {n_pos} positions x {len(kinds)} kinds x {n_samples} samples "
        f"(window 10), devices {jax.devices()}, {os.cpu_count()} CPUs, load {load():.1f}",
        flush=True,
    )
    flops = trace_flops(model, n_pos, n_samples=n_samples, kinds=kinds)
    print(
        f"matmul FLOPs: full {flops['full'] / 1e12:.2f} TFLOP ({flops['full'] / flops['forward']:.0f} forward passes), "
        f"fast {flops['fast'] / 1e12:.2f} TFLOP: {flops['ratio']:.3f} of the full path (1/{1 / flops['ratio']:.2f})",
        flush=True,
    )
    print(
        "chunk            method  wall s  compile s  steady s  cpu s  load | steady full/fast",
        flush=True,
    )
    steady = {m: [] for m in METHODS}
    cpu_steady = {m: [] for m in METHODS}
    compile_s = {m: 0.0 for m in METHODS}
    maps = {m: {} for m in METHODS}
    first_wall = {m: [] for m in METHODS}
    ratios, cpu_ratios = [], []
    i = 0
    for r in range(rounds):
        for kind in kinds:
            order = METHODS if i % 2 == 0 else METHODS[::-1]
            i += 1
            got = {}
            for method in order:
                trace, wall, comp, cpu, ld = chunk(
                    lambda method=method: causal_trace(
                        model, tokens, subject, answer=answer, n_samples=n_samples, kinds=(kind,), method=method
                    )
                )
                run = wall - comp
                got[method] = (run, cpu)
                compile_s[method] += comp
                if r == 0:
                    first_wall[method].append(wall)
                    maps[method][kind] = np.asarray(getattr(trace, kind).values)
                    maps[method]["corrupted"] = np.asarray(trace.corrupted_prob)
                print(
                    f"round {r + 1} {kind:6s}  {method:5s} {wall:7.1f}  {comp:9.1f}  {run:8.1f} {cpu:6.1f} {ld:5.1f}",
                    end="" if method == order[-1] else "\n",
                    flush=True,
                )
            for m in METHODS:
                steady[m].append(got[m][0])
            # CPU time: rounds after the first only (compiling also burns CPU, not separable).
            if r > 0:
                for m in METHODS:
                    cpu_steady[m].append(got[m][1])
                cpu_ratios.append(got["full"][1] / got["fast"][1])
            ratios.append(got["full"][0] / got["fast"][0])
            print(f" | {ratios[-1]:.2f}x", flush=True)

    total = {m: sum(steady[m]) for m in METHODS}
    print(
        f"steady state (wall less compile), {len(ratios)} matched chunks: full {total['full']:.1f} s, "
        f"fast {total['fast']:.1f} s: {total['full'] / total['fast']:.2f}x; median per-chunk ratio "
        f"{statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})"
    )
    print(f"compile: full {compile_s['full']:.1f} s, fast {compile_s['fast']:.1f} s (all rounds)")
    first = {m: sum(first_wall[m]) for m in METHODS}
    print(
        f"first round, wall with compile: full {first['full']:.1f} s, fast {first['fast']:.1f} s: "
        f"{first['full'] / first['fast']:.2f}x"
    )
    if cpu_ratios:
        c = {m: sum(cpu_steady[m]) for m in METHODS}
        print(
            f"process CPU time, rounds 2+: full {c['full']:.1f} s, fast {c['fast']:.1f} s: "
            f"{c['full'] / c['fast']:.2f}x; median per-chunk {statistics.median(cpu_ratios):.2f}x"
        )
    print(
        f"achieved matmul rate (steady): full {flops['full'] * rounds / total['full'] / 1e9:.0f} GFLOP/s, "
        f"fast {flops['fast'] * rounds / total['fast'] / 1e9:.0f} GFLOP/s"
    )
    dev = max(float(np.max(np.abs(maps["full"][k] - maps["fast"][k]))) for k in kinds)
    dev = max(dev, float(abs(maps["full"]["corrupted"] - maps["fast"]["corrupted"])))
    print(f"max |p(full) - p(fast)| over the maps and the corrupted run: {dev:.2e}")
    assert dev <= 1e-5, f"the fast maps differ from the full path by {dev:.2e}"


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")  # as examples/causal_tracing.py
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=30, help="run the first N layers only (smoke runs)")
    parser.add_argument("--samples", type=int, default=10, help="noise samples per cell")
    parser.add_argument("--rounds", type=int, default=1, help="times the interleaved sequence of chunks is run")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: hidden, mlp, attn")
    args = parser.parse_args()
    main(args.layers, args.samples, args.rounds, tuple(args.kinds.split(",")))
