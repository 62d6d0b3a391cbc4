"""The Excel workbook: Summary, Assumptions and Paths sheets.

Written with openpyxl, atomically (a temporary file in the target folder,
then a rename), so a failure never leaves a partial workbook and never
touches an earlier one.  Text that came from inputs is always written as
text, never as a formula.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import tempfile
from datetime import UTC, datetime
from datetime import date as Date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.table import Table, TableStyleInfo
from pydantic import BaseModel

from valuation.errors import InputError
from valuation.results import SUMMARY_COLUMNS

if TYPE_CHECKING:
    from valuation.results import SimulationResult
    from valuation.scenario import Scenario

PATH_SAMPLE = 1_000
GENERATOR = "Philox4x32-10 (Random123), counter = (path, draw, stream); normals by inverse CDF (AS241)"

BN = '#,##0.00;[Red]-#,##0.00'
PCT = '0.0%'
YEARS = '0.00'
HEADER_FILL = PatternFill("solid", fgColor="1F3864")
HEADER_FONT = Font(bold=True, color="FFFFFF")
TITLE_FONT = Font(bold=True, size=14, color="1F3864")
LABEL_FONT = Font(bold=True, color="404040")
WRAP = Alignment(wrap_text=True, vertical="top")
TOP = Alignment(vertical="top")
TOP_LEFT = Alignment(vertical="top", horizontal="left")

_FORMATS = {"mean": BN, "se": '0.000', "sd": BN, "p5": BN, "p25": BN, "p50": BN, "p75": BN, "p95": BN,
            "var5": BN, "cvar5": BN, "p_negative": PCT, "diff_mean": BN, "diff_se": '0.000', "p_better": PCT}


# ------------------------------------------------------------------ paths


def check_output_path(path: str | Path) -> Path:
    """Reject a workbook path we could not write, before any simulation runs."""
    path = Path(path)
    where = str(path)
    if path.suffix.lower() != ".xlsx":
        raise InputError(where, "expected a workbook path ending in .xlsx")
    if path.is_dir():
        raise InputError(where, "is a directory; expected a file path ending in .xlsx")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(where, f"folder {str(parent)!r} does not exist; expected an existing folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(where, "exists and is read-only; expected a writable file")
    try:  # the only reliable test of a folder (read-only mounts, /proc, quotas) is to write in it
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(where, f"folder {str(parent)!r} is not writable ({exc.strerror or exc})") from None
    return path


def atomic_save(workbook: Workbook, path: Path) -> Path:
    """Save via a temporary file in the same folder and a rename."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(str(path), f"cannot be written ({exc.strerror or exc}); nothing was written") from None
    os.close(fd)
    try:
        os.chmod(tmp, _file_mode(path))
        workbook.save(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(str(path), f"cannot be written ({exc.strerror or exc}); any earlier file is "
                                        "unchanged") from None
        raise
    return path


def _file_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual 0666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# ---------------------------------------------------------------- writing


def write_workbook(result: SimulationResult, path: str | Path) -> Path:
    """Write the workbook for ``result`` to ``path`` (atomically); returns the path."""
    path = check_output_path(path)
    wb = Workbook()
    summary = result.summary()
    _summary_sheet(wb.active, result, summary)
    _assumptions_sheet(wb.create_sheet("Assumptions"), result.scenario, result)
    _paths_sheet(wb.create_sheet("Paths"), result)
    return atomic_save(wb, path)


def put(ws, row: int, col: int, value: Any, fmt: str | None = None, font: Font | None = None,
        infinity: str = "n/a"):
    """Write one cell; strings are always text, never formulas; a non-finite number becomes a note."""
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    missing = isinstance(value, float) and not np.isfinite(value)
    if missing:
        value = infinity if value == np.inf else "n/a"
    cell = ws.cell(row=row, column=col, value=value)
    if isinstance(value, str):
        cell.data_type = "s"
    if missing:
        cell.alignment = Alignment(horizontal="right")
    if fmt:
        cell.number_format = fmt
    if font:
        cell.font = font
    return cell


def _header(ws, row: int, names: list[str], col: int = 1) -> None:
    for j, name in enumerate(names):
        c = put(ws, row, col + j, name, font=HEADER_FONT)
        c.fill = HEADER_FILL
        c.alignment = Alignment(wrap_text=True, vertical="center")


def _widths(ws, widths: dict[int, float]) -> None:
    for col, w in widths.items():
        ws.column_dimensions[get_column_letter(col)].width = w


def _table(ws, name: str, first_row: int, last_row: int, n_cols: int) -> None:
    ref = f"A{first_row}:{get_column_letter(n_cols)}{last_row}"
    table = Table(displayName=name, ref=ref)
    table.tableStyleInfo = TableStyleInfo(name="TableStyleLight9", showRowStripes=True)
    ws.add_table(table)


def run_metadata(result: SimulationResult) -> list[tuple[str, Any]]:
    s = result.scenario
    from valuation import __version__

    digest = ""
    if s.path and Path(s.path).is_file():
        digest = hashlib.sha256(Path(s.path).read_bytes()).hexdigest()
    return [
        ("Scenario", s.name),
        ("Scenario file", s.path or ""),
        ("Scenario SHA-256", digest),
        ("Valuation date", s.simulation.valuation_date),
        ("Horizon", s.simulation.horizon),
        ("Steps per year", s.simulation.steps_per_year),
        ("Paths", result.paths),
        ("Seed", result.seed if result.seed < 2**53 else str(result.seed)),  # Excel numbers hold 53 bits
        ("SeedSequence entropy", str(result.entropy)),
        ("Random generator", GENERATOR),
        ("Baseline structure", result.baseline or result.structures[0]),
        ("Package version", __version__),
        ("Run time (s)", round(result.run_seconds, 3)),
        ("Threads", result.threads),
        ("Written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Python / platform", f"{platform.python_version()} / {platform.platform(terse=True)}"),
    ]


def _labels(result: SimulationResult) -> tuple[dict[str, str], dict[str, str]]:
    s = result.scenario
    st = {x.name: x.label or x.name for x in s.structures}
    pa = {name: p.label or name for name, p in s.parties.items()}
    return st, pa


def _summary_sheet(ws, result: SimulationResult, summary: pd.DataFrame) -> None:
    ws.title = "Summary"
    ws.sheet_view.showGridLines = False
    put(ws, 1, 1, "Payoff distributions by structure and party", font=TITLE_FONT)
    put(ws, 2, 1, "Present values in USD bn at the valuation date; standard errors of the Monte Carlo estimate; "
                  "differences are path by path against the baseline structure on the same random numbers.")
    row = 4
    for label, value in run_metadata(result):
        put(ws, row, 1, label, font=LABEL_FONT)
        put(ws, row, 2, value, fmt="yyyy-mm-dd" if isinstance(value, Date) else None)
        ws.cell(row=row, column=2).alignment = Alignment(horizontal="left")
        row += 1
    row += 1
    top = row
    cols = list(SUMMARY_COLUMNS)
    names = ["Structure", "Party", *[_short(c) for c in cols]]
    _header(ws, top, names)
    st_label, pa_label = _labels(result)
    for (structure, party), values in summary.iterrows():
        row += 1
        put(ws, row, 1, st_label[structure])
        put(ws, row, 2, pa_label[party])
        for j, c in enumerate(cols):
            put(ws, row, 3 + j, float(values[c]), fmt=_FORMATS[c])
    _table(ws, "SummaryTable", top, row, len(names))
    row += 2
    put(ws, row, 1, "Columns", font=LABEL_FONT)
    for c in cols:
        row += 1
        put(ws, row, 1, _short(c))
        put(ws, row, 2, SUMMARY_COLUMNS[c])
    ws.freeze_panes = ws.cell(row=top + 1, column=3)
    _widths(ws, {1: 50, 2: 26, **{3 + j: 12 for j in range(len(cols))}})
    ws.row_dimensions[top].height = 32
    _print_setup(ws)


def _short(column: str) -> str:
    return {"mean": "Mean", "se": "SE", "sd": "SD", "p5": "P5", "p25": "P25", "p50": "P50", "p75": "P75",
            "p95": "P95", "var5": "VaR 5%", "cvar5": "CVaR 5%", "p_negative": "P(PV<0)",
            "diff_mean": "vs baseline: mean", "diff_se": "vs baseline: SE", "p_better": "P(better)"}[column]


def _print_setup(ws) -> None:
    ws.page_setup.orientation = "landscape"
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True


# ------------------------------------------------------------ assumptions


def assumption_rows(scenario: Scenario) -> list[dict[str, Any]]:
    """Every input of the scenario as a row: key path, value, unit, given or default, source."""
    rows: list[dict[str, Any]] = []
    _walk(scenario, "", None, scenario.sources, rows)
    return rows


def _walk(model: BaseModel, prefix: str, inherited: str | None, sources: dict[str, str],
          rows: list[dict[str, Any]]) -> None:
    table_source = getattr(model, "source", None) or inherited
    for name, field in type(model).model_fields.items():
        if field.exclude or name == "source":
            continue
        key_name = field.alias or name
        key = f"{prefix}.{key_name}" if prefix else key_name
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _walk(value, key, table_source, sources, rows)
        elif isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
            for k, v in value.items():
                _walk(v, f"{key}.{k}", table_source, sources, rows)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            if all(isinstance(v, BaseModel) and not _is_term(v) for v in value):
                for i, v in enumerate(value):
                    _walk(v, f"{key}[{i}]", table_source, sources, rows)
            else:
                rows.append(_row(key, value, field, model, sources, table_source, name))
        else:
            rows.append(_row(key, value, field, model, sources, table_source, name))


def _is_term(v: BaseModel) -> bool:
    return type(v).__name__ == "EventOffset"


def _row(key: str, value: Any, field: Any, model: BaseModel, sources: dict[str, str], table_source: str | None,
         name: str) -> dict[str, Any]:
    unit = (field.json_schema_extra or {}).get("unit", "") if isinstance(field.json_schema_extra, dict) else ""
    return {
        "key": key,
        "value": _cell_value(value),
        "unit": unit,
        "given": "given" if name in model.model_fields_set else "default",
        "source": sources.get(key) or table_source or "",
        "description": field.description or "",
    }


def _cell_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(str(_cell_value(v)) for v in value)
    if isinstance(value, BaseModel):
        return ", ".join(f"{k}={v}" for k, v in value.model_dump(exclude={"source"}).items())
    if isinstance(value, (bool, int, float, Date, str)):
        return value
    return str(value)


def _assumptions_sheet(ws, scenario: Scenario, result: SimulationResult) -> None:
    ws.sheet_view.showGridLines = False
    names = ["Key", "Value", "Unit", "Given or default", "Source", "Description"]
    _header(ws, 1, names)
    rows = assumption_rows(scenario)
    for i, r in enumerate(rows, start=2):
        put(ws, i, 1, r["key"]).alignment = TOP
        v = r["value"]
        put(ws, i, 2, v, fmt="yyyy-mm-dd" if isinstance(v, Date) else None).alignment = TOP_LEFT
        put(ws, i, 3, r["unit"]).alignment = TOP
        put(ws, i, 4, r["given"]).alignment = TOP
        put(ws, i, 5, r["source"]).alignment = WRAP
        put(ws, i, 6, r["description"]).alignment = WRAP
        lines = max(_lines(str(r["source"]), 60), _lines(str(r["description"]), 48))
        if lines > 1:  # spreadsheet programs do not grow rows for wrapped text written by openpyxl
            ws.row_dimensions[i].height = 15 * lines
    last = len(rows) + 1
    for key, fit in result.fits.items():
        last += 1
        put(ws, last, 1, f"{key} (fitted)")
        put(ws, last, 2, str(fit.distribution))
        put(ws, last, 3, "distribution")
        put(ws, last, 4, "derived")
        put(ws, last, 5, f"least-squares/exact fit to {len(fit.probs)} points; max miss {fit.residual:.2g}")
        put(ws, last, 6, "The distribution actually simulated")
    _table(ws, "Assumptions", 1, last, len(names))
    ws.freeze_panes = "B2"
    _widths(ws, {1: 46, 2: 24, 3: 14, 4: 10, 5: 60, 6: 48})
    _print_setup(ws)


def _lines(text: str, width: int) -> int:
    """Lines a wrapped text needs in a column ``width`` characters wide (a close estimate)."""
    return max(1, -(-int(len(text) * 1.1) // width))


# ------------------------------------------------------------------ paths


def _paths_sheet(ws, result: SimulationResult) -> None:
    n = min(PATH_SAMPLE, result.paths)
    drivers = result.drivers.iloc[:n]
    names = ["Path"]
    for col in drivers.columns:
        if col.startswith("met:"):
            names.append(f"Met: {col[4:]}")
        elif col == "revenue_at_horizon":
            names.append("Revenue at horizon (USD bn/yr)")
        else:
            names.append(f"{col} (years)")
    pv_cols = [(s, p) for s in range(len(result.structures)) for p in range(len(result.parties))]
    names += [f"PV {result.structures[s]} / {result.parties[p]}" for s, p in pv_cols]
    _header(ws, 1, names)
    for i in range(n):
        r = i + 2
        put(ws, r, 1, i)
        for j, col in enumerate(drivers.columns, start=2):
            v = drivers[col].iloc[i]
            if col.startswith("met:"):
                put(ws, r, j, bool(v))
            else:
                put(ws, r, j, float(v), fmt=BN if col == "revenue_at_horizon" else YEARS, infinity="never")
        base = 2 + len(drivers.columns)
        for j, (s, p) in enumerate(pv_cols):
            put(ws, r, base + j, float(result.pvs[i, s, p]), fmt=BN)
    _table(ws, "Paths", 1, n + 1, len(names))
    ws.freeze_panes = "B2"
    _widths(ws, {j: 16 for j in range(1, len(names) + 1)})
    ws.row_dimensions[1].height = 45
    _print_setup(ws)
    put(ws, n + 3, 1, f"The first {n:,} of {result.paths:,} paths. Times are years after the valuation date "
                      "(they may fall beyond the horizon); 'never' = the event never happens on that path.")


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a console table (USD bn, percentages)."""
    show = summary[["mean", "se", "p5", "p50", "p95", "cvar5", "p_negative", "diff_mean", "p_better"]].copy()
    show.columns = ["mean", "se", "P5", "P50", "P95", "CVaR5%", "P(<0)", "vs base", "P(better)"]
    fmt = {c: "{:,.2f}".format for c in show.columns}
    fmt["se"] = "{:,.3f}".format
    fmt["P(<0)"] = "{:.1%}".format
    fmt["P(better)"] = lambda x: "-" if np.isnan(x) else f"{x:.1%}"
    return show.to_string(formatters=fmt)
