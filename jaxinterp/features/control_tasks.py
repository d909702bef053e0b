"""Control tasks (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control
Tasks"): give every word *type* a random label and train the same probe on it. A probe
that does well on the control task can memorise types rather than read the property, so
the informative number is the **selectivity** ``task metric - control metric``.

For sentence-level datasets the natural type is the token the probe reads (the id at the
probed position, `jaxinterp.features.activations.Activations.token_ids`): the control
labels are then a random function of that token, learnable exactly as far as the
representation encodes token identity.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from jaxinterp.features.probes import ProbeError, ProbeResult, train_probes

__all__ = ["control_targets", "selectivity"]


def control_targets(types: np.ndarray, targets: np.ndarray, seed: int = 0) -> np.ndarray:
    """One random target per distinct type, drawn from the empirical target distribution
    (class ids or real values), repeated for every example of that type. ``[n]``."""
    types, targets = np.asarray(types), np.asarray(targets)
    if types.shape != targets.shape:
        raise ProbeError(f"types {types.shape} and targets {targets.shape} must both be [n]")
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(types, return_inverse=True)
    draws = targets[rng.integers(0, len(targets), len(uniq))]
    return draws[inverse.reshape(-1)]


def selectivity(acts, targets, types, kind: Optional[str] = None, seed: int = 0, **train_kwargs) -> dict:
    """Train task and control probes on the same splits at every layer.

    Returns ``{"task": ProbeResult, "control": ProbeResult, "selectivity": [layer]}``,
    the last the test-split accuracy (or R^2) of the task minus that of the control.
    """
    task: ProbeResult = train_probes(acts, targets, kind, seed=seed, **train_kwargs)
    control = train_probes(
        acts, control_targets(types, targets, seed), task.kind, seed=seed, splits=task.splits, **train_kwargs
    )
    return {"task": task, "control": control, "selectivity": task.test() - control.test()}
