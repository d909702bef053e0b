"""JAX's persistent compilation cache in a per-user directory, and compile-time accounting.

Every new Python process compiles its programs again: 1-3 s per sweep program on a CPU,
more for a large model's. JAX can keep compiled programs on disk and load them in the
next process instead (its `persistent compilation cache
<https://docs.jax.dev/en/latest/persistent_compilation_cache.html>`_).
`enable_compilation_cache` turns it on in a user cache directory; the command line,
the demo and the examples call it at start-up, and importing jaxinterp never does (no
global side effects on import). ``JAXINTERP_NO_COMPILE_CACHE=1`` turns it off.

`CompileTimer` adds up the seconds JAX spends compiling (from `jax.monitoring`'s
compile-duration events), so a second run can show what the cache saved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import jax

__all__ = ["enable_compilation_cache", "default_cache_dir", "CompileTimer", "DISABLE_ENV", "DIR_ENV"]

DISABLE_ENV = "JAXINTERP_NO_COMPILE_CACHE"  # "1" (or any value but "", "0"): no cache
DIR_ENV = "JAXINTERP_COMPILE_CACHE_DIR"  # overrides the default directory

# JAX's event names (jax._src.dispatch): the XLA compile of a program (on a cache hit,
# the time to load it instead), tracing to a jaxpr, and lowering to StableHLO.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def cache_disabled() -> bool:
    """Whether ``JAXINTERP_NO_COMPILE_CACHE`` asks for no cache."""
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


def default_cache_dir() -> Path:
    """``$JAXINTERP_COMPILE_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxinterp/jax``, else
    ``~/.cache/jaxinterp/jax``."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxinterp" / "jax"


def enable_compilation_cache(
    path: Optional[str | os.PathLike] = None,
    min_compile_time_secs: float = 0.1,
    min_entry_size_bytes: int = 0,
) -> Optional[Path]:
    """Turn on JAX's on-disk compilation cache, so that programs compiled in one process
    load from disk in the next (a second run of a script starts warm).

    ``path``: the cache directory (created if missing); default `default_cache_dir`
    (``~/.cache/jaxinterp/jax``). ``min_compile_time_secs``: programs that compile faster
    than this are not written (JAX's default of 1 s skips most CPU sweep programs, which
    compile in 0.2-3 s; 0.1 s keeps the many one-op programs of eager code out).
    ``min_entry_size_bytes``: programs smaller than this are not written (0: any size).

    Returns the directory, or None without changing anything when the environment
    variable ``JAXINTERP_NO_COMPILE_CACHE`` is set (to anything but ``0``). Call it
    before the programs you want cached are compiled; it sets JAX's global
    configuration (``jax_compilation_cache_dir`` and the two thresholds), as
    ``jax.config.update`` would, for the rest of the process. Only a directory you
    trust: JAX runs what it loads from there.
    """
    if cache_disabled():
        return None
    directory = Path(path).expanduser() if path is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    return directory


class CompileTimer:
    """Seconds JAX spends compiling while it is active (a context manager, or `start` /
    `stop`), from `jax.monitoring` events: ``backend`` (XLA compiling, or loading a
    program from the persistent cache), ``trace`` (Python to jaxpr), ``lower`` (jaxpr
    to StableHLO), and ``cache_hits`` (programs loaded from the cache). Only the XLA
    part is what the persistent cache saves; tracing and lowering happen in every
    process."""

    def __init__(self):
        self.backend = self.trace = self.lower = 0.0
        self.programs = self.cache_hits = 0
        self._active = False

    @property
    def total(self) -> float:
        """All compile seconds: trace + lower + backend."""
        return self.backend + self.trace + self.lower

    def _on_duration(self, event: str, duration: float, **_) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.backend += duration
            self.programs += 1
        elif event == TRACE_EVENT:
            self.trace += duration
        elif event == LOWER_EVENT:
            self.lower += duration

    def _on_event(self, event: str, **_) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def start(self) -> CompileTimer:
        """Start counting (register the `jax.monitoring` listeners); returns self."""
        if not self._active:
            jax.monitoring.register_event_duration_secs_listener(self._on_duration)
            jax.monitoring.register_event_listener(self._on_event)
            self._active = True
        return self

    def stop(self) -> None:
        """Stop counting (unregister the listeners); the totals stay."""
        if self._active:
            jax.monitoring.unregister_event_duration_listener(self._on_duration)
            jax.monitoring.unregister_event_listener(self._on_event)
            self._active = False

    def __enter__(self) -> CompileTimer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
