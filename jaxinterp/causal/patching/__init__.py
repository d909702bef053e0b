"""Activation patching: every location of a sweep in one compiled, memory-bounded program.

- `activation_patch`: patch clean activations into the corrupted run (or the reverse)
  one location at a time, over any per-layer site and axes; a `LabelledArray` back.
- `sweep`: the generic engine, ``fn`` vmapped over locations in chunks under one jit.

Two engines give the same numbers: the plain one (one vmapped forward per patch, any
model) and the fast one (causal models: recompute only layers from the patch on and
positions from the patch on, packed into fixed-size blocks that one compiled layer
runs).
"""

from ...core.readout import Readout, readout_for
from ...engine.sweep import map_chunks, sweep
from .activation import activation_patch
from .engines import Fast, PatchingEngine, Plain
from .locations import PatchGrid, PatchingError, patch_grid
from .normalized import patching_sweep, sweep_axes

__all__ = [
    "activation_patch",
    "Fast",
    "Plain",
    "PatchingEngine",
    "patching_sweep",
    "sweep_axes",
    "sweep",
    "map_chunks",
    "PatchingError",
    "PatchGrid",
    "patch_grid",
    "Readout",
    "readout_for",
]
