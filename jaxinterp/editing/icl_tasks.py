"""In-context-learning tasks for function vectors: built-in word-pair tasks written for
this package, a loader for your own pairs, and the prompt format of Todd et al. 2024.

Built-in tasks (`TASKS`): ``antonym``, ``country_capital``, ``lowercase_uppercase``,
``english_french_number``. `load_pairs` reads a CSV (columns ``input,output``) or a
JSONL file (objects with ``"input"`` and ``"output"``)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxinterp.editing.common import EditingError

__all__ = ["TASKS", "ICLTask", "icl_prompt", "load_pairs", "sample_prompts", "zero_shot_prompt"]


class ICLTask(NamedTuple):
    """A named list of ``(input, output)`` string pairs."""

    name: str
    pairs: tuple


_ANTONYM = [
    ("hot", "cold"),
    ("big", "small"),
    ("fast", "slow"),
    ("up", "down"),
    ("happy", "sad"),
    ("light", "dark"),
    ("old", "young"),
    ("rich", "poor"),
    ("early", "late"),
    ("hard", "soft"),
    ("wet", "dry"),
    ("open", "closed"),
    ("strong", "weak"),
    ("high", "low"),
    ("full", "empty"),
    ("clean", "dirty"),
    ("long", "short"),
    ("good", "bad"),
    ("true", "false"),
    ("win", "lose"),
    ("inside", "outside"),
    ("begin", "end"),
    ("love", "hate"),
    ("thick", "thin"),
    ("heavy", "light"),
    ("loud", "quiet"),
    ("first", "last"),
    ("left", "right"),
    ("before", "after"),
    ("push", "pull"),
    ("near", "far"),
    ("black", "white"),
    ("day", "night"),
    ("buy", "sell"),
    ("cheap", "expensive"),
    ("safe", "dangerous"),
]
_COUNTRY_CAPITAL = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("Russia", "Moscow"),
    ("Egypt", "Cairo"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Austria", "Vienna"),
    ("Poland", "Warsaw"),
    ("Sweden", "Stockholm"),
    ("Norway", "Oslo"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Ireland", "Dublin"),
    ("Belgium", "Brussels"),
    ("Hungary", "Budapest"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Cuba", "Havana"),
    ("Thailand", "Bangkok"),
    ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"),
    ("Turkey", "Ankara"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("India", "New Delhi"),
    ("South Korea", "Seoul"),
    ("Australia", "Canberra"),
    ("Chile", "Santiago"),
    ("Colombia", "Bogota"),
]
_LOWER_UPPER = [
    (w, w.upper())
    for w in (
        "apple",
        "house",
        "river",
        "green",
        "table",
        "music",
        "paper",
        "water",
        "light",
        "stone",
        "bread",
        "dream",
        "night",
        "plant",
        "smile",
        "train",
        "cloud",
        "chair",
        "glass",
        "horse",
        "money",
        "ocean",
        "piano",
        "queen",
        "sugar",
        "tiger",
        "voice",
        "world",
        "zebra",
        "dance",
        "earth",
        "fruit",
    )
]
_EN_FR_NUMBER = [
    ("one", "un"),
    ("two", "deux"),
    ("three", "trois"),
    ("four", "quatre"),
    ("five", "cinq"),
    ("six", "six"),
    ("seven", "sept"),
    ("eight", "huit"),
    ("nine", "neuf"),
    ("ten", "dix"),
    ("eleven", "onze"),
    ("twelve", "douze"),
    ("thirteen", "treize"),
    ("fourteen", "quatorze"),
    ("fifteen", "quinze"),
    ("sixteen", "seize"),
    ("seventeen", "dix-sept"),
    ("eighteen", "dix-huit"),
    ("nineteen", "dix-neuf"),
    ("twenty", "vingt"),
    ("thirty", "trente"),
    ("forty", "quarante"),
    ("fifty", "cinquante"),
    ("sixty", "soixante"),
    ("seventy", "soixante-dix"),
    ("eighty", "quatre-vingts"),
    ("ninety", "quatre-vingt-dix"),
    ("hundred", "cent"),
    ("thousand", "mille"),
    ("million", "million"),
]

TASKS = {
    "antonym": ICLTask("antonym", tuple(_ANTONYM)),
    "country_capital": ICLTask("country_capital", tuple(_COUNTRY_CAPITAL)),
    "lowercase_uppercase": ICLTask("lowercase_uppercase", tuple(_LOWER_UPPER)),
    "english_french_number": ICLTask("english_french_number", tuple(_EN_FR_NUMBER)),
}


def load_pairs(path: str, name: str = "") -> ICLTask:
    """A task from a user file: ``.csv`` with a header naming ``input`` and ``output``
    columns, or ``.jsonl`` with one ``{"input": ..., "output": ...}`` object per line.
    Needs at least 2 pairs; every field a non-empty string."""
    if not os.path.isfile(path):
        raise EditingError(f"load_pairs: {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    pairs = []
    if ext == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"input", "output"} <= set(reader.fieldnames):
                raise EditingError(
                    f"{path}: the CSV header must name 'input' and 'output' columns, got {reader.fieldnames}"
                )
            for i, row in enumerate(reader, start=2):
                pairs.append(_pair(row.get("input"), row.get("output"), f"{path}:{i}"))
    elif ext == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise EditingError(f"{path}:{i}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise EditingError(
                        f"{path}:{i}: expected an object with 'input' and 'output', got {type(obj).__name__}"
                    )
                pairs.append(_pair(obj.get("input"), obj.get("output"), f"{path}:{i}"))
    else:
        raise EditingError(f"load_pairs: {path} must end in .csv or .jsonl")
    if len(pairs) < 2:
        raise EditingError(f"{path}: need at least 2 pairs, found {len(pairs)}")
    return ICLTask(name or os.path.splitext(os.path.basename(path))[0], tuple(pairs))


def _pair(x, y, where):
    if not isinstance(x, str) or not isinstance(y, str) or not x.strip() or not y.strip():
        raise EditingError(f"{where}: 'input' and 'output' must be non-empty strings, got {x!r}, {y!r}")
    return (x.strip(), y.strip())


def icl_prompt(demonstrations: Sequence[tuple[str, str]], query: str) -> str:
    """Todd et al.'s format: ``"Q: x\\nA: y\\n\\n"`` per demonstration, then ``"Q: query\\nA:"``."""
    return "".join(f"Q: {x}\nA: {y}\n\n" for x, y in demonstrations) + zero_shot_prompt(query)


def zero_shot_prompt(query: str) -> str:
    """``"Q: query\\nA:"``: the prompt with no demonstrations."""
    return f"Q: {query}\nA:"


def sample_prompts(
    task: ICLTask, n_prompts: int, n_shots: int, seed: int = 0
) -> tuple[list[str], list[str], list[str]]:
    """``(clean, shuffled, answers)``: ``n_prompts`` ICL prompts with ``n_shots``
    demonstrations each and a held-out query; the shuffled twin has the same inputs and
    query but the demonstrations' outputs permuted (no output stays with its input when
    ``n_shots > 1``). ``answers``: the query's correct output, with its leading space."""
    if n_shots + 1 > len(task.pairs):
        raise EditingError(
            f"task {task.name!r} has {len(task.pairs)} pairs; n_shots={n_shots} needs at least {n_shots + 1}"
        )
    rng = np.random.default_rng(seed)
    clean, shuffled, answers = [], [], []
    for _ in range(n_prompts):
        idx = rng.choice(len(task.pairs), n_shots + 1, replace=False)
        demos, (q, a) = [task.pairs[i] for i in idx[:-1]], task.pairs[idx[-1]]
        # A random single cycle through the demonstrations: a derangement (input i gets
        # the output of demonstration perm[i] != i).
        order = rng.permutation(n_shots)
        perm = np.empty(n_shots, np.int64)
        perm[order] = np.roll(order, -1)
        clean.append(icl_prompt(demos, q))
        shuffled.append(icl_prompt([(x, demos[j][1]) for (x, _), j in zip(demos, perm)], q))
        answers.append(" " + a)
    return clean, shuffled, answers
