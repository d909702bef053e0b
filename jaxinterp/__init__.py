"""jaxinterp: mechanistic interpretability of transformer language models in JAX."""

from .cache import ActivationCache
from .config import ModelConfig
from .loading import CheckpointError, UnsupportedArchitectureError, load
from .interventions import Ablate, Add, Fn, Intervention, InterventionError, Noise, Patch, ProjectOut, Scale
from .model import TokenError, Transformer
from .sites import SiteError, parse_site, to_full_name
from .tokenizer import Tokenizer, TokenizerError, load_tokenizer

# Technique modules, importable as attributes (``jaxinterp.patching.activation_patch``).
# viz, report, cli and demo are imported on use: they pull in matplotlib.
from . import (  # noqa: E402
    attribution, causal_tracing, circuits, detectors, embedding_space, factored_matrix, generate, labelled, lens,
    metrics, patching, path_patching, processing, steering, toy,
)
from .factored_matrix import FactoredMatrix  # noqa: E402
from .processing import process_weights  # noqa: E402

__all__ = [
    "load", "load_tokenizer", "Tokenizer", "TokenizerError", "CheckpointError", "UnsupportedArchitectureError", "ActivationCache", "ModelConfig", "Transformer", "TokenError", "SiteError", "parse_site", "to_full_name",
    "FactoredMatrix", "process_weights",
    "Intervention", "InterventionError", "Patch", "Add", "Ablate", "Scale", "ProjectOut", "Noise", "Fn",
]
