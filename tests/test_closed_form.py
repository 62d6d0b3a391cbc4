"""Monte Carlo means against exact expectations (tolerance: 3 standard errors).

Revenue earned over a step is the integral of the rate along the log-linear path between its ends (for
deterministic growth, exactly ``R0 (e^{g b} - e^{g a}) / g``), and a step's flows are discounted at its middle.
"""

from datetime import date

import numpy as np

from conftest import minimal_dict
from valuation import simulate
from valuation.engine.compile import time_grid
from valuation.scenario import scenario_from_dict

NUM_SE = 3.0


def _grid(s):
    t = time_grid(s.horizon_years, s.simulation.steps_per_year)
    return t, np.diff(t)


def _earned(r0: float, g: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Revenue earned over (a, b] at the deterministic rate r0 e^{g t}."""
    return r0 * (np.exp(g * b) - np.exp(g * a)) / g


def test_revenue_share_ending_at_agi_with_constant_hazard():
    """Constant-hazard AGI, deterministic growth: E[PV] = sum rate E_k DF(mid_k) E[active share of step k], and
    within 1% of the continuous model's rate R0 / (lambda + ln 1.05 - g) (1 - e^{-(lambda + ln 1.05 - g) H})."""
    lam, rate, g, r0 = 0.15, 0.2, 0.3, 10.0
    s = scenario_from_dict(minimal_dict())
    result = simulate(s, paths=40_000, seed=5)
    t, h = _grid(s)
    a, b = t[:-1], t[1:]
    mid = 0.5 * (a + b)
    revenue = _earned(r0, g, a, b)
    active = np.exp(-lam * a) * -np.expm1(-lam * h) / (lam * h)  # E[overlap((a,b], [0, tau)) / h]
    exact_payee = np.sum(rate * revenue * active * 1.05 ** -mid)
    exact_payer = -np.sum(rate * revenue * active * 1.10 ** -mid)
    for party, exact in (("payee", exact_payee), ("payer", exact_payer)):
        x = result.pv("share", party)
        se = x.std(ddof=1) / np.sqrt(x.size)
        assert abs(x.mean() - exact) < NUM_SE * se, (party, x.mean(), exact, se)
    c = lam + np.log(1.05) - g
    continuous = rate * r0 * -np.expm1(-c * s.horizon_years) / c
    assert abs(exact_payee / continuous - 1) < 0.01, (exact_payee, continuous)
    # The test can fail: a share that ended one step late would be far outside.
    late = np.sum(rate * revenue * np.exp(-lam * np.maximum(a - h, 0)) * 1.05 ** -mid)
    x = result.pv("share", "payee")
    assert abs(x.mean() - late) > 10 * x.std(ddof=1) / np.sqrt(x.size)


def test_lognormal_revenue_with_jumps_has_the_exact_mean():
    """sigma > 0 and Poisson jumps, constant growth: E[R_H] = R0 e^{(g - lambda loss) H} exactly at any step (a
    count of jumps per step, not at most one: the Bernoulli scheme's prod (1 - p_k loss) is 4% higher here)."""
    lam_jump, loss, sigma, g, r0 = 0.4, 0.3, 0.35, 0.1, 10.0
    d = minimal_dict(volatility=sigma, jump_intensity=lam_jump, jump_loss=loss, initial_growth=g,
                     long_run_growth=g)
    s = scenario_from_dict(d)
    result = simulate(s, paths=100_000, seed=9)
    t, h = _grid(s)
    H = s.horizon_years
    exact = r0 * np.exp((g - lam_jump * loss) * H)
    x = result.drivers["revenue_at_horizon"].to_numpy()
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert abs(x.mean() - exact) < NUM_SE * se, (x.mean(), exact, se)
    bernoulli = r0 * np.exp(g * H) * np.prod(1.0 + np.expm1(-lam_jump * h) * loss)
    assert abs(bernoulli - exact) > NUM_SE * se  # sharp enough to see at most one jump a step
    no_jumps = r0 * np.exp(g * H)
    assert abs(no_jumps - exact) > 10 * se


def test_equity_stake_at_horizon_matches_lognormal_mean():
    """Stake value = fraction x multiple x R_H, E[R_H] = R0 e^{g H} for constant growth."""
    sigma, g, r0, frac, mult = 0.3, 0.08, 10.0, 0.25, 5.0
    d = minimal_dict(volatility=sigma, initial_growth=g, long_run_growth=g, exit_multiple=mult)
    d["structures"][0]["clauses"] = [{"type": "equity_stake", "holder": "payee", "issuer": "payer",
                                      "fraction": frac}]
    s = scenario_from_dict(d)
    result = simulate(s, paths=40_000, seed=2)
    H = s.horizon_years
    exact = frac * mult * r0 * np.exp(g * H) * 1.05 ** -H
    x = result.pv("share", "payee")
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert abs(x.mean() - exact) < NUM_SE * se, (x.mean(), exact, se)


def test_schedule_pays_nothing_before_its_first_date():
    """Deterministic revenue: a 20% step schedule from mid-2028 pays exactly its share of each step after it."""
    d = minimal_dict()
    clause = d["structures"][0]["clauses"][0]
    clause.pop("end")
    clause.pop("rate")
    clause["schedule"] = [{"date": date(2028, 5, 17), "rate": 0.2}]
    s = scenario_from_dict(d)
    result = simulate(s, paths=50, seed=1)
    t, h = _grid(s)
    first = s.years(date(2028, 5, 17))
    share = np.clip((t[1:] - first) / h, 0.0, 1.0)
    exact = np.sum(0.2 * share * _earned(10.0, 0.3, t[:-1], t[1:]) * 1.05 ** -(0.5 * (t[:-1] + t[1:])))
    np.testing.assert_allclose(result.pv("share", "payee"), exact, rtol=1e-12)


def test_event_condition_met_false_pays_on_the_other_paths():
    d = minimal_dict()
    d["structures"][0]["clauses"] = [
        {"type": "payment", "payer": "payer", "payee": "payee", "amount": 2.0, "amount_otherwise": 0.5,
         "date": date(2030, 1, 1), "condition": {"event": "agi_declared", "before": date(2029, 1, 1), "met": False}},
    ]
    s = scenario_from_dict(d)
    result = simulate(s, paths=2_000, seed=4)
    early = result.drivers["agi_declared"].to_numpy() <= s.years(date(2029, 1, 1))
    df = 1.05 ** -s.years(date(2030, 1, 1))
    np.testing.assert_allclose(result.pv("share", "payee"), np.where(early, 0.5, 2.0) * df, rtol=1e-12)
    assert 0.2 < early.mean() < 0.8
