"""Labelled prompt datasets for probing: the bundled ``sae-probes`` CSVs and a user's CSV/JSONL.

A `ProbingDataset` is prompts plus one target per prompt: class labels (binary or
multiclass, stored as ints ``0..n_classes-1`` with their names) or real numbers
(regression: latitude, birth year, ...). The ``sae-probes==0.4.2`` package (Kantamneni
et al. 2025, "Are Sparse Autoencoders Useful? A Case Study in Sparse Probing", MIT) ships
150+ such datasets as zstd CSVs with columns ``prompt, prompt_len, target``; the
locator is `jaxinterp.loading.bundled.sae_probes_dir`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Optional, Sequence

import numpy as np

from jaxinterp.errors import JaxinterpError

__all__ = [
    "ProbingDataset",
    "DatasetError",
    "load_sae_probes",
    "list_sae_probes",
    "load_csv",
    "load_jsonl",
    "from_lists",
]


class DatasetError(JaxinterpError):
    """A dataset file or argument that cannot be read as a labelled prompt set."""


@dataclasses.dataclass(frozen=True)
class ProbingDataset:
    """Prompts and their targets.

    Attributes:
        name: where it came from.
        prompts: ``n`` strings.
        targets: ``[n]`` int class ids (``kind="classification"``) or float values
            (``kind="regression"``).
        kind: ``"classification"`` or ``"regression"``.
        classes: the class names, ``classes[targets[i]]`` (classification only).
    """

    name: str
    prompts: tuple
    targets: np.ndarray
    kind: str
    classes: tuple = ()

    def __post_init__(self):
        if self.kind not in ("classification", "regression"):
            raise DatasetError(f"kind must be 'classification' or 'regression', got {self.kind!r}")
        if len(self.prompts) != len(self.targets):
            raise DatasetError(f"{self.name}: {len(self.prompts)} prompts but {len(self.targets)} targets")
        if len(self.prompts) == 0:
            raise DatasetError(f"{self.name}: the dataset is empty")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, index) -> "ProbingDataset":
        """The rows at ``index`` (an int array or a bool mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return dataclasses.replace(self, prompts=tuple(self.prompts[i] for i in index), targets=self.targets[index])

    def sample(self, n: Optional[int], seed: int = 0, balance: bool = True) -> "ProbingDataset":
        """At most ``n`` rows drawn without replacement; ``balance`` draws classes equally
        (as far as each class has rows). ``None`` keeps every row (shuffled)."""
        rng = np.random.default_rng(seed)
        if n is None or n >= len(self):
            return self.subset(rng.permutation(len(self)))
        if self.kind == "classification" and balance:
            per = int(np.ceil(n / self.n_classes))
            picks = [rng.permutation(np.flatnonzero(self.targets == c))[:per] for c in range(self.n_classes)]
            index = rng.permutation(np.concatenate(picks))[:n]
        else:
            index = rng.permutation(len(self))[:n]
        return self.subset(index)


def from_lists(
    prompts: Sequence[str], targets: Sequence, name: str = "user", kind: Optional[str] = None
) -> ProbingDataset:
    """A dataset from parallel lists. ``kind`` None: regression if every target parses as
    a number with more than 10 distinct values, else classification."""
    prompts = tuple(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p:
            raise DatasetError(f"{name}: prompt {i} must be a non-empty string, got {p!r}")
    raw = [str(t).strip() for t in targets]
    if len(raw) != len(prompts):
        raise DatasetError(f"{name}: {len(prompts)} prompts but {len(raw)} targets")
    numeric = _as_floats(raw)
    if kind is None:
        kind = "regression" if numeric is not None and len(set(raw)) > 10 else "classification"
    if kind == "regression":
        if numeric is None:
            bad = next(t for t in raw if _as_floats([t]) is None)
            raise DatasetError(f"{name}: regression targets must be numbers, got {bad!r}")
        return ProbingDataset(name, prompts, numeric, "regression")
    if kind != "classification":
        raise DatasetError(f"kind must be 'classification', 'regression' or None, got {kind!r}")
    # Numeric class names sort numerically ("0" < "1" < "10"), others alphabetically.
    names = sorted(set(raw), key=(lambda s: float(s)) if numeric is not None else (lambda s: s))
    if len(names) < 2:
        raise DatasetError(f"{name}: a classification dataset needs at least 2 classes, got {names}")
    ids = {c: i for i, c in enumerate(names)}
    return ProbingDataset(name, prompts, np.asarray([ids[t] for t in raw], np.int32), "classification", tuple(names))


def _as_floats(raw):
    try:
        values = np.asarray([float(t) for t in raw], np.float64)
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None


def list_sae_probes(directory: Optional[str] = None) -> list[str]:
    """Names of the bundled ``sae-probes`` datasets (``"92_glue_sst2"``, ...)."""
    directory = directory or _sae_dir()
    return sorted(f[: -len(".csv.zst")] for f in os.listdir(directory) if f.endswith(".csv.zst"))


def _sae_dir():
    from jaxinterp.loading.bundled import sae_probes_dir

    return sae_probes_dir()


def load_sae_probes(name: str, kind: Optional[str] = None, directory: Optional[str] = None) -> ProbingDataset:
    """One ``sae-probes`` dataset by name (``"92_glue_sst2"``, ``"18_world_latitude"``;
    the ``.csv.zst`` suffix is optional). ``kind`` as in `from_lists`."""
    directory = directory or _sae_dir()
    stem = name[: -len(".csv.zst")] if name.endswith(".csv.zst") else name
    path = os.path.join(directory, stem + ".csv.zst")
    if not os.path.isfile(path):
        close = [n for n in list_sae_probes(directory) if stem.split("_", 1)[-1] in n][:5]
        raise DatasetError(f"no sae-probes dataset {name!r} in {directory}" + (f"; similar: {close}" if close else ""))
    import zstandard

    try:
        with open(path, "rb") as f:
            text = zstandard.ZstdDecompressor().stream_reader(f).read().decode("utf-8")
    except zstandard.ZstdError as e:
        raise DatasetError(f"{path} is not a valid zstd file: {e}") from e
    return _from_csv_text(text, stem, "prompt", "target", kind)


def load_csv(
    path: str, text_column: str = "prompt", target_column: str = "target", kind: Optional[str] = None
) -> ProbingDataset:
    """A CSV file (``.csv`` or zstd ``.csv.zst``) with a header naming ``text_column`` and ``target_column``."""
    if not os.path.isfile(path):
        raise DatasetError(f"path {path!r} is not a file")
    raw = open(path, "rb").read()
    if path.endswith(".zst"):
        import zstandard

        try:
            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
        except zstandard.ZstdError as e:
            raise DatasetError(f"{path} is not a valid zstd file: {e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text: {e}") from e
    return _from_csv_text(text, os.path.basename(path), text_column, target_column, kind)


def _from_csv_text(text, name, text_column, target_column, kind):
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in (text_column, target_column) if c not in header]
    if missing:
        raise DatasetError(f"{name}: the CSV header {header} lacks column(s) {missing}")
    prompts, targets = [], []
    for line, row in enumerate(reader, start=2):
        if row.get(text_column) is None or row.get(target_column) is None:
            raise DatasetError(f"{name}: row at line {line} has too few fields")
        if not row[text_column].strip():
            continue  # empty prompts carry no signal; sae-probes has none, user files might
        prompts.append(row[text_column])
        targets.append(row[target_column])
    return from_lists(prompts, targets, name, kind)


def load_jsonl(
    path: str, text_key: str = "prompt", target_key: str = "target", kind: Optional[str] = None
) -> ProbingDataset:
    """A JSON-lines file, one object per line with ``text_key`` and ``target_key``."""
    if not os.path.isfile(path):
        raise DatasetError(f"path {path!r} is not a file")
    prompts, targets = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}: line {line_no} is not JSON: {e}") from e
            if not isinstance(obj, dict) or text_key not in obj or target_key not in obj:
                raise DatasetError(
                    f"{path}: line {line_no} must be an object with keys {text_key!r} and {target_key!r}"
                )
            prompts.append(obj[text_key])
            targets.append(obj[target_key])
    return from_lists(prompts, targets, os.path.basename(path), kind)
