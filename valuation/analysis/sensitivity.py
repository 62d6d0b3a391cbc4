"""Tornado and spider: each input with a ``low``/``high`` range re-run across its range, one at a time, on the
same random numbers as the base run.

For every structure x party the statistic (see :mod:`valuation.analysis.common`) at the input's low and high
ends, each with its standard error, and the **swing** (high end minus low end) with two standard errors: the
paired one (the two ends on the same paths: what the swing's precision really is) and the one independent seeds
would give (``sqrt(se_low^2 + se_high^2)``), to show what common random numbers buy.  The spider adds points
across each range.  An input with a distribution is held at each point (its draws stop; the others' go on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuation import arguments
from valuation.analysis import common
from valuation.errors import InputError, Problem
from valuation.scenario import Scenario

MAX_RUNS = 2_000  # runs one sensitivity may ask for (a few minutes at 100,000 paths of the base case)
TORNADO_COLUMNS = {
    "low": "the input's low end", "high": "the input's high end",
    "at_low": "the statistic with the input at its low end", "at_low_se": "its standard error",
    "at_high": "the statistic with the input at its high end", "at_high_se": "its standard error",
    "swing": "at_high - at_low", "swing_se": "the swing's standard error on the same paths (paired)",
    "swing_se_independent": "what it would be with independent seeds: sqrt(at_low_se^2 + at_high_se^2)",
    "base": "the statistic at the scenario's values", "base_se": "its standard error",
}


@dataclass
class Sensitivity:
    """The outcome of :func:`sensitivity`.

    ``tornado``: rows ``(structure, party, input)``, columns :data:`TORNADO_COLUMNS`, the inputs of each
    structure x party sorted by the size of their swing; ``spider``: rows ``(structure, party, input, point)``,
    columns ``input_value``, ``position`` (0 at the low end, 1 at the high end), ``value``, ``se``; ``base``:
    rows ``(structure, party)``, columns ``value``, ``se``; ``cuts``: the inputs whose stated range reaches
    values the scenario does not take with the other inputs at theirs (an elicited probability past its
    neighbour's), each with why: their range is cut there (``low``/``high`` are the ends used).
    """

    scenario: Scenario
    statistic: common.Statistic
    inputs: list[str]
    paths: int
    seed: int
    uncertain: bool
    baseline: str
    base: pd.DataFrame
    tornado: pd.DataFrame
    spider: pd.DataFrame
    runs: int
    structures: list[str] = field(default_factory=list)
    parties: list[str] = field(default_factory=list)
    cuts: dict[str, str] = field(default_factory=dict)

    def bars(self, structure: str, party: str) -> pd.DataFrame:
        """The tornado of one structure x party, largest swing first."""
        structure = common.name_argument("bars()", "structure", structure, self.structures, "a structure")
        party = common.name_argument("bars()", "party", party, self.parties, "a party")
        t = self.tornado
        mine = (t.index.get_level_values(0) == structure) & (t.index.get_level_values(1) == party)
        return t[mine].droplevel([0, 1])

    def moving(self) -> list[tuple[str, str]]:
        """The structure x party pairs some input moves (a swing that is not exactly 0)."""
        swings = self.tornado["swing"].abs().groupby(level=[0, 1], sort=False).max()
        return [pair for pair, size in swings.items() if size > 0]

    def lines(self, top: int = 5) -> list[str]:
        """The console's account: per structure x party that moves, its ``top`` inputs (the pairs no input
        moves are named once at the end)."""
        top = arguments.count("lines()", "top", top, 1)
        out = [f"sensitivity of the {self.statistic.label} (USD bn) to {len(self.inputs)} inputs, one at a time "
               f"over their low/high ranges: {self.paths:,} paths, seed {self.seed}, {self.runs} runs on the same "
               f"random numbers{'; uncertain inputs drawn' if self.uncertain else ''}"]
        for key, why in self.cuts.items():
            out.append(f"  note: {key}'s range is cut to where the scenario is valid: {why}")
        for structure, party in self.moving():
            base = self.base.loc[(structure, party)]
            out.append(f"  {structure} / {party}: base {base['value']:,.2f} (SE {base['se']:.2f})")
            for key, row in self.bars(structure, party).head(top).iterrows():
                out.append(f"    {key}: {row['low']:g} -> {row['at_low']:,.2f}, {row['high']:g} -> "
                           f"{row['at_high']:,.2f}; swing {row['swing']:+,.2f} (SE {row['swing_se']:.3f} paired, "
                           f"{row['swing_se_independent']:.2f} with independent seeds)")
        still = [f"{s} / {p}" for s in self.structures for p in self.parties if (s, p) not in self.moving()]
        if still:
            out.append(f"  not moved by any of these inputs: {', '.join(still)}")
        return out

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (a Read me and the Sensitivity sheet: tornado and spider charts); returns its path."""
        from valuation.report.analysis import write_sensitivity

        return write_sensitivity(self, arguments.path("to_excel()", "path", path, "the path of an .xlsx workbook"))


def sensitivity(scenario: Scenario | str | Path, inputs: list[str] | str | None = None, *, paths: int | None = None,
                seed: int | None = None, statistic: str = "mean", points: int = 5, uncertain: bool | None = None,
                baseline: str | None = None, threads: int | None = None,
                progress: common.Progress = None) -> Sensitivity:
    """Tornado and spider of every input with a range (or of ``inputs``), on common random numbers.

    Parameters
    ----------
    scenario
        A :class:`Scenario` or the path of a scenario file.
    inputs
        Key paths of inputs with a ``low``/``high`` range (default: all of them).
    paths, seed
        Of every run (default: the scenario's).
    statistic
        ``"mean"``, ``"diff"`` (against the baseline structure, path by path), ``"p<q>"`` or ``"cvar<q>"``.
    points
        Points across each range for the spider, both ends included (2: the tornado only).
    uncertain
        Draw the inputs that have a distribution (default: the scenario's); the varied input is held at each
        point.
    baseline
        The structure ``"diff"`` compares with (default: the scenario's).
    progress
        Called with (runs done, runs in all) after each run.

    Returns
    -------
    Sensitivity
    """
    where = "sensitivity()"
    scenario = common.checked_scenario(where, scenario)
    stat = common.statistic(where, statistic)
    keys = common.ranged_inputs(where, scenario, inputs)
    points = arguments.count(where, "points", points, 2, 101)
    if len(keys) * points > MAX_RUNS:
        raise InputError("", [Problem("points", f"at most {MAX_RUNS // len(keys)} points for {len(keys)} inputs "
                                      f"({MAX_RUNS:,} runs in all; split the inputs into several runs)", points)])
    paths = arguments.count(where, "paths", scenario.simulation.paths if paths is None else paths, 2 * common.BATCHES)
    seed = arguments.count(where, "seed", scenario.simulation.seed if seed is None else seed, 0, 2**63 - 1)
    uncertain = arguments.optional_flag(where, "uncertain", uncertain)
    uncertain = scenario.simulation.uncertain if uncertain is None else uncertain
    baseline = common.name_argument(where, "baseline", baseline, scenario.structure_names(), "a structure") \
        if baseline is not None else scenario.baseline
    progress = arguments.optional_callable(where, "progress", progress, "a function called with (runs done, runs in "
                                           "all), or None")
    total = 1 + len(keys) * points
    done = [0]

    def run(changes: dict[str, Any]) -> tuple[np.ndarray, Any]:
        pv, result = common.run_variant(scenario, changes, paths=paths, seed=seed, uncertain=uncertain,
                                        threads=threads)
        done[0] += 1
        if progress is not None:
            progress(done[0], total)
        return pv, result

    pv, result = run({})
    structures, parties = list(result.structures), list(result.parties)
    b = structures.index(baseline)
    sampler = result.sampler
    x0 = common.values_of(stat, pv, b)
    base_value, base_se = stat.with_error(x0, sampler)
    del pv, x0
    tornado_rows: list[dict[str, Any]] = []
    spider_rows: list[dict[str, Any]] = []
    cuts: dict[str, str] = {}
    for key in keys:
        rng = common.usable_range(scenario, key, cuts)
        grid = np.linspace(rng.low, rng.high, points)
        grid[0], grid[-1] = rng.low, rng.high
        ends = {}
        for j, value in enumerate(grid):
            x = common.values_of(stat, run({key: float(value)})[0], b)
            v, se = stat.with_error(x, sampler)
            if j in (0, points - 1):
                ends[j] = (x, v, se)
            for s, sname in enumerate(structures):
                for p, pname in enumerate(parties):
                    spider_rows.append({"structure": sname, "party": pname, "input": key, "point": j,
                                        "input_value": float(value), "position": j / (points - 1),
                                        "value": float(v[s, p]), "se": float(se[s, p])})
        (x_lo, v_lo, se_lo), (x_hi, v_hi, se_hi) = ends[0], ends[points - 1]
        paired = common.paired_error(stat, x_hi, x_lo, sampler)
        for s, sname in enumerate(structures):
            for p, pname in enumerate(parties):
                tornado_rows.append({
                    "structure": sname, "party": pname, "input": key, "low": rng.low, "high": rng.high,
                    "at_low": float(v_lo[s, p]), "at_low_se": float(se_lo[s, p]), "at_high": float(v_hi[s, p]),
                    "at_high_se": float(se_hi[s, p]), "swing": float(v_hi[s, p] - v_lo[s, p]),
                    "swing_se": float(paired[s, p]),
                    "swing_se_independent": float(np.hypot(se_lo[s, p], se_hi[s, p])),
                    "base": float(base_value[s, p]), "base_se": float(base_se[s, p])})
    tornado = pd.DataFrame(tornado_rows)
    order = {(sn, pn): i for i, (sn, pn) in enumerate((sn, pn) for sn in structures for pn in parties)}
    tornado["_pair"] = [order[(sn, pn)] for sn, pn in zip(tornado["structure"], tornado["party"], strict=True)]
    tornado["_size"] = -tornado["swing"].abs()
    tornado = tornado.sort_values(["_pair", "_size", "input"], kind="stable").drop(columns=["_pair", "_size"])
    tornado = tornado.set_index(["structure", "party", "input"])
    spider = pd.DataFrame(spider_rows).set_index(["structure", "party", "input", "point"]).sort_index()
    base = pd.DataFrame([{"structure": sn, "party": pn, "value": float(base_value[s, p]), "se": float(base_se[s, p])}
                         for s, sn in enumerate(structures) for p, pn in enumerate(parties)]).set_index(
        ["structure", "party"])
    return Sensitivity(scenario=scenario, statistic=stat, inputs=keys, paths=paths, seed=seed, uncertain=uncertain,
                       baseline=baseline, base=base, tornado=tornado, spider=spider, runs=done[0],
                       structures=structures, parties=parties, cuts=cuts)
