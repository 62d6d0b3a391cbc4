"""The compiled kernel against the vectorised numpy model (benchmarks/numpy_reference.py), in distribution.

The numpy model draws its own random numbers (PCG64, not the kernel's Philox streams), so the two agree
only statistically: every mean PV must lie within 4 standard errors of the difference.  A check that the
comparison has power goes with it: one clause rate changed by a tenth must be caught.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

import valuation
from valuation.engine.compile import compile_scenario
from valuation.engine.tables import REVENUE_SHARE
from valuation.scenario import scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from test_reference import features_dict  # noqa: E402

from benchmarks.numpy_reference import simulate_means  # noqa: E402

BASE_CASE = ROOT / "inputs" / "base_case.toml"
PATHS = 40_000
FEATURE_PATHS = 30_000
Z_LIMIT = 4.0
RTOL_DETERMINISTIC = 1e-9


@pytest.fixture(scope="module")
def scenario():
    return valuation.load_scenario(BASE_CASE)


@pytest.fixture(scope="module")
def kernel(scenario) -> tuple[np.ndarray, np.ndarray]:
    """Kernel means and standard errors, (structures, parties)."""
    result = valuation.simulate(scenario, paths=PATHS, seed=20250806)
    table = result.summary()
    shape = (len(result.structures), len(result.parties))
    index = [(s, p) for s in result.structures for p in result.parties]
    mean = table.loc[index, "mean"].to_numpy().reshape(shape)
    se = table.loc[index, "se"].to_numpy().reshape(shape)
    assert result.pvs.shape == (PATHS, *shape)
    return mean, se


def _z_scores(kernel_mean, kernel_se, numpy_mean, numpy_se) -> np.ndarray:
    """|difference| / its standard error; deterministic columns (both SEs zero) give 0 when they agree
    to RTOL_DETERMINISTIC and inf when they do not."""
    se = np.sqrt(kernel_se**2 + numpy_se**2)
    diff = np.abs(kernel_mean - numpy_mean)
    fixed = se == 0.0
    tol = RTOL_DETERMINISTIC * np.maximum(np.abs(kernel_mean), np.abs(numpy_mean))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fixed, np.where(diff <= tol, 0.0, np.inf), diff / se)


def _assert_agree(compiled, k_mean: np.ndarray, k_se: np.ndarray, paths: int, seed: int) -> None:
    """The numpy model's means against the kernel's (``k_mean``, ``k_se``), column by column."""
    mean, se = simulate_means(compiled, paths, seed=seed)
    assert mean.shape == se.shape == k_mean.shape
    assert np.all(np.isfinite(mean)) and np.all(se >= 0.0)
    # the two standard errors estimate the same SD: within a quarter at this many paths (heavy tails)
    random = k_se > 0.0
    np.testing.assert_allclose(se[random], k_se[random], rtol=0.25)
    z = _z_scores(k_mean, k_se, mean, se)
    worst = np.unravel_index(np.argmax(z), z.shape)
    assert z.max() < Z_LIMIT, (
        f"{compiled.structures[worst[0]]} / {compiled.parties[worst[1]]}: kernel {k_mean[worst]:.4f} "
        f"± {k_se[worst]:.4f}, numpy {mean[worst]:.4f} ± {se[worst]:.4f} ({z.max():.1f} SE apart)")


def test_kernel_agrees_with_numpy_model(scenario, kernel):
    _assert_agree(compile_scenario(scenario), *kernel, PATHS, seed=7)


def test_features_agree_with_numpy_model():
    """What the base case lacks: capped shares with an after-cap rate, tiers on cumulative profit, loss
    carry-forward, random windows, fixed own value, event conditions both ways, every timing family."""
    d = features_dict()
    d["common_clauses"].append(
        {"type": "payment", "payer": "payee", "payee": "third", "date": date(2031, 6, 30), "amount": 1.0,
         "condition": {"event": "ipo", "before": date(2030, 1, 1), "met": False}})
    scenario = scenario_from_dict(d)
    result = valuation.simulate(scenario, paths=FEATURE_PATHS, seed=11)
    pvs = np.asarray(result.pvs)
    _assert_agree(compile_scenario(scenario), pvs.mean(axis=0), pvs.std(axis=0, ddof=1) / np.sqrt(FEATURE_PATHS),
                  FEATURE_PATHS, seed=13)


def test_comparison_detects_a_changed_rate(scenario, kernel):
    """The status quo's 20% revenue share to Microsoft raised to 22% in the numpy model: caught."""
    compiled = compile_scenario(scenario)
    s = compiled.structures.index("terms_2019_2023")
    ms = compiled.parties.index("microsoft")
    cl = compiled.clauses
    shares = np.flatnonzero((cl.kind == REVENUE_SHARE) & (cl.structure == s) & (cl.payee == ms))
    assert len(shares) == 1
    rate = cl.rate.copy()
    rate[shares[0]] *= 1.1
    mean, se = simulate_means(dataclasses.replace(compiled, clauses=cl._replace(rate=rate)), PATHS, seed=7)
    z = _z_scores(*kernel, mean, se)
    assert z[s, ms] > Z_LIMIT, f"a 2-point rate change moved the mean by only {z[s, ms]:.1f} SE"
