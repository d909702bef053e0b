"""A dataset of IOI prompt pairs, patched in one compiled program per sweep (SmolLM2-135M).

    .venv/bin/python examples/ioi_dataset_patching.py [path/to/model.gguf] [--pairs 64]

Builds 64 IOI pairs with `jaxinterp.causal.ioi.ioi_dataset` (one template, random
names, places and objects, ABBA/BABA alternating, the "abc" corruption), and runs the
residual-stream sweep (``resid_pre`` over layer x position) and the head sweep
(``attn.z`` over layer x head) on the whole dataset at once, each pair scored by its own
logit difference ``logit(IO) - logit(S)``. Then the reference: a Python loop of
single-pair sweeps, one per pair, averaged. Printed per sweep: the largest relative
difference between the two (target: within 1e-5), how many programs the dataset sweep
compiled (target: one), and both wall times. ``JAXINTERP_QUICK=1``: the first 4 layers
and 4 pairs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import jaxinterp
from jaxinterp.causal.ioi import IOI_TEMPLATES, ioi_dataset
from jaxinterp.causal.patching import Fast, activation_patch
from jaxinterp.causal.patching.fast import fast_program
from jaxinterp.core.metrics import logit_diff
from jaxinterp.loading.bundled import smollm2_path

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
SWEEPS = {"resid_pre": ("layer", "pos"), "attn.z": ("layer", "head")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", default=None)
    parser.add_argument("--pairs", type=int, default=4 if QUICK else 64)
    parser.add_argument("--sites", default=",".join(SWEEPS))
    args = parser.parse_args()
    path = args.path or smollm2_path()
    model = jaxinterp.load(path, n_layers=4 if QUICK else None)
    tokenizer = jaxinterp.load_tokenizer(path)
    data = ioi_dataset(tokenizer, args.pairs, templates=IOI_TEMPLATES[:1], corruption="abc", seed=0)
    print(f"{data.n_pairs} IOI pairs of {data.clean.shape[1]} tokens, e.g.")
    for i in range(2):
        print(f"  [{data.order[i]}] {data.clean_text[i]!r} -> {data.corrupted_text[i]!r}")
    metric = data.metric()
    # Compiled for speed of running (quick_compile=False), as a large sweep would be.
    engine = Fast(quick_compile=False)
    for site in args.sites.split(","):
        over = SWEEPS[site]
        before = fast_program._cache_size()
        t = time.perf_counter()
        dataset = np.asarray(activation_patch(model, data.clean, data.corrupted, metric, site, over, engine=engine))
        t_dataset = time.perf_counter() - t
        compiled = fast_program._cache_size() - before

        t = time.perf_counter()
        singles = []
        for i in range(data.n_pairs):
            one = logit_diff(int(data.answer[i]), int(data.wrong[i]), int(data.pos[i]))
            singles.append(
                np.asarray(activation_patch(model, data.clean[i], data.corrupted[i], one, site, over, engine=engine))
            )
        t_loop = time.perf_counter() - t
        reference = np.mean(singles, axis=0)
        rel = np.max(np.abs(dataset - reference)) / np.max(np.abs(reference))
        print(
            f"{site} over {over}: result {dataset.shape}, max |dataset - mean of per-pair sweeps| / max |mean| = "
            f"{rel:.2e} ({'within' if rel <= 1e-5 else 'NOT within'} 1e-5); sweep programs compiled for the "
            f"dataset: {compiled}; dataset {t_dataset:.1f} s, loop of {data.n_pairs} single-pair sweeps {t_loop:.1f} s"
        )
        top = np.dstack(np.unravel_index(np.argsort(-np.abs(dataset), axis=None)[:3], dataset.shape))[0]
        print(
            "  largest mean logit differences after patching: "
            + ", ".join(f"{tuple(int(i) for i in ix)}: {dataset[tuple(ix)]:+.3f}" for ix in top)
        )


if __name__ == "__main__":
    main()
