"""Tokenizers: a thin, explicit wrapper around a HuggingFace ``tokenizers.Tokenizer``.

``load_tokenizer(path_or_id)`` reads an HF directory (``tokenizer.json`` plus
``tokenizer_config.json`` / ``special_tokens_map.json`` for the special tokens), a hub
id, or a llama.cpp ``.gguf`` file (whose metadata holds the vocabulary and merges).

BOS handling is explicit. Every encoding method takes ``prepend_bos``:

- ``None`` (default): do what the model's own tokenizer does by default, i.e. apply its
  post-processing template: the one in ``tokenizer.json`` (as in transformers 5, which
  ignores ``add_bos_token`` in ``tokenizer_config.json`` when a ``tokenizer.json``
  exists; no template means no BOS), or ``tokenizer.ggml.add_bos_token`` in a GGUF.
  ``Tokenizer.default_prepend_bos`` says which it is. GPT-2 and SmolLM2 add no BOS,
  Llama adds ``<s>``, BERT wraps the text in ``[CLS] ... [SEP]`` (for an encoder
  without a BOS token, its CLS token counts as the BOS).
- ``True`` / ``False``: the result starts / does not start with exactly the one BOS the
  template would add (a BOS written in the text itself is kept). Other template tokens
  (EOS, BERT's ``[SEP]``) are unaffected.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np
from jaxtyping import Int

from ..core.errors import TokenizerError

__all__ = ["Tokenizer", "TokenizerError", "load_tokenizer"]


class Tokenizer:
    """Text <-> token ids for one model.

    ``backend``: the ``tokenizers.Tokenizer`` doing the work (it is copied, not mutated).
    ``bos_token`` ... ``unk_token``: the special tokens' strings (None if the model has none).
    ``add_bos_token`` / ``add_eos_token``: if given (or if ``backend`` has no
    post-processor), the default template becomes ``[BOS] text [EOS]`` with those parts on
    or off, as transformers does; if None, ``backend``'s own template is kept.
    """

    def __init__(
        self,
        backend,
        *,
        bos_token: Optional[str] = None,
        eos_token: Optional[str] = None,
        pad_token: Optional[str] = None,
        unk_token: Optional[str] = None,
        add_bos_token: Optional[bool] = None,
        add_eos_token: Optional[bool] = None,
        name: str = "",
    ):
        from tokenizers import Tokenizer as Backend

        self.backend = Backend.from_str(backend.to_str())
        # Padding and truncation are this class's job (explicit, per call); some
        # tokenizer.json files (e.g. sentence-transformers') switch both on.
        self.backend.no_padding()
        self.backend.no_truncation()
        self.name = name
        self.bos_token_id = self._special_id(bos_token, "bos_token")
        self.eos_token_id = self._special_id(eos_token, "eos_token")
        self.pad_token_id = self._special_id(pad_token, "pad_token")
        self.unk_token_id = self._special_id(unk_token, "unk_token")
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = (
            t if i is not None else None
            for t, i in zip(
                (bos_token, eos_token, pad_token, unk_token),
                (self.bos_token_id, self.eos_token_id, self.pad_token_id, self.unk_token_id),
            )
        )
        if add_bos_token is not None or add_eos_token is not None or self.backend.post_processor is None:
            self.backend.post_processor = _template(
                bool(add_bos_token) and self.bos_token, bool(add_eos_token) and self.eos_token, self
            )
        probe = self.backend.encode("a", add_special_tokens=True).ids
        # Whether the default template starts with BOS: read off an encoding rather than
        # parsed from the template, so it holds for every post-processor type.
        self.default_prepend_bos: bool = self.bos_token_id is not None and probe[:1] == [self.bos_token_id]

    def _special_id(self, token: Optional[str], what: str) -> Optional[int]:
        if token is None:
            return None
        i = self.backend.token_to_id(token)
        if i is None:  # transformers would append it to the vocabulary, past the model's embedding
            warnings.warn(
                f"{self.name or 'tokenizer'}: {what} {token!r} is not in the vocabulary; treating it as absent",
                stacklevel=3,
            )
        return i

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, bos={self.bos_token!r}, "
            f"eos={self.eos_token!r}, pad={self.pad_token!r}, default_prepend_bos={self.default_prepend_bos})"
        )

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    # -- text -> ids -------------------------------------------------------------------

    def encode(self, text: str, prepend_bos: Optional[bool] = None) -> list[int]:
        """Token ids of ``text``, with the model's default template; ``prepend_bos``
        forces the leading BOS on or off (see the module docstring)."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}")
        if prepend_bos is not None and not isinstance(prepend_bos, (bool, np.bool_)):
            raise TokenizerError(
                f"prepend_bos must be True, False or None (the tokenizer's default), got {prepend_bos!r}"
            )
        ids = self.backend.encode(text, add_special_tokens=True).ids
        if prepend_bos is None or bool(prepend_bos) == self.default_prepend_bos:
            return ids
        if prepend_bos:
            if self.bos_token_id is None:
                raise TokenizerError(f"prepend_bos=True, but {self.name or 'this tokenizer'} has no BOS token")
            return [self.bos_token_id] + ids
        return ids[1:]  # the template's own BOS

    def to_tokens(
        self,
        text: Union[str, Sequence[str]],
        prepend_bos: Optional[bool] = None,
        pad: bool = False,
        padding_side: Optional[str] = None,
    ) -> Int[np.ndarray, "... pos"]:
        """Token ids as an int32 array: ``[pos]`` for a string, ``[batch, pos]`` for a list
        of strings. A list whose encodings differ in length is an error unless ``pad=True``
        or ``padding_side`` (``"right"``, the default with ``pad=True``, or ``"left"``) is
        given: then the rows are padded with the pad id. Use `to_tokens_and_mask` to get
        the attention mask too (the model needs it to ignore the padding)."""
        if padding_side is not None:
            _check_padding_side(padding_side)
        if isinstance(text, str):
            return np.asarray(self.encode(text, prepend_bos), np.int32)
        if pad or padding_side is not None:
            return self.to_tokens_and_mask(text, prepend_bos, padding_side=padding_side or "right")[0]
        rows = self._encode_batch(text, prepend_bos)
        lengths = sorted({len(r) for r in rows})
        if len(lengths) > 1:
            raise TokenizerError(
                f"the {len(rows)} texts encode to different lengths {lengths}; pass pad=True (or padding_side=) to "
                "pad them (and to_tokens_and_mask for the attention mask)"
            )
        return np.asarray(rows, np.int32).reshape(len(rows), -1)

    def to_tokens_and_mask(
        self, texts: Sequence[str], prepend_bos: Optional[bool] = None, padding_side: str = "right"
    ) -> tuple[Int[np.ndarray, "batch pos"], Int[np.ndarray, "batch pos"]]:
        """``(tokens, attention_mask)``, both ``[batch, pos]``: the texts padded to the
        longest with ``pad_token_id`` (``eos_token_id`` if the model has no pad token, as
        transformers users commonly do) on the ``padding_side`` (``"right"`` or ``"left"``),
        and 1 on real tokens, 0 on padding. Given the mask, the model counts positions over
        the real tokens, so a left-padded row gives the logits of the row alone."""
        _check_padding_side(padding_side)
        rows = self._encode_batch(texts, prepend_bos)
        pad_id = self.pad_token_id if self.pad_token_id is not None else self.eos_token_id
        if pad_id is None:
            raise TokenizerError(f"{self.name or 'this tokenizer'} has neither a pad nor an EOS token to pad with")
        width = max(len(r) for r in rows)
        tokens = np.full((len(rows), width), pad_id, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            cols = slice(0, len(r)) if padding_side == "right" else slice(width - len(r), width)
            tokens[i, cols] = r
            mask[i, cols] = 1
        return tokens, mask

    def _encode_batch(self, texts, prepend_bos) -> list[list[int]]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TokenizerError("expected a list of strings")
        if len(texts) == 0:
            raise TokenizerError("expected at least one text")
        return [self.encode(t, prepend_bos) for t in texts]

    def to_single_token(self, token: str) -> int:
        """The id of ``token``, which must encode (without any template) to exactly one id."""
        ids = self.backend.encode(token, add_special_tokens=False).ids
        if len(ids) != 1:
            pieces = [self.backend.decode([i], skip_special_tokens=False) for i in ids]
            raise TokenizerError(f"{token!r} is not a single token: it encodes to {len(ids)} tokens {pieces}")
        return ids[0]

    # -- ids -> text -------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens: bool = False, *, unknown: Optional[str] = None) -> str:
        """The text of a 1-D sequence of ids (list or array; one int is one token).

        Ids must be integers in ``0 .. vocab_size-1`` (`TokenizerError` otherwise: the
        backend would decode a float or an unknown id to text silently). ``unknown``: the
        text of ids at or beyond ``vocab_size`` instead of an error, for ids read off a
        model's logits: many models pad their embedding matrix past the tokenizer's
        vocabulary (transformers decodes those ids to ``""``)."""
        checked = self._check_ids(ids, "decode", unknown is not None)
        n, parts, run = self.vocab_size, [], []
        for i in checked + [None]:  # decode runs of known ids together (spacing), `unknown` between them
            if i is not None and i < n:
                run.append(i)
                continue
            if run:
                parts.append(self.backend.decode(run, skip_special_tokens=skip_special_tokens))
                run = []
            if i is not None:
                parts.append(unknown)
        return "".join(parts)

    def _check_ids(self, ids, what: str, beyond_ok: bool = False) -> list[int]:
        """``ids`` as a list of ints after checking they are integers (not floats or bools)
        in ``0 .. vocab_size-1`` (``beyond_ok``: or above): the backend would decode
        others to text silently."""
        try:
            arr = np.asarray(ids)
        except (TypeError, ValueError) as e:
            raise TokenizerError(f"{what}: ids must be integers, got {type(ids).__name__}") from e
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TokenizerError(f"{what}: ids must be integers, got dtype {arr.dtype}")
        if arr.ndim > 1 and not (arr.ndim == 2 and arr.shape[0] == 1):  # [1, pos]: one batch row
            raise TokenizerError(f"{what}: ids must be one sequence [pos], got shape {arr.shape}")
        flat = arr.reshape(-1).astype(np.int64)
        n = self.vocab_size
        bad = (flat < 0) | ((flat >= n) & (not beyond_ok))
        if bad.any():
            raise TokenizerError(
                f"{what}: token id {int(flat[bad][0])} is out of range for {self.name or 'this tokenizer'}, "
                f"which has {n} ids (0..{n - 1})"
            )
        return [int(i) for i in flat]

    def to_str_tokens(self, text_or_ids, prepend_bos: Optional[bool] = None) -> list:
        """Each token as its own string (``[" Mary", " and", ...]``): of a text (encoded as
        `encode` would), of 1-D ids, or a list of lists for ``[batch, pos]`` ids or a list of texts."""
        if isinstance(text_or_ids, str):
            ids = self.encode(text_or_ids, prepend_bos)
        elif isinstance(text_or_ids, (list, tuple)) and text_or_ids and all(isinstance(t, str) for t in text_or_ids):
            return [self.to_str_tokens(t, prepend_bos) for t in text_or_ids]
        else:
            arr = np.asarray(text_or_ids)
            if arr.ndim == 2:
                return [self.to_str_tokens(row) for row in arr]
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise TokenizerError(
                    f"expected a str or integer ids [pos] / [batch, pos], got shape {arr.shape} {arr.dtype}"
                )
            ids = self._check_ids(arr, "to_str_tokens")
        return [self.backend.decode([i], skip_special_tokens=False) for i in ids]


def _check_padding_side(padding_side) -> None:
    if padding_side not in ("left", "right"):
        raise TokenizerError(f"padding_side must be 'left' or 'right', got {padding_side!r}")


def _template(bos, eos, tok: "Tokenizer"):
    """A ``TemplateProcessing`` ``[BOS] $A [EOS]`` (parts given as token strings or False)."""
    from tokenizers.processors import TemplateProcessing

    parts = [p for p in (bos, "$A", eos) if p]
    pair = parts + [p + ":1" if p != "$A" else "$B:1" for p in parts]
    specials = [(t, tok.backend.token_to_id(t)) for t in dict.fromkeys(p for p in (bos, eos) if p)]
    return TemplateProcessing(single=" ".join(parts), pair=" ".join(pair), special_tokens=specials)


# -- loading -------------------------------------------------------------------------------


def load_tokenizer(path_or_id: str) -> Tokenizer:
    """The tokenizer of an HF directory, a hub id (offline from the HF cache when
    ``HF_HUB_OFFLINE=1``), or a ``.gguf`` file.

    An HF directory needs ``tokenizer.json``; a directory without tokenizer files raises
    `TokenizerError` (never an empty tokenizer). A missing path or unknown hub id raises
    ``CheckpointError``.
    """
    path = str(path_or_id)
    if path.endswith(".gguf"):
        return tokenizer_from_gguf(path)
    from .hf import resolve_local

    return tokenizer_from_dir(resolve_local(path))


def _token_str(value: Any) -> Optional[str]:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"corrupt {path}: {e}") from e


def tokenizer_from_dir(path: str) -> Tokenizer:
    """A `Tokenizer` from an HF directory's ``tokenizer.json`` (+ its config files)."""
    from tokenizers import Tokenizer as Backend

    file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(file):
        present = sorted(
            f
            for f in os.listdir(path)
            if f in ("tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "spiece.model")
        )
        hint = (
            f"; it has {', '.join(present)}, which jaxinterp does not read: save a tokenizer.json with "
            "transformers (AutoTokenizer.from_pretrained(dir).save_pretrained(dir))"
            if present
            else ""
        )
        raise TokenizerError(f"{path} has no tokenizer.json, so no tokenizer can be built from it{hint}")
    try:
        backend = Backend.from_file(file)
    except Exception as e:
        raise TokenizerError(f"corrupt tokenizer file {file}: {e}") from e
    config = _read_json(os.path.join(path, "tokenizer_config.json"))  # special tokens only
    special_map = _read_json(os.path.join(path, "special_tokens_map.json"))

    def special(key):
        return _token_str(config.get(key)) or _token_str(special_map.get(key))

    return Tokenizer(
        backend,
        # Encoders have no BOS; their CLS token plays that role (it starts every sequence).
        bos_token=special("bos_token") or special("cls_token"),
        eos_token=special("eos_token"),
        pad_token=special("pad_token"),
        unk_token=special("unk_token"),
        # Like transformers 5, the template in tokenizer.json decides BOS/EOS; the
        # add_bos_token / add_eos_token keys of tokenizer_config.json are ignored.
        name=path,
    )


# llama.cpp's ``tokenizer.ggml.pre`` names -> the split regex its byte-level BPE vocabulary
# was trained with (from llama.cpp's llama-vocab.cpp; "gpt2" is the GPT-2 regex built into
# the ByteLevel pre-tokenizer, "digits+gpt2" isolates each digit first).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GGUF_PRE_TOKENIZERS = {
    **dict.fromkeys(("default", "gpt2", "gpt-2", "mpt", "olmo", "jais"), "gpt2"),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"), "digits+gpt2"),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "falcon3", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "stablelm2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def _byte_level_pre_tokenizer(pre: Optional[str], path: str):
    from tokenizers import Regex, pre_tokenizers

    kind = GGUF_PRE_TOKENIZERS.get(pre or "default")
    if kind is None:
        warnings.warn(f"{path}: unknown tokenizer.ggml.pre {pre!r}; splitting text with the GPT-2 regex", stacklevel=3)
        kind = "gpt2"
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=kind in ("gpt2", "digits+gpt2"))
    if kind == "gpt2":
        return byte_level
    if kind == "digits+gpt2":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(kind), behavior="isolated"), byte_level])


def tokenizer_from_gguf(path: str) -> Tokenizer:
    """A `Tokenizer` from a GGUF file's ``tokenizer.ggml.*`` metadata.

    Supports byte-level BPE vocabularies (``tokenizer.ggml.model == "gpt2"``: GPT-2,
    Llama 3, Qwen2, SmolLM, ...), with the split regex chosen by ``tokenizer.ggml.pre``.
    Control tokens become special tokens and user-defined ones added tokens, so both are
    matched whole in text. BOS follows ``tokenizer.ggml.add_bos_token`` (absent: no BOS).
    """
    from tokenizers import AddedToken, decoders, models
    from tokenizers import Tokenizer as Backend

    from .gguf import read_gguf

    fields = read_gguf(path).metadata

    def get(key, default=None):
        return fields.get(f"tokenizer.ggml.{key}", default)

    model = get("model")
    if model is None or "tokenizer.ggml.tokens" not in fields:
        raise TokenizerError(f"{path} holds no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens metadata)")
    if model != "gpt2":
        raise TokenizerError(
            f"{path}: GGUF tokenizer model {model!r} is not supported (only byte-level BPE, 'gpt2'); "
            "load the tokenizer from the model's HF directory instead"
        )
    tokens: list[str] = get("tokens")
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise TokenizerError(f"{path}: tokenizer.ggml.tokens has duplicate entries")
    # Merges are "left right"; byte-level pieces never hold a raw space, so one split suffices.
    merges = [tuple(m.split(" ", 1)) for m in get("merges", [])]
    backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    backend.pre_tokenizer = _byte_level_pre_tokenizer(get("pre"), path)
    backend.decoder = decoders.ByteLevel()
    types = get("token_type") or []
    backend.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == _CONTROL]
    )
    backend.add_tokens(
        [AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == _USER_DEFINED]
    )

    def token(key):
        i = get(f"{key}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    return Tokenizer(
        backend,
        bos_token=token("bos"),
        eos_token=token("eos"),
        pad_token=token("padding"),
        unk_token=token("unknown"),
        add_bos_token=bool(get("add_bos_token", False)),
        add_eos_token=bool(get("add_eos_token", False)),
        name=path,
    )
