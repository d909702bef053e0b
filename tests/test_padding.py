"""`Tokenizer.to_tokens(..., padding_side=)`: each encoding placed on its side, the mask
marking it, the rest pad ids. (Left-padded batches of every family giving each row's
logits alone: tests/test_parity_new_families.py; on SmolLM2: examples/left_padding.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from jaxinterp.loading.tokenizer import TokenizerError

TEXTS = ["The cat sat on the mat", "Hello", "One two three"]


def test_padding_side_places_each_encoding_and_mask(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = [tok.encode(t) for t in TEXTS]
    width = max(map(len, ids))
    for side in ("left", "right"):
        tokens, mask = tok.to_tokens_and_mask(TEXTS, padding_side=side)
        assert tokens.shape == mask.shape == (len(TEXTS), width)
        np.testing.assert_array_equal(tok.to_tokens(TEXTS, padding_side=side), tokens)
        for row, r in enumerate(ids):
            real = slice(width - len(r), None) if side == "left" else slice(0, len(r))
            assert tokens[row, real].tolist() == r and mask[row, real].all() and mask[row].sum() == len(r)
            assert (tokens[row][mask[row] == 0] == tok.pad_token_id).all()
    np.testing.assert_array_equal(tok.to_tokens(TEXTS, pad=True), tok.to_tokens(TEXTS, padding_side="right"))
    with pytest.raises(TokenizerError, match="padding_side must be 'left' or 'right', got 'top'"):
        tok.to_tokens(TEXTS, padding_side="top")
