"""SmolLM2-135M loaded onto a 2x4 (data x model) mesh of 8 virtual CPU devices: the bytes
of weights each device holds (vs a replicated copy), and the logits and a residual-stream
patching sweep of the sharded model vs the one-device model.

    python benchmarks/sharding_smollm2.py            # 8 layers of the model
    python benchmarks/sharding_smollm2.py --layers 30
"""

from __future__ import annotations

import argparse
import os

# Appended, so flags already given (e.g. the test suite's) are kept.
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxinterp as ji  # noqa: E402
from jaxinterp.core.metrics import logit_diff  # noqa: E402
from jaxinterp.loading.bundled import smollm2_path  # noqa: E402
from jaxinterp.model.sharding import make_mesh, param_specs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8, help="first layers of the model to keep")
    args = ap.parse_args()
    mesh = make_mesh(data=2, model=4)
    start = time.perf_counter()
    sharded = ji.load(smollm2_path(), mesh=mesh)
    print(f"loaded onto the 2x4 mesh in {time.perf_counter() - start:.1f} s")
    plain = ji.load(smollm2_path())
    if args.layers < plain.cfg.n_layers:
        sharded, plain = sharded.first_layers(args.layers), plain.first_layers(args.layers)

    per_device: dict = {}
    total = 0
    for leaf in jax.tree_util.tree_leaves(sharded):
        total += leaf.nbytes
        for shard in leaf.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    split = [n for n, s in param_specs(sharded.cfg, mesh).items() if "model" in s]
    print(f"weights split over 'model': {split}")
    print(
        f"{sharded.cfg.n_layers} layers: {total / 2**20:.1f} MiB of weights; per device "
        f"{min(per_device.values()) / 2**20:.1f}-{max(per_device.values()) / 2**20:.1f} MiB "
        f"({max(per_device.values()) / total:.2f} of a replicated copy)"
    )

    tok = ji.load_tokenizer(smollm2_path())
    clean = np.asarray(tok.encode("When Mary and John went to the store, John gave a drink to"))
    corrupt = np.asarray(tok.encode("When Mary and John went to the store, Mary gave a drink to"))
    a, b = np.asarray(sharded(clean)), np.asarray(plain(clean))
    print(f"logits: max |sharded - one device| = {np.abs(a - b).max():.1e} (logits span {np.ptp(b):.1f})")
    metric = logit_diff(int(tok.encode(" Mary")[-1]), int(tok.encode(" John")[-1]))
    start = time.perf_counter()
    on_mesh = np.asarray(ji.patching.activation_patch(sharded, clean, corrupt, metric, mesh=mesh))
    t_mesh = time.perf_counter() - start
    start = time.perf_counter()
    one = np.asarray(ji.patching.activation_patch(plain, clean, corrupt, metric, method="plain"))
    t_one = time.perf_counter() - start
    print(
        f"resid_pre sweep ({one.size} patches): max |2x4 mesh - one device| = {np.abs(on_mesh - one).max():.1e} "
        f"(values span {np.ptp(one):.2f}); {t_mesh:.1f} s on the mesh, {t_one:.1f} s on one device (incl. compile)"
    )


if __name__ == "__main__":
    main()
