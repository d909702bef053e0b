"""SAEs and transcoders spliced into a model, as interventions.

`splice` returns a ``ji.Fn`` at the SAE's target site and layer whose ``args`` carry the
SAE and the feature edits, so the spliced run is traced, vmapped and differentiated like
any intervention::

    logits = model(tokens, [splice(sae)])                        # SAE reconstruction in place
    logits = model(tokens, [splice(sae, error=True)])            # + error term: the original run
    iv = splice(sae, error=True, feature_delta=d)                # d [pos, d_sae] added to features
    iv = splice(sae, error=True, feature_scale=s)                # s [d_sae] (0 ablates a feature)

With ``error=True`` the output is ``decode(edited f) + (x - sae(x))``: without edits it
is the original activation (up to float rounding), and every edit acts through the
SAE's decoder alone. ``d metric / d feature_delta`` at zero is the gradient with
respect to the feature activations: attribution to SAE features (`feature_attribution`).

Transcoders read their input at another site (``ln2.normalized``) than the one they
write (``mlp_out``); an intervention only sees the activation at its own site, so the
input is passed in as ``inputs`` (from a first pass: `transcoder_inputs`). That is exact
when nothing before the transcoder's layer is edited in the second pass.
"""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

import jaxinterp as ji

from .errors import SAEError
from .modules import SAE

__all__ = ["splice", "SpliceArgs", "transcoder_inputs", "spliced_forward"]


class SpliceArgs(eqx.Module):
    """The ``args`` of a splice's ``ji.Fn``: the SAE, the feature edits, and (for a
    transcoder) its input activations ``[pos, d_in]``."""

    sae: SAE
    feature_delta: Optional[Float[Array, "... d_sae"]]
    feature_scale: Optional[Float[Array, "... d_sae"]]
    inputs: Optional[Float[Array, "pos d_in"]]
    error: bool = eqx.field(static=True)


def _spliced(x: Float[Array, "pos d_out"], args: SpliceArgs) -> Float[Array, "pos d_out"]:
    sae = args.sae
    source = x if args.inputs is None else args.inputs
    acts = sae.encode(source)
    edited = acts
    if args.feature_scale is not None:
        edited = edited * args.feature_scale
    if args.feature_delta is not None:
        edited = edited + args.feature_delta
    if args.error:
        # decode(edited) + (x - decode(acts)), rearranged: with no edit the change is
        # exactly zero, where the literal sum rounds at the residual's scale (norms ~150
        # in SmolLM2: logits then drift by ~5e-5).
        return (x + (edited - acts) @ sae.W_dec).astype(x.dtype)
    return sae.decode(edited).astype(x.dtype)


def splice(
    sae: SAE,
    *,
    error: bool = False,
    feature_delta=None,
    feature_scale=None,
    inputs=None,
    pos=None,
) -> ji.Fn:
    """A ``ji.Fn`` that replaces the activation at ``sae.cfg.target`` of layer
    ``sae.cfg.layer`` with the SAE's reconstruction (``error=True``: plus the error term).

    ``feature_delta`` (``[d_sae]`` or ``[pos, d_sae]``) is added to and ``feature_scale``
    multiplies the feature activations before decoding (steering / ablation through the
    SAE). ``inputs``: a transcoder's input activations ``[pos, d_in]`` (required for
    transcoders, see `transcoder_inputs`). ``pos``: restrict the splice to positions.
    """
    if not isinstance(sae, SAE):
        raise SAEError(f"splice needs an SAE, got {type(sae).__name__}")
    if sae.cfg.is_transcoder and inputs is None:
        raise SAEError(
            f"a transcoder reads {sae.cfg.site!r} and writes {sae.cfg.target!r}: pass inputs= (its input "
            "activations [pos, d_in], e.g. from transcoder_inputs)"
        )
    if not sae.cfg.is_transcoder and inputs is not None:
        raise SAEError("inputs= is for transcoders; an autoencoder reads the activation it replaces")
    args = SpliceArgs(
        sae,
        None if feature_delta is None else jnp.asarray(feature_delta),
        None if feature_scale is None else jnp.asarray(feature_scale),
        None if inputs is None else jnp.asarray(inputs),
        bool(error),
    )
    return ji.Fn(sae.cfg.target, _spliced, args, layer=sae.cfg.layer, pos=pos)


def transcoder_inputs(model, sae: SAE, tokens: Int[Array, " pos"], interventions=()) -> Float[Array, "pos d_in"]:
    """One example's activations at the SAE's input site and layer (no jit; for use in
    your own jit/vmap/grad). Interventions at earlier layers go in ``interventions``."""
    _, cache = model.forward(tokens, list(interventions), frozenset({_short(model, sae.cfg.site)}))
    return cache[_short(model, sae.cfg.site)][sae.cfg.layer]


def _short(model, site: str) -> str:
    return next(iter(model.resolve_names([site])))


def spliced_forward(
    model,
    sae: SAE,
    tokens: Int[Array, " pos"],
    *,
    error: bool = False,
    feature_delta=None,
    feature_scale=None,
    interventions=(),
) -> Float[Array, "pos d_vocab"]:
    """Logits of one example with ``sae`` spliced in (``interventions`` applied first),
    for transcoders and autoencoders alike (no jit: compose it under your own)."""
    inputs = transcoder_inputs(model, sae, tokens, interventions) if sae.cfg.is_transcoder else None
    iv = splice(sae, error=error, feature_delta=feature_delta, feature_scale=feature_scale, inputs=inputs)
    logits, _ = model.forward(tokens, [*interventions, iv])
    return logits
