"""Negotiation: each party's gain over its walk-away across a negotiated term, the zone of possible agreement
and the Nash bargaining point, on common random numbers.

A party's **gain** at a value ``x`` of the term is its statistic (in its own view: its discount rates and
own-value streams, where gains from trade come from) under the structure with the term at ``x``, minus its
statistic under its walk-away structure.  The **zone of possible agreement** is where every party gains; its
ends are the roots of the parties' gains (Brent on the same random numbers, refined from the grid's sign
changes), each with a delta-method standard error (the gain's standard error at the root over its slope).
The **Nash bargaining point** maximises ``sum_i w_i log(gain_i)`` over the zone (weights: bargaining power); its
standard error comes from batches of paths (the maximiser of a quadratic fitted to each batch's objective
around the point).  Two terms at once are a grid: every point's gains, the zone as a mask, the Nash point the
best grid point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq, minimize_scalar

from valuation import arguments
from valuation.analysis import common
from valuation.errors import InputError, Problem
from valuation.scenario import Scenario

MAX_GRID = 2_500  # grid points (runs) of one negotiation: 50 x 50 for two terms
ROOT_TOLERANCE = 1e-10  # the zone's ends, relative to the range (a deterministic gain is met to rounding)


@dataclass
class Negotiation:
    """The outcome of :func:`negotiate`.

    ``curve``: the gains on the grid, rows by point (columns: each term's value, then ``gain:<party>`` and
    ``se:<party>``); ``zone``: the intervals where every party gains (one term), each end ``(value, se, which
    party's gain is zero there)``, empty when there is none; ``shortfall``: then, how far the best point of the
    grid is from a zone (the largest over the grid of the smallest party gain, negative); ``nash``: the Nash
    point ``{"value", "se", "gains"}`` (None without a zone); for two terms ``zone_mask`` marks the grid points
    where every party gains and ``nash`` is the best of them.
    """

    scenario: Scenario
    keys: list[str]
    structure: str
    parties: list[str]
    walk_away: dict[str, str]
    statistic: common.Statistic
    weights: list[float]
    paths: int
    seed: int
    curve: pd.DataFrame
    zone: list[tuple[tuple[float, float, str], tuple[float, float, str]]]
    shortfall: float | None
    nash: dict[str, Any] | None
    runs: int
    originals: list[float] = field(default_factory=list)
    range_cuts: dict[str, str] = field(default_factory=dict)  # terms whose range was cut where the scenario is valid

    def lines(self) -> list[str]:
        key = " x ".join(self.keys)
        head = (f"negotiation over {key} (now {', '.join(f'{v:g}' for v in self.originals)}) under {self.structure}: "
                f"each party's {self.statistic.label} gain over its walk-away ("
                + ", ".join(f"{p}: {w}" for p, w in self.walk_away.items())
                + f"); {self.paths:,} paths, seed {self.seed}, {self.runs} runs on the same random numbers")
        out = [head, *[f"  note: {k}'s range is cut to where the scenario is valid: {why}"
                       for k, why in self.range_cuts.items()]]
        if len(self.keys) == 1:
            if not self.zone:
                out.append(f"  zone of possible agreement: empty; the best point of the range leaves a party "
                           f"{-self.shortfall:,.2f} USD bn short")
            for (a, a_se, a_who), (b, b_se, b_who) in self.zone:
                out.append(f"  zone of possible agreement: {a:.6g} (SE {a_se:.3g}{'; ' + a_who if a_who else ''}) "
                           f"to {b:.6g} (SE {b_se:.3g}{'; ' + b_who if b_who else ''})")
        elif not self.nash:
            out.append(f"  zone of possible agreement: empty on the grid; the best point leaves a party "
                       f"{-self.shortfall:,.2f} USD bn short")
        if self.nash:
            where = ", ".join(f"{k} = {v:.6g}" for k, v in zip(self.keys, np.atleast_1d(self.nash["value"]),
                                                                   strict=True))
            se = f" (SE {self.nash['se']:.3g})" if self.nash.get("se") is not None else " (best grid point)"
            gains = ", ".join(f"{p} {g:+,.2f}" for p, g in self.nash["gains"].items())
            weights = "" if len(set(self.weights)) == 1 else \
                " with weights " + ", ".join(f"{p} {w:g}" for p, w in zip(self.parties, self.weights, strict=True))
            out.append(f"  Nash bargaining point{weights}: {where}{se}; gains {gains} USD bn")
        return out

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (a Read me and the Negotiation sheet); returns its path."""
        from valuation.report.analysis import write_negotiation

        return write_negotiation(self, arguments.path("to_excel()", "path", path, "the path of an .xlsx workbook"))


def negotiate(scenario: Scenario | str | Path, vary: str | Sequence[str], structure: str,
              parties: Sequence[str] | None = None, walk_away: str | dict[str, str] | None = None, *,
              statistic: str = "mean", weights: Sequence[float] | None = None, points: int = 11,
              between: Any = None, paths: int | None = None, seed: int | None = None, uncertain: bool | None = None,
              threads: int | None = None, progress: common.Progress = None) -> Negotiation:
    """The zone of possible agreement and the Nash bargaining point over one negotiated term (or a grid of two).

    Parameters
    ----------
    vary
        The key path of the term (``"structures[1].clauses[0].schedule[1].rate"``), or two of them for a grid.
    structure
        The structure whose term is negotiated.
    parties
        The parties at the table (two or more; default: the two sides of the clause the term belongs to).
    walk_away
        Each party's alternative: a structure for all, or a mapping party -> structure (default: the baseline).
    statistic
        ``"mean"``, ``"p<q>"`` or ``"cvar<q>"`` (a risk-adjusted gain: e.g. ``"cvar5"`` compares the worst 5%).
    weights
        Bargaining power, one per party (default: equal): the Nash point maximises ``sum w_i log gain_i``.
    points
        Grid points across each term's range (both ends included).
    between
        The range of the term: ``(low, high)``, or one pair per term (default: its low/high range, else its
        allowed range).
    """
    where = "negotiate()"
    scenario = common.checked_scenario(where, scenario)
    keys = [vary] if isinstance(vary, str) else list(vary) if isinstance(vary, Sequence) else None
    if keys is None or not 1 <= len(keys) <= 2 or len(set(keys)) != len(keys):
        raise arguments.ArgumentTypeError(where, [Problem("vary", "the key path of the negotiated term, or a list "
                                                          "of two different ones (a grid)", vary)])
    names = scenario.structure_names()
    structure = common.name_argument(where, "structure", structure, names, "a structure")
    if parties is None:
        parties = _clause_sides(scenario, keys[0])
    if isinstance(parties, str) or not isinstance(parties, Sequence):
        raise arguments.ArgumentTypeError(where, [Problem("parties", "a list of two or more party names", parties)])
    parties = [common.name_argument(where, "parties", p, scenario.party_names(), "a party") for p in parties]
    if len(parties) < 2 or len(set(parties)) != len(parties):
        raise InputError("", [Problem("parties", "two or more different parties", list(parties))])
    walk = _walk_away(where, scenario, parties, structure, walk_away)
    stat = common.statistic(where, statistic)
    if stat.versus_baseline:
        raise InputError("", [Problem("statistic", "mean, p<q> or cvar<q> (the gain is already against the "
                                      "walk-away)", statistic)])
    weights = _weights(where, weights, len(parties))
    points = arguments.count(where, "points", points, 3, 201)
    if points ** len(keys) > MAX_GRID:
        raise InputError("", [Problem("points", f"at most {int(MAX_GRID ** (1 / len(keys)))} points per term for "
                                      f"{len(keys)} terms ({MAX_GRID:,} grid points)", points)])
    originals = [common.number_at(where, scenario, "vary", k) for k in keys]
    for k in keys:
        common.check_term(where, scenario, k, [structure, *walk.values()])
    cuts: dict[str, str] = {}
    ranges = _ranges(where, scenario, keys, originals, between, cuts)
    paths = arguments.count(where, "paths", scenario.simulation.paths if paths is None else paths, 2 * common.BATCHES)
    seed = arguments.count(where, "seed", scenario.simulation.seed if seed is None else seed, 0, 2**63 - 1)
    uncertain = arguments.optional_flag(where, "uncertain", uncertain)
    uncertain = scenario.simulation.uncertain if uncertain is None else uncertain
    s_idx = names.index(structure)
    w_idx = [names.index(walk[p]) for p in parties]
    p_idx = [scenario.party_names().index(p) for p in parties]
    runs = [0]

    def per_path(x: Sequence[float]) -> tuple[np.ndarray, Any]:
        """Each party's per-path PV under the structure and under its walk-away: ``(paths, 2, parties)``."""
        pv, result = common.run_variant(scenario, {k: float(v) for k, v in zip(keys, x, strict=True)}, paths=paths,
                                        seed=seed, uncertain=uncertain, threads=threads)
        runs[0] += 1
        if progress is not None:
            progress(runs[0], 0)
        ours = pv[:, s_idx, p_idx]
        theirs = np.stack([pv[:, w, p] for w, p in zip(w_idx, p_idx, strict=True)], axis=1)
        return np.stack([ours, theirs], axis=1), result

    seen: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def gains(x: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each party's gain at ``x``, its standard error (paired), and the per-path PVs; each point run once
        (the last few kept)."""
        point = tuple(float(v) for v in x)
        if point not in seen:
            both, result = per_path(point)
            value = stat.of(both[:, 0]) - stat.of(both[:, 1])
            se = common.paired_error(stat, both[:, 0], both[:, 1], result.sampler)
            if len(seen) > 16:
                seen.pop(next(iter(seen)))
            seen[point] = (value, se, both)
        return seen[point]

    grids = [np.linspace(lo, hi, points) for lo, hi in ranges]
    if len(keys) == 1:
        out = _one_term(scenario, keys, structure, parties, walk, stat, weights, paths, seed, originals, grids[0],
                        gains, runs)
    else:
        out = _two_terms(scenario, keys, structure, parties, walk, stat, weights, paths, seed, originals, grids,
                         gains, runs)
    out.range_cuts = cuts
    return out


def _clause_sides(scenario: Scenario, key: str) -> list[str]:
    """The two parties of the clause a key belongs to (payer and payee, issuer and holder)."""
    import re

    match = re.match(r"^structures\[(\d+)\]\.clauses\[(\d+)\]", key)
    if match:
        st = scenario.structures[int(match.group(1))] if int(match.group(1)) < len(scenario.structures) else None
        clause = st.clauses[int(match.group(2))] if st and int(match.group(2)) < len(st.clauses) else None
        sides = [getattr(clause, role, None) for role in ("payer", "payee", "issuer", "holder")]
        sides = [p for p in sides if isinstance(p, str)]
        if len(set(sides)) == 2:
            return sides
    raise InputError("", [Problem("parties", "the parties at the table (give them: the term is not a clause's with "
                                  "two sides to take them from)", has_value=False)])


def _walk_away(where: str, scenario: Scenario, parties: list[str], structure: str, walk_away: Any) -> dict[str, str]:
    names = scenario.structure_names()
    if walk_away is None:
        if structure == scenario.baseline:
            raise InputError("", [Problem("walk_away", f"a walk-away structure: the default, the baseline "
                                          f"{structure!r}, is the structure negotiated", has_value=False)])
        walk_away = scenario.baseline
    if isinstance(walk_away, str):
        walk_away = {p: walk_away for p in parties}
    if not isinstance(walk_away, dict) or set(walk_away) != set(parties):
        raise arguments.ArgumentTypeError(where, [Problem("walk_away", "a structure, or a mapping of each party at "
                                                          "the table to a structure", walk_away)])
    out = {}
    for party in parties:
        out[party] = common.name_argument(where, "walk_away", walk_away[party], names, "a structure")
        if out[party] == structure:
            raise InputError("", [Problem("walk_away", f"a structure other than the one negotiated ({structure!r}): "
                                          f"{party}'s gain over it would be zero whatever the term", out[party])])
    return out


def _weights(where: str, weights: Any, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if isinstance(weights, Sequence) and len(weights) == n and all(common.is_number(w) for w in weights) and \
            all(math.isfinite(w) and w > 0 for w in weights):
        return [float(w) for w in weights]
    raise InputError("", [Problem("weights", f"{n} positive numbers, one per party", weights)])


def _ranges(where: str, scenario: Scenario, keys: list[str], originals: list[float], between: Any,
            cuts: dict[str, str]) -> list[tuple[float, float]]:
    if between is None or len(keys) == 1:
        return [common.search_between(where, scenario, k, v, between, cuts)
                for k, v in zip(keys, originals, strict=True)]
    if not isinstance(between, Sequence) or len(between) != len(keys):
        raise InputError("", [Problem("between", "one (low, high) pair per term", between)])
    return [common.search_between(where, scenario, k, v, b, cuts)
            for k, v, b in zip(keys, originals, between, strict=True)]


def _frame(keys: list[str], parties: list[str], xs: list[Sequence[float]], values: list[np.ndarray],
           ses: list[np.ndarray]) -> pd.DataFrame:
    rows = []
    for x, v, se in zip(xs, values, ses, strict=True):
        rows.append({**{k: float(a) for k, a in zip(keys, x, strict=True)},
                     **{f"gain:{p}": float(v[i]) for i, p in enumerate(parties)},
                     **{f"se:{p}": float(se[i]) for i, p in enumerate(parties)}})
    return pd.DataFrame(rows)


def _one_term(scenario, keys, structure, parties, walk, stat, weights, paths, seed, originals, grid, gains, runs
              ) -> Negotiation:
    at = [gains([x]) for x in grid]
    values = np.array([a[0] for a in at])
    ses = np.array([a[1] for a in at])
    curve = _frame(keys, parties, [[x] for x in grid], list(values), list(ses))
    lo, hi = float(grid[0]), float(grid[-1])
    tol = ROOT_TOLERANCE * (hi - lo)
    # each party's crossings of zero, refined; then the intervals where every gain is positive
    cuts: list[tuple[float, float, str]] = []
    for i, party in enumerate(parties):
        g = values[:, i]
        for j in range(len(grid) - 1):
            if g[j] == 0.0 or g[j] * g[j + 1] < 0:
                a, b = float(grid[j]), float(grid[j + 1])
                root = a if g[j] == 0.0 else brentq(lambda x, i=i: gains([x])[0][i], a, b, xtol=tol, rtol=1e-15)
                cuts.append((root, _root_se(gains, root, i, lo, hi), party))
    edges = sorted({lo, hi, *[c[0] for c in cuts]})
    zone: list[tuple[tuple[float, float, str], tuple[float, float, str]]] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        mid = 0.5 * (a + b)
        inside = np.all(np.array([np.interp(mid, grid, values[:, i]) for i in range(len(parties))]) > 0)
        if not inside or b - a <= tol:
            continue
        end_a, end_b = _end(a, cuts), _end(b, cuts)
        if zone and zone[-1][1][0] == a:  # a crossing that does not close the zone (a gain touching zero)
            zone[-1] = (zone[-1][0], end_b)
        else:
            zone.append((end_a, end_b))
    shortfall = None if zone else float(np.max(np.min(values, axis=1)))
    nash = _nash(gains, stat, zone, weights, parties) if zone else None
    return Negotiation(scenario=scenario, keys=keys, structure=structure, parties=parties, walk_away=walk,
                       statistic=stat, weights=weights, paths=paths, seed=seed, curve=curve, zone=zone,
                       shortfall=shortfall, nash=nash, runs=runs[0], originals=originals)


def _end(x: float, cuts: list[tuple[float, float, str]]) -> tuple[float, float, str]:
    for root, se, party in cuts:
        if root == x:
            return (root, se, f"{party}'s gain is zero")
    return (x, 0.0, "the end of the range")


def _root_se(gains, root: float, i: int, lo: float, hi: float) -> float:
    """The delta method: the gain's standard error at the root over its slope there (a central difference on
    the same random numbers)."""
    step = 1e-3 * (hi - lo)
    up, down = min(root + step, hi), max(root - step, lo)
    slope = (gains([up])[0][i] - gains([down])[0][i]) / (up - down)
    se = gains([root])[1][i]
    return float(se / abs(slope)) if slope != 0 else math.inf


def _nash(gains, stat, zone, weights, parties) -> dict[str, Any]:
    """The Nash point over the zone's widest interval (the weighted log product is concave in the usual case),
    with its standard error from batches."""
    (a, _, _), (b, _, _) = max(zone, key=lambda z: z[1][0] - z[0][0])
    w = np.array(weights)

    def objective(x: float) -> float:
        g = gains([x])[0]
        return -float(np.sum(w * np.log(g))) if np.all(g > 0) else math.inf

    width = b - a
    found = minimize_scalar(objective, bounds=(a + 1e-9 * width, b - 1e-9 * width), method="bounded",
                            options={"xatol": 1e-9 * width})
    x = float(found.x)
    value, _, _ = gains([x])
    return {"value": x, "se": _nash_se(gains, stat, x, a, b, w), "gains": dict(zip(parties, map(float, value),
                                                                             strict=True))}


def _nash_se(gains, stat, x: float, a: float, b: float, w: np.ndarray) -> float | None:
    """The maximiser's standard error by the delta method on its first-order condition
    ``phi = sum_i w_i G_i' / G_i = 0``: five points around ``x``; each party's gain ``G_i`` and its slope there
    (a fitted parabola's), for the whole run and for each batch of paths; the batches' ``phi``, linearised
    about the whole run's gains (a batch's own gain may be near zero), gives the noise of ``phi`` at ``x``, over
    the curvature of the whole run's objective."""
    half = 0.1 * (b - a)
    xs = np.linspace(max(a, x - half), min(b, x + half), 5)
    per_batch, whole = [], []
    for xv in xs:
        value, _, both = gains([xv])
        whole.append(value)
        n = both.shape[0] // common.BATCHES
        per_batch.append([stat.of(both[k * n:(k + 1) * n, 0]) - stat.of(both[k * n:(k + 1) * n, 1])
                          for k in range(common.BATCHES)])
    g, full = np.array(per_batch), np.array(whole)  # (points, batches, parties), (points, parties)
    if np.any(full <= 0):
        return None
    u = xs - x
    fit = np.polyfit(u, full, 2)  # (3, parties): curvature, slope, level at x
    level, slope = fit[2], fit[1]
    curvature = 2.0 * np.polyfit(u, np.sum(w * np.log(full), axis=1), 2)[0]
    if not curvature < 0:
        return None
    phis = []
    for k in range(common.BATCHES):
        batch = np.polyfit(u, g[:, k, :], 2)
        phis.append(float(np.sum(w * (batch[1] / level - slope * batch[2] / level**2))))
    return float(np.std(phis, ddof=1) / math.sqrt(common.BATCHES) / abs(curvature))


def _two_terms(scenario, keys, structure, parties, walk, stat, weights, paths, seed, originals, grids, gains, runs
               ) -> Negotiation:
    xs, values, ses = [], [], []
    for x in grids[0]:
        for y in grids[1]:
            v, se, _ = gains([x, y])
            xs.append((float(x), float(y)))
            values.append(v)
            ses.append(se)
    curve = _frame(keys, parties, xs, values, ses)
    vals = np.array(values)
    mask = np.all(vals > 0, axis=1)
    curve["in_zone"] = mask
    w = np.array(weights)
    nash = None
    shortfall = None
    if mask.any():
        score = np.where(mask, np.sum(w * np.log(np.where(vals > 0, vals, 1.0)), axis=1), -np.inf)
        best = int(np.argmax(score))
        nash = {"value": np.array(xs[best]), "se": None,
                "gains": dict(zip(parties, map(float, vals[best]), strict=True))}
    else:
        shortfall = float(np.max(np.min(vals, axis=1)))
    return Negotiation(scenario=scenario, keys=keys, structure=structure, parties=parties, walk_away=walk,
                       statistic=stat, weights=weights, paths=paths, seed=seed, curve=curve, zone=[],
                       shortfall=shortfall, nash=nash, runs=runs[0], originals=originals)
