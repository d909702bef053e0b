"""Space and time (Gurnee & Tegmark 2024, "Language Models Represent Space and Time"):
ridge probes read latitude, longitude or a year from the residual stream of place and
person names, layer by layer (`jaxinterp.features.probes.train_probes` with
``kind="regression"``). Here: the causal check the paper's probes invite, the probe's
direction used as a steering vector. If the model *uses* the direction, adding it at one
layer moves what a probe at a later layer reads.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from jaxinterp.features.activations import collect_activations
from jaxinterp.features.probes import ProbeResult

__all__ = ["steering_vector", "steer_and_read"]


def steering_vector(result: ProbeResult, layer: int) -> np.ndarray:
    """``[d_model]`` the vector that moves layer ``layer``'s probe output by exactly 1
    target unit (e.g. one degree): ``w / |w|^2`` with ``w`` the probe's raw-space weights."""
    w = np.asarray(result.layer(layer).direction()[:, 0], np.float64)
    return (w / (w @ w)).astype(np.float32)


def steer_and_read(
    model,
    tokenizer,
    prompts: Sequence[str],
    result: ProbeResult,
    layer: int,
    read_layers: Sequence[int],
    shifts: Sequence[float],
    site: str = "resid_post",
    position="last",
    batch_size: int = 32,
) -> np.ndarray:
    """Mean probe readout at ``read_layers`` after adding ``shift * steering_vector`` to
    ``site`` at ``layer`` (every position), for each shift in target units.

    Returns ``[n_shift, n_read]``: the mean over prompts of each read layer's probe
    prediction. A slope near 1 at ``layer`` itself is by construction; the question is
    whether later layers follow."""
    v = jnp.asarray(steering_vector(result, layer))
    reads = []
    for s in shifts:
        acts = collect_activations(
            model,
            tokenizer,
            prompts,
            site,
            position,
            batch_size=batch_size,
            interventions=[ji.Add(site, s * v, layer=layer)],
        ).acts
        preds = [np.asarray(result.layer(r).predict(jnp.asarray(acts[r]))).mean() for r in read_layers]
        reads.append(preds)
    return np.asarray(reads)
