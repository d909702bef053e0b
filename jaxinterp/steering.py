"""Steering vectors: directions in the residual stream that, added with `Add`, move the
model's behaviour (activation addition, Turner et al. 2023; contrastive mean
differences, Rimsky et al. 2024)::

    v = steering_vector(model, tok, positive_prompts, negative_prompts, layer=6)
    model(tokens, [jaxinterp.Add("resid_pre", 4.0 * v, layer=6)])
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from .model import Transformer

__all__ = ["steering_vector"]


def steering_vector(model: Transformer, tokenizer, positive: Sequence[str], negative: Sequence[str], layer: int) -> Float[np.ndarray, " d_model"]:
    """The mean ``resid_pre`` at ``layer`` over the ``positive`` prompts minus that over the
    ``negative`` ones ("activation addition", Turner et al. 2023; mean difference as in
    Rimsky et al. 2024). Each prompt is averaged over its positions after the first:
    the first position's residual is far larger in many models and would dominate."""
    site = f"blocks.{layer}.hook_resid_pre"

    def mean_act(texts):
        acts = []
        for text in texts:
            tokens = jnp.asarray(tokenizer.to_tokens(text))
            if tokens.shape[-1] < 2:
                raise ValueError(f"steering prompts need at least 2 tokens (the first is left out); {text!r} has {tokens.shape[-1]}")
            acts.append(np.asarray(model.run_with_cache(tokens, names=[site])[1][site])[1:].mean(0))
        return np.mean(acts, 0)

    return mean_act(positive) - mean_act(negative)
