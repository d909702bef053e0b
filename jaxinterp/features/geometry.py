"""The geometry of categorical and hierarchical concepts in the unembedding (Park, Choe,
Jiang & Veitch 2024, "The Geometry of Categorical and Hierarchical Concepts in Large
Language Models").

- **Causal inner product.** With ``gamma(y)`` the unembedding vector of token ``y``,
  ``g(y) = Cov(gamma)^{-1/2} (gamma(y) - E[gamma])`` (mean and covariance over the
  vocabulary). In ``g`` coordinates the causal inner product ``<x, y>_C = x^T Cov^{-1} y``
  is the Euclidean one, and the whitened unembedding has identity covariance.
- **Vector of a binary feature** from its token set ``Y(w)`` (the paper's LDA-style
  estimator): ``l_w = (g_w~ . E[g_w]) g_w~`` with ``g_w~ = Cov(g_w)^+ E[g_w] / |Cov(g_w)^+ E[g_w]|``:
  the direction along which the set's members project near-equally, scaled to their mean
  projection.
- **Hierarchical orthogonality** (their Theorem 8): for a child concept ``z`` of ``w``
  (mammal of animal), ``l_w`` is orthogonal to ``l_z - l_w``; and differences between
  siblings (``l_mammal - l_bird``) are orthogonal to the parent.
- **Categorical concepts as polytopes**: {mammal, bird, fish} is the simplex of the
  children's vectors; `simplex_coordinates` projects tokens onto its plane.

`concept_geometry` runs the estimator in whitened ``g`` space (causal) and, for
contrast, in raw centred unembedding space with the Euclidean inner product.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping, Optional, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxinterp.errors import JaxinterpError

__all__ = [
    "GeometryError",
    "CausalInnerProduct",
    "causal_inner_product",
    "feature_vector",
    "concept_tokens",
    "load_hierarchy",
    "ConceptGeometry",
    "concept_geometry",
    "hierarchy_pairs",
    "simplex_coordinates",
]


class GeometryError(JaxinterpError):
    """A bad hierarchy, token set or unembedding."""


class CausalInnerProduct(eqx.Module):
    """Whitening of the unembedding: ``g = (gamma - mean) @ A.T`` with ``A = Cov^{-1/2}``.

    ``mean [d_model]``, ``A`` and ``A_inv = Cov^{1/2}`` ``[d_model, d_model]``."""

    mean: Float[Array, " d_model"]
    A: Float[Array, "d_model d_model"]
    A_inv: Float[Array, "d_model d_model"]

    def whiten(self, gamma: Float[Array, "... d_model"]) -> Float[Array, "... d_model"]:
        """``g`` coordinates of unembedding vectors."""
        return (gamma - self.mean) @ self.A.T

    def inner(self, x: Float[Array, "... d_model"], y: Float[Array, "... d_model"]) -> Array:
        """``<x, y>_C = x^T Cov^{-1} y`` of two raw (unembedding-space) directions."""
        return ((x @ self.A.T) * (y @ self.A.T)).sum(-1)


def causal_inner_product(W_U: Float[Array, "d_model d_vocab"], eps: float = 1e-6) -> CausalInnerProduct:
    """The causal inner product of an unembedding ``W_U [d_model, d_vocab]`` (the model's
    ``model.unembed.W_U``). Computed in float64 numpy (the covariance is ill-conditioned);
    eigenvalues below ``eps * max`` are clipped."""
    gamma = np.asarray(W_U, np.float64).T  # [vocab, d_model]
    if gamma.ndim != 2 or gamma.shape[0] <= gamma.shape[1]:
        raise GeometryError(f"W_U must be [d_model, d_vocab] with d_vocab > d_model, got {np.shape(W_U)}")
    mean = gamma.mean(0)
    cov = np.cov(gamma, rowvar=False, bias=True)
    evals, evecs = np.linalg.eigh(cov)
    evals = np.maximum(evals, eps * evals.max())
    A = (evecs / np.sqrt(evals)) @ evecs.T
    A_inv = (evecs * np.sqrt(evals)) @ evecs.T
    return CausalInnerProduct(
        jnp.asarray(mean, jnp.float32), jnp.asarray(A, jnp.float32), jnp.asarray(A_inv, jnp.float32)
    )


def feature_vector(g: Float[np.ndarray, "n d"], shrinkage: float = 0.0, rcond: float = 1e-6) -> np.ndarray:
    """The LDA-style vector of a binary feature from its members' vectors ``g [n, d]``:
    ``(u . mean) u`` with ``u = Cov^+ mean / |Cov^+ mean|`` (pseudo-inverse: with fewer
    members than dimensions the covariance is singular). ``shrinkage`` ``s`` in [0, 1]
    replaces ``Cov`` by ``(1 - s) Cov + s tr(Cov)/d I`` (0: the paper's estimator; 1: the
    members' mean vector)."""
    if not 0.0 <= shrinkage <= 1.0:
        raise GeometryError(f"shrinkage must be in [0, 1], got {shrinkage}")
    g = np.asarray(g, np.float64)
    if g.ndim != 2 or g.shape[0] < 2:
        raise GeometryError(f"a feature needs at least 2 member vectors [n, d], got shape {g.shape}")
    mean = g.mean(0)
    n, d = g.shape
    centred = g - mean
    if n < d and centred.any():
        # Fewer members than dimensions (the usual case: tens of tokens, hundreds of
        # dims): Cov = V diag(lam) V^T lives in the members' span, so Cov^+ (or the
        # shrunk inverse, whose isotropic part acts alone off the span) comes from a
        # thin SVD of the n x d members instead of a d x d eigendecomposition.
        _, sing, Vt = np.linalg.svd(centred, full_matrices=False)
        lam = sing**2 / n
        along = Vt @ mean
        if shrinkage > 0:
            iso = shrinkage * lam.sum() / d  # s tr(Cov) / d
            u = Vt.T @ (along / ((1 - shrinkage) * lam + iso)) + (mean - Vt.T @ along) / iso
        else:
            keep = lam > rcond * lam.max()  # numpy's pinv cut-off, relative to the largest eigenvalue
            u = Vt[keep].T @ (along[keep] / lam[keep])
    else:
        cov = np.cov(g, rowvar=False, bias=True)
        if shrinkage > 0:
            cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
        u = np.linalg.pinv(cov, rcond=rcond, hermitian=True) @ mean
    u /= np.linalg.norm(u)
    return (u @ mean) * u


def _leaves(node) -> list[str]:
    if isinstance(node, Mapping):
        return [w for child in node.values() for w in _leaves(child)]
    return list(node)


def _check_hierarchy(node, path="hierarchy"):
    if isinstance(node, Mapping):
        if not node:
            raise GeometryError(f"{path} is an empty category")
        for k, v in node.items():
            if not isinstance(k, str):
                raise GeometryError(f"{path}: category names must be strings, got {k!r}")
            _check_hierarchy(v, f"{path}.{k}")
    elif isinstance(node, (list, tuple)):
        if not all(isinstance(w, str) and w.strip() for w in node):
            raise GeometryError(f"{path}: a leaf category must be a list of non-empty words")
    else:
        raise GeometryError(f"{path}: expected a dict of sub-categories or a list of words, got {type(node).__name__}")


def load_hierarchy(path: str) -> dict:
    """A user hierarchy from a JSON file: nested objects, leaves lists of words (as
    `jaxinterp.features.hierarchies.ANIMAL_PLANT`)."""
    try:
        with open(path, encoding="utf-8") as f:
            h = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise GeometryError(f"cannot read hierarchy {path!r}: {e}") from e
    if not isinstance(h, Mapping):
        raise GeometryError(f"{path}: the top level must be an object of categories")
    _check_hierarchy(h)
    return h


def concept_tokens(tokenizer, words: Sequence[str], variants=(" {}", " {}".title, "{}")) -> list[int]:
    """Ids of the single-token spellings of ``words``: `` word``, `` Word`` and ``word``
    where each is one token (duplicates removed)."""
    ids = []
    for w in words:
        for form in (" " + w, " " + w[:1].upper() + w[1:], w):
            enc = tokenizer.encode(form, prepend_bos=False)
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
    return ids


def hierarchy_pairs(hierarchy: Mapping) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """``(parent, child)`` pairs of every internal node and ``(parent, child_a, child_b)``
    sibling triples, by category name."""
    pairs, triples = [], []

    def walk(name, node):
        if not isinstance(node, Mapping):
            return
        kids = list(node)
        if name is not None:
            pairs.extend((name, k) for k in kids)
            triples.extend((name, a, b) for i, a in enumerate(kids) for b in kids[i + 1 :])
        for k in kids:
            walk(k, node[k])

    walk(None, hierarchy)
    return pairs, triples


def _nodes(hierarchy) -> dict[str, list[str]]:
    out = {}

    def walk(name, node):
        if name in out:
            raise GeometryError(f"category name {name!r} appears twice in the hierarchy")
        out[name] = _leaves(node)
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(k, v)

    for k, v in hierarchy.items():
        walk(k, v)
    return out


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclasses.dataclass(frozen=True)
class ConceptGeometry:
    """Concept vectors in one space, and the orthogonality cosines.

    Attributes:
        space: ``"causal"`` (whitened) or ``"euclidean"`` (raw, centred).
        vectors: ``{category: [d_model]}``.
        tokens: ``{category: token ids used}``.
        parent_child: ``{(parent, child): cos(l_parent, l_child - l_parent)}``.
        siblings: ``{(parent, a, b): cos(l_parent, l_a - l_b)}``.
    """

    space: str
    vectors: dict
    tokens: dict
    parent_child: dict
    siblings: dict


def concept_geometry(
    W_U: Float[Array, "d_model d_vocab"],
    tokenizer,
    hierarchy: Mapping,
    space: str = "causal",
    ip: Optional[CausalInnerProduct] = None,
    min_tokens: int = 3,
    shrinkage: float = 0.0,
) -> ConceptGeometry:
    """Estimate every category's vector and check hierarchical orthogonality.

    ``space="causal"``: the estimator runs on whitened ``g(y)`` and cosines are causal
    (Euclidean in ``g``); ``"euclidean"``: on raw unembedding vectors minus their mean,
    with Euclidean cosines. Categories with fewer than ``min_tokens`` single-token words are
    an error. ``shrinkage``: see `feature_vector`."""
    if space not in ("causal", "euclidean"):
        raise GeometryError(f"space must be 'causal' or 'euclidean', got {space!r}")
    _check_hierarchy(hierarchy)
    gamma = np.asarray(W_U, np.float64).T
    if space == "causal":
        ip = ip or causal_inner_product(W_U)
        emb = np.asarray(ip.whiten(jnp.asarray(gamma, jnp.float32)), np.float64)
    else:
        emb = gamma - gamma.mean(0)
    vectors, tokens = {}, {}
    for name, words in _nodes(hierarchy).items():
        ids = concept_tokens(tokenizer, words)
        if len(ids) < min_tokens:
            raise GeometryError(f"category {name!r} has {len(ids)} single-token words (< {min_tokens}): {words[:8]}")
        tokens[name] = ids
        vectors[name] = feature_vector(emb[ids], shrinkage)
    pairs, triples = hierarchy_pairs(hierarchy)
    pc = {(p, c): _cos(vectors[p], vectors[c] - vectors[p]) for p, c in pairs}
    sib = {(p, a, b): _cos(vectors[p], vectors[a] - vectors[b]) for p, a, b in triples}
    return ConceptGeometry(space, vectors, tokens, pc, sib)


def simplex_coordinates(vectors: Sequence[np.ndarray], points: Float[np.ndarray, "n d"]) -> np.ndarray:
    """2-D coordinates of ``points`` on the plane through three concept vectors (the
    vertices of a categorical concept's simplex): orthonormal axes along ``v1 - v0`` and
    the part of ``v2 - v0`` orthogonal to it, origin at ``v0``. ``[n, 2]``; the vertices
    themselves are ``simplex_coordinates(vectors, np.stack(vectors))``."""
    if len(vectors) != 3:
        raise GeometryError(f"a 2-D simplex needs 3 vertex vectors, got {len(vectors)}")
    v0, v1, v2 = (np.asarray(v, np.float64) for v in vectors)
    e1 = (v1 - v0) / np.linalg.norm(v1 - v0)
    e2 = (v2 - v0) - ((v2 - v0) @ e1) * e1
    e2 /= np.linalg.norm(e2)
    p = np.asarray(points, np.float64) - v0
    return np.stack([p @ e1, p @ e2], -1)
