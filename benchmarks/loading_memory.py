"""Peak host memory of loading a model, against the size of the weights it ends with.

Each load runs in a fresh subprocess, which reports

    peak = ru_maxrss after `jaxinterp.load(path, dtype)` - ru_maxrss before it

(the "before" is taken after importing jax, jaxinterp and gguf and starting the CPU
backend, so it counts only what loading adds), and the final weights' size (the sum of
the model's array bytes). The ratio peak / final is the overhead of loading: 1.0 means
the load held nothing but the model. On CPU the model's arrays live in host memory too,
so the ratio cannot go below ~1.

Models:
- SmolLM2-135M-Instruct, the bundled Q4_1 GGUF (30 layers, tied embeddings: jaxinterp
  holds the unembedding as its own array);
- a random Qwen2-architecture model (QKV bias, GQA, untied) written here as a BF16
  GGUF with the ``gguf`` package's writer, the layout llama.cpp's converter writes
  with ``--outtype bf16``.

Each is loaded as float32 and as bfloat16. ``--before DIR`` also runs every load
against another checkout of jaxinterp (e.g. ``/work/main``, the code before lean
loading) in the same run, so the two columns are comparable.

    python benchmarks/loading_memory.py                      # this checkout
    python benchmarks/loading_memory.py --before /work/main  # and the old loading code
    python benchmarks/loading_memory.py --quick              # a small Qwen2 only (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# A Qwen2 model of ~62M parameters: ~250 MB in float32, ~125 MB in bf16.
QWEN2 = dict(d_model=768, n_layers=6, n_heads=12, n_kv_heads=2, d_mlp=2048, d_vocab=16000)
QWEN2_QUICK = dict(d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, d_mlp=512, d_vocab=4000)

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, gguf, gguf.quants
import jaxinterp
jnp.zeros(1).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
model = jaxinterp.load(sys.argv[2], dtype=getattr(jnp, sys.argv[3]))
leaves = [x for x in jax.tree_util.tree_leaves(model) if isinstance(x, jax.Array)]
jax.block_until_ready(leaves)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert jaxinterp.__file__.startswith(sys.argv[1]), jaxinterp.__file__
print(json.dumps(dict(peak_kib=peak - before, final_bytes=sum(x.nbytes for x in leaves), seconds=seconds,
                      dtypes=sorted({str(x.dtype) for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)}))))
"""


def write_qwen2_gguf(path: str, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_mlp: int, d_vocab: int):
    """A random Qwen2 model as a GGUF file: 2-D weights BF16, norms and biases F32."""
    import gguf

    rng = np.random.default_rng(0)
    d_head = d_model // n_heads
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_block_count(n_layers)
    w.add_context_length(2048)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(d_mlp)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(d_vocab)
    w.add_rope_dimension_count(d_head)
    w.add_key_length(d_head)
    w.add_value_length(d_head)

    def weight(name, *shape):  # numpy order [out, in], as HF stores it
        q = gguf.quants.quantize(rng.normal(0, 0.02, shape).astype(np.float32), gguf.GGMLQuantizationType.BF16)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)

    def vector(name, n, mean=0.0):
        w.add_tensor(name, (mean + rng.normal(0, 0.02, n)).astype(np.float32))

    weight("token_embd.weight", d_vocab, d_model)
    weight("output.weight", d_vocab, d_model)
    vector("output_norm.weight", d_model, 1.0)
    for i in range(n_layers):
        b = f"blk.{i}."
        weight(b + "attn_q.weight", n_heads * d_head, d_model)
        weight(b + "attn_k.weight", n_kv_heads * d_head, d_model)
        weight(b + "attn_v.weight", n_kv_heads * d_head, d_model)
        vector(b + "attn_q.bias", n_heads * d_head)
        vector(b + "attn_k.bias", n_kv_heads * d_head)
        vector(b + "attn_v.bias", n_kv_heads * d_head)
        weight(b + "attn_output.weight", d_model, n_heads * d_head)
        weight(b + "ffn_gate.weight", d_mlp, d_model)
        weight(b + "ffn_up.weight", d_mlp, d_model)
        weight(b + "ffn_down.weight", d_model, d_mlp)
        vector(b + "attn_norm.weight", d_model, 1.0)
        vector(b + "ffn_norm.weight", d_model, 1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def measure(code: str, path: str, dtype: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, os.path.abspath(code), path, dtype],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    if out.returncode:
        raise RuntimeError(f"load of {path} ({dtype}) with {code} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="another jaxinterp checkout to measure in the same run (e.g. /work/main)")
    parser.add_argument("--quick", action="store_true", help="a small Qwen2 GGUF only")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("JAXINTERP_QUICK") == "1"
    codes = [("after", ROOT)] + ([("before", args.before)] if args.before else [])

    with tempfile.TemporaryDirectory() as tmp:
        qwen2 = os.path.join(tmp, "qwen2-bf16.gguf")
        write_qwen2_gguf(qwen2, **(QWEN2_QUICK if quick else QWEN2))
        models = [("Qwen2 (BF16 GGUF)", qwen2)]
        if not quick:
            sys.path.insert(0, ROOT)
            from jaxinterp.loading.bundled import smollm2_path

            models.insert(0, ("SmolLM2-135M (Q4_1 GGUF)", smollm2_path()))
        header = f"{'model':<26} {'file MB':>8} {'dtype':>8} {'final MB':>9}"
        for label, _ in codes:
            header += f" | {label + ' peak MB':>16} {'ratio':>6} {'load s':>7}"
        print(header)
        print("-" * len(header))
        for name, path in models:
            for dtype in ("float32", "bfloat16"):
                row = f"{name:<26} {os.path.getsize(path) / 1e6:>8.1f} {dtype:>8}"
                final = None
                for _, code in codes:
                    r = measure(code, path, dtype)
                    final = final or r["final_bytes"]
                    assert r["final_bytes"] == final and r["dtypes"] == [dtype], r
                    if code == ROOT:
                        row += f" {final / 1e6:>9.1f}"
                    peak = r["peak_kib"] * 1024
                    row += f" | {peak / 1e6:>16.1f} {peak / final:>6.2f} {r['seconds']:>7.1f}"
                print(row, flush=True)
    print("\nratio = (peak RSS during the load - RSS before it) / final weights' bytes; target <= 1.5")


if __name__ == "__main__":
    main()
