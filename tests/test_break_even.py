"""Break-even (valuation.break_even): a closed-form root, its standard error's coverage over seeds, an answer
that is no root, and the bad-input catalogue."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from datetime import date

import numpy as np
import pytest
from openpyxl import load_workbook

import valuation
from conftest import BASE_CASE, minimal_dict
from valuation.cli import main
from valuation.errors import InputError
from valuation.scenario import scenario_from_dict

RATE = 0.15  # the AGI declaration's hazard per year (exponential)
PAY_DATE = date(2030, 1, 1)
BONUS = 10.0  # USD bn, paid on PAY_DATE if AGI is declared by then


def _payments_scenario():
    """Structure "bonus" pays BONUS on PAY_DATE if AGI is declared by then; "fixed" pays an amount on PAY_DATE
    whatever happens.  The payee breaks even at amount = BONUS x P(declared by PAY_DATE) = BONUS (1 - e^-RATE T):
    both are discounted alike, so that is the root in closed form."""
    spec = copy.deepcopy(minimal_dict())
    spec["agi"]["declaration"] = {"family": "exponential", "rate": RATE}
    spec["structures"] = [
        {"name": "bonus", "clauses": [{"type": "payment", "payer": "payer", "payee": "payee", "amount": BONUS,
                                       "date": PAY_DATE,
                                       "condition": {"event": "agi_declared", "before": PAY_DATE}}]},
        {"name": "fixed", "clauses": [{"type": "payment", "payer": "payer", "payee": "payee", "amount": 5.0,
                                       "date": PAY_DATE}]},
    ]
    s = scenario_from_dict(spec)
    exact = BONUS * -math.expm1(-RATE * s.years(PAY_DATE))
    return s, exact


KEY = "structures[1].clauses[0].amount"


def test_root_meets_the_closed_form_within_3_se_and_is_confirmed():
    s, exact = _payments_scenario()
    b = valuation.break_even(s, KEY, "fixed", "payee", versus="bonus", paths=20_000, seed=4, between=(0.0, 10.0))
    assert b.found
    assert abs(b.value - exact) < 3 * b.se, (b.value, exact, b.se)
    # the delta method's SE is the bonus's: BONUS sqrt(p (1 - p) / n), p = exact / BONUS
    p = exact / BONUS
    assert b.se == pytest.approx(BONUS * math.sqrt(p * (1 - p) / 20_000), rel=0.05)
    assert abs(b.confirm[0]) < 4 * b.confirm[1]  # on the next seed, the gap at the root is noise
    assert b.slope == pytest.approx(1.0 / (1.05 ** s.years(PAY_DATE)), rel=1e-6)  # d PV / d amount: the payee's df
    assert b.confirmed and any("confirmed" in line for line in b.lines())


def test_against_a_target_and_through_the_cli(tmp_path, capsys):
    s, _ = _payments_scenario()
    df = 1.05 ** -s.years(PAY_DATE)
    b = valuation.break_even(s, KEY, "fixed", "payee", target=3.0, paths=2000, seed=1)
    assert b.found and b.value == pytest.approx(3.0 / df, rel=1e-6)  # deterministic: exact to the tolerance
    assert b.se == 0.0
    code = main(["break-even", str(BASE_CASE), "--vary", "revenue.exit_multiple", "--structure", "oct_2025_recap",
                 "--party", "microsoft", "--target", "250", "--paths", "2000", "--fixed", "--out",
                 str(tmp_path / "b.xlsx")])
    out = capsys.readouterr().out
    assert code == 0 and "break-even of revenue.exit_multiple" in out
    wb = load_workbook(tmp_path / "b.xlsx")
    assert wb.sheetnames == ["Read me", "Break-even"] and len(wb["Break-even"]._charts) == 1


def test_no_root_in_the_range_says_so_with_both_ends():
    s, exact = _payments_scenario()
    b = valuation.break_even(s, KEY, "fixed", "payee", versus="bonus", paths=2000, seed=4, between=(0.0, 1.0))
    assert not b.found and b.value is None
    assert b.low[1] < 0 and b.high[1] < 0  # the fixed payment is worth less at both ends
    assert "no break-even between 0 and 1" in b.lines()[1]


def test_the_roots_standard_error_covers_the_exact_root_95_percent_of_the_time():
    s, exact = _payments_scenario()
    hits = []
    for seed in range(200):
        b = valuation.break_even(s, KEY, "fixed", "payee", versus="bonus", paths=1000, seed=seed,
                                 between=(0.0, 10.0))
        hits.append(abs(b.value - exact) <= 1.96 * b.se)
    share = float(np.mean(hits))
    assert 0.91 <= share <= 0.99, share  # 95% within 2.6 binomial SEs (1.5% each over 200 seeds)


def _cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


@pytest.mark.parametrize(("args", "expected"), [
    (["--structure", "nope", "--party", "microsoft"], "--structure = 'nope'"),
    (["--structure", "oct_2025_recap", "--party", "nobody"], "--party = 'nobody'"),
    (["--structure", "oct_2025_recap", "--party", "microsoft", "--versus", "oct_2025_recap"], "--versus"),
    (["--structure", "oct_2025_recap", "--party", "microsoft", "--statistic", "mode"], "--statistic"),
    (["--structure", "oct_2025_recap", "--party", "microsoft", "--between", "5", "1"], "between"),
])
def test_bad_input_exits_2(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, err = _cli("break-even", str(BASE_CASE), "--vary", "revenue.exit_multiple", *args, "--paths", "100")
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_in_python():
    s, _ = _payments_scenario()
    with pytest.raises(InputError, match="vary"):
        valuation.break_even(s, "structures[1].name", "fixed", "payee")
    with pytest.raises(InputError, match="statistic"):
        valuation.break_even(s, KEY, "fixed", "payee", statistic="diff")
    with pytest.raises(TypeError):
        valuation.break_even(s, KEY, "fixed", "payee", target="3")


def test_a_range_the_scenario_refuses_is_cut_and_a_flat_gap_is_no_root(capsys):
    """The base case's first AGI point ranges to 0.55, past the second point's 0.5: the search stops where the
    scenario stays valid, and says so.  A term that moves nothing compared gives no root, not a root at an end."""
    b = valuation.break_even(BASE_CASE, "agi.declaration.points[0].p", "oct_2025_recap", "microsoft", target=200.0,
                             paths=400, seed=1)
    assert 0.4999 < b.high[0] < 0.5 and b.cut and "0.55 is refused" in b.cut
    assert any("cut to where the scenario is valid" in line for line in b.lines())
    flat = valuation.break_even(BASE_CASE, "structures[3].clauses[2].fraction", "apr_2026_amendment", "softbank",
                                versus="oct_2025_recap", paths=400, seed=1)
    assert not flat.found and "does not move it" in flat.lines()[1]


@pytest.mark.parametrize(("vary", "expected"), [
    ("simulation.paths", "not a run setting"),
    ("structures[0].clauses[0].rate", "which the comparison does not involve"),
])
def test_a_term_that_cannot_move_the_comparison_is_refused(tmp_path, monkeypatch, vary, expected):
    monkeypatch.chdir(tmp_path)
    code, err = _cli("break-even", str(BASE_CASE), "--vary", vary, "--structure", "oct_2025_recap", "--party",
                     "microsoft", "--versus", "apr_2026_amendment", "--paths", "100")
    assert code == 2 and expected in err and "--vary" in err, err
