"""Leading eigenvectors of the alignment's graph matrices, with fallbacks that always return.

ARPACK (``scipy.sparse.linalg.eigsh``) is fast on the neighbour graphs of
:mod:`core.align` and :mod:`core.spectral`, but it can fail to converge when
the leading eigenvalues nearly coincide: 2,000 patches of one shape at every
angle ran 20,000 iterations and raised ``ArpackNoConvergence``, ending the run.
The matrices here are normalised adjacency matrices, Hermitian with their
spectrum in [-1, 1], so when ARPACK gives up a dense solver (small problems) or
subspace iteration on ``M + I`` (whose spectrum is >= 0 and whose leading
eigenvectors are ``M``'s) answers instead. Any basis of a nearly degenerate
leading eigenspace serves the callers equally: they refine or cluster it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["leading_eigenvectors"]

# ARPACK restarts before falling back (scipy's default, 10 n, took minutes).
ARPACK_MAXITER = 300
# Matrices this small go straight to the dense solver: exact and instant.
TINY = 16
# Up to this size a dense Hermitian solver is quick (about a second at 2,000).
DENSE_LIMIT = 2000
SUBSPACE_ITERATIONS = 300


def leading_eigenvectors(matrix, k: int = 1, *, seed: int = 0) -> np.ndarray:
    """The ``k`` eigenvectors of the largest eigenvalues of a Hermitian matrix, as (N, k) columns.

    ``matrix``: a scipy sparse matrix or ndarray, real symmetric or complex
    Hermitian, with its spectrum within [-1, 1] (a normalised adjacency
    matrix). Tries ARPACK, then a dense solver up to ``DENSE_LIMIT`` rows,
    then subspace iteration from a seeded random start; always returns finite
    vectors for a finite matrix.

    Examples
    --------
    >>> m = np.diag([0.2, 1.0, 0.5])
    >>> np.abs(leading_eigenvectors(m)[:, 0]).round(6)
    array([0., 1., 0.])
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

    n = matrix.shape[0]
    k = int(min(k, n))
    dtype = np.complex128 if np.iscomplexobj(matrix.data if sp.issparse(matrix) else matrix) else np.float64
    if n > max(k + 1, TINY):
        try:
            vecs = eigsh(matrix, k=k, which="LA", v0=np.ones(n, dtype=dtype), maxiter=ARPACK_MAXITER)[1]
            if np.isfinite(vecs).all():
                return vecs
        except (ArpackNoConvergence, ArpackError, ValueError):
            pass
    if n <= DENSE_LIMIT:
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        try:
            return np.linalg.eigh(dense)[1][:, ::-1][:, :k]
        except np.linalg.LinAlgError:
            pass
    return _subspace_iteration(matrix, k, seed=seed, dtype=dtype)


def _subspace_iteration(matrix, k: int, *, seed: int, dtype) -> np.ndarray:
    """Orthogonal iteration on ``matrix + I`` from a random start."""
    rng = np.random.default_rng(seed)
    n = matrix.shape[0]
    basis = rng.standard_normal((n, k))
    if dtype == np.complex128:
        basis = basis + 1j * rng.standard_normal((n, k))
    basis = np.linalg.qr(basis)[0]
    for _ in range(SUBSPACE_ITERATIONS):
        grown = matrix @ basis + basis
        if not np.isfinite(grown).all():
            break
        basis = np.linalg.qr(grown)[0]
    return basis
