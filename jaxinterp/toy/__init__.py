"""Toy models and synthetic tasks for testing interpretability methods on known
mechanisms. `induction`: a 2-layer attention-only model trained to form induction heads;
`random_init`: numpy-drawn random weights (no jax.random compiles) for toys and tests."""

from .induction import induction_config, next_token_losses, periodic_random_tokens, repeated_half_loss, train_induction_model
from .random_init import random_model

__all__ = [
    "induction_config", "periodic_random_tokens", "next_token_losses", "repeated_half_loss", "train_induction_model",
    "random_model",
]
