"""Streaming statistics: a run's summary without keeping any per-path array.

Used by ``simulate(..., keep_paths=False)``.  Every chunk of paths is folded into

* exact moments per column (count, mean, sum of squared deviations), merged
  across chunks with Chan et al.'s pairwise update, which is numerically
  stable; the mean equals the kept-paths mean up to summation order;
* exact counts of negative and positive values, minimum and maximum;
* a fine log-scale histogram of magnitudes per sign (:data:`SUB` buckets per
  octave from :data:`TINY` to :data:`HUGE`; integer counts, so merging is
  exact) from which quantiles, CVaR and histograms are read.

A column is one party under one structure, or (for the comparison with the
baseline) the path-by-path difference from the baseline.

**Error bound of the quantiles.**  The order statistic of rank ``r`` lies in a
known bucket; the bucket's midpoint is within ``REL_ERROR = 2**-11`` (0.049%)
of it, relatively, or within ``TINY = 2**-30`` (USD 0.93 when amounts are in
USD bn) absolutely for values smaller than that.  A percentile interpolates two
order statistics as numpy does, so it is within ``REL_ERROR * max(|x_lo|,
|x_hi|) + TINY`` of the exact one; CVaR (a mean of order statistics) is within
``REL_ERROR`` times the mean magnitude of its paths plus ``TINY``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np

from models._jit import jit, pjit

SUB = 1024  # buckets per octave
OCT_LO, OCT_HI = -30, 40  # magnitudes from 2**-30 to 2**40 (PVs beyond 1e12 are rejected as overflow anyway)
TINY = 2.0**OCT_LO
HUGE = 2.0**OCT_HI
REL_ERROR = 0.5 / SUB  # half a bucket's relative width
NB = (OCT_HI - OCT_LO) * SUB  # buckets per sign
BUCKETS = 2 * NB + 1  # negatives (most negative first), the zero bucket, positives (ascending)

# Moments per column: count, mean, M2 (sum of squared deviations), min, max, count < 0, count > 0.
N, MEAN, M2, MIN, MAX, NEG, POS = range(7)
N_MOMENTS = 7


# The magnitude bucket of a float64 is its exponent and the top 10 bits of its fraction, read from its bits:
# ``(bits without the sign) >> (52 - 10)``, less the same for 2**OCT_LO (exact, and 3x faster than frexp).
_FRACTION_BITS = np.uint64(52 - SUB.bit_length() + 1)
_BUCKET_BIAS = (1023 + OCT_LO) * SUB
_ABS = np.uint64(0x7FFFFFFFFFFFFFFF)


@jit
def _fold(x, hist, mom):
    """Fold the values ``x`` (finite, contiguous) into one column's histogram and moments."""
    n = x.shape[0]
    if n == 0:
        return
    total = 0.0
    for i in range(n):
        total += x[i]
    mean = total / n
    bits = x.view(np.uint64)
    m2 = 0.0
    lo, hi = mom[MIN], mom[MAX]
    neg = 0.0
    pos = 0.0
    for i in range(n):
        v = x[i]
        d = v - mean
        m2 += d * d
        if v < lo:
            lo = v
        if v > hi:
            hi = v
        if v < 0.0:
            neg += 1.0
        elif v > 0.0:
            pos += 1.0
        j = np.int64((bits[i] & _ABS) >> _FRACTION_BITS) - _BUCKET_BIAS  # the magnitude's bucket
        if j < 0:  # below TINY
            hist[NB] += 1
        else:
            j = min(j, NB - 1)  # HUGE and beyond: the last bucket
            hist[NB + 1 + j if v > 0.0 else NB - 1 - j] += 1
    # Chan, Golub and LeVeque: merge (n_a, mean_a, M2_a) with the chunk's (n, mean, m2)
    n_a = mom[N]
    n_ab = n_a + n
    delta = mean - mom[MEAN]
    mom[MEAN] += delta * n / n_ab
    mom[M2] += m2 + delta * delta * n_a * n / n_ab
    mom[N] = n_ab
    mom[MIN], mom[MAX] = lo, hi
    mom[NEG] += neg
    mom[POS] += pos


@pjit
def _fold_pvs(pv, base, hist, mom):
    """Fold a chunk's PVs ``pv`` (structures, parties, paths) into the columns: first every structure x
    party, then structure - baseline for every other structure x party."""
    S, P, n = pv.shape
    n_cols = hist.shape[0]
    for c in numba.prange(n_cols):
        if c < S * P:
            _fold(pv[c // P, c % P], hist[c], mom[c])
        else:
            k = c - S * P
            s = k // P
            s = s + 1 if s >= base else s  # the baseline is not compared with itself
            p = k % P
            diff = np.empty(n)
            for i in range(n):
                diff[i] = pv[s, p, i] - pv[base, p, i]
            _fold(diff, hist[c], mom[c])


def _new_moments(columns: int) -> np.ndarray:
    mom = np.zeros((columns, N_MOMENTS))
    mom[:, MIN] = np.inf
    mom[:, MAX] = -np.inf
    return mom


@functools.cache
def bucket_values() -> np.ndarray:
    """The value each bucket stands for: its midpoint (0 for the zero bucket)."""
    j = np.arange(NB)
    mid = np.ldexp(1.0 + (j % SUB + 0.5) / SUB, j // SUB + OCT_LO)
    return np.concatenate((-mid[::-1], [0.0], mid))


@dataclass
class Column:
    """The streamed distribution of one column: moments and bucket counts."""

    moments: np.ndarray
    hist: np.ndarray

    @property
    def n(self) -> int:
        return int(self.moments[N])

    def order_statistics(self, ranks: np.ndarray) -> np.ndarray:
        """Estimates of the order statistics of the given 0-based ranks (within the stated bound)."""
        cum = np.cumsum(self.hist)
        buckets = np.searchsorted(cum, np.asarray(ranks, np.int64), side="right")
        return np.clip(bucket_values()[buckets], self.moments[MIN], self.moments[MAX])

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """Percentiles ``q``, interpolated between order statistics as numpy's default method does."""
        pos = np.asarray(q, float) / 100.0 * (self.n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, self.n - 1)
        x_lo, x_hi = self.order_statistics(lo), self.order_statistics(hi)
        return x_lo + (x_hi - x_lo) * (pos - lo)

    def lowest_mean(self, k: int) -> float:
        """Mean of the ``k`` smallest values (for CVaR)."""
        values = np.clip(bucket_values(), self.moments[MIN], self.moments[MAX])
        cum = np.cumsum(self.hist)
        last = int(np.searchsorted(cum, k, side="left"))  # the bucket holding rank k - 1
        before = int(cum[last - 1]) if last else 0
        total = float(np.dot(self.hist[:last], values[:last])) + (k - before) * values[last]
        return total / k

    def count_below(self, edges: np.ndarray) -> np.ndarray:
        """Approximate number of values below each edge (buckets counted by their midpoint)."""
        cum = np.concatenate(([0], np.cumsum(self.hist)))
        return cum[np.searchsorted(bucket_values(), edges, side="left")]

    def describe(self, percentiles: tuple[int, ...], tail: float) -> dict[str, float]:
        """The statistics :func:`valuation.results.describe` gives for kept paths."""
        n = self.n
        sd = math.sqrt(self.moments[M2] / (n - 1)) if n > 1 else float("nan")
        q = self.quantiles(np.array(percentiles, float))
        k = max(1, math.ceil(tail * n))
        return {
            "mean": float(self.moments[MEAN]), "se": sd / math.sqrt(n), "sd": sd,
            **{f"p{p}": float(v) for p, v in zip(percentiles, q, strict=True)},
            "var5": -float(q[0]), "cvar5": -self.lowest_mean(k), "p_negative": self.moments[NEG] / n,
        }


class PVStream:
    """Streaming statistics of every structure x party and of every difference from the baseline."""

    def __init__(self, structures: int, parties: int, base: int):
        self.S, self.P, self.base = structures, parties, base
        columns = structures * parties + (structures - 1) * parties
        self.hist = np.zeros((columns, BUCKETS), np.int64)
        self.mom = _new_moments(columns)

    def add(self, pv: np.ndarray) -> None:
        """Fold a chunk of PVs shaped (structures, parties, paths) (C-contiguous, finite)."""
        _fold_pvs(pv, self.base, self.hist, self.mom)

    def column(self, s: int, p: int) -> Column:
        c = s * self.P + p
        return Column(self.mom[c], self.hist[c])

    def difference(self, s: int, p: int) -> Column:
        """Structure ``s`` minus the baseline, party ``p``."""
        if s == self.base:
            raise ValueError("the baseline is not compared with itself")
        c = self.S * self.P + (s - (s > self.base)) * self.P + p
        return Column(self.mom[c], self.hist[c])

    @property
    def nbytes(self) -> int:
        return self.hist.nbytes + self.mom.nbytes


def stream_values(values: np.ndarray) -> Column:
    """One column from a whole sample at once (e.g. the verification lags)."""
    col = Column(_new_moments(1)[0], np.zeros(BUCKETS, np.int64))
    fold_values(col, values)
    return col


def fold_values(col: Column, values: np.ndarray) -> None:
    """Fold more finite values into a column."""
    _fold(np.ascontiguousarray(values, np.float64), col.hist, col.moments)


class DriverTally:
    """Exact counts of the drivers the workbook reports, folded chunk by chunk.

    ``grid``: times (years after the valuation date) at which P(declared by t) and P(verified by t) are
    counted; ``declared``/``verified`` are the driver columns, ``met`` the deadlines met (0/1).
    """

    def __init__(self, grid: np.ndarray, deadlines: int):
        self.grid = np.asarray(grid, float)
        self.n = 0
        self.declared_by = np.zeros(self.grid.size, np.int64)
        self.verified_by = np.zeros(self.grid.size, np.int64)
        self.ever_declared = 0
        self.verified_after_declared = 0
        self.met = np.zeros(deadlines, np.int64)
        self.lag = stream_values(np.empty(0))

    def add(self, declared: np.ndarray, verified: np.ndarray, met: np.ndarray) -> None:
        self.n += declared.size
        self.declared_by += np.searchsorted(np.sort(declared), self.grid, side="right")
        self.verified_by += np.searchsorted(np.sort(verified), self.grid, side="right")
        was = np.isfinite(declared)
        self.ever_declared += int(was.sum())
        done = was & np.isfinite(verified)
        self.verified_after_declared += int(done.sum())
        fold_values(self.lag, (verified - declared)[done])
        self.met += met.sum(axis=0, dtype=np.int64)
