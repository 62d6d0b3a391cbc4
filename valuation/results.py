"""Results of a simulation: per-path PVs, drivers and their statistics."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuation.scenario import Scenario

PERCENTILES = (5, 25, 50, 75, 95)
TAIL = 0.05  # VaR / CVaR level

SUMMARY_COLUMNS = {
    "mean": "Mean PV (USD bn)",
    "se": "Standard error of the mean",
    "sd": "Standard deviation across paths",
    "p5": "5th percentile",
    "p25": "25th percentile",
    "p50": "Median",
    "p75": "75th percentile",
    "p95": "95th percentile",
    "var5": "Value at risk at 5%: -P5 (a loss is positive)",
    "cvar5": "Conditional VaR at 5%: -mean of the worst 5% of paths",
    "p_negative": "P(PV < 0)",
    "diff_mean": "Mean of (PV - baseline PV), path by path",
    "diff_se": "Standard error of that difference",
    "p_better": "P(PV > baseline PV) on the same path (blank for the baseline itself)",
}


@dataclass
class SimulationResult:
    """The outcome of :func:`valuation.simulate`.

    Attributes
    ----------
    scenario
        The validated scenario that was run.
    pvs
        Present values, USD bn at the valuation date, shaped
        ``(paths, structures, parties)``.
    drivers
        Per-path drivers: ``agi_declared`` and ``agi_verified`` (years after the
        valuation date, ``inf`` = never), one column per event, one boolean
        column ``met:<deadline>`` per deadline, ``revenue_at_horizon`` (USD bn
        per year).
    structures, parties
        Names along axes 1 and 2 of ``pvs``.
    seed, entropy
        The seed given and the ``SeedSequence`` entropy it produced.
    cash_flows
        Expected undiscounted flows (USD bn), ``(structures, parties, classes, slots)``: class ``c <
        parties`` holds flows discounted at party ``c``'s own rate, later classes those of clauses with
        their own rate (``class_rates``); slots are the step ends, then one-off dates (``slot_time``,
        years after the valuation date).  ``sum(cash_flows * (1 + rate) ** -slot_time)`` over classes
        and slots is the mean PV.
    revenue_sample
        Revenue rate (USD bn per year) at every step end (``step_time``) for the first paths.
    """

    scenario: Scenario
    pvs: np.ndarray
    drivers: pd.DataFrame
    structures: list[str]
    parties: list[str]
    seed: int
    entropy: int
    run_seconds: float
    compile_seconds: float
    threads: int
    fits: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    cash_flows: np.ndarray | None = None
    slot_time: np.ndarray | None = None
    class_rates: np.ndarray | None = None
    step_time: np.ndarray | None = None
    revenue_sample: np.ndarray | None = None
    _summaries: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False)
    _tables: dict[int, PartyTables] = field(default_factory=dict, init=False, repr=False)
    _versus: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False)

    @property
    def paths(self) -> int:
        return self.pvs.shape[0]

    def pv(self, structure: str, party: str) -> np.ndarray:
        """Per-path PVs (USD bn) of ``party`` under ``structure``."""
        return self.pvs[:, self._index(self.structures, structure, "structure"),
                        self._index(self.parties, party, "party")]

    @staticmethod
    def _index(names: list[str], name: str, what: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            raise KeyError(f"no {what} {name!r}; expected one of {names}") from None

    def summary(self, baseline: str | None = None) -> pd.DataFrame:
        """Statistics per structure x party (rows); columns as in :data:`SUMMARY_COLUMNS`.

        Parameters
        ----------
        baseline
            Structure the others are compared with path by path (default: the
            scenario's baseline).
        """
        base = baseline or self.baseline or self.structures[0]
        if base in self._summaries:
            return self._summaries[base].copy()
        b = self._index(self.structures, base, "structure")
        n = self.paths
        rows = []
        tables = [self.party_tables(p) for p in range(len(self.parties))]
        versus = self.versus(base)
        for s, sname in enumerate(self.structures):
            for p, pname in enumerate(self.parties):
                if s == b:  # the baseline against itself: no comparison to report
                    diff = {"diff_mean": 0.0, "diff_se": 0.0, "p_better": float("nan")}
                else:
                    row = versus.loc[(sname, pname)]
                    diff = {"diff_mean": row["mean"], "diff_se": row["se"], "p_better": row["p_better"]}
                rows.append({"structure": sname, "party": pname, **tables[p].stats[s], **diff})
        df = pd.DataFrame(rows).set_index(["structure", "party"])
        df.attrs.update(baseline=base, paths=n)
        self._summaries[base] = df
        return df.copy()

    def versus(self, baseline: str | None = None) -> pd.DataFrame:
        """Path-by-path difference (structure - baseline) per structure and party, the baseline omitted.

        Columns: ``mean``, ``se``, ``ci_low``/``ci_high`` (mean -/+ 1.96 SE), ``p_better``, ``p_worse``
        (shares of paths; the rest are ties), ``p5``, ``p50``, ``p95`` of the difference (USD bn).
        """
        base = baseline or self.baseline or self.structures[0]
        if base not in self._versus:
            self._versus[base] = versus_table(self, self._index(self.structures, base, "structure"))
        return self._versus[base].copy()

    def party_tables(self, party: int) -> PartyTables:
        """Distribution tables of one party (by index) under every structure; computed once."""
        if party not in self._tables:
            self._tables[party] = party_tables(self.pvs[:, :, party])
        return self._tables[party]

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (see :mod:`valuation.report`); returns its path."""
        from valuation.report import write_workbook

        return write_workbook(self, path)


QUANTILE_GRID = np.array([0.5, *range(1, 100), 99.5])  # percent: everything the report shows
HISTOGRAM_BINS = 40


def quantiles(sorted_x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Percentiles ``q`` of a sorted sample, interpolated linearly (numpy's default method)."""
    pos = np.asarray(q, float) / 100.0 * (sorted_x.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, sorted_x.size - 1)
    return sorted_x[lo] + (sorted_x[hi] - sorted_x[lo]) * (pos - lo)


def describe(x: np.ndarray, sorted_x: np.ndarray | None = None) -> dict[str, float]:
    """Mean, standard error, SD, percentiles, VaR/CVaR at 5% and P(x < 0) of one sample."""
    s = np.sort(x) if sorted_x is None else sorted_x
    n = x.size
    sd = float(np.std(x, ddof=1)) if n > 1 else float("nan")
    q = quantiles(s, np.array(PERCENTILES))
    k = max(1, int(np.ceil(TAIL * n)))
    return {
        "mean": float(np.mean(x)), "se": sd / np.sqrt(n), "sd": sd,
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, q, strict=True)},
        "var5": -float(q[0]), "cvar5": -float(np.mean(s[:k])),
        "p_negative": float(np.searchsorted(s, 0.0, side="left")) / n,
    }


def _difference(d: np.ndarray) -> dict[str, float]:
    """Statistics of one path-by-path difference (numpy's vectorised sort beats a partition here)."""
    n = d.size
    mean = float(d.mean())
    se = float(np.std(d, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    d = np.sort(d)
    q = quantiles(d, np.array([5.0, 50.0, 95.0]))
    above, below = n - np.searchsorted(d, 0.0, side="right"), np.searchsorted(d, 0.0, side="left")
    return {"mean": mean, "se": se, "ci_low": mean - 1.96 * se, "ci_high": mean + 1.96 * se,
            "p_better": above / n, "p_worse": below / n, "p5": float(q[0]), "p50": float(q[1]),
            "p95": float(q[2])}


def versus_table(result: SimulationResult, b: int) -> pd.DataFrame:
    """See :meth:`SimulationResult.versus`; each difference is sorted once (on threads)."""
    pairs = [(s, p) for s in range(len(result.structures)) if s != b for p in range(len(result.parties))]
    pvs = result.pvs
    rows = parallel_map(lambda sp: _difference(pvs[:, sp[0], sp[1]] - pvs[:, b, sp[1]]), pairs)
    for (s, p), row in zip(pairs, rows, strict=True):
        row.update(structure=result.structures[s], party=result.parties[p])
    columns = ["mean", "se", "ci_low", "ci_high", "p_better", "p_worse", "p5", "p50", "p95"]
    return pd.DataFrame(rows, columns=["structure", "party", *columns]).set_index(["structure", "party"])


@dataclass
class PartyTables:
    """One party's distribution under every structure (computed once from sorted PVs).

    ``stats[s]``: :func:`describe` of structure ``s``; ``edges``: histogram bin edges shared by the
    structures (from the lowest 0.5th to the highest 99.5th percentile; paths beyond fall in the end
    bins); ``freq[b, s]``: share of paths in bin ``b``; ``percentiles[i, s]``: the ``i+1``-th percentile.
    """

    stats: list[dict[str, float]]
    edges: np.ndarray
    freq: np.ndarray
    percentiles: np.ndarray


def party_tables(columns: np.ndarray) -> PartyTables:
    """Statistics and histograms of the columns (structures) of one party's PVs, sorting each once."""
    sorted_cols = parallel_map(np.sort, [columns[:, s] for s in range(columns.shape[1])])
    stats = [describe(columns[:, s], c) for s, c in enumerate(sorted_cols)]
    grid = np.array([quantiles(c, QUANTILE_GRID) for c in sorted_cols]).T  # (grid, structures)
    lo, hi = float(grid[0].min()), float(grid[-1].max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    n = columns.shape[0]
    freq = np.empty((HISTOGRAM_BINS, columns.shape[1]))
    for s, c in enumerate(sorted_cols):
        below = np.searchsorted(c, edges[1:-1], side="left")
        freq[:, s] = np.diff(np.concatenate(([0], below, [n]))) / n
    return PartyTables(stats, edges, freq, grid[1:-1])


def parallel_map(func, items: list) -> list:
    """``map`` on threads: numpy's sorts release the GIL, so columns sort side by side."""
    if len(items) < 2:
        return [func(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(func, items))
