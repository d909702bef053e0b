"""How much of the fast engine's work is attention over query slots it discards.

In the block engine (`jaxinterp.causal.patching.fast`), attention runs on a padded
``[row, n_pos]`` view: each row computes query slots for every position, including the
positions before its start, whose outputs are never read (and every slot of a block's pad
row). This prints, for the GPT-2-small-shape sweep of ``benchmarks/patching.py``
(``resid_pre`` over every layer x position of 20 tokens) and a SmolLM2-shape one, the
matmul FLOPs of those discarded query slots (scores and pattern-times-values) as a share
of the sweep's FLOPs (`fast_flops`). Counted from the layout, nothing is run.

    python benchmarks/padded_attention.py
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from patching import GPT2_SMALL, SMOLLM2  # noqa: E402

from jaxinterp.causal.patching import patch_grid  # noqa: E402
from jaxinterp.causal.patching.fast import fast_flops, fast_layout  # noqa: E402
from jaxinterp.core.readout import Readout  # noqa: E402


def discarded_query_flops(cfg, layout) -> float:
    """Matmul FLOPs of the query slots before each row's start (all of a pad row's):
    ``4 * n_heads * d_head * n_pos`` per slot (scores and pattern x values) per layer run."""
    n = layout.shape.n_pos
    per_slot = 4 * cfg.n_heads * cfg.d_head * n
    layers = np.clip(cfg.n_layers - layout.block_layer, 0, None)  # [chunk, block]
    wasted_slots = np.minimum(layout.data["row_start"], n).sum(-1)  # [chunk, block]
    return float((layers * wasted_slots).sum() * per_slot)


def main() -> None:
    for name, cfg, n_pos in (("GPT-2-small shape", GPT2_SMALL, 20), ("SmolLM2 shape", SMOLLM2, 15)):
        grid = patch_grid(cfg, n_pos, "resid_pre", ("layer", "pos"))
        layout = fast_layout(cfg, n_pos, grid)
        readout = Readout.at(-1, n_pos)
        total = fast_flops(cfg, layout, readout)
        waste = discarded_query_flops(cfg, layout)
        print(
            f"{name}: {grid.n_patches} patches, {n_pos} tokens: discarded query slots {waste / 1e9:.3f} GFLOP "
            f"of {total / 1e9:.1f} GFLOP = {100 * waste / total:.2f}% of the sweep's matmul FLOPs"
        )


if __name__ == "__main__":
    main()
