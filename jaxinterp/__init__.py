"""jaxinterp: mechanistic interpretability of transformer language models in JAX."""

from .cache import ActivationCache
from .config import ModelConfig
from .loading import CheckpointError, UnsupportedArchitectureError, load
from .interventions import Ablate, Add, Fn, Intervention, InterventionError, Noise, Patch, ProjectOut, Scale
from .model import TokenError, Transformer
from .sites import SiteError, parse_site, to_full_name
from .tokenizer import Tokenizer, TokenizerError, load_tokenizer

__all__ = [
    "load", "load_tokenizer", "Tokenizer", "TokenizerError", "CheckpointError", "UnsupportedArchitectureError", "ActivationCache", "ModelConfig", "Transformer", "TokenError", "SiteError", "parse_site", "to_full_name",
    "Intervention", "InterventionError", "Patch", "Add", "Ablate", "Scale", "ProjectOut", "Noise", "Fn",
]
