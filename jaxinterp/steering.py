"""Steering vectors: directions in the residual stream that, added with `Add`, move the
model's behaviour (activation addition, Turner et al. 2023; contrastive mean
differences, Rimsky et al. 2024)::

    v = steering_vector(model, tok, positive_prompts, negative_prompts, layer=6)
    model(tokens, [jaxinterp.Add("resid_pre", 4.0 * v, layer=6)])

The techniques (ActAdd, CAA, RepE control vectors, layer x coefficient sweeps) live in
`jaxinterp.editing.steering`; this module keeps the original entry point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

from jaxinterp.editing.steering import mean_activation_difference

__all__ = ["steering_vector"]


def steering_vector(model, tokenizer, positive: Sequence[str], negative: Sequence[str], layer: int) -> Float[np.ndarray, " d_model"]:
    """The mean ``resid_pre`` at ``layer`` over the ``positive`` prompts minus that over the
    ``negative`` ones ("activation addition", Turner et al. 2023; mean difference as in
    Rimsky et al. 2024). Each prompt is averaged over its positions after the first:
    the first position's residual is far larger in many models and would dominate.
    A wrapper of `jaxinterp.editing.steering.mean_activation_difference`."""
    return mean_activation_difference(model, tokenizer, positive, negative, layer, "resid_pre")
