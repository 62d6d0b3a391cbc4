"""The compiled kernel against the independent numpy reference (tests/reference.py), path by path."""

from __future__ import annotations

import copy
import sys
import tomllib
from datetime import date
from pathlib import Path

import numpy as np
import pytest

import valuation
from valuation.scenario import scenario_from_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import (  # noqa: E402
    cholesky3,
    mean_rate,
    reference_simulate,
    reference_simulate_uncertain,
    step_covariance,
)

ROOT = Path(__file__).resolve().parents[1]
BASE_CASE = ROOT / "inputs" / "base_case.toml"


def base_case_dict() -> dict:
    with BASE_CASE.open("rb") as fh:
        return tomllib.load(fh)


RTOL_PV = 1e-9
RTOL_DRIVERS = 1e-12
RTOL_REVENUE = 1e-12  # the revenue rate at the step ends and at the horizon
RTOL_YEARS = 1e-11  # revenue earned in each calendar year (sums of positive amounts)
RTOL_UNCERTAIN = 1e-9  # with uncertain inputs: each path's inputs (a PERT from a table, 1e-11) and all else
MARKET_RATES = {"revenue": 0.12, "equity": 0.2, "contractual": 0.05}


def _close_pv(kernel, expected, what: str, rtol: float = RTOL_PV) -> None:
    """Within ``rtol`` of the value, or of the largest value over the paths (PVs are sums of signed flows)."""
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(kernel, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def _compare(scenario, paths: int, seed: int, uncertain: bool = False):
    """Kernel and reference path by path; ``uncertain``: with every input that has a distribution drawn per path
    (the reference samples them itself and runs each path as a fixed scenario), all to 1e-9."""
    result = valuation.simulate(scenario, paths=paths, seed=seed, keep_paths=True, uncertain=uncertain)
    if uncertain:
        ref, values = reference_simulate_uncertain(scenario, paths=paths, seed=seed)
        drawn = result.input_values()
        for key, expected in values.items():
            np.testing.assert_allclose(drawn[key].to_numpy(), expected, rtol=RTOL_UNCERTAIN, atol=1e-12,
                                       err_msg=f"input {key}")
    else:
        ref = reference_simulate(scenario, paths=paths, seed=seed)
    rtol_drivers = RTOL_UNCERTAIN if uncertain else RTOL_DRIVERS
    rtol_revenue = RTOL_UNCERTAIN if uncertain else RTOL_REVENUE
    rtol_years = RTOL_UNCERTAIN if uncertain else RTOL_YEARS
    partial = result.partial
    S, P = len(ref.structures), len(ref.parties)
    views = 2 if scenario.market is not None else 1

    assert result.structures == ref.structures
    assert result.parties == ref.parties
    assert ref.pvs.shape == (paths, S, P)
    assert partial.pv.shape == (paths, views * S, P)  # the party view, then the market view

    drivers = result.drivers
    names = ["agi_declared", "agi_verified", *scenario.events]
    for name in names:
        np.testing.assert_allclose(drivers[name].to_numpy(), ref.times[name], rtol=rtol_drivers, atol=0,
                                   err_msg=f"driver {name}")
    for d in scenario.deadlines:
        if d.completion is not None:  # the deadline's own completion event
            np.testing.assert_allclose(drivers[f"deadline:{d.name}"].to_numpy(), ref.times[f"completion:{d.name}"],
                                       rtol=rtol_drivers, atol=0, err_msg=f"driver deadline:{d.name}")
        np.testing.assert_array_equal(drivers[f"met:{d.name}"].to_numpy(), ref.met[d.name],
                                      err_msg=f"met:{d.name}")
    np.testing.assert_allclose(drivers["revenue_at_horizon"].to_numpy(), ref.revenue_at_horizon,
                               rtol=rtol_revenue, atol=0, err_msg="revenue_at_horizon")
    np.testing.assert_allclose(partial.revenue, ref.revenue_at_horizon, rtol=rtol_revenue, atol=0,
                               err_msg="partial.revenue")
    np.testing.assert_allclose(result.step_time, ref.step_time, rtol=0, atol=0)
    recorded = result.revenue_sample
    assert recorded.shape == (min(paths, recorded.shape[0]), len(ref.step_time)) and recorded.shape[0] > 0
    np.testing.assert_allclose(recorded, ref.revenue_path[: recorded.shape[0]], rtol=rtol_revenue, atol=0,
                               err_msg="recorded revenue path")

    for s, structure in enumerate(ref.structures):
        for p, party in enumerate(ref.parties):
            _close_pv(partial.pv[:, s, p], ref.pvs[:, s, p], f"PV of {structure} / {party}")
            if ref.market_pvs is not None:
                _close_pv(partial.pv[:, S + s, p], ref.market_pvs[:, s, p],
                          f"market-view PV of {structure} / {party}")

    assert result.compiled.years == ref.years
    assert partial.years.shape == ref.revenue_by_year.shape == (paths, len(ref.years))
    np.testing.assert_allclose(partial.years, ref.revenue_by_year, rtol=rtol_years, atol=0,
                               err_msg="revenue by calendar year")
    # the calendar years split the revenue booked over the steps, nothing more or less
    np.testing.assert_allclose(ref.revenue_by_year.sum(axis=1), ref.booked.sum(axis=1), rtol=1e-13, atol=0)
    if scenario.market is None:
        assert ref.market_pvs is None and np.isnan(ref.company).all()
        assert np.isnan(partial.company).all()
    else:
        assert np.isfinite(ref.company).all()
        _close_pv(partial.company, ref.company, "company value")
    return result, ref


def market_dict(base: dict | None = None, market_size: float | None = 1500.0, **revenue) -> dict:
    """The base case (or ``base``) with a [market] table, a market size and other revenue inputs."""
    spec = copy.deepcopy(base if base is not None else base_case_dict())
    spec["market"] = {"rates": dict(MARKET_RATES)}
    spec["revenue"]["market_size"] = market_size
    spec["revenue"].update(revenue)
    if revenue:  # plain numbers have no ranges: the correlation of a replaced input goes with them
        spec.pop("correlations", None)
    return spec


def test_base_case_matches_reference():
    scenario = valuation.load_scenario(BASE_CASE)
    result, ref = _compare(scenario, paths=400, seed=20250806)
    # The base case exercises every branch it has: fallbacks and both deadline outcomes occur.
    assert (ref.resolved != np.arange(len(ref.structures))).any()
    for d in scenario.deadlines:
        assert 0 < ref.met[d.name].sum() < 400, d.name


def features_dict() -> dict:
    """A small scenario exercising what the base case lacks."""
    return {
        "name": "reference features",
        "simulation": {"valuation_date": date(2025, 3, 17), "horizon": date(2037, 8, 20), "steps_per_year": 12,
                       "paths": 300, "seed": 5},
        "parties": {
            "payer": {"discount_rate": 0.12},
            "payee": {"discount_rate": 0.06},
            "third": {"discount_rate": 0.0},
        },
        "agi": {
            "declaration": {"family": "piecewise_hazard", "start": date(2026, 1, 1), "never": 0.1, "pieces": [
                {"from": date(2027, 6, 30), "hazard": 0.05},
                {"from": date(2030, 2, 14), "hazard": 0.2},
                {"from": date(2034, 1, 1), "hazard": 0.1},
            ]},
            "verification_lag": {"family": "weibull", "shape": 1.5, "scale": 1.2, "start": 0.25},
            "never_verified": 0.15,
        },
        "revenue": {
            "initial": 10.0, "initial_growth": 0.4, "long_run_growth": 0.04, "mean_reversion": 0.3,
            "volatility": 0.25, "growth_volatility": 0.05, "correlation": -0.3,
            "jump_intensity": 0.4, "jump_loss": 0.3, "agi_growth_uplift": 0.15, "exit_multiple": 6.0,
            "margin": [
                {"date": date(2025, 3, 17), "margin": -0.6},
                {"date": date(2027, 9, 1), "margin": -0.1},
                {"date": date(2030, 5, 5), "margin": 0.3},
            ],
        },
        "events": {
            "ipo": {"family": "gompertz", "rate": 0.05, "growth": 0.3, "start": date(2025, 6, 1), "never": 0.05},
            "merger": {"family": "quantiles", "fit": "piecewise", "tail": "never",
                       "points": [{"by": 2.0, "p": 0.3}, {"by": 5.8, "p": 0.6}]},
            "licence": {"family": "exponential", "rate": 0.3},
        },
        "deadlines": [
            {"name": "filing", "date": date(2026, 11, 15),
             "completion": {"family": "lognormal", "median": 1.2, "sigma": 0.7},
             "growth_haircut": 0.08, "haircut_years": 1.75},
            {"name": "approval", "date": date(2029, 2, 1), "events": ["agi_verified", "merger"],
             "growth_haircut": 0.03},
            {"name": "closing", "date": date(2027, 4, 10),
             "completion": {"family": "fixed", "after": 1.5, "never": 0.4}},
        ],
        "common_clauses": [
            {"type": "payment", "payer": "third", "payee": "payee", "date": date(2030, 6, 30), "amount": 5.0,
             "amount_otherwise": 1.5, "condition": {"event": "agi_declared", "before": date(2031, 12, 31)}},
            {"type": "own_value", "party": "third", "amount_per_year": 2.5,
             "start": {"event": "agi_verified", "plus_years": 1.5}, "end": [date(2036, 2, 29), "ipo"]},
        ],
        "structures": [
            {"name": "base", "clauses": [
                {"type": "revenue_share", "payer": "payer", "payee": "payee", "rate": 0.2, "cap": 15.0,
                 "rate_after_cap": 0.05, "base_fraction": 0.8, "end": [{"event": "agi_verified", "plus_years": 1.5}]},
                {"type": "profit_share", "payer": "payer", "payee": "payee", "basis": "cumulative_profit",
                 "loss_carryforward": True, "start": date(2026, 2, 10),
                 "tiers": [{"rate": 0.5, "until": 20.0}, {"rate": 0.3, "until": 80.0}, {"rate": 0.1}]},
                {"type": "equity_stake", "holder": "payee", "issuer": "payer", "fraction": 0.1,
                 "condition": {"deadline": "filing", "met": False}, "discount_rate": 0.15},
            ]},
            {"name": "stepped", "requires": "closing", "fallback": "base", "clauses": [
                {"type": "revenue_share", "payer": "payer", "payee": "payee", "interpolation": "step",
                 "schedule": [{"date": date(2026, 5, 20), "rate": 0.15}, {"date": date(2029, 10, 3), "rate": 0.07},
                              {"date": date(2033, 1, 1), "rate": 0.0}],
                 "cap": 8.0, "rate_after_cap": 0.02, "start": "licence", "end": ["agi_declared", "never"]},
                {"type": "profit_share", "payer": "payer", "payee": "third", "basis": "payee_receipts",
                 "loss_carryforward": True, "discount_rate": 0.08,
                 "tiers": [{"rate": 0.6, "until": 3.0}, {"rate": 0.2, "until": 10.0}]},
                {"type": "own_value", "party": "payee", "revenue_rate": 0.02, "start": "merger",
                 "end": {"event": "ipo", "plus_years": 0.5}},
            ]},
            {"name": "chained", "requires": "approval", "fallback": "stepped", "clauses": [
                {"type": "revenue_share", "payer": "payer", "payee": "third", "interpolation": "linear",
                 "schedule": [{"date": date(2027, 1, 1), "rate": 0.3}, {"date": date(2032, 7, 1), "rate": 0.1}],
                 "cap": 0.0, "rate_after_cap": 0.1},
                {"type": "payment", "payer": "payee", "payee": "payer", "date": date(2029, 2, 1), "amount": 2.0,
                 "condition": {"deadline": "approval", "met": True}},
            ]},
        ],
    }


@pytest.fixture(scope="module")
def features_scenario():
    return scenario_from_dict(features_dict())


def test_features_match_reference(features_scenario):
    scenario = features_scenario
    result, ref = _compare(scenario, paths=400, seed=11)

    # The scenario really exercises its features on these paths.
    assert scenario.horizon_years * scenario.simulation.steps_per_year % 1 != 0  # horizon off the grid
    for d in scenario.deadlines:
        assert 0 < ref.met[d.name].sum() < 400, d.name
    resolved = ref.resolved
    assert (resolved[:, 2] == 0).any() and (resolved[:, 2] == 1).any() and (resolved[:, 2] == 2).any()
    assert np.isinf(ref.times["agi_declared"]).any() and np.isfinite(ref.times["agi_declared"]).any()
    assert (np.isinf(ref.times["agi_verified"]) & np.isfinite(ref.times["agi_declared"])).any()
    # Completion events of inline deadlines come after the named events in the driver stream.
    assert set(ref.times) >= {"completion:filing", "completion:closing"}


def test_event_condition_not_met_matches_reference():
    """``met = false`` on an event condition: the payment applies when the event does not happen in time."""
    spec = features_dict()
    spec["common_clauses"][0]["condition"]["met"] = False
    _compare(scenario_from_dict(spec), paths=200, seed=12)


# ------------------------------------------------------------------ the new model: market view, company, years


def test_base_case_with_market_matches_reference():
    """The base case with a [market] table (risk classes' rates) and a market size revenue saturates against."""
    scenario = scenario_from_dict(market_dict())
    assert scenario.market.company_class == "equity"
    result, ref = _compare(scenario, paths=300, seed=20250806)
    # the market size matters on these paths, and the market view differs from the party view
    assert (ref.revenue_path.max(axis=1) > 0.5 * scenario.revenue.market_size).any()
    assert not np.allclose(ref.market_pvs, ref.pvs)


@pytest.mark.parametrize(("label", "revenue"), [
    ("high growth volatility", {"growth_volatility": 0.5, "correlation": -0.7}),
    ("fast mean reversion", {"mean_reversion": 20.0, "growth_volatility": 0.3}),
    ("no mean reversion", {"mean_reversion": 0.0, "initial_growth": 0.5, "long_run_growth": 0.1,
                           "growth_volatility": 0.1, "correlation": 0.9}),
    ("frequent jumps, market close to today's revenue", {"jump_intensity": 8.0, "jump_loss": 0.1,
                                                          "market_size": 12.0 * 1.2}),
])
def test_revenue_dynamics_match_reference(label, revenue):
    spec = market_dict(**{"market_size": 1500.0, **revenue})
    _, ref = _compare(scenario_from_dict(spec), paths=200, seed=7)
    assert (ref.revenue_path < spec["revenue"]["market_size"]).all(), label


def test_features_with_market_match_reference():
    """The feature scenario with a [market] table: clause rate overrides do not apply in the market view, own
    value is not part of it, a clause's own risk class; monthly steps, the horizon off the grid."""
    spec = features_dict()
    spec["market"] = {"rates": {**MARKET_RATES, "senior": 0.03}, "company_class": "revenue"}
    spec["revenue"]["market_size"] = 60.0
    spec["structures"][0]["clauses"][0]["risk"] = "senior"
    spec["structures"][1]["clauses"][1]["risk"] = "contractual"
    scenario = scenario_from_dict(spec)
    result, ref = _compare(scenario, paths=300, seed=13)
    # the market view holds transfers only, each leg at the same rate: every structure's PVs sum to zero over the
    # parties on every path (the party view does not: own value, each party's own rate)
    S = len(ref.structures)
    scale = np.abs(ref.market_pvs).max()
    np.testing.assert_allclose(result.partial.pv[:, S:].sum(axis=2), 0.0, atol=1e-12 * scale)
    np.testing.assert_allclose(ref.market_pvs.sum(axis=2), 0.0, atol=1e-12 * scale)
    assert np.abs(ref.pvs.sum(axis=2)).max() > 1e-3 * scale


def test_step_covariance_matches_the_closed_forms():
    """The reference's quadrature against the specification's closed forms (where they keep their digits)."""
    s_g, rho = 0.4, -0.6
    for h, kappa in [(0.25, 2.0), (1.0 / 12.0, 20.0), (0.7, 0.9)]:
        e, b, cov = step_covariance(h, kappa, s_g, rho)
        big_b = (1.0 - np.exp(-kappa * h)) / kappa
        half = (1.0 - np.exp(-2.0 * kappa * h)) / (2.0 * kappa)
        expected = [[h, rho * s_g * (h - big_b) / kappa, rho * s_g * big_b],
                    [0.0, s_g**2 / kappa**2 * (h - 2.0 * big_b + half), s_g**2 / kappa * (big_b - half)],
                    [0.0, 0.0, s_g**2 * half]]
        np.testing.assert_allclose(np.triu(cov), expected, rtol=1e-12, atol=0)
        assert e == np.exp(-kappa * h) and abs(b / big_b - 1.0) < 1e-14
        chol = cholesky3(cov)
        np.testing.assert_allclose(chol @ chol.T, cov, rtol=1e-13, atol=1e-18)
    h = 0.25  # kappa = 0: the limits
    _, b, cov = step_covariance(h, 0.0, s_g, rho)
    expected = [[h, rho * s_g * h * h / 2, rho * s_g * h], [0.0, s_g**2 * h**3 / 3, s_g**2 * h * h / 2],
                [0.0, 0.0, s_g**2 * h]]
    np.testing.assert_allclose(np.triu(cov), expected, rtol=1e-14, atol=0)
    assert b == h
    # no growth volatility: I = G = 0
    np.testing.assert_array_equal(cholesky3(step_covariance(h, 0.3, 0.0, rho)[2])[1:], 0.0)


def test_mean_rate_of_the_reference():
    """The reference's booked revenue (the mean rate along the log-linear path) on both sides of its switch from
    quadrature to the closed form, and for close ends."""
    la = np.full(4, 1.5)
    lb = la + np.array([0.999999, 1.000001, -0.999999, -1.000001])
    for m in (None, 4.0):
        def big_f(x, m=m):
            return np.exp(x) if m is None else m * np.arcsinh(np.exp(x) / m)
        np.testing.assert_allclose(mean_rate(la, lb, m), (big_f(lb) - big_f(la)) / (lb - la), rtol=1e-14)
    d = np.array([0.0, 1e-12, 1e-6, 1e-3, 0.1])
    la = np.full(d.shape, 2.0)
    series = np.exp(la + d / 2) * (1 + d**2 / 24 + d**4 / 1920 + d**6 / 322560)  # exp(mid) sinh(d/2) / (d/2)
    np.testing.assert_allclose(mean_rate(la, la + d, None), series, rtol=1e-15)
    np.testing.assert_allclose(mean_rate(la[:1], la[:1], 4.0), np.exp(2.0) / np.sqrt(1 + (np.exp(2.0) / 4) ** 2),
                               rtol=1e-15)


def test_growth_shocks_just_above_the_series_cutoff():
    """Found by the reference: kappa h = 0.0101, just above the old series cutoff of the integrated OU variance,
    kept ~11 digits (the closed form cancels); the power series now serves every kappa h below 1."""
    spec = features_dict()
    spec["revenue"].update(mean_reversion=0.1211, growth_volatility=0.15, correlation=0.0, initial_growth=0.0,
                           long_run_growth=0.0)
    scenario = scenario_from_dict(spec)
    assert abs(scenario.revenue.mean_reversion / scenario.simulation.steps_per_year - 0.0101) < 1e-4
    _compare(scenario, paths=200, seed=11)
