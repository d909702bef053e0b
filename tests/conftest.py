"""Shared fixtures. Tiny HF reference models are built once per session with
transformers + torch, saved to a temp dir, and loaded back with jaxinterp."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax

jax.config.update("jax_default_matmul_precision", "highest")
