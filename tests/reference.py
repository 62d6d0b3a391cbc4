"""An independent reference implementation of the Monte Carlo model, in plain numpy.

Written from the model's specification and the validated :class:`~valuation.scenario.Scenario`
only (not from ``valuation.engine``), to check the compiled kernel
path by path.  It favours clarity over speed: paths are handled as numpy vectors, time steps
and clauses as Python loops.

Random numbers come from the public helpers of :mod:`models.rng` (Philox uniforms indexed by
``(path, stream, draw)``; a named event's stream and draw from :func:`models.rng.named_counter` of its name)
and event times from the ``ppf`` of the :mod:`models.timing`
distribution classes, so the reference sees the same random inputs as the kernel.

The revenue model (continuous, sampled exactly at the step ends): the unbounded rate ``X`` and its growth ``g``
follow ``d log X = (g + u - c - sigma^2/2) dt + sigma dW1 + log(1 - jump_loss) dN`` and
``dg = kappa (gbar - g) dt + s_g (rho dW1 + sqrt(1 - rho^2) dW2)``.  Over a step the W1 increment, the integral
``I`` of the growth's OU noise and its end value ``G`` are jointly Gaussian; their covariance is computed here by
quadrature of the noise kernels (:func:`step_covariance`) and factored by :func:`cholesky3`, using the normals
of draw ``k`` of streams SHOCKS (two) and GROWTH (one, when ``s_g > 0``).  Jumps are Poisson counts.  The revenue
rate is ``R = X / sqrt(1 + (X / M)^2)`` for a market size ``M``; revenue booked over a step (or part of one, for
calendar years) is the mean of ``R`` along the log-linear path of ``X`` (:func:`mean_rate`).  A step's flows are
discounted at :func:`flow_time` (the step's middle, see :data:`STEP_FLOWS_AT`).

Views: the party view discounts at each party's rate (or a clause's ``discount_rate``) and includes own value;
the market view (scenarios with ``[market]``) discounts both legs of a clause at its risk class's rate
(:func:`risk_class_of`) and leaves own value out.  The company's value discounts its profit and exit value at the
rate of ``market.company_class``.

Entry point: :func:`reference_simulate`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import date as Date

import numpy as np
from scipy.integrate import quad
from scipy.special import ndtri
from scipy.stats import poisson

from models.rng import (
    STREAM_DRIVERS,
    STREAM_JUMPS,
    STREAM_SHOCKS,
    key_from_seed,
    named_counter,
    uniforms,
)
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
        if spec.fit in ("exponential", "weibull", "lognormal"):  # the least-squares minimum to the last digit
            exact = _precise_fit_cached(scenario, spec.model_copy(update={"never": never}))
            law = {"exponential": Exponential, "weibull": Weibull, "lognormal": Lognormal}[spec.fit]
            names = {"exponential": ("rate",), "weibull": ("shape", "scale"), "lognormal": ("median", "sigma")}
            return law(*[exact[name] for name in names[spec.fit]], start=start, never=never)
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
    revenue_at_horizon : (paths,) annual revenue rate R at the horizon.
    resolved : (paths, structures) index of the structure each one resolves to.
    market_pvs : (paths, structures, parties) PVs of the market view after fallbacks (None without [market]).
    company : (paths,) the company's value at the valuation date (nan without [market]).
    revenue_by_year : (paths, len(years)) revenue earned in each calendar year of ``years``.
    revenue_path : (paths, K+1) revenue rate R at the step ends ``step_time``.
    booked : (paths, K) revenue earned over each step.
    """

    pvs: np.ndarray
    raw_pvs: np.ndarray
    times: dict[str, np.ndarray]
    met: dict[str, np.ndarray]
    revenue_at_horizon: np.ndarray
    resolved: np.ndarray
    structures: list[str]
    parties: list[str]
    market_pvs: np.ndarray | None
    company: np.ndarray
    revenue_by_year: np.ndarray
    years: list[int]
    revenue_path: np.ndarray
    booked: np.ndarray
    step_time: np.ndarray


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


# ---------------------------------------------------------- revenue process


def _integral(f, h: float) -> float:
    """``int_0^h f(u) du`` by adaptive Gauss-Kronrod (smooth integrands: accurate to rounding)."""
    value, _ = quad(f, 0.0, h, epsabs=0.0, epsrel=1e-13, limit=200)
    return value


def step_covariance(h: float, kappa: float, s_g: float, rho: float) -> tuple[float, float, np.ndarray]:
    """Over a step of length ``h``: ``e = exp(-kappa h)``, ``B = int_0^h exp(-kappa u) du`` and the covariance
    of ``(W1 increment, I, G)``.

    With ``u`` the time left to the step's end, the OU noise of the growth rate at the end is
    ``G = s_g int exp(-kappa u) dWg`` and its integral over the step ``I = s_g int (1 - exp(-kappa u)) / kappa dWg``
    (``u`` when ``kappa = 0``), ``Wg = rho W1 + sqrt(1 - rho^2) W2``; so every covariance is an integral of the
    product of two kernels (times ``rho`` against ``W1``), here by quadrature, not from a closed form.
    """
    def k_g(u):
        return math.exp(-kappa * u)

    def k_i(u):
        return -math.expm1(-kappa * u) / kappa if kappa > 0.0 else u

    e = math.exp(-kappa * h)
    b = _integral(k_g, h)
    cov = np.empty((3, 3))
    cov[0, 0] = h
    cov[0, 1] = cov[1, 0] = rho * s_g * _integral(k_i, h)
    cov[0, 2] = cov[2, 0] = rho * s_g * b
    cov[1, 1] = s_g * s_g * _integral(lambda u: k_i(u) ** 2, h)
    cov[1, 2] = cov[2, 1] = s_g * s_g * _integral(lambda u: k_i(u) * k_g(u), h)
    cov[2, 2] = s_g * s_g * _integral(lambda u: k_g(u) ** 2, h)
    return e, b, cov


def cholesky3(cov: np.ndarray) -> np.ndarray:
    """Lower-triangular ``L`` with ``L L^T = cov`` (3 x 3, positive semi-definite): ``L22 >= 0``, ``L32 = 0`` where
    ``L22 = 0``, ``L33 = sqrt(max(0, .))``."""
    L = np.zeros((3, 3))
    L[0, 0] = math.sqrt(cov[0, 0])
    L[1, 0] = cov[1, 0] / L[0, 0]
    L[2, 0] = cov[2, 0] / L[0, 0]
    L[1, 1] = math.sqrt(max(0.0, cov[1, 1] - L[1, 0] ** 2))
    L[2, 1] = (cov[2, 1] - L[1, 0] * L[2, 0]) / L[1, 1] if L[1, 1] > 0.0 else 0.0
    L[2, 2] = math.sqrt(max(0.0, cov[2, 2] - L[2, 0] ** 2 - L[2, 1] ** 2))
    return L


def saturated_rate(x, market: float | None):
    """Revenue rate ``R = X / sqrt(1 + (X / M)^2)`` of the unbounded rate ``X`` (``R = X`` without a market)."""
    if market is None:
        return x
    return x / np.sqrt(1.0 + (x / market) ** 2)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(20)
_GL_NODES = 0.5 * (_GL_NODES + 1.0)  # on [0, 1]
_GL_WEIGHTS = 0.5 * _GL_WEIGHTS


def mean_rate(la, lb, market: float | None):
    """Mean of ``R(exp(l))`` for ``l`` along the straight line from ``la`` to ``lb`` (arrays).

    ``(F(lb) - F(la)) / (lb - la)`` with ``F(l) = M asinh(exp(l) / M)`` (``exp(l)`` without a market) where the
    ends are at least 1 apart; closer, 20-point Gauss-Legendre quadrature of ``R`` along the line (exact to
    rounding there: the integrand is analytic within pi/2 of the real axis), free of the difference quotient's
    cancellation.
    """
    la = np.asarray(la, dtype=np.float64)
    lb = np.asarray(lb, dtype=np.float64)
    d = lb - la
    far = np.abs(d) >= 1.0
    ls = la[..., None] + _GL_NODES * d[..., None]
    near = np.sum(_GL_WEIGHTS * saturated_rate(np.exp(ls), market), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if market is None:
            closed = (np.exp(lb) - np.exp(la)) / d
        else:
            closed = market * (np.arcsinh(np.exp(lb) / market) - np.arcsinh(np.exp(la) / market)) / d
    return np.where(far, closed, near)


def poisson_count(u: np.ndarray, mean: float) -> np.ndarray:
    """Number of ``n >= 1`` with ``u < P(Poisson(mean) >= n)`` (the tails fall with n: once one is at or below
    the smallest uniform, no path counts more)."""
    count = np.zeros(u.shape, dtype=np.int64)
    smallest = float(u.min()) if u.size else 1.0
    for n, tail in enumerate(_poisson_tails(float(mean)), start=1):
        if tail <= smallest or n > 1000:
            break
        count += u < tail
    return count


@functools.lru_cache(maxsize=256)
def _poisson_tails(mean: float) -> tuple[float, ...]:
    """P(Poisson(mean) >= n) for n = 1, 2, ... while positive (at most 1000 terms)."""
    tails = poisson.sf(np.arange(0, 1000), mean)
    return tuple(float(x) for x in tails[tails > 0.0])


@dataclass
class RevenuePaths:
    """The revenue process on every path."""

    log_x: np.ndarray  # (paths, K+1) log of the unbounded rate at the step ends
    rate: np.ndarray  # (paths, K+1) revenue rate R at the step ends
    booked: np.ndarray  # (paths, K) revenue earned over each step (USD bn)
    profit: np.ndarray  # (paths, K)
    years: np.ndarray  # (paths, Y) revenue earned in each calendar year
    year_list: list[int]


def _revenue(scenario: Scenario, key, paths: np.ndarray, t: np.ndarray, tau_a: np.ndarray,
             met: dict[str, np.ndarray]) -> RevenuePaths:
    """The unbounded rate exactly at the step ends, revenue booked over each step and in each calendar year."""
    rv = scenario.revenue
    k_steps = len(t) - 1
    n = len(paths)
    draws = np.arange(1, k_steps + 1)
    shocks = uniforms(key, paths, STREAM_SHOCKS, draws)
    z1_all = ndtri(shocks[:, :, 0])
    z2_all = ndtri(shocks[:, :, 1])
    s_g = rv.growth_volatility
    if s_g > 0.0:
        z3_all = ndtri(uniforms(key, paths, STREAM_JUMPS, draws)[:, :, 1])  # the jump draw's second uniform
    else:
        z3_all = np.zeros((n, k_steps))
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
    market = rv.market_size
    margin = _margins(scenario, t)
    per_step = {}  # step length -> (e, B, L)

    x0 = rv.initial if market is None else rv.initial / math.sqrt(1.0 - (rv.initial / market) ** 2)
    log_x = np.empty((n, k_steps + 1))
    log_x[:, 0] = math.log(x0)
    g = np.full(n, rv.initial_growth)
    for k in range(1, k_steps + 1):
        a, b = t[k - 1], t[k]
        h = b - a
        if h not in per_step:
            e, big_b, cov = step_covariance(h, kappa, s_g, rho)
            per_step[h] = (e, big_b, cholesky3(cov))
        e, big_b, L = per_step[h]
        z1 = z1_all[:, k - 1]
        z2 = z2_all[:, k - 1]
        z3 = z3_all[:, k - 1]
        extra = rv.agi_growth_uplift * overlap(a, b, tau_a, np.inf) / h
        for size, lo, hi, missed in haircuts:
            extra = extra - np.where(missed, size * overlap(a, b, lo, hi) / h, 0.0)
        shock = L[0, 0] * z1  # sqrt(h) z1: the increment of W1
        integral = L[1, 0] * z1 + L[1, 1] * z2  # I
        end = L[2, 0] * z1 + L[2, 1] * z2 + L[2, 2] * z3  # G
        step = (gbar + extra - 0.5 * sigma * sigma) * h + (g - gbar) * big_b + integral + sigma * shock
        if jumps is not None:
            step = step + poisson_count(jumps[:, k - 1], rv.jump_intensity * h) * math.log(1.0 - rv.jump_loss)
        log_x[:, k] = log_x[:, k - 1] + step
        g = gbar + (g - gbar) * e + end

    h_all = np.diff(t)
    la, lb = log_x[:, :-1], log_x[:, 1:]
    booked = h_all * mean_rate(la, lb, market)
    profit = margin * booked

    # calendar years: a step's part (p, q) earns (q - p) * the mean rate over its share of the log-linear path
    t0, horizon = scenario.simulation.valuation_date, scenario.simulation.horizon
    year_list = list(range(t0.year, horizon.year + 1))
    new_year = [years(scenario, Date(y, 1, 1)) for y in year_list[1:]]
    by_year = np.zeros((n, len(year_list)))
    for k in range(1, k_steps + 1):
        a, b = t[k - 1], t[k]
        h = b - a
        knots = [a] + [c for c in new_year if a < c < b] + [b]
        for p, q in zip(knots[:-1], knots[1:], strict=True):
            y = sum(1 for c in new_year if c <= p)
            lp = la[:, k - 1] + (p - a) / h * (lb[:, k - 1] - la[:, k - 1])
            lq = la[:, k - 1] + (q - a) / h * (lb[:, k - 1] - la[:, k - 1])
            by_year[:, y] += (q - p) * mean_rate(lp, lq, market)
    return RevenuePaths(log_x=log_x, rate=saturated_rate(np.exp(log_x), market), booked=booked, profit=profit,
                        years=by_year, year_list=year_list)


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


# When a step's flows (revenue and profit shares, own value, the company's profit) are discounted: "middle" of
# the step, as valuation.engine.compile.flow_times now dates them (revenue is earned through the step), or its
# "end" (the model before).  One-off payments fall on their date, equity stakes and the exit value at the horizon.
STEP_FLOWS_AT = "middle"


def flow_time(a, b):
    """The date (years) at which the flows of the step (a, b] are discounted."""
    if STEP_FLOWS_AT == "middle":
        return 0.5 * (np.asarray(a) + np.asarray(b))
    return np.asarray(b)


def _df(rate: float, when) -> np.ndarray:
    return (1.0 + rate) ** (-np.asarray(when, dtype=np.float64))


def risk_class_of(clause) -> str:
    """The market view's risk class of a clause: its own ``risk``, else by kind."""
    if clause.risk is not None:
        return clause.risk
    if isinstance(clause, RevenueShare):
        return "revenue"
    if isinstance(clause, (ProfitShare, EquityStake)):
        return "equity"
    if isinstance(clause, Payment):
        return "contractual"
    if isinstance(clause, OwnValue):
        return "revenue" if clause.revenue_rate is not None else "contractual"
    raise TypeError(f"unknown clause {type(clause).__name__}")


def _clause_pv(clause, scenario: Scenario, t, revenue, profit, value_at_horizon, times, met, pv, party_index,
               view: str = "party"):
    """Add one clause's discounted flows to ``pv`` (paths, parties).

    ``view``: "party" (each party's own rate, or the clause's ``discount_rate``; own value included) or
    "market" (both legs at the rate of the clause's risk class; own value is no transfer and counts nothing).
    """
    n = pv.shape[0]
    k_steps = len(t) - 1
    horizon = t[-1]
    parties = scenario.parties
    if view == "market" and isinstance(clause, OwnValue):
        return

    def rate_of(name: str) -> float:
        if view == "market":
            return scenario.market.rates[risk_class_of(clause)]
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
            transfer(clause.payer, clause.payee, pay, flow_time(a, b))
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
            transfer(clause.payer, clause.payee, pay, flow_time(a, b))
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
            pv[:, j] += np.where(active, x, 0.0) * _df(r, flow_time(a, b))
        return
    raise TypeError(f"unknown clause {type(clause).__name__}")


def _views(scenario: Scenario, t, rv: RevenuePaths, value_at_horizon, times, met, view: str):
    """Raw PVs (paths, structures, parties) of one view, before fallbacks."""
    party_names = list(scenario.parties)
    party_index = {name: j for j, name in enumerate(party_names)}
    paths = rv.booked.shape[0]
    raw = np.zeros((paths, len(scenario.structures), len(party_names)))
    for s, structure in enumerate(scenario.structures):
        pv = np.zeros((paths, len(party_names)))
        for clause in [*structure.clauses, *scenario.common_clauses]:
            _clause_pv(clause, scenario, t, rv.booked, rv.profit, value_at_horizon, times, met, pv, party_index,
                       view)
        raw[:, s, :] = pv
    return raw


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
    rv = _revenue(scenario, key, idx, t, times["agi_declared"], met)
    rate_at_horizon = rv.rate[:, -1]
    value_at_horizon = scenario.revenue.exit_multiple * rate_at_horizon

    structures = scenario.structures
    index = {st.name: i for i, st in enumerate(structures)}
    resolved = np.empty((paths, len(structures)), dtype=np.int64)
    for s in range(len(structures)):
        for i in range(paths):
            r = s
            while structures[r].requires is not None and not met[structures[r].requires][i]:
                r = index[structures[r].fallback]
            resolved[i, s] = r
    rows = np.arange(paths)[:, None]

    raw = _views(scenario, t, rv, value_at_horizon, times, met, "party")
    pvs = raw[rows, resolved, :]
    market_pvs = None
    company = np.full(paths, np.nan)
    if scenario.market is not None:
        market_pvs = _views(scenario, t, rv, value_at_horizon, times, met, "market")[rows, resolved, :]
        r = scenario.market.rates[scenario.market.company_class]
        company = (rv.profit * _df(r, flow_time(t[:-1], t[1:]))).sum(axis=1) + value_at_horizon * _df(r, t[-1])
    return ReferenceResult(pvs=pvs, raw_pvs=raw, times=times, met=met, revenue_at_horizon=rate_at_horizon,
                           resolved=resolved, structures=[st.name for st in structures],
                           parties=list(scenario.parties), market_pvs=market_pvs, company=company,
                           revenue_by_year=rv.years, years=rv.year_list, revenue_path=rv.rate, booked=rv.booked,
                           step_time=t)


# ------------------------------------------------------------ uncertain inputs

DRIVER_NAMES = ("agi_declared", "revenue_growth")
Z_95 = 1.6448536269514722


def input_quantile(scenario: Scenario, key: str, u: np.ndarray) -> np.ndarray:
    """An uncertain input's values at uniforms ``u``, from its distribution's definition (scipy.stats):
    uniform, triangular and pert on ``[low, high]`` (mode: the value); normal and lognormal with 5th and 95th
    percentiles ``low`` and ``high``, truncated to the input's allowed range."""
    from scipy import stats

    from valuation.scenario.ranges import bounds

    r = scenario.ranges[key]
    mode = float(scenario.value_at(key))
    low, high = r.low, r.high
    if r.dist == "uniform":
        return stats.uniform(loc=low, scale=high - low).ppf(u)
    if r.dist == "triangular":
        return stats.triang((mode - low) / (high - low), loc=low, scale=high - low).ppf(u)
    if r.dist == "pert":
        a = 1 + 4 * (mode - low) / (high - low)
        b = 1 + 4 * (high - mode) / (high - low)
        return stats.beta(a, b, loc=low, scale=high - low).ppf(u)
    lo, hi, open_lo, open_hi = bounds(scenario, key)
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    if r.dist == "lognormal":
        m, s = (math.log(low) + math.log(high)) / 2, (math.log(high) - math.log(low)) / (2 * Z_95)
        a = (math.log(lo) - m) / s if lo > 0 else -np.inf
        b = (math.log(hi) - m) / s if np.isfinite(hi) else np.inf
        x = np.exp(stats.truncnorm(a, b, loc=m, scale=s).ppf(u))
    else:
        m, s = (low + high) / 2, (high - low) / (2 * Z_95)
        x = stats.truncnorm((lo - m) / s, (hi - m) / s, loc=m, scale=s).ppf(u)
    return np.clip(x, np.nextafter(lo, np.inf) if open_lo else lo, np.nextafter(hi, -np.inf) if open_hi else hi)


def growth_score_coefficients(scenario: Scenario) -> np.ndarray:
    """(3, K): log revenue at the horizon's Gaussian part as a combination of each step's three normals (the
    revenue shock, the growth's second and third), from :func:`step_covariance`: the growth shock G of step k
    adds ``c_k G`` with ``c_k = B_{k+1} + e_{k+1} c_{k+1}``."""
    rv = scenario.revenue
    t = time_grid(scenario)
    K = len(t) - 1
    steps = [step_covariance(t[k] - t[k - 1], rv.mean_reversion, rv.growth_volatility, rv.correlation)
             for k in range(1, K + 1)]
    c = np.zeros(K)
    for k in range(K - 2, -1, -1):
        c[k] = steps[k + 1][1] + steps[k + 1][0] * c[k + 1]
    out = np.zeros((3, K))
    for k, (_, _, cov) in enumerate(steps):
        L = cholesky3(cov)
        out[0, k] = L[1, 0] + rv.volatility * L[0, 0] + c[k] * L[2, 0]
        out[1, k] = L[1, 1] + c[k] * L[2, 1]
        out[2, k] = c[k] * L[2, 2]
    return out


def reference_input_values(scenario: Scenario, paths: int, seed: int, first: int = 0) -> dict[str, np.ndarray]:
    """Every uncertain input's value on each path: its own uniform (counter ``input:<key>``), through the
    Gaussian copula of the scenario's correlations (normal scores: ndtri of the inputs' and the drivers' uniforms,
    the revenue path's standardised Gaussian part; target rank r -> 2 sin(pi r / 6); Cholesky, drivers first),
    then its quantile function."""
    from scipy.special import ndtr

    key, _ = key_from_seed(seed)
    idx = np.arange(first, first + paths, dtype=np.int64)
    names = sorted(k for k, r in scenario.ranges.items() if r.dist is not None)
    u = {}
    for name in names:
        stream, draw = named_counter(f"input:{name}")
        u[name] = uniforms(key, idx, stream, [draw])[:, 0, 0]
    if scenario.correlations:
        named = {n for c in scenario.correlations for n in c.between}
        order = [d for d in (*DRIVER_NAMES, *scenario.events) if d in named] + [n for n in names if n in named]
        scores = []
        for name in order:
            if name == "agi_declared":
                scores.append(ndtri(uniforms(key, idx, STREAM_DRIVERS, [0])[:, 0, 0]))
            elif name == "revenue_growth":
                coef = growth_score_coefficients(scenario)
                K = coef.shape[1]
                z1 = ndtri(uniforms(key, idx, STREAM_SHOCKS, np.arange(1, K + 1))[:, :, 0])
                z2 = ndtri(uniforms(key, idx, STREAM_SHOCKS, np.arange(1, K + 1))[:, :, 1])
                z3 = ndtri(uniforms(key, idx, STREAM_JUMPS, np.arange(1, K + 1))[:, :, 1])
                score = z1 @ coef[0] + z2 @ coef[1] + z3 @ coef[2]
                scores.append(score / np.sqrt((coef ** 2).sum()))
            elif name in scenario.events:
                stream, draw = named_counter(f"event:{name}")
                scores.append(ndtri(uniforms(key, idx, stream, [draw])[:, 0, 0]))
            else:
                scores.append(ndtri(u[name]))
        R = np.eye(len(order))
        for c in scenario.correlations:
            i, j = order.index(c.between[0]), order.index(c.between[1])
            R[i, j] = R[j, i] = 2 * math.sin(math.pi * c.rank / 6)
        z = np.column_stack(scores) @ np.linalg.cholesky(R).T
        for v, name in enumerate(order):
            if name in u:
                u[name] = ndtr(z[:, v])
    return {name: input_quantile(scenario, name, u[name]) for name in names}


def reference_simulate_uncertain(scenario: Scenario, paths: int, seed: int, first: int = 0
                                 ) -> tuple[ReferenceResult, dict[str, np.ndarray]]:
    """:func:`reference_simulate` with every uncertain input drawn per path: each path is the fixed scenario
    with that path's values (``with_values``), run on that path's random numbers."""
    from valuation.scenario.ranges import timing_keys

    values = reference_input_values(scenario, paths, seed, first)
    refitted = [prefix for prefix, spec in timing_keys(scenario).items()
                if getattr(spec, "family", "") == "quantiles" and spec.fit != "piecewise"
                and any(k.startswith(prefix + ".") for k in values)]
    runs = []
    for i in range(paths):
        fixed = scenario.with_values({"correlations": [], **{k: float(v[i]) for k, v in values.items()}})
        if refitted:  # each path's least-squares fit, to the last digit (scipy's stops some 1e-8 short)
            tables = timing_keys(fixed)
            fixed = fixed.with_values({prefix: precise_fit(fixed, tables[prefix]) for prefix in refitted})
        runs.append(reference_simulate(fixed, 1, seed, first=first + i))
    head = runs[0]
    stack = {name: np.concatenate([getattr(r, name) for r in runs]) for name in
             ("pvs", "raw_pvs", "revenue_at_horizon", "resolved", "company", "revenue_by_year", "revenue_path",
              "booked")}
    market = np.concatenate([r.market_pvs for r in runs]) if head.market_pvs is not None else None
    result = ReferenceResult(
        pvs=stack["pvs"], raw_pvs=stack["raw_pvs"], times={k: np.concatenate([r.times[k] for r in runs])
                                                           for k in head.times},
        met={k: np.concatenate([r.met[k] for r in runs]) for k in head.met},
        revenue_at_horizon=stack["revenue_at_horizon"], resolved=stack["resolved"], structures=head.structures,
        parties=head.parties, market_pvs=market, company=stack["company"], revenue_by_year=stack["revenue_by_year"],
        years=head.years, revenue_path=stack["revenue_path"], booked=stack["booked"], step_time=head.step_time)
    return result, values


_PRECISE: dict = {}


def _precise_fit_cached(scenario: Scenario, spec) -> dict:
    key = (id(scenario), spec.model_dump_json())
    if key not in _PRECISE:
        _PRECISE[key] = (scenario, precise_fit(scenario, spec))  # (the scenario kept: its id stays its own)
    return _PRECISE[key][1]


def precise_fit(scenario: Scenario, spec) -> dict:
    """A quantile table's least-squares fit (exponential, weibull, lognormal) as its family's own table:
    :func:`models.timing.fit_quantiles`' solution, then Newton steps on the sum of squares in 40-digit
    arithmetic (mpmath, derivatives numerical), so that it is the minimum to the last digit."""
    import mpmath as mp

    start = 0.0 if spec.start is None else as_years(scenario, spec.start)
    by = [as_years(scenario, p.by) for p in spec.points]
    probs = [p.p for p in spec.points]
    fit = fit_quantiles(by, probs, family=spec.fit, start=start, never=spec.never).distribution
    names = {"exponential": ("rate",), "weibull": ("shape", "scale"), "lognormal": ("median", "sigma")}[spec.fit]
    with mp.workdps(40):
        r = [mp.mpf(b) - mp.mpf(start) for b in by]
        pn = [mp.mpf(p) / (1 - mp.mpf(spec.never)) for p in probs]

        def cost(*y):
            a = mp.e ** y[0]
            b = mp.e ** y[1] if len(y) > 1 else None
            total = mp.mpf(0)
            for rj, pj in zip(r, pn, strict=True):
                if spec.fit == "lognormal":
                    f = mp.ncdf((mp.log(rj) - y[0]) / b)
                elif spec.fit == "weibull":
                    f = 1 - mp.e ** (-((rj / b) ** a))
                else:
                    f = 1 - mp.e ** (-a * rj)
                total += (f - pj) ** 2 / 2
            return total

        y = [mp.log(mp.mpf(getattr(fit, name))) for name in names]
        k = len(y)
        for _ in range(6):
            grad = mp.matrix([mp.diff(cost, y, tuple(int(i == j) for i in range(k))) for j in range(k)])
            hess = mp.matrix(k, k)
            for i in range(k):
                for j in range(k):
                    hess[i, j] = mp.diff(cost, y, tuple((i == m) + (j == m) for m in range(k)))
            step = mp.lu_solve(hess, grad)
            y = [y[j] - step[j] for j in range(k)]
        out = {name: float(mp.e ** v) for name, v in zip(names, y, strict=True)}
    return {"family": spec.fit, **out, "start": spec.start, "never": spec.never}


# --------------------------------------------------------------- per-path coefficients, one path at a time
# The kernel computes each path's growth coefficients and jump-count tails for its paths side by side
# (valuation.engine.uncertain.step_coefficients_paths, poisson_tail_paths); these are the same sums one path at a
# time, which those must match bit for bit.

from models._jit import jit  # noqa: E402
from models.revenue import integrated_ou  # noqa: E402

integrated_ou_jit = jit(integrated_ou)


@jit
def step_coefficients(h, kappa, s, rho):
    """:meth:`models.revenue.RevenueModel.step_tables` for one step length: (e, B, int_z1, int_z2, growth_z1,
    growth_z2, growth_z3)."""
    e, b, v_i, c_ig, v_g, c_wi = integrated_ou_jit(h, kappa)
    v_i = s * s * v_i
    c_ig = s * s * c_ig
    v_g = s * s * v_g
    c_wi = rho * s * c_wi
    c_wg = rho * s * b
    root = math.sqrt(h)
    i1 = c_wi / root if h > 0 else 0.0
    g1 = c_wg / root if h > 0 else 0.0
    i2 = math.sqrt(max(v_i - i1 * i1, 0.0))
    g2 = (c_ig - i1 * g1) / i2 if i2 > 0 else 0.0
    g3 = math.sqrt(max(v_g - g1 * g1 - g2 * g2, 0.0))
    return e, b, i1, i2, g1, g2, g3


@jit
def poisson_tail(mean, out, pmf):
    """``out[n - 1] = P(N >= n)`` for a Poisson count of this mean, ``n = 1 .. len(out)`` (each tail summed from
    the far end, accurate where it is tiny); ``pmf``: scratch of ``len(out) + 11`` (the columns are as many as
    the largest intensity needs, so ten more terms are far below every tail kept)."""
    m = out.shape[0]
    for j in range(m):
        out[j] = 0.0
    if not mean > 0.0:
        return
    top = pmf.shape[0] - 1
    pmf[0] = math.exp(-mean)
    for j in range(1, top + 1):
        pmf[j] = pmf[j - 1] * (mean / j)
    acc = 0.0
    for j in range(top, 0, -1):
        acc += pmf[j]
        if j <= m:
            out[j - 1] = acc
    if mean > 1.0:  # 1 - P(0) loses nothing here, and the sum of many terms a little: take it exactly
        out[0] = -math.expm1(-mean)
