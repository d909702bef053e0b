"""KV-cached generation on SmolLM2-135M-Instruct: tokens/s against the full-recompute
loop and against transformers' own `generate`, per-step cost against the context, and
greedy tokens against transformers' token for token.

    python benchmarks/generate.py            # the full run (several minutes on 2 busy cores)
    python benchmarks/generate.py --quick    # a smoke run (~1-2 min)

Every variant runs in this one process on the same weights (the bundled Q4_1 GGUF,
dequantised to fp32 by both libraries), so the ratios are comparable even when the
machine is shared; absolute figures move with the load.

(1) parity: a chat-formatted prompt, greedy, ``--parity-new`` (64) new tokens, our
    `generate` vs transformers' ``generate(do_sample=False)`` fed the same ids.
(2) throughput, ``--new`` (128) new tokens after a 16-token prompt, batch 1 and 8:
    `generate` (KV cache, one compiled prefill + scan), `greedy_generate` (the full
    sequence re-run at every step; batch 1 only, it takes one prompt), transformers'
    ``generate`` (KV cache, eager torch, ``min_new_tokens`` so no row stops early).
    Steady timings: the median of ``--repeats`` calls after a first (compiling) call.
(3) per-step cost: decode steps/s at batch 1 after contexts of 64, 256 and 1024 tokens
    (``(t(1 + s new) - t(1 new)) / s`` with s = 32), ours and transformers'.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxinterp as ji  # noqa: E402
from jaxinterp.editing.generation import generate, left_pad  # noqa: E402
from jaxinterp.generate import greedy_generate  # noqa: E402
from jaxinterp.loading.bundled import smollm2_path  # noqa: E402

CHAT = "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = [
    "The history of the Roman Empire begins with",
    "In a small village by the sea, there lived",
    "The three laws of thermodynamics state that",
    "My favourite recipe for apple pie starts with",
    "The quick brown fox jumps over the lazy dog and",
    "Once upon a time, a young programmer decided to",
    "The most important discovery in physics was",
    "When the train finally arrived at the station,",
]


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call seconds, median of ``repeats`` further calls; the first if none)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if repeats == 0:
        return first, first
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--parity-new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--hf-repeats", type=int, default=1, help="transformers runs eagerly: 0 times its first call")
    ap.add_argument("--contexts", type=int, nargs="*", default=[64, 256, 1024])
    ap.add_argument("--steps", type=int, default=32, help="decode steps timed per context in (3)")
    args = ap.parse_args()
    if args.quick:
        args.new, args.parity_new, args.repeats, args.contexts, args.steps = 16, 16, 1, [64, 256], 8

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    path = smollm2_path()
    model = ji.load(path)
    tok = ji.load_tokenizer(path)
    hf = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()
    print(
        f"jax {jax.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; SmolLM2-135M-Instruct Q4_1 GGUF dequantised to fp32"
    )

    def hf_generate(ids, mask, n_new):
        with torch.no_grad():
            out = hf.generate(
                torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=False,
                pad_token_id=0,
            )
        return out[:, ids.shape[1] :].numpy()

    # (1) greedy tokens against transformers'.
    ids = np.asarray(tok.encode(CHAT), np.int32)
    ours = np.asarray(generate(model, ids, args.parity_new).tokens)
    theirs = hf_generate(ids[None], np.ones((1, ids.size), np.int32), args.parity_new)[0]
    same = ours == theirs
    first_diff = int(np.argmin(same)) if not same.all() else None
    print(
        f"\n(1) greedy, {args.parity_new} new tokens after a {ids.size}-token chat prompt: "
        f"{int(same.sum())}/{args.parity_new} equal to transformers' generate"
        + ("" if first_diff is None else f", first difference at token {first_diff}")
    )
    print("    ours:         " + repr(tok.decode(ours)))
    print("    transformers: " + repr(tok.decode(theirs)))

    # (2) throughput at batch 1 and 8.
    print(f"\n(2) tokens/s, {args.new} new tokens, greedy (steady: median of {args.repeats} after the first call)")
    print(f"    {'variant':<44} {'batch':>5} {'first s':>8} {'steady s':>9} {'tokens/s':>9} {'vs HF':>6}")
    results = {}
    for batch in (1, 8):
        prompts = [tok.encode(p) for p in PROMPTS[:batch]]
        pids, pmask = left_pad(prompts, pad_token_id=0)
        n_tok = batch * args.new
        rows = []
        first, steady = timed(
            lambda: generate(model, pids, args.new, attention_mask=pmask).tokens.block_until_ready(), args.repeats
        )
        rows.append(("jaxinterp generate (KV cache, jit)", first, steady))
        if batch == 1:
            first_r, steady_r = timed(lambda: greedy_generate(model, pids[0], args.new), max(1, args.repeats - 1))
            rows.append(("jaxinterp greedy_generate (full recompute)", first_r, steady_r))
        first_h, steady_h = timed(lambda: hf_generate(pids, pmask, args.new), args.hf_repeats)
        rows.append(("transformers generate (KV cache, torch)", first_h, steady_h))
        for name, first, steady in rows:
            results[(name, batch)] = n_tok / steady
            print(
                f"    {name:<44} {batch:>5} {first:>8.2f} {steady:>9.2f} {n_tok / steady:>9.1f} "
                f"{steady_h / steady:>5.2f}x"
            )

    # (3) per-step cost against the context.
    steps = args.steps
    print(f"\n(3) decode steps/s at batch 1 after a context of n tokens (from t(1+{steps} new) - t(1 new))")
    print(f"    {'context':>7} {'jaxinterp steps/s':>18} {'transformers steps/s':>21} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for n in args.contexts:
        ctx = rng.integers(100, 40000, (1, n)).astype(np.int32)
        mask = np.ones_like(ctx)

        def ours_n(k):
            return lambda: generate(model, ctx, k).tokens.block_until_ready()

        _, t1 = timed(ours_n(1), max(1, args.repeats))
        _, tk = timed(ours_n(1 + steps), max(1, args.repeats))
        _, h1 = timed(lambda: hf_generate(ctx, mask, 1), args.hf_repeats)
        _, hk = timed(lambda: hf_generate(ctx, mask, 1 + steps), args.hf_repeats)
        ours_rate, hf_rate = steps / max(tk - t1, 1e-9), steps / max(hk - h1, 1e-9)
        print(f"    {n:>7} {ours_rate:>18.1f} {hf_rate:>21.1f} {ours_rate / hf_rate:>5.2f}x")


if __name__ == "__main__":
    main()
