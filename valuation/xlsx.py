"""Small openpyxl helpers shared by the workbook writer: safe cells, styles, tables, charts, atomic saves."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference, ScatterChart, Series
from openpyxl.chart.data_source import NumDataSource, NumRef
from openpyxl.chart.error_bar import ErrorBars
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter, quote_sheetname
from openpyxl.worksheet.table import Table, TableStyleInfo

from valuation import interrupts
from valuation.errors import InputError

BN = '#,##0.00;[Red]-#,##0.00'
BN3 = '#,##0.000;[Red]-#,##0.000'
PCT = '0.0%'
YEARS = '0.00'
DATE = 'yyyy-mm-dd'
HEADER_FILL = PatternFill("solid", fgColor="1F3864")
INPUT_FILL = PatternFill("solid", fgColor="FFF2CC")
HEADER_FONT = Font(bold=True, color="FFFFFF")
TITLE_FONT = Font(bold=True, size=14, color="1F3864")
LABEL_FONT = Font(bold=True, color="404040")
NOTE_FONT = Font(italic=True, color="595959")
WRAP = Alignment(wrap_text=True, vertical="top")
TOP = Alignment(vertical="top")
TOP_LEFT = Alignment(vertical="top", horizontal="left")
WRAP_LEFT = Alignment(wrap_text=True, vertical="top", horizontal="left")


def put(ws, row: int, col: int, value: Any, fmt: str | None = None, font: Font | None = None,
        infinity: str = "n/a"):
    """Write one cell; strings are always text, never formulas; a non-finite number becomes a note."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
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


def formula(ws, row: int, col: int, text: str, fmt: str | None = None):
    """Write a formula we built ourselves (never text from inputs)."""
    cell = ws.cell(row=row, column=col, value=text)
    if fmt:
        cell.number_format = fmt
    return cell


def header(ws, row: int, names: list[str], col: int = 1, height: float | None = None) -> None:
    """A header row: white on dark blue, wrapped (``height`` in points for long names)."""
    for j, name in enumerate(names):
        c = put(ws, row, col + j, name, font=HEADER_FONT)
        c.fill = HEADER_FILL
        c.alignment = Alignment(wrap_text=True, vertical="center")
    if height:
        ws.row_dimensions[row].height = height


def title(ws, text: str, subtitle: str | None = None) -> None:
    put(ws, 1, 1, text, font=TITLE_FONT)
    if subtitle:
        put(ws, 2, 1, subtitle, font=NOTE_FONT)


def widths(ws, sizes: dict[int, float]) -> None:
    for col, w in sizes.items():
        ws.column_dimensions[get_column_letter(col)].width = w


def table(ws, name: str, first_row: int, last_row: int, n_cols: int, first_col: int = 1) -> None:
    """An Excel Table over a block whose first row is the header."""
    ref = f"{get_column_letter(first_col)}{first_row}:{get_column_letter(first_col + n_cols - 1)}{last_row}"
    t = Table(displayName=name, ref=ref)
    t.tableStyleInfo = TableStyleInfo(name="TableStyleLight9", showRowStripes=True)
    ws.add_table(t)


def print_setup(ws, landscape: bool = True, one_page: bool = False) -> None:
    """Fit to the page width (and, for a dashboard, to one page, so no chart is cut in two)."""
    ws.page_setup.orientation = "landscape" if landscape else "portrait"
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 1 if one_page else 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True


def lines(text: str, width: int) -> int:
    """Lines a wrapped text needs in a column ``width`` characters wide (a close estimate)."""
    return max(1, -(-int(len(text) * 1.1) // width))


def ref(ws, col: int, first_row: int, last_row: int, last_col: int | None = None) -> Reference:
    return Reference(ws, min_col=col, min_row=first_row, max_col=last_col or col, max_row=last_row)


def absolute(ws, col: int, first_row: int, last_row: int | None = None) -> str:
    """An absolute A1 reference with the sheet name, for formulas and error bars."""
    letter = get_column_letter(col)
    cell = f"${letter}${first_row}" if last_row is None else f"${letter}${first_row}:${letter}${last_row}"
    return f"{quote_sheetname(ws.title)}!{cell}"


def style_chart(chart, title_text: str, x_title: str, y_title: str, width: float = 18, height: float = 9):
    chart.title = title_text
    chart.x_axis.title = x_title
    chart.y_axis.title = y_title
    chart.width = width
    chart.height = height
    # openpyxl 3.1 hides axes unless told otherwise; Excel then draws no labels.
    chart.x_axis.delete = False
    chart.y_axis.delete = False
    chart.x_axis.tickLblPos = "low"  # category labels below the plot, not on the zero line among negative bars
    chart.legend.position = "b"
    return chart


def bar_chart(**kw) -> BarChart:
    chart = BarChart()
    chart.type = "col"
    chart.grouping = "clustered"
    chart.y_axis.number_format = "#,##0"
    chart.y_axis.numFmt.sourceLinked = False
    return style_chart(chart, **kw)


def line_chart(**kw) -> LineChart:
    return style_chart(LineChart(), **kw)


def straight(chart):
    """Draw every series of a line chart as straight segments (spreadsheets smooth them otherwise)."""
    for series in chart.series:
        series.smooth = False
        series.marker.symbol = "none"
    return chart


def scatter_chart(**kw) -> ScatterChart:
    chart = ScatterChart()
    chart.x_axis.number_format = "#,##0"
    chart.x_axis.numFmt.sourceLinked = False
    chart = style_chart(chart, **kw)
    chart.y_axis.tickLblPos = "low"  # left of the plot even when all x are negative
    return chart


class _ErrorBars(ErrorBars):
    """openpyxl writes <minus> before <plus>; the OOXML schema (CT_ErrBars) wants plus first."""

    __elements__ = ("errDir", "errBarType", "errValType", "noEndCap", "plus", "minus", "val", "spPr")
    __nested__ = ErrorBars.__nested__  # the serialiser's metaclass derives these from the class body only
    __attrs__ = ErrorBars.__attrs__


def error_bars(cells: str) -> ErrorBars:
    """Symmetric custom error bars read from ``cells`` (an absolute reference)."""
    source = NumDataSource(numRef=NumRef(f=cells))
    return _ErrorBars(errDir="y", errBarType="both", errValType="cust", plus=source, minus=source)


def scatter_series(x: Reference, y: Reference, title: str) -> Series:
    """A line through (x, y) points, no markers."""
    series = Series(y, x, title=title)
    series.marker.symbol = "none"
    series.smooth = False
    return series


# ---------------------------------------------------------------- saving


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
    problem = unwritable(parent)
    if problem:
        raise InputError(where, f"folder {str(parent)!r} is not writable ({problem})")
    return path


def unwritable(folder: Path) -> str | None:
    """Why nothing can be written in ``folder``, or None.  The only reliable test (read-only mounts, /proc,
    quotas, root ignoring permission bits) is to write there: a probe file, created and removed."""
    try:
        with interrupts.deferred():  # never a probe left behind
            fd, probe = tempfile.mkstemp(prefix=".valuation.", suffix=".probe", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def atomic_save(workbook: Workbook, path: Path) -> Path:
    """Save via a temporary file in the same folder and a rename (through a symbolic link to its target)."""
    path = Path(os.path.realpath(path))
    tmp = fh = None
    try:
        with interrupts.deferred():  # a signal waits until the temporary file is named: then it is removed
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except OSError as exc:
                raise InputError(str(path), f"cannot be written ({exc.strerror or exc}); nothing was "
                                            "written") from None
            fh = os.fdopen(fd, "wb")
        with fh:
            os.chmod(tmp, _file_mode(path))
            buffer = io.BytesIO()  # zip in memory: a failing disk then meets one plain write, not a half-open zip
            workbook.save(buffer)
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the rename makes it the workbook
        with interrupts.deferred():  # renamed and noted as complete, or neither
            os.replace(tmp, path)
            tmp = None
            interrupts.completed(path)
    except BaseException as exc:
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        if tmp is not None:
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
