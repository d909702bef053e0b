"""The data of feature dashboards (rendered by `jaxinterp.viz.sae_dashboard`).

For each feature: its top-activating contexts (a window of tokens around the maximum,
with every token's activation), a histogram of its nonzero activations, its firing
rate, and the tokens whose logits its decoder direction promotes and suppresses most:
``W_dec[i] @ W_U`` (the direct path to the logits, ignoring the final norm's scale).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .errors import SAEError
from .modules import SAE
from .splice import _short

__all__ = ["FeatureDashboard", "TopContext", "feature_dashboards", "all_feature_acts"]


class TopContext(NamedTuple):
    """One top-activating example: token strings of the window, each token's activation,
    the index in the window of the maximum, and the context/position it came from."""

    tokens: list
    acts: list
    highlight: int
    context: int
    pos: int


class FeatureDashboard(NamedTuple):
    """Everything one feature's dashboard shows (plain Python numbers)."""

    feature: int
    firing_rate: float
    max_act: float
    top_contexts: list
    hist_counts: list
    hist_edges: list
    promoted: list
    suppressed: list


@eqx.filter_jit
def _acts(model, sae: SAE, tokens: Int[Array, "batch pos"], name: str):
    def one(t):
        _, cache = model.forward(t, None, frozenset({name}))
        return sae.encode(cache[name][sae.cfg.layer])

    return jax.vmap(one)(tokens)


def all_feature_acts(model, sae: SAE, contexts, batch: int = 8) -> Float[np.ndarray, "context pos d_sae"]:
    """Feature activations over ``contexts [n, pos]`` (numpy, float32)."""
    contexts = np.asarray(contexts)
    name = _short(model, sae.cfg.site)
    return np.concatenate(
        [
            np.asarray(_acts(model, sae, jnp.asarray(contexts[s : s + batch]), name))
            for s in range(0, len(contexts), batch)
        ]
    )


def feature_dashboards(
    model,
    sae: SAE,
    contexts,
    tokenizer,
    features: Sequence[int],
    *,
    acts: Optional[np.ndarray] = None,
    n_top: int = 8,
    window: tuple[int, int] = (10, 4),
    n_logits: int = 10,
    bins: int = 30,
    skip_first: bool = True,
) -> list[FeatureDashboard]:
    """Dashboards of ``features`` over ``contexts [n, pos]``.

    ``acts``: precomputed `all_feature_acts` (else computed). ``window``: tokens shown
    before and after the maximum. ``skip_first``: ignore position 0 (BOS) when ranking.
    Token strings come from ``tokenizer.decode([id])``.
    """
    contexts = np.asarray(contexts)
    if acts is None:
        acts = all_feature_acts(model, sae, contexts)
    if acts.shape[:2] != contexts.shape or acts.shape[2] != sae.cfg.d_sae:
        raise SAEError(f"acts has shape {acts.shape}, expected {contexts.shape + (sae.cfg.d_sae,)}")
    first = 1 if skip_first else 0
    body = acts[:, first:]
    logit_effect = np.asarray(sae.W_dec @ model.unembed.W_U)  # [d_sae, d_vocab]
    decode = lambda i: tokenizer.decode([int(i)])
    out = []
    for f in features:
        f = int(f)
        if not 0 <= f < sae.cfg.d_sae:
            raise SAEError(f"feature {f} is out of range [0, {sae.cfg.d_sae})")
        a = body[..., f]
        flat = a.reshape(-1)
        order = np.argsort(-flat, kind="stable")[:n_top]
        tops = []
        for idx in order:
            if flat[idx] <= 0:
                break
            c, p = divmod(int(idx), a.shape[1])
            p += first
            lo, hi = max(0, p - window[0]), min(contexts.shape[1], p + window[1] + 1)
            tops.append(
                TopContext([decode(t) for t in contexts[c, lo:hi]], [float(v) for v in acts[c, lo:hi, f]], p - lo, c, p)
            )
        nonzero = flat[flat > 0]
        counts, edges = (
            np.histogram(nonzero, bins=bins) if nonzero.size else (np.zeros(bins, int), np.linspace(0, 1, bins + 1))
        )
        eff = logit_effect[f]
        up = np.argsort(-eff, kind="stable")[:n_logits]
        down = np.argsort(eff, kind="stable")[:n_logits]
        out.append(
            FeatureDashboard(
                feature=f,
                firing_rate=float((flat > 0).mean()),
                max_act=float(flat.max(initial=0.0)),
                top_contexts=tops,
                hist_counts=[int(x) for x in counts],
                hist_edges=[float(x) for x in edges],
                promoted=[(decode(i), float(eff[i])) for i in up],
                suppressed=[(decode(i), float(eff[i])) for i in down],
            )
        )
    return out
