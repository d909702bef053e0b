"""A patching sweep over a device mesh that spans several processes (`jax.distributed`).

Every process runs `worker`: it joins the distributed runtime, builds the same global
2-D mesh (``"data"`` across the processes, ``"model"`` across each process's devices),
puts the model's weights on their shardings (heads and MLP neurons split over
``"model"``), runs one `sweep` with its patches split over ``"data"``, and writes the
shard of the result that its own devices hold. Nothing is gathered onto one process.

On one machine, ``python examples/multihost_sweep.py`` launches two such processes with
four CPU devices each (collectives over gloo), then checks that the shards they wrote,
put together, equal a single-process run. On a TPU pod slice or a GPU cluster, start
``python examples/multihost_sweep.py --worker`` on every host: `jax.distributed.initialize()`
then finds the coordinator, process count and process id by itself.

``tests/test_multihost.py`` runs this file's `launch` and `reference`; docs/scale.md shows it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

DEVICES_PER_PROCESS = 4
PROMPT = np.array([3, 14, 15, 9, 26, 5, 35, 8])
CORRUPT = np.array([3, 14, 27, 9, 26, 5, 35, 8])  # position 2 swapped
ANSWER, WRONG = 7, 11


def config():
    import jaxinterp as ji

    return ji.ModelConfig(
        d_model=32, n_layers=2, n_heads=8, n_kv_heads=4, d_head=4, d_vocab=64, n_ctx=16, d_mlp=64,
        normalization="rmsnorm", positional="rotary", gated_mlp=True, act_fn="silu",
    )  # fmt: skip


def patched_logit_diff(loc, model, z, tokens):
    """The corrupted run with one head's output (``attn.z`` at ``loc``) taken from the
    clean run: the logit difference ANSWER - WRONG at the last position."""
    import jaxinterp as ji

    patch = ji.Patch("attn.z", z, layer=loc["layer"], pos=loc["pos"], head=loc["head"])
    logits, _ = model.forward(tokens, [patch])
    return logits[-1, ANSWER] - logits[-1, WRONG]


def locations(cfg) -> dict:
    """Every (layer, position, head): the sweep's locations."""
    layer, pos, head = np.meshgrid(
        np.arange(cfg.n_layers), np.arange(len(PROMPT)), np.arange(cfg.n_heads), indexing="ij"
    )
    return {"layer": layer.ravel(), "pos": pos.ravel(), "head": head.ravel()}


def worker(out_dir: str, coordinator=None, num_processes=None, process_id=None, cpu: bool = False) -> None:
    """One process of the sweep: writes ``out_dir/process{i}.npz`` (its shard of the
    result: ``start``, ``stop``, ``values`` for each block of locations it holds)."""
    import jax

    if cpu:  # CPU devices on one machine; on TPUs/GPUs leave these out
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", DEVICES_PER_PROCESS)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # With no arguments (TPU pods, SLURM, ...) JAX detects all three itself.
    jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=60)

    import jax.numpy as jnp

    import jaxinterp as ji
    from jaxinterp.engine.sweep import sweep
    from jaxinterp.model.sharding import make_mesh, shard_model

    # "data" across the processes, "model" across each process's own devices.
    mesh = make_mesh(data=jax.process_count(), model=jax.local_device_count())
    cfg = config()
    # Every process builds (or loads) the same weights; each device keeps only its block.
    # With a checkpoint: model = ji.load(path, mesh=mesh).
    model = shard_model(ji.Transformer.init(cfg, jax.random.key(0), std=0.3), mesh)
    _, cache = model.run_with_cache(PROMPT, names=["attn.z"])
    values = sweep(
        patched_logit_diff, locations(cfg), model, cache["attn.z"], jnp.asarray(CORRUPT), batch_size=32, mesh=mesh
    )
    # This process's shard: one copy of each block its devices hold (the "model" devices
    # hold replicas of the same block).
    blocks = [s for s in values.addressable_shards if s.replica_id == 0]
    np.savez(
        os.path.join(out_dir, f"process{jax.process_index()}.npz"),
        start=np.array([s.index[0].start for s in blocks]),
        stop=np.array([s.index[0].stop for s in blocks]),
        values=np.concatenate([np.asarray(s.data) for s in blocks]),
    )
    print(
        f"process {jax.process_index()}/{jax.process_count()}: {len(jax.devices())} devices in the mesh, wrote "
        f"locations {[(int(s.index[0].start), int(s.index[0].stop)) for s in blocks]} of {values.shape[0]}"
    )
    jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out_dir: str, num_processes: int = 2, timeout: float = 120.0) -> np.ndarray:
    """Run `worker` in ``num_processes`` local processes and put their shards together:
    ``[n_locations]``. Raises ``RuntimeError`` with the workers' output if one fails or
    they take longer than ``timeout`` seconds (then every worker is killed)."""
    coordinator = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the device count comes from jax_num_cpu_devices
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(num_processes)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                "--cpu",
                "--out",
                out_dir,
                "--coordinator",
                coordinator,
                "--num-processes",
                str(num_processes),
                "--process-id",
                str(i),
            ],
            stdout=logs[i],
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        for i in range(num_processes)
    ]
    deadline = time.monotonic() + timeout
    try:
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    output = []
    for i, log in enumerate(logs):
        log.seek(0)
        output.append(f"--- process {i} ---\n{log.read()}")
        log.close()
    if codes is None or any(codes):
        why = f"timed out after {timeout:.0f} s" if codes is None else f"exit codes {codes}"
        raise RuntimeError(f"multi-host sweep {why}:\n" + "\n".join(output))
    print("\n".join(line for out in output for line in out.splitlines() if line.startswith("process ")))
    n = len(locations(config())["layer"])
    result = np.full(n, np.nan, np.float32)
    for i in range(num_processes):
        part = np.load(os.path.join(out_dir, f"process{i}.npz"))
        offset = 0
        for start, stop in zip(part["start"], part["stop"]):
            result[start:stop] = part["values"][offset : offset + stop - start]
            offset += stop - start
    return result


def single_process():
    """The model and its clean ``attn.z`` in this process, on one device: ``(model, z)``."""
    import jax

    import jaxinterp as ji

    model = ji.Transformer.init(config(), jax.random.key(0), std=0.3)
    _, cache = model.run_with_cache(PROMPT, names=["attn.z"])
    return model, cache["attn.z"]


def reference(model=None, z=None) -> np.ndarray:
    """The same sweep in this process, on one device, unsharded."""
    import jax.numpy as jnp

    from jaxinterp.engine.sweep import sweep

    if model is None:
        model, z = single_process()
    return np.asarray(sweep(patched_logit_diff, locations(model.cfg), model, z, jnp.asarray(CORRUPT)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="run one process of the sweep")
    parser.add_argument("--cpu", action="store_true", help="CPU devices and gloo collectives (one machine)")
    parser.add_argument("--out", default="out/multihost", help="where each process writes its shard")
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (auto-detected on pods)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.worker:
        worker(args.out, args.coordinator, args.num_processes, args.process_id, cpu=args.cpu)
        return
    start = time.perf_counter()
    result = launch(args.out)
    print(
        f"2 processes x {DEVICES_PER_PROCESS} CPU devices: {result.shape[0]} patches in "
        f"{time.perf_counter() - start:.1f} s (incl. start-up and compile)"
    )
    diff = float(np.abs(result - reference()).max())
    print(f"largest difference from the single-process sweep: {diff:.1e}")
    if not diff <= 1e-5:
        raise SystemExit("the multi-host sweep differs from the single-process one")


if __name__ == "__main__":
    main()
