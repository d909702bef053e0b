"""Sparse autoencoders and transcoders as Equinox modules.

One abstract base, `SAE`, holds the affine maps; the final variants differ in the
sparse activation and the sparsity penalty:

=================  ==============================================  =====================================
variant            activation of the pre-activation ``z``           sparsity penalty (per token)
=================  ==============================================  =====================================
`ReLUSAE`          ``ReLU(z)``                                      ``sum_i f_i ||W_dec[i]||`` (L1 weighted
                                                                    by decoder norms; Anthropic, April 2024)
`TopKSAE`          ReLU of the ``k`` largest ``z`` per token         none (AuxK for dead latents in training)
`BatchTopKSAE`     ``k * batch`` largest over the batch (training);  none (AuxK)
                   ``z * 1[z > threshold]`` per token (inference)
`JumpReLUSAE`      ``z * H(z - theta)`` (straight-through grads)     ``sum_i H(z_i - theta_i)`` (L0, STE)
=================  ==============================================  =====================================

Every variant is an autoencoder or a transcoder: the config's ``target_site`` says what
the decoder reconstructs (see `SAEConfig`). The forward pass is

    z = (x - b_dec [if apply_b_dec_to_input]) @ W_enc + b_enc       [..., d_sae]
    f = activation(z);   x_hat = f @ W_dec + b_dec                   [..., d_out]
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .config import SAEConfig
from .errors import SAEError
from .ops import batch_topk_relu, jumprelu, step, topk_relu

__all__ = ["SAE", "ReLUSAE", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE", "VARIANTS", "init_sae"]


class SAE(eqx.Module):
    """Abstract sparse autoencoder / transcoder over one activation vector ``[..., d_in]``.

    Fields: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]`` (row i is
    latent i's decoder direction), ``b_dec [d_out]``, ``cfg`` (static `SAEConfig`).
    """

    W_enc: Float[Array, "d_in d_sae"]
    b_enc: Float[Array, " d_sae"]
    W_dec: Float[Array, "d_sae d_out"]
    b_dec: Float[Array, " d_out"]
    cfg: SAEConfig = eqx.field(static=True)

    kind: ClassVar[str] = ""

    def __check_init__(self):
        c = self.cfg
        want = {"W_enc": (c.d_in, c.d_sae), "b_enc": (c.d_sae,), "W_dec": (c.d_sae, c.out_dim), "b_dec": (c.out_dim,)}
        for name, shape in want.items():
            got = getattr(self, name).shape
            if got != shape:
                raise SAEError(
                    f"{type(self).__name__}.{name} has shape {got}, expected {shape} (d_in={c.d_in}, d_sae={c.d_sae}, d_out={c.out_dim})"
                )

    # ---------------------------------------------------------------- forward pass

    def pre_acts(self, x: Float[Array, "... d_in"]) -> Float[Array, "... d_sae"]:
        """Encoder pre-activations ``z``."""
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    @abc.abstractmethod
    def activation(self, pre: Float[Array, "... d_sae"]) -> Float[Array, "... d_sae"]:
        """Latent activations from pre-activations, per token (inference)."""

    def train_activation(self, pre: Float[Array, "batch d_sae"]) -> Float[Array, "batch d_sae"]:
        """Latent activations of a training batch (BatchTopK differs from `activation`)."""
        return self.activation(pre)

    @abc.abstractmethod
    def sparsity(self, pre: Float[Array, "batch d_sae"], acts: Float[Array, "batch d_sae"]) -> Float[Array, " batch"]:
        """The per-token sparsity penalty the trainer multiplies by its coefficient."""

    def encode(self, x: Float[Array, "... d_in"]) -> Float[Array, "... d_sae"]:
        """Latent (feature) activations ``f``."""
        return self.activation(self.pre_acts(x))

    def decode(self, acts: Float[Array, "... d_sae"]) -> Float[Array, "... d_out"]:
        """Reconstruction ``f @ W_dec + b_dec``."""
        return acts @ self.W_dec + self.b_dec

    def __call__(self, x: Float[Array, "... d_in"]) -> Float[Array, "... d_out"]:
        """Reconstruction of the target from the input."""
        return self.decode(self.encode(x))

    def after_step(self, pre: Float[Array, "batch d_sae"], acts: Float[Array, "batch d_sae"], step: Array) -> "SAE":
        """Non-gradient state updated after training step ``step`` (BatchTopK's threshold)."""
        return self

    # ---------------------------------------------------------------- scaling and files

    def fold_scale(self, in_scale: float, out_scale: float) -> "SAE":
        """The SAE for raw activations, from one trained on ``x * in_scale`` with targets
        ``y * out_scale``: latents are divided by ``out_scale`` so decoder rows keep their
        norms (``W_enc *= in_scale / out_scale``, ``b_enc, b_dec, thresholds /= out_scale``).
        Exact: ``new(x) == old(x * in_scale) / out_scale``."""
        r = in_scale / out_scale
        new = eqx.tree_at(
            lambda s: (s.W_enc, s.b_enc, s.b_dec),
            self,
            (self.W_enc * r, self.b_enc / out_scale, self.b_dec / out_scale),
        )
        return new._scale_thresholds(1.0 / out_scale)

    def _scale_thresholds(self, factor: float) -> "SAE":
        return self

    def calibrate(self, pre: Float[Array, "batch d_sae"], target_l0: float) -> "SAE":
        """Set data-dependent initial parameters so that about ``target_l0`` latents fire
        per token on ``pre`` (JumpReLU thresholds; no-op for other variants)."""
        return self

    def finalize(self, x: Float[Array, "n d_in"]) -> "SAE":
        """The SAE ready for inference after training, given input activations ``x``
        (e.g. the training activations; the more tokens the better). BatchTopK sets its
        inference threshold so that exactly ``k`` latents per token fire on ``x`` on
        average (see `BatchTopKSAE.finalize`); the other variants are returned unchanged.
        `train_sae` calls it on its first fill."""
        return self

    def scale_threshold_updates(self, updates: "SAE", factor: float) -> "SAE":
        """Optimizer ``updates`` (a tree shaped like ``self``) with the learned
        thresholds' update multiplied by ``factor`` (JumpReLU; a no-op for the others).
        `TrainConfig.threshold_lr_scale` uses it."""
        return updates

    def hyperparameters(self) -> dict:
        """Variant settings that are not arrays (saved in the JSON config)."""
        return {}

    def arrays(self) -> dict[str, Array]:
        """Named arrays for saving (SAELens names: W_enc, b_enc, W_dec, b_dec, threshold)."""
        return {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}

    def decoder_norms(self) -> Float[Array, " d_sae"]:
        return jnp.linalg.norm(self.W_dec, axis=-1)


class ReLUSAE(SAE):
    """ReLU SAE with the decoder-norm-weighted L1 penalty ``sum_i f_i ||W_dec[i]||``
    (Anthropic, "Towards Monosemanticity" and its April 2024 training update), so
    shrinking a decoder row cannot buy a smaller penalty."""

    kind: ClassVar[str] = "relu"

    def activation(self, pre):
        return jax.nn.relu(pre)

    def sparsity(self, pre, acts):
        return acts @ self.decoder_norms()


class TopKSAE(SAE):
    """TopK SAE (Gao et al. 2024): the ``k`` largest pre-activations per token, ReLU'd."""

    k: int = eqx.field(static=True)
    kind: ClassVar[str] = "topk"

    def __check_init__(self):
        if not 0 < self.k <= self.cfg.d_sae:
            raise SAEError(f"TopKSAE k must be in [1, d_sae={self.cfg.d_sae}], got {self.k}")

    def activation(self, pre):
        return topk_relu(pre, self.k)

    def sparsity(self, pre, acts):
        return jnp.zeros(pre.shape[:-1], pre.dtype)

    def hyperparameters(self):
        return {"k": self.k}


class BatchTopKSAE(SAE):
    """BatchTopK SAE (Bussmann et al. 2024): training keeps the ``k * batch`` largest
    pre-activations of the batch; inference keeps ``z > threshold`` per token, with the
    threshold the running mean of each batch's smallest kept activation during training,
    then calibrated on training activations by `finalize` (which `train_sae` calls) so
    that the inference L0 is ``k``."""

    threshold: Float[Array, ""]
    k: int = eqx.field(static=True)
    momentum: float = eqx.field(static=True, default=0.01)
    kind: ClassVar[str] = "batchtopk"

    def __check_init__(self):
        if not 0 < self.k <= self.cfg.d_sae:
            raise SAEError(f"BatchTopKSAE k must be in [1, d_sae={self.cfg.d_sae}], got {self.k}")

    def activation(self, pre):
        return jnp.where(pre > self.threshold, jax.nn.relu(pre), 0.0)

    def train_activation(self, pre):
        return batch_topk_relu(pre, self.k)

    def sparsity(self, pre, acts):
        return jnp.zeros(pre.shape[:-1], pre.dtype)

    def after_step(self, pre, acts, step):
        kept_min = jnp.min(jnp.where(acts > 0, acts, jnp.inf))
        kept_min = jnp.where(jnp.isfinite(kept_min), kept_min, self.threshold)
        # A plain running mean for the first 1/momentum steps, then exponential: early
        # estimates are not dragged towards the arbitrary initial value.
        rate = jnp.maximum(self.momentum, 1.0 / (step + 1.0))
        new = (1 - rate) * self.threshold + rate * jax.lax.stop_gradient(kept_min)
        return eqx.tree_at(lambda s: s.threshold, self, new)

    def _scale_thresholds(self, factor):
        return eqx.tree_at(lambda s: s.threshold, self, self.threshold * factor)

    def finalize(self, x):
        """The SAE with its inference threshold calibrated on inputs ``x [n, d_in]``: the
        midpoint between the ``(k n)``-th and ``(k n + 1)``-th largest positive
        pre-activation over all ``n`` tokens and latents, so ``encode(x)`` keeps exactly
        ``k n`` activations (``k`` per token on average), as the training batches did. The
        running mean kept during training (`after_step`) averages each batch's smallest
        kept value over a changing encoder; alone, it gave an inference L0 of 21.8 for
        ``k = 32`` in a short run (docs/sae.md)."""
        pre = self.pre_acts(jnp.asarray(x, self.W_enc.dtype)).reshape(-1)
        n = x.shape[0] * self.k
        if n >= pre.shape[0]:
            raise SAEError(f"finalize needs more than k={self.k} latents per token; got x of shape {x.shape}")
        top = -jnp.sort(-pre)[: n + 1]
        threshold = jnp.maximum(0.5 * (top[n - 1] + top[n]), 0.0)
        return eqx.tree_at(lambda s: s.threshold, self, threshold.astype(self.threshold.dtype))

    def hyperparameters(self):
        return {"k": self.k, "momentum": self.momentum}

    def arrays(self):
        return {**super().arrays(), "threshold": jnp.broadcast_to(self.threshold, (self.cfg.d_sae,))}


class JumpReLUSAE(SAE):
    """JumpReLU SAE (Rajamanoharan et al. 2024): ``f = z * H(z - theta)`` with a learned
    per-latent threshold ``theta = exp(log_threshold)``, trained with an L0 penalty
    through straight-through estimators of bandwidth ``bandwidth`` (see `ops.jumprelu`)."""

    log_threshold: Float[Array, " d_sae"]
    bandwidth: float = eqx.field(static=True, default=0.001)
    kind: ClassVar[str] = "jumprelu"

    def __check_init__(self):
        if self.log_threshold.shape != (self.cfg.d_sae,):
            raise SAEError(
                f"JumpReLUSAE.log_threshold has shape {self.log_threshold.shape}, expected ({self.cfg.d_sae},)"
            )
        if not self.bandwidth > 0:
            raise SAEError(f"JumpReLUSAE bandwidth must be > 0, got {self.bandwidth}")

    @property
    def threshold(self) -> Float[Array, " d_sae"]:
        return jnp.exp(self.log_threshold)

    def activation(self, pre):
        return jumprelu(pre, self.threshold, self.bandwidth)

    def sparsity(self, pre, acts):
        return step(pre, self.threshold, self.bandwidth).sum(-1)

    def _scale_thresholds(self, factor):
        return eqx.tree_at(lambda s: s.log_threshold, self, self.log_threshold + jnp.log(factor))

    def scale_threshold_updates(self, updates, factor):
        return eqx.tree_at(lambda u: u.log_threshold, updates, updates.log_threshold * factor)

    def calibrate(self, pre, target_l0):
        # Each latent's threshold at the (1 - target_l0 / d_sae) quantile of its own
        # pre-activations, so training starts near the target L0: Adam moves log
        # thresholds by ~lr per step, too slowly to travel far in a short run.
        q = 1.0 - min(max(target_l0 / self.cfg.d_sae, 0.0), 1.0)
        th = jnp.maximum(jnp.quantile(pre, q, axis=0), 1e-3)
        return eqx.tree_at(lambda s: s.log_threshold, self, jnp.log(th))

    def hyperparameters(self):
        return {"bandwidth": self.bandwidth}

    def arrays(self):
        return {**super().arrays(), "threshold": self.threshold}


VARIANTS: dict[str, type] = {c.kind: c for c in (ReLUSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE)}


def init_sae(
    kind: str,
    cfg: SAEConfig,
    key: PRNGKeyArray,
    *,
    decoder_norm: float | None = None,
    threshold: float = 0.001,
    **hyper,
) -> SAE:
    """A freshly initialised SAE of variant ``kind`` (``"relu"``, ``"topk"``,
    ``"batchtopk"``, ``"jumprelu"``).

    Decoder rows are random directions of norm ``decoder_norm`` (default 1; 0.1 for
    ``relu``, as in Anthropic's April 2024 update), the encoder is the decoder's
    transpose (Gao et al.), biases are zero, JumpReLU thresholds start at ``threshold``.
    ``hyper``: ``k`` for the TopK variants, ``bandwidth`` for JumpReLU.
    """
    if kind not in VARIANTS:
        raise SAEError(f"kind must be one of {sorted(VARIANTS)}, got {kind!r}")
    if not isinstance(cfg, SAEConfig):
        raise SAEError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
    if decoder_norm is None:
        decoder_norm = 0.1 if kind == "relu" else 1.0
    w = jax.random.normal(key, (cfg.d_sae, cfg.out_dim), jnp.float32)
    W_dec = decoder_norm * w / jnp.linalg.norm(w, axis=-1, keepdims=True)
    if cfg.out_dim == cfg.d_in:
        W_enc = W_dec.T
    else:
        W_enc = jax.random.normal(jax.random.fold_in(key, 1), (cfg.d_in, cfg.d_sae)) / jnp.sqrt(cfg.d_in)
    base = dict(W_enc=W_enc, b_enc=jnp.zeros(cfg.d_sae), W_dec=W_dec, b_dec=jnp.zeros(cfg.out_dim), cfg=cfg)
    return from_arrays(kind, base, hyper, threshold=threshold)


def from_arrays(kind: str, arrays: dict, hyper: dict, threshold=None) -> SAE:
    """Build variant ``kind`` from ``W_enc, b_enc, W_dec, b_dec, cfg`` (+ ``threshold``
    for JumpReLU / BatchTopK: a scalar or ``[d_sae]``), checking hyperparameter names."""
    cls = VARIANTS.get(kind)
    if cls is None:
        raise SAEError(f"kind must be one of {sorted(VARIANTS)}, got {kind!r}")
    allowed = {"relu": set(), "topk": {"k"}, "batchtopk": {"k", "momentum"}, "jumprelu": {"bandwidth"}}[kind]
    stray = sorted(set(hyper) - allowed)
    if stray:
        raise SAEError(f"{cls.__name__} takes hyperparameters {sorted(allowed) or 'none'}, got {stray}")
    if kind in ("topk", "batchtopk") and "k" not in hyper:
        raise SAEError(f"{cls.__name__} needs k= (latents kept per token)")
    cfg = arrays["cfg"]
    if kind == "jumprelu":
        th = jnp.broadcast_to(jnp.asarray(0.001 if threshold is None else threshold, jnp.float32), (cfg.d_sae,))
        if bool(jnp.any(th <= 0)):
            raise SAEError("JumpReLU thresholds must be > 0 (they are stored as log thresholds)")
        return JumpReLUSAE(**arrays, log_threshold=jnp.log(th), **hyper)
    if kind == "batchtopk":
        th = jnp.asarray(0.0 if threshold is None else threshold, jnp.float32)
        if th.ndim:  # saved per latent (SAELens layout); BatchTopK's threshold is one number
            th = th.reshape(-1)[0]
        return BatchTopKSAE(**arrays, threshold=th, **hyper)
    return cls(**arrays, **hyper)
