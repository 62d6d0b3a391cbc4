"""Correlation matrices for the Gaussian copula: rank correlations and the normal scores' correlations,
positive semi-definiteness (and which entries break it), the nearest valid matrix, a semi-definite Cholesky."""

from __future__ import annotations

import itertools
import math

import numpy as np


def rank_to_normal(rank: float) -> float:
    """The correlation of normal scores whose Gaussian copula has this rank (Spearman) correlation."""
    return 2.0 * math.sin(math.pi * rank / 6.0)


def normal_to_rank(r: float) -> float:
    return 6.0 / math.pi * math.asin(max(-1.0, min(1.0, r / 2.0)))


def is_psd(matrix: np.ndarray, tol: float = 1e-10) -> bool:
    return bool(np.linalg.eigvalsh(matrix).min() >= -tol)


def conflicts(matrix: np.ndarray, given: dict[tuple[int, int], int]) -> list[int]:
    """The correlations (indices of ``given``'s entries) of the smallest set of variables whose matrix is not
    positive semi-definite."""
    n = matrix.shape[0]
    for size in range(2, n + 1):
        for subset in itertools.combinations(range(n), size):
            if not is_psd(matrix[np.ix_(subset, subset)]):
                return sorted(c for (i, j), c in given.items() if i in subset and j in subset)
    return sorted(given.values())


def nearest_correlation(matrix: np.ndarray, fixed: np.ndarray | None = None, tol: float = 1e-13,
                        max_iter: int = 100_000) -> np.ndarray:
    """The correlation matrix nearest ``matrix`` in the Frobenius norm (Higham 2002: alternating projections
    with Dykstra's correction), with the entries where ``fixed`` is True held at their values (the diagonal
    at 1 always).  Positive semi-definite to rounding."""
    a = np.asarray(matrix, np.float64)
    hold = np.eye(len(a), dtype=bool) if fixed is None else (np.asarray(fixed, bool) | np.eye(len(a), dtype=bool))
    target = np.where(np.eye(len(a), dtype=bool), 1.0, a)
    y = target.copy()
    ds = np.zeros_like(a)
    for _ in range(max_iter):
        r = y - ds
        w, v = np.linalg.eigh(0.5 * (r + r.T))
        x = (v * np.maximum(w, 0.0)) @ v.T
        ds = x - r
        y_new = np.where(hold, target, x)
        if np.linalg.norm(y_new - y, "fro") <= tol * max(1.0, np.linalg.norm(y, "fro")):
            y = y_new
            break
        y = y_new
    w, v = np.linalg.eigh(0.5 * (y + y.T))
    if w.min() < 0:  # rounding: lift the smallest eigenvalues to 0 and rescale to a unit diagonal
        x = (v * np.maximum(w, 0.0)) @ v.T
        d = np.sqrt(np.diag(x))
        y = x / np.outer(d, d)
    return 0.5 * (y + y.T)


def cholesky_psd(matrix: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """A lower triangular ``L`` with ``L L' = matrix`` for a positive semi-definite matrix (a zero pivot gives a
    zero column: the variable is a combination of earlier ones)."""
    # sums in a plain loop, in a fixed order: a BLAS dot product's kernel (chosen by CPU) orders them its own way,
    # and the factor feeds every path
    a = np.asarray(matrix, np.float64).tolist()
    n = len(a)
    out = [[0.0] * n for _ in range(n)]
    for j in range(n):
        d = a[j][j]
        for k in range(j):
            d -= out[j][k] * out[j][k]
        if d > tol:
            out[j][j] = math.sqrt(d)
            for i in range(j + 1, n):
                x = a[i][j]
                for k in range(j):
                    x -= out[i][k] * out[j][k]
                out[i][j] = x / out[j][j]
    return np.array(out, np.float64).reshape(n, n)
