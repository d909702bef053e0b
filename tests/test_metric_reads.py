"""What a plain metric function reads, inferred from its jaxpr, and traced logit columns.

References: (1) brute force on the function itself: replacing every logit the inference
says is not read by other values (random, NaN) must leave the metric unchanged, for
random logits on both sides of every threshold; (2) a Python loop of single patches
(`model(base, [Patch(...)])`, full logits), and the same sweep with inference off; (3)
JAX's own compile log for "no recompile".
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxinterp as ji
from jaxinterp.causal.patching import activation_patch, readout_for
from jaxinterp.core.metric_reads import infer_reads
from jaxinterp.core.metrics import custom, logit_diff, normalized

N_POS, D_VOCAB = 6, 32


def adversarial(logits):
    """Reads position 2 only when a value at the last position crosses a threshold."""
    return jnp.where(logits[-1, 0] > 0.0, logits[2, 7], 0.0) + logits[-1, 3]


# function -> (positions, token ids or None) it reads, worked out by hand.
CASES = {
    "logit diff": (lambda lg: lg[-1, 3] - lg[-1, 4], ((5,), (3, 4))),
    "ids array": (lambda lg: lg[-1, jnp.array([3, 4, 9])].sum(), ((5,), (3, 4, 9))),
    "log-softmax of a row": (lambda lg: jax.nn.log_softmax(lg[-1])[3], ((5,), None)),
    "log-softmax of all rows": (lambda lg: jax.nn.log_softmax(lg, axis=-1)[-2, 3], ((4,), None)),
    "threshold": (adversarial, ((2, 5), (0, 3, 7))),
    "cond": (lambda lg: jax.lax.cond(lg[-1, 0] > 0, lambda: lg[1, 2], lambda: lg[3, 4]), ((1, 3, 5), (0, 2, 4))),
    "column over positions": (lambda lg: lg[:, 5].sum() - lg[0, 1], (tuple(range(N_POS)), (1, 5))),
    "two rows": (lambda lg: (lg[-1] - lg[-2])[6] * 2.0, ((4, 5), (6,))),
    "argmax index": (lambda lg: lg[-1][jnp.argmax(lg[0])], ((0, 5), None)),
    "next-token loss": (
        lambda lg: -jax.nn.log_softmax(lg[:-1], axis=-1)[jnp.arange(5), jnp.array([1, 2, 3, 4, 5])].mean(),
        ((0, 1, 2, 3, 4), None),
    ),
    "checkpoint": (lambda lg: jax.checkpoint(lambda x: x[-1, 2] * 3)(lg), ((5,), (2,))),
    "pad": (lambda lg: jnp.pad(lg[-1, :4], 2)[3], ((5,), (1,))),
    "update slice": (lambda lg: jax.lax.dynamic_update_slice(lg[-1], lg[0, :2], (5,))[6], ((0,), (1,))),
    "out of bounds fill": (
        lambda lg: lg[-1].at[jnp.array([3, 40])].get(mode="fill", fill_value=0.0).sum(),
        ((5,), (3,)),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_inferred_reads(name):
    fn, expected = CASES[name]
    assert infer_reads(fn, N_POS, D_VOCAB).reads == expected


JITTED: dict = {}  # one compile per case across examples


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(sorted(CASES)))
def test_logits_outside_the_inferred_reads_do_not_change_the_metric(seed, name):
    """Brute force: everything outside the inferred positions x columns replaced (random
    values, or NaN as the engines do) leaves the metric exactly as it was -- whichever
    side of a threshold the logits fall on."""
    fn = JITTED.setdefault(name, jax.jit(CASES[name][0]))
    positions, ids = infer_reads(CASES[name][0], N_POS, D_VOCAB).reads
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((N_POS, D_VOCAB)).astype(np.float32)
    read = np.zeros((N_POS, D_VOCAB), bool)
    read[np.ix_(list(positions), list(range(D_VOCAB)) if ids is None else list(ids))] = True
    for filler in (rng.standard_normal((N_POS, D_VOCAB)).astype(np.float32), np.full((N_POS, D_VOCAB), np.nan)):
        np.testing.assert_array_equal(fn(jnp.asarray(np.where(read, logits, filler))), fn(jnp.asarray(logits)))


def test_the_threshold_metric_defeats_gradient_sparsity():
    """Why the inference reads the jaxpr: at a probe below the threshold the gradient
    of `adversarial` is zero at position 2, yet position 2 is read above it."""
    probe = jnp.zeros((N_POS, D_VOCAB)).at[-1, 0].set(-1.0)
    grad = jax.grad(adversarial)(probe)
    assert float(grad[2, 7]) == 0.0
    above = probe.at[-1, 0].set(1.0)
    assert float(adversarial(above.at[2, 7].set(5.0))) != float(adversarial(above))
    assert 2 in infer_reads(adversarial, N_POS, D_VOCAB).reads[0]


@pytest.mark.parametrize(
    "fn,why",
    [
        (lambda lg: lg[jnp.argmax(lg[-1]) % N_POS, 3], "dynamic_slice"),  # the row depends on the logits
        (lambda lg: (jax.debug.print("{x}", x=lg[0, 0]), lg[-1, 1])[1], "side effects"),
        (lambda lg: lg[1, 1] if float(lg[0, 0]) > 0 else lg[2, 2], "could not trace"),
    ],
    ids=["data-dependent row", "callback", "python branch"],
)
def test_what_cannot_be_established_falls_back_with_one_notice(caplog, fn, why):
    with caplog.at_level(logging.WARNING, logger="jaxinterp.metrics"):
        assert infer_reads(fn, N_POS, D_VOCAB).reads is None
        assert infer_reads(fn, N_POS, D_VOCAB).reads is None  # asked twice: one notice
    notices = [r.getMessage() for r in caplog.records if r.name == "jaxinterp.metrics"]
    assert len(notices) == 1 and why in notices[0] and "custom(fn, reads=" in notices[0], notices


def test_metrics_reading_everything_say_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="jaxinterp.metrics"):
        assert infer_reads(lambda lg: lg.mean(), N_POS, D_VOCAB).reads is None
    assert not caplog.records


def test_readout_of_a_plain_function_is_restricted_like_a_declared_one():
    fn = CASES["logit diff"][0]
    assert readout_for(fn, N_POS, D_VOCAB) == readout_for(logit_diff(3, 4), N_POS, D_VOCAB)
    sc = readout_for(fn, N_POS, D_VOCAB, columns=True)
    assert (sc.positions, sc.columns) == ((5,), (3, 4))
    assert readout_for(custom(fn, infer=False), N_POS, D_VOCAB).positions == tuple(range(N_POS))
    assert readout_for(custom(fn, reads=(-1, None)), N_POS, D_VOCAB, columns=True).columns is None  # declared wins
    assert normalized(custom(fn), 1.0, 0.0).reads_for(N_POS, D_VOCAB) == ((5,), (3, 4))


# ----------------------------------------------------------------------------- sweeps


@pytest.fixture(scope="module")
def setup():
    cfg = ji.ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=D_VOCAB, n_ctx=16, d_mlp=32)
    # Weights drawn with numpy (eager initialisation compiles op by op).
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: ji.Transformer.init(cfg, jax.random.key(0)))
    model = jax.tree_util.tree_map(
        lambda x: (
            jnp.asarray(cfg.windows, x.dtype)  # the per-layer attention windows
            if jnp.issubdtype(x.dtype, jnp.integer)
            else jnp.asarray(0.5 * rng.standard_normal(x.shape), x.dtype)
        ),
        shapes,
    )
    clean = jnp.array([1, 2, 3, 4, 5, 6])
    corrupt = jnp.array([1, 2, 9, 4, 11, 6])
    _, cache = model.run_with_cache(clean, names=["resid_pre"])
    source = cache["resid_pre"]
    # The loop reference: full logits of every single-patch forward pass [layer, pos, ...].
    patched = np.array(
        [
            [np.asarray(model(corrupt, [ji.Patch("resid_pre", source, layer=l, pos=p)])) for p in range(N_POS)]
            for l in range(cfg.n_layers)
        ]
    )
    return model, clean, corrupt, patched


def loop(patched, metric):
    return np.array([[float(metric(jnp.asarray(lg))) for lg in row] for row in patched])


def test_sweeps_of_an_adversarial_plain_function_equal_the_loop_and_inference_off(setup):
    """A metric that reads position 2 only when the last position's logit 0 crosses a
    threshold that the patches cross (both branches taken within the sweep): fast and
    plain sweeps with inference equal the loop and the sweeps without inference."""
    model, clean, corrupt, patched = setup
    probe = patched[:, :, -1, 0]
    # Halfway across the widest gap between the middle values: no patch sits near it.
    values = np.unique(probe)
    middle = range(len(values) // 4, max(len(values) // 4 + 1, 3 * len(values) // 4))
    i = max(middle, key=lambda j: values[j + 1] - values[j])
    threshold = float(values[i] + values[i + 1]) / 2
    assert (probe > threshold).any() and (probe <= threshold).any()

    def metric(logits):
        return jnp.where(logits[-1, 0] > threshold, logits[2, 7], 0.0) + logits[-1, 3]

    assert infer_reads(metric, N_POS, D_VOCAB).reads == ((2, 5), (0, 3, 7))
    expected = loop(patched, metric)
    for engine in ("fast", "plain"):
        on = np.asarray(activation_patch(model, clean, corrupt, metric, engine=engine))
        np.testing.assert_allclose(on, expected, atol=1e-5, err_msg=engine)
    off = np.asarray(activation_patch(model, clean, corrupt, custom(metric, infer=False), engine="fast"))
    np.testing.assert_allclose(on, off, atol=1e-5)


def test_changing_the_answer_tokens_of_a_shortcut_sweep_does_not_compile(setup, caplog):
    """Shortcut sweeps unembed only the metric's columns, passed as data: a logit
    difference of other tokens runs the program compiled for the first (no compile
    logged) and equals the loop; a new plain function does compile (the check can fail)."""
    model, clean, corrupt, patched = setup

    def compiles(metric):
        caplog.clear()
        with jax.log_compiles(True), caplog.at_level(logging.WARNING):
            out = np.asarray(activation_patch(model, clean, corrupt, metric, shortcuts=True))
        return out, [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]

    compiles(logit_diff(3, 4))
    other = logit_diff(20, 7)
    got, compiled = compiles(other)
    assert not compiled, compiled
    expected = loop(patched, other)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    fn = lambda lg: lg[-1, 20] - lg[-1, 7]  # noqa: E731 - a plain function, as users write it
    got, compiled = compiles(fn)
    assert compiled
    np.testing.assert_allclose(got, expected, atol=1e-5)
