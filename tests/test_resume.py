"""Checkpointed sweeps resume after SIGKILL without recomputing finished chunks.

The reference is the same sweep run without a checkpoint (and a loop of single patches
is what that sweep is checked against in test_patching.py). The kill test runs the
sweep in a child process, kills it with SIGKILL once some chunk files exist, resumes it
in a second process, and compares with an uninterrupted run bit for bit; the child's log
says which chunks it loaded and which it computed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import ModelConfig
from jaxinterp.causal.patching import activation_patch, sweep
from jaxinterp.core.errors import JaxinterpError, ResumeError
from jaxinterp.core.metrics import custom, logit_diff
from jaxinterp.engine.checkpoint import SweepCheckpoint, fingerprint
from jaxinterp.toy.random_init import random_model

ROOT = Path(__file__).resolve().parents[1]
CFG = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=32, n_ctx=16, d_mlp=32)
CLEAN = [1, 2, 3, 4, 5, 6]
CORRUPT = [1, 2, 7, 4, 5, 6]

# The child process: one activation_patch sweep of 6 chunks on a tiny random model. In
# "slow" mode it pauses after each saved chunk so the parent can kill it mid-run.
CHILD = r"""
import json, logging, sys, time
import jax.numpy as jnp, numpy as np
from jaxinterp import ModelConfig
from jaxinterp.causal.patching import activation_patch
from jaxinterp.core.errors import ResumeError
from jaxinterp.core.metrics import logit_diff
from jaxinterp.toy.random_init import random_model

mode, directory, engine = sys.argv[1:4]

class Log(logging.Handler):
    def emit(self, record):
        print("LOG", record.getMessage(), flush=True)
        if mode == "slow" and " computed in " in record.getMessage():
            time.sleep(0.7)

log = logging.getLogger("jaxinterp.checkpoint")
log.addHandler(Log())
log.setLevel(logging.INFO)
cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=32, n_ctx=16, d_mlp=32)
model = random_model(cfg, 0, std=0.3)
clean, corrupt = jnp.array(CLEAN), jnp.array(CORRUPT)

def patch(metric, checkpoint):
    return np.asarray(activation_patch(model, clean, corrupt, metric, batch_size=2, engine=engine, checkpoint=checkpoint))

out = {"result": patch(logit_diff(3, 4), directory).tolist()}
if mode == "resume":
    print("LOG --- reference runs", flush=True)
    out["fresh"] = patch(logit_diff(3, 4), directory + "-fresh").tolist()
    out["unchecked"] = patch(logit_diff(3, 4), None).tolist()
    try:
        patch(logit_diff(3, 5), directory)
    except ResumeError as error:
        out["refused"] = str(error)
print("RESULT", json.dumps(out), flush=True)
""".replace("CLEAN", str(CLEAN)).replace("CORRUPT", str(CORRUPT))


def _child(mode: str, directory: Path, engine: str = "fast"):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAXINTERP_NO_COMPILE_CACHE="1")
    cmd = [sys.executable, "-c", CHILD, mode, str(directory), engine]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    directory = tmp_path / "sweep"
    child = _child("slow", directory)
    deadline = time.time() + 120
    while len(list(directory.glob("chunk-*.npz"))) < 2:  # finished chunks are files
        assert child.poll() is None, child.stdout.read()
        assert time.time() < deadline, "the child wrote no chunks"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    finished = sorted(int(p.stem.split("-")[1]) for p in directory.glob("chunk-*.npz"))
    assert 2 <= len(finished) < 6, finished  # killed mid-run

    resumed = _child("resume", directory)
    text, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, text
    log = [line[4:] for line in text.splitlines() if line.startswith("LOG ")]
    log = log[: log.index("--- reference runs")]
    loaded = [int(line.split()[1]) for line in log if "loaded" in line]
    computed = [int(line.split()[1]) for line in log if " computed in " in line]
    assert loaded == finished  # every finished chunk loaded, none recomputed
    assert sorted(computed) == sorted(set(range(6)) - set(finished))
    out = json.loads(text.split("RESULT ", 1)[1])
    assert out["result"] == out["fresh"]  # bit for bit: an uninterrupted checkpointed run
    assert out["result"] == out["unchecked"]  # and the sweep without a checkpoint
    assert np.isfinite(out["result"]).all() and np.std(out["result"]) > 0
    assert "its metric differs" in out["refused"]


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, 0, std=0.3)


def _loaded_computed(caplog):
    messages = [r.getMessage() for r in caplog.records if r.name == "jaxinterp.checkpoint"]
    loaded = sorted(int(m.split()[1]) for m in messages if "loaded" in m)
    computed = sorted(int(m.split()[1]) for m in messages if " computed in " in m)
    return loaded, computed


def test_plain_engine_resumes_recomputes_damaged_chunks_and_refuses_other_inputs(model, tmp_path, caplog, capsys):
    clean, corrupt = jnp.array(CLEAN), jnp.array(CORRUPT)
    metric = logit_diff(3, 4)

    def patch(checkpoint, metric=metric, **kw):
        kw = {"engine": "plain", "batch_size": 2, **kw}
        return np.asarray(activation_patch(model, clean, corrupt, metric, checkpoint=checkpoint, **kw))

    reference = patch(None)
    directory = tmp_path / "plain"
    caplog.set_level(logging.INFO, "jaxinterp.checkpoint")
    first = patch(directory, progress=True)
    assert "6/6" in capsys.readouterr().err  # the progress bar ran over the 6 chunks
    np.testing.assert_array_equal(first, reference)
    assert _loaded_computed(caplog) == ([], list(range(6)))

    # A kill mid-run: chunks 3.. missing, chunk 1 damaged, a temporary file left behind.
    for i in range(3, 6):
        (directory / f"chunk-{i:06d}.npz").unlink()
    (directory / "chunk-000001.npz").write_bytes(b"not an npz")
    (directory / "chunk-000004.npz.tmp-123").write_bytes(b"half a file")
    caplog.clear()
    np.testing.assert_array_equal(patch(directory), reference)
    assert _loaded_computed(caplog) == ([0, 2], [1, 3, 4, 5])
    assert not list(directory.glob("*.tmp-*"))

    other = random_model(CFG, 1, std=0.3)
    with pytest.raises(ResumeError, match="its model differs"):
        activation_patch(other, clean, corrupt, metric, engine="plain", batch_size=2, checkpoint=directory)
    with pytest.raises(ResumeError, match="its base prompt differs"):
        activation_patch(model, clean, clean.at[3].set(9), metric, engine="plain", batch_size=2, checkpoint=directory)
    with pytest.raises(ResumeError, match="its chunking, engine differ"):
        patch(directory, batch_size=3)
    with pytest.raises(ResumeError, match="its metric differs"):
        patch(directory, logit_diff(3, 5))
    with pytest.raises(ResumeError, match="not empty and has no manifest.json"):
        patch(tmp_path)  # holds the "plain" folder
    assert issubclass(ResumeError, JaxinterpError)


def test_sweep_checkpoint_keys_on_function_and_operands(tmp_path, caplog):
    caplog.set_level(logging.INFO, "jaxinterp.checkpoint")
    locations = {"i": np.arange(5)}

    def fn(loc, w):
        return w[loc["i"]] * 2.0

    w = jnp.arange(5.0)
    out = sweep(fn, locations, w, batch_size=2, checkpoint=tmp_path)
    np.testing.assert_array_equal(out, 2 * np.arange(5.0))
    caplog.clear()
    np.testing.assert_array_equal(sweep(fn, locations, w, batch_size=2, checkpoint=tmp_path), out)
    assert _loaded_computed(caplog) == ([0, 1, 2], [])
    with pytest.raises(ResumeError, match="its operand 0 differs"):
        sweep(fn, locations, w + 1, batch_size=2, checkpoint=tmp_path)
    with pytest.raises(ResumeError, match="its function differs"):
        sweep(lambda loc, w: w[loc["i"]] * 3.0, locations, w, batch_size=2, checkpoint=tmp_path)


def _metric(scale):
    return lambda logits: scale * (logits[-1, 3] - logits[-1, 4])


class Opaque:
    """An object jaxinterp cannot fingerprint."""


def test_function_fingerprints():
    # Same code, same closure: equal; another closed-over value or other code: different.
    assert fingerprint(_metric(2.0)) == fingerprint(_metric(2.0))
    assert fingerprint(_metric(2.0)) != fingerprint(_metric(3.0))
    assert fingerprint(lambda l: l[-1, 3]) != fingerprint(lambda l: l[-1, 4])
    assert fingerprint(custom(_metric(2.0))) != fingerprint(custom(_metric(3.0)))
    assert fingerprint(logit_diff(3, 4)) != fingerprint(logit_diff(3, 5))
    assert fingerprint(jnp.zeros(3)) != fingerprint(jnp.zeros(3, jnp.int32))
    opaque = Opaque()
    with pytest.raises(ResumeError, match="the variable 'opaque' it closes over.*key="):
        fingerprint(lambda logits: logits[-1, 0] + (opaque is None), "metric")
    # A key names the metric instead.
    ckpt = SweepCheckpoint("unused", key="my-metric-v1").with_inputs(metric=lambda logits: opaque)
    assert ckpt.inputs["metric"] == "key:my-metric-v1"
