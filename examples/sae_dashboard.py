"""Feature dashboards for a trained SAE: one self-contained HTML page.

    PYTHONPATH=. nice -n 10 .venv/bin/python examples/sae_dashboard.py     # after examples/sae_train.py
    JAXINTERP_QUICK=1 ... examples/sae_dashboard.py                          # tiny model, trains its own SAE

Loads the TopK SAE that ``examples/sae_train.py`` saved (SmolLM2-135M, resid_pre of
layer 15), runs held-out Shakespeare contexts through the model, and writes
``out/sae_dashboard.html``: for each of a few features its top-activating contexts
(activating token outlined), a histogram of its activations, and the tokens its decoder
direction promotes and suppresses through the unembedding. The page loads nothing from
the network. Features shown: the most strongly activating among those firing on 0.1%-10%
of tokens (very dense latents are rarely interpretable).
"""

from __future__ import annotations

import os

import jax
import numpy as np

import jaxinterp as ji
from jaxinterp.features import sae as S
from jaxinterp.loading import bundled
from jaxinterp.viz.sae_dashboard import save_sae_dashboard

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
OUT = "out"
SAE_DIR = os.path.join(OUT, "saes", "resid_pre_15_topk")


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = ji.load_tokenizer(bundled.smollm2_path())
    texts = S.corpus_texts(bundled.shakespeare_dir())
    if QUICK:
        cfg = ji.ModelConfig(
            d_model=64,
            n_layers=2,
            n_heads=4,
            d_head=16,
            n_kv_heads=2,
            d_vocab=tok.vocab_size,
            n_ctx=64,
            d_mlp=128,
            normalization="rmsnorm",
            positional="rotary",
            gated_mlp=True,
            act_fn="silu",
            family="llama-like",
        )
        model = ji.Transformer.init(cfg, jax.random.key(0), std=0.1)
        contexts = S.token_contexts(tok, texts, 32, max_contexts=48)
        store = S.ModelStore(model, contexts[:32], "resid_pre", 1, contexts_per_fill=16, model_batch=8)
        sae = S.train_sae(
            S.init_sae("topk", S.SAEConfig(64, 256, layer=1), jax.random.key(1), k=8),
            store,
            S.TrainConfig(n_steps=20, batch_size=128, lr=1e-3, lr_warmup=2),
            progress=False,
        ).sae
        held_out = contexts[32:]
    else:
        if not os.path.isdir(SAE_DIR):
            raise SystemExit(f"{SAE_DIR} not found: run examples/sae_train.py first")
        model = ji.load(bundled.smollm2_path())
        sae = S.load_sae(SAE_DIR)
        # contexts after the ones sae_train.py trained and evaluated on (it used the first 100)
        held_out = S.token_contexts(tok, texts, 128, max_contexts=116)[100:]
    acts = S.all_feature_acts(model, sae, held_out)
    body = acts[:, 1:]
    rates = (body > 0).reshape(-1, sae.cfg.d_sae).mean(0)
    peak = body.reshape(-1, sae.cfg.d_sae).max(0)
    candidates = np.flatnonzero((rates > 0.001) & (rates < 0.1))
    if candidates.size == 0:
        candidates = np.flatnonzero(rates > 0)
    features = candidates[np.argsort(-peak[candidates])][:8].tolist()
    dash = S.feature_dashboards(model, sae, held_out, tok, features, acts=acts)
    where = f"{'tiny random model' if QUICK else 'SmolLM2-135M'}, {sae.cfg.site} layer {sae.cfg.layer}, {sae.kind} SAE, d_sae {sae.cfg.d_sae}"
    path = save_sae_dashboard(
        dash, os.path.join(OUT, "sae_dashboard.html"), subtitle=f"{where}; {held_out.size} held-out tokens"
    )
    for d in dash:
        top = d.top_contexts[0] if d.top_contexts else None
        shown = "" if top is None else "".join(top.tokens).replace("\n", " ")
        print(
            f"feature {d.feature:5d}: rate {d.firing_rate:.4f}, max {d.max_act:.2f}, promotes {[t for t, _ in d.promoted[:4]]}; top: {shown!r}"
        )
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB, {len(dash)} features)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
