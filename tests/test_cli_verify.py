"""``jaxinterp verify``: jaxinterp against transformers on a tiny saved Llama (exit 0), and
a copy with one corrupted tensor checked against the original (exit 1, the corrupted
layer localised). The reference is transformers' own forward pass; the corruption is made
here, so the expected differences are known: none before the corrupted layer, some after."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hf_models import hf_model

from jaxinterp.apps.cli import main
from jaxinterp.core.errors import VerifyError
from jaxinterp.loading.verify import verify

CORRUPTED = "model.layers.0.mlp.down_proj.weight"  # the last sublayer of layer 0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``(original_dir, corrupted_dir)``."""
    from safetensors.numpy import load_file, save_file

    _, original = hf_model("llama")
    corrupted = tmp_path_factory.mktemp("verify") / "corrupted"
    shutil.copytree(original, corrupted)
    tensors = load_file(str(corrupted / "model.safetensors"))
    tensors[CORRUPTED] = tensors[CORRUPTED] + np.float32(0.05)
    save_file(tensors, str(corrupted / "model.safetensors"), metadata={"format": "pt"})
    return original, str(corrupted)


def test_verify_passes_on_a_faithful_checkpoint(checkpoints, capsys):
    original, _ = checkpoints
    assert main(["verify", original]) == 0
    out = capsys.readouterr().out
    assert "max |logit diff|" in out and "top-token agreement:  100.0%" in out and out.rstrip().endswith("PASS")


def test_verify_fails_and_localises_a_corrupted_tensor(checkpoints, capsys):
    original, corrupted = checkpoints
    assert main(["verify", corrupted, "--reference", original]) == 1
    assert capsys.readouterr().out.rstrip().endswith("FAIL")
    report = verify(corrupted, original)
    assert not report.passed and report.max_logit_diff > 1e-3
    # Layer 0's input is untouched; the stream entering layer 1 carries the corrupted MLP's output.
    assert report.layer_diffs[0] < 1e-6 < 1e-3 < report.layer_diffs[1]


def test_verify_arguments_are_checked(checkpoints):
    original, _ = checkpoints
    with pytest.raises(VerifyError, match="tol"):
        verify(original, tol=0)
    with pytest.raises(VerifyError, match="prompts"):
        verify(original, prompts=[])
