"""Interventions: edits of activations at hook sites, as data.

An intervention names a site (static) and carries arrays (dynamic): what to write, and
where. Because it is an ordinary pytree, `jax.vmap` over its location fields batches
many patches into one compiled program, and `jax.grad` through its value fields gives
attributions::

    run = lambda l, p: model(corrupt, [Patch("resid_pre", clean_cache["resid_pre"], layer=l, pos=p)])
    jax.vmap(run)(layers, positions)   # compiles once

Locations. Each location field selects along one axis of the site's activation (see
`jaxinterp.core.sites`): ``layer``, ``pos`` (``pos`` or ``query_pos`` axes), ``key_pos``,
``head`` (``head`` or ``kv_head``), ``neuron``, ``expert``. A field is ``None`` (every
index), an int or int array of indices (negative counts from the end; several indices
select all of them), or a bool mask over the axis. Fields combine as an outer product.
Masks are built with comparisons, so every field may be a traced array. Indices are
range-checked against the axis (``-n .. n-1``, as Python), in one place, `check_index`:
concrete ones raise `InterventionError` before the run; traced ones (a sweep's
locations) through `eqx.error_if` when the program runs, unless the run was asked for
``checks=False``. Positions named on a run with explicit positions are not checked.

Values. A value field (``value`` of `Patch`, ``delta`` of `Add`, ...) is read by its
rank alone, never by its sizes (`SiteContext.value_for_layer`): with at most the
site's rank it is broadcast to one layer's activation, right-aligned as in numpy
(``[pos, d_model]``, ``[d_model]``, a scalar); with exactly one more axis it is stacked
over layers (``[n_layers, pos, d_model]``, as a cache's short-name entry, or
``[n_layers, 1, d_model]`` for one vector per layer) and the layer being run picks its
slice. So ``[n_layers, d_model]`` is always a per-position value ``[pos, d_model]``
(an error unless the prompt has n_layers tokens): write a stack of per-layer vectors
as ``[n_layers, 1, d_model]``. More axes than that (e.g. per-example values in a
batched run) raise `InterventionError`: run such examples one at a time (vmap).

A list of interventions applies in order; the cache records the activation after them.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int, PRNGKeyArray

from ..core.errors import InterventionError
from ..core.sites import AXES

__all__ = ["Intervention", "Where", "Patch", "Add", "Ablate", "Scale", "ProjectOut", "Noise", "Fn", "InterventionError"]


def _location(x) -> Optional[Array]:
    if x is None:
        return None
    return jnp.asarray(x)


# Which activation axes each location field addresses (layer is handled apart).
_FIELD_AXES = {field: dims for field, dims in AXES.items() if field != "layer"}


def axis_mask(
    selector: Optional[Array],
    size: int,
    index: Optional[Array] = None,
    *,
    field: str = "index",
    site: str = "",
    dim: str = "",
    checks: bool = True,
) -> Array:
    """A bool mask ``[size]`` from None / indices / a bool mask (traceable).

    Indices must lie in ``-size .. size-1`` (negative ones count from the end, as in
    Python): a concrete index outside raises `InterventionError` here; a traced one
    (under jit / vmap) raises through `eqx.error_if` when the program runs, unless
    ``checks=False`` (see `check_index`). ``field`` / ``site`` / ``dim`` name what is
    indexed, for the message.

    ``index [size]``: the absolute position of each entry along a position axis (a run
    with explicit positions, or new tokens after a KV cache; -1 marks padding and empty
    cache slots, never selected). Indices then name positions, negative ones counting
    back from the last position + 1, and a bool mask is read at each position (False
    beyond its length). Such positions are not range-checked: a position outside the
    tokens run (an earlier token during decoding) legitimately selects nothing."""
    if selector is None:
        return jnp.ones((size,), bool)
    if index is not None:
        return _position_mask(selector, index)
    if selector.dtype == jnp.bool_:
        if selector.shape != (size,):
            raise InterventionError(
                f"{_what(field, site, dim)}: a bool location mask must have shape ({size},), got {selector.shape}"
            )
        return selector
    if not jnp.issubdtype(selector.dtype, jnp.integer):
        raise InterventionError(
            f"{_what(field, site, dim)}: location indices must be ints or a bool mask, got dtype {selector.dtype}"
        )
    idx = check_index(selector, size, field=field, site=site, dim=dim, checks=checks).reshape(-1)
    idx = jnp.where(idx < 0, idx + size, idx)
    return (jnp.arange(size)[:, None] == idx[None, :]).any(-1)


def _what(field: str, site: str, dim: str) -> str:
    return f"{field}=" + (f" on {site!r}" if site else "") + (f" ({dim} axis)" if dim and dim != field else "")


def range_message(field: str, size: int, site: str = "", dim: str = "", value=None, heads: str = "") -> str:
    """The message of an out-of-range location: the field, the value, the allowed range
    (``heads``: the model's query and key/value head counts, for a ``kv_head`` axis)."""
    got = f"{field} index" if value is None else f"{field}={value}"
    msg = (
        f"{got} is out of range" + (f" for {site!r}" if site else "") + f": the {dim or field} axis has "
        f"{size} entries, so indices must lie in {-size}..{size - 1} (negative ones count from the end)"
    )
    if dim == "kv_head":
        msg += "; this site is indexed by key/value head, of which a GQA/MQA model has fewer than query heads"
        msg += f" ({heads})" if heads else ""
    return msg


def check_index(
    selector: Array,
    size: int,
    *,
    field: str = "index",
    site: str = "",
    dim: str = "",
    checks: bool = True,
    heads: str = "",
) -> Array:
    """``selector`` (int indices) after checking ``-size <= i < size``: the one range check
    of intervention locations. Concrete indices raise `InterventionError` naming the bad
    value now; traced ones (a vmapped sweep's locations) through `eqx.error_if` when the
    program runs (an `equinox.EquinoxRuntimeError` whose message is the same, less the
    value), or not at all with ``checks=False``."""
    if isinstance(selector, jax.core.Tracer):
        if not checks:
            return selector
        outside = (selector < -size) | (selector >= size)
        return eqx.error_if(selector, outside, range_message(field, size, site, dim))
    arr = np.asarray(selector)
    bad = (arr < -size) | (arr >= size)
    if bad.any():
        value = arr[bad].reshape(-1)[0].item() if arr.ndim else arr.item()
        raise InterventionError(range_message(field, size, site, dim, value, heads))
    return selector


def _position_mask(selector: Array, index: Int[Array, " size"]) -> Bool[Array, " size"]:
    real = index >= 0
    if selector.dtype == jnp.bool_:
        if selector.ndim != 1:
            raise InterventionError(f"a bool location mask must be one-dimensional, got shape {selector.shape}")
        inside = real & (index < selector.shape[0])
        return inside & selector[jnp.clip(index, 0, selector.shape[0] - 1)]
    if not jnp.issubdtype(selector.dtype, jnp.integer):
        raise InterventionError(f"location indices must be ints or a bool mask, got dtype {selector.dtype}")
    idx = selector.reshape(-1)
    idx = jnp.where(idx < 0, idx + jnp.max(index) + 1, idx)
    return real & (index[:, None] == idx[None, :]).any(-1)


class Where(eqx.Module):
    """Where an intervention applies: one optional selector per location field
    (`jaxinterp.core.sites.AXES`). Each is None (every index), an int or int array of
    indices (negative counts from the end; several select all of them), or a bool mask
    over the axis; fields combine as an outer product. Every field may be traced."""

    layer: Optional[Array] = eqx.field(default=None, converter=_location)
    pos: Optional[Array] = eqx.field(default=None, converter=_location)
    head: Optional[Array] = eqx.field(default=None, converter=_location)
    neuron: Optional[Array] = eqx.field(default=None, converter=_location)
    key_pos: Optional[Array] = eqx.field(default=None, converter=_location)
    expert: Optional[Array] = eqx.field(default=None, converter=_location)

    def mask(self, site: str, ctx: "SiteContext", layer: Optional[Array]) -> Array:
        """Where the intervention on ``site`` applies, broadcastable to the activation."""
        shape, dims = ctx.shape, ctx.dims
        for field, axes in _FIELD_AXES.items():
            if getattr(self, field) is not None and not any(a in dims for a in axes):
                raise InterventionError(
                    f"intervention on {site!r} selects {field}=..., but that site's axes are {dims}"
                )
        m = jnp.ones((), bool)
        for i, dim in enumerate(dims):
            name = next((f for f, axes in _FIELD_AXES.items() if dim in axes), None)
            sel = None if name is None else getattr(self, name)
            if name is not None and sel is not None:
                am = axis_mask(
                    sel, shape[i], ctx.positions_along(dim), field=name, site=site, dim=dim, checks=ctx.checks
                )
                m = m & am.reshape((-1,) + (1,) * (len(shape) - i - 1))
        if self.layer is not None:
            if layer is None:
                raise InterventionError(f"{site!r} is not a per-layer site: give no layer=")
            m = m & axis_mask(self.layer, ctx.n_layers, field="layer", site=site, checks=ctx.checks)[layer]
        return m

    @property
    def everywhere(self) -> bool:
        """Whether no field selects: the intervention applies to the whole activation."""
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))

    def check(self, site: str, dims: tuple, sizes: dict, n_layers: int, heads: str = "") -> None:
        """Range-check the concrete location fields against the axis sizes (``sizes``:
        dimension name -> size, `jaxinterp.core.sites.dim_sizes`), before a run traces
        them: the message then names the bad value (``heads``: the model's head counts,
        for the message). Traced fields are checked in `mask`."""
        for field, axes in _FIELD_AXES.items():
            sel = getattr(self, field)
            dim = next((d for d in dims if d in axes), None)
            if sel is None or dim is None or isinstance(sel, jax.core.Tracer):
                continue
            if jnp.issubdtype(sel.dtype, jnp.integer):
                check_index(sel, sizes[dim], field=field, site=site, dim=dim, heads=heads)
        if self.layer is not None and not isinstance(self.layer, jax.core.Tracer):
            if jnp.issubdtype(self.layer.dtype, jnp.integer):
                check_index(self.layer, n_layers, field="layer", site=site)


class Intervention(eqx.Module):
    """Abstract base: a ``site`` (static), a `Where`, and `update` (the new value
    everywhere). Concrete interventions are final classes that add only their payload."""

    site: eqx.AbstractVar[str]
    where: eqx.AbstractVar[Where]

    @abc.abstractmethod
    def update(self, x: Array, layer: Optional[Array], ctx: "SiteContext") -> Array:
        """The activation as it would be if the intervention applied everywhere."""

    def mask(self, ctx: "SiteContext", layer: Optional[Array]) -> Array:
        """Where the intervention applies, broadcastable to the activation."""
        return self.where.mask(self.site, ctx, layer)

    def apply(self, x: Array, layer: Optional[Array], ctx: "SiteContext") -> Array:
        new = self.update(x, layer, ctx).astype(x.dtype)
        if self.where.everywhere:
            # No select: what computed ``x`` is then dead code when ``new`` does not read
            # it (a full Patch), visibly so in the jaxpr (cost counts, `matmul_flops`).
            return jnp.broadcast_to(new, x.shape)
        return jnp.where(self.mask(ctx, layer), new, x)

    # The location fields, read through `where` (as before `Where` existed).
    layer = property(lambda self: self.where.layer)
    pos = property(lambda self: self.where.pos)
    head = property(lambda self: self.where.head)
    neuron = property(lambda self: self.where.neuron)
    key_pos = property(lambda self: self.where.key_pos)
    expert = property(lambda self: self.where.expert)


class SiteContext(eqx.Module):
    """Static facts about the site an intervention is being applied to."""

    name: str = eqx.field(static=True)
    dims: tuple = eqx.field(static=True)
    shape: tuple = eqx.field(static=True)
    n_layers: int = eqx.field(static=True)
    # Absolute positions of the entries along the query (``pos``/``query_pos``) and key
    # (``key_pos``) axes, where they are not 0..n-1 (see `axis_mask`); None otherwise.
    positions: Optional[Int[Array, " pos"]] = None
    key_positions: Optional[Int[Array, " key_pos"]] = None
    # Range-check traced locations at run time (`check_index`); False: skip (`Transformer.run(checks=False)`).
    checks: bool = eqx.field(static=True, default=True)

    def positions_along(self, dim: str) -> Optional[Array]:
        """The absolute positions along axis ``dim`` (None: the indices 0..n-1)."""
        if dim in AXES["pos"]:
            return self.positions
        if dim in AXES["key_pos"]:
            return self.key_positions
        return None

    def value_for_layer(self, value: Array, layer: Optional[Array], what: str) -> Array:
        """Select a stacked value's layer slice and check it broadcasts to the site.

        The rule is by rank only (see the module docstring): rank <= the site's rank:
        broadcast to one layer's activation; rank + 1: stacked over layers, first axis
        ``n_layers``; anything else: `InterventionError` spelling out the shapes accepted."""
        value = jnp.asarray(value)
        rank = len(self.shape)
        if value.ndim == rank + 1 and layer is not None:
            if value.shape[0] != self.n_layers:
                raise InterventionError(self._shape_message(value, what, layer, "its first axis is not n_layers"))
            value = value[layer]
        elif value.ndim > rank:
            note = "more axes than the site" + ("" if layer is not None else " (a top-level site has no layer axis)")
            raise InterventionError(self._shape_message(value, what, layer, note))
        try:
            fits = jnp.broadcast_shapes(value.shape, self.shape) == tuple(self.shape)
        except ValueError:
            fits = False
        if not fits:
            raise InterventionError(self._shape_message(value, what, layer, "it does not broadcast to the site"))
        return value

    def _shape_message(self, value: Array, what: str, layer: Optional[Array], why: str) -> str:
        dims = " ".join(self.dims)
        msg = (
            f"{what} of shape {value.shape} does not fit site {self.name!r} ({why}): expected a shape "
            f"broadcastable to {tuple(self.shape)} [{dims}]"
        )
        if layer is not None:
            stacked = ", ".join(map(str, (self.n_layers,) + tuple(self.shape)))
            msg += (
                f", or stacked over layers ({stacked}) [layer {dims}]; one value per layer broadcast over the "
                f"rest is ({self.n_layers}, {', '.join('1' for _ in self.shape[:-1])}{', ' if len(self.shape) > 1 else ''}"
                f"{self.shape[-1]})"
            )
        return msg + ". Per-example values in a batched run are not supported: run examples one at a time"


def _site(site) -> str:
    if not isinstance(site, str):
        raise InterventionError(f"site must be a string name, got {site!r}")
    return site


def _where(where: Optional[Where], **fields) -> Where:
    """The `Where` of a constructor call: ``where=`` or the location keywords, not both."""
    if where is None:
        return Where(**fields)
    if not isinstance(where, Where):
        raise InterventionError(f"where= must be a jaxinterp.Where, got {type(where).__name__}")
    given = [k for k, v in fields.items() if v is not None]
    if given:
        raise InterventionError(f"give the location either as where= or as keywords, not both (also got {given})")
    return where


class Patch(Intervention):
    """Overwrite the activation with ``value`` at the selected locations."""

    site: str = eqx.field(static=True)
    where: Where
    value: Array

    def __init__(
        self, site: str, value, *, layer=None, pos=None, head=None, neuron=None, key_pos=None, expert=None, where=None
    ):
        self.site = _site(site)
        self.where = _where(where, layer=layer, pos=pos, head=head, neuron=neuron, key_pos=key_pos, expert=expert)
        self.value = jnp.asarray(value)

    def update(self, x, layer, ctx):
        return jnp.broadcast_to(ctx.value_for_layer(self.value, layer, "Patch value"), x.shape)


class Add(Intervention):
    """Add ``delta`` (a steering vector, or a zero delta to differentiate against)."""

    site: str = eqx.field(static=True)
    where: Where
    delta: Array

    def __init__(
        self, site: str, delta, *, layer=None, pos=None, head=None, neuron=None, key_pos=None, expert=None, where=None
    ):
        self.site = _site(site)
        self.where = _where(where, layer=layer, pos=pos, head=head, neuron=neuron, key_pos=key_pos, expert=expert)
        self.delta = jnp.asarray(delta)

    def update(self, x, layer, ctx):
        return x + ctx.value_for_layer(self.delta, layer, "Add delta")


class Scale(Intervention):
    """Multiply by ``factor`` (scalar or broadcastable array)."""

    site: str = eqx.field(static=True)
    where: Where
    factor: Array

    def __init__(
        self, site: str, factor, *, layer=None, pos=None, head=None, neuron=None, key_pos=None, expert=None, where=None
    ):
        self.site = _site(site)
        self.where = _where(where, layer=layer, pos=pos, head=head, neuron=neuron, key_pos=key_pos, expert=expert)
        self.factor = jnp.asarray(factor)

    def update(self, x, layer, ctx):
        return x * ctx.value_for_layer(self.factor, layer, "Scale factor")


class Ablate(Intervention):
    """Ablate: ``mode="zero"``, ``"mean"`` (value = mean activation) or ``"resample"``
    (value = the activation on another input). Mean and resample are patches whose
    value comes from elsewhere; the mode documents intent and checks a value is given."""

    site: str = eqx.field(static=True)
    where: Where
    value: Optional[Array]
    mode: str = eqx.field(static=True)

    def __init__(
        self,
        site: str,
        mode: str = "zero",
        value=None,
        *,
        layer=None,
        pos=None,
        head=None,
        neuron=None,
        key_pos=None,
        expert=None,
        where=None,
    ):
        self.site = _site(site)
        self.where = _where(where, layer=layer, pos=pos, head=head, neuron=neuron, key_pos=key_pos, expert=expert)
        if mode not in ("zero", "mean", "resample"):
            raise InterventionError(f"Ablate mode must be 'zero', 'mean' or 'resample', got {mode!r}")
        if (mode == "zero") != (value is None):
            raise InterventionError(
                f"Ablate(mode={mode!r}) " + ("takes no value" if mode == "zero" else "needs value=")
            )
        self.mode = mode
        self.value = None if value is None else jnp.asarray(value)

    def update(self, x, layer, ctx):
        if self.value is None:
            return jnp.zeros_like(x)
        return jnp.broadcast_to(ctx.value_for_layer(self.value, layer, f"Ablate({self.mode}) value"), x.shape)


class ProjectOut(Intervention):
    """Remove the component along ``direction`` (last axis): ``x - (x.d) d / |d|^2``.
    With ``coefficient`` set, move that component to ``coefficient * d/|d|`` instead."""

    site: str = eqx.field(static=True)
    where: Where
    direction: Array
    coefficient: Optional[Array]

    def __init__(
        self,
        site: str,
        direction,
        coefficient=None,
        *,
        layer=None,
        pos=None,
        head=None,
        neuron=None,
        key_pos=None,
        expert=None,
        where=None,
    ):
        self.site = _site(site)
        self.where = _where(where, layer=layer, pos=pos, head=head, neuron=neuron, key_pos=key_pos, expert=expert)
        self.direction = jnp.asarray(direction)
        if not isinstance(self.direction, jax.core.Tracer) and self.direction.size:
            if not jnp.issubdtype(self.direction.dtype, jnp.inexact):
                self.direction = self.direction.astype(jnp.float32)
            if bool((jnp.linalg.norm(self.direction, axis=-1) == 0).any()):
                raise InterventionError(
                    f"ProjectOut on {self.site!r}: direction has zero norm (shape {self.direction.shape}); "
                    "projecting out a zero vector is undefined (it would make every position NaN)"
                )
        self.coefficient = None if coefficient is None else jnp.asarray(coefficient)

    def update(self, x, layer, ctx):
        d = ctx.value_for_layer(self.direction, layer, "ProjectOut direction")
        norm = jnp.linalg.norm(d, axis=-1, keepdims=True)
        if ctx.checks and isinstance(norm, jax.core.Tracer):
            norm = eqx.error_if(norm, norm == 0, f"ProjectOut on {self.site!r}: direction has zero norm")
        unit = d / norm
        out = x - jnp.sum(x * unit, axis=-1, keepdims=True) * unit
        if self.coefficient is not None:
            out = out + self.coefficient * unit
        return out


class Noise(Intervention):
    """Add seeded Gaussian noise ``std * N(0, 1)`` (causal tracing's corruption)."""

    site: str = eqx.field(static=True)
    where: Where
    key: PRNGKeyArray
    std: Array

    def __init__(
        self,
        site: str,
        key,
        std,
        *,
        layer=None,
        pos=None,
        head=None,
        neuron=None,
        key_pos=None,
        expert=None,
        where=None,
    ):
        self.site = _site(site)
        self.where = _where(where, layer=layer, pos=pos, head=head, neuron=neuron, key_pos=key_pos, expert=expert)
        self.key = key
        self.std = jnp.asarray(std)

    def update(self, x, layer, ctx):
        return x + self.std * jax.random.normal(self.key, x.shape, jnp.float32).astype(x.dtype)


class Fn(Intervention):
    """Apply any pure function: ``fn(x)`` or, with ``args`` (a pytree of arrays that may
    be traced or differentiated), ``fn(x, args)``. Applied only at the selected locations."""

    site: str = eqx.field(static=True)
    where: Where
    fn: Callable = eqx.field(static=True)
    args: Any

    def __init__(
        self,
        site: str,
        fn: Callable,
        args=None,
        *,
        layer=None,
        pos=None,
        head=None,
        neuron=None,
        key_pos=None,
        expert=None,
        where=None,
    ):
        self.site = _site(site)
        self.where = _where(where, layer=layer, pos=pos, head=head, neuron=neuron, key_pos=key_pos, expert=expert)
        self.fn = fn
        self.args = args

    def update(self, x, layer, ctx):
        out = self.fn(x) if self.args is None else self.fn(x, self.args)
        if jnp.shape(out) != x.shape:
            raise InterventionError(f"Fn on {self.site!r} returned shape {jnp.shape(out)}, expected {x.shape}")
        return out
