"""An indirect-object-identification (IOI) dataset of clean/corrupted prompt pairs.

Wang et al. 2022 ("Interpretability in the Wild") study prompts such as "When Mary and
John went to the store, John gave a drink to", where the model should name the
*indirect object* (IO, " Mary") rather than the *subject* (S, " John"), which appears
twice (S1, S2). Prompts come from templates x names x places x objects, in two name
orders: ``"ABBA"`` (IO first: "When Mary and John ..., John gave ...") and ``"BABA"``
(S first: "When John and Mary ..., John gave ..."). The corrupted prompt of a pair is
one of the standard corruptions:

- ``"s2"``: S2 becomes a third name ("..., Tom gave a drink to"): nothing marks which
  earlier name is the subject any more (the S-inhibition signal is gone);
- ``"abc"``: all three names are replaced by three other distinct names (Wang et al.'s
  ABC distribution: "When Anna and Paul went to the store, Lucy gave a drink to");
- ``"io"``: S2 becomes the IO, which flips the right answer ("..., Mary gave a drink
  to" should name John).

`ioi_dataset` is tokenizer-aware: it keeps only names, places and objects that are one
token (with their leading space) for the given tokenizer, so every prompt of a template
has the same number of tokens and each pair's clean and corrupted prompts line up
position by position. With ``padding=False`` (the default) it uses only the templates of
the most common length, so the batch has no padding; ``padding=True`` uses every
template and right-pads with an attention mask. The metric is the per-pair logit
difference ``logit(IO) - logit(S)`` at each prompt's last token (`IOIDataset.metric`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from ..core.errors import PairBatchError
from ..core.pair_metrics import PairMetric, pair_logit_diff

__all__ = ["IOIDataset", "ioi_dataset", "IOI_TEMPLATES", "IOI_NAMES", "IOI_PLACES", "IOI_OBJECTS", "CORRUPTIONS"]

# {A} and {B}: the two names introduced (IO and S, in the order's sequence); {C}: S2.
IOI_TEMPLATES = (
    "When{A} and{B} went to the{PLACE},{C} gave a{OBJECT} to",
    "Then,{A} and{B} went to the{PLACE}.{C} gave a{OBJECT} to",
    "After{A} and{B} went to the{PLACE},{C} gave a{OBJECT} to",
    "When{A} and{B} got a{OBJECT} at the{PLACE},{C} decided to give it to",
    "While{A} and{B} were working at the{PLACE},{C} gave a{OBJECT} to",
    "Then,{A} and{B} had a long argument at the{PLACE}. Afterwards{C} said to",
    "Friends{A} and{B} found a{OBJECT} at the{PLACE}.{C} gave it to",
    "The{PLACE} was quiet when{A} and{B} arrived.{C} handed a{OBJECT} to",
)
IOI_NAMES = (
    " Mary", " John", " Tom", " James", " Anna", " Sarah", " David", " Emma", " Paul", " Lucy", " Mark",
    " Kate", " Michael", " Robert", " Lisa", " Mike", " Alice", " Bob", " Daniel", " Jessica", " Laura",
    " Rachel", " Ryan", " Andrew", " Kevin", " Jason", " Amy", " Chris", " Matt", " Emily", " Steven",
    " George", " Richard", " Thomas", " Peter", " Helen", " Rose", " Sam", " Jack", " Ben", " Tim",
    " Dan", " Joe", " Adam", " Eric", " Sophie", " Grace", " Anne", " Jane", " Alex", " Luke", " Max",
)  # fmt: skip
IOI_PLACES = (
    " store", " park", " office", " beach", " school", " hospital", " restaurant", " station", " garden",
    " market", " library", " house", " church", " museum", " bank", " cafe", " zoo", " airport", " hotel",
)  # fmt: skip
IOI_OBJECTS = (
    " drink", " ring", " book", " ball", " bone", " snack", " computer", " necklace", " flower", " bag",
    " letter", " gift", " pen", " key", " cake", " hat", " ticket", " phone",
)  # fmt: skip
CORRUPTIONS = ("s2", "abc", "io")
ORDERS = ("ABBA", "BABA")


@dataclasses.dataclass(frozen=True, eq=False)
class IOIDataset:
    """IOI prompt pairs, ready for `activation_patch` & co.

    ``clean`` / ``corrupted``: int ``[pair, pos]``; ``attention_mask``: ``[pair, pos]``
    (1: real token) or None without padding; ``answer`` / ``wrong``: the IO and S token
    ids ``[pair]``; ``pos``: each prompt's last real position ``[pair]`` (where the
    metric reads); ``positions``: ``{"IO", "S1", "S2", "end"} -> [pair]`` token positions
    in the clean prompt; ``order``: ``"ABBA"`` / ``"BABA"`` per pair; ``template``: its
    index in the templates; ``clean_text`` / ``corrupted_text``: the prompts."""

    clean: np.ndarray
    corrupted: np.ndarray
    attention_mask: Optional[np.ndarray]
    answer: np.ndarray
    wrong: np.ndarray
    pos: np.ndarray
    positions: dict
    order: tuple
    template: np.ndarray
    clean_text: tuple
    corrupted_text: tuple
    corruption: str

    @property
    def n_pairs(self) -> int:
        return int(self.clean.shape[0])

    def metric(self) -> PairMetric:
        """Per pair ``logit(IO) - logit(S)`` at the last real token (`pair_logit_diff`)."""
        return pair_logit_diff(self.answer, self.wrong, self.pos)


def _single_tokens(tokenizer, words: Sequence[str]) -> list:
    """``(word, id)`` of the words that are one token (no BOS) for ``tokenizer``."""
    out = []
    for w in words:
        ids = tokenizer.encode(w, prepend_bos=False)
        if len(ids) == 1:
            out.append((w, ids[0]))
    return out


def ioi_dataset(
    tokenizer,
    n_pairs: int,
    *,
    corruption: str = "abc",
    orders: Sequence[str] = ORDERS,
    templates: Sequence[str] = IOI_TEMPLATES,
    names: Sequence[str] = IOI_NAMES,
    places: Sequence[str] = IOI_PLACES,
    objects: Sequence[str] = IOI_OBJECTS,
    padding: bool = False,
    prepend_bos: Optional[bool] = None,
    seed: int = 0,
) -> IOIDataset:
    """``n_pairs`` IOI pairs (orders alternating ``ABBA`` / ``BABA``), each with a random
    template, place, object and distinct names (see the module docstring).

    ``tokenizer``: a `jaxinterp.Tokenizer` (``encode``). ``corruption``: ``"s2"``,
    ``"abc"`` or ``"io"``. Words (names, places, objects, with their leading space) that
    are not one token for the tokenizer are left out. ``padding``: False uses only the
    templates of the most common token length (no padding); True uses all and right-pads
    with ``attention_mask``. ``prepend_bos``: as `Tokenizer.encode` (None: the
    tokenizer's default)."""
    if corruption not in CORRUPTIONS:
        raise PairBatchError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    if not isinstance(n_pairs, int) or n_pairs < 1:
        raise PairBatchError(f"n_pairs must be a positive int, got {n_pairs!r}")
    orders = tuple(orders)
    if not orders or any(o not in ORDERS for o in orders):
        raise PairBatchError(f"orders must be a non-empty subset of {ORDERS}, got {orders}")
    name_ids = _single_tokens(tokenizer, names)
    place_ids = _single_tokens(tokenizer, places)
    object_ids = _single_tokens(tokenizer, objects)
    need = 6 if corruption == "abc" else 3
    if len(name_ids) < need or not place_ids or not object_ids:
        raise PairBatchError(
            f"too few single-token words for this tokenizer: {len(name_ids)} names (need {need}), "
            f"{len(place_ids)} places, {len(object_ids)} objects (need 1 each)"
        )

    def encode(text):
        return tokenizer.encode(text, prepend_bos=prepend_bos)

    # A template's length with single-token fillers does not depend on which ones.
    w, p, o = name_ids[0][0], place_ids[0][0], object_ids[0][0]
    lengths = [len(encode(t.format(A=w, B=w, C=w, PLACE=p, OBJECT=o))) for t in templates]
    if padding:
        chosen = list(range(len(templates)))
    else:
        common = Counter(lengths).most_common(1)[0][0]
        chosen = [i for i, n in enumerate(lengths) if n == common]

    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_pairs):
        t = int(rng.choice(chosen))
        order = orders[k % len(orders)]
        picked = rng.choice(len(name_ids), 6, replace=False)
        io, s, third, a2, b2, c2 = (name_ids[int(i)] for i in picked)
        place = place_ids[int(rng.integers(len(place_ids)))][0]
        obj = object_ids[int(rng.integers(len(object_ids)))][0]
        template = templates[t]

        def fill(first, second, s2, template=template, place=place, obj=obj):
            return template.format(A=first, B=second, C=s2, PLACE=place, OBJECT=obj)

        first, second = (io, s) if order == "ABBA" else (s, io)
        clean = fill(first[0], second[0], s[0])
        if corruption == "s2":
            corrupted = fill(first[0], second[0], third[0])
        elif corruption == "io":
            corrupted = fill(first[0], second[0], io[0])
        else:  # abc: three other names in the same slots
            corrupted = fill(a2[0], b2[0], c2[0])
        rows.append((clean, corrupted, io[1], s[1], order, t))

    clean_ids = [encode(r[0]) for r in rows]
    corrupted_ids = [encode(r[1]) for r in rows]
    for c, k in zip(clean_ids, corrupted_ids):
        assert len(c) == len(k), "single-token fillers keep a pair's prompts the same length"
    n_pos = max(len(c) for c in clean_ids)
    pad_id = 0
    clean = np.full((n_pairs, n_pos), pad_id, np.int32)
    corrupted = np.full((n_pairs, n_pos), pad_id, np.int32)
    mask = np.zeros((n_pairs, n_pos), np.int32)
    for i, (c, k) in enumerate(zip(clean_ids, corrupted_ids)):
        clean[i, : len(c)], corrupted[i, : len(k)], mask[i, : len(c)] = c, k, 1
    last = mask.sum(axis=1) - 1
    answer = np.array([r[2] for r in rows], np.int32)
    wrong = np.array([r[3] for r in rows], np.int32)
    positions = {"IO": np.zeros(n_pairs, np.int32), "S1": np.zeros(n_pairs, np.int32)}
    positions["S2"] = np.zeros(n_pairs, np.int32)
    for i in range(n_pairs):
        io_at = np.flatnonzero(clean[i, : last[i] + 1] == answer[i])
        s_at = np.flatnonzero(clean[i, : last[i] + 1] == wrong[i])
        positions["IO"][i], positions["S1"][i], positions["S2"][i] = io_at[0], s_at[0], s_at[-1]
    positions["end"] = last.astype(np.int32)
    return IOIDataset(
        clean=clean,
        corrupted=corrupted,
        attention_mask=mask if (mask == 0).any() else None,
        answer=answer,
        wrong=wrong,
        pos=last.astype(np.int32),
        positions=positions,
        order=tuple(r[4] for r in rows),
        template=np.array([r[5] for r in rows], np.int32),
        clean_text=tuple(r[0] for r in rows),
        corrupted_text=tuple(r[1] for r in rows),
        corruption=corruption,
    )
