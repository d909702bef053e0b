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

import functools
import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ..core.errors import JaxinterpError
from ..core.sites import parse_site
from ..engine.quick_compile import call_first_supported, quick_jits, wants_quick
from ..model.vision import VisionTransformer

# sqrt of ImageNet's RGB colour covariance (Lucid, `color_correlation_svd_sqrt`).
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOR_SQRT = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisualisationError(JaxinterpError):
    """A bad objective or optimisation setting (unknown site, unit out of range, ...)."""


# ------------------------------------------------------------------ compiling
# The optimisation's scan of grad of a tiny ViT compiles for ~30 s with LLVM's
# optimisation, ~1 s without: small programs on CPU are compiled without it
# (`jaxinterp.engine.quick_compile`).
_ARRAY = object()  # marks where an array leaf goes


def _filter_jit(fn: Callable, quick: bool) -> Callable:
    """``eqx.filter_jit(fn)`` (array leaves traced, everything else static), optionally
    compiled with XLA's backend optimisation off."""
    if not quick:
        return eqx.filter_jit(fn)
    programs = quick_jits(functools.partial(_call_flat, fn), static_argnums=(1, 2))

    def call(*args):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        arrays = [x for x in leaves if eqx.is_array(x)]
        statics = tuple(_ARRAY if eqx.is_array(x) else x for x in leaves)
        return call_first_supported(programs, arrays, treedef, statics)

    return call


def _call_flat(fn, arrays, treedef, statics):
    it = iter(arrays)
    return fn(*jax.tree_util.tree_unflatten(treedef, [next(it) if x is _ARRAY else x for x in statics]))


def _forward_flops(model: VisionTransformer, layer: int, size: int) -> float:
    """Multiply-adds x 2 of one forward through layers ``0..layer`` on a ``size`` image."""
    per_layer = sum(x.size for x in jax.tree_util.tree_leaves(model.transformer.blocks) if eqx.is_array(x))
    per_layer /= model.cfg.n_layers
    tokens = (size // model.patch_embed.patch_size) ** 2 + 1
    return 2.0 * per_layer * (layer + 1) * tokens


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


def _normal(key: PRNGKeyArray, shape: tuple) -> Array:
    """``jax.random.normal(key, shape)``, drawn flat and reshaped: the same numbers, but
    XLA on CPU compiles a multi-dimensional threefry draw for seconds (a 4-D one ~17 s on
    the 2-core machines), a flat one in well under one."""
    return jax.random.normal(key, (math.prod(shape),)).reshape(shape)


def init_spectrum(key: PRNGKeyArray, size: int, std: float = 0.01) -> Float[Array, "2 3 size half"]:
    """Random (real, imaginary) spectrum parameters for a ``size x size`` RGB image:
    normal with standard deviation ``std`` (0.01: a near-grey start, as Lucid)."""
    return std * _normal(key, (2, 3, size, size // 2 + 1))


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
    model: VisionTransformer,
    objectives: Objective,
    images: Float[Array, "n 3 h w"],
    *,
    quick_compile: Optional[bool] = None,
) -> Float[Array, "objective image"]:
    """``[i, j]``: objective ``i`` (of a batched `Objective`) on image ``j``.
    ``quick_compile``: as in `visualise`."""
    flops = _forward_flops(model, objectives.layer, images.shape[-1]) * images.shape[0]
    quick = wants_quick(quick_compile, flops)
    return _activation_matrix_programs[quick](model, objectives, images)


def _activation_matrix(model, objectives, images):
    def on_image(image):  # one forward per image, every objective read from its cache
        _, cache = model.run(normalise(image), layers=(0, objectives.layer + 1), cache=frozenset({objectives.site}))
        acts = cache[objectives.site][objectives.layer]
        rows = acts[1:] if objectives.positions is None else acts[np.asarray(objectives.positions)]
        return jnp.mean(rows @ objectives.direction.T, axis=0)

    return jax.vmap(on_image, out_axes=1)(images)


_activation_matrix_programs = {q: _filter_jit(_activation_matrix, q) for q in (False, True)}


class Visualisation(eqx.Module):
    """Result of `visualise`: per objective, the best of its restarts.

    ``images [n, 3, size, size]`` in ``[0, 1]``; ``final [n]`` the objective on them
    (untransformed); ``trace [steps, n]`` the objective along the way (on the transformed
    images, of the kept restart; always the true objective, without the leak term).
    ``candidates [n, restarts, 3, size, size]`` every restart's image and
    ``candidate_final [n, restarts]`` its objective: ``images[i]`` is
    ``candidates[i, argmax(candidate_final[i])]``."""

    images: Float[Array, "n 3 size size"]
    trace: Float[Array, "steps n"]
    final: Float[Array, " n"]
    candidates: Float[Array, "n restarts 3 size size"]
    candidate_final: Float[Array, "n restarts"]


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
    restarts: int = 1,
    init_std: float = 0.01,
    leak: float = 0.0,
    quick_compile: Optional[bool] = None,
) -> Visualisation:
    """Optimise one image per objective of ``objectives`` (an `Objective` with a batch of
    directions ``[n, d]``, e.g. from `neurons`) with Adam for ``steps`` steps.

    ``restarts``: independent random starts per objective, optimised at once (vmapped);
    the one whose final image scores highest on the objective is kept (all are returned
    as ``candidates``). ``init_std``: standard deviation of the starting spectrum
    (`init_spectrum`; larger starts further from grey). ``leak`` (``mlp.post`` objectives
    only): add ``leak_t *`` the same objective read on ``mlp.pre`` to what is maximised,
    ``leak_t`` falling linearly from ``leak`` at the first step to 0 at the last. A neuron
    whose pre-activation starts deep in the negative range has a vanishing GELU/ReLU
    gradient, so plain ascent never switches it on; the pre-activation always has a
    gradient, and the leak is gone by the end, so the last steps maximise the objective
    itself (``trace``, ``final`` and the choice among restarts never include the leak).

    Restart ``r`` of objective ``i`` starts from ``fold_in(split(key, n)[i], r)``.
    ``lr``, ``jitter``, ``max_degrees``, ``init_std`` and ``leak`` are traced: changing them
    does not recompile; ``size``, ``steps``, ``restarts``, ``decay`` and ``scales`` do.

    ``quick_compile``: compile with XLA's backend (LLVM) optimisation off: ~20x faster
    to compile on CPU, a few times slower to run. None: on when the whole optimisation is
    under ``jaxinterp.engine.quick_compile.QUICK_COMPILE_FLOPS`` of work on CPU (tiny models, tests), else off."""
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
    if restarts < 1:
        raise VisualisationError(f"restarts must be >= 1, got {restarts}")
    if init_std < 0:
        raise VisualisationError(f"init_std must be >= 0, got {init_std}")
    if leak < 0:
        raise VisualisationError(f"leak must be >= 0, got {leak}")
    if leak and objectives.site != "mlp.post":
        raise VisualisationError(
            f"leak reads the pre-activation, so it needs an mlp.post objective; got site {objectives.site!r}"
        )
    static = (int(size), int(steps), int(restarts), float(decay), tuple(float(s) for s in scales))
    traced = {
        name: jnp.float32(v)
        for name, v in dict(lr=lr, jitter=jitter, max_degrees=max_degrees, init_std=init_std, leak=leak).items()
    }
    n = objectives.direction.shape[0]
    flops = 3 * _forward_flops(model, objectives.layer, size) * n * restarts * steps  # forward + backward
    quick = wants_quick(quick_compile, flops)
    return _visualise_programs[quick](model, objectives, key, traced, static)


def _visualise(model, objectives, key, traced, static):
    size, steps, restarts, decay, scales = static
    n = objectives.direction.shape[0]
    opt = optax.adam(traced["lr"])
    # with an mlp.post objective, also read mlp.pre (for the leak; a leak of 0 adds exact zeros)
    sites = frozenset({objectives.site, "mlp.pre"}) if objectives.site == "mlp.post" else frozenset({objectives.site})

    def values(direction, image):  # (objective, objective on mlp.pre or 0)
        _, cache = model.run(normalise(image), layers=(0, objectives.layer + 1), cache=sites)
        single = Objective(direction, objectives.site, objectives.layer, objectives.positions)
        value = single(cache[objectives.site][objectives.layer])
        if "mlp.pre" not in sites:
            return value, jnp.zeros_like(value)
        pre = Objective(direction, "mlp.pre", objectives.layer, objectives.positions)
        return value, pre(cache["mlp.pre"][objectives.layer])

    def loss(spectrum, direction, key, leak):
        img = random_transform(key, to_image(spectrum, decay), traced["jitter"], scales, traced["max_degrees"])
        value, pre = values(direction, img)
        return -(value + leak * pre), value

    def one(direction, key):
        k0, key = jax.random.split(key)
        spectrum = init_spectrum(k0, size, traced["init_std"])
        leaks = traced["leak"] * (1.0 - jnp.arange(steps, dtype=jnp.float32) / max(steps - 1, 1))

        def step(carry, inputs):
            k, leak = inputs
            spectrum, state = carry
            (_, value), g = jax.value_and_grad(loss, has_aux=True)(spectrum, direction, k, leak)
            updates, state = opt.update(g, state, spectrum)
            return (optax.apply_updates(spectrum, updates), state), value

        carry = (spectrum, opt.init(spectrum))
        (spectrum, _), trace = jax.lax.scan(step, carry, (jax.random.split(key, steps), leaks))
        image = to_image(spectrum, decay)
        return image, trace, values(direction, image)[0]

    def per_objective(direction, key):
        keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(restarts))
        images, traces, finals = jax.vmap(one, in_axes=(None, 0))(direction, keys)
        best = jnp.argmax(finals)
        return images[best], traces[best], finals[best], images, finals

    images, trace, final, candidates, candidate_final = jax.vmap(per_objective)(
        objectives.direction, jax.random.split(key, n)
    )
    return Visualisation(images, trace.T, final, candidates, candidate_final)


_visualise_programs = {q: _filter_jit(_visualise, q) for q in (False, True)}


def natural_noise(
    key: PRNGKeyArray, n: int, size: int = 224, std: float = 0.5, decay: float = 1.0
) -> Float[Array, "n 3 size size"]:
    """``n`` images of coloured 1/f noise through the same parameterisation (a random
    spectrum): the "natural-looking noise" baseline a visualisation should beat."""
    return _natural_noise(key, n, size, jnp.float32(std), decay)


def _noise(key, n, size, std, decay):
    return jax.vmap(lambda k: to_image(init_spectrum(k, size, std), decay))(jax.random.split(key, n))


_natural_noise = _filter_jit(_noise, quick=True)  # FFTs and a sigmoid: nothing for LLVM to speed up


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
