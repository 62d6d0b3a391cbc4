"""Auto-stop at a target precision (simulate(..., target_se= / target_rel=)): the result is bit for bit the
fixed run of the paths it stopped at, every watched output meets its target, the limit is honoured and said."""

from __future__ import annotations

import numpy as np
import pytest

import valuation
from conftest import BASE_CASE
from valuation.cli import main
from valuation.errors import InputError


@pytest.mark.parametrize("keep", [True, False])
def test_the_result_is_the_fixed_run_of_the_paths_it_stopped_at(keep):
    auto = valuation.simulate(BASE_CASE, target_se=1.0, seed=3, keep_paths=keep, max_paths=200_000, paths=5000)
    assert auto.stop["met"] and auto.paths > 5000
    fixed = valuation.simulate(BASE_CASE, paths=auto.paths, seed=3, keep_paths=keep)
    assert auto.summary().equals(fixed.summary())
    if keep:
        assert np.array_equal(auto.pvs, fixed.pvs)
    summary = auto.summary()
    assert (summary["se"] <= 1.0).all()
    # and not many more paths than needed: the run before the last batch had not met it
    assert auto.stop["batches"] >= 2


def test_relative_targets_on_named_outputs_including_a_difference():
    outputs = [("oct_2025_recap", "microsoft"), ("oct_2025_recap", "microsoft", "diff")]
    auto = valuation.simulate(BASE_CASE, target_rel=0.01, outputs=outputs, seed=5, paths=2000, max_paths=400_000)
    s = auto.summary().loc[("oct_2025_recap", "microsoft")]
    assert auto.stop["met"]
    assert s["se"] <= 0.01 * abs(s["mean"]) and s["diff_se"] <= 0.01 * abs(s["diff_mean"])
    assert len(auto.stop["outputs"]) == 2


def test_the_limit_stops_it_and_says_the_target_was_not_met():
    auto = valuation.simulate(BASE_CASE, target_se=1e-6, seed=1, paths=1000, max_paths=3000)
    assert auto.paths == 3000 and not auto.stop["met"]
    assert auto.stop["worst"]["se"] > 1e-6


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"target_se": 0.0}, "target_se"),
    ({"target_rel": -1.0}, "target_rel"),
    ({"max_paths": 1000}, "target"),
    ({"target_se": 1.0, "outputs": [("nope", "microsoft")]}, "outputs"),
    ({"target_se": 1.0, "outputs": [("oct_2025_recap", "microsoft", "sum")]}, "outputs"),
    ({"target_se": 1.0, "paths": 5000, "max_paths": 1000}, "paths"),
])
def test_bad_auto_stop_arguments(kwargs, expected):
    with pytest.raises(InputError, match=expected):
        valuation.simulate(BASE_CASE, **kwargs)


def test_the_cli_reports_what_auto_stop_did(tmp_path, capsys):
    out = tmp_path / "a.xlsx"
    assert main(["run", str(BASE_CASE), "--target-rel", "0.02", "--max-paths", "100000", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "auto-stop (SE <= 0.02 x |mean| on 20 means): met after" in text and out.exists()
    assert main(["run", str(BASE_CASE), "--max-paths", "1000", "--out", str(out)]) == 2
    assert "--max-paths" in capsys.readouterr().err
