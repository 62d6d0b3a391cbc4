"""Negotiation (valuation.negotiate): a deterministic scenario whose zone of agreement and Nash point are known
in closed form, an empty zone, a grid of two terms, the workbook and bad input."""

from __future__ import annotations

import contextlib
import copy
import io
from datetime import date

import numpy as np
import pytest
from openpyxl import load_workbook

import valuation
from conftest import BASE_CASE, minimal_dict
from valuation.cli import main
from valuation.errors import InputError
from valuation.scenario import scenario_from_dict

PAY = 20.0  # USD bn paid on PAY_DATE under the walk-away
PAY_DATE = date(2026, 1, 1)
KEY = "structures[0].clauses[0].rate"


def _deal_spec() -> dict:
    spec = copy.deepcopy(minimal_dict())
    spec["agi"]["declaration"] = {"family": "fixed", "after": 100.0}
    spec["structures"] = [
        {"name": "share", "clauses": [{"type": "revenue_share", "payer": "payer", "payee": "payee", "rate": 0.05}]},
        {"name": "lump", "clauses": [{"type": "payment", "payer": "payer", "payee": "payee", "amount": PAY,
                                      "date": PAY_DATE}]},
    ]
    return spec


def _deal():
    """Revenue grows deterministically (30% a year, no shocks, AGI never in the horizon).  Under "share" the
    payer pays a share ``r`` of revenue; under "lump" it pays PAY on PAY_DATE.  The payee discounts at 5%, the
    payer at 10%, so each side values the two differently: the payee gains ``r A5 - PAY d5``, the payer
    ``PAY d10 - r A10`` (``A``: the PV of all revenue, ``d``: the payment date's discount factor, at each one's
    rate), so the zone is ``PAY d5 / A5 <= r <= PAY d10 / A10`` and the Nash point with weights ``w`` is
    ``(w_payee c10 / A10 + w_payer c5 / A5) / (w_payee + w_payer)``, ``c = PAY d``."""
    s = scenario_from_dict(_deal_spec())
    result = valuation.simulate(s, paths=64, seed=1)
    t = result.step_time
    booked = 10.0 * (np.exp(0.3 * t[1:]) - np.exp(0.3 * t[:-1])) / 0.3
    mid = 0.5 * (t[:-1] + t[1:])
    a5, a10 = (float(np.sum(booked * (1 + r) ** -mid)) for r in (0.05, 0.10))
    c5, c10 = (PAY * (1 + r) ** -s.years(PAY_DATE) for r in (0.05, 0.10))
    return s, a5, a10, c5, c10


def test_zone_ends_and_nash_point_meet_their_closed_forms():
    s, a5, a10, c5, c10 = _deal()
    n = valuation.negotiate(s, KEY, "share", parties=("payee", "payer"), walk_away="lump", paths=40, seed=1,
                            between=(0.0, 0.2))
    assert len(n.zone) == 1
    (low, low_se, low_why), (high, high_se, high_why) = n.zone[0]
    assert low == pytest.approx(c5 / a5, rel=1e-9, abs=1e-12) and "payee" in low_why
    assert high == pytest.approx(c10 / a10, rel=1e-9, abs=1e-12) and "payer" in high_why
    assert low_se == 0.0 and high_se == 0.0  # every path the same: no noise
    assert n.nash["value"] == pytest.approx((c10 / a10 + c5 / a5) / 2, rel=1e-7)
    assert n.nash["se"] < 1e-12  # every path the same: rounding only
    # bargaining power moves the point toward the stronger side's best end, as the closed form says
    w = valuation.negotiate(s, KEY, "share", parties=("payee", "payer"), walk_away="lump", paths=40, seed=1,
                            between=(0.0, 0.2), weights=(3.0, 1.0))
    assert w.nash["value"] == pytest.approx((3 * c10 / a10 + 1 * c5 / a5) / 4, rel=1e-7)
    assert any("Nash" in line for line in w.lines())


def test_an_empty_zone_reports_the_shortfall():
    s, a5, a10, c5, c10 = _deal()
    n = valuation.negotiate(s, KEY, "share", parties=("payee", "payer"), walk_away="lump", paths=40, seed=1,
                            between=(0.3, 0.5))  # far above the payer's limit
    assert n.zone == [] and n.nash is None
    assert n.shortfall == pytest.approx(c10 - 0.3 * a10, rel=1e-9)  # the payer's gain at the cheapest point
    assert "empty" in n.lines()[1]


def test_random_paths_give_ends_and_a_nash_point_whose_standard_errors_match_their_spread_over_seeds():
    """With revenue shocks the zone's ends and the Nash point move from seed to seed; their reported standard
    errors (delta method; batches) match that spread (within the noise of 12 seeds: a factor of 2)."""
    spec = _deal_spec()
    spec["revenue"]["volatility"] = 0.3
    s = scenario_from_dict(spec)
    ends, ses, points, point_ses = [], [], [], []
    for seed in range(12):
        n = valuation.negotiate(s, KEY, "share", parties=("payee", "payer"), walk_away="lump", paths=2000,
                                seed=seed, between=(0.0, 0.2), points=5)
        (low, low_se, _), (high, high_se, _) = n.zone[0]
        assert low < n.nash["value"] < high
        ends.append((low, high))
        ses.append((low_se, high_se))
        points.append(n.nash["value"])
        point_ses.append(n.nash["se"])
    spread, reported = np.std(ends, axis=0, ddof=1), np.mean(ses, axis=0)
    assert np.all(reported > 0)
    assert np.all((0.5 < spread / reported) & (spread / reported < 2.0)), (spread, reported)
    ratio = np.std(points, ddof=1) / np.mean(point_ses)
    assert 0.5 < ratio < 2.0, ratio


def test_two_terms_as_a_grid():
    spec = _deal_spec()
    spec["structures"][0]["clauses"].append({"type": "payment", "payer": "payee", "payee": "payer", "amount": 1.0,
                                             "date": PAY_DATE})
    s2 = scenario_from_dict(spec)
    n = valuation.negotiate(s2, [KEY, "structures[0].clauses[1].amount"], "share", parties=("payee", "payer"),
                            walk_away="lump", paths=40, seed=1, points=5, between=[(0.0, 0.2), (0.0, 10.0)])
    assert len(n.curve) == 25 and n.curve["in_zone"].any() and not n.curve["in_zone"].all()
    inside = n.curve[n.curve["in_zone"]]
    assert (inside["gain:payee"] > 0).all() and (inside["gain:payer"] > 0).all()
    assert n.nash is not None and len(n.nash["value"]) == 2


def test_the_workbook_shades_the_zone_and_marks_the_nash_point(tmp_path):
    s, *_ = _deal()
    n = valuation.negotiate(s, KEY, "share", parties=("payee", "payer"), walk_away="lump", paths=40, seed=1,
                            between=(0.0, 0.2))
    wb = load_workbook(n.to_excel(tmp_path / "n.xlsx"))
    assert wb.sheetnames == ["Read me", "Negotiation"]
    ws = wb["Negotiation"]
    assert len(ws._charts) == 1
    text = " ".join(str(c.value) for row in ws.iter_rows() for c in row if c.value is not None)
    assert "Zone of possible agreement" in text and "Nash" in text


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_cli_on_the_base_case(tmp_path):
    out = tmp_path / "n.xlsx"
    code, stdout, stderr = _cli("negotiate", str(BASE_CASE), "--vary", "structures[1].clauses[0].schedule[1].rate",
                                "--structure", "openai_proposal_2025", "--walk-away", "terms_2019_2023",
                                "--paths", "400", "--points", "3", "--fixed", "--out", str(out))
    assert code == 0, stderr
    assert "zone of possible agreement" in stdout and out.exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--structure", "nope"], "--structure = 'nope'"),
    (["--structure", "oct_2025_recap", "--walk-away", "oct_2025_recap"], "--walk-away"),
    (["--structure", "oct_2025_recap", "--parties", "microsoft"], "--parties"),
    (["--structure", "oct_2025_recap", "--weights", "1", "-2"], "--weights"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli("negotiate", str(BASE_CASE), "--vary", "revenue.exit_multiple", *args, "--paths", "100")
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_in_python():
    s, *_ = _deal()
    with pytest.raises(InputError, match="walk_away"):
        valuation.negotiate(s, KEY, "share", parties=("payee", "payer"), walk_away="share")
    with pytest.raises(InputError, match="parties"):
        valuation.negotiate(s, KEY, "share", parties=("payee", "payee"), walk_away="lump")
    with pytest.raises(InputError, match="vary"):
        valuation.negotiate(s, "structures[0].name", "share", parties=("payee", "payer"), walk_away="lump")


def test_defaults_come_from_the_scenario_and_api_names_become_flags(tmp_path, monkeypatch):
    """The parties default to the two sides of the term's clause; negotiating the baseline needs a walk-away;
    a check made inside the API names the command line's flag."""
    s, *_ = _deal()
    n = valuation.negotiate(s, KEY, "share", walk_away="lump", paths=40, seed=1, between=(0.0, 0.2), points=3)
    assert n.parties == ["payer", "payee"]
    with pytest.raises(InputError, match="walk_away"):
        valuation.negotiate(s, KEY, "share", paths=40)  # "share" is the baseline
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli("negotiate", str(BASE_CASE), "--vary", "structures[1].clauses[0].schedule[1].rate",
                        "structures[1].clauses[0].schedule[0].rate", "--structure", "openai_proposal_2025",
                        "--walk-away", "terms_2019_2023", "--points", "60")
    assert code == 2 and "--points = 60" in err, err
