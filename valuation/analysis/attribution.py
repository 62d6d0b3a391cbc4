"""Attribution from one run: how much of each PV's variance each random source explains, and the mean PV in
each decile of the source.

**First-order index** of a source ``X`` for a PV ``Y``: ``Var(E[Y | X]) / Var(Y)``, estimated from the paths
of a single kept run.  The paths are sorted by ``X`` and cut into equal-count bins (tied values, such as
"never" for an event or a deadline's met/missed, stay in one bin); the variance of the bin means, weighted by
their counts, overstates ``Var(E[Y | X])`` by about ``(bins - 1) / n`` times the mean variance within a bin,
which is subtracted (the usual bias correction of the between-group variance).  The standard error is the
bootstrap's: the estimate again on 40 resamples of the paths (keyed from the run's seed, so reproducible), the
bins cut again each time.  (A jackknife with the bins held understated it threefold for a source that decides
a PV through a threshold, where the placing of the bins matters; the bootstrap is right there and at most twice
too cautious for a source that explains nothing.)  An
index is 0 for a source the PV does not depend on (within its standard error) and 1 for one that decides it;
indices of dependent sources (the AGI declaration and its verification) overlap, so they need not sum to 1.

**Change in output statistic** (as @RISK draws it): the mean PV in each decile of the source, minus the
overall mean.

Sources: the AGI declaration and verification times, each event's time, each deadline's outcome, the revenue
shocks (the Gaussian part of log revenue at the horizon, standardised: the path's own normals), revenue at the
horizon (an outcome: the shocks and everything else that moves revenue), and each uncertain input's draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuation import arguments
from valuation.errors import InputError, Problem

BINS = 50  # bins for the conditional means (fewer where a run has few paths)
MIN_PATHS = 800  # 8 bins of 100 at the least
REPLICATES = 40  # bootstrap resamples for the standard errors (an SE to about 11%)
DECILES = 10


@dataclass
class Attribution:
    """The outcome of :func:`attribution`: ``indices`` (rows ``(structure, party, source)``, columns ``index``,
    ``se``, sorted by index within each structure x party) and ``deciles`` (rows ``(structure, party,
    source)``, columns ``d1`` .. ``d10``: the mean PV in each decile of the source minus the overall mean; a
    source with fewer distinct values has fewer groups, the rest blank)."""

    result: Any
    indices: pd.DataFrame
    deciles: pd.DataFrame
    sources: list[str]

    def top(self, structure: str, party: str, n: int = 5) -> pd.DataFrame:
        """The ``n`` sources that explain most of one structure x party's PV, largest first."""
        n = arguments.count("top()", "n", n, 1)
        t = self.indices
        mine = (t.index.get_level_values(0) == structure) & (t.index.get_level_values(1) == party)
        if not mine.any():
            raise InputError("", [Problem("structure/party", "a structure and a party of the run",
                                          f"{structure}/{party}")])
        return t[mine].droplevel([0, 1]).head(n)

    def lines(self, top: int = 5) -> list[str]:
        r = self.result
        out = [f"attribution of each PV's variance to its random sources (first-order indices, from one run of "
               f"{r.paths:,} paths)"]
        for structure in r.structures:
            for party in r.parties:
                rows = self.top(structure, party, top)
                if rows["index"].isna().all():
                    continue
                shown = ", ".join(f"{k} {v['index']:.3f} (SE {v['se']:.3f})" for k, v in rows.iterrows())
                out.append(f"  {structure} / {party}: {shown}")
        return out

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (a Read me and the Attribution sheet); returns its path."""
        from valuation.report.analysis import write_attribution

        return write_attribution(self, arguments.path("to_excel()", "path", path, "the path of an .xlsx workbook"))


def sources_of(result: Any) -> pd.DataFrame:
    """Each path's value of every random source of a kept run, columns named as reported."""
    from models import rng
    from valuation.engine.uncertain import growth_coefficients, growth_scores

    drivers = result.drivers
    frame = pd.DataFrame(index=drivers.index)
    for name in drivers.columns:
        frame[name] = drivers[name].to_numpy(dtype=np.float64)
    # the revenue path's own shocks, apart from everything else that moves revenue: the Gaussian part of log
    # revenue at the horizon, standardised (the correlations' revenue_growth driver), from the run's own normals
    coef = growth_coefficients(result.compiled.model)
    if np.any(coef != 0):
        rk = rng.round_keys(np.asarray(result._key(), np.uint32))
        frame["revenue_shocks"] = growth_scores(rk, np.int64(result.first_path), np.int64(result.paths), coef)
    if result.uncertain:
        inputs = result.input_values()
        for name in inputs.columns:
            frame[f"input:{name}"] = inputs[name].to_numpy(dtype=np.float64)
    return frame


def first_order(x: np.ndarray, y: np.ndarray, bins: int) -> np.ndarray:
    """The bias-corrected first-order index of ``x`` for each column of ``y`` (see the module's notes)."""
    ranked = _Ranked(x)
    return _index(ranked.groups(np.ones(len(x)), bins), y, np.ones(len(x)))


class _Ranked:
    """A source sorted once, so that any reweighting of its paths (a bootstrap resample: each path's count)
    is cut into equal-count bins without sorting again: tied values in one bin (that of the first of them)."""

    def __init__(self, x: np.ndarray) -> None:
        self.order = np.argsort(x, kind="stable")
        xs = x[self.order]
        starts = np.r_[True, xs[1:] != xs[:-1]]
        self.first = np.maximum.accumulate(np.where(starts, np.arange(len(xs)), 0))  # each one's tie start

    def groups(self, weight: np.ndarray, bins: int) -> np.ndarray:
        w = weight[self.order]
        before = np.cumsum(w) - w  # weight of the paths sorted before each
        position = before[self.first]
        out = np.empty(len(w), np.int64)
        out[self.order] = (position * bins // w.sum()).astype(np.int64)
        return out


def _index(groups: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The bias-corrected first-order index of a grouping of the paths (each counted ``w`` times) for each
    column of ``y``."""
    n = w.sum()
    k = int(groups.max()) + 1
    counts = np.bincount(groups, weights=w, minlength=k)
    used = counts > 0
    wy = y * w[:, None]
    total = wy.sum(axis=0) / n
    sums = np.stack([np.bincount(groups, weights=wy[:, j], minlength=k) for j in range(y.shape[1])], axis=1)
    squares = np.stack([np.bincount(groups, weights=wy[:, j] * y[:, j], minlength=k) for j in range(y.shape[1])],
                       axis=1)
    var = (squares.sum(axis=0) - n * total**2) / (n - 1)
    means = sums[used] / counts[used, None]
    between = np.sum(counts[used, None] * (means - total) ** 2, axis=0) / n
    within = np.sum(squares[used] - counts[used, None] * means**2, axis=0) / max(n - used.sum(), 1)
    corrected = between - (used.sum() - 1) / n * within
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, corrected / var, np.nan)


def attribution(result: Any, *, bins: int | None = None) -> Attribution:
    """First-order indices and decile bars of every random source, for every structure x party of a kept run.

    Parameters
    ----------
    result
        A :class:`~valuation.results.SimulationResult` whose paths were kept (``keep_paths=True``).
    bins
        Bins for the conditional means (default: 50, fewer below 5,000 paths: at least 100 paths a bin).
    """
    where = "attribution()"
    if not all(hasattr(result, name) for name in ("kept_paths", "input_values", "partial", "seed_sequence")):
        raise arguments.ArgumentTypeError(where, [Problem("result", "a SimulationResult (valuation.simulate(...))",
                                                          result)])
    if not result.kept_paths:
        raise InputError("", [Problem("result", "a run with its paths kept (keep_paths=True): attribution reads "
                                      "every path's sources and PVs", f"a streaming run of {result.paths:,} paths")])
    n = result.paths
    if n < MIN_PATHS:
        raise InputError("", [Problem("paths", f"a run of at least {MIN_PATHS} paths (the bootstrap's resamples "
                                      "and at least 8 bins of 100 paths)", n)])
    bins = arguments.count(where, "bins", bins if bins is not None else max(2, min(BINS, n // 100)), 2, n // 10)
    sources = sources_of(result)
    pv = np.asarray(result.pvs)  # (paths, structures, parties)
    S, P = pv.shape[1], pv.shape[2]
    y = pv.reshape(n, S * P)
    rng = np.random.default_rng(np.random.SeedSequence(list(result.seed_sequence.entropy
                                                            if np.ndim(result.seed_sequence.entropy)
                                                            else [result.seed_sequence.entropy]) + [0xA77]))
    resamples = [np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64) for _ in range(REPLICATES)]
    rows, decile_rows = [], []
    for name in sources.columns:
        x = sources[name].to_numpy()
        ranked = _Ranked(x)
        ones = np.ones(n)
        index = _index(ranked.groups(ones, bins), y, ones)
        replicates = []
        for counts in resamples:  # the bootstrap: the paths resampled, the bins cut again
            replicates.append(_index(ranked.groups(counts, bins), y, counts))
        se = np.std(replicates, axis=0, ddof=1)
        groups = ranked.groups(ones, DECILES)
        present = np.unique(groups)
        means = np.stack([y[groups == g].mean(axis=0) for g in present], axis=0) - y.mean(axis=0)
        for j in range(S * P):
            s, p = divmod(j, P)
            key = (result.structures[s], result.parties[p], name)
            rows.append((*key, float(index[j]), float(se[j])))
            decile_rows.append((*key, *[float(means[i, j]) for i in range(len(present))],
                                *([math.nan] * (DECILES - len(present)))))
    indices = pd.DataFrame(rows, columns=["structure", "party", "source", "index", "se"])
    order = {(sn, pn): i for i, (sn, pn) in enumerate((sn, pn) for sn in result.structures for pn in result.parties)}
    indices["_pair"] = [order[(a, b)] for a, b in zip(indices["structure"], indices["party"], strict=True)]
    indices["_rank"] = -indices["index"].fillna(-1.0)
    indices = indices.sort_values(["_pair", "_rank", "source"], kind="stable").drop(columns=["_pair", "_rank"])
    indices = indices.set_index(["structure", "party", "source"])
    deciles = pd.DataFrame(decile_rows, columns=["structure", "party", "source",
                                                 *[f"d{i + 1}" for i in range(DECILES)]]).set_index(
        ["structure", "party", "source"])
    return Attribution(result=result, indices=indices, deciles=deciles, sources=list(sources.columns))
