"""Attribution from one run (valuation.attribution): a source that decides a PV (index ~1), sources it does not
depend on (index ~0 within 3 SE), the estimator against a known variance split, decile bars, the workbook, and
a streaming run refused."""

from __future__ import annotations

import copy
import math
from datetime import date

import numpy as np
import pytest
from openpyxl import load_workbook

import valuation
from conftest import BASE_CASE, minimal_dict
from valuation.analysis.attribution import first_order
from valuation.cli import main
from valuation.errors import InputError
from valuation.scenario import scenario_from_dict

PAY_DATE = date(2030, 1, 1)


def _bonus_scenario():
    """A payment of 10 on PAY_DATE if AGI is declared by then, nothing else: the PV is a function of the AGI
    declaration alone.  An IPO event (independent of it) is modelled too and moves nothing."""
    spec = copy.deepcopy(minimal_dict())
    spec["agi"]["declaration"] = {"family": "exponential", "rate": 0.15}
    spec["events"] = {"ipo": {"family": "lognormal", "median": 3.0, "sigma": 0.5}}
    spec["structures"] = [{"name": "bonus", "clauses": [
        {"type": "payment", "payer": "payer", "payee": "payee", "amount": 10.0, "date": PAY_DATE,
         "condition": {"event": "agi_declared", "before": PAY_DATE}}]}]
    return scenario_from_dict(spec)


def test_a_source_that_decides_the_pv_explains_all_of_it_and_others_nothing():
    result = valuation.simulate(_bonus_scenario(), paths=20_000, seed=3)
    att = result.attribution()
    top = att.top("bonus", "payee", 10)
    assert top.index[0] == "agi_declared"
    assert top.loc["agi_declared", "index"] > 0.97  # one bin of 50 straddles the date: at most ~2% lost
    assert 0 < top.loc["agi_declared", "se"] < 0.01
    ipo = top.loc["ipo"]
    assert abs(ipo["index"]) < 3 * ipo["se"] and ipo["se"] > 0, ipo
    # verification follows the declaration by a fixed year: it carries the same information
    assert top.loc["agi_verified", "index"] > 0.97
    # deciles: early declarations pay (all of the first deciles), late ones do not
    d = att.deciles.loc[("bonus", "payee", "agi_declared")]
    assert d["d1"] > 0 > d["d10"]
    assert d["d10"] == pytest.approx(-result.pv("bonus", "payee").mean(), rel=1e-12)


def test_the_estimator_meets_a_known_variance_split_and_its_se_covers():
    """Y = X + e with X, e independent standard normals: the index of X is 1/2, of an unrelated Z 0; over
    repeated samples the estimates' spread matches the reported standard errors."""
    rng = np.random.default_rng(0)
    estimates, zeros = [], []
    for _ in range(40):
        x, e, z = rng.normal(size=(3, 20_000))
        y = (x + e)[:, None]
        estimates.append(first_order(x, y, 50)[0])
        zeros.append(first_order(z, y, 50)[0])
    assert abs(np.mean(estimates) - 0.5) < 3 * np.std(estimates) / math.sqrt(40) + 0.01  # binning: ~1e-3 low
    assert abs(np.mean(zeros)) < 3 * np.std(zeros) / math.sqrt(40)  # the bias correction works


def test_bootstrap_standard_errors_match_the_spread_over_seeds():
    """Over 16 seeds: for the source that decides the PV (through a threshold) the reported standard error
    matches the estimates' spread; for one that explains nothing it may be cautious (the bootstrap's
    duplicated paths), never too small."""
    s = _bonus_scenario()
    rows = {"agi_declared": [], "ipo": []}
    for seed in range(16):
        top = valuation.simulate(s, paths=4000, seed=seed).attribution().top("bonus", "payee", 10)
        for name, kept in rows.items():
            kept.append((top.loc[name, "index"], top.loc[name, "se"]))
    decides, nothing = np.array(rows["agi_declared"]), np.array(rows["ipo"])
    ratio = np.std(decides[:, 0], ddof=1) / np.mean(decides[:, 1])
    assert 0.5 < ratio < 2.0, ratio
    ratio = np.std(nothing[:, 0], ddof=1) / np.mean(nothing[:, 1])
    assert 0.3 < ratio < 1.5, ratio


def test_the_revenue_shocks_drive_a_revenue_share_that_agi_does_not_end():
    spec = copy.deepcopy(minimal_dict())
    spec["revenue"]["volatility"] = 0.4
    spec["structures"][0]["clauses"][0].pop("end")
    att = valuation.simulate(scenario_from_dict(spec), paths=20_000, seed=2).attribution()
    top = att.top("share", "payee", 10)
    # the shocks' sum at the horizon explains most of a PV earned along the whole path (about 0.7 here)
    assert top.index[0] in ("revenue_shocks", "revenue_at_horizon") and top.loc["revenue_shocks", "index"] > 0.5
    declared = top.loc["agi_declared"]
    assert abs(declared["index"]) < 3 * declared["se"]


def test_uncertain_inputs_are_sources_too():
    result = valuation.simulate(BASE_CASE, paths=4000, seed=1, uncertain=True)
    att = result.attribution()
    assert any(src.startswith("input:revenue.") for src in att.sources)
    assert "revenue_at_horizon" in att.sources and "met:notes_conversion" in att.sources


def test_a_streaming_run_is_refused_with_a_message():
    result = valuation.simulate(_bonus_scenario(), paths=2000, seed=1, keep_paths=False)
    with pytest.raises(InputError, match="keep_paths=True"):
        result.attribution()


def test_the_workbook_and_the_cli(tmp_path, capsys):
    out = tmp_path / "a.xlsx"
    code = main(["attribution", str(BASE_CASE), "--paths", "2000", "--fixed", "--out", str(out)])
    assert code == 0
    assert "agi_declared" in capsys.readouterr().out
    wb = load_workbook(out)
    assert wb.sheetnames == ["Read me", "Attribution", "Chart data"]
    assert len(wb["Attribution"]._charts) >= 4


def test_cli_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["attribution", str(BASE_CASE), "--paths", "100"]) == 2
    assert "--paths" in capsys.readouterr().err
    assert main(["attribution", str(BASE_CASE), "--paths", "1000", "--bins", "1"]) == 2
    assert "--bins" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
