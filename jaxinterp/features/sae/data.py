"""Text corpora as fixed-length token contexts.

`corpus_texts` reads a corpus from one file, a folder of ``.txt`` files, an iterable of
strings, or a Hugging Face dataset (when ``datasets`` is installed); `token_contexts`
tokenises it into ``[n_contexts, context_len]`` int32 contexts, each starting with BOS
(when the tokenizer has one), documents concatenated with BOS between them.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Union

import numpy as np
from jaxtyping import Int

from .errors import SAEError

__all__ = ["corpus_texts", "token_contexts"]


def corpus_texts(source: Union[str, os.PathLike, Iterable[str]], *, text_column: str = "text") -> list[str]:
    """Documents of a corpus as strings.

    ``source``: a path to one text file; a folder (its ``*.txt`` files, sorted by name,
    recursively); ``"hf:NAME[:SPLIT]"`` for a Hugging Face dataset (needs ``datasets``;
    ``text_column`` names the column); a ``datasets.Dataset``; or any iterable of strings.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.startswith("hf:"):
            name, _, split = path[3:].partition(":")
            try:
                import datasets
            except ImportError:  # pragma: no cover - optional dependency
                raise SAEError(
                    f"corpus {path!r} names a Hugging Face dataset, but the `datasets` package is not installed"
                ) from None
            return corpus_texts(datasets.load_dataset(name, split=split or "train"), text_column=text_column)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return [f.read()]
        if os.path.isdir(path):
            files = sorted(
                os.path.join(root, n) for root, _, names in os.walk(path) for n in names if n.endswith(".txt")
            )
            if not files:
                raise SAEError(f"corpus folder {path!r} has no .txt files")
            out = []
            for p in files:
                with open(p, encoding="utf-8", errors="replace") as f:
                    out.append(f.read())
            return out
        raise SAEError(f"corpus {path!r} is neither a file nor a folder (nor 'hf:NAME[:SPLIT]')")
    column_names = getattr(type(source), "column_names", None)
    if column_names is not None and type(source).__module__.startswith("datasets"):
        if text_column not in source.column_names:
            raise SAEError(f"the dataset has columns {source.column_names}, not text_column={text_column!r}")
        source = source[text_column]
    try:
        texts = list(source)
    except TypeError:
        raise SAEError(
            f"corpus must be a path, 'hf:NAME', a datasets.Dataset or an iterable of str; got {type(source).__name__}"
        ) from None
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise SAEError(f"corpus iterable must yield str, got {bad[0]}")
    return texts


def token_contexts(
    tokenizer, texts: Iterable[str], context_len: int, *, max_contexts: Optional[int] = None
) -> Int[np.ndarray, "context pos"]:
    """Contexts of ``context_len`` tokens: every text tokenised without special tokens,
    joined with BOS (or EOS) separators, cut into ``context_len - 1`` token pieces, each
    prefixed with BOS, so every context starts like a fresh prompt. Stops after
    ``max_contexts``. ``tokenizer``: a `jaxinterp.Tokenizer`."""
    if not isinstance(context_len, int) or context_len < 2:
        raise SAEError(f"context_len must be an int >= 2, got {context_len!r}")
    sep = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    piece = context_len - 1 if sep is not None else context_len
    want = None if max_contexts is None else max_contexts * piece
    stream: list[int] = []
    for text in texts:
        if stream and sep is not None:
            stream.append(sep)
        stream.extend(
            tokenizer.encode(text, prepend_bos=False) if tokenizer.bos_token_id is not None else tokenizer.encode(text)
        )
        if want is not None and len(stream) >= want:
            break
    n = len(stream) // piece
    if max_contexts is not None:
        n = min(n, max_contexts)
    if n == 0:
        raise SAEError(f"the corpus has {len(stream)} tokens: fewer than one context of {context_len}")
    body = np.asarray(stream[: n * piece], np.int32).reshape(n, piece)
    if sep is None:
        return body
    return np.concatenate([np.full((n, 1), sep, np.int32), body], axis=1)
