"""Multi-host: a sweep over a global mesh spanning two processes (`jax.distributed` on
this machine: CPU devices, four per process, gloo collectives) equals the same sweep in
one process, and each process holds and writes only its own shard of the result.

The code under test is examples/multihost_sweep.py (the code docs/scale.md shows); the
reference is an unsharded single-process sweep of the same model, checked here against
a loop of single-patch forward passes. The workers run with a timeout and on a free
port, and are killed if they overrun, so a stuck collective fails the test instead of
hanging the suite.
"""

from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example():
    spec = importlib.util.spec_from_file_location(
        "multihost_sweep", os.path.join(ROOT, "examples", "multihost_sweep.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_process_sweep_equals_single_process(tmp_path):
    example = _example()
    result = example.launch(str(tmp_path), num_processes=2, timeout=150)
    n = result.shape[0]

    # Each process wrote one contiguous half (its "data" shard), and only that.
    parts = [np.load(tmp_path / f"process{i}.npz") for i in range(2)]
    assert [(list(p["start"]), list(p["stop"])) for p in parts] == [([0], [n // 2]), ([n // 2], [n])]
    assert all(p["values"].shape == (n // 2,) for p in parts)

    # The single-process reference, itself checked against single patches.
    model, z = example.single_process()
    reference = example.reference(model, z)
    one = jax.jit(example.patched_logit_diff)
    locs = example.locations(model.cfg)
    for i in (0, 37, n // 2, n - 1):  # a few single patches, on both processes' halves
        loc = {k: v[i] for k, v in locs.items()}
        np.testing.assert_allclose(reference[i], one(loc, model, z, example.CORRUPT), atol=1e-5)

    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-5)
    assert np.ptp(reference) > 0.1  # the patches do change the metric: the comparison can fail


def test_the_docs_show_the_code_this_test_runs():
    """docs/scale.md's multi-host code blocks are verbatim parts of the example."""
    page = open(os.path.join(ROOT, "docs", "scale.md")).read()
    source = open(os.path.join(ROOT, "examples", "multihost_sweep.py")).read()
    marker = "<!-- from examples/multihost_sweep.py -->\n```python\n"
    blocks = [part.split("\n```", 1)[0] for part in page.split(marker)[1:]]
    assert len(blocks) == 2 and "jax.distributed.initialize(" in blocks[1]
    for block in blocks:
        assert block in source, block[:200]
