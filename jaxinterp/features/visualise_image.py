"""Feature visualisation by optimisation for vision transformers (Olah et al. 2017,
"Feature Visualization", Distill).

An image is optimised to maximise an objective (a neuron, an MLP channel, a direction
in the residual stream) under two choices that make the result interpretable rather
than adversarial noise:

* a **decorrelated parameterisation**: the image is the inverse real FFT of a learned
  spectrum scaled by ``1 / frequency`` (so gradient steps move all frequencies at the
  same rate, as natural images' 1/f spectrum would), mapped through the square root of
  ImageNet's colour correlation matrix (Lucid's constants) and a sigmoid into ``[0, 1]``;
* **transformation robustness**: every step scores a randomly jittered, scaled and
  rotated copy (one affine warp, bilinear, reflected borders), so the feature must
  survive small transformations.

The whole optimisation (optax Adam) is one jitted `jax.lax.scan`; objectives are vmapped,
so a batch of neurons is optimised in one compiled program. The model is an argument of
the jitted function, never closed over.
"""

from __future__ import annotations

import math
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ..core.errors import JaxinterpError
from ..core.sites import parse_site
from ..model.vision import VisionTransformer

# sqrt of ImageNet's RGB colour covariance (Lucid, `color_correlation_svd_sqrt`).
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOR_SQRT = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisualisationError(JaxinterpError):
    """A bad objective or optimisation setting (unknown site, unit out of range, ...)."""


class Objective(eqx.Module):
    """Maximise ``mean over positions of act[positions] @ direction`` at ``site`` of
    ``layer``: a neuron or MLP channel is a one-hot ``direction`` on ``mlp.post``
    (``[d_mlp]``), a residual direction a vector on ``resid_post`` (``[d_model]``).
    ``positions``: the patch positions averaged (None: every patch, not the class token)."""

    direction: Float[Array, " d"]
    site: str = eqx.field(static=True)
    layer: int = eqx.field(static=True)
    positions: Optional[tuple] = eqx.field(static=True, default=None)

    def __call__(self, acts: Float[Array, "pos d"]) -> Float[Array, ""]:
        rows = acts[1:] if self.positions is None else acts[np.asarray(self.positions)]
        return jnp.mean(rows @ self.direction)


def _check(model: VisionTransformer, site: str, layer: int, unit: Optional[int] = None, width: Optional[int] = None):
    try:
        parse_site(site, model.cfg)
    except ValueError as e:
        raise VisualisationError(f"site {site!r} is not a site of this model: {e}") from e
    if not 0 <= layer < model.cfg.n_layers:
        raise VisualisationError(f"layer must be in 0..{model.cfg.n_layers - 1}, got {layer}")
    if unit is not None and not 0 <= unit < width:
        raise VisualisationError(f"unit must be in 0..{width - 1} for {site}, got {unit}")


def neuron(model: VisionTransformer, layer: int, unit: int, positions: Optional[tuple] = None) -> Objective:
    """MLP neuron ``unit`` of ``layer`` (``mlp.post``), averaged over ``positions``
    (None: every patch, i.e. the whole channel)."""
    _check(model, "mlp.post", layer, unit, model.cfg.d_mlp)
    return Objective(jax.nn.one_hot(unit, model.cfg.d_mlp), "mlp.post", layer, positions)


def neurons(model: VisionTransformer, layer: int, units, positions: Optional[tuple] = None) -> Objective:
    """A batch of `neuron` objectives (``direction`` stacked ``[n, d_mlp]``) for `visualise`."""
    units = [int(u) for u in units]
    for u in units:
        _check(model, "mlp.post", layer, u, model.cfg.d_mlp)
    return Objective(jax.nn.one_hot(jnp.asarray(units), model.cfg.d_mlp), "mlp.post", layer, positions)


def direction(
    model: VisionTransformer,
    layer: int,
    vector: Float[Array, " d_model"],
    site: str = "resid_post",
    positions: Optional[tuple] = None,
) -> Objective:
    """A direction ``vector`` in the residual stream (``site`` resid_pre/mid/post)."""
    _check(model, site, layer)
    vector = jnp.asarray(vector)
    if vector.shape != (model.cfg.d_model,):
        raise VisualisationError(f"vector has shape {vector.shape}, expected ({model.cfg.d_model},)")
    return Objective(vector, site, layer, positions)


# ----------------------------------------------------------------- parameterisation


def spectrum_scale(size: int, decay: float = 1.0) -> Float[np.ndarray, "size half"]:
    """``1 / frequency ** decay`` on the rfft2 grid (frequency floored at ``1 / size``).
    With the orthonormal inverse FFT this is Lucid's ``sqrt(w h) / f`` with the default one."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freqs = np.sqrt(fy**2 + fx**2)
    return (1.0 / np.maximum(freqs, 1.0 / size) ** decay).astype(np.float32)


def init_spectrum(key: PRNGKeyArray, size: int, std: float = 0.01) -> Float[Array, "2 3 size half"]:
    """Random (real, imaginary) spectrum parameters for a ``size x size`` RGB image."""
    return std * jax.random.normal(key, (2, 3, size, size // 2 + 1))


def to_image(spectrum: Float[Array, "2 3 size half"], decay: float = 1.0) -> Float[Array, "3 size size"]:
    """The image ``[3, size, size]`` in ``[0, 1]`` of spectrum parameters: 1/f-scaled
    inverse FFT (decorrelated space), then colour decorrelation, then a sigmoid."""
    size = spectrum.shape[2]
    scale = jnp.asarray(spectrum_scale(size, decay))
    spec = (spectrum[0] + 1j * spectrum[1]) * scale
    img = jnp.fft.irfft2(spec, s=(size, size), norm="ortho") / 4.0  # Lucid's /4 keeps the sigmoid unsaturated
    img = jnp.einsum("ij,jhw->ihw", jnp.asarray(_COLOR_SQRT), img)
    return jax.nn.sigmoid(img)


def normalise(image: Float[Array, "3 h w"]) -> Float[Array, "3 h w"]:
    """``[0, 1]`` RGB -> the ImageNet-normalised input the DINOv2 backbone expects."""
    return (image - jnp.asarray(IMAGENET_MEAN)[:, None, None]) / jnp.asarray(IMAGENET_STD)[:, None, None]


def affine(
    image: Float[Array, "3 h w"], angle: Float[Array, ""], scale: Float[Array, ""], shift: Float[Array, " 2"]
) -> Float[Array, "3 h w"]:
    """``image`` rotated by ``angle`` (radians) and zoomed by ``scale`` about its centre,
    shifted by ``shift`` pixels; bilinear, borders reflected. Differentiable."""
    _, h, w = image.shape
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = yy - cy - shift[0], xx - cx - shift[1]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # the output pixel (y, x) reads the input at the inverse transform of its position
    sy = (cos * y + sin * x) / scale + cy
    sx = (-sin * y + cos * x) / scale + cx
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [sy, sx], order=1, mode="reflect")  # noqa: E731
    return jax.vmap(sample)(image)


def random_transform(
    key: PRNGKeyArray,
    image: Float[Array, "3 h w"],
    jitter: float = 8.0,
    scales=(0.9, 0.95, 1.0, 1.05, 1.1),
    max_degrees: float = 10.0,
) -> Float[Array, "3 h w"]:
    """Lucid-style robustness: random jitter (pixels), scale (one of ``scales``) and
    rotation (uniform in +-``max_degrees``) as one affine warp."""
    k1, k2, k3 = jax.random.split(key, 3)
    shift = jax.random.uniform(k1, (2,), minval=-jitter, maxval=jitter)
    scale = jax.random.choice(k2, jnp.asarray(scales, jnp.float32))
    angle = jax.random.uniform(k3, (), minval=-max_degrees, maxval=max_degrees) * math.pi / 180
    return affine(image, angle, scale, shift)


# ---------------------------------------------------------------------- optimisation


def activation(model: VisionTransformer, objective: Objective, image: Float[Array, "3 h w"]) -> Float[Array, ""]:
    """The objective's value on one ``[0, 1]`` image (no transforms); runs only the
    layers up to the objective's. Un-jitted (vmap / jit / grad it)."""
    _, cache = model.run(normalise(image), layers=(0, objective.layer + 1), cache=frozenset({objective.site}))
    return objective(cache[objective.site][objective.layer])


def activation_matrix(
    model: VisionTransformer, objectives: Objective, images: Float[Array, "n 3 h w"]
) -> Float[Array, "objective image"]:
    """``[i, j]``: objective ``i`` (of a batched `Objective`) on image ``j``."""
    return _activation_matrix(model, objectives, images)


@eqx.filter_jit
def _activation_matrix(model, objectives, images):
    def on_image(image):  # one forward per image, every objective read from its cache
        _, cache = model.run(normalise(image), layers=(0, objectives.layer + 1), cache=frozenset({objectives.site}))
        acts = cache[objectives.site][objectives.layer]
        rows = acts[1:] if objectives.positions is None else acts[np.asarray(objectives.positions)]
        return jnp.mean(rows @ objectives.direction.T, axis=0)

    return jax.vmap(on_image, out_axes=1)(images)


class Visualisation(eqx.Module):
    """Result of `visualise`: ``images [n, 3, size, size]`` in ``[0, 1]``, the objective's
    value along the way ``trace [steps, n]`` (on transformed images) and on the final
    untransformed images ``final [n]``."""

    images: Float[Array, "n 3 size size"]
    trace: Float[Array, "steps n"]
    final: Float[Array, " n"]


def visualise(
    model: VisionTransformer,
    objectives: Objective,
    key: PRNGKeyArray,
    *,
    size: int = 224,
    steps: int = 256,
    lr: float = 0.05,
    decay: float = 1.0,
    jitter: float = 8.0,
    scales=(0.9, 0.95, 1.0, 1.05, 1.1),
    max_degrees: float = 10.0,
) -> Visualisation:
    """Optimise one image per objective of ``objectives`` (an `Objective` with a batch of
    directions ``[n, d]``, e.g. from `neurons`) with Adam for ``steps`` steps."""
    if objectives.direction.ndim != 2:
        raise VisualisationError(
            f"objectives.direction must be batched [n, d], got shape {objectives.direction.shape}"
            " (use `neurons`, or stack single objectives)"
        )
    p = model.patch_embed.patch_size
    if size % p:
        raise VisualisationError(f"size must be a multiple of the patch size {p}, got {size}")
    if steps < 1:
        raise VisualisationError(f"steps must be >= 1, got {steps}")
    settings = (size, steps, lr, decay, jitter, tuple(scales), max_degrees)
    return _visualise(model, objectives, key, settings)


@eqx.filter_jit
def _visualise(model, objectives, key, settings):
    size, steps, lr, decay, jitter, scales, max_degrees = settings
    n = objectives.direction.shape[0]
    opt = optax.adam(lr)

    def loss(spectrum, direction, key):
        img = random_transform(key, to_image(spectrum, decay), jitter, scales, max_degrees)
        single = Objective(direction, objectives.site, objectives.layer, objectives.positions)
        value = activation(model, single, img)
        return -value, value

    def one(direction, key):
        k0, key = jax.random.split(key)
        spectrum = init_spectrum(k0, size)

        def step(carry, k):
            spectrum, state = carry
            (_, value), g = jax.value_and_grad(loss, has_aux=True)(spectrum, direction, k)
            updates, state = opt.update(g, state, spectrum)
            return (optax.apply_updates(spectrum, updates), state), value

        (spectrum, _), trace = jax.lax.scan(step, (spectrum, opt.init(spectrum)), jax.random.split(key, steps))
        image = to_image(spectrum, decay)
        single = Objective(direction, objectives.site, objectives.layer, objectives.positions)
        return image, trace, activation(model, single, image)

    images, trace, final = jax.vmap(one)(objectives.direction, jax.random.split(key, n))
    return Visualisation(images, trace.T, final)


def natural_noise(
    key: PRNGKeyArray, n: int, size: int = 224, std: float = 0.5, decay: float = 1.0
) -> Float[Array, "n 3 size size"]:
    """``n`` images of coloured 1/f noise through the same parameterisation (a random
    spectrum): the "natural-looking noise" baseline a visualisation should beat."""
    return jax.vmap(lambda k: to_image(std * jax.random.normal(k, (2, 3, size, size // 2 + 1)), decay))(
        jax.random.split(key, n)
    )


def rotation_curve(
    model: VisionTransformer, objectives: Objective, images: Float[Array, "n 3 h w"], degrees: Float[Array, " angle"]
) -> Float[Array, "n angle"]:
    """Equivariance probe: objective ``i`` on its image ``i`` rotated by each angle
    (``[n, angle]``; a rotation-invariant feature gives a flat curve)."""
    return _rotation_curve(model, objectives, images, jnp.asarray(degrees, jnp.float32))


@eqx.filter_jit
def _rotation_curve(model, objectives, images, degrees):
    def per(direction, image):
        single = Objective(direction, objectives.site, objectives.layer, objectives.positions)
        rot = lambda a: affine(image, a * math.pi / 180, jnp.float32(1.0), jnp.zeros(2))  # noqa: E731
        return jax.vmap(lambda a: activation(model, single, rot(a)))(degrees)

    return jax.vmap(per)(objectives.direction, images)
