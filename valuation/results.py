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
from valuation.stream import MEAN, NEG, POS, REL_ERROR, TINY, DriverTally, PVStream

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
        ``(paths, structures, parties)`` (kept-paths runs only; see ``head``).
    drivers
        Per-path drivers (kept-paths runs only): ``agi_declared`` and
        ``agi_verified`` (years after the valuation date, ``inf`` = never), one
        column per event, one boolean column ``met:<deadline>`` per deadline,
        ``revenue_at_horizon`` (USD bn per year).
    structures, parties
        Names along axes 1 and 2 of ``pvs``.
    kept_paths
        False for a streaming run (``simulate(..., keep_paths=False)``): no
        per-path arrays, statistics folded chunk by chunk (exact means and
        variances; quantiles within ``quantile_error``).
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
    path_pvs: np.ndarray | None
    path_drivers: pd.DataFrame | None
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
    n_paths: int = 0
    stream: PVStream | None = None
    tally: DriverTally | None = None
    head_pvs: np.ndarray | None = None
    head_drivers: pd.DataFrame | None = None
    compiled: Any = field(default=None, repr=False)  # the scenario's kernel tables (valuation.compile.Compiled)
    _summaries: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False)
    _tables: dict[int, PartyTables] = field(default_factory=dict, init=False, repr=False)
    _versus: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False)
    _driver_stats: DriverStats | None = field(default=None, init=False, repr=False)

    @property
    def paths(self) -> int:
        return self.n_paths if self.path_pvs is None else self.path_pvs.shape[0]

    @property
    def kept_paths(self) -> bool:
        return self.path_pvs is not None

    @property
    def quantile_error(self) -> str:
        """How exact the percentiles, VaR and CVaR are."""
        if self.kept_paths:
            return "exact (sorted paths)"
        return (f"from streaming histograms: within {REL_ERROR:.3%} (relative) plus {TINY * 1e9:.2f} USD "
                "(absolute) of the exact value")

    @property
    def pvs(self) -> np.ndarray:
        if self.path_pvs is None:
            raise self._not_kept("per-path PVs")
        return self.path_pvs

    @property
    def drivers(self) -> pd.DataFrame:
        if self.path_drivers is None:
            raise self._not_kept("per-path drivers")
        return self.path_drivers

    def _not_kept(self, what: str) -> PathsNotKept:
        n = 0 if self.head_pvs is None else self.head_pvs.shape[0]
        return PathsNotKept(f"{what} were not kept: this was a streaming run of {self.paths:,} paths "
                            f"(keep_paths=False). summary(), versus() and party_tables() hold the statistics, "
                            f"head() the first {n:,} paths; run with keep_paths=True to keep every path")

    def head(self) -> tuple[pd.DataFrame, np.ndarray]:
        """The first paths (all of them up to :data:`HEAD`): drivers and PVs ``(paths, structures, parties)``."""
        if self.path_pvs is None:
            return self.head_drivers, self.head_pvs
        n = min(HEAD, self.paths)
        return self.path_drivers.iloc[:n], self.path_pvs[:n]

    def means(self) -> np.ndarray:
        """Mean PV per structure x party, ``(structures, parties)``."""
        if self.path_pvs is None:
            return np.array([[self.stream.column(s, p).moments[MEAN] for p in range(len(self.parties))]
                             for s in range(len(self.structures))])
        return self.path_pvs.mean(axis=0)

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
        base = self._base(baseline)
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
        base = self._base(baseline)
        if base not in self._versus:
            b = self._index(self.structures, base, "structure")
            self._versus[base] = versus_table(self, b) if self.kept_paths else streamed_versus(self)
        return self._versus[base].copy()

    def party_tables(self, party: int | str) -> PartyTables:
        """Distribution tables of one party (by index or name) under every structure; computed once."""
        if isinstance(party, str):
            party = self._index(self.parties, party, "party")
        elif isinstance(party, (bool, np.bool_)) or not isinstance(party, (int, np.integer)) or \
                not 0 <= party < len(self.parties):
            raise KeyError(f"no party {party!r}; expected a name, one of {self.parties}, or an index from 0 to "
                           f"{len(self.parties) - 1}")
        party = int(party)
        if party not in self._tables:
            if self.kept_paths:
                self._tables[party] = party_tables(self.pvs[:, :, party])
            else:
                self._tables[party] = streamed_party_tables(self.stream, party)
        return self._tables[party]

    def _base(self, baseline: str | None) -> str:
        base = baseline or self.baseline or self.structures[0]
        if not self.kept_paths and base != self.structures[self.stream.base]:
            self._index(self.structures, base, "structure")
            raise PathsNotKept(f"a streaming run compares with the baseline chosen when it ran "
                               f"({self.structures[self.stream.base]!r}), not {base!r}: pass baseline={base!r} "
                               "to simulate()")
        return base

    def driver_stats(self) -> DriverStats:
        """AGI timing, verification and deadline frequencies over all paths (computed once)."""
        if self._driver_stats is None:
            self._driver_stats = self._tally_drivers()
        return self._driver_stats

    def _tally_drivers(self) -> DriverStats:
        tally = self.tally
        exact_lag = None
        if tally is None:  # kept paths: tally them now, and take the lag's percentiles exactly
            d = self.path_drivers
            tally = DriverTally(year_ends(self.scenario)[1], len(self.scenario.deadlines))
            tally.add(d["agi_declared"].to_numpy(), d["agi_verified"].to_numpy(),
                      d[[f"met:{x.name}" for x in self.scenario.deadlines]].to_numpy())
            lag = (d["agi_verified"] - d["agi_declared"]).to_numpy()
            lag = lag[np.isfinite(lag)]
            exact_lag = np.percentile(lag, [50, 90]) if lag.size else np.full(2, np.nan)
        n = tally.n
        if exact_lag is not None:
            lag_q = exact_lag
        else:
            lag_q = tally.lag.quantiles(np.array([50.0, 90.0])) if tally.lag.n else np.full(2, np.nan)
        ever = tally.ever_declared
        return DriverStats(
            years=year_ends(self.scenario)[0], grid=tally.grid, p_declared=tally.declared_by / n,
            p_verified=tally.verified_by / n, p_ever_declared=ever / n,
            p_never_verified=(ever - tally.verified_after_declared) / ever if ever else float("nan"),
            lag_median=float(lag_q[0]), lag_p90=float(lag_q[1]), p_met=tally.met / n, paths=n)

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (see :mod:`valuation.report`); returns its path."""
        from valuation.arguments import path as path_argument
        from valuation.report import write_workbook

        return write_workbook(self, path_argument("to_excel()", "path", path, "the path of an .xlsx workbook"))


class PathsNotKept(ValueError):
    """Raised when a streaming result is asked for something only kept paths have."""


HEAD = 1_000  # paths a streaming run keeps whole (the workbook's Paths sheet)


@dataclass
class DriverStats:
    """Frequencies of the drivers: P(declared / verified by each ``grid`` time), verification, deadlines."""

    years: list[int]
    grid: np.ndarray
    p_declared: np.ndarray
    p_verified: np.ndarray
    p_ever_declared: float
    p_never_verified: float
    lag_median: float
    lag_p90: float
    p_met: np.ndarray
    paths: int


def year_ends(scenario: Scenario) -> tuple[list[int], np.ndarray]:
    """Calendar years from the valuation date's to the horizon's, and their 31 December in model years."""
    from datetime import date

    years = list(range(scenario.simulation.valuation_date.year, scenario.simulation.horizon.year + 1))
    return years, np.array([scenario.years(date(y, 12, 31)) for y in years])


VERSUS_COLUMNS = ["mean", "se", "ci_low", "ci_high", "p_better", "p_worse", "p5", "p50", "p95"]
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
    return pd.DataFrame(rows, columns=["structure", "party", *VERSUS_COLUMNS]).set_index(["structure", "party"])


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


def streamed_party_tables(stream: PVStream, party: int) -> PartyTables:
    """:func:`party_tables` from a streaming run's histograms (percentiles within the stated bound)."""
    cols = [stream.column(s, party) for s in range(stream.S)]
    stats = [c.describe(PERCENTILES, TAIL) for c in cols]
    grid = np.array([c.quantiles(QUANTILE_GRID) for c in cols]).T
    lo, hi = float(grid[0].min()), float(grid[-1].max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    freq = np.empty((HISTOGRAM_BINS, stream.S))
    for s, c in enumerate(cols):
        below = c.count_below(edges[1:-1])
        freq[:, s] = np.diff(np.concatenate(([0], below, [c.n]))) / c.n
    return PartyTables(stats, edges, freq, grid[1:-1])


def streamed_versus(result: SimulationResult) -> pd.DataFrame:
    """:func:`versus_table` from a streaming run's difference columns."""
    stream = result.stream
    rows = []
    for s in range(stream.S):
        if s == stream.base:
            continue
        for p in range(stream.P):
            col = stream.difference(s, p)
            d = col.describe((5, 50, 95), TAIL)
            n = col.n
            rows.append({"structure": result.structures[s], "party": result.parties[p], "mean": d["mean"],
                         "se": d["se"], "ci_low": d["mean"] - 1.96 * d["se"], "ci_high": d["mean"] + 1.96 * d["se"],
                         "p_better": col.moments[POS] / n, "p_worse": col.moments[NEG] / n, "p5": d["p5"],
                         "p50": d["p50"], "p95": d["p95"]})
    return pd.DataFrame(rows, columns=["structure", "party", *VERSUS_COLUMNS]).set_index(["structure", "party"])


def parallel_map(func, items: list) -> list:
    """``map`` on threads: numpy's sorts release the GIL, so columns sort side by side."""
    if len(items) < 2:
        return [func(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(func, items))
