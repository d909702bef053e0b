"""The geometry of categorical and hierarchical concepts in SmolLM2-135M's unembedding
(Park, Choe, Jiang & Veitch 2024).

    JAXINTERP_QUICK=1 .venv/bin/python examples/geometry.py   # ~30 s
    .venv/bin/python examples/geometry.py                     # ~1-2 min

1. The causal inner product: whiten the 49152 unembedding vectors (check: identity covariance).
2. Vectors of the built-in categories (animal -> mammal / bird / fish / reptile / insect;
   plant -> tree / flower / vegetable) from their single-token words.
3. Hierarchical orthogonality: cos(l_parent, l_child - l_parent) and cos(l_parent,
   l_sibling_a - l_sibling_b), under the causal inner product and the Euclidean one,
   for the paper's estimator (shrinkage 0), a shrunk one and plain means; and the same
   for random token sets of the same sizes, the baseline that says whether a cosine
   near 0 is a property of the concepts or of the estimator in 576 dimensions.
4. A figure: tokens on the (animal, mammal - animal) plane and on the mammal/bird/fish simplex.

Writes ``out/geometry.png``.
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from jaxinterp.features.geometry import causal_inner_product, concept_geometry, feature_vector, simplex_coordinates
from jaxinterp.features.hierarchies import ANIMAL_PLANT
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.viz.geometry import concept_projections

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"


def random_baseline(emb, sizes, shrinkage, rng, n_draws):
    """cos(l_parent, l_child - l_parent) for random token sets: a parent of the animal set's
    size and a child drawn from it with the mammal set's size."""
    out = []
    for _ in range(n_draws):
        parent = rng.choice(emb.shape[0], sizes[0], replace=False)
        a, b = feature_vector(emb[parent], shrinkage), feature_vector(emb[parent[: sizes[1]]], shrinkage)
        out.append(a @ (b - a) / np.linalg.norm(a) / np.linalg.norm(b - a))
    return np.asarray(out)


def main():
    os.makedirs("out", exist_ok=True)
    t0 = time.time()
    model, tok = ji.load(smollm2_path()), ji.load_tokenizer(smollm2_path())
    W_U = np.asarray(model.unembed.W_U)
    ip = causal_inner_product(W_U)
    g = np.asarray(ip.whiten(jnp.asarray(W_U.T)), np.float64)
    cov = np.cov(g, rowvar=False, bias=True)
    print(f"whitened unembedding {g.shape}: max |Cov(g) - I| = {np.abs(cov - np.eye(cov.shape[0])).max():.2e}")
    raw = W_U.T.astype(np.float64) - W_U.T.mean(0)

    rng = np.random.default_rng(0)
    n_draws = 3 if QUICK else 20
    shrinkages = (0.0, 1.0) if QUICK else (0.0, 0.1, 1.0)
    print("mean |cos| over pairs (parent vs child - parent: 8 pairs; parent vs sibling difference: 13 triples)")
    print(f"{'estimator':>22} {'space':>10} {'parent-child':>13} {'siblings':>9} {'random sets':>16}")
    results = {}
    for sh in shrinkages:
        for space, emb in (("causal", g), ("euclidean", raw)):
            G = concept_geometry(W_U, tok, ANIMAL_PLANT, space, ip, shrinkage=sh)
            results[sh, space] = G
            pc = np.asarray(list(G.parent_child.values()))
            sib = np.asarray(list(G.siblings.values()))
            sizes = (len(G.tokens["animal"]), len(G.tokens["mammal"]))
            base = random_baseline(emb, sizes, sh, rng, n_draws)
            name = {0.0: "paper (pinv Cov)", 1.0: "mean vector"}.get(sh, f"shrinkage {sh}")
            print(
                f"{name:>22} {space:>10} {np.abs(pc).mean():13.3f} {np.abs(sib).mean():9.3f} "
                f"{base.mean():+8.3f} ± {base.std():.3f}"
            )
            if sh == 0.0:
                print(
                    "      parent-child cosines: " + ", ".join(f"{c}: {v:+.2f}" for (p, c), v in G.parent_child.items())
                )
    G = results[0.0, "causal"]
    print("single-token words per category: " + ", ".join(f"{k} {len(v)}" for k, v in G.tokens.items()))

    # Figure: causal space, the paper's estimator.
    v = G.vectors
    e1 = v["animal"] / np.linalg.norm(v["animal"])
    d = v["mammal"] - v["animal"]
    e2 = d - (d @ e1) * e1
    e2 /= np.linalg.norm(e2)
    plane = {k: g[G.tokens[k]] @ np.stack([e1, e2], 1) for k in ("mammal", "bird", "fish", "plant")}
    verts = {
        k: simplex_coordinates([v["mammal"], v["bird"], v["fish"]], v[k][None])[0] for k in ("mammal", "bird", "fish")
    }
    simplex = {
        k: simplex_coordinates([v["mammal"], v["bird"], v["fish"]], g[G.tokens[k]]) for k in ("mammal", "bird", "fish")
    }
    concept_projections(
        {
            "animal vs mammal - animal (causal)": (
                "along l_animal",
                "along l_mammal - l_animal (orthogonalised)",
                plane,
                {},
            ),
            "mammal / bird / fish simplex (causal)": ("", "", simplex, verts),
        },
        "SmolLM2-135M unembedding, causal inner product",
        "out/geometry.png",
    )
    print(f"wrote out/geometry.png ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
