"""`verify`: check a checkpoint as jaxinterp loads it against HuggingFace transformers.

A user about to trust a checkpoint (a hub id, an HF directory, a GGUF file) runs the same
prompts through jaxinterp and through transformers (the reference we did not write) and
reads the largest logit difference, each layer's residual-stream difference and how often
the two agree on the top next token. ``jaxinterp verify MODEL`` prints the table and exits
1 above the tolerance.

``reference``: the checkpoint transformers loads (default: the same one), e.g. the HF
original of a GGUF conversion, to check a converted or edited file against its source.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from ..core.errors import CheckpointError, JaxinterpError, VerifyError

__all__ = ["VerifyReport", "verify", "DEFAULT_PROMPTS"]

DEFAULT_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    return",
    "Once upon a time, there was a little girl who",
)


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """What `verify` measured. ``layer_diffs[l]``: the largest absolute difference of the
    residual stream entering layer ``l`` (HF's ``hidden_states[l]``), ``layer_scales[l]``
    the largest absolute value of that stream in the reference (models with massive
    activations have large absolute differences that are small relative ones); ``max_logit_diff``:
    of the logits (of the final hidden state for an encoder without an LM head);
    ``top_token_agreement``: the fraction of real positions where both predict the same
    next token. ``None`` everywhere when transformers is not installed (``reference_used``
    False): then only finiteness was checked."""

    model: str
    reference: str
    n_positions: int
    max_logit_diff: Optional[float]
    layer_diffs: Optional[tuple[float, ...]]
    layer_scales: Optional[tuple[float, ...]]
    top_token_agreement: Optional[float]
    finite: bool
    tol: float
    reference_used: bool

    @property
    def passed(self) -> bool:
        """Finite logits, and (with a reference) the largest logit difference within ``tol``."""
        if not self.finite:
            return False
        return self.max_logit_diff is None or self.max_logit_diff <= self.tol

    def table(self) -> str:
        """The printed report."""
        lines = [f"model:     {self.model}", f"reference: {self.reference}", f"positions: {self.n_positions}"]
        if not self.reference_used:
            lines.append("transformers is not installed: checked only that jaxinterp's logits are finite")
            lines.append(f"finite logits: {'yes' if self.finite else 'NO'}")
        else:
            assert self.layer_diffs is not None and self.layer_scales is not None and self.max_logit_diff is not None
            lines.append("layer  max |resid_pre diff|  max |resid_pre|  relative")
            lines += [
                f"{i:>5}  {d:>19.3e}  {m:>15.3e}  {d / max(m, 1e-30):>8.1e}"
                for i, (d, m) in enumerate(zip(self.layer_diffs, self.layer_scales))
            ]
            lines.append(f"max |logit diff|:     {self.max_logit_diff:.3e}  (tolerance {self.tol:.1e})")
            lines.append(f"top-token agreement:  {self.top_token_agreement:.1%}")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def verify(
    model_path: str,
    reference: Optional[str] = None,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    tol: float = 1e-3,
    model=None,
) -> VerifyReport:
    """Run ``prompts`` through ``model_path`` loaded by jaxinterp (or the given ``model``)
    and through ``reference`` (default ``model_path``) loaded by transformers, fp32.

    Prompts are tokenized with the checkpoint's tokenizer; without one, each prompt
    becomes a deterministic random token sequence of its length in characters (capped at
    16). Rows are right-padded with an attention mask and compared at real tokens only.
    """
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise VerifyError(f"tol must be a positive number, got {tol!r}")
    if isinstance(prompts, str) or len(prompts) == 0:
        raise VerifyError("prompts must be a non-empty list of strings")
    from . import load

    reference = model_path if reference is None else reference
    if model is None:
        model = load(model_path)
    tokens, mask = _tokens(model_path, prompts, model.cfg.d_vocab, model.cfg.n_ctx)
    real = mask.astype(bool)
    logits, cache = model.run_with_cache(tokens, names=["resid_pre"], attention_mask=mask)
    logits = np.asarray(logits, np.float64)
    finite = bool(np.isfinite(logits[real]).all())
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return VerifyReport(model_path, "-", int(real.sum()), None, None, None, None, finite, tol, False)
    ref_logits, hidden = _reference_run(reference, tokens, mask, model.cfg.has_unembed)
    resid = np.asarray(cache["resid_pre"], np.float64)  # [layer, batch, pos, d_model]
    layers = range(model.cfg.n_layers)
    layer_diffs = tuple(float(np.abs(resid[i][real] - hidden[i][real]).max()) for i in layers)
    layer_scales = tuple(float(np.abs(hidden[i][real]).max()) for i in layers)
    max_diff = float(np.abs(logits[real] - ref_logits[real]).max())
    agree = float((logits.argmax(-1)[real] == ref_logits.argmax(-1)[real]).mean())
    return VerifyReport(
        model_path, reference, int(real.sum()), max_diff, layer_diffs, layer_scales, agree, finite, tol, True
    )


def _tokens(path: str, prompts: Sequence[str], d_vocab: int, n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(tokens, mask)`` ``[prompt, pos]``."""
    from .tokenizer import load_tokenizer

    try:
        tok = load_tokenizer(path)
        rows = [tok.encode(p)[:n_ctx] for p in prompts]
    except (JaxinterpError, OSError):  # no tokenizer with the checkpoint: random ids
        rng = np.random.default_rng(0)
        rows = [list(rng.integers(0, d_vocab, max(2, min(len(p), 16, n_ctx)))) for p in prompts]
    if any(len(r) == 0 for r in rows):
        raise VerifyError("a prompt encodes to no tokens")
    width = max(len(r) for r in rows)
    tokens, mask = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)], mask[i, : len(r)] = r, 1
    return tokens, mask


def _reference_run(reference: str, tokens, mask, has_unembed: bool):
    """``(logits or last hidden state [batch, pos, ...], hidden_states [layer+1, batch, pos, d_model])``
    of transformers' fp32 eager forward pass."""
    import torch
    import transformers

    cls = transformers.AutoModelForCausalLM if has_unembed else transformers.AutoModel
    kwargs: dict = dict(dtype=torch.float32, attn_implementation="eager")
    try:
        if reference.endswith(".gguf"):
            hf = cls.from_pretrained(os.path.dirname(reference) or ".", gguf_file=os.path.basename(reference), **kwargs)
        else:
            hf = cls.from_pretrained(reference, **kwargs)
    except Exception as e:  # transformers' own reasons: unknown architecture, missing files, ...
        raise CheckpointError(f"transformers could not load the reference {reference!r}: {e}") from e
    with torch.no_grad():
        out = hf.eval()(
            torch.tensor(tokens).long(), attention_mask=torch.tensor(mask).long(), output_hidden_states=True
        )
    final = out.logits if has_unembed else out.last_hidden_state
    return final.double().numpy(), np.stack([h.double().numpy() for h in out.hidden_states])
