"""The persistent compilation cache: off on import, on when asked, off by env var.

A program compiled in one process is loaded from the cache directory after the
in-memory caches are dropped (``jax.clear_caches``, as in a new process): JAX's own
cache-hit event is the reference, and the XLA seconds `CompileTimer` counts fall.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

from jaxinterp.engine.compile_cache import CompileTimer, default_cache_dir, enable_compilation_cache

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
import jax
import jaxinterp
from jaxinterp import ModelConfig
from jaxinterp.engine.compile_cache import CompileTimer

out = {"dir on import": jax.config.jax_compilation_cache_dir}
out["enabled"] = str(jaxinterp.enable_compilation_cache(sys.argv[1]))
out["thresholds"] = [jax.config.jax_persistent_cache_min_compile_time_secs,
                     jax.config.jax_persistent_cache_min_entry_size_bytes]
jaxinterp.enable_compilation_cache(sys.argv[1], min_compile_time_secs=0.0)  # any program, however quick
cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=32, n_ctx=16, d_mlp=32)
model = jaxinterp.Transformer.init(cfg, jax.random.key(0), std=0.3)
forward = jax.jit(lambda m, t: m.run(t, checks=False)[0])  # no host callbacks: JAX caches only those
tokens = jax.numpy.arange(6)
timers = []
for _ in range(2):
    jax.clear_caches()  # drop the in-memory caches: the next call compiles or loads from disk
    with CompileTimer() as t:
        logits = forward(model, tokens).block_until_ready()
    timers.append({"xla": t.backend, "hits": t.cache_hits, "programs": t.programs, "sum": float(logits.sum())})
out["runs"] = timers
print("RESULT", json.dumps(out))
"""


def test_cache_on_when_enabled_and_a_dropped_program_loads_from_disk(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAXINTERP_NO_COMPILE_CACHE"}
    env["PYTHONPATH"] = str(ROOT)
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(cache)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert out["dir on import"] is None  # importing jaxinterp changes no JAX setting
    assert out["enabled"] == str(cache) and any(cache.iterdir())
    assert out["thresholds"] == [0.1, 0]  # JAX's default (1 s) would skip most CPU programs
    first, second = out["runs"]
    assert first["hits"] == 0 and second["hits"] == first["programs"] >= 1
    assert second["xla"] < first["xla"]  # loading is cheaper than compiling
    assert second["sum"] == first["sum"]


def test_env_var_opts_out_and_default_dir(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("JAXINTERP_NO_COMPILE_CACHE", "1")
    assert enable_compilation_cache(tmp_path / "never") is None
    assert not (tmp_path / "never").exists() and jax.config.jax_compilation_cache_dir == before
    monkeypatch.delenv("JAXINTERP_COMPILE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "jaxinterp" / "jax"
    monkeypatch.setenv("JAXINTERP_COMPILE_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_compile_timer_counts_a_compile_and_stops():
    timer = CompileTimer()
    with timer:
        jax.jit(lambda x: x * 3 + 1)(jax.numpy.arange(7.0)).block_until_ready()
    assert timer.programs >= 1 and timer.backend > 0 and timer.trace > 0
    programs = timer.programs
    jax.jit(lambda x: x * 5 - 2)(jax.numpy.arange(7.0)).block_until_ready()
    assert timer.programs == programs  # stopped: no longer counting
