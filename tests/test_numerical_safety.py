"""Numerical safety: inputs that would overflow are rejected before any path runs; a non-finite PV that gets
through anyway is reported with its path, structure and party, never averaged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import base_case_dict
from valuation import api as api_module
from valuation import simulate
from valuation.engine import compile as compile_module
from valuation.engine.compile import ENVELOPE_SDS, PV_LIMIT, compile_scenario, revenue_model
from valuation.errors import InputError
from valuation.scenario import scenario_from_dict


def _unbounded() -> dict:
    """The base case without its market size: revenue as the unbounded process (what can overflow)."""
    d = base_case_dict()
    d["revenue"].pop("market_size")
    return d


def _explosive(d: dict) -> dict:
    """Growth of 500% a year that never reverts, for 60 years: revenue exp(300) and more."""
    d["simulation"]["horizon"] = d["simulation"]["horizon"].replace(year=2085)
    d["revenue"]["initial_growth"] = {"value": 5.0}
    d["revenue"]["long_run_growth"] = {"value": 1.0}
    d["revenue"]["mean_reversion"] = {"value": 0.0}
    d.pop("correlations", None)  # initial_growth is fixed here: no longer an uncertain input to correlate
    return d


def test_explosive_growth_is_rejected_before_any_path_runs():
    scenario = scenario_from_dict(_explosive(_unbounded()), source="explosive.toml")
    with pytest.raises(InputError) as err:
        compile_scenario(scenario)
    message = err.value.message()
    for word in ("explosive.toml", "revenue", "standard deviations", "initial_growth 5", "horizon"):
        assert word in message, message


@pytest.mark.parametrize(("field", "value"), [("growth_volatility", 3.0), ("initial", 1e6)])
def test_absurd_values_within_the_schema_are_rejected(field, value):
    d = _unbounded()
    d["revenue"][field] = {"value": value}
    with pytest.raises(InputError, match="PVs could overflow"):
        compile_scenario(scenario_from_dict(d))


def test_the_shipped_scenarios_are_far_from_the_limit():
    scenario = scenario_from_dict(base_case_dict())
    compiled = compile_scenario(scenario)
    model = revenue_model(scenario.revenue)
    assert np.exp(model.log_envelope(compiled.t, ENVELOPE_SDS)).max() < PV_LIMIT * 1e-3


def test_the_envelope_bounds_simulated_revenue():
    """The envelope's parts bound the simulation: its mean path is above the mean log revenue (jumps and
    haircuts only lower it, the uplift is assumed from day one), its spread above the simulated standard
    deviation (it adds the two shocks as if perfectly correlated), and no path ends above 6 SD."""
    d = _unbounded()
    d["revenue"]["volatility"] = {"value": 0.5}
    d["revenue"]["growth_volatility"] = {"value": 0.05}
    scenario = scenario_from_dict(d)
    compiled = compile_scenario(scenario)
    log_r = np.log(simulate(scenario, paths=20_000, seed=3).drivers["revenue_at_horizon"].to_numpy())
    model = revenue_model(scenario.revenue)
    mean_path, one_sd = (model.log_envelope(compiled.t, k)[-1] for k in (0.0, 1.0))
    se = log_r.std() / math.sqrt(len(log_r))
    assert log_r.mean() - 4 * se < mean_path
    assert log_r.std() < one_sd - mean_path
    assert log_r.max() < model.log_envelope(compiled.t, ENVELOPE_SDS)[-1]


def _unguarded(monkeypatch, **revenue) -> object:
    """A 60-year scenario with the up-front check switched off."""
    monkeypatch.setattr(compile_module, "_check_overflow", lambda *args: None)
    d = _explosive(_unbounded())
    for key, value in revenue.items():
        d["revenue"][key] = {"value": value}
    return scenario_from_dict(d, source="overflow.toml")


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "streaming"])
def test_a_huge_pv_is_named_not_averaged(monkeypatch, keep):
    """With the up-front check off, a few paths (z > 2.7) exceed the limit: the message names the first one by
    its global index (in a later chunk when streaming), its structure and party."""
    scenario = _unguarded(monkeypatch, initial_growth=0.5, long_run_growth=0.5, volatility=1.0,
                          growth_volatility=0.0)
    monkeypatch.setattr(api_module, "_check_finite", lambda *args: None)
    pv = simulate(scenario, paths=4_000, seed=5, keep_paths=True).partial.pv  # both views
    monkeypatch.undo()
    scenario = _unguarded(monkeypatch, initial_growth=0.5, long_run_growth=0.5, volatility=1.0,
                          growth_volatility=0.0)
    bad = ~(np.abs(pv) <= PV_LIMIT)
    first = int(np.nonzero(bad.any(axis=(1, 2)))[0][0])
    assert 100 < first and bad.any(axis=(1, 2)).mean() < 0.05  # a rare path, beyond the first chunk
    with pytest.raises(InputError) as err:
        simulate(scenario, paths=4_000, seed=5, keep_paths=keep, chunk_size=100)
    message = err.value.message()
    assert f"on path {first} for structure '" in message, message
    for word in ("overflow.toml", "party '", "exceeds 1e+12", f"({int(bad.sum())} values in all)" if keep else ""):
        assert word in message, message


def test_an_infinite_revenue_is_named_not_averaged(monkeypatch):
    """Growth of 500% a year for 155 years: exp(775) overflows to inf on every path; no NaN is averaged."""
    scenario = _unguarded(monkeypatch)
    d = _explosive(_unbounded())
    d["simulation"]["horizon"] = d["simulation"]["horizon"].replace(year=2180)
    scenario = scenario_from_dict(d, source="inf.toml")
    with pytest.raises(InputError) as err:
        simulate(scenario, paths=100, seed=5)
    message = err.value.message()
    assert "inf.toml: PV " in message and "on path 0" in message and "not finite" in message, message


def test_a_market_size_bounds_even_explosive_growth():
    """The same explosive growth under the base case's market size: nothing overflows, every path's revenue rate
    (at every step end of the recorded paths, and at the horizon) stays below the market size, and the rate
    approaches it smoothly rather than piling up at it."""
    d = _explosive(base_case_dict())
    scenario = scenario_from_dict(d)
    result = simulate(scenario, paths=2_000, seed=5)
    size = scenario.revenue.market_size
    horizon = result.drivers["revenue_at_horizon"].to_numpy()
    assert np.all(np.isfinite(result.pvs)) and horizon.max() <= size and result.revenue_sample.max() <= size
    shipped = simulate(scenario_from_dict(base_case_dict()), paths=20_000, seed=1)
    rate = shipped.drivers["revenue_at_horizon"].to_numpy()
    assert rate.max() < size and shipped.revenue_sample.max() < size
    # smooth, not a clip: a hard cap would put every path whose unbounded rate X passes the market size on it
    # (R = X / sqrt(1 + (X/M)^2) >= M / sqrt 2); here none is on it and far fewer come within 0.1% of it
    assert not np.any(rate == size)
    assert np.mean(rate >= 0.999 * size) < 0.1 * np.mean(rate >= size / math.sqrt(2.0))
