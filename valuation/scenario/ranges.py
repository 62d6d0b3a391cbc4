"""Ranges and distributions on inputs, and rank correlations among them.

Any number of a scenario may be written ``{ value = 8.0, low = 6.0, high = 10.0, source = "..." }``: ``low``
and ``high`` are its sensitivity range (what a tornado swings it over).  An input that describes the world
(see :func:`takes_distribution`) may add ``dist``, which makes it random when a run asks for uncertain inputs:
one draw per path.  How ``low`` and ``high`` map to each distribution:

``uniform``     bounds: every value between them equally likely.
``triangular``  bounds, with the mode at ``value``.
``pert``        bounds, with the mode at ``value``: a Beta on ``[low, high]`` with shapes
                ``1 + 4 (value - low) / (high - low)`` and ``1 + 4 (high - value) / (high - low)`` (mean
                ``(low + 4 value + high) / 6``), the usual smoother triangle.
``normal``      the 5th and 95th percentiles: mean ``(low + high) / 2``, SD ``(high - low) / (2 z95)``,
                ``z95 = 1.6449``; cut to the input's allowed range (e.g. a volatility stays >= 0).
``lognormal``   the 5th and 95th percentiles of a lognormal (``low > 0``): median ``sqrt(low high)``; cut to
                the input's allowed range.

``value`` is the input when uncertain inputs are off (and the mode of ``triangular`` and ``pert``).  The range
lives beside the value, keyed by the input's key path (:attr:`Scenario.ranges`), as sources do.

``[[correlations]]`` entries give rank (Spearman) correlations between two uncertain inputs, or between one and
a named driver of the model (:data:`DRIVERS`, or an ``[events]`` name); they are applied through a Gaussian
copula (see :mod:`valuation.engine.uncertain`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from models.copula import conflicts, is_psd, rank_to_normal
from valuation import keys
from valuation.errors import Problem

DISTS = ("uniform", "triangular", "pert", "normal", "lognormal")
BOUNDED = ("uniform", "triangular", "pert")  # low and high are bounds; normal and lognormal: P5 and P95
Z95 = 1.6448536269514722  # the standard normal's 95th percentile: P5 and P95 are mean -/+ Z95 SD

DRIVERS = {
    "agi_declared": "the AGI declaration time (its uniform draw: a high rank is a late declaration)",
    "revenue_growth": "the revenue path's own shocks: the Gaussian part of log revenue at the horizon, "
                      "standardised (a high rank is a path that grows faster than expected)",
}

RANGE_KEYS = ("low", "high", "dist")


@dataclass(frozen=True)
class InputRange:
    """The range of one input: low, high, and the distribution it follows when uncertain (None: fixed)."""

    low: float
    high: float
    dist: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, **({"dist": self.dist} if self.dist else {})}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bounds(scenario: Any, key: str) -> tuple[float | None, float | None, bool, bool]:
    """The schema's bounds of the number at ``key``: (low, high, low excluded, high excluded)."""
    parts = keys.parse(key)
    if parts[:2] == ["market", "rates"]:
        return -1.0, 10.0, True, False
    if parts == ["revenue", "margin"]:
        return -20.0, 1.0, False, False
    node: Any = scenario
    field = None
    for part in parts:
        if isinstance(node, BaseModel):
            name = next((n for n, f in type(node).model_fields.items() if (f.alias or n) == part), None)
            if name is None:
                return None, None, False, False
            field = type(node).model_fields[name]
            node = getattr(node, name)
        elif isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, tuple) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
    lo = hi = None
    open_lo = open_hi = False
    for meta in getattr(field, "metadata", []) if field is not None else []:
        for attr, is_low, is_open in (("ge", True, False), ("gt", True, True), ("le", False, False),
                                      ("lt", False, True)):
            bound = getattr(meta, attr, None)
            if bound is not None:
                if is_low:
                    lo, open_lo = float(bound), is_open
                else:
                    hi, open_hi = float(bound), is_open
    return lo, hi, open_lo, open_hi


def timing_keys(scenario: Any) -> dict[str, Any]:
    """The scenario's timing tables by key path (the AGI's, events', deadline completions')."""
    out = {"agi.declaration": scenario.agi.declaration, "agi.verification_lag": scenario.agi.verification_lag}
    out.update({keys.join("events", name): t for name, t in scenario.events.items()})
    out.update({f"deadlines[{i}].completion": d.completion for i, d in enumerate(scenario.deadlines)
                if d.completion is not None})
    return out


def takes_distribution(scenario: Any, key: str) -> str | None:
    """Why the input at ``key`` cannot take a distribution, or None where it can.

    The inputs that describe the world can: every ``[revenue]`` number and margin point, the AGI's, events' and
    deadline completions' timing parameters (a quantile table's elicited probabilities, never and start, but
    not under a gompertz fit), ``agi.never_verified`` and deadline haircuts.  Deal terms and discount rates
    cannot: they are what is negotiated and how each party values.
    """
    parts = keys.parse(key)
    head = parts[0]
    if head == "revenue" or key == "agi.never_verified":
        return None
    if head == "deadlines" and len(parts) == 3 and parts[2] in ("growth_haircut", "haircut_years"):
        return None
    for prefix, table in timing_keys(scenario).items():
        if key.startswith(prefix + "."):
            rest = keys.parse(key[len(prefix) + 1:])
            family = getattr(table, "family", "")
            if rest[0] == "points":
                if rest[-1] != "p":
                    return "a number of the world; a distribution goes on an elicited point's probability (p), " \
                           "not on its date"
            if rest[0] == "pieces":
                return None if rest[-1] == "hazard" else \
                    "a number of the world; a distribution goes on a piece's hazard, not on where it starts"
            if rest[0] == "start" and family == "piecewise_hazard":
                return "a table other than piecewise_hazard for a distribution on its start (its pieces hang on it)"
            if family == "quantiles" and table.fit == "gompertz":
                return (f"a quantile table with another fit (piecewise, exponential, weibull or lognormal) for a "
                        f"distribution on its {rest[0]} ({prefix} has fit = \"gompertz\": each path would refit it, "
                        "and a gompertz fit's growth can run off to zero)")
            return None
    if head == "market" or (head == "parties" and parts[-1] == "discount_rate"):
        return "an input of the world; discount rates stay fixed: they are how each party (or the market) " \
               "values, and the analysis varies them (a range without dist is a sensitivity range)"
    return "an input of the world (revenue, AGI timing, events, deadline completions and haircuts); deal terms " \
           "stay fixed: they are what is negotiated, and the analysis varies them (a range without dist is a " \
           "sensitivity range)"


def range_checks(scenario: Any, ranges: Mapping[str, InputRange]) -> Iterator[Problem]:
    """Each range on a number, ``low <= value <= high`` inside the input's allowed range; each distribution on
    an input of the world, with a range it can use; ranges that the model needs in order (a market above
    revenue, elicited probabilities increasing) that stay in order at their ends."""
    for key in sorted(ranges):
        r = ranges[key]
        value = scenario.value_at(key)
        if keys.parse(key)[0] == "simulation":
            yield Problem(keys.join(key, "low"), "expected no range on a run setting ([simulation]): ranges are for "
                          "the model's inputs", has_value=False)
            continue
        if not is_number(value):
            yield Problem(keys.join(key, "low"), "expected a range only on a number (low and high beside a "
                          "numeric value)", has_value=False)
            continue
        if not r.low <= value:
            yield Problem(keys.join(key, "low"), f"a low at most the value ({value!r})", r.low)
            continue
        if not value <= r.high:
            yield Problem(keys.join(key, "high"), f"a high at least the value ({value!r})", r.high)
            continue
        lo, hi, open_lo, open_hi = bounds(scenario, key)
        allowed = _allowed(lo, hi, open_lo, open_hi)
        for end, x in (("low", r.low), ("high", r.high)):
            if (lo is not None and (x < lo or open_lo and x == lo)) or \
                    (hi is not None and (x > hi or open_hi and x == hi)):
                yield Problem(keys.join(key, end), f"a value inside the input's allowed range ({allowed})", x)
        if r.dist is None:
            continue
        why = takes_distribution(scenario, key)
        if why is not None:
            yield Problem(keys.join(key, "dist"), why, r.dist)
            continue
        if not r.low < r.high:
            yield Problem(keys.join(key, "high"), f"a high above low ({r.low!r}) for a distribution", r.high)
        elif r.dist == "lognormal" and not r.low > 0:
            yield Problem(keys.join(key, "low"), "a low above 0 for a lognormal (low and high are its 5th and 95th "
                          "percentiles)", r.low)
    yield from _order_checks(scenario, ranges)


def _allowed(lo: float | None, hi: float | None, open_lo: bool, open_hi: bool) -> str:
    left = "no lower bound" if lo is None else f"{'>' if open_lo else '>='} {lo:g}"
    right = "no upper bound" if hi is None else f"{'<' if open_hi else '<='} {hi:g}"
    return f"{left}, {right}"


def support(scenario: Any, key: str, r: InputRange) -> tuple[float, float]:
    """The values the input can take when uncertain: its bounds, or (normal, lognormal) its allowed range."""
    if r.dist in BOUNDED or r.dist is None:
        return r.low, r.high
    lo, hi, _, _ = bounds(scenario, key)
    floor = 0.0 if r.dist == "lognormal" else -math.inf
    return max(floor, lo if lo is not None else -math.inf), hi if hi is not None else math.inf


def _order_checks(scenario: Any, ranges: Mapping[str, InputRange]) -> Iterator[Problem]:
    def span(key: str, value: float) -> tuple[float, float]:
        r = ranges.get(key)
        return support(scenario, key, r) if r is not None and r.dist is not None else (value, value)

    rev = scenario.revenue
    if rev.market_size is not None:
        top = span("revenue.initial", rev.initial)[1]
        bottom = span("revenue.market_size", rev.market_size)[0]
        if not bottom > top and ("revenue.initial" in ranges or "revenue.market_size" in ranges):
            yield Problem("revenue.market_size", f"expected a market size whose lowest draw ({bottom:g}) stays above "
                          f"today's revenue rate's highest ({top:g}): give market_size a bounded distribution "
                          "(uniform, triangular, pert) above revenue.initial's range", has_value=False)
    for prefix, table in timing_keys(scenario).items():
        if getattr(table, "family", "") != "quantiles":
            continue
        start = ranges.get(f"{prefix}.start")
        if start is not None and start.dist is not None and table.points:
            by = table.points[0].by
            first = float(by) if isinstance(by, (int, float)) else scenario.years(by)
            top = support(scenario, f"{prefix}.start", start)[1]
            if not top < first:
                yield Problem(f"{prefix}.start", f"expected draws before the first elicited point ({first:g} years "
                              f"after the valuation date; this one goes up to {top:g}): every point comes after "
                              "the start", has_value=False)
        spans = [span(f"{prefix}.points[{j}].p", p.p) for j, p in enumerate(table.points)]
        never = span(f"{prefix}.never", table.never)
        if not any(f"{prefix}.points[{j}].p" in ranges for j in range(len(spans))) and f"{prefix}.never" not in ranges:
            continue
        for j in range(1, len(spans)):
            if not spans[j][0] > spans[j - 1][1]:
                yield Problem(f"{prefix}.points[{j}].p", f"expected draws that stay above points[{j - 1}].p's (up to "
                              f"{spans[j - 1][1]:g}; this one goes down to {spans[j][0]:g}): elicited probabilities "
                              "increase on every path; give bounded ranges that do not overlap", has_value=False)
        if not spans[-1][1] < 1.0 - never[1]:
            yield Problem(f"{prefix}.never", f"expected draws below 1 - the last point's highest p "
                          f"({spans[-1][1]:g}) on every path", has_value=False)


def dist_inputs(scenario: Any) -> list[str]:
    """The keys of the inputs with a distribution, in the scenario's own order (sorted key paths)."""
    return sorted(k for k, r in scenario.ranges.items() if r.dist is not None)


def correlation_checks(scenario: Any) -> Iterator[Problem]:
    """Each correlation between two distinct names (an uncertain input's key, or a driver), once per pair, not
    between two drivers (both are the model's own random numbers)."""
    inputs = dist_inputs(scenario)
    drivers = driver_names(scenario)
    seen: dict[frozenset, int] = {}
    ok = True
    for i, c in enumerate(scenario.correlations):
        where = f"correlations[{i}].between"
        if len(c.between) != 2:
            yield Problem(where, "two names, e.g. [\"agi_declared\", \"revenue.long_run_growth\"]", list(c.between))
            ok = False
            continue
        named_ok = True
        for j, name in enumerate(c.between):
            if name not in inputs and name not in drivers:
                ranged = name in scenario.ranges
                hint = " (it has a range but no dist: add dist to make it uncertain)" if ranged else ""
                yield Problem(f"{where}[{j}]", f"an input with a distribution, one of {inputs}, or a driver, one of "
                              f"{sorted(drivers)}{hint}", name)
                named_ok = False
        if not named_ok:
            ok = False
            continue
        a, b = c.between
        if a == b:
            yield Problem(where, "two different names (an input is perfectly correlated with itself)", list(c.between))
        elif a in drivers and b in drivers:
            yield Problem(where, "at least one uncertain input: two drivers are the model's own random numbers, and "
                          "neither is changed to correlate them", list(c.between))
        elif frozenset(c.between) in seen:
            yield Problem(where, f"a pair not given before (correlations[{seen[frozenset(c.between)]}] has it)",
                          list(c.between))
        else:
            seen[frozenset(c.between)] = i
            continue
        ok = False
    if not ok or not seen:
        return
    rev = scenario.revenue
    if any("revenue_growth" in c.between for c in scenario.correlations) and rev.volatility == 0 and \
            rev.growth_volatility == 0:
        yield Problem("correlations", "expected a revenue path with shocks for a correlation with revenue_growth: "
                      "revenue.volatility and revenue.growth_volatility are both 0, so the path has no randomness "
                      "to rank", has_value=False)
    if scenario.simulation.repair_correlations:
        return
    names, _, rank, entries = correlation_matrix(scenario)
    normal = np.vectorize(rank_to_normal)(rank)
    np.fill_diagonal(normal, 1.0)
    if not is_psd(normal):
        bad = conflicts(normal, entries)
        text = "; ".join(f"correlations[{c}] {list(scenario.correlations[c].between)} = "
                         f"{scenario.correlations[c].rank:g}" for c in bad)
        yield Problem("correlations", f"expected rank correlations that can hold together (a positive "
                      f"semi-definite matrix); these cannot: {text}. Change them, or set "
                      "simulation.repair_correlations = true to use the nearest valid matrix", has_value=False)


def correlation_matrix(scenario: Any) -> tuple[list[str], int, np.ndarray, dict[tuple[int, int], int]]:
    """The copula's variables (drivers first, then inputs in key order), how many are drivers, the matrix of
    target rank correlations (0 where none is given) and which correlation gave each entry."""
    named = {n for c in scenario.correlations for n in c.between}
    driver_order = [*DRIVERS, *scenario.events]
    drivers = [d for d in driver_order if d in named]
    names = drivers + [k for k in dist_inputs(scenario) if k in named]
    index = {n: i for i, n in enumerate(names)}
    rank = np.eye(len(names))
    entries: dict[tuple[int, int], int] = {}
    for c_i, c in enumerate(scenario.correlations):
        i, j = sorted((index[c.between[0]], index[c.between[1]]))
        rank[i, j] = rank[j, i] = c.rank
        entries[(i, j)] = c_i
    return names, len(drivers), rank, entries


def driver_names(scenario: Any) -> list[str]:
    """Drivers a correlation may name: the AGI declaration, the revenue path, each named event."""
    return [*DRIVERS, *scenario.events]
