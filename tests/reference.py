"""An independent reference implementation of the Monte Carlo model, in plain numpy.

Written from the model's specification and the validated :class:`~valuation.scenario.Scenario`
only (not from ``valuation.engine``), to check the compiled kernel
path by path.  It favours clarity over speed: paths are handled as numpy vectors, time steps
and clauses as Python loops.

Random numbers come from the public helpers of :mod:`models.rng` (Philox uniforms indexed by
``(path, stream, draw)``; a named event's stream and draw from :func:`models.rng.named_counter` of its name)
and event times from the ``ppf`` of the :mod:`models.timing`
distribution classes, so the reference sees the same random inputs as the kernel.

Entry point: :func:`reference_simulate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date as Date

import numpy as np
from scipy.special import ndtri

from models.rng import STREAM_DRIVERS, STREAM_JUMPS, STREAM_SHOCKS, key_from_seed, named_counter, uniforms
from models.timing import Exponential, Fixed, Gompertz, Lognormal, PiecewiseHazard, Weibull, fit_quantiles
from valuation.scenario import (
    EquityStake,
    EventOffset,
    OwnValue,
    Payment,
    ProfitShare,
    RevenueShare,
    Scenario,
)

# ----------------------------------------------------------------- time


def years(scenario: Scenario, when: Date) -> float:
    """Years after the valuation date: days / 365.25."""
    return (when - scenario.simulation.valuation_date).days / 365.25


def as_years(scenario: Scenario, value: Date | float) -> float:
    """A date -> years after the valuation date; a number is already years."""
    if isinstance(value, Date):
        return years(scenario, value)
    return float(value)


def time_grid(scenario: Scenario) -> np.ndarray:
    """``t_0 = 0, t_1, ..., t_K = H``: steps of 1/spy, the last one cut at the horizon."""
    spy = scenario.simulation.steps_per_year
    horizon = years(scenario, scenario.simulation.horizon)
    k_steps = math.ceil(horizon * spy - 1e-9)
    t = np.array([k / spy for k in range(k_steps + 1)], dtype=np.float64)
    t[k_steps] = horizon
    return t


def overlap(a, b, lo, hi):
    """Length of ``(a, b] ∩ (lo, hi)``; works on scalars and arrays, infinities included."""
    return np.maximum(0.0, np.minimum(b, hi) - np.maximum(a, lo))


def average_linear(xs: list[float], ys: list[float], a: float, b: float) -> float:
    """Time average over (a, b] of the piecewise-linear path through (xs, ys), flat outside."""
    knots = [a] + [x for x in xs if a < x < b] + [b]
    values = np.interp(knots, xs, ys)
    total = 0.0
    for i in range(len(knots) - 1):
        total += 0.5 * (values[i] + values[i + 1]) * (knots[i + 1] - knots[i])
    return total / (b - a)


def average_step(xs: list[float], ys: list[float], a: float, b: float) -> float:
    """Time average over (a, b] of the step path: ys[i] from xs[i] to xs[i+1], ys[0] before xs[0]."""
    knots = [a] + [x for x in xs if a < x < b] + [b]
    total = 0.0
    for i in range(len(knots) - 1):
        lo = knots[i]
        j = max(int(np.searchsorted(xs, lo, side="right")) - 1, 0)
        total += ys[j] * (knots[i + 1] - lo)
    return total / (b - a)


# -------------------------------------------------------- distributions


def distribution(spec, scenario: Scenario):
    """A :mod:`models.timing` distribution from a scenario timing table.

    ``start`` is a date (years after valuation) or a number of years; default 0.
    """
    start = 0.0 if spec.start is None else as_years(scenario, spec.start)
    never = spec.never
    family = spec.family
    if family == "exponential":
        return Exponential(spec.rate, start=start, never=never)
    if family == "weibull":
        return Weibull(spec.shape, spec.scale, start=start, never=never)
    if family == "lognormal":
        return Lognormal(spec.median, spec.sigma, start=start, never=never)
    if family == "gompertz":
        return Gompertz(spec.rate, spec.growth, start=start, never=never)
    if family == "fixed":
        return Fixed(spec.after, start=start, never=never)
    if family == "piecewise_hazard":
        times = [as_years(scenario, p.start) - start for p in spec.pieces]
        hazards = [p.hazard for p in spec.pieces]
        if times[0] > 0.0:
            times = [0.0, *times]
            hazards = [0.0, *hazards]
        return PiecewiseHazard(tuple(times), tuple(hazards), start=start, never=never)
    if family == "quantiles":
        by = [as_years(scenario, p.by) for p in spec.points]
        probs = [p.p for p in spec.points]
        return fit_quantiles(by, probs, family=spec.fit, start=start, never=never, tail=spec.tail).distribution
    raise ValueError(f"unknown timing family {family!r}")


# --------------------------------------------------------------- result


@dataclass
class ReferenceResult:
    """What :func:`reference_simulate` returns.

    pvs : (paths, structures, parties) PVs after fallback resolution.
    raw_pvs : the same before fallbacks are applied.
    times : event name -> (paths,) times in years (agi_declared, agi_verified, [events] names,
        and ``completion:<deadline>`` for inline completion events).
    met : deadline name -> (paths,) booleans.
    revenue_at_horizon : (paths,) annual revenue rate at the horizon.
    resolved : (paths, structures) index of the structure each one resolves to.
    """

    pvs: np.ndarray
    raw_pvs: np.ndarray
    times: dict[str, np.ndarray]
    met: dict[str, np.ndarray]
    revenue_at_horizon: np.ndarray
    resolved: np.ndarray
    structures: list[str]
    parties: list[str]


# ------------------------------------------------------------ simulation


def _drivers(scenario: Scenario, key, paths: np.ndarray):
    """AGI times, named event times and inline completion times, from the driver stream."""
    completions = [d for d in scenario.deadlines if d.completion is not None]
    u = uniforms(key, paths, STREAM_DRIVERS, np.arange(3))

    def named(name: str) -> np.ndarray:
        """The uniforms of a named source: its own counter, from its name (the same whatever else there is)."""
        stream, draw = named_counter(name)
        return uniforms(key, paths, stream, [draw])[:, 0, 0]

    declaration = distribution(scenario.agi.declaration, scenario)
    lag = distribution(scenario.agi.verification_lag, scenario)
    tau_a = np.asarray(declaration.ppf(u[:, 0, 0]), dtype=np.float64)
    lag_t = np.asarray(lag.ppf(u[:, 1, 0]), dtype=np.float64)
    verified = u[:, 2, 0] >= scenario.agi.never_verified
    tau_v = np.where(np.isfinite(tau_a) & verified, tau_a + lag_t, np.inf)

    times = {"agi_declared": tau_a, "agi_verified": tau_v}
    for name, spec in scenario.events.items():
        times[name] = np.asarray(distribution(spec, scenario).ppf(named(f"event:{name}")), dtype=np.float64)
    for d in completions:
        times[f"completion:{d.name}"] = np.asarray(
            distribution(d.completion, scenario).ppf(named(f"deadline:{d.name}")), dtype=np.float64
        )

    met = {}
    for d in scenario.deadlines:
        names = d.events if d.events is not None else [f"completion:{d.name}"]
        when = years(scenario, d.date)
        hit = np.zeros(len(paths), dtype=bool)
        for name in names:
            hit |= times[name] <= when
        met[d.name] = hit
    return times, met


def _margins(scenario: Scenario, t: np.ndarray) -> np.ndarray:
    """Time-average of the margin path over each step (a, b]."""
    margin = scenario.revenue.margin
    k_steps = len(t) - 1
    if not isinstance(margin, (list, tuple)):
        return np.full(k_steps, float(margin))
    xs = [years(scenario, p.date) for p in margin]
    ys = [p.margin for p in margin]
    return np.array([average_linear(xs, ys, t[k - 1], t[k]) for k in range(1, k_steps + 1)])


def _revenue(scenario: Scenario, key, paths: np.ndarray, t: np.ndarray, tau_a: np.ndarray,
             met: dict[str, np.ndarray]):
    """Revenue (USD bn in each step), profit per step and the revenue rate at the horizon."""
    rv = scenario.revenue
    k_steps = len(t) - 1
    n = len(paths)
    draws = np.arange(1, k_steps + 1)
    shocks = uniforms(key, paths, STREAM_SHOCKS, draws)
    z1_all = ndtri(shocks[:, :, 0])
    z2_all = ndtri(shocks[:, :, 1])
    jumps = uniforms(key, paths, STREAM_JUMPS, draws)[:, :, 0] if rv.jump_intensity > 0.0 else None

    haircuts = []
    for d in scenario.deadlines:
        if d.growth_haircut > 0.0:
            lo = years(scenario, d.date)
            hi = lo + d.haircut_years if d.haircut_years is not None else np.inf
            haircuts.append((d.growth_haircut, lo, hi, ~met[d.name]))

    sigma = rv.volatility
    gbar = rv.long_run_growth
    kappa = rv.mean_reversion
    rho = rv.correlation
    margin = _margins(scenario, t)

    log_r = np.full(n, math.log(rv.initial))
    g = np.full(n, rv.initial_growth)
    revenue = np.empty((n, k_steps))
    profit = np.empty((n, k_steps))
    for k in range(1, k_steps + 1):
        a, b = t[k - 1], t[k]
        h = b - a
        z1 = z1_all[:, k - 1]
        z2 = z2_all[:, k - 1]
        extra = rv.agi_growth_uplift * overlap(a, b, tau_a, np.inf) / h
        for size, lo, hi, missed in haircuts:
            extra = extra - np.where(missed, size * overlap(a, b, lo, hi) / h, 0.0)
        log_r = log_r + (g + extra - 0.5 * sigma * sigma) * h + sigma * math.sqrt(h) * z1
        if rv.jump_intensity > 0.0:
            jumped = jumps[:, k - 1] < 1.0 - math.exp(-rv.jump_intensity * h)
            log_r = np.where(jumped, log_r + math.log(1.0 - rv.jump_loss), log_r)
        if kappa > 0.0:
            decay = math.exp(-kappa * h)
            s_k = rv.growth_volatility * math.sqrt((1.0 - math.exp(-2.0 * kappa * h)) / (2.0 * kappa))
        else:
            decay = 1.0
            s_k = rv.growth_volatility * math.sqrt(h)
        g = gbar + (g - gbar) * decay + s_k * (rho * z1 + math.sqrt(1.0 - rho * rho) * z2)
        revenue[:, k - 1] = np.exp(log_r) * h
        profit[:, k - 1] = margin[k - 1] * revenue[:, k - 1]
    return revenue, profit, np.exp(log_r)


def _event_time(name: str, times: dict[str, np.ndarray]) -> np.ndarray:
    return times[name]


def _trigger(terms, scenario: Scenario, times: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Earliest time among the trigger's terms, per path."""
    out = np.full(n, np.inf)
    for term in terms:
        if isinstance(term, Date):
            value = np.full(n, years(scenario, term))
        elif isinstance(term, EventOffset):
            value = _event_time(term.event, times) + term.plus_years
        elif term == "valuation_date":
            value = np.zeros(n)
        elif term == "never":
            value = np.full(n, np.inf)
        else:
            value = _event_time(term, times)
        out = np.minimum(out, value)
    return out


def _condition(cond, scenario: Scenario, times, met, n: int) -> np.ndarray:
    if cond is None:
        return np.ones(n, dtype=bool)
    if cond.deadline is not None:
        return met[cond.deadline] == cond.met
    return (_event_time(cond.event, times) <= years(scenario, cond.before)) == cond.met


def _df(rate: float, when) -> np.ndarray:
    return (1.0 + rate) ** (-np.asarray(when, dtype=np.float64))


def _clause_pv(clause, scenario: Scenario, t, revenue, profit, value_at_horizon, times, met, pv, party_index):
    """Add one clause's discounted flows to ``pv`` (paths, parties)."""
    n = pv.shape[0]
    k_steps = len(t) - 1
    horizon = t[-1]
    parties = scenario.parties

    def rate_of(name: str) -> float:
        if clause.discount_rate is not None:
            return clause.discount_rate
        return parties[name].discount_rate

    def transfer(payer: str, payee: str, amount, when) -> None:
        pv[:, party_index[payer]] -= amount * _df(rate_of(payer), when)
        pv[:, party_index[payee]] += amount * _df(rate_of(payee), when)

    if isinstance(clause, Payment):
        ok = _condition(clause.condition, scenario, times, met, n)
        amount = np.where(ok, clause.amount, clause.amount_otherwise)
        transfer(clause.payer, clause.payee, amount, years(scenario, clause.date))
        return
    if isinstance(clause, EquityStake):
        ok = _condition(clause.condition, scenario, times, met, n)
        amount = np.where(ok, clause.fraction * value_at_horizon, 0.0)
        transfer(clause.issuer, clause.holder, amount, horizon)
        return

    start = _trigger(clause.start, scenario, times, n)
    end = _trigger(clause.end, scenario, times, n)

    if isinstance(clause, RevenueShare):
        if clause.schedule is not None:
            xs = [years(scenario, p.date) for p in clause.schedule]
            ys = [p.rate for p in clause.schedule]
            shape = average_step if clause.interpolation == "step" else average_linear

            def avg(xs, ys, a, b, shape=shape):
                """A rate schedule pays nothing before its first date."""
                if b <= xs[0]:
                    return 0.0
                if a >= xs[0]:
                    return shape(xs, ys, a, b)
                return shape(xs, ys, xs[0], b) * (b - xs[0]) / (b - a)
        cap = np.inf if clause.cap is None else clause.cap
        paid = np.zeros(n)  # cumulative at-rate payments
        for k in range(1, k_steps + 1):
            a, b = t[k - 1], t[k]
            h = b - a
            f = overlap(a, b, start, end) / h
            active = f > 0.0
            if not active.any():
                continue
            base_rate = clause.rate if clause.schedule is None else avg(xs, ys, a, b)
            rate_k = base_rate * clause.base_fraction
            base = revenue[:, k - 1] * f
            due = rate_k * base
            within = paid + due <= cap
            room = np.maximum(cap - paid, 0.0)
            base_left = base - (room / rate_k if rate_k > 0.0 else 0.0)
            over = room + np.maximum(base_left, 0.0) * clause.rate_after_cap * clause.base_fraction
            pay = np.where(within, due, over)
            paid = np.where(active, np.where(within, paid + due, cap), paid)
            pay = np.where(active, pay, 0.0)
            transfer(clause.payer, clause.payee, pay, b)
        return

    if isinstance(clause, ProfitShare):
        tiers = [(tier.rate, np.inf if tier.until is None else tier.until) for tier in clause.tiers]
        losses = np.zeros(n)  # loss carried forward
        basis = np.zeros(n)  # B: cumulative basis
        for k in range(1, k_steps + 1):
            a, b = t[k - 1], t[k]
            h = b - a
            f = overlap(a, b, start, end) / h
            active = f > 0.0
            if not active.any():
                continue
            p = np.where(active, profit[:, k - 1] * f, 0.0)
            if clause.loss_carryforward:
                loss = active & (p <= 0.0)
                losses = np.where(loss, losses - p, losses)
                used = np.where(active & ~loss, np.minimum(p, losses), 0.0)
                losses = losses - used
                p = np.where(loss, 0.0, p - used)
            p = np.where(active & (p > 0.0), p, 0.0)
            pay = np.zeros(n)
            for rate, until in tiers:
                go = (p > 0.0) & (basis < until)
                if not go.any():
                    continue
                if clause.basis == "cumulative_profit":
                    take = np.minimum(p, until - basis)
                    pay = np.where(go, pay + rate * take, pay)
                    basis = np.where(go, basis + take, basis)
                    p = np.where(go, p - take, p)
                else:
                    room = until - basis
                    fits = rate * p <= room
                    with np.errstate(divide="ignore", invalid="ignore"):
                        rest = p - room / rate
                    pay = np.where(go, np.where(fits, pay + rate * p, pay + room), pay)
                    basis = np.where(go, np.where(fits, basis + rate * p, until), basis)
                    p = np.where(go, np.where(fits, 0.0, rest), p)
            transfer(clause.payer, clause.payee, pay, b)
        return

    if isinstance(clause, OwnValue):
        j = party_index[clause.party]
        r = rate_of(clause.party)
        for k in range(1, k_steps + 1):
            a, b = t[k - 1], t[k]
            h = b - a
            f = overlap(a, b, start, end) / h
            active = f > 0.0
            if not active.any():
                continue
            if clause.revenue_rate is not None:
                x = clause.revenue_rate * revenue[:, k - 1] * f
            else:
                x = clause.amount_per_year * h * f
            pv[:, j] += np.where(active, x, 0.0) * _df(r, b)
        return
    raise TypeError(f"unknown clause {type(clause).__name__}")


def reference_simulate(scenario: Scenario, paths: int, seed: int, first: int = 0) -> ReferenceResult:
    """Every path, structure and party of the model, from the specification.

    Parameters
    ----------
    scenario
        A validated scenario.
    paths
        Number of paths: the global path numbers ``first .. first + paths - 1``.
    seed
        The seed given to :func:`models.rng.key_from_seed`.
    """
    key, _ = key_from_seed(seed)
    idx = np.arange(first, first + paths, dtype=np.int64)
    t = time_grid(scenario)
    times, met = _drivers(scenario, key, idx)
    revenue, profit, rate_at_horizon = _revenue(scenario, key, idx, t, times["agi_declared"], met)
    value_at_horizon = scenario.revenue.exit_multiple * rate_at_horizon

    party_names = list(scenario.parties)
    party_index = {name: j for j, name in enumerate(party_names)}
    structures = scenario.structures
    raw = np.zeros((paths, len(structures), len(party_names)))
    for s, structure in enumerate(structures):
        pv = np.zeros((paths, len(party_names)))
        for clause in [*structure.clauses, *scenario.common_clauses]:
            _clause_pv(clause, scenario, t, revenue, profit, value_at_horizon, times, met, pv, party_index)
        raw[:, s, :] = pv

    index = {st.name: i for i, st in enumerate(structures)}
    resolved = np.empty((paths, len(structures)), dtype=np.int64)
    for s in range(len(structures)):
        for i in range(paths):
            r = s
            while structures[r].requires is not None and not met[structures[r].requires][i]:
                r = index[structures[r].fallback]
            resolved[i, s] = r
    pvs = raw[np.arange(paths)[:, None], resolved, :]
    return ReferenceResult(pvs=pvs, raw_pvs=raw, times=times, met=met, revenue_at_horizon=rate_at_horizon,
                           resolved=resolved, structures=[st.name for st in structures], parties=party_names)
