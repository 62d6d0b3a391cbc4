"""The CLI's main job and the workbook it writes."""

import copy

import numpy as np
import openpyxl
import pandas as pd
import pytest
from conftest import BASE_CASE, base_case_dict

from valuation import InputError, simulate
from valuation.cli import main
from valuation.report import assumption_rows
from valuation.scenario import scenario_from_dict

PATHS = 2_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wb") / "base.xlsx"
    assert main(["run", str(BASE_CASE), "--paths", str(PATHS), "--seed", "11", "--out", str(out)]) == 0
    return out, simulate(str(BASE_CASE), paths=PATHS, seed=11)


def test_cli_prints_the_summary_and_writes_the_workbook(tmp_path, capsys):
    out = tmp_path / "x.xlsx"
    assert main(["run", str(BASE_CASE), "--paths", "500", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "oct_2025_recap" in printed and "microsoft" in printed and str(out) in printed
    assert out.exists()


def test_sheets_and_summary_values_equal_the_api(run):
    out, result = run
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["Summary", "Assumptions", "Paths"]
    ws = wb["Summary"]
    table = ws.tables["SummaryTable"]
    first = ws[table.ref.split(":")[0]].row
    header = [c.value for c in ws[first]]
    summary = result.summary()
    labels = {s.name: s.label or s.name for s in result.scenario.structures}
    plabels = {p: v.label or p for p, v in result.scenario.parties.items()}
    rows = list(summary.iterrows())
    for i, ((structure, party), values) in enumerate(rows, start=first + 1):
        cells = [c.value for c in ws[i]]
        assert cells[0] == labels[structure] and cells[1] == plabels[party]
        assert cells[header.index("Mean")] == pytest.approx(values["mean"], rel=1e-12)
        assert cells[header.index("P95")] == pytest.approx(values["p95"], rel=1e-12)
        if structure == summary.attrs["baseline"]:
            assert cells[header.index("P(better)")] == "n/a"
        else:
            assert cells[header.index("P(better)")] == pytest.approx(values["p_better"], rel=1e-12)
    meta = {ws.cell(r, 1).value: ws.cell(r, 2).value for r in range(4, first)}
    assert meta["Paths"] == PATHS and meta["Seed"] == 11
    assert meta["SeedSequence entropy"] == "11"
    assert len(meta["Scenario SHA-256"]) == 64


def test_pandas_reads_every_sheet(run):
    out, result = run
    sheets = pd.read_excel(out, sheet_name=None)
    assert set(sheets) == {"Summary", "Assumptions", "Paths"}
    paths = pd.read_excel(out, sheet_name="Paths", nrows=1000)
    assert len(paths) == 1000
    col = "PV oct_2025_recap / microsoft"
    np.testing.assert_allclose(paths[col].to_numpy(), result.pv("oct_2025_recap", "microsoft")[:1000], rtol=1e-12)


def test_assumptions_list_every_input_with_its_source(run):
    out, result = run
    ws = openpyxl.load_workbook(out)["Assumptions"]
    rows = {ws.cell(r, 1).value: [ws.cell(r, c).value for c in range(2, 7)] for r in range(2, ws.max_row + 1)}
    value, unit, given, source, _ = rows["revenue.initial"]
    assert value == 12.0 and unit == "USD bn per year" and given == "given" and "Information" in source
    assert rows["structures[3].clauses[0].cap"][0] == 38.0
    assert rows["simulation.steps_per_year"][2] == "given"
    assert rows["revenue.growth_volatility"][0] == 0.03
    assert rows["structures[0].clauses[0].rate_after_cap"][2] == "default"
    # every number the scenario file gives has a source
    numeric = [r for r in assumption_rows(result.scenario)
               if r["given"] == "given" and isinstance(r["value"], float)]
    assert numeric and all(r["source"] for r in numeric)


def test_text_from_inputs_is_never_a_formula(tmp_path):
    d = base_case_dict()
    d["structures"][0]["label"] = '=HYPERLINK("http://x","y")'
    d["parties"]["openai"]["label"] = "+cmd|' /C calc'!A0"
    d["name"] = "@SUM(1+1)"
    result = simulate(scenario_from_dict(copy.deepcopy(d), source=str(BASE_CASE)), paths=200, seed=1)
    out = result.to_excel(tmp_path / "inj.xlsx")
    wb = openpyxl.load_workbook(out)
    found = 0
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if isinstance(cell.value, str) and cell.value[:1] in "=+@":
                    assert cell.data_type == "s", (ws.title, cell.coordinate, cell.value)
                    found += 1
    assert found >= 3


def test_failed_write_leaves_the_earlier_workbook_untouched(tmp_path, monkeypatch):
    result = simulate(str(BASE_CASE), paths=200, seed=1)
    out = result.to_excel(tmp_path / "keep.xlsx")
    before = out.read_bytes()

    def boom(self, filename):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openpyxl.Workbook, "save", boom)
    with pytest.raises(InputError, match="No space left on device"):
        result.to_excel(out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.xlsx"]
