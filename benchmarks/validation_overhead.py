"""What the run-time input checks cost: the fast-engine sweep with checks on and off.

Under jit / vmap the library checks traced inputs with `eqx.error_if` (token ids in the
vocabulary, intervention locations in their axes; in the fast engine, every patch's
location indices). ``Fast(checks=False)`` / ``Plain(checks=False)`` /
``Transformer.run(checks=False)`` drop those checks. This script times the same
`activation_patch` sweep (``resid_pre`` over every layer and position, a logit
difference at the last position) on a GPT-2-small-shaped model (random weights) with
checks on and off, in one process, alternating the two so that machine noise hits both
alike, and prints the median of each and their ratio (the issue's target: < 2%).
It also checks that both give the same numbers, and times the check itself alone
(`check_rows` on the sweep's layout, jitted): on a shared machine the sweep's own
run-to-run noise is larger than the check.

    python benchmarks/validation_overhead.py            # GPT-2-small shape, 20 tokens
    python benchmarks/validation_overhead.py --quick    # a small model (seconds)
    python benchmarks/validation_overhead.py --plain    # also the plain engine
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from patching import GPT2_SMALL  # noqa: E402  (benchmarks/patching.py: the same model shape)

from jaxinterp import ModelConfig, Transformer  # noqa: E402
from jaxinterp.causal.patching import activation_patch, patch_grid  # noqa: E402
from jaxinterp.causal.patching.engines import Fast, Plain  # noqa: E402
from jaxinterp.causal.patching.fast import check_rows, fast_layout  # noqa: E402
from jaxinterp.core.metrics import logit_diff  # noqa: E402

QUICK = ModelConfig(d_model=128, n_layers=4, n_heads=4, d_head=32, d_vocab=4096, n_ctx=64, d_mlp=512, act_fn="gelu_new")


def compare(name: str, engine_on, engine_off, model, clean, corrupt, metric, repeats: int) -> float:
    """Print the timings of one engine with checks on and off; return the median without checks."""

    def sweep(engine):
        return np.asarray(activation_patch(model, clean, corrupt, metric, "resid_pre", ("layer", "pos"), engine=engine))

    out_on, out_off = sweep(engine_on), sweep(engine_off)  # compile both first
    on, off = [], []
    for _ in range(repeats):  # alternate, so that noise on the shared machine hits both alike
        for engine, times in ((engine_on, on), (engine_off, off)):
            t = time.perf_counter()
            jax.block_until_ready(sweep(engine))
            times.append(time.perf_counter() - t)
    med_on, med_off = statistics.median(on), statistics.median(off)
    print(
        f"{name:6s} checks on {med_on:8.4f} s   off {med_off:8.4f} s   on/off {med_on / med_off:6.4f}   "
        f"(overhead {100 * (med_on / med_off - 1):+.2f}%; min on/off {min(on) / min(off):.4f}; "
        f"{repeats} alternating repeats; max |on - off| {np.max(np.abs(out_on - out_off)):.1e})"
    )
    return med_off


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small model")
    parser.add_argument("--repeats", type=int, default=9, help="timed sweeps per setting")
    parser.add_argument("--n-pos", type=int, default=20, help="prompt length")
    parser.add_argument("--plain", action="store_true", help="also time the plain engine")
    args = parser.parse_args()
    cfg = QUICK if args.quick else GPT2_SMALL
    model = Transformer.init(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    clean = rng.integers(0, cfg.d_vocab, args.n_pos).astype(np.int32)
    corrupt = clean.copy()
    corrupt[args.n_pos // 3] = (clean[args.n_pos // 3] + 1) % cfg.d_vocab
    metric = logit_diff(int(clean[-1]), int(corrupt[-1]))
    print(
        f"{'quick' if args.quick else 'GPT-2-small'} shape: {cfg.n_layers} layers, d_model {cfg.d_model}, "
        f"vocab {cfg.d_vocab}; {args.n_pos} tokens; resid_pre over (layer, pos): {cfg.n_layers * args.n_pos} patches; "
        f"backend {jax.default_backend()}"
    )
    off = compare("fast", Fast(), Fast(checks=False), model, clean, corrupt, metric, args.repeats)
    # The check alone, on the same layout data the sweep checks.
    grid = patch_grid(cfg, args.n_pos, "resid_pre", ("layer", "pos"))
    data = fast_layout(cfg, args.n_pos, grid).data
    check = jax.jit(lambda d: check_rows(d, cfg, "resid_pre", args.n_pos))
    jax.block_until_ready(check(data))
    alone = []
    for _ in range(50):
        t = time.perf_counter()
        jax.block_until_ready(check(data))
        alone.append(time.perf_counter() - t)
    print(
        f"the check alone (check_rows, jitted, median of 50): {1e3 * statistics.median(alone):.3f} ms = "
        f"{100 * statistics.median(alone) / off:.3f}% of the fast sweep without checks"
    )
    if args.plain:
        compare("plain", Plain(), Plain(checks=False), model, clean, corrupt, metric, args.repeats)


if __name__ == "__main__":
    main()
