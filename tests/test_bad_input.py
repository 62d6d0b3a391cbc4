"""Every mistake: exit code 2, a message naming the key and value, no traceback, no workbook."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BASE_CASE
from valuation.cli import main

TEXT = BASE_CASE.read_text(encoding="utf-8")


def _replace(old: str, new: str, count: int = 1) -> str:
    assert old in TEXT, old
    return TEXT.replace(old, new, count)


# (id, file text or None for a missing file, words the message must contain)
CASES = [
    ("toml_syntax", TEXT.replace("steps_per_year = 4", "steps_per_year = = 4"), ["TOML syntax error", "line"]),
    ("unknown_key", _replace("steps_per_year = 4", "steps_per_year = 4\nstep_per_year = 4"),
     ["simulation.step_per_year", "unknown key", "steps_per_year"]),
    ("missing_key", _replace('horizon = 2040-12-31\n', ''), ["simulation.horizon", "required"]),
    ("wrong_type", _replace("steps_per_year = 4", 'steps_per_year = "four"'),
     ["simulation.steps_per_year", "'four'", "whole number"]),
    ("negative_volatility", _replace("volatility = { value = 0.20", "volatility = { value = -0.20"),
     ["revenue.volatility", "-0.2", ">= 0"]),
    ("probability_above_one", _replace("never_verified = { value = 0.10", "never_verified = { value = 1.10"),
     ["agi.never_verified", "1.1", "<= 1"]),
    ("unsorted_schedule", _replace("{ date = 2030-12-31, rate = { value = 0.08",
                                   "{ date = 2025-01-31, rate = { value = 0.08"),
     ["structures[1].clauses[0].schedule", "strictly increasing"]),
    ("fallback_missing", _replace('fallback = "terms_2019_2023"', 'fallback = "terms_2019"'),
     ["structures[1].fallback", "'terms_2019'", "structure name"]),
    ("negative_cap", _replace("cap = { value = 38.0", "cap = { value = -38.0"),
     ["structures[3].clauses[0].cap", "-38.0", ">= 0"]),
    ("unknown_party", _replace('payee = "microsoft"', 'payee = "microsfot"'),
     ["structures[0].clauses[0].payee", "'microsfot'", "one of"]),
    ("nan_value", _replace("initial_growth = { value = 0.95", "initial_growth = { value = nan"),
     ["revenue.initial_growth", "finite"]),
    ("tiers_not_increasing", _replace("until = { value = 92.0", "until = { value = 12.0"),
     ["structures[0].clauses[2].tiers", "strictly increasing"]),
    ("unknown_clause_type", _replace('type = "own_value"', 'type = "own_valu"'),
     ["structures[0].clauses[3].type", "'own_valu'"]),
    ("deadline_after_horizon", _replace("date = 2028-12-31\nevents", "date = 2045-12-31\nevents"),
     ["deadlines[2].date", "2045-12-31", "horizon"]),
    ("too_many_trigger_terms", _replace('end = ["agi_declared", 2030-12-31]',
                                        'end = ["agi_declared", "ipo", "ipo", "ipo", 2030-12-31]'),
     ["structures[0].clauses[0].end", "at most 4"]),
    ("deadline_without_events", _replace('events = ["ipo", "agi_declared"]', 'events = []'),
     ["deadlines[2]", "at least one"]),
    ("fallback_cycle", _replace('name = "terms_2019_2023"\nlabel = "2019/2023 terms (status quo)"',
                                'name = "terms_2019_2023"\nlabel = "2019/2023 terms (status quo)"\n'
                                'requires = "notes_conversion"\nfallback = "oct_2025_recap"'),
     ["structures[0].fallback", "cycle", "terms_2019_2023 -> oct_2025_recap -> terms_2019_2023"]),
    ("never_is_certain", _replace('sigma = { value = 0.8, source = "Assumption" }',
                                  'sigma = { value = 0.8, source = "Assumption" }\nnever = 1.0'),
     ["events.ipo.never", "1.0", "< 1"]),
    ("quantile_point_before_start", _replace("{ by = 2029-12-31, p = 0.24 }", "{ by = 2025-12-31, p = 0.24 }"),
     ["agi.declaration.points[0].by", "2025-12-31", "after this table's start"]),
    ("too_few_points_for_fit", _replace("  { by = 2032-12-31, p = 0.55 },\n  { by = 2047-12-31, p = 0.88 },\n", ""),
     ["agi.declaration.points", "at least 2 points", "lognormal"]),
    ("piece_before_start", _replace('family = "lognormal"\nstart = 2026-01-01\nmedian = { value = 3.5',
                                    'family = "piecewise_hazard"\nstart = 2027-01-01\n'
                                    'pieces = [{ from = 2026-01-01, hazard = 0.2 }]\nmedian = { value = 3.5'),
     ["events.ipo"]),
    ("tail_without_piecewise", _replace('fit = "lognormal"\n', 'fit = "lognormal"\ntail = "never"\n'),
     ["agi.declaration.tail", "piecewise"]),
    ("rate_after_cap_without_cap", _replace('end = ["agi_declared", 2030-12-31]   #',
                                            'rate_after_cap = 0.1\nend = ["agi_declared", 2030-12-31]   #'),
     ["structures[0].clauses[0].rate_after_cap", "without a 'cap'"]),
    ("condition_before_valuation_date", _replace('condition = { deadline = "amazon_contingency", met = true }',
                                                 'condition = { event = "ipo", before = 2020-01-01 }'),
     ["common_clauses[5].condition.before", "2020-01-01"]),
    ("reserved_event_name", TEXT.replace("[events.ipo]", "[events.revenue_at_horizon]").replace(
        '"ipo", "agi_declared"', '"revenue_at_horizon", "agi_declared"'), ["events.revenue_at_horizon"]),
    ("source_not_text", _replace('{ value = 0.09, source = "MSFT WACC',
                                 '{ value = 0.09, source = 9, note = "MSFT WACC'),
     ["parties.microsoft.discount_rate.source", "parties.microsoft.discount_rate.note"]),
    ("negative_plus_years", _replace('end = "agi_verified"', 'end = { event = "agi_verified", plus_years = -2 }'),
     ["structures[2].clauses[0].end", "plus_years", ">= 0"]),
    ("horizon_before_start", _replace("horizon = 2040-12-31", "horizon = 2020-12-31"),
     ["simulation.horizon", "2020-12-31", "after valuation_date"]),
    ("same_payer_and_payee", _replace('payer = "softbank"\npayee = "openai"', 'payer = "openai"\npayee = "openai"'),
     ["common_clauses[0].payee", "other than the payer"]),
    ("not_utf8", None, ["UTF-8"]),
    ("missing_file", None, ["file not found"]),
]


@pytest.mark.parametrize(("text", "words"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_scenario_exits_2_with_a_clear_message(tmp_path, capsys, text, words, request):
    scenario = tmp_path / "bad.toml"
    case = request.node.callspec.id
    if case == "not_utf8":
        scenario.write_bytes(b"name = \"\xff\xfe\"\n")
    elif text is not None:
        scenario.write_text(text, encoding="utf-8")
    out = tmp_path / "out.xlsx"
    code = main(["run", str(scenario), "--paths", "100", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert str(scenario) in err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()
    assert not list(tmp_path.glob("*.xlsx")) and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("case", [c for c in CASES if c[1] is not None][:6], ids=lambda c: c[0])
def test_validate_reports_the_same_problems(tmp_path, capsys, case):
    scenario = tmp_path / "bad.toml"
    scenario.write_text(case[1], encoding="utf-8")
    assert main(["validate", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert all(word in err for word in case[2])


def test_good_file_validates(capsys):
    assert main(["validate", str(BASE_CASE)]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "words"), [
    (["run", str(BASE_CASE), "--paths", "0"], ["paths = 0", ">= 1"]),
    (["run", str(BASE_CASE), "--paths", "many"], ["--paths", "whole number"]),
    (["run", str(BASE_CASE), "--out", "no/such/folder/x.xlsx"], ["does not exist"]),
    (["run", str(BASE_CASE), "--out", "reports"], [".xlsx"]),
    (["run", str(BASE_CASE), "--baseline", "nope"], ["'nope'", "terms_2019_2023"]),
    (["frobnicate"], ["invalid choice"]),
    (["run", str(BASE_CASE), "--seed", str(2**70)], ["seed", "<= 9223372036854775807"]),
    (["run", str(BASE_CASE), "--threads", "999"], ["threads = 999"]),
    (["run", str(BASE_CASE), "--out", "/proc/x.xlsx"], ["/proc/x.xlsx", "not writable"]),
])
def test_bad_arguments_exit_2(capsys, args, words):
    assert _exit_code(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(word in err for word in words), err


def _exit_code(args: list[str]) -> int:
    """main's return value, or the code argparse exits with on a usage error."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


def test_output_directory_is_rejected(tmp_path, capsys):
    target = tmp_path / "dir.xlsx"
    target.mkdir()
    assert main(["run", str(BASE_CASE), "--paths", "100", "--out", str(target)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    """The installed entry point, in a real process."""
    bad = tmp_path / "bad.toml"
    bad.write_text(CASES[4][1], encoding="utf-8")
    exe = Path(sys.executable).with_name("valuation")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "valuation.cli"]
    proc = subprocess.run([*cmd, "run", str(bad), "--out", str(tmp_path / "x.xlsx")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    assert proc.returncode == 2
    assert "revenue.volatility" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.xlsx").exists()
