"""The compiled kernel against the independent numpy reference (tests/reference.py), path by path."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

import valuation
from valuation.scenario import scenario_from_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import reference_simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE_CASE = ROOT / "inputs" / "base_case.toml"

RTOL_PV = 1e-9
RTOL_DRIVERS = 1e-12


def _compare(scenario, paths: int, seed: int):
    result = valuation.simulate(scenario, paths=paths, seed=seed)
    ref = reference_simulate(scenario, paths=paths, seed=seed)

    assert result.structures == ref.structures
    assert result.parties == ref.parties
    assert result.pvs.shape == ref.pvs.shape == (paths, len(ref.structures), len(ref.parties))

    drivers = result.drivers
    names = ["agi_declared", "agi_verified", *scenario.events]
    for name in names:
        np.testing.assert_allclose(drivers[name].to_numpy(), ref.times[name], rtol=RTOL_DRIVERS, atol=0,
                                   err_msg=f"driver {name}")
    for d in scenario.deadlines:
        if d.completion is not None:  # the deadline's own completion event
            np.testing.assert_allclose(drivers[f"deadline:{d.name}"].to_numpy(), ref.times[f"completion:{d.name}"],
                                       rtol=RTOL_DRIVERS, atol=0, err_msg=f"driver deadline:{d.name}")
        np.testing.assert_array_equal(drivers[f"met:{d.name}"].to_numpy(), ref.met[d.name],
                                      err_msg=f"met:{d.name}")
    np.testing.assert_allclose(drivers["revenue_at_horizon"].to_numpy(), ref.revenue_at_horizon,
                               rtol=RTOL_DRIVERS, atol=0, err_msg="revenue_at_horizon")

    for s, structure in enumerate(ref.structures):
        for p, party in enumerate(ref.parties):
            kernel = result.pvs[:, s, p]
            expected = ref.pvs[:, s, p]
            scale = float(np.max(np.abs(expected))) if expected.size else 0.0
            np.testing.assert_allclose(kernel, expected, rtol=RTOL_PV, atol=RTOL_PV * scale,
                                       err_msg=f"PV of {structure} / {party}")
    return result, ref


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
