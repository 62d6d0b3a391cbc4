"""The CLI's main job and the workbook it writes: sheets, values, charts, safety, the assumptions round trip."""

import copy
import re
import zipfile
from datetime import date, datetime

import numpy as np
import openpyxl
import pandas as pd
import pytest

from conftest import BASE_CASE, base_case_dict
from valuation import InputError, load_scenario, simulate
from valuation.cli import main
from valuation.report import SHEETS
from valuation.results import annual_cash_flows
from valuation.scenario import scenario_from_dict
from valuation.scenario.assumptions import assumption_rows

PATHS = 2_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wb") / "base.xlsx"
    assert main(["run", str(BASE_CASE), "--paths", str(PATHS), "--seed", "11", "--out", str(out)]) == 0
    return out, simulate(str(BASE_CASE), paths=PATHS, seed=11)


def _rows(ws, table_name):
    """The rows of an Excel Table as dicts keyed by its header."""
    ref = ws.tables[table_name].ref
    cells = list(ws[ref])
    head = [c.value for c in cells[0]]
    return [dict(zip(head, [c.value for c in row], strict=True)) for row in cells[1:]]


def test_cli_prints_the_summary_and_writes_the_workbook(tmp_path, capsys):
    out = tmp_path / "x.xlsx"
    assert main(["run", str(BASE_CASE), "--paths", "500", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "oct_2025_recap" in printed and "microsoft" in printed and str(out) in printed
    assert out.exists()


def test_sheets_in_order_and_summary_values_equal_the_api(run):
    out, result = run
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == list(SHEETS)
    rows = _rows(wb["Summary"], "SummaryTable")
    summary = result.summary()
    assert len(rows) == len(summary)
    for row, ((structure, party), values) in zip(rows, summary.iterrows(), strict=True):
        s = next(x for x in result.scenario.structures if x.name == structure)
        assert row["Structure"] == (s.label or s.name)
        assert row["Party"] == (result.scenario.parties[party].label or party)
        assert row["Mean"] == pytest.approx(values["mean"], rel=1e-12)
        assert row["SE"] == pytest.approx(values["se"], rel=1e-12)
        assert row["P95"] == pytest.approx(values["p95"], rel=1e-12)
        assert row["CVaR 5%"] == pytest.approx(values["cvar5"], rel=1e-12)
        assert row["95% CI low"] == pytest.approx(values["mean"] - 1.96 * values["se"], rel=1e-12)


def test_read_me_has_the_run_metadata(run):
    out, result = run
    ws = openpyxl.load_workbook(out)["Read me"]
    meta = {ws.cell(r, 1).value: ws.cell(r, 2).value for r in range(1, ws.max_row + 1)}
    assert meta["Paths"] == PATHS and meta["Seed"] == 11
    assert meta["SeedSequence entropy"] == "11"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["Scenario file SHA-256"])
    assert "Philox4x32-10" in meta["Random generator"]
    assert all(name in meta for name in ("Summary", "Distributions", "Cash flows", "Assumptions"))


def test_pandas_and_openpyxl_read_every_sheet(run):
    out, result = run
    sheets = pd.read_excel(out, sheet_name=None)
    assert list(sheets) == list(SHEETS)
    paths = pd.read_excel(out, sheet_name="Paths", nrows=1000)
    assert len(paths) == 1000
    col = "PV oct_2025_recap / microsoft"
    np.testing.assert_allclose(paths[col].to_numpy(), result.pv("oct_2025_recap", "microsoft")[:1000], rtol=1e-12)


def _charts(path):
    """Chart XML parts, by sheet name (openpyxl writes the chart namespace unprefixed)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        wb_rels = z.read("xl/_rels/workbook.xml.rels").decode()
        wb_xml = z.read("xl/workbook.xml").decode()
        sheet_file = {}
        for name, rid in re.findall(r'<sheet [^>]*name="([^"]+)"[^>]*r:id="([^"]+)"', wb_xml):
            target = re.search(rf'Id="{rid}"[^>]*Target="([^"]+)"|Target="([^"]+)"[^>]*Id="{rid}"', wb_rels)
            sheet_file[name] = (target.group(1) or target.group(2)).split("/")[-1]
        out = {}
        for sheet, fname in sheet_file.items():
            rels = f"xl/worksheets/_rels/{fname}.rels"
            charts = []
            if rels in names:
                for drawing in re.findall(r'Target="[^"]*drawings/([^"/]+)"', z.read(rels).decode()):
                    drels = f"xl/drawings/_rels/{drawing}.rels"
                    for chart in re.findall(r'Target="[^"]*charts/([^"/]+)"', z.read(drels).decode()):
                        charts.append(z.read(f"xl/charts/{chart}").decode())
            out[sheet] = charts
    return out


def test_native_charts_where_the_report_promises_them(run):
    out, result = run
    charts = _charts(out)
    P = len(result.parties)
    assert len(charts["Summary"]) == 1 and "<barChart>" in charts["Summary"][0]
    assert charts["Summary"][0].count("<errBars>") == P  # +/- 1.96 SE on every series
    dist = charts["Distributions"]
    assert sum("<lineChart>" in c for c in dist) == P  # a histogram per party
    assert sum("<scatterChart>" in c for c in dist) == P  # an S-curve per party
    assert "<barChart>" in charts["Versus baseline"][0]
    assert len(charts["Cash flows"]) == len(result.structures)
    assert len(charts["Drivers"]) == 2  # AGI timing and the revenue fan
    for chart in [c for cs in charts.values() for c in cs]:
        assert "<title>" in chart and chart.count("<title>") >= 3  # chart and both axes titled
        if "<lineChart>" in chart:  # straight segments: a smoothed curve would invent values
            assert chart.count('<smooth val="0"') == chart.count("<ser>")
        for bars in re.findall(r"<errBars>.*?</errBars>", chart):
            assert bars.index("<plus>") < bars.index("<minus>")  # the schema's order (Excel is strict)


def test_versus_baseline_and_cash_flow_tables(run):
    out, result = run
    wb = openpyxl.load_workbook(out)
    rows = _rows(wb["Versus baseline"], "VersusBaseline")
    expected = result.versus()
    assert len(rows) == len(expected)
    for row, (_, values) in zip(rows, expected.iterrows(), strict=True):
        assert row["Mean difference"] == pytest.approx(values["mean"], rel=1e-12)
        assert row["P(better)"] == pytest.approx(values["p_better"], rel=1e-12)
    annual = _rows(wb["Cash flows"], "AnnualCashFlows")
    table = annual_cash_flows(result)
    assert len(annual) == len(table)
    assert annual[0]["2030"] == pytest.approx(table.iloc[0][2030], rel=1e-12)
    # the annual table holds every expected flow
    np.testing.assert_allclose(table.to_numpy().sum(axis=1), result.cash_flows.sum(axis=(2, 3)).ravel(),
                               rtol=1e-9, atol=1e-9)


def test_assumptions_list_every_input_with_its_source(run):
    out, result = run
    rows = {r["Key"]: r for r in _rows(openpyxl.load_workbook(out)["Assumptions"], "Assumptions")}
    initial = rows["revenue.initial"]
    assert initial["Value"] == 13.0 and initial["Unit"] == "USD bn per year" and initial["Given or default"] == "given"
    assert "Information" in initial["Source"]
    assert rows["structures[3].clauses[0].cap"]["Value"] == 38.0
    assert rows["structures[0].clauses[0].rate_after_cap"]["Given or default"] == "default"
    assert rows["structures[0].clauses[0].end[0]"]["Value"] == "agi_declared"
    assert rows["structures[0].clauses[0].end[1]"]["Value"] == date(2030, 12, 31) or \
        rows["structures[0].clauses[0].end[1]"]["Value"].date() == date(2030, 12, 31)
    assert rows["simulation.paths"]["Value"] == PATHS  # the run's own settings, so a re-run reproduces it
    numeric = [r for r in assumption_rows(result.scenario)
               if r["given"] == "given" and isinstance(r["value"], float)]
    assert numeric and all(r["source"] or r["table_source"] for r in numeric)


def test_unedited_workbook_reruns_to_identical_numbers(run, tmp_path):
    out, result = run
    again = tmp_path / "again.xlsx"
    assert main(["run", str(out), "--out", str(again)]) == 0
    rerun = simulate(load_scenario(out))
    np.testing.assert_array_equal(rerun.pvs, result.pvs)
    a = _rows(openpyxl.load_workbook(out)["Summary"], "SummaryTable")
    b = _rows(openpyxl.load_workbook(again)["Summary"], "SummaryTable")
    assert a == b


def _edit(path, key, value, target):
    wb = openpyxl.load_workbook(path)
    ws = wb["Assumptions"]
    for r in range(2, ws.max_row + 1):
        if ws.cell(r, 1).value == key:
            ws.cell(r, 2).value = value
            break
    else:
        raise KeyError(key)
    wb.save(target)
    return target


def _differences(a, b, prefix=""):
    """Key paths where two dumped scenarios differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in set(a) | set(b) for d in _differences(a.get(k), b.get(k), f"{prefix}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [prefix]


def test_one_edited_cell_changes_that_input_and_only_that(run, tmp_path):
    out, result = run
    edited = _edit(out, "structures[3].clauses[0].cap", 20.0, tmp_path / "edited.xlsx")
    before, after = load_scenario(out), load_scenario(edited)
    assert _differences(before.model_dump(), after.model_dump()) == [".structures[3].clauses[0].cap"]
    rerun = simulate(after)
    np.testing.assert_array_equal(rerun.pv("oct_2025_recap", "microsoft"), result.pv("oct_2025_recap", "microsoft"))
    assert rerun.pv("apr_2026_amendment", "microsoft").mean() < result.pv("apr_2026_amendment", "microsoft").mean()
    # a default left alone stays a default; a default edited becomes given
    edited_default = _edit(out, "structures[0].clauses[1].base_fraction", 0.5, tmp_path / "d.xlsx")
    assert _differences(before.model_dump(), load_scenario(edited_default).model_dump()) == \
        [".structures[0].clauses[1].base_fraction"]


@pytest.mark.parametrize(("key", "value", "words"), [
    ("revenue.volatility", -1, ["revenue.volatility (cell B", "-1", ">= 0"]),
    ("simulation.steps_per_year", "four", ["simulation.steps_per_year", "'four'", "whole number"]),
    ("structures[1].fallback", "nowhere", ["structures[1].fallback", "'nowhere'"]),
])
def test_edited_workbook_with_a_mistake_gets_the_same_clear_errors(run, tmp_path, capsys, key, value, words):
    out, _ = run
    bad = _edit(out, key, value, tmp_path / "bad.xlsx")
    target = tmp_path / "never.xlsx"
    assert main(["run", str(bad), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "sheet Assumptions" in err
    assert all(w in err for w in words), err
    assert not target.exists()


def test_not_a_workbook_and_no_assumptions_sheet(tmp_path, capsys):
    fake = tmp_path / "fake.xlsx"
    fake.write_text("not a workbook")
    assert main(["run", str(fake), "--out", str(tmp_path / "o.xlsx")]) == 2
    assert "not an Excel workbook" in capsys.readouterr().err
    other = tmp_path / "other.xlsx"
    openpyxl.Workbook().save(other)
    assert main(["validate", str(other)]) == 2
    assert "no sheet named 'Assumptions'" in capsys.readouterr().err


INJECTIONS = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3"]


def test_text_from_inputs_is_never_a_formula_and_round_trips(tmp_path):
    d = base_case_dict()
    d["structures"][0]["label"] = INJECTIONS[0]
    d["parties"]["openai"]["label"] = INJECTIONS[1]
    d["name"] = INJECTIONS[2]
    d["structures"][1]["clauses"][0]["label"] = INJECTIONS[3]
    result = simulate(scenario_from_dict(copy.deepcopy(d), source=str(BASE_CASE)), paths=200, seed=1)
    out = result.to_excel(tmp_path / "inj.xlsx")
    wb = openpyxl.load_workbook(out)
    found = set()
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.value in INJECTIONS:
                    assert cell.data_type == "s", (ws.title, cell.coordinate, cell.value)
                    found.add(cell.value)
    assert found == set(INJECTIONS)
    back = load_scenario(out)
    assert back.structures[0].label == INJECTIONS[0] and back.parties["openai"].label == INJECTIONS[1]
    assert back.name == INJECTIONS[2]


def test_failed_write_leaves_the_earlier_workbook_untouched(tmp_path, monkeypatch):
    result = simulate(str(BASE_CASE), paths=200, seed=1)
    out = result.to_excel(tmp_path / "keep.xlsx")
    before = out.read_bytes()

    def boom(self, filename):  # the zip is built in memory: fail half way through it
        filename.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openpyxl.Workbook, "save", boom)
    with pytest.raises(InputError, match="No space left on device"):
        result.to_excel(out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.xlsx"]


def test_workbook_size_does_not_grow_with_paths(tmp_path):
    """Nothing per path beyond the 1,000-path sample: 10x the paths, about the same file."""
    small = simulate(str(BASE_CASE), paths=2_000, seed=1).to_excel(tmp_path / "small.xlsx")
    large = simulate(str(BASE_CASE), paths=20_000, seed=1).to_excel(tmp_path / "large.xlsx")
    assert large.stat().st_size < 1.1 * small.stat().st_size


def test_error_bars_are_1_96_standard_errors_of_their_own_series(run):
    """Each bar's error bar reads the half-width cells of the same party and structure."""
    out, result = run
    chart = _charts(out)["Summary"][0]
    ws = openpyxl.load_workbook(out)["Summary"]
    refs = re.findall(r"<plus><numRef><f>'?Summary'?!\$([A-Z]+)\$(\d+):\$([A-Z]+)\$(\d+)</f>", chart)
    assert len(refs) == len(result.parties)
    se = result.summary()["se"]
    for p, (col, first, _, last) in enumerate(refs):
        values = [ws[f"{col}{r}"].value for r in range(int(first), int(last) + 1)]
        expected = [1.96 * se.loc[(s, result.parties[p])] for s in result.structures]
        np.testing.assert_allclose(values, expected, rtol=1e-12)


def _edit_many(path, edits, target):
    wb = openpyxl.load_workbook(path)
    ws = wb["Assumptions"]
    rows = {ws.cell(r, 1).value: r for r in range(2, ws.max_row + 1)}
    for key, value in edits.items():
        ws.cell(rows[key], 2).value = value
    wb.save(target)
    return target


def test_filling_an_empty_optional_input_and_dating_a_trigger(run, tmp_path):
    """An analyst types a number into an empty optional cell, and a date where a trigger named an event."""
    out, _ = run
    edited = _edit_many(out, {"common_clauses[5].discount_rate": 0.15,
                              "structures[1].clauses[0].end[0]": datetime(2029, 6, 30)}, tmp_path / "e.xlsx")
    before, after = load_scenario(out), load_scenario(edited)
    assert sorted(_differences(before.model_dump(), after.model_dump())) == \
        [".common_clauses[5].discount_rate", ".structures[1].clauses[0].end[0]"]
    assert after.common_clauses[5].discount_rate == 0.15
    assert after.structures[1].clauses[0].end[0] == date(2029, 6, 30)
    text_date = _edit_many(out, {"structures[1].clauses[0].end[0]": "2029-06-30"}, tmp_path / "t.xlsx")
    assert load_scenario(text_date).structures[1].clauses[0].end[0] == date(2029, 6, 30)


def test_a_seed_beyond_53_bits_reproduces(tmp_path):
    seed = 2**60 + 1
    out = simulate(str(BASE_CASE), paths=300, seed=seed).to_excel(tmp_path / "big.xlsx")
    again = load_scenario(out)
    assert again.simulation.seed == seed
    np.testing.assert_array_equal(simulate(again).pvs, simulate(str(BASE_CASE), paths=300, seed=seed).pvs)


def test_control_characters_in_text_are_bad_input(tmp_path, capsys):
    text = BASE_CASE.read_text(encoding="utf-8").replace('label = "Microsoft"', 'label = "Micro\\u0007soft"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    assert main(["run", str(bad), "--out", str(tmp_path / "x.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "parties.microsoft.label" in err and "control characters" in err and "Traceback" not in err


def test_writing_through_a_symbolic_link_keeps_the_link(tmp_path):
    target = tmp_path / "real.xlsx"
    link = tmp_path / "link.xlsx"
    result = simulate(str(BASE_CASE), paths=200, seed=1)
    result.to_excel(target)
    link.symlink_to(target)
    result.to_excel(link)
    assert link.is_symlink() and openpyxl.load_workbook(link).sheetnames == list(SHEETS)


def test_a_formula_without_a_saved_result_is_reported_not_read_as_empty(run, tmp_path, capsys):
    out, _ = run
    edited = _edit_many(out, {"revenue.volatility": "=0.1+0.1"}, tmp_path / "f.xlsx")
    assert main(["validate", str(edited)]) == 2
    err = capsys.readouterr().err
    assert "formula without a saved result" in err and "=0.1+0.1" in err
