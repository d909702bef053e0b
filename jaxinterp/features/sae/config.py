"""What an SAE reads and writes: its sizes, sites and the pre-encoder bias choice."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from .errors import SAEError

__all__ = ["SAEConfig"]


@dataclass(frozen=True)
class SAEConfig:
    """Static description of a sparse autoencoder or transcoder (hashable, so it can be a
    static field of the module).

    ``d_in``: width of the input activation; ``d_sae``: number of latents (features);
    ``d_out``: width of the reconstruction target (``None``: ``d_in``).
    ``site`` / ``layer``: where the input is read (a per-layer short site name, e.g.
    ``"resid_pre"``, ``"ln2.normalized"``). ``target_site``: the activation the decoder
    reconstructs (``None``: ``site``, an autoencoder). A *transcoder* is an SAE whose
    target differs from its input: input ``ln2.normalized`` -> target ``mlp_out``.
    ``apply_b_dec_to_input``: subtract the decoder bias from the input before encoding
    (the "tied" pre-encoder bias of Towards Monosemanticity); only meaningful when the
    input and target are the same activation, so transcoders must leave it ``False``.
    ``unit_norm_decoder``: training keeps each latent's decoder row at unit norm (the
    gradient's component along the row is removed and rows are renormalised each step).
    """

    d_in: int
    d_sae: int
    site: str = "resid_pre"
    layer: int = 0
    target_site: Optional[str] = None
    d_out: Optional[int] = None
    apply_b_dec_to_input: bool = True
    unit_norm_decoder: bool = True

    def __post_init__(self):
        for name in ("d_in", "d_sae"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SAEError(f"SAEConfig.{name} must be a positive int, got {v!r}")
        if self.d_out is not None and (not isinstance(self.d_out, int) or self.d_out < 1):
            raise SAEError(f"SAEConfig.d_out must be a positive int or None, got {self.d_out!r}")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise SAEError(f"SAEConfig.layer must be a non-negative int, got {self.layer!r}")
        if not isinstance(self.site, str) or not self.site:
            raise SAEError(f"SAEConfig.site must be a site name such as 'resid_pre', got {self.site!r}")
        if self.is_transcoder and self.apply_b_dec_to_input:
            raise SAEError(
                f"SAEConfig.apply_b_dec_to_input=True subtracts the decoder bias (a {self.target_site!r} vector) "
                f"from the input at {self.site!r}: a transcoder's input and target differ, so set it False"
            )
        if not self.is_transcoder and self.d_out is not None and self.d_out != self.d_in:
            raise SAEError(
                f"an autoencoder (target_site None or == site) has d_out == d_in; got d_out={self.d_out}, d_in={self.d_in}"
            )

    @property
    def target(self) -> str:
        """The site the decoder writes (the input site for an autoencoder)."""
        return self.site if self.target_site is None else self.target_site

    @property
    def is_transcoder(self) -> bool:
        return self.target_site is not None and self.target_site != self.site

    @property
    def out_dim(self) -> int:
        return self.d_in if self.d_out is None else self.d_out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SAEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        stray = sorted(set(data) - known)
        if stray:
            raise SAEError(f"unknown SAEConfig fields {stray}; expected a subset of {sorted(known)}")
        return cls(**data)
