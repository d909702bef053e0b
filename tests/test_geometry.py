"""The causal inner product and concept vectors against numpy references: the whitened
unembedding has zero mean and identity covariance (np.cov), the inner product equals
x^T Cov^{-1} y (np.linalg.inv), the estimator recovers a planted vector, simplex
coordinates of planted points."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.features.geometry import (
    GeometryError,
    causal_inner_product,
    concept_geometry,
    feature_vector,
    hierarchy_pairs,
    load_hierarchy,
    simplex_coordinates,
)
from jaxinterp.features.hierarchies import ANIMAL_PLANT


@pytest.fixture(scope="module")
def W_U():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(12, 12)) * np.linspace(0.2, 3.0, 12)  # anisotropic
    return (rng.normal(size=(400, 12)) @ mix.T + rng.normal(size=12)).T.astype(np.float32)  # [d_model, d_vocab]


def test_whitened_unembedding_has_identity_covariance(W_U):
    ip = causal_inner_product(W_U)
    g = np.asarray(ip.whiten(jnp.asarray(W_U.T)), np.float64)
    np.testing.assert_allclose(g.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(g, rowvar=False, bias=True), np.eye(12), atol=1e-4)
    cov = np.cov(W_U.T.astype(np.float64), rowvar=False, bias=True)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=12), rng.normal(size=12)
    assert float(ip.inner(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))) == pytest.approx(
        x @ np.linalg.inv(cov) @ y, rel=1e-3
    )
    np.testing.assert_allclose(np.asarray(ip.A_inv @ ip.A), np.eye(12), atol=1e-4)


def test_feature_vector_recovers_planted_direction():
    rng = np.random.default_rng(2)
    v = rng.normal(size=8)
    g = v + 0.3 * rng.normal(size=(20000, 8))  # isotropic spread: Cov ~ 0.09 I, LDA direction = mean
    np.testing.assert_allclose(feature_vector(g), v, atol=0.03 * np.linalg.norm(v))
    # Full shrinkage replaces Cov by a multiple of I: the estimate is exactly the mean.
    g = rng.normal(size=(5, 8)) + v
    np.testing.assert_allclose(feature_vector(g, shrinkage=1.0), g.mean(0), rtol=1e-10)
    with pytest.raises(GeometryError, match="at least 2"):
        feature_vector(g[:1])


@pytest.mark.parametrize("shrinkage", [0.0, 0.3, 1.0])
def test_feature_vector_with_fewer_members_than_dims_equals_the_pseudo_inverse(shrinkage):
    """The thin-SVD path (n < d) against numpy's pseudo-inverse of the d x d covariance."""
    rng = np.random.default_rng(5)
    g = rng.normal(size=(7, 40)) + rng.normal(size=40)
    cov = np.cov(g, rowvar=False, bias=True)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / 40 * np.eye(40)
    u = np.linalg.pinv(cov, rcond=1e-6, hermitian=True) @ g.mean(0)
    u /= np.linalg.norm(u)
    np.testing.assert_allclose(feature_vector(g, shrinkage), (u @ g.mean(0)) * u, rtol=1e-9, atol=1e-12)


def test_simplex_coordinates():
    rng = np.random.default_rng(3)
    v = [rng.normal(size=6) for _ in range(3)]
    e1 = (v[1] - v[0]) / np.linalg.norm(v[1] - v[0])
    e2 = (v[2] - v[0]) - ((v[2] - v[0]) @ e1) * e1
    e2 /= np.linalg.norm(e2)
    normal = rng.normal(size=6)
    normal -= (normal @ e1) * e1 + (normal @ e2) * e2  # off the plane: must not show
    pts = np.stack([v[0] + 0.5 * e1 - 2.0 * e2 + normal, v[0]])
    np.testing.assert_allclose(simplex_coordinates(v, pts), [[0.5, -2.0], [0.0, 0.0]], atol=1e-12)


class WordTokenizer:
    """Each word of a fixed list is one token; anything else is two tokens."""

    def __init__(self, words):
        self.ids = {w: i for i, w in enumerate(words)}

    def encode(self, text, prepend_bos=None):
        return [self.ids[text]] if text in self.ids else [0, 0]


def test_concept_geometry_on_a_planted_hierarchy(tmp_path):
    rng = np.random.default_rng(4)
    h = {"animal": {"mammal": [f"m{i}" for i in range(300)], "bird": [f"b{i}" for i in range(300)]}}
    words = [" " + w for w in h["animal"]["mammal"] + h["animal"]["bird"]]
    tok = WordTokenizer(["<pad>"] + words)
    d = 6
    parent, c1, c2 = np.eye(d)[0] * 3, np.eye(d)[1] * 3, np.eye(d)[2] * 3
    gam = rng.normal(size=(1 + 600 + 2000, d))  # pad, members, other words
    gam[1:301] = parent + c1 + 0.2 * rng.normal(size=(300, d))
    gam[301:601] = parent + c2 + 0.2 * rng.normal(size=(300, d))
    G = concept_geometry(gam.T, tok, h, "euclidean", shrinkage=1.0)
    assert len(G.tokens["mammal"]) == 300 and len(G.tokens["animal"]) == 600
    # mean vectors of centred embeddings: animal ~ parent + (c1 + c2)/2 - overall mean.
    centre = gam.mean(0)
    np.testing.assert_allclose(G.vectors["animal"], gam[1:601].mean(0) - centre, atol=1e-9)
    ref = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    np.testing.assert_allclose(
        G.siblings[("animal", "mammal", "bird")], ref(G.vectors["animal"], G.vectors["mammal"] - G.vectors["bird"])
    )
    assert hierarchy_pairs(h) == ([("animal", "mammal"), ("animal", "bird")], [("animal", "mammal", "bird")])
    p = tmp_path / "h.json"
    p.write_text(json.dumps(h))
    assert load_hierarchy(str(p)) == h
    p.write_text(json.dumps({"animal": {"mammal": "dog"}}))
    with pytest.raises(GeometryError, match="animal.mammal"):
        load_hierarchy(str(p))
    with pytest.raises(GeometryError, match="single-token words"):
        concept_geometry(gam.T, tok, {"x": {"y": ["nope", "nada", "nix"]}}, "euclidean")


def test_builtin_hierarchy_is_well_formed():
    nodes = ANIMAL_PLANT
    assert set(nodes) == {"animal", "plant"} and {"mammal", "bird", "fish"} <= set(nodes["animal"])
    assert all(len(words) >= 12 for cat in nodes.values() for words in cat.values())
