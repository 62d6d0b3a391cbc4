"""Results of a simulation: per-path PVs, drivers and their statistics."""

from __future__ import annotations

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
        for s, sname in enumerate(self.structures):
            for p, pname in enumerate(self.parties):
                x = self.pvs[:, s, p]
                versus = compare(x, self.pvs[:, b, p])
                if s == b:  # the baseline against itself: no comparison to report
                    versus["p_better"] = float("nan")
                rows.append({"structure": sname, "party": pname, **describe(x), **versus})
        df = pd.DataFrame(rows).set_index(["structure", "party"])
        df.attrs.update(baseline=base, paths=n)
        self._summaries[base] = df
        return df.copy()

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (see :mod:`valuation.report`); returns its path."""
        from valuation.report import write_workbook

        return write_workbook(self, path)


def describe(x: np.ndarray) -> dict[str, float]:
    """Mean, standard error, SD, percentiles, VaR/CVaR at 5% and P(x < 0) of one sample."""
    n = x.size
    mean = float(np.mean(x))
    sd = float(np.std(x, ddof=1)) if n > 1 else float("nan")
    q = np.percentile(x, PERCENTILES)
    var = -float(q[0])
    k = max(1, int(np.ceil(TAIL * n)))
    worst = np.partition(x, k - 1)[:k]
    return {
        "mean": mean, "se": sd / np.sqrt(n), "sd": sd,
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, q, strict=True)},
        "var5": var, "cvar5": -float(np.mean(worst)), "p_negative": float(np.mean(x < 0.0)),
    }


def compare(x: np.ndarray, base: np.ndarray) -> dict[str, float]:
    """Path-by-path difference from a baseline: mean, its standard error, P(better)."""
    d = x - base
    n = d.size
    sd = float(np.std(d, ddof=1)) if n > 1 else float("nan")
    return {"diff_mean": float(np.mean(d)), "diff_se": sd / np.sqrt(n), "p_better": float(np.mean(d > 0.0))}
