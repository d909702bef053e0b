"""Every example script runs end to end in its quick mode (``JAXINTERP_QUICK=1``: the
first layers of the real model, small budgets), so a public example cannot rot. Each runs
in a fresh process in a temporary directory (its ``out/`` figures land there)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Scripts another test runs in full already (not twice in CI), with the test that does.
COVERED_ELSEWHERE = {"multihost_sweep.py": "tests/test_multihost.py (its launch() against reference())"}
EXAMPLES = sorted(
    f
    for f in os.listdir(os.path.join(ROOT, "examples"))
    if f.endswith(".py") and not f.startswith("_") and f not in COVERED_ELSEWHERE
)


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs_in_quick_mode(script, tmp_path):
    (tmp_path / "out").mkdir()
    env = {
        **os.environ,
        "JAXINTERP_QUICK": "1",
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script} printed nothing"
