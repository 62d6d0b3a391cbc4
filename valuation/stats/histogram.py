"""Streaming columns: a column's distribution without keeping its per-path values.

Used by ``simulate(..., keep_paths=False)``.  The values of every block of paths (aligned to absolute path
numbers, :data:`valuation.engine.kernel.BLOCK`) are folded into

* exact moments of the block (count, mean, sum of squared deviations), which
  :mod:`valuation.stats.accumulate` combines over blocks in a fixed tree with
  Chan et al.'s pairwise update (numerically stable, and the same bits
  whatever the split of the run into chunks, ranges or workers);
* exact counts of negative and positive values, minimum and maximum (merged exactly);
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
from valuation.engine.kernel import BLOCK

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
def _fold_blocks(x, valid, first, hist, ext, out):
    """Fold the values ``x`` of paths ``first, first + 1, ...`` (finite where ``valid``; ``valid`` of length 0:
    all) into a column's histogram and extremes (min, max, count < 0, count > 0), and write each absolute
    block's moments (count, mean, M2, in path order) to ``out[j]``, ``j`` counting the blocks from ``first``'s."""
    n = x.shape[0]
    masked = valid.shape[0] > 0
    bits = x.view(np.uint64)
    b0 = first // BLOCK
    lo, hi_ext, neg, pos = ext[0], ext[1], ext[2], ext[3]
    i = 0
    j = 0
    while i < n:
        stop = min(n, (b0 + j + 1) * BLOCK - first)
        count = 0
        total = 0.0
        for k in range(i, stop):
            if masked and not valid[k]:
                continue
            count += 1
            total += x[k]
        mean = total / count if count > 0 else 0.0
        m2 = 0.0
        for k in range(i, stop):
            if masked and not valid[k]:
                continue
            v = x[k]
            d = v - mean
            m2 += d * d
            if v < lo:
                lo = v
            if v > hi_ext:
                hi_ext = v
            if v < 0.0:
                neg += 1.0
            elif v > 0.0:
                pos += 1.0
            b = np.int64((bits[k] & _ABS) >> _FRACTION_BITS) - _BUCKET_BIAS  # the magnitude's bucket
            if b < 0:  # below TINY
                hist[NB] += 1
            else:
                b = min(b, NB - 1)  # HUGE and beyond: the last bucket
                hist[NB + 1 + b if v > 0.0 else NB - 1 - b] += 1
        out[j, 0] = count
        out[j, 1] = mean
        out[j, 2] = m2
        i = stop
        j += 1
    ext[0], ext[1], ext[2], ext[3] = lo, hi_ext, neg, pos


@pjit
def fold_pvs(pv, first, base, views, hist, ext, out):
    """Fold a chunk's PVs ``pv`` (views x structures, parties, paths; paths from ``first``) into the columns:
    first every structure x party of every view, then, view by view, structure - baseline for every other
    structure x party.  ``out``: (blocks, columns, 3) block moments."""
    VS, P, n = pv.shape
    S = VS // views
    n_cols = hist.shape[0]
    none = np.zeros(0, np.uint8)
    for c in numba.prange(n_cols):
        block_moments = np.empty((out.shape[0], 3))
        if c < VS * P:
            _fold_blocks(pv[c // P, c % P], none, first, hist[c], ext[c], block_moments)
        else:
            k = c - VS * P
            view = k // ((S - 1) * P)
            k = k % ((S - 1) * P)
            s = k // P
            s = s + 1 if s >= base else s  # the baseline is not compared with itself
            s = view * S + s
            p = k % P
            diff = np.empty(n)
            for i in range(n):
                diff[i] = pv[s, p, i] - pv[view * S + base, p, i]
            _fold_blocks(diff, none, first, hist[c], ext[c], block_moments)
        for j in range(out.shape[0]):
            for m in range(3):
                out[j, c, m] = block_moments[j, m]


def fold_values(x: np.ndarray, valid: np.ndarray, first: int, hist: np.ndarray, ext: np.ndarray) -> np.ndarray:
    """One column's values of paths ``first ..`` (``valid``: which count), folded; returns the block moments."""
    n_blocks = (first + len(x) - 1) // BLOCK - first // BLOCK + 1 if len(x) else 0
    out = np.zeros((n_blocks, 3))
    if len(x):
        _fold_blocks(np.ascontiguousarray(x, np.float64), np.ascontiguousarray(valid, np.uint8), first, hist, ext,
                     out)
    return out


def combine_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chan, Golub and LeVeque's pairwise update of (count, mean, M2) along the last axis, elementwise."""
    na, nb = a[..., 0], b[..., 0]
    n = na + nb
    delta = b[..., 1] - a[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = a[..., 1] + delta * nb / n
        m2 = a[..., 2] + b[..., 2] + delta * delta * na * nb / n
    mean = np.where(na == 0, b[..., 1], np.where(nb == 0, a[..., 1], mean))
    m2 = np.where(na == 0, b[..., 2], np.where(nb == 0, a[..., 2], m2))
    return np.stack((n, mean, m2), axis=-1)


def stream_values(values: np.ndarray) -> StreamColumn:
    """One streamed column from a whole sample at once (its blocks combined pairwise, as a run's are)."""
    values = np.ascontiguousarray(values, np.float64)
    hist = np.zeros(BUCKETS, np.int64)
    ext = new_extremes(1)[0]
    blocks = list(fold_values(values, np.zeros(0, np.uint8), 0, hist, ext))
    while len(blocks) > 1:
        blocks = [combine_moments(blocks[i], blocks[i + 1]) if i + 1 < len(blocks) else blocks[i]
                  for i in range(0, len(blocks), 2)]
    mom = np.zeros(N_MOMENTS)
    if blocks:
        mom[:3] = blocks[0]
    mom[MIN], mom[MAX], mom[NEG], mom[POS] = ext
    return StreamColumn(mom, hist)


def new_extremes(columns: int) -> np.ndarray:
    """Extremes of empty columns: min +inf, max -inf, no negatives, no positives."""
    ext = np.zeros((columns, 4))
    ext[:, 0] = np.inf
    ext[:, 1] = -np.inf
    return ext


@functools.cache
def bucket_values() -> np.ndarray:
    """The value each bucket stands for: its midpoint (0 for the zero bucket)."""
    j = np.arange(NB)
    mid = np.ldexp(1.0 + (j % SUB + 0.5) / SUB, j // SUB + OCT_LO)
    return np.concatenate((-mid[::-1], [0.0], mid))


@dataclass
class StreamColumn:
    """The streamed distribution of one column: moments (count, mean, M2, min, max, count < 0, count > 0) and
    bucket counts; the :class:`valuation.stats.columns.KeptColumn` interface."""

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

    @property
    def mean(self) -> float:
        return float(self.moments[MEAN])

    @property
    def sd(self) -> float:
        n = self.n
        return math.sqrt(self.moments[M2] / (n - 1)) if n > 1 else float("nan")

    @property
    def negative(self) -> float:
        return float(self.moments[NEG])

    @property
    def positive(self) -> float:
        return float(self.moments[POS])

    def tail_mean(self, k: int) -> float:
        return self.lowest_mean(k)

    def below(self, edges: np.ndarray) -> np.ndarray:
        return self.count_below(edges)

    def percentiles(self, q: np.ndarray) -> np.ndarray:
        return self.quantiles(q) if self.n else np.full(len(q), np.nan)
