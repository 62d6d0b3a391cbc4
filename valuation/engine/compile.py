"""Compile a validated scenario, once, into the named tables the kernel reads (:mod:`valuation.engine.tables`).

Nothing here runs per path.  The kernel never sees a Python object: clause codes and each kind's parameters
(from the clause registry), rate tables averaged over each step, trigger terms, discount factors per step and
the margin per step all become numpy arrays.  Each named random source (an event, a deadline's completion)
gets its own counter words from its name (:func:`models.rng.named_counter`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from datetime import date as Date
from datetime import timedelta
from typing import Any

import numpy as np

from models import rng, timing
from models._jit import python_version
from models.revenue import UPLIFT, RevenueModel, jump_tail
from valuation import keys
from valuation.engine import fits
from valuation.engine import uncertain as uncertain_inputs
from valuation.engine.tables import (
    COND_DEADLINE,
    COND_EVENT,
    MAX_TERMS,
    TERM_DATE,
    TERM_UNUSED,
    ClauseTables,
    Compiled,
    DriverTables,
    ModelTables,
    TriggerTables,
    empty_params,
)
from valuation.errors import InputError, Problem
from valuation.scenario import timing as timing_tables
from valuation.scenario.base import EventOffset
from valuation.scenario.clauses import kind_of, risk_class
from valuation.scenario.schema import Revenue, Scenario


def compile_scenario(s: Scenario, *, undiscounted: bool = False, uncertain: bool = False) -> Compiled:
    """Compile a validated scenario.

    Parameters
    ----------
    s
        A scenario from :func:`valuation.load_scenario`.
    undiscounted
        Use zero discount rates everywhere (for conservation checks).
    uncertain
        Draw the inputs with a distribution once per path (:mod:`valuation.engine.uncertain`); otherwise every
        input is its value.
    """
    sim = s.simulation
    t = time_grid(s.horizon_years, sim.steps_per_year)
    dt = np.concatenate(([0.0], np.diff(t)))
    model = revenue_model(s.revenue)
    _check_overflow(s, model, t)
    fits: dict[str, Any] = {}
    drivers, sources, src_index = _drivers(s, t, fits)
    parties = s.party_names()
    clauses, triggers, class_payer, class_payee, class_rates, slot_time = _clauses(s, t, src_index, undiscounted)
    years, _, _ = calendar_years(s, t)
    tables = _model(s, model, t, dt, drivers, undiscounted)
    timing_sources = ["agi.declaration", "agi.verification_lag", *[keys.join("events", n) for n in s.events],
                      *[f"deadlines[{i}].completion" for i, d in enumerate(s.deadlines) if d.completion is not None]]
    plan = None
    inputs = uncertain_inputs.no_inputs(len(t) - 1, len(timing_sources))
    if uncertain and uncertain_inputs.dist_inputs(s):
        _check_overflow(s, revenue_model(_corner(s)), t, " (with the uncertain inputs at their highest draws)")
        plan = uncertain_inputs.plan(s, t, tables, timing_sources, *_margin_weights(s, t), _jump_columns(s, dt))
        inputs = plan.tables
    return Compiled(
        structures=s.structure_names(), parties=parties, deadlines=[d.name for d in s.deadlines], sources=sources,
        model=tables, drivers=drivers, clauses=clauses, triggers=triggers,
        views=["party", "market"] if s.market is not None else ["party"], years=years,
        class_payer=class_payer, class_payee=class_payee, class_rates=class_rates, slot_time=slot_time, fits=fits,
        inputs=inputs, plan=plan)


def _margin_weights(s: Scenario, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each step's average margin as weights of the margin points (it is linear in them), and the points."""
    margin = s.revenue.margin
    if not isinstance(margin, tuple):
        return np.ones((len(t), 1)), np.array([float(margin)])
    xs = np.array([s.years(p.date) for p in margin])
    weights = np.column_stack([step_average(xs, np.eye(len(margin))[j], t, linear=True) for j in range(len(margin))])
    return weights, np.array([p.margin for p in margin])


def _jump_columns(s: Scenario, dt: np.ndarray) -> int:
    """Columns of jump-count tails the largest uncertain jump intensity needs (1 when it is fixed)."""
    r = s.ranges.get("revenue.jump_intensity")
    if r is None or r.dist is None:
        return 1
    top = _highest(s, "revenue.jump_intensity")
    return int(jump_tail(np.array([top * float(dt.max())])).shape[1])


def _highest(s: Scenario, key: str, lowest: bool = False) -> float:
    """An uncertain input's highest (or lowest) draw, as the envelope sees it: its bound, or (normal, lognormal)
    ENVELOPE_SDS standard deviations out, inside its allowed range."""
    r = s.ranges[key]
    lo, hi = uncertain_inputs.cut_range(s, key, r)
    if r.dist in ("normal", "lognormal"):
        mu, sd, log = uncertain_inputs.normal_parameters(r)
        x = mu + (-1 if lowest else 1) * ENVELOPE_SDS * sd
        x = math.exp(x) if log else x
        return float(min(max(x, lo), hi))
    return lo if lowest else hi


def _corner(s: Scenario) -> Any:
    """The revenue table with each uncertain number at the end of its draws that raises revenue most."""
    changes = {}
    for name in ("initial", "initial_growth", "long_run_growth", "volatility", "growth_volatility",
                 "agi_growth_uplift", "exit_multiple", "market_size"):
        key = f"revenue.{name}"
        r = s.ranges.get(key)
        if r is not None and r.dist is not None:
            changes[name] = _highest(s, key)
    r = s.ranges.get("revenue.mean_reversion")
    if r is not None and r.dist is not None and s.revenue.initial_growth > s.revenue.long_run_growth:
        changes["mean_reversion"] = _highest(s, "revenue.mean_reversion", lowest=True)
    if "market_size" in changes and "initial" in changes:
        changes["market_size"] = max(changes["market_size"], changes["initial"] * 1.000001)
    return s.revenue.model_copy(update=changes) if changes else s.revenue


def calendar_years(s: Scenario, t: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The calendar years from the valuation date's to the horizon's; per step, the index of the year it starts
    in and where (as a fraction of the step) up to two new years start inside it (nan: none)."""
    t0, horizon = s.simulation.valuation_date, s.simulation.horizon
    years = list(range(t0.year, horizon.year + 1))
    starts = np.array([s.years(Date(y, 1, 1)) for y in years[1:]])  # 1 January of each later year, model years
    first = np.zeros(len(t), np.int64)
    cut = np.full((len(t), 2), np.nan)
    for k in range(1, len(t)):
        a, b = t[k - 1], t[k]
        first[k] = int(np.searchsorted(starts, a, side="right"))  # years begun by the step's start
        inside = starts[(starts > a) & (starts < b)]
        cut[k, : len(inside)] = (inside - a) / (b - a)
    return years, first, cut


def _model(s: Scenario, model: RevenueModel, t: np.ndarray, dt: np.ndarray, drivers: DriverTables,
           undiscounted: bool = False) -> ModelTables:
    """The world along the grid; the uplift and haircut tables bit for bit what the kernel would compute."""
    tables = model.step_tables(dt)
    rev = s.revenue
    if isinstance(rev.margin, tuple):
        xs = np.array([s.years(p.date) for p in rev.margin])
        margin = step_average(xs, np.array([p.margin for p in rev.margin]), t, linear=True)
    else:
        margin = np.full(len(t), float(rev.margin))
    params = model.params()
    a, b, h = t[:-1], t[1:], dt[1:]
    uplift_full = np.zeros(len(t))
    uplift_full[1:] = params[UPLIFT] * (b - a) / h
    haircut_end = drivers.dl_haircut_end
    haircut_steps = np.zeros((len(s.deadlines), len(t)))
    for d in range(len(s.deadlines)):
        left = np.where(a > drivers.dl_date[d], a, drivers.dl_date[d])
        right = np.where(b < haircut_end[d], b, haircut_end[d])
        ov = np.where(right > left, right - left, 0.0)
        haircut_steps[d, 1:] = drivers.dl_haircut[d] * ov / h
    if s.market is not None:  # a step's profit at the step's middle, then the exit value at the horizon
        rate = 0.0 if undiscounted else s.market.rates[s.market.company_class]
        company_df = discount_factors(np.array([rate]), np.append(flow_times(t), t[-1]))[0]
    else:
        company_df = np.full(len(t) + 1, np.nan)
    _, year_first, year_cut = calendar_years(s, t)
    return ModelTables(t=t, dt=dt, sqrt_dt=tables["sqrt_dt"], growth_decay=tables["growth_decay"],
                       growth_mean=tables["growth_mean"], int_z1=tables["int_z1"], int_z2=tables["int_z2"],
                       growth_z1=tables["growth_z1"], growth_z2=tables["growth_z2"], growth_z3=tables["growth_z3"],
                       jump_tail=tables["jump_tail"], margin=margin, revenue=params, uplift_full=uplift_full,
                       haircut_steps=haircut_steps, company_df=company_df, year_first=year_first,
                       year_cut=year_cut)


def _drivers(s: Scenario, t: np.ndarray, fits: dict[str, Any]) -> tuple[DriverTables, list[str], dict[str, int]]:
    """AGI timing, the named sources (events, then deadline completions) and the deadlines."""

    def dist(spec: Any, key: str, absolute: bool) -> tuple[int, np.ndarray]:
        try:
            d, fit = build_timing(spec, s, absolute)
        except ValueError as exc:  # a combination the schema's checks let through
            raise InputError(s.path or "<scenario>", [Problem(key, str(exc), has_value=False)]) from None
        if fit is not None:
            fits[key] = fit
        return d.to_params()

    decl_code, decl_par = dist(s.agi.declaration, "agi.declaration", True)
    lag_code, lag_par = dist(s.agi.verification_lag, "agi.verification_lag", False)
    sources = ["agi_declared", "agi_verified"]
    ev, counters = [], []
    for name, spec in s.events.items():
        sources.append(name)
        ev.append(dist(spec, keys.join("events", name), True))
        counters.append(rng.named_counter(f"event:{name}"))
    src_index = {name: i for i, name in enumerate(sources)}
    D = len(s.deadlines)
    dl_src = np.full((D, MAX_TERMS), TERM_UNUSED, np.int64)
    for d, dl in enumerate(s.deadlines):
        if dl.completion is not None:
            src_index[f"deadline:{dl.name}"] = len(sources)
            sources.append(f"deadline:{dl.name}")
            ev.append(dist(dl.completion, f"deadlines[{d}].completion", True))
            counters.append(rng.named_counter(f"deadline:{dl.name}"))
            names = [f"deadline:{dl.name}"]
        else:
            names = list(dl.events or ())
        dl_src[d, : len(names)] = [src_index[n] for n in names]
    if len(set(counters)) < len(counters):  # two names with one counter: about 1 in 1e19 for a pair
        raise InputError(s.path or "<scenario>", "two random sources (events or deadline completions) share a "
                                                 "counter; expected distinct names: rename one of them")
    deadline_index = {dl.name: i for i, dl in enumerate(s.deadlines)}
    structures = s.structure_names()
    struct_index = {n: i for i, n in enumerate(structures)}
    requires = np.array([deadline_index[st.requires] if st.requires else -1 for st in s.structures], np.int64)
    fallback = np.array([struct_index[st.fallback] if st.fallback else -1 for st in s.structures], np.int64)
    req = np.array(sorted({int(r) for r in requires if r >= 0}), np.int64)
    st_eff = np.empty((2 ** len(req), len(structures)), np.int64)
    for pattern in range(st_eff.shape[0]):
        met = {int(d): bool(pattern >> q & 1) for q, d in enumerate(req)}
        for i in range(len(structures)):
            j = i
            while requires[j] >= 0 and not met[int(requires[j])]:
                j = fallback[j]
            st_eff[pattern, i] = j
    st_used = np.zeros(st_eff.shape, np.uint8)
    for pattern in range(st_eff.shape[0]):
        st_used[pattern, st_eff[pattern]] = 1
    drivers = DriverTables(
        decl_code=int(decl_code), decl_par=decl_par, lag_code=int(lag_code), lag_par=lag_par,
        never_verified=float(s.agi.never_verified), ev_code=np.array([c for c, _ in ev], np.int64),
        ev_par=np.array([p for _, p in ev], np.float64).reshape(len(ev), timing.N_PARAMS),
        ev_stream=np.array([c[0] for c in counters], np.int64), ev_draw=np.array([c[1] for c in counters], np.int64),
        dl_date=np.array([s.years(dl.date) for dl in s.deadlines], np.float64), dl_src=dl_src,
        dl_haircut=np.array([dl.growth_haircut for dl in s.deadlines], np.float64),
        dl_haircut_end=np.array([s.years(d.date) + (d.haircut_years if d.haircut_years is not None else math.inf)
                                 for d in s.deadlines], np.float64), req_deadlines=req,
        st_eff=st_eff, st_used=st_used)
    return drivers, sources, src_index


class _Grid:
    """What a clause kind's ``fill`` may use (see :class:`valuation.scenario.clauses.ClauseKind`)."""

    def __init__(self, s: Scenario, t: np.ndarray):
        self.t, self._s = t, s

    def years(self, when: Date) -> float:
        return self._s.years(when)

    def step_average(self, xs: np.ndarray, ys: np.ndarray, linear: bool, before: float | None = None) -> np.ndarray:
        return step_average(xs, ys, self.t, linear, before)


def _clauses(s: Scenario, t: np.ndarray, src_index: dict[str, int], undiscounted: bool):
    """The clause tables (each kind's parameters from its registry entry) and the cash-flow layout."""
    parties = s.party_names()
    party_index = {p: i for i, p in enumerate(parties)}
    deadline_index = {dl.name: i for i, dl in enumerate(s.deadlines)}
    rates: list[float] = []

    def rate_row(r: float) -> int:
        r = 0.0 if undiscounted else r
        if r not in rates:
            rates.append(r)
        return rates.index(r)

    party_row = [rate_row(s.parties[p].discount_rate) for p in parties]
    market = s.market.rates if s.market is not None else None
    flat = [(i, c) for i, st in enumerate(s.structures) for c in [*st.clauses, *s.common_clauses]]
    C = len(flat)
    grid = _Grid(s, t)
    cl = {
        "kind": np.zeros(C, np.int64), "one_off": np.zeros(C, np.uint8), "structure": np.zeros(C, np.int64),
        "payer": np.full(C, -1, np.int64), "payee": np.full(C, -1, np.int64), "df_payer": np.zeros(C, np.int64),
        "df_payee": np.zeros(C, np.int64), "cond_kind": np.zeros(C, np.int64), "cond_index": np.zeros(C, np.int64),
        "cond_wanted": np.zeros(C, np.int64), "cond_date": np.zeros(C), "df_market": np.zeros(C, np.int64),
        "in_market": np.zeros(C, np.uint8), **empty_params(C, len(t)),
    }
    term_src = np.full((C, 2, MAX_TERMS), TERM_UNUSED, np.int64)
    term_val = np.zeros((C, 2, MAX_TERMS))
    time_at = np.full(C, np.nan)
    for c, (si, clause) in enumerate(flat):
        kind = kind_of(clause)
        cl["kind"][c] = kind.code
        cl["one_off"][c] = kind.books != "steps"
        cl["structure"][c] = si
        giver, getter = kind.roles
        payer = getattr(clause, giver) if giver is not None else None
        payee = getattr(clause, getter)
        if payer is not None:
            cl["payer"][c] = party_index[payer]
        cl["payee"][c] = party_index[payee]
        if clause.discount_rate is not None:
            cl["df_payer"][c] = cl["df_payee"][c] = rate_row(clause.discount_rate)
        else:
            cl["df_payer"][c] = party_row[party_index[payer]] if payer is not None else 0
            cl["df_payee"][c] = party_row[party_index[payee]]
        if market is not None and giver is not None:  # a transfer; own value is what one party believes
            cl["df_market"][c] = rate_row(market[risk_class(clause)])
            cl["in_market"][c] = 1
        for w, which in enumerate(("start", "end")):
            for m, term in enumerate(getattr(clause, which, None) or ()):
                term_src[c, w, m], term_val[c, w, m] = _term(term, s, src_index)
        cond = getattr(clause, "condition", None)
        if cond is not None:
            if cond.deadline is not None:
                cl["cond_kind"][c], cl["cond_index"][c] = COND_DEADLINE, deadline_index[cond.deadline]
            else:
                cl["cond_kind"][c], cl["cond_index"][c] = COND_EVENT, src_index[cond.event]
                cl["cond_date"][c] = s.years(cond.before)
            cl["cond_wanted"][c] = int(cond.met)
        for name, value in kind.fill(clause, grid).items():
            cl[name][c] = value
        if kind.books == "horizon":
            time_at[c] = t[-1]
        elif kind.books == "date":
            time_at[c] = s.years(clause.date)

    rates_arr = np.array(rates, np.float64)
    df = discount_factors(rates_arr, flow_times(t))  # a step's flows are dated at its middle
    time_df = np.ones((C, 2))
    time_df_market = np.ones(C)
    for c in range(C):
        if not math.isnan(time_at[c]):
            time_df[c, 0] = (1.0 + rates_arr[cl["df_payer"][c]]) ** (-time_at[c])
            time_df[c, 1] = (1.0 + rates_arr[cl["df_payee"][c]]) ** (-time_at[c])
            time_df_market[c] = (1.0 + rates_arr[cl["df_market"][c]]) ** (-time_at[c])

    # Expected cash flows are kept by discount class (a party's own rate, or a clause's rate) and time slot.
    override_rates = sorted({c.discount_rate for _, c in flat if c.discount_rate is not None})
    class_rates = np.array([s.parties[p].discount_rate for p in parties] + override_rates, np.float64)
    class_payer = np.zeros(C, np.int64)
    class_payee = np.zeros(C, np.int64)
    one_off_times = sorted({float(x) for x in time_at if not math.isnan(x)})
    slot_time = np.concatenate((flow_times(t), np.array(one_off_times, np.float64)))
    slot = np.full(C, -1, np.int64)
    for c, (_, clause) in enumerate(flat):
        if clause.discount_rate is not None:
            class_payer[c] = class_payee[c] = len(parties) + override_rates.index(clause.discount_rate)
        else:
            class_payer[c] = max(cl["payer"][c], 0)
            class_payee[c] = cl["payee"][c]
        if not math.isnan(time_at[c]):
            slot[c] = len(t) + one_off_times.index(float(time_at[c]))
    trigger, trig_src, trig_val = _distinct_triggers(term_src, term_val)
    rank: dict[int, int] = {}
    turns = []
    for c, st in enumerate(cl["structure"].tolist()):
        rank[st] = rank.get(st, -1) + 1
        turns.append((rank[st], st, c))
    clauses = ClauseTables(**cl, time_df=time_df, time_df_market=time_df_market, df=df, slot=slot, trigger=trigger,
                           order=np.array([c for _, _, c in sorted(turns)], np.int64))
    fixed = np.all((trig_src == TERM_DATE) | (trig_src == TERM_UNUSED), axis=1).astype(np.uint8)
    return clauses, TriggerTables(src=trig_src, val=trig_val, fixed=fixed), class_payer, class_payee, \
        class_rates, slot_time


def _distinct_triggers(term_src: np.ndarray, term_val: np.ndarray):
    """Each clause's start and end as indices into the distinct triggers (term lists) of all clauses."""
    index: dict[tuple, int] = {}
    trigger = np.zeros((term_src.shape[0], 2), np.int64)
    for c in range(term_src.shape[0]):
        for w in range(2):
            key = (tuple(term_src[c, w].tolist()), tuple(term_val[c, w].tolist()))
            trigger[c, w] = index.setdefault(key, len(index))
    src = np.array([k[0] for k in index], np.int64).reshape(len(index), term_src.shape[2])
    val = np.array([k[1] for k in index], np.float64).reshape(len(index), term_src.shape[2])
    return trigger, src, val


def flow_times(t: np.ndarray) -> np.ndarray:
    """When the flows of each step fall, for discounting: the step's middle (revenue is earned through the step;
    dating it at the step's end would understate its value by about half a step's interest).  Entry 0: t[0]."""
    mid = np.empty(len(t))
    mid[0] = t[0]
    mid[1:] = 0.5 * (t[:-1] + t[1:])
    return mid


def time_grid(horizon_years: float, steps_per_year: int) -> np.ndarray:
    """Step end times 0, h, 2h, ..., H (the last step may be shorter)."""
    n = max(1, math.ceil(horizon_years * steps_per_year - 1e-9))
    t = np.arange(n + 1, dtype=np.float64) / steps_per_year
    t[-1] = horizon_years
    return t


def step_average(xs: np.ndarray, ys: np.ndarray, t: np.ndarray, linear: bool, before: float | None = None
                 ) -> np.ndarray:
    """Average of a schedule over each step (t[k-1], t[k]]; entry 0 is the value at t[0].

    ``linear``: straight lines between points; otherwise each value holds from
    its point to the next.  After the last point the last value holds; before
    the first, ``before`` (``None``: the first value).
    """
    first = ys[0] if before is None else before
    out = np.empty(len(t))
    out[0] = first if t[0] < xs[0] else _value(xs, ys, t[0], linear)
    for k in range(1, len(t)):
        a, b = t[k - 1], t[k]
        cuts = np.concatenate(([a], xs[(xs > a) & (xs < b)], [b]))
        area = 0.0
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            if hi <= xs[0]:
                area += first * (hi - lo)
            elif linear:
                area += 0.5 * (np.interp(lo, xs, ys) + np.interp(hi, xs, ys)) * (hi - lo)
            else:
                area += _value(xs, ys, lo, False) * (hi - lo)
        out[k] = area / (b - a)
    return out


def _value(xs: np.ndarray, ys: np.ndarray, x: float, linear: bool) -> float:
    if linear:
        return float(np.interp(x, xs, ys))
    return float(ys[max(int(np.searchsorted(xs, x, side="right")) - 1, 0)])


def discount_factors(rates: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``(1 + rates[i]) ** -times[j]``, each by the C library's ``pow``: numpy's array power takes a SIMD path on
    CPUs with AVX-512 whose last bits differ from other machines', and these tables feed every path."""
    return np.array([[math.pow(1.0 + r, -x) for x in times.tolist()] for r in rates.tolist()], np.float64)


def build_timing(spec: Any, scenario: Scenario, absolute: bool) -> tuple[Any, Any]:
    """A scenario timing table → a ``models.timing`` distribution (and its quantile fit, if any)."""

    def years(x: Date | float) -> float:
        return scenario.years(x) if isinstance(x, Date) else float(x)

    start = years(spec.start) if spec.start is not None else 0.0
    common = {"start": start, "never": spec.never}
    if isinstance(spec, timing_tables.ExponentialTiming):
        return timing.Exponential(spec.rate, **common), None
    if isinstance(spec, timing_tables.WeibullTiming):
        return timing.Weibull(spec.shape, spec.scale, **common), None
    if isinstance(spec, timing_tables.LognormalTiming):
        return timing.Lognormal(spec.median, spec.sigma, **common), None
    if isinstance(spec, timing_tables.GompertzTiming):
        return timing.Gompertz(spec.rate, spec.growth, **common), None
    if isinstance(spec, timing_tables.FixedTiming):
        return timing.Fixed(spec.after, **common), None
    if isinstance(spec, timing_tables.PiecewiseTiming):
        starts = [years(p.start) - start for p in spec.pieces]
        hazards = [p.hazard for p in spec.pieces]
        if starts[0] > 0:
            starts, hazards = [0.0, *starts], [0.0, *hazards]
        return timing.PiecewiseHazard(tuple(starts), tuple(hazards), **common), None
    by, probs = [years(p.by) for p in spec.points], [p.p for p in spec.points]
    fit = timing.fit_quantiles(by, probs, family=spec.fit, start=start, never=spec.never, tail=spec.tail)
    if spec.fit in FITTED_FAMILIES:
        fit = _deterministic_fit(fit, spec.fit, start, spec.never)
    return fit.distribution, fit


FITTED_FAMILIES = {"exponential": (timing.EXPONENTIAL, timing.Exponential), "weibull": (timing.WEIBULL, timing.Weibull),
                   "lognormal": (timing.LOGNORMAL, timing.Lognormal)}


@functools.cache
def _fit_family_python():
    return python_version(fits.fit_family)


def _deterministic_fit(fit: Any, family: str, start: float, never: float) -> Any:
    """The fit's parameters by :func:`valuation.engine.fits.fit_family`, the fitter of the paths' own tables, in
    place of scipy's: scipy's least squares goes through the BLAS, whose kernels (chosen by CPU) round differently
    from machine to machine, and the parameters feed every path.  The same minimum (both to rounding, the tests hold
    this one to 1e-13 of a 40-digit Newton), and the same bits on any machine.  Its Python code (the same bits as
    the compiled one, a fraction of a millisecond): validating a scenario compiles nothing."""
    code, law = FITTED_FAMILIES[family]
    r = np.array(fit.times, np.float64) - start
    p = np.array(fit.probs, np.float64)
    out = np.zeros(2)
    _fit_family_python()(code, len(r), p, r, np.array([math.log(x) for x in r.tolist()]), never, out,
                         np.zeros((14, len(r))))
    dist = law(*out[:1 if code == timing.EXPONENTIAL else 2], start=start, never=never)
    residual = float(np.max(np.abs(dist.cdf(np.array(fit.times)) - p)))
    return dataclasses.replace(fit, distribution=dist, residual=residual)


PV_LIMIT = 1e12  # USD bn: beyond this a PV is an overflow, not a valuation
ENVELOPE_SDS = 6.0  # standard deviations above the mean path that must stay below PV_LIMIT (P ~ 1e-9 a path)


def _check_overflow(s: Scenario, model: RevenueModel, t: np.ndarray, note: str = "") -> None:
    """Reject inputs whose revenue (times the largest discount factor) could overflow, before any path runs.

    Revenue ``ENVELOPE_SDS`` standard deviations above its mean path, discounted at the lowest rate in the
    scenario and summed over the horizon plus the exit multiple, must stay below :data:`PV_LIMIT`.  A path
    beyond the envelope (about 1e-9 of them) that does overflow is still caught, with its index, after the run.
    """
    rates = [p.discount_rate for p in s.parties.values()]
    rates += [c.discount_rate for st in s.structures for c in [*st.clauses, *s.common_clauses]
              if c.discount_rate is not None]
    rates += list(s.market.rates.values()) if s.market is not None else []
    with np.errstate(over="ignore"):
        log_pv = model.log_envelope(t, ENVELOPE_SDS) - np.log1p(min(rates)) * t \
            + math.log(t[-1] + model.exit_multiple + 1.0)
    k = int(np.argmax(log_pv))
    if not log_pv[k] > math.log(PV_LIMIT):
        return
    when = s.simulation.valuation_date + timedelta(days=round(t[k] * 365.25))
    low = min(rates)
    rate = f", a discount rate as low as {low!r}" if low < 0 else ""
    raise InputError(s.path or "<scenario>", [Problem(
        "revenue", f"{ENVELOPE_SDS:g} standard deviations above its mean path{note}, discounted revenue reaches "
        f"{_size(log_pv[k])} USD bn by {when}, so PVs could overflow (limit {PV_LIMIT:.0e}); expected "
        f"smaller growth (initial_growth {model.initial_growth:g}, long_run_growth {model.long_run_growth:g}, "
        f"agi_growth_uplift {model.agi_growth_uplift:g}), volatility ({model.volatility:g}, growth_volatility "
        f"{model.growth_volatility:g}){rate} or a nearer horizon ({s.simulation.horizon})", has_value=False)])


def revenue_model(rev: Revenue) -> RevenueModel:
    """The revenue process of a scenario's ``[revenue]`` table."""
    return RevenueModel(rev.initial, rev.initial_growth, rev.long_run_growth, rev.mean_reversion, rev.volatility,
                        rev.growth_volatility, rev.correlation, rev.jump_intensity, rev.jump_loss,
                        rev.agi_growth_uplift, rev.exit_multiple,
                        math.inf if rev.market_size is None else rev.market_size)


def _size(log_value: float) -> str:
    """``exp(log_value)`` for a message, without overflowing."""
    return f"about {math.exp(log_value):.1e}" if log_value < 690 else "more than 1e+300"


def _term(term: Any, s: Scenario, src_index: dict[str, int]) -> tuple[int, float]:
    """One trigger term → (source index or TERM_DATE, offset or date in years)."""
    if isinstance(term, Date):
        return TERM_DATE, s.years(term)
    if isinstance(term, EventOffset):
        return src_index[term.event], term.plus_years
    if term == "valuation_date":
        return TERM_DATE, 0.0
    if term == "never":
        return TERM_DATE, math.inf
    return src_index[term], 0.0
