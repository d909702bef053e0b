"""Datasets of prompt pairs: one compiled sweep over every pair equals a Python loop of
single-pair runs.

References: for activation patching, a loop over pairs and locations of
``model(base, [Patch(site, source_cache, layer=..., pos=...)])`` (written here, not
through `activation_patch`), and the library's single-pair calls (themselves checked
against such a loop in tests/test_patching.py); for attribution and path patching, a
loop of single-pair calls on each pair's unpadded prompts. Padded pairs are compared
with the unpadded prompts run alone. Also: the errors that bad batches raise, and the
IOI generator on SmolLM2's tokenizer.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxinterp import ModelConfig, Patch, Transformer
from jaxinterp.causal.attribution import attribution_patch
from jaxinterp.causal.ioi import ioi_dataset
from jaxinterp.causal.patching import activation_patch
from jaxinterp.causal.patching.fast import _quick_programs, fast_program
from jaxinterp.causal.path_patching import path_patch_sweep
from jaxinterp.core.errors import (
    AttentionMaskError,
    JaxinterpError,
    MetricError,
    PairBatchError,
    ReadPositionError,
)
from jaxinterp.core.metrics import logit_diff
from jaxinterp.core.pair_metrics import pair_fn, pair_logit_diff, per_pair

CFG = ModelConfig(
    d_model=16,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_head=4,
    d_vocab=32,
    n_ctx=16,
    d_mlp=32,
    act_fn="silu",
    normalization="rmsnorm",
    positional="rotary",
    gated_mlp=True,
)
B, N = 3, 6
LENGTHS = np.array([6, 4, 6])  # two lengths: the single-pair references compile twice


@pytest.fixture(scope="module")
def model():
    return Transformer.init(CFG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def data():
    """Three padded pairs (lengths 6, 4, 6) differing at position 1; answer/wrong ids."""
    rng = np.random.default_rng(0)
    clean = rng.integers(1, CFG.d_vocab, (B, N))
    corrupt = clean.copy()
    corrupt[:, 1] = (corrupt[:, 1] + 1) % CFG.d_vocab
    mask = (np.arange(N)[None] < LENGTHS[:, None]).astype(np.int32)
    answer, wrong = rng.integers(0, CFG.d_vocab, B), rng.integers(0, CFG.d_vocab, B)
    return np.where(mask, clean, 0), np.where(mask, corrupt, 0), mask, answer, wrong


def _single(answer, wrong, i):
    return logit_diff(int(answer[i]), int(wrong[i]), -1)


def _loop_reference(model, clean, corrupt, metrics, lengths):
    """``[pair, layer, pos]`` resid_pre patching by a plain loop over pairs and cells on
    each pair's unpadded prompts; cells past a pair's length keep its unpatched metric."""
    out = np.zeros((len(metrics), CFG.n_layers, N))
    for i, metric in enumerate(metrics):
        n = int(lengths[i])
        _, cache = model.run_with_cache(clean[i, :n], names=["resid_pre"])
        source = cache.stack("resid_pre")
        out[i] = float(metric(model(corrupt[i, :n])))
        for layer in range(CFG.n_layers):
            for pos in range(n):
                out[i, layer, pos] = float(
                    metric(model(corrupt[i, :n], [Patch("resid_pre", source, layer=layer, pos=pos)]))
                )
    return out


@pytest.fixture(scope="module")
def reference(model, data):
    clean, corrupt, _, answer, wrong = data
    return _loop_reference(model, clean, corrupt, [_single(answer, wrong, i) for i in range(B)], LENGTHS)


@pytest.mark.parametrize("engine", ["fast", "plain"])
def test_padded_pairs_match_a_loop_of_single_patches(model, data, reference, engine):
    clean, corrupt, mask, answer, wrong = data
    metric = pair_logit_diff(answer, wrong, LENGTHS - 1)
    per = activation_patch(model, clean, corrupt, metric, engine=engine, attention_mask=mask, per_pair=True)
    assert per.dims == ("pair", "layer", "pos")
    np.testing.assert_allclose(np.asarray(per), reference, atol=2e-5)
    mean = activation_patch(model, clean, corrupt, metric, engine=engine, attention_mask=mask)
    np.testing.assert_allclose(np.asarray(mean), reference.mean(0), atol=2e-5)


def test_equal_length_pairs_match_single_pair_calls(model, data):
    clean, corrupt, _, answer, wrong = data
    clean, corrupt = np.asarray(clean)[:, :4], np.asarray(corrupt)[:, :4]  # every pair real on 0..3
    site, over = "attn.z", ("layer", "head")
    metric = per_pair([logit_diff(int(answer[i]), int(wrong[i])) for i in range(B)])  # one position for all
    ref = np.stack(
        [
            np.asarray(
                activation_patch(
                    model, clean[i], corrupt[i], logit_diff(int(answer[i]), int(wrong[i])), site, over, engine="plain"
                )
            )
            for i in range(B)
        ]
    )
    out = activation_patch(model, clean, corrupt, metric, site, over, engine="fast", shortcuts=True, per_pair=True)
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5)
    # Per-pair positions through a function of each pair's arrays equals pair_logit_diff
    # (itself checked against a loop above).
    pos = np.array([3, 2, 3])
    fn = pair_fn(
        lambda lg, a: lg[a["pos"], a["io"]] - lg[a["pos"], a["s"]], {"pos": pos, "io": answer, "s": wrong}, pos
    )
    out = activation_patch(model, clean, corrupt, fn, site, over, engine="fast", per_pair=True)
    expected = activation_patch(
        model, clean, corrupt, pair_logit_diff(answer, wrong, pos), site, over, engine="fast", per_pair=True
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=2e-5)
    assert not np.allclose(np.asarray(out), ref, atol=1e-3)  # the positions matter


def test_dataset_sweep_is_one_compiled_program(model, data):
    clean, corrupt, mask, answer, wrong = data
    programs = [fast_program, *_quick_programs]

    def compiled():
        return sum(p._cache_size() for p in programs)

    def sweep(a):  # the padded test's sweep (shared program when run after it)
        metric = pair_logit_diff(a, wrong, LENGTHS - 1)
        return activation_patch(model, clean, corrupt, metric, engine="fast", attention_mask=mask)

    before = compiled()
    sweep(answer)
    assert compiled() - before <= 1  # every pair in one program
    before = compiled()
    sweep(wrong)  # other answers, same shapes: the same program
    assert compiled() == before


def test_attribution_pairs_match_single_pair_calls(model, data):
    clean, corrupt, mask, answer, wrong = data
    metric = pair_logit_diff(answer, wrong, LENGTHS - 1)
    out = attribution_patch(model, clean, corrupt, metric, "resid_pre", attention_mask=mask, per_pair=True)
    assert out["resid_pre"].dims == ("pair", "layer", "pos")
    for i in range(B):
        n = int(LENGTHS[i])
        ref = attribution_patch(model, clean[i, :n], corrupt[i, :n], _single(answer, wrong, i), "resid_pre")
        np.testing.assert_allclose(np.asarray(out["resid_pre"])[i, :, :n], np.asarray(ref["resid_pre"]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(out["resid_pre"])[i, :, n:], 0.0, atol=1e-7)  # padding: no effect


def test_path_patching_pairs_match_single_pair_calls(model, data):
    clean, corrupt, mask, answer, wrong = data
    metric = pair_logit_diff(answer, wrong, LENGTHS - 1)
    out = path_patch_sweep(model, clean, corrupt, metric, "logits", attention_mask=mask, per_pair=True)
    assert out.dims == ("pair", "layer", "head")
    ref = np.stack(
        [
            np.asarray(
                path_patch_sweep(
                    model, clean[i, : LENGTHS[i]], corrupt[i, : LENGTHS[i]], _single(answer, wrong, i), "logits"
                )
            )
            for i in range(B)
        ]
    )
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5)


def test_bad_batches_name_the_problem(model, data):
    clean, corrupt, mask, answer, wrong = data
    metric = pair_logit_diff(answer, wrong, LENGTHS - 1)
    cases = [
        (PairBatchError, "3 prompts but corrupted_tokens 2", dict(corrupted_tokens=corrupt[:2])),
        (AttentionMaskError, r"shape \[batch, pos\]", dict(attention_mask=mask[:, :4])),
        (AttentionMaskError, "not right-padded", dict(attention_mask=mask[:, ::-1])),
        (AttentionMaskError, "0 \\(padding\\) and 1", dict(attention_mask=mask * 2)),
        (PairBatchError, "for 2 pairs", dict(metric=pair_logit_diff(answer[:2], wrong[:2]))),
        (ReadPositionError, "which is padding", dict(metric=pair_logit_diff(answer, wrong, -1))),
        (ReadPositionError, "outside prompts of 6", dict(metric=pair_logit_diff(answer, wrong, [0, 9, 0]))),
    ]
    for error, match, change in cases:
        kwargs = dict(clean_tokens=clean, corrupted_tokens=corrupt, metric=metric, attention_mask=mask) | change
        with pytest.raises(error, match=match):
            activation_patch(model, **kwargs)
        assert issubclass(error, JaxinterpError)
    with pytest.raises(PairBatchError, match="per_pair"):
        activation_patch(model, clean[0], corrupt[0], _single(answer, wrong, 0), per_pair=True)
    with pytest.raises(PairBatchError, match="2 entries but the other arguments have 3"):
        pair_logit_diff(answer, wrong[:2])
    with pytest.raises(MetricError, match="differs in kind"):
        per_pair([logit_diff(1, 2, -1), logit_diff(1, 2, -2)])
    with pytest.raises(ReadPositionError):
        attribution_patch(model, clean, corrupt, pair_logit_diff(answer, wrong, -1), attention_mask=mask)


@pytest.mark.parametrize("corruption", ["abc", "s2", "io"])
def test_ioi_dataset_on_smollm2_tokenizer(smollm2_tokenizer, corruption):
    tok = smollm2_tokenizer
    d = ioi_dataset(tok, 12, corruption=corruption, seed=1)
    assert d.clean.shape == d.corrupted.shape and d.attention_mask is None
    assert d.order[:2] == ("ABBA", "BABA")
    for i in range(d.n_pairs):
        assert tok.decode(d.clean[i].tolist()) == d.clean_text[i]
        assert tok.decode(d.corrupted[i].tolist()) == d.corrupted_text[i]
        io, s1, s2 = (int(d.positions[k][i]) for k in ("IO", "S1", "S2"))
        assert d.clean[i, io] == d.answer[i] and d.clean[i, s1] == d.clean[i, s2] == d.wrong[i] and s1 < s2
        assert (io < s1) == (d.order[i] == "ABBA")
        differ = set(np.flatnonzero(d.clean[i] != d.corrupted[i]).tolist())
        expected = {io, s1, s2} if corruption == "abc" else {s2}
        assert differ == expected
        if corruption == "io":
            assert d.corrupted[i, s2] == d.answer[i]
        else:
            assert d.corrupted[i, s2] not in (d.answer[i], d.wrong[i])
    padded = ioi_dataset(tok, 16, padding=True, seed=0)
    lengths = padded.attention_mask.sum(1)
    assert len(set(lengths.tolist())) > 1 and (padded.pos == lengths - 1).all()
    with pytest.raises(PairBatchError, match="corruption"):
        ioi_dataset(tok, 4, corruption="swap")


def test_pair_logit_diff_on_the_read_positions_only():
    """`LogitDiffAt.at_positions` on the logits at a few positions equals the metric of
    the full logits (numpy indexing as the reference), and is NaN for a pair whose
    position was not computed."""
    from jaxinterp.core.readout import Readout, evaluate_metric

    rng = np.random.default_rng(1)
    full = rng.standard_normal((4, 8, 50)).astype(np.float32)  # [pair, pos, d_vocab]
    answer, wrong, pos = np.array([3, 7, 1, 9]), np.array([4, 0, 2, 2]), np.array([-1, 5, 7, 2])
    metric = pair_logit_diff(answer, wrong, pos)
    readout = Readout((5, 7), None, 8, 50)  # pair 3 reads position 2: not computed
    for i in range(4):
        got = float(evaluate_metric(metric.at(jax.numpy.asarray(i)), jax.numpy.asarray(full[i, list(readout.positions)]), readout))
        want = full[i, pos[i] % 8, answer[i]] - full[i, pos[i] % 8, wrong[i]]
        if pos[i] % 8 in readout.positions:
            assert abs(got - want) < 1e-6, (i, got, want)
        else:
            assert np.isnan(got)


def test_dataset_sweep_never_builds_a_full_logits_view_per_read_row():
    """Memory regression: with a `PairMetric` (positions as data) the fast sweep's
    compiled program once held a NaN-padded ``[read rows, pos, d_vocab]`` view of the
    logits (18 GB for 64 GPT-2-shape pairs). Its temporaries must stay below that view."""
    import equinox as eqx

    from jaxinterp.causal.patching import patch_grid
    from jaxinterp.causal.patching.fast import cached_runs, fast_layout
    from jaxinterp.core.readout import readout_for

    # XLA made that choice from ~4000 read rows on: 64 pairs x 4 layers x 20 positions.
    cfg = CFG.replace(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, d_head=32, d_mlp=256, d_vocab=4096, n_ctx=32)
    wide = Transformer.init(cfg, jax.random.PRNGKey(1))
    n_pairs, n_pos = 64, 20
    rng = np.random.default_rng(0)
    clean = rng.integers(0, cfg.d_vocab, (n_pairs, n_pos))
    corrupt = clean.copy()
    corrupt[:, 3] = (corrupt[:, 3] + 1) % cfg.d_vocab
    metric = pair_logit_diff(rng.integers(0, cfg.d_vocab, n_pairs), rng.integers(0, cfg.d_vocab, n_pairs))
    grid = patch_grid(cfg, n_pos, "resid_pre", ("layer", "pos"))
    readout = readout_for(logit_diff(0, 1), n_pos, cfg.d_vocab)  # the last position, every column
    layout = fast_layout(cfg, n_pos, grid, n_pairs=n_pairs)  # one chunk
    runs = cached_runs(wide, clean, corrupt, "resid_pre", metric, readout)
    arrays, static = eqx.partition(metric, eqx.is_array)
    compiled = fast_program.lower(
        wide, runs, layout.data, arrays, shape=layout.shape, site="resid_pre", metric=static, readout=readout,
        last_layer_subset=False, progress=False,
    ).compile()  # fmt: skip
    view_bytes = layout.shape.reads * n_pos * cfg.d_vocab * 4
    assert compiled.memory_analysis().temp_size_in_bytes < view_bytes
