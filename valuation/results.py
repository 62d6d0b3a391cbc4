"""Results of a simulation: per-path PVs and drivers (kept runs), their statistics, and the analysis tables
the workbook shows.

Every statistic is computed from the run's accumulator (:mod:`valuation.stats.accumulate`) through one
interface, whether the run kept its paths or streamed them, by the definitions of
:mod:`valuation.stats.catalogue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuation.engine.run import expected_flows
from valuation.engine.sampling import SAMPLERS, Sampler
from valuation.engine.tables import CLAUSE_MOMENTS, clause_moment
from valuation.engine.uncertain import SAMPLE_LIMIT
from valuation.errors import InputError, Problem
from valuation.scenario import Scenario
from valuation.stats.catalogue import (
    HEAD,
    HISTOGRAM_BINS,
    PERCENTILES,
    QUANTILE_GRID,
    SUMMARY_COLUMNS,
    TAIL,
    VERSUS_COLUMNS,
    compare,
    confidence,
    describe,
)
from valuation.stats.columns import Moments, sorted_columns
from valuation.stats.histogram import REL_ERROR, TINY

__all__ = ["HEAD", "PERCENTILES", "QUANTILE_GRID", "SUMMARY_COLUMNS", "TAIL", "VERSUS_COLUMNS", "DriverStats",
           "PartyTables", "PathsNotKept", "SimulationResult", "year_ends"]


class PathsNotKept(ValueError):
    """Raised when a streaming result is asked for something only kept paths have."""


@dataclass
class SimulationResult:
    """The outcome of :func:`valuation.simulate` (or of :func:`valuation.merge`).

    Attributes
    ----------
    scenario
        The validated scenario that was run.
    structures, parties
        Names along axes 1 and 2 of ``pvs``.
    first_path, paths
        The run covers paths ``first_path .. first_path + paths - 1``.
    kept_paths
        False for a streaming run (``simulate(..., keep_paths=False)``): no per-path arrays, statistics
        folded chunk by chunk (exact means and variances; quantiles within ``quantile_error``).
    seed, entropy
        The seed given (None for a ``SeedSequence``) and the ``SeedSequence`` entropy it produced.
    sampler
        How the random numbers were drawn, and the standard-error estimator that goes with it.
    stop
        For a run that stopped at a target precision: ``met`` (every output reached its target), ``paths``,
        ``batches``, ``target_se`` / ``target_rel``, ``worst`` (the output furthest from its target: structure,
        party, what, mean, se, target) and ``outputs`` (each output's mean, se and target); None otherwise.
    """

    scenario: Scenario
    structures: list[str]
    parties: list[str]
    seed: int | None
    entropy: int | Sequence[int]
    run_seconds: float
    compile_seconds: float
    threads: int
    partial: Any = field(repr=False)  # the run's accumulator (valuation.stats.accumulate.Partial)
    compiled: Any = field(default=None, repr=False)  # the scenario's kernel tables (valuation.engine.tables)
    fits: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    first_path: int = 0
    sampler: Sampler = field(default_factory=lambda: SAMPLERS["pseudo"])
    seed_sequence: Any = field(default=None, repr=False)
    stop: dict[str, Any] | None = None  # what auto-stop did (simulate(..., target_se= / target_rel=)), else None
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    # ---------------------------------------------------------------- the run

    @property
    def paths(self) -> int:
        return self.partial.n

    @property
    def kept_paths(self) -> bool:
        return self.partial.kept

    @property
    def quantile_error(self) -> str:
        """How exact the percentiles, VaR and CVaR are."""
        if self.kept_paths:
            return "exact (sorted paths)"
        return (f"from streaming histograms: within {REL_ERROR:.3%} (relative) plus {TINY * 1e9:.2f} USD "
                "(absolute) of the exact value")

    @property
    def slot_time(self) -> np.ndarray:
        """Years after the valuation date of each cash-flow slot: the step ends, then one-off dates."""
        return self.compiled.slot_time

    @property
    def class_rates(self) -> np.ndarray:
        """Annual rate of each discount class: each party's own, then clauses' own rates."""
        return self.compiled.class_rates

    @property
    def step_time(self) -> np.ndarray:
        return self.compiled.t

    @property
    def cash_flows(self) -> np.ndarray:
        """Expected undiscounted flows (USD bn), ``(structures, parties, classes, slots)``: class ``c < parties``
        holds flows discounted at party ``c``'s own rate, later classes those of clauses with their own rate
        (``class_rates``); slots are ``slot_time``.  ``sum(cash_flows * (1 + rate) ** -slot_time)`` over
        classes and slots is the mean PV."""
        if "flows" not in self._cache:
            self._cache["flows"] = expected_flows(self.compiled, self.partial.flows) / self.paths
        return self._cache["flows"]

    @property
    def revenue_sample(self) -> np.ndarray:
        """Revenue rate (USD bn per year) at every step end (``step_time``) for the first paths of the run."""
        return self.partial.revenue_path

    @property
    def uncertain(self) -> bool:
        """Whether the run drew the inputs that have a distribution once per path."""
        return self.compiled is not None and self.compiled.plan is not None

    def _key(self) -> np.ndarray:
        from models.rng import key_from_seed

        return key_from_seed(self.seed_sequence if self.seed_sequence is not None else self.seed)[0]

    def input_values(self, first: int | None = None, n: int | None = None) -> pd.DataFrame:
        """Each uncertain input's value on paths ``first .. first + n - 1`` (default: the run's, at most the
        first 1,000,000), one column per input key: drawn again from the run's key, as the kernel drew them."""
        plan = self._plan("input_values()")
        first = self.first_path if first is None else int(first)
        n = min(self.paths, SAMPLE_LIMIT) if n is None else int(n)
        values = plan.values(self._key(), first, n)
        return pd.DataFrame(values, columns=plan.keys, index=pd.RangeIndex(first, first + n, name="path"))

    def _plan(self, what: str) -> Any:
        if not self.uncertain:
            raise InputError(what, "this run held every input at its value: run with uncertain=True (`valuation run "
                                   "--uncertain`) and inputs with a dist")
        return self.compiled.plan

    def inputs(self) -> pd.DataFrame:
        """The uncertain inputs: distribution, range (and what low and high mean for it), the value when fixed,
        and the mean, SD, 5th and 95th percentiles of their draws on the run's paths (the first 1,000,000)."""
        plan = self._plan("inputs()")
        values = self.input_values()
        rows = []
        for inp in plan.inputs:
            x = values[inp.key].to_numpy()
            rows.append({"key": inp.key, "dist": inp.range.dist, "low": inp.range.low, "high": inp.range.high,
                         "meaning": "P5 and P95" if inp.range.dist in ("normal", "lognormal") else "bounds",
                         "value": inp.value, "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1
                         else float("nan"), "p5": float(np.quantile(x, 0.05)), "p95": float(np.quantile(x, 0.95)),
                         "source": self.scenario.sources.get(inp.key, "")})
        return pd.DataFrame(rows).set_index("key")

    def correlations(self) -> pd.DataFrame:
        """Each pair of correlated variables: the rank correlation asked for (``target``; 0 for a pair not
        given), the one used (``used``: the same, or the nearest valid matrix's where the scenario asked for a
        repair), and the one ``achieved`` on the run's paths (the first 1,000,000) with its standard error."""
        plan = self._plan("correlations()")
        rows = plan.achieved(self._key(), self.paths, self.first_path)
        frame = pd.DataFrame([{"a": r["between"][0], "b": r["between"][1], **{k: v for k, v in r.items()
                                                                            if k != "between"}} for r in rows],
                             columns=["a", "b", "target", "used", "achieved", "se", "paths"])
        frame.attrs["repaired"] = bool(plan.copula.repaired) if plan.copula is not None else False
        return frame.set_index(["a", "b"])

    # ---------------------------------------------------------------- per path

    @property
    def views(self) -> list[str]:
        """The views of value this run has: ``"party"`` (each party's own rates and own-value streams), then
        ``"market"`` (each flow at the rate of its risk class; transfers only) where the scenario has ``[market]``."""
        return list(self.compiled.views)

    def _view(self, view: Any) -> int:
        """The index of a view (the project's message for one this run does not have)."""
        if not isinstance(view, str):
            from valuation.arguments import ArgumentTypeError

            raise ArgumentTypeError("view", [Problem("view", f"one of {self.views} (text)", view)])
        if view not in self.views:
            why = "" if view != "market" else ": the scenario has no [market] table (rates by risk class)"
            raise InputError(self.scenario.path or "<scenario>", [Problem("view", f"one of {self.views}{why}",
                                                                          view)])
        return self.views.index(view)

    def _column_index(self, s: int, view: str) -> int:
        return self._view(view) * len(self.structures) + s

    @property
    def pvs(self) -> np.ndarray:
        """Present values in the party view, USD bn at the valuation date, ``(paths, structures, parties)``
        (kept runs)."""
        return self.view_pvs("party")

    @property
    def market_pvs(self) -> np.ndarray:
        """Present values in the market view, ``(paths, structures, parties)`` (kept runs of a scenario with
        ``[market]``): every flow at the rate of its risk class, so they sum to zero over parties on every path."""
        return self.view_pvs("market")

    def view_pvs(self, view: str = "party") -> np.ndarray:
        """Per-path PVs of one view, ``(paths, structures, parties)`` (kept runs)."""
        v = self._view(view)
        if not self.kept_paths:
            raise self._not_kept("per-path PVs")
        S = len(self.structures)
        pv = self.partial.pv[:, v * S:(v + 1) * S]
        pv.flags.writeable = False  # results are evidence: views handed out cannot change them
        return pv

    @property
    def drivers(self) -> pd.DataFrame:
        """Per-path drivers (kept runs): ``agi_declared`` and ``agi_verified`` (years after the valuation date,
        ``inf`` = never), one column per event, one boolean column ``met:<deadline>`` per deadline,
        ``revenue_at_horizon`` (USD bn per year)."""
        if not self.kept_paths:
            raise self._not_kept("per-path drivers")
        if "drivers" not in self._cache:
            p = self.partial
            self._cache["drivers"] = self._frame(p.times, p.met, p.revenue)
        return self._cache["drivers"]

    def _frame(self, times: np.ndarray, met: np.ndarray, revenue: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame({name: times[:, i] for i, name in enumerate(self.compiled.sources)})
        for d, name in enumerate(self.compiled.deadlines):
            frame[f"met:{name}"] = met[:, d].astype(bool)
        frame["revenue_at_horizon"] = revenue
        frame.index = pd.RangeIndex(self.first_path, self.first_path + len(frame), name="path")
        return frame

    def _not_kept(self, what: str) -> PathsNotKept:
        n = min(HEAD, self.paths)
        return PathsNotKept(f"{what} were not kept: this was a streaming run of {self.paths:,} paths "
                            f"(keep_paths=False). summary(), versus() and party_tables() hold the statistics, "
                            f"head() the first {n:,} paths; run with keep_paths=True to keep every path")

    def head(self, view: str = "party") -> tuple[pd.DataFrame, np.ndarray]:
        """The first paths of the run (all of them up to :data:`HEAD`): drivers and PVs
        ``(paths, structures, parties)`` of a view."""
        v = self._view(view)
        pv, times, met, revenue = self.partial.head()
        S = len(self.structures)
        return self._frame(times, met, revenue), pv[:, v * S:(v + 1) * S]

    def means(self, view: str = "party") -> np.ndarray:
        """Mean PV per structure x party, ``(structures, parties)``."""
        return np.array([[self.partial.column(self._column_index(s, view), p).mean for p in range(len(self.parties))]
                         for s in range(len(self.structures))])

    def pv(self, structure: str, party: str, view: str = "party") -> np.ndarray:
        """Per-path PVs (USD bn) of ``party`` under ``structure``."""
        return self.view_pvs(view)[:, self._index(self.structures, structure, "structure"),
                                   self._index(self.parties, party, "party")]

    @staticmethod
    def _index(names: list[str], name: str, what: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            raise KeyError(f"no {what} {name!r}; expected one of {names}") from None

    # ---------------------------------------------------------------- statistics

    def summary(self, baseline: str | None = None, view: str = "party") -> pd.DataFrame:
        """Statistics per structure x party (rows); columns as in :data:`SUMMARY_COLUMNS`.

        Parameters
        ----------
        baseline
            Structure the others are compared with path by path (default: the run's baseline).
        view
            ``"party"``: each party's own discount rates and own-value streams (what each side believes);
            ``"market"``: each flow at the rate of its risk class, transfers only (fair value; needs ``[market]``).
            The table's ``attrs["view"]`` says which.
        """
        base = self._base(baseline)
        self._view(view)
        key = ("summary", base, view)
        if key not in self._cache:
            tables = [self.party_tables(p, view) for p in range(len(self.parties))]
            versus = self.versus(base, view)
            rows = []
            for s, sname in enumerate(self.structures):
                for p, pname in enumerate(self.parties):
                    if sname == base:  # the baseline against itself: no comparison to report
                        diff = {"diff_mean": 0.0, "diff_se": 0.0, "p_better": float("nan")}
                    else:
                        row = versus.loc[(sname, pname)]
                        diff = {"diff_mean": row["mean"], "diff_se": row["se"], "p_better": row["p_better"]}
                    rows.append({"structure": sname, "party": pname, **tables[p].stats[s], **diff})
            df = pd.DataFrame(rows).set_index(["structure", "party"])
            df.attrs.update(baseline=base, paths=self.paths, view=view)
            self._cache[key] = df
        return self._cache[key].copy()

    def versus(self, baseline: str | None = None, view: str = "party") -> pd.DataFrame:
        """Path-by-path difference (structure - baseline) per structure and party, the baseline omitted.

        Columns (:data:`VERSUS_COLUMNS`): ``mean``, ``se``, ``ci_low``/``ci_high`` (mean -/+ Z95 SE, the 95% interval),
        ``p_better``, ``p_worse`` (shares of paths; the rest are ties), ``p5``, ``p50``, ``p95`` (USD bn).
        """
        base = self._base(baseline)
        offset = self._column_index(0, view)
        key = ("versus", base, view)
        if key not in self._cache:
            b = self.structures.index(base)
            pairs = [(s, p) for s in range(len(self.structures)) if s != b for p in range(len(self.parties))]
            columns = [self.partial.difference(offset + s, p, offset + b) for s, p in pairs]
            if self.kept_paths:
                sorted_columns(columns)
            rows = [{"structure": self.structures[s], "party": self.parties[p], **compare(col, self.sampler)}
                    for (s, p), col in zip(pairs, columns, strict=True)]
            self._cache[key] = pd.DataFrame(rows, columns=["structure", "party", *VERSUS_COLUMNS]).set_index(
                ["structure", "party"])
        return self._cache[key].copy()

    def party_tables(self, party: int | str, view: str = "party") -> PartyTables:
        """Distribution tables of one party (by index or name) under every structure, in a view; computed once."""
        offset = self._column_index(0, view)
        if isinstance(party, str):
            party = self._index(self.parties, party, "party")
        elif isinstance(party, (bool, np.bool_)) or not isinstance(party, (int, np.integer)) or \
                not 0 <= party < len(self.parties):
            raise KeyError(f"no party {party!r}; expected a name, one of {self.parties}, or an index from 0 to "
                           f"{len(self.parties) - 1}")
        key = ("party", int(party), view)
        if key not in self._cache:
            columns = [self.partial.column(offset + s, int(party)) for s in range(len(self.structures))]
            if self.kept_paths:
                sorted_columns(columns)
            self._cache[key] = party_tables(columns, self.sampler)
        return self._cache[key]

    def _base(self, baseline: str | None) -> str:
        base = baseline or self.baseline or self.structures[0]
        if not self.kept_paths and base != self.structures[self.partial.layout.base]:
            self._index(self.structures, base, "structure")
            raise PathsNotKept(f"a streaming run compares with the baseline chosen when it ran "
                               f"({self.structures[self.partial.layout.base]!r}), not {base!r}: pass "
                               f"baseline={base!r} to simulate()")
        self._index(self.structures, base, "structure")
        return base

    def driver_stats(self) -> DriverStats:
        """AGI timing, verification and deadline frequencies over all paths (computed once)."""
        if "drivers_stats" not in self._cache:
            years, grid = year_ends(self.scenario)
            counts = self.partial.driver_counts(grid)
            lag = self.partial.lag()
            lag_q = lag.percentiles(np.array([50.0, 90.0]))
            n, ever = counts.n, counts.ever_declared
            self._cache["drivers_stats"] = DriverStats(
                years=years, grid=counts.grid, p_declared=counts.declared_by / n, p_verified=counts.verified_by / n,
                p_ever_declared=ever / n,
                p_never_verified=(ever - counts.verified_after_declared) / ever if ever else float("nan"),
                lag_median=float(lag_q[0]), lag_p90=float(lag_q[1]), p_met=counts.met / n, paths=n)
        return self._cache["drivers_stats"]

    # ---------------------------------------------------------------- analysis tables

    def slot_dates(self) -> list[date]:
        """The calendar date of each cash-flow slot."""
        t0 = self.scenario.simulation.valuation_date
        return [t0 + timedelta(days=round(float(x) * 365.25)) for x in self.slot_time]

    def annual_cash_flows(self) -> pd.DataFrame:
        """Expected undiscounted flows (USD bn) per structure and party, by calendar year.

        One-off flows dated at the horizon (equity stakes) get a column of their own, after the years.
        """
        n_steps = len(self.step_time)
        horizon = self.step_time[-1]
        at_horizon = np.zeros(len(self.slot_time), bool)
        at_horizon[n_steps:] = self.slot_time[n_steps:] == horizon
        years = np.array([d.year for d in self.slot_dates()])
        flows = self.cash_flows.sum(axis=2)  # over discount classes: (S, P, slots)
        data = {y: flows[:, :, (years == y) & ~at_horizon].sum(axis=2).ravel() for y in sorted(set(years.tolist()))}
        data[HORIZON_COLUMN] = flows[:, :, at_horizon].sum(axis=2).ravel()
        index = pd.MultiIndex.from_product([self.structures, self.parties], names=["structure", "party"])
        return pd.DataFrame(data, index=index)

    def agi_timing_table(self) -> pd.DataFrame:
        """By calendar year end: simulated P(declared by), the model's CDF, simulated P(verified by)."""
        from valuation.engine.compile import build_timing

        s = self.scenario
        stats = self.driver_stats()
        model, _ = build_timing(s.agi.declaration, s, absolute=True)
        return pd.DataFrame({"year": stats.years, "declared": stats.p_declared, "model": model.cdf(stats.grid),
                             "verified": stats.p_verified}).set_index("year")

    def revenue_fan(self) -> pd.DataFrame:
        """P5/P25/P50/P75/P95 of the revenue rate at each step end, over the recorded sample of paths."""
        q = np.percentile(self.revenue_sample, [5, 25, 50, 75, 95], axis=0)
        t0 = self.scenario.simulation.valuation_date
        dates = [t0 + timedelta(days=round(float(x) * 365.25)) for x in self.step_time]
        return pd.DataFrame(q.T, index=pd.Index(dates, name="date"), columns=["p5", "p25", "p50", "p75", "p95"])

    def company_value(self) -> pd.DataFrame:
        """The model's value of 100% of the company's equity at the valuation date, beside the market marks.

        The company's own cash flows -- operating profit each step (margin x revenue earned), then its exit value
        at the horizon (``exit_multiple`` x revenue rate) -- discounted at the rate of ``market.company_class``.
        Rows: ``model`` (``value`` the mean, ``se`` its standard error, the 95% interval), then one per mark
        (``value`` the mark; ``model_to_mark`` the model's value over it).  Needs a ``[market]`` table.
        """
        if "market" not in self.views:
            raise InputError(self.scenario.path or "<scenario>", [Problem(
                "market", "a [market] table with rates by risk class (the company's value is discounted at "
                "market.rates[company_class])", has_value=False)])
        if "company" not in self._cache:
            col = self.partial.company_column()
            facts = {"mean": col.mean, "se": self.sampler.standard_error(col)}
            rows = [{"name": "model", "label": "Model (this run)", "date": self.scenario.simulation.valuation_date,
                     "value": facts["mean"], "se": facts["se"], **confidence(facts), "model_to_mark": np.nan}]
            for mark in self.scenario.market.marks:
                rows.append({"name": mark.name, "label": mark.label or mark.name, "date": mark.date,
                             "value": mark.equity_value, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                             "model_to_mark": facts["mean"] / mark.equity_value})
            df = pd.DataFrame(rows).set_index("name")
            df.attrs.update(discount_class=self.scenario.market.company_class,
                            rate=self.scenario.market.rates[self.scenario.market.company_class])
            self._cache["company"] = df
        return self._cache["company"].copy()

    def revenue_by_year(self) -> pd.DataFrame:
        """Revenue earned in each calendar year (USD bn): ``mean``, ``se`` and the percentiles over paths, and
        ``days`` (days of the year inside the simulation: the first and last years are partial)."""
        if "years" not in self._cache:
            rows = []
            t0, horizon = self.scenario.simulation.valuation_date, self.scenario.simulation.horizon
            for y, year in enumerate(self.compiled.years):
                col = self.partial.year_column(y)
                q = col.quantiles(np.array(PERCENTILES, float))
                start, stop = max(date(year, 1, 1), t0), min(date(year + 1, 1, 1), horizon)
                rows.append({"year": year, "mean": col.mean, "se": self.sampler.standard_error(col),
                             **{f"p{p}": float(v) for p, v in zip(PERCENTILES, q, strict=True)},
                             "days": (stop - start).days})
            self._cache["years"] = pd.DataFrame(rows).set_index("year")
        return self._cache["years"].copy()

    def clause_table(self) -> list[tuple[int, Any, bool]]:
        """The clauses in the kernel's order: (structure index, clause, whether it is a common clause)."""
        s = self.scenario
        return [(i, c, common) for i, st in enumerate(s.structures)
                for c, common in [*((c, False) for c in st.clauses), *((c, True) for c in s.common_clauses)]]

    def by_clause(self, view: str = "party") -> pd.DataFrame:
        """Each structure x party's mean PV split by clause, with standard errors; the clauses of a structure
        sum to its mean PV (to rounding).

        Rows ``(structure, party, clause)``: every clause whose flows reach the party on some path -- the
        structure's own, the common clauses, and those of its fallback on paths where it falls back (``via``
        names the structure a clause belongs to).  Columns: ``mean`` (USD bn), ``se``, ``share`` (of the
        structure x party's mean; nan for a zero total), ``via``, ``common``, ``type``, ``order`` (the clause's
        place in the structure x party: fallback's clauses, then its own and the common ones, as evaluated).
        """
        v = self._view(view)
        key = ("clauses", view)
        if key not in self._cache:
            sums = self.partial.flows[..., -CLAUSE_MOMENTS:]  # (patterns, clauses, moments)
            st_eff, cl = self.compiled.drivers.st_eff, self.compiled.clauses
            n = self.paths
            table = self.clause_table()
            rows = []
            by_pair: dict[tuple[int, int], list] = {}
            for s, p, c, legs in self.compiled.clause_legs(v):
                by_pair.setdefault((s, p), []).append((c, legs))
            for (s, p), members in by_pair.items():
                found = []
                for c, legs in members:
                    owner, clause, common = table[c]
                    patterns = st_eff[:, s] == owner
                    total = sum(sums[patterns, c, clause_moment(v, leg, 0)].sum() for leg in legs)
                    square = sum(sums[patterns, c, clause_moment(v, leg, 1)].sum() for leg in legs)
                    mean = total / n
                    var = max(square - total * total / n, 0.0) / (n - 1) if n > 1 else np.nan
                    se = self.sampler.standard_error(Moments(n, float(np.sqrt(var))))
                    who = ", ".join(self.parties[int(w)] for w in (cl.payer[c], cl.payee[c]) if w >= 0)
                    label = clause.label or f"{clause.type} ({who})"
                    if owner != s:  # a fallback's clause (on the paths where the structure falls back)
                        label = f"{label} [via {self.structures[owner]}]"
                    found.append({"structure": self.structures[s], "party": self.parties[p], "clause": label,
                                  "mean": mean, "se": se, "via": self.structures[owner], "common": common,
                                  "type": clause.type, "order": len(found)})
                whole = sum(r["mean"] for r in found)
                for r in found:
                    r["share"] = r["mean"] / whole if whole != 0 else np.nan
                rows.extend(found)
            df = pd.DataFrame(rows, columns=["structure", "party", "clause", "mean", "se", "share", "via", "common",
                                             "type", "order"]).set_index(["structure", "party", "clause"])
            df = df.sort_index()  # by name (MultiIndex lookups need it); ``order``: the kernel's order in each
            df.attrs.update(view=view, paths=n)
            self._cache[key] = df
        return self._cache[key].copy()

    # ---------------------------------------------------------------- out

    def where(self, view: str = "party", **conditions: Any) -> pd.DataFrame:
        """The summary on the paths that meet every condition (stress and conditional results, kept runs).

        Conditions (any number, all must hold):

        ``<source>_before=DATE`` / ``<source>_after=DATE``
            A timing source (``agi_declared``, ``agi_verified``, an event's name) on or before / after a date
            (``"2030-12-31"`` or a ``date``); "never" is after every date.
        ``deadline_met=NAME`` / ``deadline_missed=NAME``
            A deadline's outcome (a name, or a list of names).
        ``band=(SOURCE, LOW, HIGH)``
            Paths whose SOURCE lies between its LOW-th and HIGH-th percentiles (as @RISK's stress analysis): a
            driver (``revenue_at_horizon``, ``agi_declared``, ...) or an uncertain input (``"input:<key>"``).

        Returns the usual statistics per structure x party on those paths (``mean``, ``se``, ``sd``, ``p5`` ..
        ``p95``) and ``attrs``: ``share`` (of all paths), ``share_se``, ``paths`` (how many), ``condition``.
        A streaming run is refused: the paths that meet a condition must be there to be summarised.
        """
        from valuation.stats.catalogue import describe
        from valuation.stats.columns import KeptColumn

        if not self.kept_paths:
            raise InputError("", [Problem("where()", "a run with its paths kept (keep_paths=True): a condition picks "
                                          "paths, and a streaming run kept none", f"a streaming run of "
                                          f"{self.paths:,} paths")])
        if not conditions:
            raise InputError("", [Problem("where()", "at least one condition, e.g. agi_verified_before="
                                          "'2030-12-31', deadline_missed='notes_conversion' or band=("
                                          "'revenue_at_horizon', 0, 10)", has_value=False)])
        mask, said = self._condition_mask(conditions)
        n = int(mask.sum())
        if n < 2:
            raise InputError("", [Problem("where()", f"conditions that at least 2 paths meet; {n} of "
                                          f"{self.paths:,} do ({said})", has_value=False)])
        pv = self.view_pvs(view)[mask]
        rows = []
        for s, sname in enumerate(self.structures):
            for p, pname in enumerate(self.parties):
                rows.append({"structure": sname, "party": pname, **describe(KeptColumn(pv[:, s, p]), self.sampler)})
        frame = pd.DataFrame(rows).set_index(["structure", "party"])
        share = n / self.paths
        frame.attrs.update(share=share, share_se=self.sampler.share_error(share, self.paths), paths=n,
                           condition=said, view=view)
        return frame

    def _condition_mask(self, conditions: dict[str, Any]) -> tuple[np.ndarray, str]:
        drivers = self.drivers
        timing = [c for c in drivers.columns if not c.startswith("met:") and c != "revenue_at_horizon"]
        deadlines = [c[4:] for c in drivers.columns if c.startswith("met:")]
        mask = np.ones(self.paths, bool)
        said = []
        problems = []
        for name, value in conditions.items():
            if name.endswith(("_before", "_after")):
                source, side = name.rsplit("_", 1)
                if source not in timing:
                    problems.append(Problem(name, f"<source>_before or <source>_after with a source among {timing}",
                                            value))
                    continue
                try:
                    when = value if isinstance(value, date) else date.fromisoformat(str(value))
                except ValueError:
                    problems.append(Problem(name, "a date such as 2030-12-31", value))
                    continue
                t = self.scenario.years(when)
                x = drivers[source].to_numpy()
                mask &= (x <= t) if side == "before" else (x > t)
                said.append(f"{source} {'on or before' if side == 'before' else 'after'} {when}")
            elif name in ("deadline_met", "deadline_missed"):
                for d in [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) \
                        else [value]:
                    if d not in deadlines:
                        problems.append(Problem(name, f"a deadline among {deadlines}", d))
                        continue
                    met = drivers[f"met:{d}"].to_numpy()
                    mask &= met if name == "deadline_met" else ~met
                    said.append(f"{d} {'met' if name == 'deadline_met' else 'missed'}")
            elif name == "band":
                ok = isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str) and \
                    all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[1:]) and \
                    0 <= value[1] < value[2] <= 100
                if not ok:
                    problems.append(Problem(name, "(source, low percentile, high percentile), 0 <= low < high <= "
                                            "100", value))
                    continue
                x = self._band_source(value[0], problems)
                if x is None:
                    continue
                lo, hi = np.percentile(x, [value[1], value[2]])
                mask &= (x >= lo) & (x <= hi)
                said.append(f"{value[0]} between its P{value[1]:g} ({lo:.4g}) and P{value[2]:g} ({hi:.4g})")
            else:
                problems.append(Problem(name, "a condition: <source>_before, <source>_after, deadline_met, "
                                        "deadline_missed or band", value))
        if problems:
            raise InputError("where()", problems)
        return mask, "; ".join(said)

    def _band_source(self, name: str, problems: list[Problem]) -> np.ndarray | None:
        drivers = self.drivers
        if name in drivers.columns and not name.startswith("met:"):
            return drivers[name].to_numpy(dtype=np.float64)
        if name.startswith("input:") and self.uncertain:
            inputs = self.input_values()
            if name[6:] in inputs.columns:
                return inputs[name[6:]].to_numpy(dtype=np.float64)
        options = [c for c in drivers.columns if not c.startswith("met:")]
        if self.uncertain:
            options += [f"input:{k}" for k in self.input_values().columns]
        problems.append(Problem("band", f"a source among {options}", name))
        return None

    def attribution(self, bins: int | None = None) -> Any:
        """How much of each PV's variance each random source explains (first-order indices with standard
        errors) and the mean PV by decile of each source: :func:`valuation.analysis.attribution.attribution`."""
        from valuation.analysis.attribution import attribution

        return attribution(self, bins=bins)

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (see :mod:`valuation.report`); returns its path."""
        from valuation.arguments import path as path_argument
        from valuation.report import write_workbook

        return write_workbook(self, path_argument("to_excel()", "path", path, "the path of an .xlsx workbook"))

    def to_xarray(self) -> Any:
        """The run as an ``xarray.Dataset`` with named dimensions (needs ``pip install 'agi-deal-valuation[xarray]'``).

        ``pv`` (path, structure, party) and the per-path drivers (kept runs; a streaming run has its first
        paths only, as ``head_pv`` ...), ``expected_flow`` (structure, party, discount_class, slot: undiscounted
        USD bn; each slot's ``date`` and ``years``) with each class's ``rate``, and ``mean``/``se``.
        """
        try:
            import xarray as xr
        except ImportError:  # an optional extra
            raise ImportError("to_xarray() needs xarray: pip install 'agi-deal-valuation[xarray]'") from None
        summary = self.summary()
        classes = [f"{self.parties[c]}" if c < len(self.parties) else f"clause rate {self.class_rates[c]:.4%}"
                   for c in range(len(self.class_rates))]
        coords: dict[str, Any] = {"structure": self.structures, "party": self.parties}
        data = {  # flows by slot: the step ends, then one-off dates (a date may come twice: a step end and a stake)
            "expected_flow": (("structure", "party", "discount_class", "slot"), self.cash_flows),
            "rate": (("discount_class",), self.class_rates),
            "mean": (("structure", "party"), summary["mean"].to_numpy().reshape(len(self.structures), -1)),
            "se": (("structure", "party"), summary["se"].to_numpy().reshape(len(self.structures), -1)),
        }
        frame, pv = (self.drivers, self.pvs) if self.kept_paths else self.head()
        prefix = "" if self.kept_paths else "head_"
        data[f"{prefix}pv"] = ((f"{prefix}path", "structure", "party"), pv)
        for name in frame.columns:
            data[f"{prefix}{name}"] = ((f"{prefix}path",), frame[name].to_numpy())
        coords[f"{prefix}path"] = frame.index.to_numpy()
        coords["discount_class"] = classes
        coords["slot"] = np.arange(len(self.slot_time))
        coords["date"] = ("slot", np.array([np.datetime64(d, "D") for d in self.slot_dates()]))
        coords["years"] = ("slot", self.slot_time)
        return xr.Dataset(data, coords=coords, attrs={
            "scenario": self.scenario.name, "paths": self.paths, "first_path": self.first_path,
            "seed": "" if self.seed is None else self.seed, "entropy": str(self.entropy), "sampler": self.sampler.name,
            "paths_kept": int(self.kept_paths), "units": "USD bn at the valuation date (pv); USD bn (expected_flow)"})


HORIZON_COLUMN = "At horizon"


def annual_cash_flows(result: SimulationResult) -> pd.DataFrame:
    """See :meth:`SimulationResult.annual_cash_flows`."""
    return result.annual_cash_flows()


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
    years = list(range(scenario.simulation.valuation_date.year, scenario.simulation.horizon.year + 1))
    return years, np.array([scenario.years(date(y, 12, 31)) for y in years])


@dataclass
class PartyTables:
    """One party's distribution under every structure (computed once from its columns).

    ``stats[s]``: the catalogue's statistics of structure ``s``; ``edges``: histogram bin edges shared by the
    structures (from the lowest 0.5th to the highest 99.5th percentile; paths beyond fall in the end bins);
    ``freq[b, s]``: share of paths in bin ``b``; ``percentiles[i, s]``: the ``i+1``-th percentile.
    """

    stats: list[dict[str, float]]
    edges: np.ndarray
    freq: np.ndarray
    percentiles: np.ndarray


def party_tables(columns: list[Any], sampler: Sampler) -> PartyTables:
    """Statistics and histograms of one party's columns (one per structure), kept or streamed alike."""
    stats = [describe(c, sampler) for c in columns]
    grid = np.array([c.quantiles(QUANTILE_GRID) for c in columns]).T  # (grid, structures)
    lo, hi = float(grid[0].min()), float(grid[-1].max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    freq = np.empty((HISTOGRAM_BINS, len(columns)))
    for s, c in enumerate(columns):
        below = c.below(edges[1:-1])
        freq[:, s] = np.diff(np.concatenate(([0], below, [c.n]))) / c.n
    return PartyTables(stats, edges, freq, grid[1:-1])
