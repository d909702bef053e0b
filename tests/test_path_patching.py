"""Path patching and circuit-hypothesis evaluation against references we did not share
code with: a naive Python loop of the 3-run algorithm with one explicit full-name
`Patch` per head and MLP; the direct effect of a head on the logits computed by hand;
and activation patching (`jaxinterp.causal.patching.activation_patch`), which path patching
reduces to when the receiver is the residual stream right after the sender."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from test_attribution import CLEAN, CORRUPT, LLAMA, METRIC, tiny_model

from jaxinterp import Patch
from jaxinterp.causal.patching import activation_patch
from jaxinterp.causal.path_patching import (
    PathPatchingError,
    evaluate_hypothesis,
    kl_dissimilarity,
    path_patch,
    path_patch_cost,
    path_patch_sweep,
)

L, H = LLAMA.n_layers, LLAMA.n_heads
BASE, SOURCE = CORRUPT, CLEAN


@pytest.fixture(scope="module")
def model():
    return tiny_model(LLAMA, 0)


@pytest.fixture(scope="module")
def caches(model):
    names = ["attn.z", "mlp_out", "resid_post"]
    return model.run_with_cache(BASE, names=names)[1], model.run_with_cache(SOURCE, names=names)[1]


def _naive(model, caches, sender, receivers, freeze_mlps, receiver_pos=None):
    """The 3 runs spelled out: step 2 patches every head (and MLP) by its full name, the
    sender with its source value; step 3 patches each receiver by its full name."""
    cb, cs = caches
    step2 = []
    for l in range(L):
        for h in range(H):
            src = cs if sender == ("head", l, h) else cb
            step2.append(Patch(f"blocks.{l}.attn.hook_z", src["attn.z"][l][:, h][:, None], head=h))
        if freeze_mlps or sender == ("mlp", l):
            src = cs if sender == ("mlp", l) else cb
            step2.append(Patch(f"blocks.{l}.hook_mlp_out", src["mlp_out"][l]))
    return _naive_runs(model, step2, tuple(receivers), receiver_pos)


@eqx.filter_jit
def _naive_runs(model, step2, receivers, receiver_pos):
    _, recorded = model.run_with_cache(BASE, names=[name for name, _ in receivers], interventions=step2)
    step3 = [Patch(name, recorded[name], head=head, pos=receiver_pos) for name, head in receivers]
    return METRIC(model(BASE, step3))


# receivers as node names, and the same receivers by full site name and head
RECEIVERS = {
    "heads+mlp": (
        ["a1.h2.q", "a1.kv1.v", "m1"],
        [("blocks.1.attn.hook_q", 2), ("blocks.1.attn.hook_v", 1), ("blocks.1.ln2.hook_normalized", None)],
    ),
    "logits": (["logits"], [(f"blocks.{L - 1}.hook_resid_post", None)]),
}


# (logits, MLPs reacting) is covered by test_reduces_to_activation_patching.
@pytest.mark.parametrize("which,freeze_mlps", [("heads+mlp", True), ("heads+mlp", False), ("logits", True)])
def test_sweep_equals_naive_loop(model, caches, which, freeze_mlps):
    names, full = RECEIVERS[which]
    pos = [-1] if which == "logits" else None  # receivers restricted to the last position
    heads = np.asarray(path_patch_sweep(model, BASE, SOURCE, METRIC, names, freeze_mlps=freeze_mlps, receiver_pos=pos))
    assert heads.shape == (L, H)
    for l in range(L):
        for h in range(H):
            want = _naive(model, caches, ("head", l, h), full, freeze_mlps, pos)
            np.testing.assert_allclose(heads[l, h], want, rtol=1e-4, atol=1e-5, err_msg=f"head {l}.{h}")
    if freeze_mlps and which == "heads+mlp":  # MLP senders (one more compiled sweep: once is enough)
        mlps = np.asarray(path_patch_sweep(model, BASE, SOURCE, METRIC, names, senders="mlps", freeze_mlps=freeze_mlps))
        assert mlps.shape == (L,)
        for l in range(L):
            np.testing.assert_allclose(
                mlps[l], _naive(model, caches, ("mlp", l), full, freeze_mlps), rtol=1e-4, atol=1e-5
            )
    base = float(METRIC(model(BASE)))
    assert np.abs(heads - base).max() > 1e-2  # some path matters
    if which == "heads+mlp":
        # A head cannot reach the inputs of heads in its own layer: no path, no effect.
        no_path = path_patch(model, BASE, SOURCE, METRIC, "a1.h0", ["a1.h2.q", "a1.kv1.v"], freeze_mlps=freeze_mlps)
        assert no_path == pytest.approx(base, rel=1e-6)


def _rmsnorm(x, w, eps):
    return x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + eps) * w


def test_direct_path_to_logits_by_hand(model, caches):
    # Everything frozen but the sender: the final residual is the base one plus the
    # sender's change of output, read by the final norm and unembedding.
    cb, cs = caches
    got = np.asarray(path_patch_sweep(model, BASE, SOURCE, METRIC, "logits"))
    W_O = model.blocks.attn.W_O
    for l in range(L):
        for h in range(H):
            resid = cb["resid_post"][-1] + (cs["attn.z"][l][:, h] - cb["attn.z"][l][:, h]) @ W_O[l, h]
            logits = _rmsnorm(resid, model.ln_final.w, LLAMA.norm_eps) @ model.unembed.W_U
            np.testing.assert_allclose(got[l, h], METRIC(logits), rtol=1e-4, atol=1e-5)


def test_reduces_to_activation_patching(model):
    # The receiver right after the senders, MLPs free to react: nothing lies between, so
    # path patching is activation patching (clean into corrupted, as activation_patch).
    heads = np.asarray(activation_patch(model, SOURCE, BASE, METRIC, "attn.z", ("layer", "head"), method="plain"))
    receiver = ["blocks.1.hook_resid_pre"]  # one compiled program for every call below
    for h in range(H):
        got = path_patch(model, BASE, SOURCE, METRIC, [f"a0.h{h}"], receiver, freeze_mlps=False)
        np.testing.assert_allclose(got, heads[0, h], rtol=1e-4, atol=1e-5)
    # Several senders at once, heads and an MLP: all their source outputs patched.
    _, src = model.run_with_cache(SOURCE, names=["attn.z", "mlp_out"])
    got = path_patch(model, BASE, SOURCE, METRIC, ["a0.h0", "a0.h3", "m0"], receiver, freeze_mlps=False)
    patched = model(
        BASE,
        [Patch("attn.z", src["attn.z"], layer=0, head=jnp.array([0, 3])), Patch("mlp_out", src["mlp_out"], layer=0)],
    )
    np.testing.assert_allclose(got, METRIC(patched), rtol=1e-4, atol=1e-5)
    assert abs(got - float(METRIC(model(BASE)))) > 1e-2


# ------------------------------------------------------------------ hypotheses

REFS = jnp.stack([CLEAN, CORRUPT, CLEAN[::-1]])
CFS = jnp.stack([CORRUPT, CLEAN, CORRUPT[::-1]])


def _naive_hypothesis(model, important, ref, cf):
    # Every head and MLP outside S, one full-name Patch each, from the counterfactual run.
    _, c = model.run_with_cache(cf, names=["attn.z", "mlp_out"])
    ivs = []
    for l in range(L):
        ivs += [
            Patch(f"blocks.{l}.attn.hook_z", c["attn.z"][l][:, h][:, None], head=h)
            for h in range(H)
            if f"a{l}.h{h}" not in important
        ]
        if f"m{l}" not in important:
            ivs.append(Patch(f"blocks.{l}.hook_mlp_out", c["mlp_out"][l]))
    return float(kl_dissimilarity()(model(ref), model(ref, ivs)))


def test_hypothesis_equals_naive_loop(model):
    important = ["a0.h1", "a1.h3", "m1"]
    res = evaluate_hypothesis(model, important, REFS, CFS)
    want = [_naive_hypothesis(model, important, r, c) for r, c in zip(REFS, CFS)]
    np.testing.assert_allclose(res.per_pair, want, rtol=1e-4, atol=1e-6)
    assert res.aue == pytest.approx(np.mean(want), rel=1e-4)
    assert res.aue > 1e-3


def test_kv_head_node_stands_for_its_query_heads(model):
    group = LLAMA.n_heads // LLAMA.n_kv_heads
    kv = evaluate_hypothesis(model, ["a1.kv1", "m0"], REFS, CFS)
    heads = evaluate_hypothesis(model, [f"a1.h{h}" for h in range(group, 2 * group)] + ["m0"], REFS, CFS)
    np.testing.assert_array_equal(kv.per_pair, heads.per_pair)


def test_hypotheses_share_one_compiled_program(model, caplog):
    """Node sets are data and the default dissimilarities compare equal: scoring a second
    hypothesis (as a search over circuits does, many times) compiles nothing. A new
    dissimilarity function does compile (the check can fail)."""
    import logging

    import jax

    from jaxinterp.core.metrics import logit_diff

    def compiles(*args, **kwargs):
        caplog.clear()
        with jax.log_compiles(True), caplog.at_level(logging.WARNING):
            evaluate_hypothesis(model, *args, **kwargs)
        return [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]

    compiles(["a0.h1"], REFS, CFS)
    assert not compiles(["a1.h3", "m0"], REFS, CFS)
    compiles(["a0.h1"], REFS, CFS, metric=logit_diff(3, 4))
    assert not compiles(["m1"], REFS, CFS, metric=logit_diff(5, 6))
    assert compiles(["m1"], REFS, CFS, lambda a, b: jnp.abs(a[-1] - b[-1]).sum())


def test_hypothesis_with_every_node_explains_everything(model):
    everything = [f"a{l}.h{h}" for l in range(L) for h in range(H)] + [f"m{l}" for l in range(L)]
    res = evaluate_hypothesis(model, everything, REFS, CFS, metric=METRIC)
    np.testing.assert_allclose(res.per_pair, 0.0, atol=1e-6)
    # No node: a real unexplained effect, larger than a partial hypothesis's.
    none = evaluate_hypothesis(model, [], REFS, CFS, metric=METRIC)
    assert none.aue > 1e-2


def test_bad_inputs(model):
    with pytest.raises(PathPatchingError, match="senders are heads"):
        path_patch(model, BASE, SOURCE, METRIC, "a0.h1.q", "logits")
    with pytest.raises(PathPatchingError, match="reads nothing"):
        path_patch(model, BASE, SOURCE, METRIC, "a0.h1", "a1.h2")
    with pytest.raises(PathPatchingError, match="key/value heads"):
        path_patch(model, BASE, SOURCE, METRIC, "a0.h1", "a1.h3.k")
    with pytest.raises(PathPatchingError, match="out of range"):
        path_patch(model, BASE, SOURCE, METRIC, "a0.h9", "logits")
    with pytest.raises(PathPatchingError, match="same shape"):
        path_patch(model, BASE, SOURCE[:-1], METRIC, "a0.h1", "logits")
    with pytest.raises(PathPatchingError, match="'heads' or 'mlps'"):
        path_patch_sweep(model, BASE, SOURCE, METRIC, "logits", senders="neurons")
    with pytest.raises(PathPatchingError, match="heads .* and MLPs"):
        evaluate_hypothesis(model, ["a0.h1.q"], REFS, CFS)


def test_cost_counts_what_runs_and_bands_cut_step_two(model):
    """Counted FLOPs are those XLA runs: with every MLP frozen, step 2 computes no MLP (a
    full Patch makes them dead code), so each MLP sender -> logits costs less than one
    MLP stack; with MLPs reacting, each sender runs the MLPs of step 2, from its band's
    first layer: L bands (step 2 from the sender's own layer) cost exactly the MLP
    matmuls of the layers below each sender less than one band."""
    c = LLAMA
    n = BASE.shape[0]
    mlp = 2 * n * 3 * c.d_model * c.d_mlp  # one layer's MLP on every position

    def cost(freeze_mlps, bands):
        return path_patch_cost(
            model, BASE, SOURCE, METRIC, "logits", senders="mlps", freeze_mlps=freeze_mlps, bands=bands
        )

    frozen, frozen_split = cost(True, 1), cost(True, L)
    one, per_layer = cost(False, 1), cost(False, L)
    assert frozen["n_senders"] == L and frozen["per_sender"] == pytest.approx(frozen["forward_passes"] / L)
    # Frozen MLPs: step 2 runs no MLP wherever it starts; what a band adds is its own
    # start-up (the sender-independent work at its first layer).
    per_band = frozen_split["sweep"] - frozen["sweep"]
    assert 0 <= per_band < mlp
    # Reacting MLPs: one band runs, for the sender at layer l, the MLPs 0..l-1 too (whose
    # inputs equal the base run's); a band per layer skips exactly those.
    below = sum(range(L))
    assert one["sweep"] - per_layer["sweep"] == below * mlp - (L - 1) * per_band
    # ... and still runs the MLPs from each sender's layer on (at least one per sender).
    assert per_layer["sweep"] - frozen_split["sweep"] >= L * mlp


@pytest.mark.parametrize("freeze_mlps", [True, False])
def test_bands_give_the_same_sweep(model, freeze_mlps):
    """Step 2 from each band's first layer (bands of 1 layer: from the sender's own)
    equals step 2 from the embeddings."""
    whole = path_patch_sweep(model, BASE, SOURCE, METRIC, "logits", freeze_mlps=freeze_mlps, bands=1)
    split = path_patch_sweep(model, BASE, SOURCE, METRIC, "logits", freeze_mlps=freeze_mlps, bands=L)
    np.testing.assert_allclose(np.asarray(split), np.asarray(whole), rtol=1e-5, atol=1e-6)
    with pytest.raises(PathPatchingError, match="bands must be a positive int"):
        path_patch_sweep(model, BASE, SOURCE, METRIC, "logits", bands=0)


def test_sweep_checkpoint_resumes_and_refuses_other_receivers(model, tmp_path, caplog):
    import logging

    from jaxinterp.core.errors import ResumeError

    want = np.asarray(path_patch_sweep(model, BASE, SOURCE, METRIC, "logits", batch_size=3))
    got = np.asarray(path_patch_sweep(model, BASE, SOURCE, METRIC, "logits", batch_size=3, checkpoint=tmp_path))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    chunks = sorted(tmp_path.glob("chunk-*.npz"))
    assert len(chunks) > 1
    chunks[0].unlink()  # as a kill leaves the directory
    with caplog.at_level(logging.INFO, logger="jaxinterp.checkpoint"):
        again = np.asarray(path_patch_sweep(model, BASE, SOURCE, METRIC, "logits", batch_size=3, checkpoint=tmp_path))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not recomputed" in m for m in messages) == len(chunks) - 1
    assert sum(" computed in " in m for m in messages) == 1
    np.testing.assert_array_equal(again, got)
    with pytest.raises(ResumeError, match="differ"):
        path_patch_sweep(model, BASE, SOURCE, METRIC, "m1", batch_size=3, checkpoint=tmp_path)
