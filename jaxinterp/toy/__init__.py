"""Toy models and synthetic tasks for testing interpretability methods on known
mechanisms. `induction`: a 2-layer attention-only model trained to form induction heads."""

from .induction import induction_config, repeated_half_loss, train_induction_model

__all__ = ["induction_config", "repeated_half_loss", "train_induction_model"]
