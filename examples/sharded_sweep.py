"""A patching sweep sharded over a mesh of devices (DESIGN §5: "a sweep too big for one
device is the same vmap with its sweep axis sharded").

On a CPU-only machine this fakes 8 devices with XLA_FLAGS (set before JAX starts); on a
TPU pod slice or a multi-GPU host, drop that line and the mesh spans the real devices.

    python examples/sharded_sweep.py      # JAXINTERP_QUICK=1: 2 layers, 12 positions (CI)
"""

import os

# Appended, so flags already given (e.g. the test suite's) are kept.
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import time

import jax
import numpy as np
from jax.sharding import Mesh

import jaxinterp as ji
from jaxinterp.core.metrics import logit_diff

ji.enable_compilation_cache()  # a second run loads its compiled programs from disk

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: a smaller sweep (each layer compiles its own steps)
cfg = ji.ModelConfig(d_model=128, n_layers=2 if QUICK else 6, n_heads=4, d_head=32, d_vocab=500, n_ctx=64, d_mlp=512)
model = ji.Transformer.init(cfg, jax.random.key(0), std=0.1)
rng = np.random.default_rng(0)
clean = rng.integers(0, cfg.d_vocab, 12 if QUICK else 24)
corrupt = clean.copy()
corrupt[8] = (clean[8] + 1) % cfg.d_vocab
metric = logit_diff(int(clean[8]), int(corrupt[8]))  # the swapped token vs its replacement, at the last position

mesh = Mesh(np.array(jax.devices()), ("sweep",))
print(f"{len(jax.devices())} devices, mesh axes {mesh.axis_names}")
# The plain engine splits each chunk's patches across the devices; the fast engine deals
# its chunks of packed blocks to them. Both give the numbers of the unsharded sweep.
results = {}
for method in ("plain", "fast"):
    for name, kwargs in [("one device", {}), ("sharded over the mesh", {"mesh": mesh})]:
        start = time.perf_counter()
        result = ji.patching.activation_patch(
            model, clean, corrupt, metric, "attn.z", ("layer", "pos", "head"), method=method, **kwargs
        )
        results[method, name] = np.asarray(result)
        print(
            f"{method:>5}, {name:>21}: {results[method, name].shape} patches in "
            f"{time.perf_counter() - start:.1f} s (incl. compile)"
        )
spread = max(float(np.abs(r - results["plain", "one device"]).max()) for r in results.values())
span = float(np.ptp(results["plain", "one device"]))
print(f"largest difference between the four: {spread:.1e} (the values span {span:.2f})")

os.makedirs("out", exist_ok=True)
ji.patching.activation_patch(model, clean, corrupt, metric, mesh=mesh).plot(
    path="out/sharded_sweep.png", title="resid_pre sweep, sharded"
)
print("wrote out/sharded_sweep.png")
