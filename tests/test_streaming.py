"""The streaming mode: statistics folded chunk by chunk agree with the kept-paths run on the same seed.

Means, SDs, counts and shares agree exactly (up to summation order); percentiles, VaR and CVaR within
the bound stated in :mod:`valuation.stats.histogram`.
"""

from __future__ import annotations

import numpy as np
import pytest
from openpyxl import load_workbook

import valuation
from conftest import BASE_CASE
from valuation import api
from valuation.results import PERCENTILES, QUANTILE_GRID, TAIL, PathsNotKept
from valuation.stats.histogram import REL_ERROR, TINY, stream_values

PATHS = 40_000
CHUNK = 6_000  # several chunks, the last one partial


@pytest.fixture(scope="module")
def runs():
    scenario = valuation.load_scenario(BASE_CASE)
    kept = valuation.simulate(scenario, paths=PATHS, seed=11, keep_paths=True, chunk_size=CHUNK)
    streamed = valuation.simulate(scenario, paths=PATHS, seed=11, keep_paths=False, chunk_size=CHUNK)
    return kept, streamed


def assert_quantiles_within_bound(sample: np.ndarray, q: np.ndarray, estimate: np.ndarray) -> None:
    """Each percentile within REL_ERROR of the larger of the two order statistics it interpolates, plus TINY."""
    x = np.sort(sample)
    pos = q / 100.0 * (x.size - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, x.size - 1)
    exact = np.percentile(sample, q)
    bound = REL_ERROR * np.maximum(np.abs(x[lo]), np.abs(x[hi])) + TINY
    assert np.all(np.abs(estimate - exact) <= bound), np.max(np.abs(estimate - exact) / bound)


def test_summary_agrees_with_kept_paths(runs):
    kept, streamed = runs
    a, b = kept.summary(), streamed.summary()
    assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
    exact_cols = ["p_negative", "p_better"]
    np.testing.assert_array_equal(a[exact_cols].to_numpy(), b[exact_cols].to_numpy())
    for col in ("mean", "diff_mean"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-12, atol=1e-12)
    for col in ("se", "sd", "diff_se"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-9, atol=1e-12)
    for s, structure in enumerate(kept.structures):
        for p, party in enumerate(kept.parties):
            x = kept.pvs[:, s, p]
            row = b.loc[(structure, party)]
            assert_quantiles_within_bound(x, np.array(PERCENTILES, float),
                                          row[[f"p{q}" for q in PERCENTILES]].to_numpy(float))
            worst = np.sort(x)[: int(np.ceil(TAIL * x.size))]
            bound = REL_ERROR * np.mean(np.abs(worst)) + TINY
            assert abs(row["cvar5"] - a.loc[(structure, party), "cvar5"]) <= bound


def test_versus_and_distributions_agree(runs):
    kept, streamed = runs
    a, b = kept.versus(), streamed.versus()
    np.testing.assert_array_equal(a[["p_better", "p_worse"]].to_numpy(), b[["p_better", "p_worse"]].to_numpy())
    np.testing.assert_allclose(b["mean"], a["mean"], rtol=1e-12, atol=1e-12)
    base = kept.structures.index(streamed.summary().attrs["baseline"])
    for structure, party in a.index:
        s, p = kept.structures.index(structure), kept.parties.index(party)
        d = kept.pvs[:, s, p] - kept.pvs[:, base, p]
        assert_quantiles_within_bound(d, np.array([5.0, 50.0, 95.0]),
                                      b.loc[(structure, party), ["p5", "p50", "p95"]].to_numpy(float))
    for p in range(len(kept.parties)):
        tk, ts = kept.party_tables(p), streamed.party_tables(p)
        for s in range(len(kept.structures)):
            assert_quantiles_within_bound(kept.pvs[:, s, p], QUANTILE_GRID[1:-1], ts.percentiles[:, s])
        np.testing.assert_allclose(ts.freq.sum(axis=0), 1.0, rtol=1e-12)
        # bins can differ by the paths of the one histogram bucket that straddles an edge
        assert np.max(np.abs(ts.freq - tk.freq)) < 0.01


def test_drivers_flows_and_head_agree(runs):
    kept, streamed = runs
    dk, ds = kept.driver_stats(), streamed.driver_stats()
    for field in ("p_declared", "p_verified", "p_met"):
        np.testing.assert_array_equal(getattr(ds, field), getattr(dk, field))
    assert ds.p_ever_declared == dk.p_ever_declared and ds.p_never_verified == dk.p_never_verified
    d = kept.drivers
    lag = (d["agi_verified"] - d["agi_declared"]).to_numpy()
    assert_quantiles_within_bound(lag[np.isfinite(lag)], np.array([50.0, 90.0]), np.array([ds.lag_median,
                                                                                            ds.lag_p90]))
    np.testing.assert_allclose(streamed.cash_flows, kept.cash_flows, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(streamed.revenue_sample, kept.revenue_sample)
    hk, hs = kept.head(), streamed.head()
    np.testing.assert_array_equal(hs[1], hk[1])
    np.testing.assert_array_equal(hs[0].to_numpy(), hk[0].to_numpy())
    np.testing.assert_allclose(streamed.means(), kept.means(), rtol=1e-12, atol=1e-12)


def test_streaming_result_refuses_what_it_did_not_keep(runs):
    _, streamed = runs
    assert not streamed.kept_paths and streamed.paths == PATHS
    with pytest.raises(PathsNotKept, match="keep_paths=True"):
        streamed.pvs  # noqa: B018
    with pytest.raises(PathsNotKept, match="keep_paths=True"):
        streamed.pv("oct_2025_recap", "microsoft")
    with pytest.raises(PathsNotKept, match="baseline='oct_2025_recap'"):
        streamed.summary("oct_2025_recap")


def test_streaming_workbook(runs, tmp_path):
    kept, streamed = runs
    path = streamed.to_excel(tmp_path / "s.xlsx")
    wb = load_workbook(path)
    readme = {r[0]: r[1] for r in wb["Read me"].iter_rows(values_only=True) if r and r[0]}
    assert readme["Paths"] == PATHS and "streaming" in readme["Paths kept"]
    assert "within 0.049%" in readme["Percentiles, VaR, CVaR"]
    rows = list(wb["Paths"].iter_rows(min_row=2, max_row=1001, values_only=True))
    col = [c.value for c in wb["Paths"][1]].index("PV oct_2025_recap / microsoft")
    np.testing.assert_allclose([r[col] for r in rows], kept.pv("oct_2025_recap", "microsoft")[:1000], rtol=1e-12)


def test_chunking_changes_nothing():
    """Moments are summed per aligned block and combined in a fixed tree: the same bits for any chunk size (they
    used to move by 1e-14 with it)."""
    scenario = valuation.load_scenario(BASE_CASE)
    a = valuation.simulate(scenario, paths=9_000, seed=5, keep_paths=False, chunk_size=1_024)
    b = valuation.simulate(scenario, paths=9_000, seed=5, keep_paths=False, chunk_size=100_000, threads=1)
    np.testing.assert_array_equal(a.partial.hist, b.partial.hist)
    np.testing.assert_array_equal(a.partial.tree.total()[1], b.partial.tree.total()[1])
    np.testing.assert_array_equal(a.summary().to_numpy(), b.summary().to_numpy())


def test_default_streams_beyond_the_keep_limit(monkeypatch):
    scenario = valuation.load_scenario(BASE_CASE)
    monkeypatch.setattr(api, "KEEP_LIMIT", 8 * 2 * 20 * 1_000)  # two views x 4 structures x 5 parties
    assert valuation.simulate(scenario, paths=1_000, seed=1).kept_paths
    assert not valuation.simulate(scenario, paths=1_001, seed=1).kept_paths


@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e6])  # up to ~1e11 < 2**40, the range covered
def test_column_quantiles_within_bound_on_awkward_samples(scale):
    rng = np.random.default_rng(3)
    x = np.concatenate((rng.standard_t(2, 5_000) * scale, np.zeros(50), rng.uniform(-1e-10, 1e-10, 30),
                        rng.lognormal(0, 3, 2_000) * scale))
    col = stream_values(x)
    q = np.linspace(0, 100, 201)
    assert_quantiles_within_bound(x, q, col.quantiles(q))
    assert col.n == x.size and col.moments[5] == np.sum(x < 0) and col.moments[6] == np.sum(x > 0)
    np.testing.assert_allclose(col.moments[1], x.mean(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(col.moments[2] / (x.size - 1), x.var(ddof=1), rtol=1e-10)
    if scale >= 1.0:  # the check has teeth: an error of 2.5 times the bound is caught
        with pytest.raises(AssertionError):
            assert_quantiles_within_bound(x, q, np.percentile(x, q) * (1 + 2.5 * REL_ERROR))


def test_cli_stream_flag(tmp_path, capsys):
    from valuation.cli import main

    out = tmp_path / "s.xlsx"
    assert main(["run", str(BASE_CASE), "--paths", "3000", "--stream", "--baseline", "oct_2025_recap",
                 "--out", str(out)]) == 0
    assert "streaming" in capsys.readouterr().out
    readme = {r[0]: r[1] for r in load_workbook(out)["Read me"].iter_rows(values_only=True) if r and r[0]}
    assert "streaming" in readme["Paths kept"] and readme["Baseline structure"] == "oct_2025_recap"


def test_buckets_match_frexp():
    """The bit-level bucket index equals the one defined by frexp (module docstring), at awkward values."""
    import math

    from valuation.stats.histogram import NB, OCT_LO, SUB

    def bucket(x: float) -> int:
        a = abs(x)
        if a < TINY:
            return NB
        mant, e = math.frexp(a)
        j = min((e - 1 - OCT_LO) * SUB + int((2.0 * mant - 1.0) * SUB), NB - 1)
        return NB + 1 + j if x > 0 else NB - 1 - j

    rng = np.random.default_rng(4)
    x = np.concatenate((rng.normal(0, 1, 2_000) * 10.0 ** rng.integers(-12, 13, 2_000),
                        [0.0, -0.0, TINY, -TINY, np.nextafter(TINY, 0), 2.0**40, 1e15, -1e15, 5e-324, 1.0, -1.0]))
    col = stream_values(x)
    expected = np.zeros_like(col.hist)
    for v in x:
        expected[bucket(float(v))] += 1
    np.testing.assert_array_equal(col.hist, expected)
