"""jaxinterp: mechanistic interpretability of transformer language models in JAX.

The package is layered (docs/architecture.md): ``core`` (config, sites, metrics, errors)
< ``model`` (the Transformer, interventions, hooks, cache) < ``loading`` < ``engine``
(sweeps, gradients) < ``toy`` < the technique groups ``causal``, ``analysis``, ``editing``,
``features`` < ``viz`` < ``apps``. The names below are eager; the technique groups and
their modules load on first attribute access (``jaxinterp.causal.patching.activation_patch``).
"""

import importlib as _importlib

from . import _aliases
from .core.config import ModelConfig
from .core.errors import (
    CheckpointError,
    ConfigError,
    InterventionError,
    JaxinterpError,
    MetricError,
    PromptPairError,
    ResumeError,
    SiteError,
    TokenError,
    TokenizerError,
    UnsupportedArchitectureError,
)
from .core.sites import get_act_name, parse_site, to_full_name
from .loading import load
from .loading.tokenizer import Tokenizer, load_tokenizer
from .model import Transformer
from .model.cache import ActivationCache
from .model.interventions import Ablate, Add, Fn, Intervention, Noise, Patch, ProjectOut, Scale, Where

_aliases.install()

# Loaded on first access: attribute name -> module path.
_LAZY = {
    "core": "jaxinterp.core",
    "model": "jaxinterp.model",
    "loading": "jaxinterp.loading",
    "engine": "jaxinterp.engine",
    "causal": "jaxinterp.causal",
    "analysis": "jaxinterp.analysis",
    "editing": "jaxinterp.editing",
    "features": "jaxinterp.features",
    "toy": "jaxinterp.toy",
    "viz": "jaxinterp.viz",
    "apps": "jaxinterp.apps",
    **{old.split(".", 1)[1]: new for old, new in _aliases.ALIASES.items()},
}
_LAZY_NAMES = {
    "FactoredMatrix": ("jaxinterp.analysis.factored_matrix", "FactoredMatrix"),
    "process_weights": ("jaxinterp.analysis.processing", "process_weights"),
    # Importing jaxinterp changes no JAX setting: the cache is on only when this is called.
    "enable_compilation_cache": ("jaxinterp.engine.compile_cache", "enable_compilation_cache"),
}


def __getattr__(name):
    if name in _LAZY:
        return _importlib.import_module(_LAZY[name])
    if name in _LAZY_NAMES:
        module, attr = _LAZY_NAMES[name]
        return getattr(_importlib.import_module(module), attr)
    raise AttributeError(f"module 'jaxinterp' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_LAZY_NAMES))


__all__ = [
    "load",
    "load_tokenizer",
    "Tokenizer",
    "ActivationCache",
    "ModelConfig",
    "Transformer",
    "parse_site",
    "to_full_name",
    "get_act_name",
    "FactoredMatrix",
    "process_weights",
    "enable_compilation_cache",
    "Intervention",
    "Where",
    "Patch",
    "Add",
    "Ablate",
    "Scale",
    "ProjectOut",
    "Noise",
    "Fn",
    "JaxinterpError",
    "ConfigError",
    "SiteError",
    "TokenError",
    "InterventionError",
    "MetricError",
    "PromptPairError",
    "CheckpointError",
    "UnsupportedArchitectureError",
    "TokenizerError",
    "ResumeError",
]
