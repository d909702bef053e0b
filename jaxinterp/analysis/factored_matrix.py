"""`FactoredMatrix`: a low-rank product ``A @ B`` that is never materialised.

Attention circuits are products of thin matrices: a head's QK circuit
``W_Q @ W_K^T`` is ``[d_model, d_model]`` but has rank ``d_head``, and its full
token-space circuit ``W_E W_Q W_K^T W_E^T`` is ``[d_vocab, d_vocab]`` (2.5e9 entries
for GPT-2). Everything we want from such a matrix (singular values, eigenvalues,
norms, products with other circuits) can be computed from the thin factors, on the
small side, in time linear in the big dimensions::

    ov = FactoredMatrix(W_V, W_O)            # [head, d_model, d_head] @ [head, d_head, d_model]
    U, S, V = ov.svd()                       # ov.AB == U @ diag(S) @ V^T, per head
    ov.eigenvalues                           # nonzero eigenvalues of ov.AB, from W_O @ W_V
    ov.norm()                                # Frobenius norm per head

Leading axes are batch axes (per layer, per head) and broadcast like ``jnp.matmul``.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

__all__ = ["FactoredMatrix", "SVD"]


class SVD(NamedTuple):
    """A thin SVD ``M = U @ diag(S) @ V^T`` (``V`` is *not* transposed), singular
    values in descending order."""

    U: Float[Array, "... m k"]
    S: Float[Array, "... k"]
    V: Float[Array, "... n k"]


class FactoredMatrix(eqx.Module):
    """The matrix ``A @ B`` held as its factors ``A [..., m, r]`` and ``B [..., r, n]``.

    ``r`` (the inner dimension) is typically small: ``d_head`` for attention circuits.
    Methods that need a decomposition work on ``r x r`` matrices after a QR of each
    factor, so they never form an ``m x n`` array.
    """

    A: Float[Array, "... m r"]
    B: Float[Array, "... r n"]

    # Make `numpy_array @ factored` defer to __rmatmul__ instead of numpy's matmul.
    __array_ufunc__ = None

    def __init__(self, A, B):
        A, B = jnp.asarray(A), jnp.asarray(B)
        if A.ndim < 2 or B.ndim < 2:
            raise ValueError(f"FactoredMatrix factors must be at least 2-D, got A {A.shape} and B {B.shape}")
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(
                f"FactoredMatrix inner dimensions differ: A is {A.shape} (last axis {A.shape[-1]}), "
                f"B is {B.shape} (second-to-last axis {B.shape[-2]}); expected A [..., m, r] and B [..., r, n]"
            )
        try:
            jnp.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except ValueError:
            raise ValueError(
                f"FactoredMatrix batch axes do not broadcast: A {A.shape[:-2]}, B {B.shape[:-2]}"
            ) from None
        self.A, self.B = A, B

    # ---------------------------------------------------------------- shape

    @property
    def shape(self) -> tuple[int, ...]:
        """``(*batch, m, n)``: the shape of the product."""
        return jnp.broadcast_shapes(self.A.shape[:-2], self.B.shape[:-2]) + (self.A.shape[-2], self.B.shape[-1])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def ldim(self) -> int:
        """``m``, the number of rows."""
        return self.A.shape[-2]

    @property
    def rdim(self) -> int:
        """``n``, the number of columns."""
        return self.B.shape[-1]

    @property
    def mdim(self) -> int:
        """``r``, the inner dimension (an upper bound on the rank)."""
        return self.A.shape[-1]

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={self.shape}, inner={self.mdim})"

    # ------------------------------------------------------------- algebra

    @property
    def AB(self) -> Float[Array, "... m n"]:
        """The dense product ``A @ B`` (materialises ``m x n``: only for small matrices)."""
        return self.A @ self.B

    @property
    def BA(self) -> Float[Array, "... r r"]:
        """The small product ``B @ A`` (needs ``m == n``); it has the same nonzero
        eigenvalues as ``A @ B``."""
        if self.ldim != self.rdim:
            raise ValueError(f"BA needs a square product, this one is {self.ldim}x{self.rdim}")
        return self.B @ self.A

    @property
    def T(self) -> "FactoredMatrix":
        """The transpose ``B^T @ A^T``, still factored."""
        return FactoredMatrix(jnp.swapaxes(self.B, -1, -2), jnp.swapaxes(self.A, -1, -2))

    def __matmul__(self, other: Union["FactoredMatrix", Array]) -> Union["FactoredMatrix", Array]:
        """``self @ other``. A dense vector gives a dense result; a dense matrix or a
        `FactoredMatrix` gives a `FactoredMatrix` whose inner dimension is the smaller
        of the two available."""
        if isinstance(other, FactoredMatrix):
            # (A1 B1)(A2 B2): fold the middle into whichever side keeps the inner dim small.
            if self.mdim <= other.mdim:
                return FactoredMatrix(self.A, (self.B @ other.A) @ other.B)
            return FactoredMatrix(self.A @ (self.B @ other.A), other.B)
        other = jnp.asarray(other)
        if other.ndim == 1:
            return (self.A @ (self.B @ other)[..., None])[..., 0]
        if other.shape[-2] != self.rdim:
            raise ValueError(
                f"cannot multiply a FactoredMatrix of shape {self.shape} by an array of shape {other.shape}"
            )
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: Array) -> Union["FactoredMatrix", Array]:
        """``other @ self`` for a dense ``other``."""
        other = jnp.asarray(other)
        if other.ndim == 1:
            return ((other @ self.A)[..., None, :] @ self.B)[..., 0, :]
        return (self.T @ jnp.swapaxes(other, -1, -2)).T

    def __mul__(self, scalar) -> "FactoredMatrix":
        """Scale by a scalar (or an array broadcasting over the batch axes)."""
        scalar = jnp.asarray(scalar)
        if scalar.ndim:
            scalar = scalar[..., None, None]
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    def __getitem__(self, idx) -> "FactoredMatrix":
        """Index the batch axes only (e.g. ``circuit[layer, head]``)."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        n_batch = self.ndim - 2
        if len(idx) > n_batch:
            raise IndexError(f"FactoredMatrix indexing selects batch axes only; this one has {n_batch} batch axes")
        shape = self.shape[:-2]
        A = jnp.broadcast_to(self.A, shape + self.A.shape[-2:])
        B = jnp.broadcast_to(self.B, shape + self.B.shape[-2:])
        return FactoredMatrix(A[idx], B[idx])

    # ------------------------------------------------------- decompositions

    def svd(self) -> SVD:
        """Thin SVD ``A @ B = U diag(S) V^T`` with ``k = min(m, r, n)`` components.

        Via QR of the thin factors: ``A = Q_a R_a``, ``B^T = Q_b R_b``, so
        ``A B = Q_a (R_a R_b^T) Q_b^T`` and only the small core ``R_a R_b^T`` is
        decomposed. Signs of singular vector pairs are arbitrary, as for any SVD.
        """
        return _thin_svd(self.A, self.B)

    @property
    def S(self) -> Float[Array, "... k"]:
        """Singular values, descending."""
        return self.svd().S

    def top_singular(self, k: int = 1) -> SVD:
        """The ``k`` largest singular values and their left (``U``, input side) and right
        (``V``, output side) singular vectors, as columns."""
        U, S, V = self.svd()
        if not 0 < k <= S.shape[-1]:
            raise ValueError(f"k must be in 1..{S.shape[-1]} (the number of singular values), got {k}")
        return SVD(U[..., :k], S[..., :k], V[..., :k])

    def norm(self) -> Float[Array, "..."]:
        """Frobenius norm of ``A @ B``, from the Gram matrices (no SVD needed):
        ``||AB||_F^2 = tr((A^T A)(B B^T))``."""
        return _frobenius(self.A, self.B)

    @property
    def eigenvalues(self) -> Complex[Array, "... r"]:
        """Eigenvalues of the square product, from the small ``B @ A``.

        ``A @ B`` (``m x m``) and ``B @ A`` (``r x r``) share their nonzero eigenvalues;
        this returns the ``r`` eigenvalues of ``B @ A`` (when ``r > m`` the extra ones are
        zero). Complex dtype. Uses ``jnp.linalg.eig`` (CPU only in JAX).
        """
        return jnp.linalg.eigvals(self.BA)

    # ------------------------------------------------------------ entries

    def top_entries(self, k: int, chunk_size: int = 1024, largest: bool = True):
        """The ``k`` largest (or smallest) entries of a 2-D product and their indices.

        The product is computed ``chunk_size`` rows at a time, keeping a running top-k,
        so memory is ``O(chunk_size * n)`` whatever ``m``: a GPT-2 full OV circuit
        (``50257 x 50257``) fits. Returns ``(values [k], rows [k], cols [k])``,
        sorted by value (descending for largest, ascending for smallest).
        """
        if self.ndim != 2:
            raise ValueError(f"top_entries works on one matrix; index the batch axes first (shape {self.shape})")
        m, n = self.ldim, self.rdim
        if not 0 < k <= m * n:
            raise ValueError(f"k must be in 1..{m * n}, got {k}")
        if k > chunk_size * n:
            raise ValueError(f"k={k} is more than one chunk holds ({chunk_size} rows x {n}); raise chunk_size")
        if chunk_size * n >= 2**31:
            raise ValueError(f"chunk_size * n = {chunk_size * n} overflows int32 indices; lower chunk_size")
        sign = 1.0 if largest else -1.0
        n_chunks = -(-m // chunk_size)
        A = jnp.pad(self.A, ((0, n_chunks * chunk_size - m), (0, 0))).reshape(n_chunks, chunk_size, -1)

        def chunk_top(carry, xs):
            a, start = xs
            block = sign * (a @ self.B)
            rows = start + jnp.arange(chunk_size, dtype=jnp.int32)
            block = jnp.where((rows < m)[:, None], block, -jnp.inf)  # padding rows never win
            vals, flat = jax.lax.top_k(block.reshape(-1), k)
            # Rows and columns are kept apart: row * n overflows int32 for GPT-2 vocabularies.
            v = jnp.concatenate([carry[0], vals])
            r = jnp.concatenate([carry[1], start + flat // n])
            c = jnp.concatenate([carry[2], flat % n])
            v, pick = jax.lax.top_k(v, k)
            return (v, r[pick], c[pick]), None

        init = (jnp.full((k,), -jnp.inf, self.A.dtype), jnp.zeros((k,), jnp.int32), jnp.zeros((k,), jnp.int32))
        starts = jnp.arange(n_chunks, dtype=jnp.int32) * chunk_size
        (vals, rows, cols), _ = jax.lax.scan(chunk_top, init, (A, starts))
        return sign * vals, rows, cols


# The decompositions are jitted: called eagerly, each of their dozen ops would compile
# (and dispatch) on its own, which dominates on small matrices.


@jax.jit
def _thin_svd(A, B) -> SVD:
    Qa, Ra = jnp.linalg.qr(A)
    Qb, Rb = jnp.linalg.qr(jnp.swapaxes(B, -1, -2))
    u, s, vt = jnp.linalg.svd(Ra @ jnp.swapaxes(Rb, -1, -2), full_matrices=False)
    k = min(A.shape[-2], A.shape[-1], B.shape[-1])
    return SVD((Qa @ u)[..., :k], s[..., :k], (Qb @ jnp.swapaxes(vt, -1, -2))[..., :k])


@jax.jit
def _frobenius(A, B):
    """``sqrt(tr((A^T A)(B B^T))) = ||A B||_F`` over the batch axes."""
    gram_a = jnp.swapaxes(A, -1, -2) @ A
    gram_b = B @ jnp.swapaxes(B, -1, -2)
    return jnp.sqrt(jnp.maximum(jnp.sum(gram_a * gram_b, axis=(-1, -2)), 0.0))
