"""What a trained toy model of superposition stores, read off ``W [d_hidden, n_features]``.

Column ``W_i`` is feature ``i``'s direction; ``W_hat_i = W_i / ||W_i||``. After Elhage et
al. 2022:

- `gram`: ``W^T W [n_features, n_features]`` (the paper's heatmaps): diagonal ~1 for
  represented features, off-diagonal entries are interference;
- `feature_norms`: ``||W_i||`` (~1 represented, ~0 not);
- `superposition`: ``sum_{j != i} (W_hat_i . W_j)^2``, how much other features project
  onto feature ``i``'s direction (0 for a dedicated, orthogonal feature);
- `feature_dimensionality`: ``D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2``, the fraction
  of a dimension feature ``i`` gets (1 dedicated, 1/2 antipodal pair, 2/5 pentagon, 0 not
  represented);
- `dimensions_per_feature`: ``d_hidden / ||W||_F^2`` (the paper's ``D*``).

All accept leading batch axes (``[..., d_hidden, n_features]``), e.g. a stack of models
from `train_tms`.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["gram", "feature_norms", "superposition", "feature_dimensionality", "dimensions_per_feature"]

_EPS = 1e-12


def gram(W: Float[Array, "... d_hidden n_features"]) -> Float[Array, "... n_features n_features"]:
    """``W^T W``: entry ``(i, j)`` is ``W_i . W_j``."""
    return jnp.swapaxes(W, -1, -2) @ W


def feature_norms(W: Float[Array, "... d_hidden n_features"]) -> Float[Array, "... n_features"]:
    """``||W_i||`` for every feature."""
    return jnp.linalg.norm(W, axis=-2)


def _projections_sq(W):
    """``(W_hat_i . W_j)^2`` as ``[..., i, j]`` (zero rows for zero-norm features)."""
    norms = feature_norms(W)
    W_hat = W / jnp.maximum(norms, _EPS)[..., None, :]
    return (jnp.swapaxes(W_hat, -1, -2) @ W) ** 2


def superposition(W: Float[Array, "... d_hidden n_features"]) -> Float[Array, "... n_features"]:
    """``sum_{j != i} (W_hat_i . W_j)^2`` per feature ``i``."""
    proj = _projections_sq(W)
    return proj.sum(-1) - jnp.diagonal(proj, axis1=-2, axis2=-1)


def feature_dimensionality(W: Float[Array, "... d_hidden n_features"]) -> Float[Array, "... n_features"]:
    """``D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2`` (the ``j = i`` term is ``||W_i||^2``,
    so ``D_i`` is in ``[0, 1]``); 0 for a feature with ``W_i = 0``."""
    norms_sq = feature_norms(W) ** 2
    return norms_sq / jnp.maximum(_projections_sq(W).sum(-1), _EPS)


def dimensions_per_feature(W: Float[Array, "... d_hidden n_features"]) -> Float[Array, "..."]:
    """``D* = d_hidden / ||W||_F^2``: hidden dimensions per (fully) represented feature."""
    return W.shape[-2] / jnp.sum(W**2, axis=(-2, -1))
