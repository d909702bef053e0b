r"""The phase diagram of 2 features in 1 hidden neuron (Elhage et al. 2022, "Phase Change").

Feature 1 has importance 1, the extra feature 2 importance ``r``; both have density
``p = 1 - S``. A ReLU-output model with one neuron, ``x' = ReLU(W^T W x + b)`` and
``W = (w_1, w_2)``, can do one of three things with the extra feature:

* **not represented** (``w_2 ~ 0``, feature 1 keeps the neuron),
* **dedicated** (feature 2 takes the neuron, ``w_1 ~ 0``),
* **superposition** (both stored, antipodally: ``w_1 ~ 1``, ``w_2 ~ -1``).

`classify_phase` reads which one a trained ``W`` does; `train_phase_diagram` trains a grid
of (r, p) in one compiled call (`train_tms`) and classifies the best seed per cell.

**Analytic boundaries** (`analytic_losses`, `analytic_phase`). With ``x_i = 0`` w.p. ``S``
else ``U[0, 1]``: ``E[x_i] = p/2``, ``E[x_i^2] = p/3``, so ``Var x_i = p/3 - p^2/4``.

* Not represented: ``w = (1, 0)``, ``b = (0, p/2)``. Feature 1 is copied exactly (``x_1
  >= 0``); feature 2 is predicted by its mean, the best constant:
  ``L_A = r (p/3 - p^2/4)``.
* Dedicated: ``w = (0, 1)``, ``b = (p/2, 0)``, by symmetry ``L_B = p/3 - p^2/4``.
* Superposition: ``w = (1, -1)``, ``b = 0``. When one feature is active alone the ReLU
  removes the negative interference and the output is exact. Both are active with
  probability ``p^2``; then the larger one comes out as ``max - min`` and the smaller as
  0, so both errors are ``min(x_1, x_2)^2``, and ``E[min(U, V)^2] = 1/6``:
  ``L_C = (1 + r) p^2 / 6``.

The phase is the configuration of least loss. ``L_A < L_B`` iff ``r < 1``. ``L_C < L_A``
iff ``r > 2p / (4 - 5p)``, and ``L_C < L_B`` iff ``r < 2/p - 5/2``; the three curves meet at
``r = 1, p = 4/7``. So superposition needs ``p < 4/7`` and fills the wedge between
``r = 2p/(4 - 5p)`` and ``r = 2/p - 5/2``, which widens as features get sparser, as in the
paper's figure. ``L_C`` is the loss of one superposition configuration, not of the best
one (a negative bias and other norms lower it further), so the trained models superpose
in at least this wedge; their boundary lies outside it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxinterp.toy.superposition import TMSError, tms_grid, train_tms
from jaxinterp.toy.superposition_metrics import feature_norms

__all__ = [
    "PHASES",
    "NOT_REPRESENTED",
    "DEDICATED",
    "SUPERPOSITION",
    "classify_phase",
    "analytic_losses",
    "analytic_phase",
    "analytic_boundaries",
    "PhaseDiagram",
    "train_phase_diagram",
]

NOT_REPRESENTED, DEDICATED, SUPERPOSITION = 0, 1, 2
PHASES = ("not represented", "dedicated", "superposition")


def classify_phase(W: Float[Array, "... 1 2"], threshold: float = 0.5) -> Int[Array, "..."]:
    """What a 1-neuron, 2-feature model does with feature 2 (index 1): `NOT_REPRESENTED`
    (``||W_2|| < threshold``), `DEDICATED` (``||W_2|| >= threshold > ||W_1||``) or
    `SUPERPOSITION` (both norms ``>= threshold``)."""
    if W.shape[-2:] != (1, 2):
        raise TMSError(f"classify_phase reads W [..., 1, 2] (1 neuron, 2 features), got {W.shape}")
    norms = feature_norms(W)
    first, extra = norms[..., 0] >= threshold, norms[..., 1] >= threshold
    return jnp.where(extra, jnp.where(first, SUPERPOSITION, DEDICATED), NOT_REPRESENTED)


def analytic_losses(relative_importance, density) -> Float[np.ndarray, "... 3"]:
    """``[L_A, L_B, L_C]`` (not represented, dedicated, superposition; see the module
    docstring) for arrays of ``r`` and ``p`` (broadcast)."""
    r, p = np.broadcast_arrays(np.asarray(relative_importance, float), np.asarray(density, float))
    var = p / 3 - p**2 / 4
    return np.stack([r * var, var, (1 + r) * p**2 / 6], axis=-1)


def analytic_phase(relative_importance, density) -> Int[np.ndarray, "..."]:
    """The least-loss configuration of `analytic_losses`: 0, 1 or 2 as in `PHASES`."""
    return np.argmin(analytic_losses(relative_importance, density), axis=-1)


def analytic_boundaries(density: Float[np.ndarray, " n"]) -> dict[str, Float[np.ndarray, " n"]]:
    """The phase boundaries as ``r(p)`` curves: ``"not represented | superposition"``
    ``2p/(4-5p)`` and ``"dedicated | superposition"`` ``2/p - 5/2`` (NaN for ``p >= 4/7``),
    ``"not represented | dedicated"`` ``r = 1`` (NaN for ``p < 4/7``)."""
    p = np.asarray(density, float)
    below = p < 4 / 7
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "not represented | superposition": np.where(below, 2 * p / (4 - 5 * p), np.nan),
            "dedicated | superposition": np.where(below, 2 / p - 2.5, np.nan),
            "not represented | dedicated": np.where(below, np.nan, 1.0),
        }


class PhaseDiagram(NamedTuple):
    """A trained phase diagram over ``density [n_density]`` x ``relative_importance
    [n_importance]``: ``W [n_density, n_importance, 1, 2]`` of the best seed per cell (least
    eval loss), its ``phase`` (`classify_phase`), the ``analytic`` phase and ``eval_loss``."""

    relative_importance: Float[np.ndarray, " n_importance"]
    density: Float[np.ndarray, " n_density"]
    W: Float[np.ndarray, "n_density n_importance 1 2"]
    phase: Int[np.ndarray, "n_density n_importance"]
    analytic: Int[np.ndarray, "n_density n_importance"]
    eval_loss: Float[np.ndarray, "n_density n_importance"]

    def agreement(self) -> float:
        """Fraction of cells where the trained and the analytic phase agree."""
        return float(np.mean(self.phase == self.analytic))


def train_phase_diagram(
    key: PRNGKeyArray,
    relative_importance: Sequence[float],
    density: Sequence[float],
    n_seeds: int = 3,
    steps: int = 4000,
    batch_size: int = 1024,
    learning_rate: float = 1e-2,
    threshold: float = 0.5,
) -> PhaseDiagram:
    """Train 1-neuron, 2-feature ReLU models for every (density, relative importance,
    seed) in one compiled `train_tms` call, keep the best seed per cell and classify it."""
    r = np.asarray(relative_importance, np.float32)
    p = np.asarray(density, np.float32)
    if np.any(p <= 0) or np.any(p > 1) or np.any(r <= 0):
        raise TMSError("train_phase_diagram needs densities in (0, 1] and positive relative importances")
    importances = np.stack([np.ones_like(r), r], axis=1)  # [n_importance, 2]
    keys, sparsity, importance = tms_grid(key, 1.0 - p, importances, n_seeds)
    run = train_tms(
        keys, sparsity, importance, d_hidden=1, steps=steps, batch_size=batch_size, learning_rate=learning_rate
    )
    shape = (len(p), len(r), n_seeds)
    eval_loss = np.asarray(run.eval_loss).reshape(shape)
    best = eval_loss.argmin(-1)
    W = np.asarray(run.models.W).reshape(shape + (1, 2))
    W_best = np.take_along_axis(W, best[..., None, None, None], axis=2)[:, :, 0]
    phase = np.asarray(classify_phase(jnp.asarray(W_best), threshold))
    analytic = analytic_phase(r[None, :], p[:, None])
    return PhaseDiagram(r, p, W_best, phase, analytic, np.take_along_axis(eval_loss, best[..., None], -1)[..., 0])
