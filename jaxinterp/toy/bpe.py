"""A small byte-level BPE vocabulary trained on a corpus with the ``tokenizers`` package,
saved as ``tokenizer.json`` (+ ``tokenizer_config.json``) so that
`jaxinterp.load_tokenizer` reads it back.

Byte-level like GPT-2's (every string encodes, nothing is unknown), with one special
token ``<|endoftext|>`` (id 0) that separates documents and serves as BOS/EOS. The
default template adds nothing (``prepend_bos=True`` adds it). Training is deterministic:
the same corpus and size give the same bytes.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from jaxinterp.core.errors import JaxinterpError

__all__ = ["EOT", "train_bpe_tokenizer", "save_tokenizer"]

EOT = "<|endoftext|>"


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 1024, min_frequency: int = 2):
    """A `jaxinterp.Tokenizer` whose byte-level BPE vocabulary (``vocab_size`` ids, the
    special token and the 256 bytes included) is trained on ``texts``."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from jaxinterp import Tokenizer

    if vocab_size < 258:
        raise JaxinterpError(f"vocab_size must be at least 258 (256 bytes + {EOT} + one merge), got {vocab_size}")
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend, bos_token=EOT, eos_token=EOT, add_bos_token=False, add_eos_token=False, name="toy-bpe")


def save_tokenizer(tokenizer, folder: str, name: Optional[str] = None) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (BOS/EOS = ``<|endoftext|>``)
    into ``folder``, readable by `jaxinterp.load_tokenizer`."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        f.write(tokenizer.backend.to_str())
    config = {"bos_token": EOT, "eos_token": EOT, "tokenizer_class": "PreTrainedTokenizerFast"}
    if name:
        config["name_or_path"] = name
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
