"""Tornado and spider (valuation.sensitivity): swings against a closed form, what common random numbers buy on
the base case, the workbook, and the bad-input catalogue."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from openpyxl import load_workbook

import valuation
from conftest import BASE_CASE, minimal_dict
from valuation.cli import main
from valuation.errors import InputError
from valuation.scenario import load_scenario, scenario_from_dict


def _share_scenario(low: float = 0.1, high: float = 0.3):
    """The minimal scenario (a 20% revenue share until AGI, random AGI dates) with a range on the share's rate:
    every path's PV is linear in the rate."""
    spec = copy.deepcopy(minimal_dict())
    spec["structures"][0]["clauses"][0]["rate"] = {"value": 0.2, "low": low, "high": high, "source": "test"}
    spec["structures"].append({"name": "nothing", "clauses": []})
    return scenario_from_dict(spec)


def test_swing_of_a_linear_input_is_its_finite_difference_path_by_path():
    """PV = rate x (the PV of a unit rate) on every path, so the swing is (high - low) / rate x the base value,
    and its paired standard error is the same multiple of the base's: exact to rounding, though the bars
    themselves are noisy (AGI dates differ path to path)."""
    s = _share_scenario()
    sens = valuation.sensitivity(s, paths=4000, seed=3)
    row = sens.bars("share", "payee").loc["structures[0].clauses[0].rate"]
    base = sens.base.loc[("share", "payee")]
    assert row["swing"] == pytest.approx(0.2 / 0.2 * base["value"], rel=1e-12)
    assert row["at_low"] == pytest.approx(0.1 / 0.2 * base["value"], rel=1e-12)
    assert row["swing_se"] == pytest.approx(0.2 / 0.2 * base["se"], rel=1e-9)
    assert row["swing_se_independent"] > row["swing_se"]
    payer = sens.bars("share", "payer").loc["structures[0].clauses[0].rate"]
    assert payer["swing"] < 0
    # the spider: evenly spaced points on a straight line
    spider = sens.spider.loc[("share", "payee", "structures[0].clauses[0].rate")]
    assert np.allclose(spider["input_value"], np.linspace(0.1, 0.3, 5))
    assert np.allclose(np.diff(spider["value"], 2), 0.0, atol=1e-9 * abs(base["value"]))
    # a structure the input does not touch does not move
    assert sens.bars("nothing", "payee")["swing"].abs().max() == 0
    assert ("nothing", "payee") not in sens.moving()


def test_percentile_and_difference_statistics():
    s = _share_scenario()
    p50 = valuation.sensitivity(s, paths=4000, seed=3, statistic="p50", points=2)
    row = p50.bars("share", "payee").iloc[0]
    base = p50.base.loc[("share", "payee")]
    assert row["swing"] == pytest.approx(base["value"], rel=1e-9)  # the median of rate x X is rate x median X
    assert row["swing_se"] > 0 and base["se"] > 0
    diff = valuation.sensitivity(s, paths=4000, seed=3, statistic="diff", baseline="nothing", points=2)
    mean = valuation.sensitivity(s, paths=4000, seed=3, points=2)
    a = diff.bars("share", "payee").iloc[0]
    b = mean.bars("share", "payee").iloc[0]
    assert a["swing"] == pytest.approx(b["swing"], rel=1e-12)  # "nothing" pays nothing: the same numbers


def test_common_random_numbers_make_swings_far_more_precise_on_the_base_case():
    """The swing's standard error on the same paths against the one independent seeds would give (the two
    ends' standard errors combined), measured on the base case.  Where an input moves values smoothly without
    rescaling each path's value (a discount rate, a margin, the verification lag) the paired one is at most a
    fifth; where it scales each path's value by a wide factor (growth, market size) the swing itself varies
    path to path and no pairing removes that: there it is still smaller, never larger."""
    smooth = ["parties.microsoft.discount_rate", "revenue.margin[3].margin", "agi.verification_lag.median"]
    wide = ["revenue.exit_multiple", "revenue.initial_growth"]
    sens = valuation.sensitivity(BASE_CASE, smooth + wide, paths=4000, seed=2, points=2, uncertain=False)
    checked = 0
    for structure in sens.structures:
        for party in ("microsoft", "openai"):
            for key, row in sens.bars(structure, party).iterrows():
                if abs(row["swing"]) <= 4 * row["swing_se_independent"]:
                    continue  # an input that does not move this value
                assert row["swing_se"] < row["swing_se_independent"], (structure, party, key)
                if key in smooth:
                    assert row["swing_se"] <= row["swing_se_independent"] / 5, (structure, party, key)
                    checked += 1
    assert checked >= 6
    # and the independent-seed standard error is the real one: the two ends re-run on seeds of their own
    s = load_scenario(BASE_CASE)
    lo = valuation.simulate(s.with_values({"revenue.exit_multiple": 6.0}), paths=4000, seed=11,
                            uncertain=False).summary()
    hi = valuation.simulate(s.with_values({"revenue.exit_multiple": 10.0}), paths=4000, seed=12,
                            uncertain=False).summary()
    row = sens.bars("oct_2025_recap", "microsoft").loc["revenue.exit_multiple"]
    independent = float(np.hypot(lo.loc[("oct_2025_recap", "microsoft"), "se"],
                                 hi.loc[("oct_2025_recap", "microsoft"), "se"]))
    assert row["swing_se_independent"] == pytest.approx(independent, rel=0.15)


def test_results_are_the_same_for_any_thread_count():
    s = _share_scenario()
    a = valuation.sensitivity(s, paths=2000, seed=5, points=3, threads=1)
    b = valuation.sensitivity(s, paths=2000, seed=5, points=3, threads=2)
    assert a.tornado.equals(b.tornado) and a.spider.equals(b.spider)


def test_a_range_past_a_neighbouring_point_is_cut_and_said():
    """agi.declaration.points[0].p ranges to 0.55 in the base case, past points[1].p = 0.5: one at a time, the
    range stops where the scenario stays valid, and the result says so."""
    sens = valuation.sensitivity(BASE_CASE, ["agi.declaration.points[0].p"], paths=400, seed=1, points=2)
    row = sens.bars("oct_2025_recap", "microsoft").iloc[0]
    assert row["low"] == 0.1 and 0.4999 < row["high"] < 0.5
    assert "agi.declaration.points[0].p" in sens.cuts and "0.55" in sens.cuts["agi.declaration.points[0].p"]
    assert any("cut" in line for line in sens.lines())


def test_the_workbook_has_tornado_and_spider_charts(tmp_path):
    s = _share_scenario()
    sens = valuation.sensitivity(s, paths=2000, seed=5)
    path = sens.to_excel(tmp_path / "s.xlsx")
    wb = load_workbook(path)
    assert wb.sheetnames == ["Read me", "Sensitivity", "Chart data"]
    ws = wb["Sensitivity"]
    kinds = sorted(type(c).__name__ for c in ws._charts)
    assert kinds == ["BarChart", "BarChart", "ScatterChart", "ScatterChart"]  # share: payer and payee
    assert all(c.type == "bar" for c in ws._charts if type(c).__name__ == "BarChart")
    values = [[cell.value for cell in row] for row in ws.iter_rows()]
    assert any(row[:3] == ["share", "payee", "structures[0].clauses[0].rate"] for row in values)


def _cli(*args: str) -> tuple[int, str, str]:
    """``valuation ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_cli_writes_the_workbook_and_prints_the_top_inputs(tmp_path):
    out = tmp_path / "t.xlsx"
    code, stdout, stderr = _cli("sensitivity", str(BASE_CASE), "--inputs", "revenue.exit_multiple",
                                "revenue.long_run_growth", "--paths", "400", "--points", "2", "--out", str(out))
    assert code == 0, stderr
    assert "revenue.exit_multiple" in stdout and "swing" in stdout
    assert load_workbook(out).sheetnames == ["Read me", "Sensitivity", "Chart data"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--inputs", "revenue.nonsense"], "revenue.nonsense"),
    (["--inputs", "revenue.mean_reversion"], "it has only a value"),
    (["--statistic", "p150"], "statistic"),
    (["--baseline", "nope"], "--baseline"),
    (["--points", "1"], "--points"),
    (["--paths", "10"], "--paths"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = _cli("sensitivity", str(BASE_CASE), *args)
    assert code == 2, stderr
    assert expected in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # not even the default reports/ folder


def test_bad_input_in_python_names_the_argument():
    s = _share_scenario()
    with pytest.raises(InputError, match="inputs"):
        valuation.sensitivity(s, [3])
    with pytest.raises(InputError, match="statistic"):
        valuation.sensitivity(s, statistic="median-ish")
    spec = copy.deepcopy(minimal_dict())
    with pytest.raises(InputError, match="low/high range"):
        valuation.sensitivity(scenario_from_dict(spec))  # no input has a range
    empty = _share_scenario(0.2, 0.2)
    with pytest.raises(InputError, match="low < high"):
        valuation.sensitivity(empty)
