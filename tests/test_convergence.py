"""The discretisation converges: quarterly steps give the continuous model's numbers (issue 12, point 1).

Revenue at step ends is exact at any step length (the integrated Ornstein-Uhlenbeck growth with the revenue
shock, Poisson jumps), revenue earned over a step is the integral of the rate along the log-linear path
between its ends, and a step's flows are discounted at its middle.  Tolerances: standard errors, plus, where a
run is compared with the continuous model, the log-linear interpolation's own first-order term (a Brownian
bridge's ``exp(sigma^2 s (h - s) / 2h)`` averaged over the step: ``sigma^2 h / 12``, relative).
"""

from __future__ import annotations

import copy
import math
from datetime import date

import numpy as np
import pytest
from scipy import integrate

from conftest import BASE_CASE, minimal_dict
from valuation import load_scenario, simulate
from valuation.scenario import scenario_from_dict

NUM_SE = 3.5


def _rel_or_se(a: float, b: float, se: float) -> bool:
    """Within 1% of each other, beyond noise: |a - b| <= 1% |b| + NUM_SE standard errors of the difference."""
    return abs(a - b) <= 0.01 * abs(b) + NUM_SE * se


def test_quarterly_steps_give_the_weekly_numbers_of_the_base_case():
    """Mean revenue at the horizon, revenue earned in each calendar year and every mean PV (both views): within
    1% of the 52-steps-a-year run.  The old scheme (growth at each step's start, end-of-step rate x length, flows
    discounted at step ends) was 12% high at the horizon and 7-11% high in Microsoft's PVs."""
    base = load_scenario(BASE_CASE)
    runs = {spy: simulate(base.with_values({"simulation.steps_per_year": spy}), paths=60_000, seed=7,
                          keep_paths=True) for spy in (4, 52)}
    q, w = runs[4], runs[52]
    rq, rw = q.drivers["revenue_at_horizon"], w.drivers["revenue_at_horizon"]
    se = math.hypot(rq.std() / math.sqrt(rq.size), rw.std() / math.sqrt(rw.size))
    assert _rel_or_se(rq.mean(), rw.mean(), se), (rq.mean(), rw.mean(), se)
    yq, yw = q.revenue_by_year(), w.revenue_by_year()
    for year in yq.index:
        assert _rel_or_se(yq.loc[year, "mean"], yw.loc[year, "mean"], math.hypot(yq.loc[year, "se"],
                                                                                 yw.loc[year, "se"])), year
    for view in q.views:
        sq, sw = q.summary(view=view), w.summary(view=view)
        for key in sq.index:
            assert _rel_or_se(sq.loc[key, "mean"], sw.loc[key, "mean"],
                              math.hypot(sq.loc[key, "se"], sw.loc[key, "se"])), (view, key)


def _mean_rate(rev: dict, t: float) -> float:
    """E[revenue rate at t] of the continuous model without AGI uplift, haircuts or a market size:
    X0 exp(gbar t + (g0 - gbar) B(t) + Var(I_t) / 2 + Cov(sigma W_t, I_t)) exp(-lambda loss t), with the
    integrated OU variance and covariance by quadrature (independent of models.revenue's closed forms)."""
    kappa, s, sigma, rho = rev["mean_reversion"], rev.get("growth_volatility", 0.0), rev["volatility"], \
        rev.get("correlation", 0.0)

    def weight(u: float) -> float:  # d(integral of g)/d(noise at time u): (1 - e^{-kappa (t - u)}) / kappa
        return t - u if kappa == 0 else -math.expm1(-kappa * (t - u)) / kappa

    b = weight(0.0)
    var_i = s * s * integrate.quad(lambda u: weight(u) ** 2, 0.0, t, epsabs=0, epsrel=1e-12)[0]
    cov = rho * s * sigma * integrate.quad(weight, 0.0, t, epsabs=0, epsrel=1e-12)[0]
    gbar, g0 = rev["long_run_growth"], rev["initial_growth"]
    jumps = rev.get("jump_intensity", 0.0) * rev.get("jump_loss", 0.0) * t
    return rev["initial"] * math.exp(gbar * t + (g0 - gbar) * b + 0.5 * var_i + cov - jumps)


CASES = {
    "base revenue, no uplift": {},
    "high growth volatility": {"growth_volatility": 0.3, "correlation": -0.7, "mean_reversion": 0.5},
    "fast mean reversion": {"mean_reversion": 20.0, "growth_volatility": 0.3, "correlation": 0.6},
}


@pytest.mark.parametrize("case", list(CASES))
def test_revenue_meets_the_continuous_model_analytic_mean(case):
    """Without the AGI uplift the continuous model's mean revenue rate is known in closed form: the horizon rate
    within NUM_SE standard errors, and revenue earned in whole calendar years (the integral of the mean rate)
    within NUM_SE standard errors plus the interpolation's sigma^2 h / 12."""
    d = _base_dict()
    d["revenue"].pop("market_size")  # the closed form is the unbounded process's
    d["revenue"].update({"agi_growth_uplift": 0.0, **CASES[case]})
    for dl in d.get("deadlines", []):
        dl.pop("growth_haircut", None)
        dl.pop("haircut_years", None)
    s = scenario_from_dict(d)
    r = simulate(s, paths=80_000, seed=11, keep_paths=True)
    rev = {k: (v if not isinstance(v, (list, tuple)) else v) for k, v in d["revenue"].items()}
    T = s.horizon_years
    x = r.drivers["revenue_at_horizon"].to_numpy()
    exact = _mean_rate(rev, T)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert abs(x.mean() - exact) <= NUM_SE * se, (x.mean(), exact, se)
    years = r.revenue_by_year()
    h = 1.0 / s.simulation.steps_per_year
    for year in (2026, 2030, 2035):
        lo, hi = s.years(date(year, 1, 1)), s.years(date(year + 1, 1, 1))
        want = integrate.quad(lambda t: _mean_rate(rev, t), lo, hi, epsrel=1e-10)[0]
        got, got_se = years.loc[year, "mean"], years.loc[year, "se"]
        assert abs(got - want) <= NUM_SE * got_se + rev["volatility"] ** 2 * h / 12 * want, (year, got, want, got_se)


def _base_dict() -> dict:
    import tomllib

    with BASE_CASE.open("rb") as fh:
        plain = copy.deepcopy(_plain(tomllib.load(fh)))
    plain.pop("correlations", None)  # plain numbers have no ranges: nothing uncertain to correlate
    return plain


def _plain(node):
    """The file's sourced numbers as plain numbers (for editing in a test)."""
    if isinstance(node, dict):
        if "value" in node:
            return _plain(node["value"])
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _deterministic(spy: int, **revenue) -> float:
    d = minimal_dict(**revenue)
    d["simulation"]["steps_per_year"] = spy
    d["structures"][0]["clauses"][0].pop("end")  # the share runs to the horizon
    s = scenario_from_dict(d)
    return float(simulate(s, paths=8, seed=1).pv("share", "payee").mean())


def test_an_uncapped_share_on_deterministic_growth_converges_to_the_continuous_integral():
    """20% of R0 e^{g t} from 0 to H at 5%: rate R0 (e^{(g - ln 1.05) H} - 1) / (g - ln 1.05).  Quarterly within
    1%, and the error falls with the step (second order: a step's flows at its middle, revenue along the exact
    exponential)."""
    g, r0, rate = 0.3, 10.0, 0.2
    H = scenario_from_dict(minimal_dict()).horizon_years  # 3,652 days: 9.9986 years
    c = g - math.log(1.05)
    exact = rate * r0 * math.expm1(c * H) / c
    errors = {spy: abs(_deterministic(spy) / exact - 1.0) for spy in (1, 4, 12, 52)}
    assert errors[4] < 0.01, errors
    assert errors[1] > errors[4] > errors[12] > errors[52], errors
    assert errors[4] / errors[12] > 5, errors  # about (12 / 4)^2 = 9: second order
    # The old scheme (end-of-step revenue, discounted at the step's end) is first order and far off quarterly.
    old = sum(rate * r0 * math.exp(g * k / 4) * 0.25 * 1.05 ** (-k / 4) for k in range(1, 41))
    assert abs(old / exact - 1.0) > 0.03


def test_a_one_step_capped_share_is_the_exact_expectation_of_its_payoff():
    """One yearly step, lognormal revenue: the payment is min(rate x B, cap) with B = h (X1 - X0) / ln(X1 / X0)
    the revenue earned along the step, X1 = X0 exp(g - sigma^2 / 2 + sigma z).  Its expectation by
    Gauss-Hermite quadrature over z (a call spread on B) against the Monte Carlo mean, within NUM_SE standard
    errors; the cap binds on about half the paths."""
    sigma, g, r0, rate = 0.6, 0.2, 10.0, 0.2
    d = minimal_dict(volatility=sigma, initial_growth=g, long_run_growth=g)
    d["simulation"].update({"steps_per_year": 1, "horizon": date(2026, 1, 1)})
    clause = d["structures"][0]["clauses"][0]
    clause.pop("end")
    cap = rate * r0 * 1.15
    clause["cap"] = cap
    s = scenario_from_dict(d)
    r = simulate(s, paths=100_000, seed=3, keep_paths=True)
    h = s.horizon_years
    z, w = np.polynomial.hermite_e.hermegauss(120)
    d_log = (g - 0.5 * sigma**2) * h + sigma * math.sqrt(h) * z
    earned = h * r0 * np.expm1(d_log) / d_log
    payoff = np.minimum(rate * earned, cap) * 1.05 ** (-h / 2)
    exact = float(np.sum(w * payoff) / np.sqrt(2 * np.pi))
    x = r.pv("share", "payee")
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert abs(x.mean() - exact) <= NUM_SE * se, (x.mean(), exact, se)
    binds = np.mean(np.isclose(x, cap * 1.05 ** (-h / 2)))
    assert 0.3 < binds < 0.7, binds
    uncapped = float(np.sum(w * rate * earned * 1.05 ** (-h / 2)) / np.sqrt(2 * np.pi))
    assert abs(uncapped - exact) > 20 * se  # the cap matters: the test sees it
