"""Scenarios and stress: named variants in the scenario file (valuation.compare) and conditional results on the
paths of one run (result.where)."""

from __future__ import annotations

import copy
from datetime import date

import numpy as np
import pytest
from openpyxl import load_workbook

import valuation
from conftest import BASE_CASE, base_case_dict, minimal_dict
from valuation.cli import main
from valuation.errors import InputError
from valuation.scenario import load_scenario, scenario_from_dict


def _with_variants(*variants: dict) -> dict:
    spec = copy.deepcopy(minimal_dict())
    spec["variants"] = list(variants)
    return spec


def test_a_variant_is_the_scenario_with_its_changes_on_the_same_random_numbers():
    s = scenario_from_dict(_with_variants(
        {"name": "double", "changes": [{"input": "structures[0].clauses[0].rate", "to": 0.4}]}))
    cmp = valuation.compare(s, paths=3000, seed=2)
    base = valuation.simulate(s.without_variants(), paths=3000, seed=2).summary()
    by_hand = valuation.simulate(s.with_values({"structures[0].clauses[0].rate": 0.4}).without_variants(),
                                 paths=3000, seed=2).summary()
    row = cmp.table.loc[("double", "share", "payee")]
    assert row["value"] == by_hand.loc[("share", "payee"), "mean"]
    assert cmp.table.loc[("base", "share", "payee"), "value"] == base.loc[("share", "payee"), "mean"]
    # the share doubles on every path: the difference is the base value, its paired SE the base's SE
    assert row["diff"] == pytest.approx(base.loc[("share", "payee"), "mean"], rel=1e-12)
    assert row["diff_se"] == pytest.approx(base.loc[("share", "payee"), "se"], rel=1e-9)


def test_the_base_case_variants_run_and_move_the_values_their_way(tmp_path, capsys):
    out = tmp_path / "c.xlsx"
    assert main(["compare", str(BASE_CASE), "--paths", "2000", "--fixed", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "low_revenue" in text and "late_agi" in text
    wb = load_workbook(out)
    assert wb.sheetnames == ["Read me", "Scenarios", "Chart data"]
    cmp = valuation.compare(BASE_CASE, ["low_revenue", "high_revenue"], paths=2000, seed=1, uncertain=False)
    t = cmp.table
    for structure in cmp.structures:  # Microsoft's revenue share is worth less with less revenue
        assert t.loc[("low_revenue", structure, "microsoft"), "diff"] < 0 < t.loc[("high_revenue", structure,
                                                                                   "microsoft"), "diff"]


@pytest.mark.parametrize(("variant", "expected"), [
    ({"name": "v", "changes": [{"input": "revenue.nonsense", "to": 1.0}]}, "revenue.nonsense"),
    ({"name": "v", "changes": [{"input": "revenue.volatility", "to": -1.0}]}, "revenue.volatility"),
])
def test_a_variant_whose_changes_are_refused_is_named_by_validate_and_compare(tmp_path, monkeypatch, capsys,
                                                                               variant, expected):
    """Loading does not apply the variants (a copy that reshapes what one changes stays usable); `validate` and
    `compare` do, before any path runs."""
    s = scenario_from_dict(_with_variants(variant))
    with pytest.raises(InputError, match=r"variants\[0\]\.changes") as info:
        s.check_variants()
    assert expected in str(info.value)
    with pytest.raises(InputError, match=expected):
        valuation.compare(s, paths=100)
    import tomli_w

    (tmp_path / "v.toml").write_bytes(tomli_w.dumps(_with_variants(variant)).encode())
    monkeypatch.chdir(tmp_path)
    for command in (["validate", "v.toml"], ["compare", "v.toml", "--paths", "100"]):
        assert main(command) == 2
        assert expected in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.toml"]


@pytest.mark.parametrize(("variant", "expected"), [
    ({"name": "v", "changes": []}, "changes"),
    ({"name": "v", "changes": [{"input": "revenue.volatility", "to": 0.1},
                               {"input": "revenue.volatility", "to": 0.2}]}, "not changed twice"),
])
def test_a_malformed_variant_is_refused_when_the_file_loads(variant, expected):
    with pytest.raises(InputError, match=r"variants\[0\]") as info:
        scenario_from_dict(_with_variants(variant))
    assert expected in str(info.value)


def test_compare_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(BASE_CASE), "--variants", "nope"]) == 2
    assert "--variants = 'nope'" in capsys.readouterr().err
    (tmp_path / "plain.toml").write_text("")
    spec = base_case_dict()
    spec.pop("variants", None)
    with pytest.raises(InputError, match="variants"):
        valuation.compare(scenario_from_dict(spec))
    assert [p.name for p in tmp_path.iterdir()] == ["plain.toml"]


# ------------------------------------------------------------------ where()


def test_where_equals_filtering_the_kept_paths_by_hand():
    result = valuation.simulate(BASE_CASE, paths=4000, seed=3, uncertain=True)
    drivers = result.drivers
    t = load_scenario(BASE_CASE).years(date(2030, 12, 31))
    table = result.where(agi_verified_before="2030-12-31", deadline_missed="notes_conversion")
    mask = (drivers["agi_verified"].to_numpy() <= t) & ~drivers["met:notes_conversion"].to_numpy()
    pv = result.pvs[mask]
    s, p = result.structures.index("oct_2025_recap"), result.parties.index("microsoft")
    row = table.loc[("oct_2025_recap", "microsoft")]
    assert row["mean"] == pytest.approx(pv[:, s, p].mean(), rel=1e-12)
    assert row["se"] == pytest.approx(pv[:, s, p].std(ddof=1) / np.sqrt(mask.sum()), rel=1e-9)
    assert row["p50"] == pytest.approx(np.percentile(pv[:, s, p], 50), rel=1e-12)
    assert table.attrs["paths"] == mask.sum() and table.attrs["share"] == mask.mean()
    assert "notes_conversion missed" in table.attrs["condition"]
    # a percentile band of an uncertain input (@RISK's stress analysis)
    band = result.where(band=("input:revenue.initial_growth", 90, 100))
    x = result.input_values()["revenue.initial_growth"].to_numpy()
    picked = x >= np.percentile(x, 90)
    assert band.attrs["paths"] == picked.sum()
    assert band.loc[("oct_2025_recap", "microsoft"), "mean"] == pytest.approx(pv_all_mean(result, picked), rel=1e-12)


def pv_all_mean(result, mask):
    s, p = result.structures.index("oct_2025_recap"), result.parties.index("microsoft")
    return result.pvs[mask][:, s, p].mean()


def test_where_in_a_streaming_run_is_refused_with_a_message():
    result = valuation.simulate(BASE_CASE, paths=2000, seed=1, keep_paths=False)
    with pytest.raises(InputError, match="keep_paths=True"):
        result.where(agi_declared_before="2030-01-01")


@pytest.mark.parametrize(("conditions", "expected"), [
    ({"moon_before": "2030-01-01"}, "moon_before"),
    ({"agi_declared_before": "someday"}, "a date"),
    ({"deadline_met": "nope"}, "nope"),
    ({"band": ("revenue_at_horizon", 50, 10)}, "band"),
    ({"band": ("input:nothing", 0, 10)}, "input:nothing"),
    ({"colour": "red"}, "colour"),
    ({}, "at least one condition"),
])
def test_where_bad_conditions(conditions, expected):
    result = valuation.simulate(BASE_CASE, paths=1000, seed=1)
    with pytest.raises(InputError) as info:
        result.where(**conditions)
    assert expected in str(info.value)


def test_a_variant_value_of_the_wrong_kind_is_one_problem():
    spec = _with_variants({"name": "v", "changes": [{"input": "revenue.volatility", "to": True}]})
    with pytest.raises(InputError) as info:
        scenario_from_dict(spec)
    assert len(info.value.problems) == 1 and "variants[0].changes[0].to" in str(info.value)
