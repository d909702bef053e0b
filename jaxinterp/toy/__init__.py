"""Toy models and synthetic tasks for testing interpretability methods on known
mechanisms. `induction`: a 2-layer attention-only model trained to form induction heads;
`random_init`: numpy-drawn random weights (no jax.random compiles) for toys and tests;
`superposition` (+ `superposition_metrics`, `superposition_phase`): toy models of
superposition (Elhage et al. 2022), trained many at once in one compiled call."""

from .induction import induction_config, next_token_losses, periodic_random_tokens, repeated_half_loss, train_induction_model
from .random_init import random_model
from .superposition import (
    AbstractTMS, LinearTMS, ReLUOutputTMS, TMSError, TMSRun, importance_powers, init_tms, sparse_features, tms_grid,
    tms_loss, train_tms,
)
from .superposition_metrics import dimensions_per_feature, feature_dimensionality, feature_norms, gram, superposition
from .superposition_phase import (
    PhaseDiagram, analytic_boundaries, analytic_losses, analytic_phase, classify_phase, train_phase_diagram,
)

__all__ = [
    "induction_config", "periodic_random_tokens", "next_token_losses", "repeated_half_loss", "train_induction_model",
    "random_model",
    "TMSError", "AbstractTMS", "ReLUOutputTMS", "LinearTMS", "init_tms", "sparse_features", "importance_powers",
    "tms_loss", "TMSRun", "train_tms", "tms_grid",
    "gram", "feature_norms", "superposition", "feature_dimensionality", "dimensions_per_feature",
    "classify_phase", "analytic_losses", "analytic_phase", "analytic_boundaries", "PhaseDiagram", "train_phase_diagram",
]
