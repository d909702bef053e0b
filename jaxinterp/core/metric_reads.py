"""What a plain metric function reads of the logits, from its jaxpr.

A metric written as a plain function (``lambda logits: logits[-1, a] - logits[-1, b]``)
declares nothing, yet sweeps are much cheaper when they compute only the logits it
reads. `infer_reads` traces the function on ``[n_pos, d_vocab]`` logits and follows,
equation by equation, which logit entries each value of the program can depend on:

* indexing and reshaping (``slice``, ``squeeze``, ``reshape``, ``transpose``,
  ``broadcast_in_dim``, ``gather`` / ``dynamic_slice`` with indices that do not depend on
  the logits, ``concatenate``, ``pad``, ``select_n`` with a constant predicate, ...) are
  replayed on an int array of logit indices, so each element keeps the one entry it
  copies;
* elementwise ops (``sub``, ``exp``, comparisons, ``select_n`` with a predicate that
  depends on the logits, ...) give each element the union of its operands' entries at
  that element;
* nested jits and custom-derivative functions (``jax.nn.log_softmax``) are followed
  inside;
* every other op -- reductions, ``argmax``, control flow, indexing whose indices depend on
  the logits -- gives every output element the union of everything its inputs depend on.

The result is the set of logit entries the output can depend on, whatever the values:
an op's outputs are functions of its inputs only, so the union is an over-approximation,
never an under-approximation. A branch not taken (``jnp.where(logits[-1, 0] > 0,
logits[3, 5], 0)``) still counts (gradient sparsity would miss it). What cannot be
analysed -- a function that fails to trace, a program with side effects (mutable state,
callbacks), logits too large to index -- gives None: the sweep then computes every logit
and logs one line (`NOTICE`) naming why.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

__all__ = ["infer_reads", "Inferred", "MAX_ENTRIES", "LOGGER"]

LOGGER = logging.getLogger("jaxinterp.metrics")
"""The logger of the one-line notice a metric that cannot be analysed gives (WARNING)."""

MAX_ENTRIES = 1 << 26
"""Largest ``n_pos * d_vocab`` analysed (the analysis holds one int per logit entry)."""

_MAX_UNION = 32  # entries one element may keep exactly before it becomes a set of the whole value

# Ops replayed on the index array: each output element copies one input element (or a
# constant). Operands other than the first that do not depend on the logits are passed as they are.
_STRUCTURAL = {
    "slice",
    "squeeze",
    "reshape",
    "transpose",
    "broadcast_in_dim",
    "rev",
    "dynamic_slice",
    "gather",
    "split",
}
_IDENTITY = {"convert_element_type", "copy", "copy_p", "reduce_precision", "stop_gradient", "optimization_barrier"}
_ELEMENTWISE = {
    *"add sub mul div rem pow max min neg exp exp2 log log1p expm1 tanh logistic sin cos tan asin acos atan".split(),
    *"atan2 sinh cosh asinh acosh atanh sqrt rsqrt cbrt abs sign floor ceil round is_finite integer_pow".split(),
    *"square erf erfc erf_inv lgamma digamma nextafter eq ne lt le gt ge and or not xor select_n clamp".split(),
    *"real imag conj shift_left shift_right_logical shift_right_arithmetic population_count clz".split(),
}
_REDUCTIONS = {
    *"reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin".split(),
    *"cumsum cumprod cummax cummin cumlogsumexp dot_general sort top_k".split(),
}
_AXIS_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"}
_CALLS = {
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "checkpoint",
    "remat",
    "remat2",
}


@dataclasses.dataclass(frozen=True)
class Inferred:
    """``reads``: ``(positions, token ids or None)`` (non-negative, sorted), or None when
    every logit may be read or nothing could be established; ``why``: why it is None."""

    reads: Optional[tuple]
    why: str = ""


class _Known:
    """A value that does not depend on the logits (evaluated)."""

    def __init__(self, value):
        self.value = value


class _Entries:
    """Per element, the logit entries it depends on: ``idx [*shape, k]`` flat indices
    into the logits (negative: none)."""

    def __init__(self, idx: np.ndarray):
        self.idx = idx

    def deps(self) -> np.ndarray:
        return np.unique(self.idx[self.idx >= 0])


class _Somewhere:
    """Every element may depend on any of ``flat`` (sorted unique flat indices)."""

    def __init__(self, flat: np.ndarray):
        self.flat = flat

    def deps(self) -> np.ndarray:
        return self.flat


def _deps(v) -> np.ndarray:
    return np.zeros(0, np.int64) if isinstance(v, _Known) else v.deps()


class _Unsupported(Exception):
    """The program cannot be analysed (the message says why)."""


class _Analysis:
    """Codes of the index arrays: ``0 .. n_pos*d_vocab-1`` a logit entry (flat), then
    ``n_pos`` codes for "a whole row" and ``d_vocab`` for "a whole column"; negative: none."""

    def __init__(self, n_pos: int, d_vocab: int):
        self.n_pos, self.d_vocab, self.n_entries = n_pos, d_vocab, n_pos * d_vocab
        self.lossy: list = []  # ops where the analysis gave up precision: named in the notice

    def entries(self, codes: np.ndarray) -> tuple:
        """``(positions, columns)`` the ``codes`` cover (sorted; None: every column)."""
        n, n_pos, d_vocab = self.n_entries, self.n_pos, self.d_vocab
        entry, row, col = codes[codes < n], codes[(codes >= n) & (codes < n + n_pos)] - n, codes[codes >= n + n_pos]
        positions = np.union1d(entry // d_vocab, row)
        if col.size:
            positions = np.arange(n_pos)
        columns = None if row.size else np.union1d(entry % d_vocab, col - n - n_pos)
        return positions, columns

    def run(self, jaxpr, consts, args) -> list:
        env: dict = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return _Known(v.val)
            return env[v]

        for var, c in zip(jaxpr.constvars, consts):
            env[var] = _Known(c)
        for var, a in zip(jaxpr.invars, args):
            env[var] = a
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.equation(eqn, ins)
            for var, out in zip(eqn.outvars, outs):
                env[var] = out
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn, ins) -> list:
        prim, name = eqn.primitive, eqn.primitive.name
        if eqn.effects:
            raise _Unsupported(f"{name!r} has side effects")
        if all(isinstance(a, _Known) for a in ins):
            out = _numpy_known(eqn, [a.value for a in ins])
            if out is not None:
                return [_Known(out)]
            bind = prim.get_bind_params(eqn.params)  # params, or (subfuns, params) in older JAX
            subfuns, params = ([], bind) if isinstance(bind, dict) else bind
            out = prim.bind(*subfuns, *[a.value for a in ins], **params)
            return [_Known(o) for o in out] if prim.multiple_results else [_Known(out)]
        n_out = len(eqn.outvars)
        if name in _IDENTITY and n_out == len(ins):
            return list(ins)
        if name in _CALLS:
            sub = _sub_jaxpr(eqn)
            if sub is not None:
                return self.run(sub[0], sub[1], ins)
        if name == "cond":  # any branch may run: the union of the branches' and the index's
            outs = [self.run(b.jaxpr, b.consts, ins[1:]) for b in eqn.params["branches"]]
            return [
                _Somewhere(functools.reduce(np.union1d, [_deps(ins[0])] + [_deps(o[i]) for o in outs]))
                for i in range(n_out)
            ]
        if name in _STRUCTURAL and isinstance(ins[0], _Entries) and all(isinstance(a, _Known) for a in ins[1:]):
            return self.replay(eqn, ins)
        if name in ("concatenate", "pad", "dynamic_update_slice") and _dependent_are_entries(eqn, ins):
            return self.replay(eqn, ins)
        if name == "select_n" and isinstance(ins[0], _Known) and _dependent_are_entries(eqn, ins):
            return self.replay(eqn, ins)
        if name in _ELEMENTWISE and n_out == 1 and all(not isinstance(a, _Somewhere) for a in ins):
            return [self.elementwise(eqn, ins)]
        if name in _AXIS_REDUCTIONS and len(ins) == 1 and isinstance(ins[0], _Entries):
            out = self.reduce(ins[0], tuple(eqn.params["axes"]), tuple(eqn.outvars[0].aval.shape))
            if out is not None:
                return [out]
        # Anything else: each output may depend on everything the inputs depend on. That
        # is what a reduction does; elsewhere (indices or control flow that depend on the
        # logits, ops not listed here) it may be much more than the op reads: noted.
        if name not in _REDUCTIONS and any(isinstance(a, _Entries) for a in ins):
            self.lossy.append(name)
        flat = functools.reduce(np.union1d, [_deps(a) for a in ins])
        return [_Somewhere(flat) for _ in eqn.outvars]

    def replay(self, eqn, ins) -> list:
        """Run the op itself on the index arrays (one per slot of ``k``); operands that
        do not depend on the logits keep their values, except the data operands of
        concatenate / pad / dynamic_update_slice / select_n, which become -1 (no entry)."""
        name = eqn.primitive.name
        data = _data_operands(name, len(ins))
        k = max(a.idx.shape[-1] for a in ins if isinstance(a, _Entries))
        params = dict(eqn.params)
        if name == "gather" and "FILL" in str(params.get("mode")):
            params["fill_value"] = -1  # an index out of bounds reads no entry
        outs_per_slot = []
        for j in range(k):
            args = []
            for i, (a, var) in enumerate(zip(ins, eqn.invars)):
                if isinstance(a, _Entries):
                    slot = a.idx[..., j] if j < a.idx.shape[-1] else np.full(a.idx.shape[:-1], -1)
                    args.append(slot.astype(np.int32))
                elif i in data:
                    args.append(np.full(np.shape(a.value), -1, np.int32))
                else:
                    args.append(a.value)
            out = _numpy_op(name, params, args)
            if out is None:  # no numpy twin: the op itself, on int arrays
                out = eqn.primitive.bind(*[jnp.asarray(x) if isinstance(x, np.ndarray) else x for x in args], **params)
            outs_per_slot.append(out if eqn.primitive.multiple_results else [out])
        return [
            _Entries(np.stack([np.asarray(slot[o]) for slot in outs_per_slot], axis=-1).astype(np.int64))
            for o in range(len(eqn.outvars))
        ]

    def reduce(self, a: _Entries, axes: tuple, shape: tuple) -> Optional[_Entries]:
        """A reduction over ``axes``: each output element depends on the entries of its
        reduced fibre (kept exactly while few, else as a whole row or column, see
        `collapse`). None where a fibre spans several rows and columns."""
        fibres = np.moveaxis(a.idx, axes, tuple(range(-len(axes) - 1, -1))).reshape(shape + (-1,))
        return _Entries(fibres) if fibres.shape[-1] <= _MAX_UNION else self.collapse(fibres)

    def collapse(self, x: np.ndarray) -> Optional[_Entries]:
        """``x [..., m]`` codes per element as one code per element: the whole row when all
        of an element's entries lie in one row of the logits, else the whole column when in
        one column (an over-approximation); None where an element's span several of both."""
        n, n_pos, d_vocab = self.n_entries, self.n_pos, self.d_vocab
        valid = x >= 0
        entry, row_code = valid & (x < n), (x >= n) & (x < n + n_pos)
        rows = np.where(entry, x // d_vocab, np.where(row_code, x - n, -1))  # -1: a column code
        cols = np.where(entry, x % d_vocab, np.where(row_code, -1, x - n - n_pos))
        out = np.full(x.shape[:-1], -1, np.int64)
        for values, code in ((rows, n), (cols, n + n_pos)):
            big, small = np.where(valid, values, -2).max(-1), np.where(valid, values, 1 << 62).min(-1)
            one = (big == small) & (small >= 0)
            out = np.where((out < 0) & one, code + small, out)
        if np.any((out < 0) & valid.any(-1)):
            return None
        return _Entries(out[..., None])

    def elementwise(self, eqn, ins) -> "_Entries | _Somewhere":
        shape = tuple(eqn.outvars[0].aval.shape)
        parts = []
        for a in ins:
            if isinstance(a, _Entries):
                idx = a.idx.reshape((1,) * (len(shape) - (a.idx.ndim - 1)) + a.idx.shape)
                parts.append(np.broadcast_to(idx, shape + (idx.shape[-1],)))
        idx = np.concatenate(parts, axis=-1)
        if idx.shape[-1] <= _MAX_UNION:
            return _Entries(idx)
        collapsed = self.collapse(idx)
        return collapsed if collapsed is not None else _Somewhere(_deps(_Entries(idx)))


def _numpy_op(name: str, params: dict, args: list):
    """``name`` on int numpy arrays, for the ops whose numpy form is plain (else None)."""
    if not args:  # iota and other ops without operands: JAX's own
        return None
    x = args[0]
    if name == "slice":
        strides = params["strides"] or (1,) * x.ndim
        return x[tuple(slice(*t) for t in zip(params["start_indices"], params["limit_indices"], strides))]
    if name == "squeeze":
        return np.squeeze(x, axis=tuple(params["dimensions"]))
    if name == "reshape" and params.get("dimensions") is None:
        return x.reshape(params["new_sizes"])
    if name == "transpose":
        return np.transpose(x, params["permutation"])
    if name == "rev":
        return np.flip(x, axis=tuple(params["dimensions"]))
    if name == "broadcast_in_dim":
        shape = list(params["shape"])
        expanded = [1] * len(shape)
        for i, d in enumerate(params["broadcast_dimensions"]):
            expanded[d] = x.shape[i]
        return np.broadcast_to(x.reshape(expanded), shape)
    if name == "concatenate":
        return np.concatenate(args, axis=params["dimension"])
    if name == "select_n":
        pred = np.asarray(args[0]).astype(np.int32)
        return np.choose(pred, [np.broadcast_to(c, np.broadcast_shapes(pred.shape, c.shape)) for c in args[1:]])
    return None


_NUMPY_ELEMENTWISE = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "neg": np.negative,
    "max": np.maximum,
    "min": np.minimum,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "eq": np.equal,
    "ne": np.not_equal,
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "not": np.invert,
}


def _numpy_known(eqn, values: list):
    """A small op on known integer / bool values in numpy (index arithmetic: ``a % n``,
    ``jnp.array([a, b])``), which eager JAX would compile op by op; None otherwise."""
    (out,) = eqn.outvars if len(eqn.outvars) == 1 else (None,)
    if out is None or not (np.issubdtype(out.aval.dtype, np.integer) or out.aval.dtype == np.bool_):
        return None
    try:
        args = [np.asarray(v) for v in values]
    except Exception:  # noqa: BLE001 - e.g. PRNG keys: leave them to JAX
        return None
    if any(a.size > 4096 or not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_) for a in args):
        return None
    name = eqn.primitive.name
    if name in _NUMPY_ELEMENTWISE:
        result = _NUMPY_ELEMENTWISE[name](*args)
    elif name == "convert_element_type":
        result = args[0]
    else:
        result = _numpy_op(name, eqn.params, args)
    return None if result is None else np.asarray(result).astype(out.aval.dtype)


def _data_operands(name: str, n: int) -> set:
    """Operands of a replayed op that carry data (the rest are indices / predicates / sizes)."""
    return {
        "concatenate": set(range(n)),
        "pad": {0, 1},
        "dynamic_update_slice": {0, 1},
        "select_n": set(range(1, n)),
    }.get(name, {0})


def _dependent_are_entries(eqn, ins) -> bool:
    """Whether the op can be replayed: every operand that depends on the logits carries
    data (not an index or predicate) and is known per element."""
    data = _data_operands(eqn.primitive.name, len(ins))
    return all(isinstance(a, _Known) or (i in data and isinstance(a, _Entries)) for i, a in enumerate(ins))


def _sub_jaxpr(eqn):
    """``(jaxpr, consts)`` a call-like op runs, if it has one with its operands' arity."""
    for value in eqn.params.values():
        if isinstance(value, jcore.ClosedJaxpr):
            jaxpr, consts = value.jaxpr, value.consts
        elif isinstance(value, jcore.Jaxpr):
            jaxpr, consts = value, []
        else:
            continue
        if len(jaxpr.invars) == len(eqn.invars) and len(jaxpr.outvars) == len(eqn.outvars):
            return jaxpr, consts
    return None


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


@functools.lru_cache(maxsize=256)
def _cached(fn: Callable, n_pos: int, d_vocab: int) -> Inferred:
    return _infer(fn, n_pos, d_vocab)


def infer_reads(fn: Callable, n_pos: int, d_vocab: int) -> Inferred:
    """The logit entries ``fn(logits [n_pos, d_vocab] float32) -> scalar`` can depend on,
    as ``Inferred(reads=(positions, token ids or None))``; ``reads=None`` when they are
    every entry or cannot be established (then one WARNING line on `LOGGER` says why,
    once per function and shape)."""
    try:
        hash(fn)
    except TypeError:
        return _infer(fn, n_pos, d_vocab)
    return _cached(fn, n_pos, d_vocab)


def _infer(fn: Callable, n_pos: int, d_vocab: int) -> Inferred:
    result = _analyse(fn, n_pos, d_vocab)
    if result.reads is None and result.why:
        LOGGER.warning(
            "jaxinterp: metric %s: %s; computing every logit (declare what it reads with "
            "custom(fn, reads=(positions, token_ids)) to skip the rest)",
            _name(fn),
            result.why,
        )
    return result


def _analyse(fn: Callable, n_pos: int, d_vocab: int) -> Inferred:
    if n_pos * d_vocab > MAX_ENTRIES:
        return Inferred(None, f"logits of {n_pos}x{d_vocab} are too large to analyse which it reads")
    try:
        closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((n_pos, d_vocab), jnp.float32))
    except Exception as error:  # noqa: BLE001 - any failure to trace means "unknown"
        return Inferred(None, f"could not trace it to see which logits it reads ({type(error).__name__})")
    if closed.effects:
        return Inferred(None, "it has side effects (callbacks or state), so what it reads cannot be established")
    if len(closed.jaxpr.outvars) != 1:
        return Inferred(None, "it does not return one value")
    analysis = _Analysis(n_pos, d_vocab)
    root = _Entries(np.arange(n_pos * d_vocab, dtype=np.int64).reshape(n_pos, d_vocab, 1))
    try:
        with jax.ensure_compile_time_eval():
            (out,) = analysis.run(closed.jaxpr, closed.consts, [root])
    except _Unsupported as error:
        return Inferred(None, f"{error}, so what it reads cannot be established")
    except Exception as error:  # noqa: BLE001 - an op the analysis cannot replay: unknown
        return Inferred(None, f"its program could not be analysed ({type(error).__name__}: {error})")
    deps = _deps(out)
    if deps.size == 0:
        return Inferred(None, "it reads no logits")
    positions, columns = analysis.entries(deps)
    if columns is not None and len(columns) == d_vocab:
        columns = None
    if len(positions) == n_pos and columns is None:
        if analysis.lossy:
            ops = ", ".join(dict.fromkeys(analysis.lossy))
            return Inferred(None, f"it may read every logit, as far as its program shows (through {ops})")
        return Inferred(None)  # it does read every logit (e.g. logits.mean()): nothing to say
    ids = None if columns is None else tuple(int(c) for c in columns)
    return Inferred((tuple(int(p) for p in positions), ids))
