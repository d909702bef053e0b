"""Causal tracing against a naive reference: a Python loop over cells and noise samples,
each a full forward (`model(...)`, all logits) with an explicit `Noise` on the subject's
embeddings and one clean `Patch` per restored layer, the window spelled as ROME's code
slices it."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_attribution import tiny_model

from jaxinterp import ModelConfig, Noise, Patch
from jaxinterp.causal.causal_tracing import causal_trace, embedding_noise_std, trace_prob, window_mask

CFG = ModelConfig(
    d_model=32,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    d_head=8,
    d_mlp=48,
    d_vocab=50,
    n_ctx=16,
    act_fn="silu",
    normalization="rmsnorm",
    positional="rotary",
    gated_mlp=True,
    family="llama",
)
TOKENS = jnp.array([1, 5, 7, 9, 3, 11])
SUBJECT = [1, 2]
N_SAMPLES, WINDOW = 2, 2
KEY = jax.random.PRNGKey(42)


@pytest.fixture(scope="module")
def model():
    return tiny_model(CFG, 0)


@pytest.fixture(scope="module")
def trace(model):
    return causal_trace(model, TOKENS, SUBJECT, n_samples=N_SAMPLES, window=WINDOW, key=KEY)


def _rome_window(layer, n_layers, window):
    # ROME (rome/experiments/causal_trace.py) slices: layers[max(0, l - w // 2) : min(L, l - (-w // 2))]
    return list(range(n_layers))[max(0, layer - window // 2) : min(n_layers, layer - (-window // 2))]


@pytest.fixture(scope="module")
def naive(model, trace):
    """p(answer) for one restoration: loop over the noise samples, full forward each."""
    keys = jax.random.split(KEY, N_SAMPLES)
    subject = jnp.zeros(TOKENS.shape[0], bool).at[jnp.asarray(SUBJECT)].set(True)
    _, clean = model.run_with_cache(TOKENS)

    @eqx.filter_jit
    def prob(key, patches):
        ivs = [Noise("embed", key, trace.noise_std, pos=subject)]
        ivs += [Patch(site, clean[site], layer=layer, pos=pos) for site, layer, pos in patches]
        return jax.nn.softmax(model(TOKENS, ivs)[-1])[trace.answer]

    def restored(patches):
        patches = [(s, jnp.asarray(l), jnp.asarray(p)) for s, l, p in patches]
        return float(np.mean([prob(k, patches) for k in keys]))

    return restored


def test_noise_std_is_three_embedding_stds(model):
    assert embedding_noise_std(model) == pytest.approx(3 * float(np.std(np.asarray(model.embed.W_E))), rel=1e-5)


def test_window_matches_rome_slicing():
    for n_layers in (1, 4, 7):
        for window in (1, 2, 3, 10):
            for layer in range(n_layers):
                got = np.flatnonzero(np.asarray(window_mask(jnp.asarray(layer), n_layers, window))).tolist()
                assert got == _rome_window(layer, n_layers, window), (n_layers, window, layer)


def test_corrupted_and_clean_probabilities(model, trace, naive):
    clean = float(jax.nn.softmax(model(TOKENS)[-1])[trace.answer])
    assert trace.answer == int(jnp.argmax(model(TOKENS)[-1]))
    assert trace.clean_prob == pytest.approx(clean, rel=1e-5)
    assert trace.corrupted_prob == pytest.approx(naive([]), rel=1e-5)
    assert abs(trace.corrupted_prob - trace.clean_prob) > 1e-3  # the noise does corrupt


@pytest.mark.parametrize("site", ["resid_pre", "resid_post"])
def test_restoring_first_layer_everywhere_recovers_clean(model, trace, site):
    keys = jax.random.split(KEY, N_SAMPLES)
    subject = jnp.zeros(TOKENS.shape[0], bool).at[jnp.asarray(SUBJECT)].set(True)
    _, clean = model.run_with_cache(TOKENS, names=[site])
    p = eqx.filter_jit(trace_prob)(
        model, TOKENS, trace.answer, subject, keys, trace.noise_std, [Patch(site, clean[site], layer=0)]
    )
    assert float(p) == pytest.approx(trace.clean_prob, rel=1e-5, abs=1e-7)


def test_noise_is_reproducible_per_key_and_averaged(model, trace):
    subject = jnp.zeros(TOKENS.shape[0], bool).at[jnp.asarray(SUBJECT)].set(True)
    keys = jax.random.split(KEY, N_SAMPLES)
    f = jax.jit(lambda k: trace_prob(model, TOKENS, trace.answer, subject, k[None], trace.noise_std))
    singles = [float(f(k)) for k in keys]
    assert singles[0] == float(f(keys[0]))  # same key, same noise
    assert len(set(singles)) == N_SAMPLES  # different keys, different noise
    assert trace.corrupted_prob == pytest.approx(np.mean(singles), rel=1e-5)  # vmap over keys = mean of the loop


def test_maps_equal_naive_loop(trace, naive):
    n_pos = TOKENS.shape[0]
    for kind, site in [("hidden", "resid_post"), ("mlp", "mlp_out"), ("attn", "attn_out")]:
        got = np.asarray(getattr(trace, kind))
        assert getattr(trace, kind).dims == ("layer", "pos") and got.shape == (CFG.n_layers, n_pos)
        for layer in range(CFG.n_layers):
            for pos in range(n_pos):
                layers = [layer] if kind == "hidden" else _rome_window(layer, CFG.n_layers, WINDOW)
                want = naive([(site, l, pos) for l in layers])
                np.testing.assert_allclose(
                    got[layer, pos], want, rtol=1e-4, atol=1e-6, err_msg=f"{kind} l={layer} p={pos}"
                )
    # Restoring the last hidden state at the last position restores the prediction exactly.
    assert trace.hidden.values[-1, -1] == pytest.approx(trace.clean_prob, rel=1e-5)
    ie = trace.indirect_effect("mlp")
    np.testing.assert_allclose(np.asarray(ie), np.asarray(trace.mlp) - trace.corrupted_prob)


def test_same_key_same_trace_and_plot(model, trace, tmp_path):
    again = causal_trace(
        model,
        TOKENS,
        np.array([False, True, True, False, False, False]),
        n_samples=N_SAMPLES,
        window=WINDOW,
        key=KEY,
        kinds=("mlp",),
    )
    np.testing.assert_array_equal(np.asarray(again.mlp), np.asarray(trace.mlp))
    assert again.hidden is None
    with pytest.raises(ValueError, match="no 'hidden' map"):
        again.indirect_effect("hidden")
    trace.plot(tmp_path / "trace.png")
    assert (tmp_path / "trace.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="out of range"):
        causal_trace(model, TOKENS, [7])
    with pytest.raises(ValueError, match="no token"):
        causal_trace(model, TOKENS, [])
    with pytest.raises(ValueError, match="kinds"):
        causal_trace(model, TOKENS, [1], kinds=("mlp", "embed"))
    with pytest.raises(ValueError, match="one prompt"):
        causal_trace(model, jnp.stack([TOKENS, TOKENS]), [1])
    with pytest.raises(ValueError, match="vocabulary"):
        causal_trace(model, TOKENS, [1], answer=CFG.d_vocab)


# --- The fast path (the `trace` fixture above runs it: method="auto" on a causal model)


def test_full_method_equals_fast(model, trace):
    """The full-forward reference path and the fast engine agree (the hidden map: the
    fast path restores resid_post at layer l as resid_pre at l + 1 and fills the last
    layer without running it)."""
    full = causal_trace(
        model, TOKENS, SUBJECT, n_samples=N_SAMPLES, window=WINDOW, key=KEY, kinds=("hidden",), method="full"
    )
    np.testing.assert_allclose(np.asarray(full.hidden), np.asarray(trace.hidden), atol=1e-6)
    assert full.corrupted_prob == pytest.approx(trace.corrupted_prob, abs=1e-7)


def test_fast_resid_pre_hidden_in_chunks_equals_naive(model, trace, naive):
    fast = causal_trace(
        model,
        TOKENS,
        SUBJECT,
        n_samples=N_SAMPLES,
        key=KEY,
        kinds=("hidden",),
        hidden_site="resid_pre",
        batch_size=7,  # several chunks
        method="fast",
    )
    for layer in (0, 2, 3):
        for pos in (0, 2, 5):
            want = naive([("resid_pre", layer, pos)])
            assert float(fast.hidden.values[layer, pos]) == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_bidirectional_model_falls_back_to_full():
    cfg = ModelConfig(d_model=16, n_layers=3, n_heads=2, d_head=8, d_mlp=16, d_vocab=20, n_ctx=8, causal=False)
    bert = tiny_model(cfg, 1)
    tokens = jnp.array([1, 2, 3, 4])
    with pytest.raises(ValueError, match="causal attention"):
        causal_trace(bert, tokens, [1], n_samples=1, kinds=("hidden",), method="fast")
    with pytest.raises(ValueError, match="method"):
        causal_trace(bert, tokens, [1], n_samples=1, kinds=("hidden",), method="packed")
    auto = causal_trace(bert, tokens, [1], n_samples=1, kinds=("hidden",), key=KEY)
    # Restoring position 1 after layer 0 reaches the last position through position 0
    # (layer 1 attends backwards, layer 2 reads position 0): suffix reuse would miss it.
    keys = jax.random.split(KEY, 1)
    _, clean = bert.run_with_cache(tokens, names=["resid_post"])
    subject = jnp.array([False, True, False, False])
    want = trace_prob(
        bert,
        tokens,
        auto.answer,
        subject,
        keys,
        auto.noise_std,
        [Patch("resid_post", clean["resid_post"], layer=0, pos=1)],
    )
    assert auto.hidden.values[0, 1] == pytest.approx(float(want), rel=1e-5)
    # A dataset on the full path (the method "auto" takes here), with given answers: each
    # item equals its own trace.
    from jaxinterp.causal.causal_tracing import causal_trace_dataset

    items = jnp.stack([tokens, tokens[::-1]])
    traces = causal_trace_dataset(bert, items, [[1], [2]], [auto.answer, 5], n_samples=1, kinds=("hidden",), key=KEY)
    other = causal_trace(bert, tokens[::-1], [2], answer=5, n_samples=1, kinds=("hidden",), key=KEY)
    for got, single in zip(traces.traces, (auto, other)):
        assert got.answer == single.answer
        np.testing.assert_allclose(np.asarray(got.hidden), np.asarray(single.hidden), atol=1e-6)
        assert got.corrupted_prob == pytest.approx(single.corrupted_prob, abs=1e-7)


def test_window_rows_in_block_layout():
    """Window restorations: each row carries the layers its patch spans."""
    from jaxinterp.causal.causal_tracing import window_bounds
    from jaxinterp.causal.patching.layout import build_blocks
    from jaxinterp.core.errors import PatchingError

    first, stop = window_bounds(7, 3)
    for layer in range(7):
        assert list(range(first[layer], stop[layer])) == _rome_window(layer, 7, 3)
    n_pos = 5
    start = np.array([0, 3, 4, 1])
    fields = {f: np.full(4, -1, np.int32) for f in ("layer", "pos", "key_pos", "head", "neuron", "expert")}
    fields["pos"] = start
    layout = build_blocks(n_pos, 7, first[[0, 3, 6, 6]], start, fields, layer_stop=stop[[0, 3, 6, 6]])
    d = {k: v[0] for k, v in layout.data.items()}
    for i, patch in enumerate(layout.patch_of_read[0]):
        if patch >= 0:
            b, r = d["read_block"][i], d["read_row"][i]
            assert d["block_layer"][b] == first[[0, 3, 6, 6]][patch]
            assert d["row_layer_stop"][b, r] == stop[[0, 3, 6, 6]][patch]
    assert (d["row_layer_stop"][d["row_layer"] < 0] == -1).all()  # pad rows never apply
    with pytest.raises(PatchingError, match="layer_stop"):
        build_blocks(n_pos, 7, first[:4], start, fields, layer_stop=first[:4])


# --- A dataset of prompts (causal_trace_dataset): each item equals its own trace

ITEMS = jnp.array([[1, 5, 7, 9, 3, 11], [4, 2, 8, 6, 10, 12], [3, 9, 14, 2, 7, 0]])
ITEM_MASK = jnp.array([[1] * 6, [1] * 6, [1] * 5 + [0]])  # the third prompt has 5 tokens
ITEM_SUBJECTS = [[1, 2], [0], slice(2, 4)]


@pytest.fixture(scope="module")
def dataset(model):
    from jaxinterp.causal.causal_tracing import causal_trace_dataset

    return causal_trace_dataset(
        model,
        ITEMS,
        ITEM_SUBJECTS,
        attention_mask=ITEM_MASK,
        n_samples=N_SAMPLES,
        window=WINDOW,
        key=KEY,
        kinds=("mlp",),  # one kind: fewer compiles (the kinds share the code around the program)
    )


def test_dataset_items_equal_single_traces(model, trace, dataset):
    lengths = [6, 6, 5]
    assert list(dataset.lengths) == lengths
    for i, n in enumerate(lengths):
        single = (
            trace
            if i == 0
            else causal_trace(
                model,
                ITEMS[i, :n],
                ITEM_SUBJECTS[i],
                n_samples=N_SAMPLES,
                window=WINDOW,
                key=KEY,
                kinds=("mlp",),
            )
        )
        got = dataset[i]
        assert got.answer == single.answer and got.subject == single.subject
        assert got.clean_prob == pytest.approx(single.clean_prob, abs=1e-6)
        assert got.corrupted_prob == pytest.approx(single.corrupted_prob, abs=1e-6)
        assert got.attn is None and got.hidden is None
        np.testing.assert_allclose(np.asarray(got.mlp), np.asarray(single.mlp), atol=1e-5, err_msg=str(i))
    # Averaged: position by position over the items long enough (NaN past a prompt's end).
    stacked = np.asarray(dataset.stacked("mlp"))
    assert stacked.shape == (3, CFG.n_layers, 6) and np.isnan(stacked[2, :, 5]).all()
    mean = np.asarray(dataset.mean("mlp"))
    np.testing.assert_allclose(mean[:, :5], stacked[:, :, :5].mean(0), rtol=1e-6)
    np.testing.assert_allclose(mean[:, 5], stacked[:2, :, 5].mean(0), rtol=1e-6)
    ie = np.asarray(dataset.mean("mlp", indirect=True))
    np.testing.assert_allclose(
        ie[:, 0], np.mean([np.asarray(t.mlp)[:, 0] - t.corrupted_prob for t in dataset.traces], 0), rtol=1e-5
    )


def test_dataset_bad_inputs(model):
    from jaxinterp.causal.causal_tracing import causal_trace_dataset
    from jaxinterp.core.errors import AttentionMaskError, PairBatchError

    with pytest.raises(PairBatchError, match=r"\[item, pos\]"):
        causal_trace_dataset(model, TOKENS, [[1]])
    with pytest.raises(PairBatchError, match="one subject per prompt"):
        causal_trace_dataset(model, ITEMS, [[1], [2]])
    with pytest.raises(AttentionMaskError, match="right-padded"):
        causal_trace_dataset(model, ITEMS, ITEM_SUBJECTS, attention_mask=ITEM_MASK[:, ::-1])
    with pytest.raises(ValueError, match="out of range"):
        causal_trace_dataset(model, ITEMS, [[1], [1], [5]], attention_mask=ITEM_MASK)
    with pytest.raises(PairBatchError, match="one token id per prompt"):
        causal_trace_dataset(model, ITEMS, ITEM_SUBJECTS, [1, 2])


# --- Resumable: finished chunks saved, loaded on a resume, mismatched resumes refused


def test_checkpoint_resumes_without_recomputing(model, trace, tmp_path, caplog):
    import logging

    from jaxinterp.causal.causal_tracing import causal_trace_dataset
    from jaxinterp.core.errors import ResumeError

    def run(directory, key=KEY):
        return causal_trace(
            model,
            TOKENS,
            SUBJECT,
            n_samples=N_SAMPLES,
            window=WINDOW,
            key=key,
            kinds=("mlp",),
            batch_size=7,
            checkpoint=directory,
        )

    first = run(tmp_path / "ck")
    np.testing.assert_allclose(np.asarray(first.mlp), np.asarray(trace.mlp), atol=1e-6)
    chunks = sorted((tmp_path / "ck" / "mlp").glob("chunk-*.npz"))
    assert len(chunks) > 2
    chunks[1].unlink()  # as a kill after the other chunks were saved leaves it
    with caplog.at_level(logging.INFO, logger="jaxinterp.checkpoint"):
        again = run(tmp_path / "ck")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not recomputed" in m for m in messages) == len(chunks) - 1
    assert sum(" computed in " in m for m in messages) == 1 and any(m.startswith("chunk 1 of") for m in messages)
    np.testing.assert_array_equal(np.asarray(again.mlp), np.asarray(first.mlp))
    with pytest.raises(ResumeError, match="noise keys"):
        run(tmp_path / "ck", key=jax.random.PRNGKey(7))
    # A dataset: one directory per kind and prompt length.
    items = causal_trace_dataset(
        model,
        ITEMS[:2],
        ITEM_SUBJECTS[:2],
        n_samples=N_SAMPLES,
        window=WINDOW,
        key=KEY,
        kinds=("mlp",),
        batch_size=14,
        checkpoint=tmp_path / "items",
    )
    assert len(list((tmp_path / "items" / "mlp-len6").glob("chunk-*.npz"))) > 1
    np.testing.assert_allclose(np.asarray(items[0].mlp), np.asarray(trace.mlp), atol=1e-6)
