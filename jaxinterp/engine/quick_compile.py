"""Compiling for speed of compiling.

XLA's CPU backend spends most of its compile time having LLVM optimise elementwise
kernels. Without that optimisation a program compiles several times (up to ~20x) faster
but runs GELU, norms and copies several times slower, so it pays only for small
programs, where compile time dominates: below `QUICK_COMPILE_FLOPS` of work on CPU.
The fast patching engine, causal tracing and image feature visualisation share this.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax

QUICK_COMPILE_FLOPS = 2e10
# Older/newer XLA builds lack some options: each set is tried in turn, fewest last.
QUICK_COMPILE_OPTION_SETS = (
    {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False},
    {"xla_backend_optimization_level": 0},
)
QUICK_COMPILE_OPTIONS = QUICK_COMPILE_OPTION_SETS[0]


def wants_quick(quick_compile: Optional[bool], flops: float) -> bool:
    """``quick_compile`` if given, else whether ``flops`` of work is small on CPU."""
    if quick_compile is None:
        return flops < QUICK_COMPILE_FLOPS and jax.default_backend() == "cpu"
    return bool(quick_compile)


def quick_jits(fn: Callable, **jit_kwargs) -> list:
    """``jax.jit(fn, **jit_kwargs)`` once per option set of `QUICK_COMPILE_OPTION_SETS`."""
    return [jax.jit(fn, compiler_options=options, **jit_kwargs) for options in QUICK_COMPILE_OPTION_SETS]


def call_first_supported(programs: Sequence[Callable], *args, **kwargs):
    """Call the first of ``programs`` whose compile options this XLA build accepts (the
    last one is called unguarded)."""
    for program in programs[:-1]:
        try:
            return program(*args, **kwargs)
        except Exception as error:
            if "compile option" not in str(error):
                raise
    return programs[-1](*args, **kwargs)


class QuickCompiled:
    """``fn`` jitted twice over: normally (``.program``) and for speed of compiling
    (``.quick``, one per option set), used when asked to or, by default, when the work is
    small on CPU (`wants_quick`)."""

    def __init__(self, fn: Callable, static_argnames: tuple):
        self.program = jax.jit(fn, static_argnames=static_argnames)
        self.quick = quick_jits(fn, static_argnames=static_argnames)

    def __call__(self, flops: float, quick_compile: Optional[bool], *args, **static):
        if wants_quick(quick_compile, flops):
            return call_first_supported([*self.quick, self.program], *args, **static)
        return self.program(*args, **static)
