"""Vision transformers: a patch-embedding front end on the generic `Transformer`.

A ViT is the library's `Transformer` (bidirectional, ``positional="none"``, no
unembedding, final LayerNorm) run from a residual stream that `PatchEmbed` builds from an
image: non-overlapping ``patch x patch`` patches projected to ``d_model`` (the patch
convolution written as one matmul), a class token in front, and learned position
embeddings added. Every TransformerLens site of the blocks (``blocks.6.mlp.post``,
``resid_post``, ``attn.pattern``, ...) works on images, so patching, probing and the
interventions apply unchanged. Position 0 is the class token, positions ``1..`` the
patches in row-major order.
"""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core.errors import ConfigError
from ..core.readout import ALL
from .cache import ActivationCache
from .transformer import Transformer


def cubic_resize_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """``[n_out, n_in]`` weights of 1-D cubic interpolation (Keys kernel with coefficient
    ``a``; -0.75 as PyTorch's ``bicubic`` and ONNX ``Resize`` with ``cubic_coeff_a=-0.75``),
    half-pixel coordinates, indices clamped at the border (``exclude_outside=0``)."""

    def kernel(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    m = np.zeros((n_out, n_in), np.float64)
    scale = n_out / n_in
    for i in range(n_out):
        x = (i + 0.5) / scale - 0.5
        x0 = int(np.floor(x))
        for k in range(x0 - 1, x0 + 3):
            m[i, min(max(k, 0), n_in - 1)] += kernel(x - k)
    return m


class PatchEmbed(eqx.Module):
    """Image ``[3, H, W]`` -> initial residual stream ``[1 + n_patches, d_model]``.

    ``pos_patch`` is stored on the checkpoint's own grid (DINOv2: 37 x 37, trained at 518
    pixels) and resized bicubically to the image's grid ``(H / patch, W / patch)`` at
    trace time, as DINOv2's ``interpolate_pos_encoding`` does (224 pixels: 16 x 16).
    """

    W_patch: Float[Array, "d_model channel patch_h patch_w"]
    b_patch: Float[Array, " d_model"]
    cls_token: Float[Array, " d_model"]
    pos_cls: Float[Array, " d_model"]
    pos_patch: Float[Array, "grid_h grid_w d_model"]
    patch_size: int = eqx.field(static=True)

    def __check_init__(self):
        d, c, ph, pw = self.W_patch.shape
        if ph != self.patch_size or pw != self.patch_size:
            raise ConfigError(f"W_patch has patch {ph}x{pw}, expected patch_size={self.patch_size}")
        for name in ("b_patch", "cls_token", "pos_cls"):
            if getattr(self, name).shape != (d,):
                raise ConfigError(f"{name} has shape {getattr(self, name).shape}, expected ({d},)")
        if self.pos_patch.ndim != 3 or self.pos_patch.shape[-1] != d:
            raise ConfigError(f"pos_patch has shape {self.pos_patch.shape}, expected [grid_h, grid_w, {d}]")

    def position_embeddings(self, grid_h: int, grid_w: int) -> Float[Array, "n_patches d_model"]:
        """The patch position embeddings resized to a ``grid_h x grid_w`` grid."""
        gh, gw, d = self.pos_patch.shape
        pos = self.pos_patch
        if (gh, gw) != (grid_h, grid_w):
            rows = jnp.asarray(cubic_resize_matrix(gh, grid_h), pos.dtype)
            cols = jnp.asarray(cubic_resize_matrix(gw, grid_w), pos.dtype)
            pos = jnp.einsum("ih,hwd,jw->ijd", rows, pos, cols)
        return pos.reshape(grid_h * grid_w, d)

    def __call__(self, image: Float[Array, "channel height width"]) -> Float[Array, "pos d_model"]:
        c, h, w = image.shape
        p = self.patch_size
        if c != self.W_patch.shape[1] or h % p or w % p:
            raise ConfigError(
                f"image has shape {image.shape}, expected [{self.W_patch.shape[1]}, H, W] with H, W multiples of {p}"
            )
        gh, gw = h // p, w // p
        # The stride-p convolution is a matmul over flattened patches [n, c * p * p].
        patches = image.reshape(c, gh, p, gw, p).transpose(1, 3, 0, 2, 4).reshape(gh * gw, c * p * p)
        tokens = patches @ self.W_patch.reshape(self.W_patch.shape[0], -1).T + self.b_patch
        tokens = tokens + self.position_embeddings(gh, gw)
        cls = (self.cls_token + self.pos_cls)[None]
        return jnp.concatenate([cls, tokens], axis=0)


class VisionTransformer(eqx.Module):
    """`PatchEmbed` + the generic `Transformer` (its ``cfg`` must be bidirectional, with
    ``positional="none"`` and ``has_unembed=False``). One image at a time; `jax.vmap`
    batches."""

    patch_embed: PatchEmbed
    transformer: Transformer

    def __check_init__(self):
        cfg = self.transformer.cfg
        if cfg.causal or cfg.positional != "none" or cfg.has_unembed:
            raise ConfigError(
                "a ViT's transformer needs causal=False, positional='none' and has_unembed=False; got "
                f"causal={cfg.causal}, positional={cfg.positional!r}, has_unembed={cfg.has_unembed}"
            )

    @property
    def cfg(self):
        return self.transformer.cfg

    def run(
        self,
        image: Float[Array, "channel height width"],
        interventions=None,
        *,
        layers: tuple[int, Optional[int]] = (0, None),
        cache: frozenset = frozenset(),
    ):
        """`Transformer.run` from the image's embedded residual stream: ``(out, cache dict)``,
        ``out`` the final hidden state (after ``ln_final``) when every layer runs, else the
        residual stream after layer ``layers[1] - 1``. Un-jitted, for use inside jit/grad."""
        resid = self.patch_embed(image)
        if layers[0] != 0:
            raise ConfigError(f"layers must start at 0 for an image (the patch embedding), got {layers}")
        return self.transformer.run(resid, interventions, layers=layers, cache=cache, readout=ALL)

    def __call__(self, image: Float[Array, "channel height width"], interventions=None) -> Float[Array, "pos d_model"]:
        """Final hidden states ``[1 + n_patches, d_model]`` (class token first)."""
        return self.run(image, interventions)[0]

    def run_with_cache(
        self, image: Float[Array, "channel height width"], names=None, interventions=None
    ) -> tuple[Float[Array, "pos d_model"], ActivationCache]:
        """Final hidden states and an `ActivationCache` of the blocks' sites (``names`` as in
        `Transformer.run_with_cache`)."""
        out, cache = eqx.filter_jit(_run)(self, image, interventions, self.transformer.resolve_names(names))
        return out, ActivationCache(cache, self.cfg, batched=False)


def _run(model: VisionTransformer, image, interventions, names):
    return model.run(image, interventions, cache=names)
