"""Activation patching on the real SmolLM2-135M (GGUF): the IOI picture, and exactness.

Clean "When Mary and John went to the store, John gave a drink to" vs the same with
Mary as the second subject (S2). Patching the clean residual stream into the corrupted
run, one (layer, position) at a time, restores the answer at S2 in the early and
middle layers and at the final position in the late layers (Wang et al. 2022's
picture, here on a 30-layer Llama-family model).
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxinterp import Patch
from jaxinterp.causal.patching import activation_patch
from jaxinterp.core.metrics import logit_diff

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def ioi(smollm2, smollm2_tokenizer):
    tok = smollm2_tokenizer
    clean, corrupt = np.asarray(tok.encode(CLEAN)), np.asarray(tok.encode(CORRUPT))
    metric = logit_diff(tok.to_single_token(" Mary"), tok.to_single_token(" John"))
    result = activation_patch(
        smollm2,
        clean,
        corrupt,
        metric,
        "resid_pre",
        ("layer", "pos"),
        tokenizer=tok,
        shortcuts=True,
        quick_compile=True,
    )
    return clean, corrupt, metric, result


def test_ioi_residual_sweep_shows_s2_then_final_position(smollm2, ioi):
    clean, corrupt, metric, result = ioi
    values = np.asarray(result)
    n_layers, n_pos = smollm2.cfg.n_layers, len(clean)
    assert values.shape == (n_layers, n_pos) and result.dims == ("layer", "pos")
    s2 = int(np.flatnonzero(clean != corrupt)[0])
    assert result.labels["pos"][s2].endswith("John")
    clean_score, corrupt_score = float(metric(smollm2(clean))), float(metric(smollm2(corrupt)))
    assert clean_score > 2 > -2 > corrupt_score  # the model does the task
    best = values.argmax(axis=1)
    # Early-mid layers (first half): S2 carries the answer; late layers: the final token.
    assert (best[: n_layers // 2] == s2).all(), best
    assert (best[-4:] == n_pos - 1).all(), best
    # At its layer band, each position restores most of the clean-corrupted gap.
    span = clean_score - corrupt_score
    assert values[: n_layers // 2, s2].min() > corrupt_score + 0.8 * span
    assert values[-4:, -1].min() > corrupt_score + 0.8 * span
    # Positions before S2 are identical in both prompts: patching them changes nothing.
    np.testing.assert_allclose(values[:, :s2], corrupt_score, atol=1e-4 * abs(corrupt_score))


def test_sweep_cells_equal_single_patches(smollm2, ioi):
    clean, corrupt, metric, result = ioi
    values = np.asarray(result)
    _, cache = smollm2.run_with_cache(clean, names=["resid_pre"])
    scale = np.abs(values).max()
    for layer, pos in [(0, 9), (7, 13), (15, 10), (22, 9), (22, 13), (29, 12), (29, 13)]:
        single = float(metric(smollm2(corrupt, [Patch("resid_pre", cache["resid_pre"], layer=layer, pos=pos)])))
        assert abs(values[layer, pos] - single) <= 1e-4 * scale, (layer, pos, values[layer, pos], single)
