"""Attribution over a dataset in chunks of pairs, checkpointed and resumed after SIGKILL.

References: the unchunked run (every pair in one vmap; itself checked against loops of
single-pair calls in test_attribution.py and test_pairs.py), which the chunked run must
equal for the mean and per pair; and, for the kill test, an uninterrupted run, which the
resumed one must equal bit for bit.

The kill test follows tests/test_resume.py, but the resuming process is this one: a
child process starts at import of this module (so it compiles while the other tests
run), saves chunks 0 and 1 of 3 and then sleeps in its log handler; it is SIGKILLed
there, and `test_sigkill_then_resume_equals_uninterrupted_run` resumes the run in this
process, whose log must show chunks 0 and 1 loaded and only chunk 2 computed.
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
from jaxinterp.causal.attribution import attribution_patch, edge_attribution_patch
from jaxinterp.core.errors import PairBatchError, ResumeError
from jaxinterp.core.metrics import logit_diff
from jaxinterp.core.pair_metrics import pair_logit_diff
from jaxinterp.toy.random_init import random_model

ROOT = Path(__file__).resolve().parents[1]
CFG = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=32, n_ctx=16, d_mlp=32)
N_PAIRS, N_POS = 5, 6
SITES = ("resid_pre", "attn.z")

# Five pairs: random prompts, the corrupted one differing at position 2; the last pair
# one token shorter (right-padded, attention_mask); each pair its own answer and wrong
# token, read at its last real position.
_rng = np.random.default_rng(0)
CLEAN = _rng.integers(0, 32, (N_PAIRS, N_POS))
CORRUPT = CLEAN.copy()
CORRUPT[:, 2] = (CLEAN[:, 2] + 1 + _rng.integers(0, 30, N_PAIRS)) % 32
MASK = np.ones((N_PAIRS, N_POS), np.int32)
MASK[-1, -1] = 0
CLEAN[-1, -1] = CORRUPT[-1, -1] = 0
LAST = MASK.sum(1) - 1
ANSWER = _rng.integers(0, 32, N_PAIRS)
WRONG = (ANSWER + 1 + _rng.integers(0, 30, N_PAIRS)) % 32


def _metric(wrong=WRONG):
    return pair_logit_diff(jnp.asarray(ANSWER), jnp.asarray(wrong), jnp.asarray(LAST))


def _nodes(model, **kw):
    out = attribution_patch(model, CLEAN, CORRUPT, kw.pop("metric", _metric()), SITES, attention_mask=MASK, **kw)
    return {s: np.asarray(out[s]) for s in SITES}


def _edges(model, **kw):
    metric = kw.pop("metric", _metric())
    return np.asarray(edge_attribution_patch(model, CLEAN, CORRUPT, metric, attention_mask=MASK, **kw))


def _loaded_computed(caplog):
    messages = [r.getMessage() for r in caplog.records if r.name == "jaxinterp.checkpoint"]
    loaded = sorted(int(m.split()[1]) for m in messages if "loaded" in m)
    computed = sorted(int(m.split()[1]) for m in messages if " computed in " in m)
    return loaded, computed


# The child: `_nodes(model, per_pair=True, batch_size=2, checkpoint=directory)`, 3 chunks;
# after saving its second chunk it sleeps (the parent kills it there). The same jax
# settings as conftest.py's, so its chunks are what this process would compute.
CHILD = r"""
import json, logging, sys, time
import jax
jax.config.update("jax_default_matmul_precision", "highest")
import numpy as np, jax.numpy as jnp
from jaxinterp import ModelConfig
from jaxinterp.causal.attribution import attribution_patch
from jaxinterp.core.pair_metrics import pair_logit_diff
from jaxinterp.toy.random_init import random_model

clean, corrupt, mask, last, answer, wrong = (np.array(json.loads(a)) for a in sys.argv[2:8])

class Log(logging.Handler):
    def emit(self, record):
        print("LOG", record.getMessage(), flush=True)
        if record.getMessage().startswith("chunk 1 of 3 computed in "):
            time.sleep(600)

log = logging.getLogger("jaxinterp.checkpoint")
log.addHandler(Log())
log.setLevel(logging.INFO)
cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=32, n_ctx=16, d_mlp=32)
model = random_model(cfg, 0, std=0.3)
metric = pair_logit_diff(jnp.asarray(answer), jnp.asarray(wrong), jnp.asarray(last))
attribution_patch(model, clean, corrupt, metric, ("resid_pre", "attn.z"), attention_mask=mask, per_pair=True,
                  batch_size=2, checkpoint=sys.argv[1])
print("FINISHED", flush=True)
"""


@pytest.fixture(scope="module", autouse=True)
def child(tmp_path_factory):
    """The child run to be killed, started before the first test."""
    directory = tmp_path_factory.mktemp("killed") / "attr"
    data = [json.dumps(a.tolist()) for a in (CLEAN, CORRUPT, MASK, LAST, ANSWER, WRONG)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAXINTERP_NO_COMPILE_CACHE="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), *data],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc, directory
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, 0, std=0.3)


@pytest.fixture(scope="module")
def whole(model):
    """The unchunked runs: every pair in one vmap (one program for the mean and per pair)."""
    return _nodes(model), _nodes(model, per_pair=True), _edges(model)


def test_chunked_equals_unchunked(model, whole, caplog):
    whole_mean, whole_pp, edges_whole = whole
    caplog.set_level(logging.INFO, "jaxinterp.checkpoint")
    chunked, chunked_pp = _nodes(model, batch_size=2), _nodes(model, batch_size=2, per_pair=True)
    assert _loaded_computed(caplog) == ([], [0, 0, 1, 1, 2, 2])  # 3 chunks of 2 pairs (the last padded), twice
    for s in SITES:
        assert chunked_pp[s].shape == (N_PAIRS,) + chunked[s].shape
        np.testing.assert_allclose(chunked[s], whole_mean[s], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(chunked_pp[s], whole_pp[s], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(whole_mean[s], whole_pp[s].mean(0), rtol=1e-5, atol=1e-6)
        assert np.abs(whole_pp[s]).max() > 1e-2  # not a comparison of zeros
        # The pairs differ enough that weighting the padded last chunk wrongly would show.
        assert np.abs(whole_pp[s][:4].mean(0) - whole_mean[s]).max() > 1e-3
    edges_chunked = _edges(model, batch_size=2)
    np.testing.assert_allclose(edges_chunked, edges_whole, rtol=1e-6, atol=1e-6)
    assert np.abs(edges_whole).max() > 1e-2
    # Edges of a dataset (new: a metric per pair, padding) against single-pair calls, each
    # with its own logit_diff at its last real position (the padded prompt as it is: its
    # padding comes after everything the metric reads).
    singles = [
        np.asarray(
            edge_attribution_patch(model, CLEAN[i], CORRUPT[i], logit_diff(int(ANSWER[i]), int(WRONG[i]), int(LAST[i])))
        )
        for i in range(N_PAIRS)
    ]
    np.testing.assert_allclose(edges_whole, np.mean(singles, 0), rtol=1e-5, atol=1e-6)
    assert np.abs(singles[-1] - np.mean(singles, 0)).max() > 1e-3  # the pairs differ
    with pytest.raises(PairBatchError, match="batch_size must be a positive number of pairs"):
        _nodes(model, batch_size=0)


def test_checkpoint_resumes_and_refuses_other_inputs(model, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, "jaxinterp.checkpoint")
    directory = tmp_path / "edges"
    first = _edges(model, batch_size=2, checkpoint=directory, progress=True)
    assert "3/3" in capsys.readouterr().err  # the progress bar ran over the 3 chunks
    np.testing.assert_array_equal(first, _edges(model, batch_size=2))  # same program, same values
    (directory / "chunk-000001.npz").unlink()  # as if killed before chunk 1 was saved
    caplog.clear()
    np.testing.assert_array_equal(_edges(model, batch_size=2, checkpoint=directory), first)
    assert _loaded_computed(caplog) == ([0, 2], [1])
    with pytest.raises(ResumeError, match="its metric differs"):
        _edges(model, batch_size=2, checkpoint=directory, metric=_metric(ANSWER))
    with pytest.raises(ResumeError, match="its corrupted prompts differ"):
        edge_attribution_patch(model, CLEAN, CLEAN, _metric(), attention_mask=MASK, batch_size=2, checkpoint=directory)
    with pytest.raises(ResumeError, match="its attention mask differs"):
        edge_attribution_patch(model, CLEAN, CORRUPT, _metric(), batch_size=2, checkpoint=directory)
    with pytest.raises(ResumeError, match="its IG steps, method differ"):
        _edges(model, batch_size=2, checkpoint=directory, method="ig", n_steps=2)
    with pytest.raises(ResumeError, match="its batch size, chunking differ"):
        _edges(model, batch_size=3, checkpoint=directory)
    with pytest.raises(ResumeError, match="technique"):
        _nodes(model, batch_size=2, checkpoint=directory)
    with pytest.raises(PairBatchError, match=r"checkpoint= saves the chunks of a dataset of pairs"):
        attribution_patch(model, CLEAN[0], CORRUPT[0], logit_diff(1, 2), SITES, checkpoint=tmp_path / "one")
    assert not (tmp_path / "one").exists()


def test_sigkill_then_resume_equals_uninterrupted_run(model, child, caplog):
    proc, directory = child
    deadline = time.time() + 180
    while len(list(directory.glob("chunk-*.npz"))) < 2:  # finished chunks are files
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "the child wrote no chunks"
        time.sleep(0.05)
    time.sleep(0.2)  # past the rename of chunk 1, in the child's sleep
    proc.send_signal(signal.SIGKILL)
    text, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, text
    assert "FINISHED" not in text
    log = [line[4:] for line in text.splitlines() if line.startswith("LOG ")]
    assert [line.split(" computed in ")[0] for line in log] == ["chunk 0 of 3", "chunk 1 of 3"], text
    assert sorted(p.name for p in directory.glob("chunk-*")) == ["chunk-000000.npz", "chunk-000001.npz"]

    caplog.set_level(logging.INFO, "jaxinterp.checkpoint")
    resumed = _nodes(model, per_pair=True, batch_size=2, checkpoint=directory)
    assert _loaded_computed(caplog) == ([0, 1], [2])  # the finished chunks loaded, not recomputed
    fresh = _nodes(model, per_pair=True, batch_size=2, checkpoint=directory.with_name("fresh"))
    unchecked = _nodes(model, per_pair=True, batch_size=2)
    for s in SITES:
        assert resumed[s].shape[0] == N_PAIRS
        assert np.array_equal(resumed[s], fresh[s])  # bit for bit: an uninterrupted checkpointed run
        assert np.array_equal(resumed[s], unchecked[s])  # and one without a checkpoint
        assert np.isfinite(resumed[s]).all() and np.std(resumed[s]) > 0
    with pytest.raises(ResumeError, match="its metric differs"):
        _nodes(model, per_pair=True, batch_size=2, checkpoint=directory, metric=_metric(ANSWER))
    with pytest.raises(ResumeError, match="its per pair differs"):
        _nodes(model, batch_size=2, checkpoint=directory)
