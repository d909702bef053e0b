"""`FactoredMatrix` against dense numpy (float64) on random matrices: SVD, eigenvalues,
norms, products, transpose and chunked top entries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxinterp.analysis.factored_matrix import FactoredMatrix

RTOL = 2e-4


def _rand(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def _dense(fm):
    return np.asarray(fm.A, np.float64) @ np.asarray(fm.B, np.float64)


shapes = st.tuples(
    st.sampled_from([(), (3,), (2, 3)]),  # batch axes
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 9),  # m, r, n
)
settings_ = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings_
@given(shapes, st.integers(0, 2**31 - 1))
def test_svd_matches_dense(shape, seed):
    batch, m, r, n = shape
    rng = np.random.default_rng(seed)
    fm = FactoredMatrix(_rand(rng, *batch, m, r), _rand(rng, *batch, r, n))
    U, S, V = (np.asarray(x, np.float64) for x in fm.svd())
    dense = _dense(fm)
    k = min(m, r, n)
    assert S.shape == batch + (k,)
    ref = np.linalg.svd(dense, compute_uv=False)[..., :k]
    np.testing.assert_allclose(S, ref, rtol=RTOL, atol=1e-4 * max(1.0, ref.max()))
    # The factors reconstruct the product and have orthonormal columns.
    np.testing.assert_allclose(U * S[..., None, :] @ np.swapaxes(V, -1, -2), dense, atol=1e-4 * max(1.0, ref.max()))
    np.testing.assert_allclose(np.swapaxes(U, -1, -2) @ U, np.broadcast_to(np.eye(k), batch + (k, k)), atol=1e-4)
    np.testing.assert_allclose(np.swapaxes(V, -1, -2) @ V, np.broadcast_to(np.eye(k), batch + (k, k)), atol=1e-4)


@settings_
@given(shapes, st.integers(0, 2**31 - 1))
def test_norm_matches_dense(shape, seed):
    batch, m, r, n = shape
    rng = np.random.default_rng(seed)
    fm = FactoredMatrix(_rand(rng, *batch, m, r), _rand(rng, *batch, r, n))
    ref = np.linalg.norm(_dense(fm), axis=(-1, -2))
    np.testing.assert_allclose(np.asarray(fm.norm()), ref, rtol=RTOL)
    # ... and agrees with the singular values.
    np.testing.assert_allclose(np.sqrt((np.asarray(fm.S, np.float64) ** 2).sum(-1)), ref, rtol=RTOL)


def _nonzero_sorted(eigs, tol):
    eigs = eigs[np.abs(eigs) > tol]
    return eigs[np.lexsort((np.round(eigs.imag, 3), np.round(eigs.real, 3)))]


@pytest.mark.parametrize("m,r", [(6, 3), (5, 5), (3, 7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eigenvalues_match_dense(m, r, seed):
    rng = np.random.default_rng(seed)
    fm = FactoredMatrix(_rand(rng, 2, m, r), _rand(rng, 2, r, m))
    ours = np.asarray(fm.eigenvalues)
    assert ours.shape == (2, r)
    dense = _dense(fm)
    for b in range(2):
        ref = np.linalg.eigvals(dense[b])
        tol = 1e-3 * np.abs(ref).max()
        a, e = _nonzero_sorted(ours[b], tol), _nonzero_sorted(ref, tol)
        assert len(a) == len(e) == min(m, r)
        np.testing.assert_allclose(a, e, rtol=1e-3, atol=1e-4)
    # The trace (sum of eigenvalues) is the same from either side.
    np.testing.assert_allclose(ours.sum(-1).real, np.trace(dense, axis1=-2, axis2=-1), rtol=1e-4, atol=1e-4)


def test_products_transpose_and_indexing():
    rng = np.random.default_rng(3)
    f1 = FactoredMatrix(_rand(rng, 4, 7, 3), _rand(rng, 4, 3, 6))
    f2 = FactoredMatrix(_rand(rng, 4, 6, 5), _rand(rng, 4, 5, 8))
    dense_mat, vec = _rand(rng, 6, 2), _rand(rng, 6)
    left_mat, vec_left = _rand(rng, 5, 7), _rand(rng, 7)
    np.testing.assert_allclose(_dense(f1 @ f2), _dense(f1) @ _dense(f2), rtol=1e-4, atol=1e-4)
    assert (f1 @ f2).mdim == 3  # folded into the side with the smaller inner dimension
    assert (f2.T @ f1.T).mdim == 3
    np.testing.assert_allclose(_dense(f1 @ dense_mat), _dense(f1) @ dense_mat, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(f1 @ vec), _dense(f1) @ vec, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(vec_left @ f1), vec_left @ _dense(f1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_dense(left_mat @ f1), left_mat @ _dense(f1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_dense(f1.T), np.swapaxes(_dense(f1), -1, -2), rtol=1e-6)
    np.testing.assert_allclose(_dense(f1 * 2.5), 2.5 * _dense(f1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_dense(f1[2]), _dense(f1)[2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(f1.AB), _dense(f1), rtol=1e-5, atol=1e-5)
    assert f1.shape == (4, 7, 6) and f1[1:3].shape == (2, 7, 6)


def test_top_singular_are_the_largest():
    rng = np.random.default_rng(4)
    fm = FactoredMatrix(_rand(rng, 9, 4), _rand(rng, 4, 8))
    U, S, V = (np.asarray(x) for x in fm.top_singular(2))
    u, s, vt = np.linalg.svd(_dense(fm))
    np.testing.assert_allclose(S, s[:2], rtol=RTOL)
    # Singular vectors agree up to sign.
    np.testing.assert_allclose(np.abs(np.sum(U * u[:, :2], 0)), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(V * vt[:2].T, 0)), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="k must be in 1..4"):
        fm.top_singular(5)


@pytest.mark.parametrize("largest", [True, False])
def test_top_entries_chunked_match_dense(largest):
    rng = np.random.default_rng(5)
    fm = FactoredMatrix(_rand(rng, 103, 4), _rand(rng, 4, 37))  # 103 rows: a ragged last chunk
    vals, rows, cols = (np.asarray(x) for x in fm.top_entries(20, chunk_size=16, largest=largest))
    dense = _dense(fm)
    flat = np.sort(dense.ravel())
    ref = flat[::-1][:20] if largest else flat[:20]
    np.testing.assert_allclose(vals, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dense[rows, cols], vals, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="inner dimensions differ"):
        FactoredMatrix(np.zeros((3, 4)), np.zeros((5, 6)))
    with pytest.raises(ValueError, match="batch axes do not broadcast"):
        FactoredMatrix(np.zeros((2, 3, 4)), np.zeros((3, 4, 6)))
    with pytest.raises(ValueError, match="square"):
        FactoredMatrix(np.zeros((3, 4)), np.zeros((4, 6))).eigenvalues
    with pytest.raises(ValueError, match="index the batch axes first"):
        FactoredMatrix(np.zeros((2, 3, 4)), np.zeros((2, 4, 6))).top_entries(3)
