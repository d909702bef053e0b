"""Model-sharded weights: logical axis rules mapped onto a device mesh.

Every parameter of a `Transformer` has *logical axes*, named as in its annotations
(TransformerLens's dimension names): ``blocks.attn.W_Q`` is ``("layer", "head",
"d_model", "d_head")``, ``blocks.mlp.W_out`` ``("layer", "d_mlp", "d_model")``,
``unembed.W_U`` ``("d_model", "d_vocab")``. *Axis rules* map logical axes onto the axes
of a `jax.sharding.Mesh` (e.g. ``("head", "model")``: split the heads over the mesh's
``"model"`` axis). `param_specs` turns rules into one `PartitionSpec` per parameter,
`shard_model` puts a model's weights on those shardings, and ``jaxinterp.load(...,
mesh=, rules=)`` places each tensor straight onto its sharding while loading.

The compiled program does the rest: under ``jit``, XLA's partitioner propagates the
weights' shardings through the forward pass (Megatron-style tensor parallelism: heads
and MLP neurons split over ``"model"``, one all-reduce after the attention output and
MLP output projections), and a sweep's patches are split over the mesh's ``"data"``
axis at the same time (`jaxinterp.engine.sweep`).

How a rule applies to one parameter (as in Flax's logical axis rules): each logical axis
takes the first rule naming it whose mesh axis this parameter does not already use and
whose size divides the dimension; otherwise the dimension is not split. So an MoE
``W_in`` ``("layer", "expert", "d_model", "d_mlp")`` under the default rules splits the
experts, not also the neurons, and SmolLM2's 3 key/value heads stay whole on a 4-way
``"model"`` axis (its 9 query heads too: check `param_specs` for what a mesh gives).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec

from ..core.config import ModelConfig
from ..core.errors import ShardingError

__all__ = [
    "LOGICAL_AXES",
    "DEFAULT_RULES",
    "AxisRules",
    "make_mesh",
    "param_dims",
    "param_shapes",
    "path_name",
    "spec_for",
    "param_specs",
    "param_shardings",
    "shard_model",
    "put",
    "model_parallel",
    "auto_axes",
]

AxisRules = Sequence[tuple[str, Optional[str]]]

# Every logical axis a parameter can have (the model's annotation names). "norm": the
# width of a norm's weight (d_model, d_head or the QK-norm projection); norms are tiny.
LOGICAL_AXES = (
    "layer",
    "d_model",
    "head",
    "kv_head",
    "d_head",
    "d_mlp",
    "expert",
    "d_vocab",
    "n_ctx",
    "n_token_types",
    "norm",
)

# Tensor parallelism over a mesh axis named "model": attention split by (query and
# key/value) heads, the MLP by neurons, MoE by experts, embedding and unembedding by
# vocabulary. d_model (the residual stream) and layers stay whole.
DEFAULT_RULES: tuple[tuple[str, Optional[str]], ...] = (
    ("head", "model"),
    ("kv_head", "model"),
    ("d_mlp", "model"),
    ("expert", "model"),
    ("d_vocab", "model"),
)

# Logical axes of each parameter, by its pytree path; block parameters get a leading
# "layer" axis (they are stacked over layers). Norm weights are found by name below.
_TOP = {
    "embed.W_E": ("d_vocab", "d_model"),
    "pos_embed.W_pos": ("n_ctx", "d_model"),
    "token_type_embed.W_token_type": ("n_token_types", "d_model"),
    "unembed.W_U": ("d_model", "d_vocab"),
    "unembed.b_U": ("d_vocab",),
}
_BLOCK = {
    "attn.W_Q": ("head", "d_model", "d_head"),
    "attn.W_K": ("kv_head", "d_model", "d_head"),
    "attn.W_V": ("kv_head", "d_model", "d_head"),
    "attn.W_O": ("head", "d_head", "d_model"),
    "attn.b_Q": ("head", "d_head"),
    "attn.b_K": ("kv_head", "d_head"),
    "attn.b_V": ("kv_head", "d_head"),
    "attn.b_O": ("d_model",),
    "mlp.W_in": ("d_model", "d_mlp"),
    "mlp.b_in": ("d_mlp",),
    "mlp.W_gate": ("d_model", "d_mlp"),
    "mlp.b_gate": ("d_mlp",),
    "mlp.W_out": ("d_mlp", "d_model"),
    "mlp.b_out": ("d_model",),
}
_MOE = {  # a mixture of experts' MLP (cfg.n_experts > 0)
    "mlp.W_router": ("d_model", "expert"),
    "mlp.W_in": ("expert", "d_model", "d_mlp"),
    "mlp.W_gate": ("expert", "d_model", "d_mlp"),
    "mlp.W_out": ("expert", "d_mlp", "d_model"),
}
_NORMS = {"ln1", "ln2", "ln1_post", "ln2_post", "ln_final", "embed_ln", "q_norm", "k_norm"}


def path_name(path) -> str:
    """A pytree key path as a dotted parameter name (``blocks.attn.W_Q``)."""
    return ".".join(str(getattr(p, "name", getattr(p, "key", p))) for p in path)


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every float parameter of a model of ``cfg`` by dotted name, with its
    (layer-stacked) shape: what a checkpoint must provide, what the rules shard."""
    from .transformer import Transformer

    skeleton = eqx.filter_eval_shape(Transformer.init, cfg, jax.random.key(0))
    leaves = jax.tree_util.tree_flatten_with_path(skeleton)[0]
    return {path_name(p): tuple(x.shape) for p, x in leaves if jnp.issubdtype(x.dtype, jnp.floating)}


def _dims_of(name: str, ndim: int, moe: bool) -> tuple[str, ...]:
    parts = name.split(".")
    block = parts[0] == "blocks"
    key = ".".join(parts[1:] if block else parts)
    if len(parts) >= 2 and parts[-2] in _NORMS and parts[-1] in ("w", "b"):
        dims: tuple[str, ...] = ("norm",) * (ndim - block)
    elif block and moe and key in _MOE:
        dims = _MOE[key]
    elif block and key in _BLOCK:
        dims = _BLOCK[key]
    elif not block and key in _TOP:
        dims = _TOP[key]
    else:
        raise ShardingError(f"parameter {name!r} has no logical axes in jaxinterp.model.sharding (add it there)")
    dims = ("layer",) * block + dims
    if len(dims) != ndim:
        raise ShardingError(f"parameter {name!r} has {ndim} dimensions, its logical axes {dims} have {len(dims)}")
    return dims


def param_dims(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """The logical axes of every float parameter of a model of ``cfg``, by pytree path
    (``"blocks.attn.W_Q"``: ``("layer", "head", "d_model", "d_head")``)."""
    return {name: _dims_of(name, len(shape), cfg.is_moe) for name, shape in param_shapes(cfg).items()}


def _check(mesh: Union[Mesh, AbstractMesh], rules: AxisRules) -> tuple[tuple[str, Optional[str]], ...]:
    if not isinstance(mesh, (Mesh, AbstractMesh)):
        raise ShardingError(f"mesh must be a jax.sharding.Mesh (or AbstractMesh), got {type(mesh).__name__}")
    if isinstance(rules, (str, dict)) or not isinstance(rules, (tuple, list)):
        raise ShardingError(f"rules must be a sequence of (logical axis, mesh axis) pairs, got {rules!r}")
    checked = []
    for rule in rules:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise ShardingError(f"each axis rule is a (logical axis, mesh axis or None) pair, got {rule!r}")
        logical, axis = rule
        if logical not in LOGICAL_AXES:
            raise ShardingError(f"axis rule {rule!r}: unknown logical axis {logical!r}; the axes are {LOGICAL_AXES}")
        if axis is not None and axis not in mesh.axis_names:
            raise ShardingError(
                f"axis rule {rule!r}: {axis!r} is not an axis of the mesh (its axes: {mesh.axis_names})"
            )
        checked.append((logical, axis))
    return tuple(checked)


def spec_for(
    dims: tuple[str, ...], shape: tuple[int, ...], mesh: Union[Mesh, AbstractMesh], rules: AxisRules = DEFAULT_RULES
) -> PartitionSpec:
    """The `PartitionSpec` of one array with logical axes ``dims`` and ``shape`` under
    ``rules``: each dimension takes the first rule for its logical axis whose mesh axis
    is still free in this array and whose size divides the dimension."""
    rules = _check(mesh, rules)
    used: set[str] = set()
    spec: list[Optional[str]] = []
    for dim, size in zip(dims, shape):
        chosen = None
        for logical, axis in rules:
            if logical == dim and axis is not None and axis not in used and size % mesh.shape[axis] == 0:
                chosen = axis
                break
        if chosen is not None:
            used.add(chosen)
        spec.append(chosen)
    return PartitionSpec(*spec)


def param_specs(
    cfg: ModelConfig, mesh: Union[Mesh, AbstractMesh], rules: AxisRules = DEFAULT_RULES
) -> dict[str, PartitionSpec]:
    """One `PartitionSpec` per float parameter of a model of ``cfg`` (by pytree path,
    e.g. ``"blocks.mlp.W_in"``), under ``rules`` on ``mesh``: what `shard_model` and
    ``load(..., mesh=)`` give each weight. A dimension the mesh axis does not divide
    stays whole (``None``). ``mesh`` may be a `jax.sharding.AbstractMesh` (shapes only:
    plan a pod's sharding on a laptop)."""
    shapes = param_shapes(cfg)
    return {
        name: spec_for(_dims_of(name, len(shape), cfg.is_moe), shape, mesh, rules) for name, shape in shapes.items()
    }


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules: AxisRules = DEFAULT_RULES) -> dict[str, NamedSharding]:
    """`param_specs` as `NamedSharding` objects on ``mesh`` (its axes made automatic: `auto_axes`)."""
    mesh = auto_axes(mesh)
    return {name: NamedSharding(mesh, spec) for name, spec in param_specs(cfg, mesh, rules).items()}


def auto_axes(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis automatic (XLA propagates shardings through the program,
    as jaxinterp's programs expect). ``jax.make_mesh`` makes explicit axes by default in
    recent JAX, under which indexing a sharded embedding needs an explicit output
    sharding; the same devices with automatic axes run the same programs."""
    if not isinstance(mesh, Mesh):
        raise ShardingError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def put(x, sharding: NamedSharding) -> jax.Array:
    """``x`` (a numpy or jax array, the same on every process) as a global array with
    ``sharding``. Each device receives only its own block, cut from ``x`` on the host,
    so no device holds more than its shard; this also works when the mesh spans several
    processes (`jax.distributed`), where each process builds only its addressable shards."""
    if isinstance(x, jax.core.Tracer):  # inside a jit: a constraint on the traced value
        return jax.lax.with_sharding_constraint(x, sharding)
    if isinstance(x, jax.Array):
        if x.sharding == sharding:
            return x
        if x.is_fully_addressable and sharding.is_fully_addressable:
            return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_model(model, mesh: Mesh, rules: AxisRules = DEFAULT_RULES):
    """``model`` with every weight placed on its sharding under ``rules`` (`param_specs`);
    other arrays (the per-layer attention windows) replicated over ``mesh``."""
    mesh = auto_axes(mesh)
    shardings = param_shardings(model.cfg, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(path, leaf):
        if not isinstance(leaf, (jax.Array, np.ndarray)):
            return leaf
        return put(leaf, shardings.get(path_name(path), replicated))

    return jax.tree_util.tree_map_with_path(place, model)


def model_parallel(mesh: Optional[Mesh]) -> bool:
    """Whether ``mesh`` has devices along an axis other than its first (the sweep axis):
    then weights may be sharded over it (the fast patching engine would gather them, so
    ``activation_patch(engine="auto")`` takes the plain engine)."""
    return mesh is not None and any(mesh.shape[a] > 1 for a in mesh.axis_names[1:])


def make_mesh(data: int = 1, model: Union[int, None] = None, devices=None) -> Mesh:
    """A 2-D ``("data", "model")`` mesh of ``data * model`` devices (``model=None``: all
    the devices not used by ``data``). Sweeps split their patches over ``"data"``; the
    default rules split weights over ``"model"``. With several processes
    (`jax.distributed`), ``jax.devices()`` lists every process's devices, process by
    process, so ``"data"`` spans the processes and ``"model"`` stays within one when
    ``model`` is at most a process's device count."""
    devices = list(jax.devices() if devices is None else devices)
    if model is None:
        if len(devices) % data:
            raise ShardingError(f"data={data} does not divide the {len(devices)} devices")
        model = len(devices) // data
    if data < 1 or model < 1 or data * model > len(devices):
        raise ShardingError(
            f"a {data} x {model} (data x model) mesh needs {data * model} devices; there are {len(devices)}"
        )
    return Mesh(np.array(devices[: data * model]).reshape(data, model), ("data", "model"))
