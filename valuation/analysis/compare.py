"""Scenarios: the scenario's named variants (``[[variants]]``) run on the same random numbers as the scenario
itself, side by side, each difference from the scenario with its paired standard error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuation import arguments
from valuation.analysis import common
from valuation.errors import InputError, Problem
from valuation.scenario import Scenario

BASE = "base"  # the scenario itself, as a row of the comparison


@dataclass
class Comparison:
    """The outcome of :func:`compare`: ``table`` rows ``(variant, structure, party)`` (the scenario itself is
    the variant ``"base"``), columns ``value`` and ``se`` (the statistic and its standard error), ``diff`` and
    ``diff_se`` (the variant minus the scenario, path by path on the same random numbers)."""

    scenario: Scenario
    statistic: common.Statistic
    variants: list[str]
    paths: int
    seed: int
    uncertain: bool
    table: pd.DataFrame
    structures: list[str]
    parties: list[str]

    def lines(self) -> list[str]:
        out = [f"variants of the scenario on the same random numbers: {self.statistic.label} (USD bn), "
               f"{self.paths:,} paths, seed {self.seed}; each variant's difference from the scenario with its paired "
               "standard error"]
        t = self.table
        for structure in self.structures:
            for party in self.parties:
                rows = t.xs((structure, party), level=["structure", "party"])
                if rows["diff"].abs().max() == 0 and rows.loc[BASE, "value"] == 0:
                    continue
                base = rows.loc[BASE]
                shown = ", ".join(f"{v} {r['diff']:+,.2f} (SE {r['diff_se']:.2f})"
                                  for v, r in rows.iterrows() if v != BASE)
                out.append(f"  {structure} / {party}: base {base['value']:,.2f} (SE {base['se']:.2f}); {shown}")
        return out

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (a Read me and the Scenarios sheet); returns its path."""
        from valuation.report.analysis import write_comparison

        return write_comparison(self, arguments.path("to_excel()", "path", path, "the path of an .xlsx workbook"))


def compare(scenario: Scenario | str | Path, variants: Sequence[str] | None = None, *, paths: int | None = None,
            seed: int | None = None, statistic: str = "mean", uncertain: bool | None = None,
            threads: int | None = None, progress: common.Progress = None) -> Comparison:
    """Run the scenario and each of its ``[[variants]]`` (or those named) on the same random numbers.

    Returns
    -------
    Comparison
    """
    where = "compare()"
    scenario = common.checked_scenario(where, scenario)
    names = [v.name for v in scenario.variants]
    if not names:
        raise InputError(scenario.path or "<scenario>", [Problem("variants", "at least one [[variants]] entry (a "
                                                                 "name and the inputs it changes) to compare",
                                                                 has_value=False)])
    if variants is None:
        chosen = names
    else:
        if isinstance(variants, str) or not isinstance(variants, Sequence):
            raise arguments.ArgumentTypeError(where, [Problem("variants", "a list of variant names, or None for all",
                                                              variants)])
        chosen = [common.name_argument(where, "variants", v, names, "a variant") for v in variants]
        if not chosen or len(set(chosen)) != len(chosen):
            raise InputError("", [Problem("variants", "one or more different variant names", list(variants))])
    stat = common.statistic(where, statistic)
    paths = arguments.count(where, "paths", scenario.simulation.paths if paths is None else paths, 2 * common.BATCHES)
    seed = arguments.count(where, "seed", scenario.simulation.seed if seed is None else seed, 0, 2**63 - 1)
    uncertain = arguments.optional_flag(where, "uncertain", uncertain)
    uncertain = scenario.simulation.uncertain if uncertain is None else uncertain
    progress = arguments.optional_callable(where, "progress", progress, "a function called with (runs done, runs in "
                                           "all), or None")
    scenario.check_variants(chosen)  # every variant checked before any path runs
    bare = scenario.without_variants()
    built = {name: scenario.variant(name) for name in chosen}
    total = 1 + len(chosen)

    def run(s: Scenario, k: int) -> tuple[np.ndarray, Any]:
        pv, result = common.run_variant(s, {}, paths=paths, seed=seed, uncertain=uncertain, threads=threads)
        if progress is not None:
            progress(k, total)
        return pv, result

    pv0, result = run(bare, 1)
    structures, parties = list(result.structures), list(result.parties)
    b = structures.index(scenario.baseline)
    x0 = common.values_of(stat, pv0, b)
    v0, se0 = stat.with_error(x0, result.sampler)
    rows = [(BASE, sn, pn, float(v0[s, p]), float(se0[s, p]), 0.0, 0.0)
            for s, sn in enumerate(structures) for p, pn in enumerate(parties)]
    for k, name in enumerate(chosen, start=2):
        pv, _ = run(built[name], k)
        x = common.values_of(stat, pv, b)
        v, se = stat.with_error(x, result.sampler)
        d_se = common.paired_error(stat, x, x0, result.sampler)
        rows += [(name, sn, pn, float(v[s, p]), float(se[s, p]), float(v[s, p] - v0[s, p]), float(d_se[s, p]))
                 for s, sn in enumerate(structures) for p, pn in enumerate(parties)]
    table = pd.DataFrame(rows, columns=["variant", "structure", "party", "value", "se", "diff", "diff_se"]).set_index(
        ["variant", "structure", "party"])
    return Comparison(scenario=scenario, statistic=stat, variants=chosen, paths=paths, seed=seed, uncertain=uncertain,
                      table=table, structures=structures, parties=parties)
