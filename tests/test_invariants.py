"""Invariants on every path: conservation, caps, monotonicity, determinism."""

import copy

import numpy as np
import pytest

from conftest import base_case_dict
from models.rng import key_from_seed
from valuation import simulate
from valuation.engine import run as engine
from valuation.engine.compile import compile_scenario
from valuation.scenario import scenario_from_dict

PATHS = 3_000


def _undiscounted_pvs(d: dict, paths: int = PATHS, seed: int = 17) -> tuple[np.ndarray, list[str], list[str]]:
    compiled = compile_scenario(scenario_from_dict(d), undiscounted=True)
    key, _ = key_from_seed(seed)
    out = engine.simulate_arrays(compiled, key, paths)
    return out["pv"], compiled.structures, compiled.parties


def _without_own_value(d: dict) -> dict:
    d = copy.deepcopy(d)
    for st in d["structures"]:
        st["clauses"] = [c for c in st["clauses"] if c["type"] != "own_value"]
    return d


def test_transfers_conserve_value_on_every_path():
    pv, _, _ = _undiscounted_pvs(_without_own_value(base_case_dict()))
    total = pv.sum(axis=2)  # payer's loss = payee's gain: the parties sum to zero
    scale = np.abs(pv).max()
    assert scale > 1.0
    np.testing.assert_allclose(total, 0.0, atol=1e-12 * scale * pv.shape[2])


def test_conservation_check_can_fail():
    """Own value is not a transfer: with it included, the sum is not zero."""
    pv, _, _ = _undiscounted_pvs(base_case_dict())
    assert np.abs(pv.sum(axis=2)).max() > 1.0


def _only(d: dict, structure: str, clause_type: str) -> dict:
    d = copy.deepcopy(d)
    st = next(s for s in d["structures"] if s["name"] == structure)
    st.pop("requires", None)
    st.pop("fallback", None)
    st["clauses"] = [c for c in st["clauses"] if c["type"] == clause_type][:1]
    d["structures"] = [st]
    d["common_clauses"] = []
    d["simulation"].pop("baseline", None)
    return d


def test_revenue_share_cap_is_never_exceeded():
    d = _only(base_case_dict(), "apr_2026_amendment", "revenue_share")
    clause = d["structures"][0]["clauses"][0]
    clause["end"] = "never"  # run long enough that most paths reach the cap
    pv, _, parties = _undiscounted_pvs(d)
    paid = pv[:, 0, parties.index("microsoft")]
    cap = clause["cap"]["value"]
    assert paid.max() <= cap * (1 + 1e-12)
    assert np.mean(paid >= cap * (1 - 1e-12)) > 0.5  # the cap binds on most paths


def test_rate_after_cap_applies_beyond_the_cap():
    d = _only(base_case_dict(), "apr_2026_amendment", "revenue_share")
    clause = d["structures"][0]["clauses"][0]
    clause["end"] = "never"
    clause["rate_after_cap"] = 0.05
    pv, _, parties = _undiscounted_pvs(d)
    paid = pv[:, 0, parties.index("microsoft")]
    assert paid.max() > clause["cap"]["value"]


def test_profit_share_tiers_never_pay_beyond_the_last_cap():
    d = _only(base_case_dict(), "terms_2019_2023", "profit_share")
    pv, _, parties = _undiscounted_pvs(d)
    received = pv[:, 0, parties.index("microsoft")]
    top = d["structures"][0]["clauses"][0]["tiers"][-1]["until"]["value"]
    assert received.max() <= top * (1 + 1e-12)
    assert np.mean(received >= top * (1 - 1e-12)) > 0.1  # some paths reach it


def test_profit_share_tier_order_first_tier_fills_first():
    """Receipts below the first threshold are 75% of profit; nothing at 49% until 13 bn is reached."""
    d = _only(base_case_dict(), "terms_2019_2023", "profit_share")
    d["structures"][0]["clauses"][0]["tiers"] = [{"rate": 0.75, "until": 13.0}]
    first_only, _, parties = _undiscounted_pvs(d)
    full, _, _ = _undiscounted_pvs(_only(base_case_dict(), "terms_2019_2023", "profit_share"))
    m = parties.index("microsoft")
    below = first_only[:, 0, m] < 13.0 - 1e-9
    np.testing.assert_allclose(full[below, 0, m], first_only[below, 0, m], rtol=1e-12)
    assert np.all(full[:, 0, m] >= first_only[:, 0, m] - 1e-9)


@pytest.mark.parametrize("structure", ["terms_2019_2023", "openai_proposal_2025", "oct_2025_recap",
                                       "apr_2026_amendment"])
def test_higher_rate_never_lowers_payee_pv(structure):
    low = base_case_dict()
    high = copy.deepcopy(low)
    for st in high["structures"]:
        if st["name"] != structure:
            continue
        for c in st["clauses"]:
            if c["type"] == "revenue_share" and c["payee"] == "microsoft":
                if "rate" in c:
                    c["rate"]["value"] += 0.05
                else:
                    for point in c["schedule"]:
                        point["rate"]["value"] += 0.05
    a = simulate(scenario_from_dict(low), paths=PATHS, seed=3)
    b = simulate(scenario_from_dict(high), paths=PATHS, seed=3)
    lo, hi = a.pv(structure, "microsoft"), b.pv(structure, "microsoft")
    assert np.all(hi >= lo - 1e-12 * np.abs(lo).max())
    assert np.mean(hi > lo) > 0.5  # and it does raise it on most paths


def test_identical_for_any_thread_count_and_chunk_size():  # 2 threads: tests/conftest.py allows them
    s = scenario_from_dict(base_case_dict())
    one = simulate(s, paths=5_000, seed=42, threads=1, chunk_size=5_000)
    two = simulate(s, paths=5_000, seed=42, threads=2, chunk_size=777)
    three = simulate(s, paths=5_000, seed=42, threads=2, chunk_size=4_096)
    np.testing.assert_array_equal(one.pvs, two.pvs)
    np.testing.assert_array_equal(one.pvs, three.pvs)
    np.testing.assert_array_equal(one.drivers.to_numpy(), two.drivers.to_numpy())


def test_path_ranges_compose():
    """Paths 0..n-1 then n..2n-1 equal one run of 2n paths: the unit of work is a path range."""
    compiled = compile_scenario(scenario_from_dict(base_case_dict()))
    key, _ = key_from_seed(8)
    whole = engine.Runner(compiled, key).block(0, 200)
    part = engine.Runner(compiled, key).block(100, 200)
    np.testing.assert_array_equal(whole.pv[100:], part.pv)


def test_different_seeds_differ():
    s = scenario_from_dict(base_case_dict())
    a = simulate(s, paths=500, seed=1)
    b = simulate(s, paths=500, seed=2)
    assert not np.array_equal(a.pvs, b.pvs)


def test_expected_cash_flows_discount_to_the_mean_pv():
    """The cash-flow table behind the workbook's live PV: discounted at each class's rate it is the mean PV."""
    result = simulate(scenario_from_dict(base_case_dict()), paths=4_000, seed=6)
    factors = (1.0 + result.class_rates[:, None]) ** -result.slot_time[None, :]
    live = (result.cash_flows * factors).sum(axis=(2, 3))
    np.testing.assert_allclose(live, result.pvs.mean(axis=0), rtol=1e-10, atol=1e-10)
    # undiscounted, transfers net to zero across parties except own-value streams
    assert np.abs(result.cash_flows.sum(axis=(1, 2, 3))).max() > 1.0


def test_cash_flows_identical_for_any_thread_count_and_chunk_size():
    s = scenario_from_dict(base_case_dict())
    a = simulate(s, paths=5_000, seed=2, threads=1, chunk_size=1_000)
    b = simulate(s, paths=5_000, seed=2, threads=2, chunk_size=65_536)
    np.testing.assert_array_equal(a.cash_flows, b.cash_flows)
    np.testing.assert_array_equal(a.revenue_sample, b.revenue_sample)
