"""Old module paths kept importable after the regrouping into layers (deprecated).

``jaxinterp.patching`` now lives at ``jaxinterp.causal.patching``, ``jaxinterp.circuits``
at ``jaxinterp.analysis.circuits``, and so on. `AliasFinder` answers an import of an old
path (or of a submodule under it) with the module at its new path: the *same* module
object, so classes keep one identity whichever path imported them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

# Old path -> new path (prefixes: submodules follow their package).
ALIASES = {
    "jaxinterp.config": "jaxinterp.core.config",
    "jaxinterp.sites": "jaxinterp.core.sites",
    "jaxinterp.labelled": "jaxinterp.core.labelled",
    "jaxinterp.metrics": "jaxinterp.core.metrics",
    "jaxinterp.errors": "jaxinterp.core.errors",
    "jaxinterp.interventions": "jaxinterp.model.interventions",
    "jaxinterp.cache": "jaxinterp.model.cache",
    "jaxinterp.tokenizer": "jaxinterp.loading.tokenizer",
    "jaxinterp.patching": "jaxinterp.causal.patching",
    "jaxinterp.attribution": "jaxinterp.causal.attribution",
    "jaxinterp.path_patching": "jaxinterp.causal.path_patching",
    "jaxinterp.causal_tracing": "jaxinterp.causal.causal_tracing",
    "jaxinterp.circuits": "jaxinterp.analysis.circuits",
    "jaxinterp.factored_matrix": "jaxinterp.analysis.factored_matrix",
    "jaxinterp.detectors": "jaxinterp.analysis.detectors",
    "jaxinterp.lens": "jaxinterp.analysis.lens",
    "jaxinterp.embedding_space": "jaxinterp.analysis.embedding_space",
    "jaxinterp.processing": "jaxinterp.analysis.processing",
    "jaxinterp.report": "jaxinterp.viz.report",
    "jaxinterp.cli": "jaxinterp.apps.cli",
    "jaxinterp.generate": "jaxinterp.editing.greedy",
    "jaxinterp.steering": "jaxinterp.editing.steering",
    "jaxinterp.demo": "jaxinterp.apps.demo",
}


def new_name(old: str):
    """The current module path for an old one, or None if ``old`` is not an alias."""
    for prefix, target in ALIASES.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its new name; the import system set the alias's spec
        # on it: give the module its own back.
        module.__spec__ = self.spec


class AliasFinder(importlib.abc.MetaPathFinder):
    """Finds old module paths and hands back the module at the new path."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new), is_package=True)


def install() -> None:
    """Put the finder on ``sys.meta_path`` once per interpreter."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())  # before the path finder, which would load a second copy
