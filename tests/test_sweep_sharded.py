"""A sweep sharded over a mesh of 8 (virtual CPU) devices equals the unsharded sweep
and a Python loop. Runs in a subprocess: the device count is fixed at JAX start-up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh
    import jaxinterp as ji
    from jaxinterp.causal.patching import sweep

    assert len(jax.devices()) == 8, jax.devices()
    cfg = ji.ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=31, n_ctx=8, d_mlp=32)
    model = ji.Transformer.init(cfg, jax.random.key(0), std=0.3)
    clean, corrupt = np.array([1, 2, 3, 4, 5]), np.array([1, 2, 9, 4, 5])
    _, cache = model.run_with_cache(clean, names=["resid_pre"])
    layers, positions = np.meshgrid(np.arange(2), np.arange(5), indexing="ij")
    locs = {"layer": layers.ravel(), "pos": positions.ravel()}

    def fn(loc, model, value):
        logits, _ = model.forward(jnp.asarray(corrupt), [ji.Patch("resid_pre", value, layer=loc["layer"], pos=loc["pos"])])
        return logits[-1, 3] - logits[-1, 4]

    mesh = Mesh(np.array(jax.devices()), ("sweep",))
    sharded = sweep(fn, locs, model, cache["resid_pre"], batch_size=4, mesh=mesh)
    plain = sweep(fn, locs, model, cache["resid_pre"], batch_size=4)
    loop = [float(fn({"layer": l, "pos": p}, model, cache["resid_pre"])) for l, p in zip(locs["layer"], locs["pos"])]
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(plain), atol=1e-5)
    np.testing.assert_allclose(np.asarray(sharded), loop, atol=1e-5)
    print("DEVICES", len(sharded.sharding.device_set))

    # Checkpointed on the mesh: written, then resumed from the directory, the same numbers.
    import tempfile
    ckpt = tempfile.mkdtemp()
    for _ in range(2):
        resumed = sweep(fn, locs, model, cache["resid_pre"], batch_size=4, mesh=mesh, checkpoint=ckpt)
        np.testing.assert_allclose(np.asarray(resumed), loop, atol=1e-5)

    # activation_patch with a mesh: the same numbers as without.
    from jaxinterp.core.metrics import logit_diff
    metric = logit_diff(3, 4)
    b = ji.patching.activation_patch(model, clean, corrupt, metric)
    np.testing.assert_allclose(np.asarray(b).ravel(), loop, atol=1e-5)
    for method in ("plain", "fast"):
        a = ji.patching.activation_patch(model, clean, corrupt, metric, mesh=mesh, method=method)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=method)

    # The fast engine deals its chunks to the 8 devices (blocks balanced by work).
    from jaxinterp.causal.patching.fast import fast_layout
    grid = ji.patching.patch_grid(cfg, 5, "attn.z", ("layer", "pos", "head"))
    layout = fast_layout(cfg, 5, grid, max_block_tokens=5, multiple_of=8)
    assert layout.n_chunks == 8 and (layout.block_layer < cfg.n_layers).any(axis=1).all()
    for shortcuts in (False, True):
        kw = dict(site="attn.z", over=("layer", "pos", "head"), shortcuts=shortcuts)
        a = ji.patching.activation_patch(model, clean, corrupt, metric, mesh=mesh, method="fast", **kw)
        b = ji.patching.activation_patch(model, clean, corrupt, metric, method="plain", **kw)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    """
)


def test_sweep_sharded_over_a_mesh_equals_unsharded_and_loop():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # The result was computed on all 8 devices, not gathered onto one first.
    assert "DEVICES 8" in out.stdout, out.stdout
