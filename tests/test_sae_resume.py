"""Kill-and-resume: a training subprocess is SIGKILLed after writing a checkpoint,
restarted with the same arguments, and its final SAE equals, bit for bit, that of a run
that was never interrupted (same data order, optimizer state, dead-latent counters)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent('''
    import sys, time
    import jax, numpy as np
    from jaxinterp.features import sae as S

    class SlowStore(S.ArrayStore):
        """Synthetic activations that take a while per fill, like a model would."""
        def fill(self, index):
            time.sleep(0.1)
            return super().fill(index)

    ckpt, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(1024, 12)) * rng.uniform(0.2, 3, 12)).astype(np.float32)
    store = SlowStore(X, fill_size=128, seed=7)
    cfg = S.TrainConfig(n_steps=80, batch_size=32, lr=2e-3, lr_warmup=10, dead_tokens=200, checkpoint_every=2)
    sae = S.init_sae("topk", S.SAEConfig(12, 48), jax.random.key(1), k=4)
    res = S.train_sae(sae, store, cfg, checkpoint_dir=None if ckpt == "-" else ckpt, progress=False)
    S.save_sae(res.sae, out)
''')


def _run(args, env):
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, cwd=ROOT)


def test_sigkill_and_resume_gives_identical_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    ckpt, resumed, straight = str(tmp_path / "ckpt"), str(tmp_path / "resumed"), str(tmp_path / "straight")
    # the uninterrupted reference runs meanwhile (it has no checkpoints to share)
    reference = _run(["-", straight], env)
    victim = _run([ckpt, resumed], env)
    latest = os.path.join(ckpt, "latest")
    deadline = time.time() + 120
    while not os.path.exists(latest):
        assert victim.poll() is None, "the training process ended before writing a checkpoint"
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    with open(latest) as f:
        name = f.read().strip()
    killed_at = json.load(open(os.path.join(ckpt, name, "state.json")))["step"]
    assert 0 < killed_at < 80, killed_at
    assert not os.path.exists(os.path.join(resumed, "sae_weights.safetensors"))  # it really died mid-run

    assert _run([ckpt, resumed], env).wait() == 0
    assert reference.wait() == 0
    a = load_file(os.path.join(resumed, "sae_weights.safetensors"))
    b = load_file(os.path.join(straight, "sae_weights.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    state = json.load(open(os.path.join(ckpt, open(latest).read().strip(), "state.json")))
    assert state["step"] == 80 and state["data_position"] == {"fill": 20, "step": 80}
