"""The catalogue of statistics: each one defined once -- its key, labels, formats and how it is computed from
a column (:mod:`valuation.stats.columns`) -- and read by ``summary()``, ``versus()``, the console table and the
workbook.

A statistic of a PV column is computed by :func:`describe`; the comparison with the baseline by
:func:`compare`, from the column of path-by-path differences.  The standard error of a mean comes from the
run's sampler (``sampler.standard_error(column)``), so a sampler with its own estimator changes it in one
place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Z95 = 1.96  # the two-sided 95% normal multiplier used for every confidence interval and error bar
PERCENTILES = (5, 25, 50, 75, 95)
TAIL = 0.05  # VaR / CVaR level
HEAD = 1_000  # paths every run keeps whole (the workbook's Paths sheet)
QUANTILE_GRID = np.array([0.5, *range(1, 100), 99.5])  # percent: everything the report shows
HISTOGRAM_BINS = 40

BN = '#,##0.00;[Red]-#,##0.00'  # USD bn
BN3 = '#,##0.000;[Red]-#,##0.000'
PCT = '0.0%'


@dataclass(frozen=True)
class Statistic:
    """One statistic: ``key`` (a column of ``summary()`` or ``versus()``), ``short`` (table header),
    ``description`` (what it is), ``excel`` (number format), ``text`` (console format), ``compute(facts)``, and
    ``error``: the key of its standard error where it has one (a mean's)."""

    key: str
    short: str
    description: str
    excel: str
    text: str
    compute: Callable[[dict[str, Any]], float]
    error: str | None = None


def _facts(column: Any, sampler: Any, quantile_levels: tuple[int, ...]) -> dict[str, Any]:
    """What the statistics of one column are computed from (each read once)."""
    n = column.n
    q = column.quantiles(np.array(quantile_levels, float))
    return {"column": column, "n": n, "mean": column.mean, "sd": column.sd, "se": sampler.standard_error(column),
            **{f"q{p}": float(v) for p, v in zip(quantile_levels, q, strict=True)}}


def _ci(sign: float) -> Callable[[dict[str, Any]], float]:
    return lambda f: f["mean"] + sign * Z95 * f["se"]


def _cvar(f: dict[str, Any]) -> float:
    return -f["column"].tail_mean(max(1, math.ceil(TAIL * f["n"])))


PV_STATISTICS = (
    Statistic("mean", "Mean", "Mean PV (USD bn)", BN, "{:,.2f}", lambda f: f["mean"], error="se"),
    Statistic("se", "SE", "Standard error of the mean", BN3, "{:,.3f}", lambda f: f["se"]),
    Statistic("sd", "SD", "Standard deviation across paths", BN, "{:,.2f}", lambda f: f["sd"]),
    *[Statistic(f"p{p}", f"P{p}", "Median" if p == 50 else f"{p}th percentile", BN, "{:,.2f}",
                lambda f, p=p: f[f"q{p}"]) for p in PERCENTILES],
    Statistic("var5", "VaR 5%", "Value at risk at 5%: -P5 (a loss is positive)", BN, "{:,.2f}", lambda f: -f["q5"]),
    Statistic("cvar5", "CVaR 5%", "Conditional VaR at 5%: -mean of the worst 5% of paths", BN, "{:,.2f}", _cvar),
    Statistic("p_negative", "P(PV<0)", "P(PV < 0)", PCT, "{:.1%}", lambda f: f["column"].negative / f["n"]),
)
DIFFERENCE_STATISTICS = (
    Statistic("mean", "Mean difference", "Mean of (PV - baseline PV), path by path", BN, "{:,.2f}",
              lambda f: f["mean"], error="se"),
    Statistic("se", "SE", "Standard error of that difference", BN3, "{:,.3f}", lambda f: f["se"]),
    Statistic("ci_low", "95% CI low", f"Mean difference - {Z95} standard errors", BN, "{:,.2f}", _ci(-1.0)),
    Statistic("ci_high", "95% CI high", f"Mean difference + {Z95} standard errors", BN, "{:,.2f}", _ci(1.0)),
    Statistic("p_better", "P(better)", "P(PV > baseline PV) on the same path", PCT, "{:.1%}",
              lambda f: f["column"].positive / f["n"]),
    Statistic("p_worse", "P(worse)", "P(PV < baseline PV) on the same path", PCT, "{:.1%}",
              lambda f: f["column"].negative / f["n"]),
    Statistic("p5", "P5 of difference", "5th percentile of the difference", BN, "{:,.2f}", lambda f: f["q5"]),
    Statistic("p50", "Median difference", "Median of the difference", BN, "{:,.2f}", lambda f: f["q50"]),
    Statistic("p95", "P95 of difference", "95th percentile of the difference", BN, "{:,.2f}", lambda f: f["q95"]),
)
# summary(): each PV statistic, then three of the comparison with the baseline (renamed: diff_*)
COMPARED = {"diff_mean": "mean", "diff_se": "se", "p_better": "p_better"}
_DIFF = {s.key: s for s in DIFFERENCE_STATISTICS}
SUMMARY = (*PV_STATISTICS,
           Statistic("diff_mean", "vs base", "Mean of (PV - baseline PV), path by path", BN, "{:,.2f}",
                     _DIFF["mean"].compute, error="diff_se"),
           Statistic("diff_se", "vs base SE", "Standard error of that difference", BN3, "{:,.3f}",
                     _DIFF["se"].compute),
           Statistic("p_better", "P(better)", "P(PV > baseline PV) on the same path (blank for the baseline "
                     "itself)", PCT, "{:.1%}", _DIFF["p_better"].compute))
# Shown beside the summary on the workbook's Summary sheet: the mean's 95% confidence interval.
CONFIDENCE = (Statistic("ci_low", "95% CI low", f"Mean - {Z95} standard errors", BN, "{:,.2f}", _ci(-1.0)),
              Statistic("ci_high", "95% CI high", f"Mean + {Z95} standard errors", BN, "{:,.2f}", _ci(1.0)))
SUMMARY_COLUMNS = {s.key: s.description for s in SUMMARY}
VERSUS_COLUMNS = [s.key for s in DIFFERENCE_STATISTICS]


def describe(column: Any, sampler: Any) -> dict[str, float]:
    """The PV statistics of one column, by key."""
    facts = _facts(column, sampler, PERCENTILES)
    return {s.key: float(s.compute(facts)) for s in PV_STATISTICS}


def compare(difference: Any, sampler: Any) -> dict[str, float]:
    """The statistics of one path-by-path difference from the baseline, by key."""
    facts = _facts(difference, sampler, (5, 50, 95))
    return {s.key: float(s.compute(facts)) for s in DIFFERENCE_STATISTICS}


def confidence(stats: Any) -> dict[str, Any]:
    """The 95% confidence interval of a mean from its ``mean`` and ``se`` (numbers, or columns of a table)."""
    return {s.key: s.compute(stats) for s in CONFIDENCE}
