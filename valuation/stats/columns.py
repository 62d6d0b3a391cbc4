"""Columns: one party's PVs under one structure (or their path-by-path difference from the baseline), as the
statistics read them.

Two implementations of one interface -- ``n``, ``mean``, ``sd``, ``quantiles(q)``, ``tail_mean(k)`` (mean of
the ``k`` smallest), ``negative``/``positive`` (counts), ``below(edges)`` (counts below each edge):
:class:`KeptColumn` over every kept value (exact), and
:class:`valuation.stats.histogram.StreamColumn` over a streaming run's moments and histogram.  The catalogue of
statistics (:mod:`valuation.stats.catalogue`) is written once against it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np


def quantiles(sorted_x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Percentiles ``q`` of a sorted sample, interpolated linearly (numpy's default method)."""
    pos = np.asarray(q, float) / 100.0 * (sorted_x.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, sorted_x.size - 1)
    return sorted_x[lo] + (sorted_x[hi] - sorted_x[lo]) * (pos - lo)


@dataclass(frozen=True)
class Moments:
    """What a sampler's standard error reads of a column: its count and standard deviation."""

    n: int
    sd: float


class KeptColumn:
    """Every value of a column (a kept-paths run): exact statistics, sorting once."""

    def __init__(self, x: np.ndarray, sorted_x: np.ndarray | None = None):
        self.x = x
        if sorted_x is not None:
            self.__dict__["sorted"] = sorted_x

    @property
    def n(self) -> int:
        return int(self.x.size)

    @cached_property
    def sorted(self) -> np.ndarray:
        return np.sort(self.x)

    @property
    def mean(self) -> float:
        return float(np.mean(self.x))

    @property
    def sd(self) -> float:
        return float(np.std(self.x, ddof=1)) if self.n > 1 else float("nan")

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        return quantiles(self.sorted, q)

    def tail_mean(self, k: int) -> float:
        return float(np.mean(self.sorted[:k]))

    @property
    def negative(self) -> float:
        return float(np.searchsorted(self.sorted, 0.0, side="left"))

    @property
    def positive(self) -> float:
        return float(self.n - np.searchsorted(self.sorted, 0.0, side="right"))

    def below(self, edges: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.sorted, edges, side="left")

    def percentiles(self, q: np.ndarray) -> np.ndarray:
        """numpy's percentiles (how the driver tables have always read kept paths)."""
        return np.percentile(self.x, q) if self.n else np.full(len(q), np.nan)


def sorted_columns(columns: list[KeptColumn]) -> list[KeptColumn]:
    """Sort the columns side by side on threads (numpy's sort releases the GIL); returns them."""
    todo = [c for c in columns if "sorted" not in c.__dict__]
    if len(todo) > 1:
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
            for column, values in zip(todo, pool.map(np.sort, [c.x for c in todo]), strict=True):
                column.__dict__["sorted"] = values
    return columns
