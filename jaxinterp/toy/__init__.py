"""Toy models and synthetic tasks for testing interpretability methods on known
mechanisms. `induction`: a 2-layer attention-only model trained to form induction heads;
`random_init`: numpy-drawn random weights (no jax.random compiles) for toys and tests;
`superposition` (+ `superposition_metrics`, `superposition_phase`): toy models of
superposition (Elhage et al. 2022), trained many at once in one compiled call; `lm`,
`corpus`, `bpe`, `bigram`: toy language models on real text (0-layer bigram and 1-layer
attention-only models, many seeds in one vmapped optax loop); `shipped`: the small trained
toys that ship with the package (``load("attn-only-1l")``), regenerated bit for bit by
``python -m jaxinterp.toy.make``."""

from .bigram import bigram_counts, bigram_entropy, bigram_kl, model_next_token_logprobs
from .bpe import save_tokenizer, train_bpe_tokenizer
from .corpus import CorpusError, read_corpus, shakespeare_texts, split_heldout
from .induction import (
    induction_config,
    next_token_losses,
    periodic_random_tokens,
    repeated_half_loss,
    train_induction_model,
)
from .lm import (
    LMRun,
    ToyLMError,
    attn_only_config,
    bigram_config,
    encode_corpus,
    mlp_config,
    sequence_losses,
    train_lms,
    unstack,
)
from .random_init import random_model
from .shipped import ToyLoadError, load, save_toy, toy_info
from .superposition import (
    AbstractTMS,
    LinearTMS,
    ReLUOutputTMS,
    TMSError,
    TMSRun,
    importance_powers,
    init_tms,
    sparse_features,
    tms_grid,
    tms_loss,
    train_tms,
)
from .superposition_metrics import dimensions_per_feature, feature_dimensionality, feature_norms, gram, superposition
from .superposition_phase import (
    PhaseDiagram,
    analytic_boundaries,
    analytic_losses,
    analytic_phase,
    classify_phase,
    train_phase_diagram,
)

__all__ = [
    "induction_config",
    "periodic_random_tokens",
    "next_token_losses",
    "repeated_half_loss",
    "train_induction_model",
    "random_model",
    "load",
    "save_toy",
    "toy_info",
    "ToyLoadError",
    "ToyLMError",
    "bigram_config",
    "attn_only_config",
    "mlp_config",
    "encode_corpus",
    "LMRun",
    "train_lms",
    "unstack",
    "sequence_losses",
    "CorpusError",
    "read_corpus",
    "shakespeare_texts",
    "split_heldout",
    "train_bpe_tokenizer",
    "save_tokenizer",
    "bigram_counts",
    "bigram_entropy",
    "model_next_token_logprobs",
    "bigram_kl",
    "TMSError",
    "AbstractTMS",
    "ReLUOutputTMS",
    "LinearTMS",
    "init_tms",
    "sparse_features",
    "importance_powers",
    "tms_loss",
    "TMSRun",
    "train_tms",
    "tms_grid",
    "gram",
    "feature_norms",
    "superposition",
    "feature_dimensionality",
    "dimensions_per_feature",
    "classify_phase",
    "analytic_losses",
    "analytic_phase",
    "analytic_boundaries",
    "PhaseDiagram",
    "train_phase_diagram",
]
