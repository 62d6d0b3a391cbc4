"""Compile a validated scenario, once, into the flat arrays the kernel reads.

Nothing here runs per path.  The kernel never sees a Python object: clause
type codes, parameters, rate tables averaged over each step, trigger terms,
discount factors per step and the margin per step all become numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import timedelta
from functools import cached_property
from typing import Any

import numpy as np

from models import timing
from models.revenue import UPLIFT, RevenueModel
from valuation import keys
from valuation import scenario as sc
from valuation.errors import InputError, Problem

# Clause type codes (the kernel's switch).
REVENUE_SHARE, PROFIT_SHARE, EQUITY_STAKE, PAYMENT, OWN_VALUE = range(5)
CLAUSE_CODES = {"revenue_share": REVENUE_SHARE, "profit_share": PROFIT_SHARE, "equity_stake": EQUITY_STAKE,
                "payment": PAYMENT, "own_value": OWN_VALUE}

# Time sources: per-path random times a trigger or deadline can refer to.
SRC_DECLARED, SRC_VERIFIED = 0, 1
FIRST_EVENT = 2
TERM_DATE, TERM_UNUSED = -1, -2
MAX_TERMS = max(sc.MAX_TRIGGER_TERMS, sc.MAX_DEADLINE_EVENTS)
MAX_TIERS = sc.MAX_TIERS
# Condition kinds.
COND_NONE, COND_DEADLINE, COND_EVENT = 0, 1, 2


@dataclass
class Compiled:
    """The scenario as arrays (see the kernel for how each is read)."""

    structures: list[str]
    parties: list[str]
    deadlines: list[str]
    sources: list[str]  # names of the per-path random times
    t: np.ndarray  # (K+1,) step end times, years; t[0] = 0
    dt: np.ndarray  # (K+1,) step lengths; dt[0] = 0
    sqrt_dt: np.ndarray
    growth_decay: np.ndarray
    growth_shock: np.ndarray
    jump_prob: np.ndarray
    margin: np.ndarray  # (K+1,) operating margin averaged over each step
    revenue: np.ndarray  # revenue model scalars, models.revenue layout
    decl_code: int
    decl_par: np.ndarray
    lag_code: int
    lag_par: np.ndarray
    never_verified: float
    ev_code: np.ndarray  # (E,)
    ev_par: np.ndarray  # (E, N_PARAMS)
    dl_date: np.ndarray  # (D,)
    dl_src: np.ndarray  # (D, MAX_TERMS) source indices, -2 unused
    dl_haircut: np.ndarray  # (D,)
    dl_haircut_end: np.ndarray  # (D,)
    cl_type: np.ndarray  # (C,)
    cl_struct: np.ndarray
    cl_payer: np.ndarray  # party index, -1 for none (own value)
    cl_payee: np.ndarray
    cl_df_payer: np.ndarray  # row of `df` discounting the payer's leg
    cl_df_payee: np.ndarray
    cl_term_src: np.ndarray  # (C, 2, MAX_TERMS): [start, end] terms
    cl_term_val: np.ndarray
    cl_rate: np.ndarray  # (C, K+1) rate averaged over each step (x base fraction)
    cl_par: np.ndarray  # (C, 4) type-specific scalars
    cl_tier_rate: np.ndarray  # (C, MAX_TIERS)
    cl_tier_until: np.ndarray
    cl_cond: np.ndarray  # (C, 3) int: kind, index, wanted outcome (1 = met/before)
    cl_cond_date: np.ndarray  # (C,) years
    cl_time_df: np.ndarray  # (C, 2) discount factors at the payment date / horizon
    df: np.ndarray  # (R, K+1) discount factors per rate row
    rates: np.ndarray  # (R,)
    st_requires: np.ndarray  # (S,) deadline index or -1
    st_fallback: np.ndarray  # (S,) structure index or -1
    req_deadlines: np.ndarray  # (Q,) deadlines some structure requires
    st_eff: np.ndarray  # (2**Q, S): structure that applies, by pattern of those deadlines met (bit q)
    cl_class_payer: np.ndarray  # (C,) discount class of each leg (for expected cash flows)
    cl_class_payee: np.ndarray
    cl_slot: np.ndarray  # (C,) time slot of a one-off clause (payment date / horizon), -1 per step
    class_rates: np.ndarray  # (n_class,) classes 0..P-1: each party's own rate; then clause rates
    slot_time: np.ndarray  # (K+1+J,) years: the step ends, then the one-off dates
    fits: dict[str, Any] = field(default_factory=dict)  # quantile fits by key path

    @property
    def n_steps(self) -> int:
        return len(self.t) - 1

    def kernel_args(self) -> tuple:
        """Arguments of :func:`valuation.engine._run_block` after the path range: the model, driver and
        clause tables as three tuples (the kernel unpacks them in this order), then the number of parties."""
        uplift_full, haircut_steps, st_used, cl_trigger, trig_src, trig_val, trig_fixed, cl_order = self._derived
        model = (self.t, self.dt, self.sqrt_dt, self.growth_decay, self.growth_shock, self.jump_prob, self.margin,
                 self.revenue, uplift_full, haircut_steps)
        drivers = (self.decl_code, self.decl_par, self.lag_code, self.lag_par, self.never_verified, self.ev_code,
                   self.ev_par, self.dl_date, self.dl_src, self.dl_haircut, self.req_deadlines, self.st_eff, st_used)
        clauses = (self.cl_type, self.cl_struct, self.cl_payer, self.cl_payee, self.cl_df_payer, self.cl_df_payee,
                   self.cl_term_src, self.cl_term_val, self.cl_rate, self.cl_par, self.cl_tier_rate,
                   self.cl_tier_until, self.cl_cond, self.cl_cond_date, self.cl_time_df, self.df, self.cl_slot,
                   cl_trigger, trig_src, trig_val, trig_fixed, cl_order)
        return model, drivers, clauses, len(self.parties)

    @cached_property
    def _derived(self) -> tuple[np.ndarray, ...]:
        """Path-independent tables the kernel reads, derived once from the fields above (a ``Compiled`` is not
        changed in place; ``dataclasses.replace`` gives a new one): bit for bit what the kernel would compute.

        ``uplift_full[k]``: the AGI growth uplift over a step wholly after the declaration (``u * h / h``);
        ``haircut_steps[d, k]``: deadline ``d``'s growth haircut pro-rated over step ``k`` (applied when missed);
        ``st_used[pattern, s]``: 1 when structure ``s`` applies to some structure under that pattern;
        ``trig_src``, ``trig_val``: the distinct triggers (term lists) of the clauses, ``cl_trigger[c]`` those of
        clause ``c``'s start and end, ``trig_fixed[u]`` 1 when trigger ``u`` refers to dates only;
        ``cl_order``: the clauses taking structures in turn (each structure's first clause, then each one's
        second, ...), each structure's in their own order.
        """
        a, b, h = self.t[:-1], self.t[1:], self.dt[1:]
        uplift = self.revenue[UPLIFT]
        uplift_full = np.zeros(len(self.t))
        uplift_full[1:] = uplift * (b - a) / h
        haircut_steps = np.zeros((len(self.dl_date), len(self.t)))
        for d in range(len(self.dl_date)):
            left = np.where(a > self.dl_date[d], a, self.dl_date[d])
            right = np.where(b < self.dl_haircut_end[d], b, self.dl_haircut_end[d])
            ov = np.where(right > left, right - left, 0.0)
            haircut_steps[d, 1:] = self.dl_haircut[d] * ov / h
        st_used = np.zeros(self.st_eff.shape, np.uint8)
        for pattern in range(self.st_eff.shape[0]):
            st_used[pattern, self.st_eff[pattern]] = 1
        index: dict[tuple, int] = {}
        cl_trigger = np.zeros((len(self.cl_type), 2), np.int64)
        for c in range(len(self.cl_type)):
            for w in range(2):
                key = (tuple(self.cl_term_src[c, w].tolist()), tuple(self.cl_term_val[c, w].tolist()))
                cl_trigger[c, w] = index.setdefault(key, len(index))
        trig_src = np.array([k[0] for k in index], np.int64).reshape(len(index), self.cl_term_src.shape[2])
        trig_val = np.array([k[1] for k in index], np.float64).reshape(len(index), self.cl_term_src.shape[2])
        trig_fixed = np.all((trig_src == TERM_DATE) | (trig_src == TERM_UNUSED), axis=1).astype(np.uint8)
        rank: dict[int, int] = {}
        turns = []
        for c, s in enumerate(self.cl_struct.tolist()):
            rank[s] = rank.get(s, -1) + 1
            turns.append((rank[s], s, c))
        cl_order = np.array([c for _, _, c in sorted(turns)], np.int64)
        return uplift_full, haircut_steps, st_used, cl_trigger, trig_src, trig_val, trig_fixed, cl_order

    def flow_columns(self) -> list[tuple[int, int, int]]:
        """(structure, party, discount class) that can have flows, in that order: those of the clauses of each
        structure that applies under some pattern of deadlines met (known before any path runs)."""
        found = set()
        for pattern in range(self.st_eff.shape[0]):
            for s in range(len(self.structures)):
                for c in np.flatnonzero(self.cl_struct == self.st_eff[pattern, s]):
                    if self.cl_payer[c] >= 0:
                        found.add((s, int(self.cl_payer[c]), int(self.cl_class_payer[c])))
                    found.add((s, int(self.cl_payee[c]), int(self.cl_class_payee[c])))
        return sorted(found)

    @property
    def flow_shape(self) -> tuple[int, int, int]:
        """Shape of the per-block cash-flow accumulator: patterns, clauses, slots (undiscounted sums of each
        clause's flow; :func:`valuation.engine.expected_flows` spreads them over structures, parties and classes)."""
        return (self.st_eff.shape[0], len(self.cl_type), len(self.slot_time))


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


def build_timing(spec: Any, scenario: sc.Scenario, absolute: bool) -> tuple[Any, Any]:
    """A scenario timing table → a ``models.timing`` distribution (and its quantile fit, if any)."""

    def years(x: Date | float) -> float:
        return scenario.years(x) if isinstance(x, Date) else float(x)

    start = years(spec.start) if spec.start is not None else 0.0
    common = {"start": start, "never": spec.never}
    if isinstance(spec, sc.ExponentialTiming):
        return timing.Exponential(spec.rate, **common), None
    if isinstance(spec, sc.WeibullTiming):
        return timing.Weibull(spec.shape, spec.scale, **common), None
    if isinstance(spec, sc.LognormalTiming):
        return timing.Lognormal(spec.median, spec.sigma, **common), None
    if isinstance(spec, sc.GompertzTiming):
        return timing.Gompertz(spec.rate, spec.growth, **common), None
    if isinstance(spec, sc.FixedTiming):
        return timing.Fixed(spec.after, **common), None
    if isinstance(spec, sc.PiecewiseTiming):
        starts = [years(p.start) - start for p in spec.pieces]
        hazards = [p.hazard for p in spec.pieces]
        if starts[0] > 0:
            starts, hazards = [0.0, *starts], [0.0, *hazards]
        return timing.PiecewiseHazard(tuple(starts), tuple(hazards), **common), None
    fit = timing.fit_quantiles([years(p.by) for p in spec.points], [p.p for p in spec.points],
                               family=spec.fit, start=start, never=spec.never, tail=spec.tail)
    return fit.distribution, fit


PV_LIMIT = 1e12  # USD bn: beyond this a PV is an overflow, not a valuation
ENVELOPE_SDS = 6.0  # standard deviations above the mean path that must stay below PV_LIMIT (P ~ 1e-9 a path)


def _check_overflow(s: sc.Scenario, model: RevenueModel, t: np.ndarray) -> None:
    """Reject inputs whose revenue (times the largest discount factor) could overflow, before any path runs.

    Revenue ``ENVELOPE_SDS`` standard deviations above its mean path, discounted at the lowest rate in the
    scenario and summed over the horizon plus the exit multiple, must stay below :data:`PV_LIMIT`.  A path
    beyond the envelope (about 1e-9 of them) that does overflow is still caught, with its index, after the run.
    """
    rates = [p.discount_rate for p in s.parties.values()]
    rates += [c.discount_rate for st in s.structures for c in [*st.clauses, *s.common_clauses]
              if c.discount_rate is not None]
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
        "revenue", f"{ENVELOPE_SDS:g} standard deviations above its mean path, discounted revenue reaches "
        f"{_size(log_pv[k])} USD bn by {when}, so PVs could overflow (limit {PV_LIMIT:.0e}); expected "
        f"smaller growth (initial_growth {model.initial_growth:g}, long_run_growth {model.long_run_growth:g}, "
        f"agi_growth_uplift {model.agi_growth_uplift:g}), volatility ({model.volatility:g}, growth_volatility "
        f"{model.growth_volatility:g}){rate} or a nearer horizon ({s.simulation.horizon})", has_value=False)])


def revenue_model(rev: sc.Revenue) -> RevenueModel:
    """The revenue process of a scenario's ``[revenue]`` table."""
    return RevenueModel(rev.initial, rev.initial_growth, rev.long_run_growth, rev.mean_reversion, rev.volatility,
                        rev.growth_volatility, rev.correlation, rev.jump_intensity, rev.jump_loss,
                        rev.agi_growth_uplift, rev.exit_multiple)


def _size(log_value: float) -> str:
    """``exp(log_value)`` for a message, without overflowing."""
    return f"about {math.exp(log_value):.1e}" if log_value < 690 else "more than 1e+300"


def compile_scenario(s: sc.Scenario, *, undiscounted: bool = False) -> Compiled:
    """Compile a validated scenario.

    Parameters
    ----------
    s
        A scenario from :func:`valuation.load_scenario`.
    undiscounted
        Use zero discount rates everywhere (for conservation checks).
    """
    sim = s.simulation
    t = time_grid(s.horizon_years, sim.steps_per_year)
    dt = np.concatenate(([0.0], np.diff(t)))
    rev = s.revenue
    model = revenue_model(rev)
    _check_overflow(s, model, t)
    tables = model.step_tables(dt)
    if isinstance(rev.margin, list):
        xs = np.array([s.years(p.date) for p in rev.margin])
        margin = step_average(xs, np.array([p.margin for p in rev.margin]), t, linear=True)
    else:
        margin = np.full(len(t), float(rev.margin))

    fits: dict[str, Any] = {}

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
    ev = []
    for name, spec in s.events.items():
        sources.append(name)
        ev.append(dist(spec, keys.join("events", name), True))
    src_index = {name: i for i, name in enumerate(sources)}
    D = len(s.deadlines)
    dl_src = np.full((D, MAX_TERMS), TERM_UNUSED, np.int64)
    for d, dl in enumerate(s.deadlines):
        if dl.completion is not None:
            src_index[f"deadline:{dl.name}"] = len(sources)
            sources.append(f"deadline:{dl.name}")
            ev.append(dist(dl.completion, f"deadlines[{d}].completion", True))
            names = [f"deadline:{dl.name}"]
        else:
            names = list(dl.events or [])
        dl_src[d, : len(names)] = [src_index[n] for n in names]
    n_par = timing.N_PARAMS
    ev_code = np.array([c for c, _ in ev], np.int64)
    ev_par = np.array([p for _, p in ev], np.float64).reshape(len(ev), n_par)
    dl_date = np.array([s.years(dl.date) for dl in s.deadlines], np.float64)
    dl_haircut = np.array([dl.growth_haircut for dl in s.deadlines], np.float64)
    dl_end = np.array([s.years(dl.date) + (dl.haircut_years if dl.haircut_years is not None else math.inf)
                       for dl in s.deadlines], np.float64)
    deadline_index = {dl.name: i for i, dl in enumerate(s.deadlines)}

    parties = s.party_names()
    party_index = {p: i for i, p in enumerate(parties)}
    rates: list[float] = []

    def rate_row(r: float) -> int:
        r = 0.0 if undiscounted else r
        if r not in rates:
            rates.append(r)
        return rates.index(r)

    party_row = [rate_row(s.parties[p].discount_rate) for p in parties]
    structures = s.structure_names()
    struct_index = {n: i for i, n in enumerate(structures)}
    flat = [(i, c) for i, st in enumerate(s.structures) for c in [*st.clauses, *s.common_clauses]]
    C, K1 = len(flat), len(t)
    cl = {
        "type": np.zeros(C, np.int64), "struct": np.zeros(C, np.int64), "payer": np.full(C, -1, np.int64),
        "payee": np.full(C, -1, np.int64), "df_payer": np.zeros(C, np.int64), "df_payee": np.zeros(C, np.int64),
        "term_src": np.full((C, 2, MAX_TERMS), TERM_UNUSED, np.int64), "term_val": np.zeros((C, 2, MAX_TERMS)),
        "rate": np.zeros((C, K1)), "par": np.zeros((C, 4)), "tier_rate": np.zeros((C, MAX_TIERS)),
        "tier_until": np.full((C, MAX_TIERS), np.inf), "cond": np.zeros((C, 3), np.int64),
        "cond_date": np.zeros(C), "time_at": np.full(C, np.nan),
    }

    for c, (si, clause) in enumerate(flat):
        cl["type"][c] = CLAUSE_CODES[clause.type]
        cl["struct"][c] = si
        payer = getattr(clause, "payer", None) or getattr(clause, "issuer", None)
        payee = getattr(clause, "payee", None) or getattr(clause, "holder", None) or getattr(clause, "party", None)
        if payer is not None:
            cl["payer"][c] = party_index[payer]
        cl["payee"][c] = party_index[payee]
        if clause.discount_rate is not None:
            cl["df_payer"][c] = cl["df_payee"][c] = rate_row(clause.discount_rate)
        else:
            cl["df_payer"][c] = party_row[party_index[payer]] if payer is not None else 0
            cl["df_payee"][c] = party_row[party_index[payee]]
        for w, which in enumerate(("start", "end")):
            terms = getattr(clause, which, None)
            if terms is None:
                continue
            for m, term in enumerate(terms):
                cl["term_src"][c, w, m], cl["term_val"][c, w, m] = _term(term, s, src_index)
        cond = getattr(clause, "condition", None)
        if cond is not None:
            if cond.deadline is not None:
                cl["cond"][c] = (COND_DEADLINE, deadline_index[cond.deadline], int(cond.met))
            else:
                cl["cond"][c] = (COND_EVENT, src_index[cond.event], int(cond.met))
                cl["cond_date"][c] = s.years(cond.before)
        if isinstance(clause, sc.RevenueShare):
            if clause.schedule is not None:
                xs = np.array([s.years(p.date) for p in clause.schedule])
                ys = np.array([p.rate for p in clause.schedule])
                cl["rate"][c] = step_average(xs, ys, t, linear=clause.interpolation == "linear", before=0.0)
            else:
                cl["rate"][c] = clause.rate
            cl["rate"][c] *= clause.base_fraction
            cl["par"][c, 0] = math.inf if clause.cap is None else clause.cap
            cl["par"][c, 1] = clause.rate_after_cap * clause.base_fraction
        elif isinstance(clause, sc.ProfitShare):
            for k, tier in enumerate(clause.tiers):
                cl["tier_rate"][c, k] = tier.rate
                cl["tier_until"][c, k] = math.inf if tier.until is None else tier.until
            # Beyond a capped last tier the table holds rate 0: nothing more is paid.
            cl["par"][c, 0] = 1.0 if clause.basis == "cumulative_profit" else 0.0
            cl["par"][c, 1] = 1.0 if clause.loss_carryforward else 0.0
        elif isinstance(clause, sc.EquityStake):
            cl["par"][c, 0] = clause.fraction
            cl["time_at"][c] = t[-1]
        elif isinstance(clause, sc.Payment):
            cl["par"][c, 0] = clause.amount
            cl["par"][c, 1] = clause.amount_otherwise
            cl["time_at"][c] = s.years(clause.date)
        elif isinstance(clause, sc.OwnValue):
            if clause.revenue_rate is not None:
                cl["rate"][c] = clause.revenue_rate
            else:
                cl["par"][c, 0] = 1.0
                cl["par"][c, 1] = clause.amount_per_year

    rates_arr = np.array(rates, np.float64)
    df = (1.0 + rates_arr[:, None]) ** (-t[None, :])
    time_df = np.ones((C, 2))
    for c in range(C):
        if not math.isnan(cl["time_at"][c]):
            time_df[c, 0] = (1.0 + rates_arr[cl["df_payer"][c]]) ** (-cl["time_at"][c])
            time_df[c, 1] = (1.0 + rates_arr[cl["df_payee"][c]]) ** (-cl["time_at"][c])

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

    # Expected cash flows are kept by discount class (a party's own rate, or a clause's rate) and time slot.
    override_rates = sorted({c.discount_rate for _, c in flat if c.discount_rate is not None})
    class_rates = np.array([s.parties[p].discount_rate for p in parties] + override_rates, np.float64)
    class_payer = np.zeros(C, np.int64)
    class_payee = np.zeros(C, np.int64)
    one_off_times = sorted({float(x) for x in cl["time_at"] if not math.isnan(x)})
    slot_time = np.concatenate((t, np.array(one_off_times, np.float64)))
    slot = np.full(C, -1, np.int64)
    for c, (_, clause) in enumerate(flat):
        if clause.discount_rate is not None:
            class_payer[c] = class_payee[c] = len(parties) + override_rates.index(clause.discount_rate)
        else:
            class_payer[c] = max(cl["payer"][c], 0)
            class_payee[c] = cl["payee"][c]
        if not math.isnan(cl["time_at"][c]):
            slot[c] = len(t) + one_off_times.index(float(cl["time_at"][c]))
    return Compiled(
        structures=structures, parties=parties, deadlines=[d.name for d in s.deadlines], sources=sources,
        t=t, dt=dt, sqrt_dt=tables["sqrt_dt"], growth_decay=tables["growth_decay"],
        growth_shock=tables["growth_shock"], jump_prob=tables["jump_prob"], margin=margin,
        revenue=model.params(), decl_code=int(decl_code), decl_par=decl_par, lag_code=int(lag_code),
        lag_par=lag_par, never_verified=float(s.agi.never_verified), ev_code=ev_code, ev_par=ev_par,
        dl_date=dl_date, dl_src=dl_src, dl_haircut=dl_haircut, dl_haircut_end=dl_end,
        cl_type=cl["type"], cl_struct=cl["struct"], cl_payer=cl["payer"], cl_payee=cl["payee"],
        cl_df_payer=cl["df_payer"], cl_df_payee=cl["df_payee"], cl_term_src=cl["term_src"],
        cl_term_val=cl["term_val"], cl_rate=cl["rate"], cl_par=cl["par"], cl_tier_rate=cl["tier_rate"],
        cl_tier_until=cl["tier_until"], cl_cond=cl["cond"], cl_cond_date=cl["cond_date"], cl_time_df=time_df,
        df=df, rates=rates_arr, st_requires=requires, st_fallback=fallback, req_deadlines=req, st_eff=st_eff,
        cl_class_payer=class_payer, cl_class_payee=class_payee, cl_slot=slot, class_rates=class_rates,
        slot_time=slot_time, fits=fits,
    )


def _term(term: Any, s: sc.Scenario, src_index: dict[str, int]) -> tuple[int, float]:
    """One trigger term → (source index or TERM_DATE, offset or date in years)."""
    if isinstance(term, Date):
        return TERM_DATE, s.years(term)
    if isinstance(term, sc.EventOffset):
        return src_index[term.event], term.plus_years
    if term == "valuation_date":
        return TERM_DATE, 0.0
    if term == "never":
        return TERM_DATE, math.inf
    return src_index[term], 0.0
