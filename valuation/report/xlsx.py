"""Small openpyxl helpers shared by the workbook writer: safe cells, styles, tables, charts, atomic saves."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import secrets
import socket
import stat
import time
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
        infinity: str = "n/a", nan: str = "n/a"):
    """Write one cell; strings are always text, never formulas; a non-finite number becomes a note."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    missing = isinstance(value, float) and not np.isfinite(value)
    if missing:
        value = infinity if value == np.inf else nan if value != value else "n/a"
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
    """A header row: white on dark blue, wrapped (``height`` in points for long names).  Names are made
    distinct as an Excel Table needs (Excel compares them ignoring case): a repeat gets `` (2)``."""
    for j, name in enumerate(unique(names)):
        c = put(ws, row, col + j, name, font=HEADER_FONT)
        c.fill = HEADER_FILL
        c.alignment = Alignment(wrap_text=True, vertical="center")
    if height:
        row_height(ws, row, height / 15)


def unique(labels: list[str]) -> list[str]:
    """Labels made distinct, ignoring case as Excel does."""
    seen: set[str] = set()
    out = []
    for label in labels:
        name, n = label, 1
        while name.casefold() in seen:
            n += 1
            name = f"{label} ({n})"
        seen.add(name.casefold())
        out.append(name)
    return out


MAX_ROW_HEIGHT = 409  # points: Excel refuses a taller row


def row_height(ws, row: int, n_lines: float) -> None:
    """Room for ``n_lines`` lines of text (15 points each), within Excel's limit."""
    ws.row_dimensions[row].height = min(15 * n_lines, MAX_ROW_HEIGHT)


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

# Our temporary files beside a target: ``.<name>.valuation-<host>-<pid>-<token>.tmp`` (a workbook being
# written) and ``.valuation-<host>-<pid>-<token>.probe`` (a test that the folder takes a file), host a hash
# of the host name.  A process
# killed with -9 leaves one behind; the next write to the folder removes those of this host whose process
# is gone.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_OURS = re.compile(r"^\..*valuation-([0-9a-f]{8})-(\d+)-[0-9a-f]{8}\.(?:tmp|probe)$")


def check_output_path(path: str | Path, size: int = 0) -> Path:
    """Reject a workbook path we could not write, before any simulation runs.

    Everything is checked where the workbook will really go (through a symbolic link, at its target): the
    name (``.xlsx``, not too long for the file system), the folder (exists, takes a file of ``size`` bytes),
    an existing file (not a folder, writable).
    """
    path = Path(path)
    where = str(path)
    if path.suffix.lower() != ".xlsx":
        raise InputError(where, "expected a workbook path ending in .xlsx")
    try:
        name_max, _ = _limits(path.parent)
        if len(os.fsencode(path.name)) > name_max:
            raise InputError(where, f"a file name of {len(os.fsencode(path.name))} bytes; expected at most "
                                    f"{name_max} (this file system's limit)")
        if path.is_symlink():
            os.stat(path.parent)  # a folder that is not there says so below
            try:
                os.stat(path)
            except FileNotFoundError:
                pass  # a link to a file still to be written
        real = Path(os.path.realpath(path))
        linked = real != Path(os.path.abspath(path))
        link = f"links to {_display(real)}, " if linked else ""
        folder = _display(real.parent) if linked else str(path.parent)
        if real.is_dir():
            raise InputError(where, f"{link}is a directory; expected a file path ending in .xlsx")
        if not real.parent.is_dir():
            raise InputError(where, f"{link}folder {folder!r} does not exist; expected an existing folder")
        name_max, path_max = _limits(real.parent)
        name_bytes, path_bytes = len(os.fsencode(real.name)), len(os.fsencode(str(real)))
        if name_bytes > name_max:
            raise InputError(where, f"{link}a file name of {name_bytes} bytes; expected at most {name_max} (this "
                                    "file system's limit)")
        if path_bytes >= path_max:
            raise InputError(where, f"{link}a path of {path_bytes} bytes; expected fewer than {path_max}")
        if real.exists() and not real.is_file():  # a device or a pipe: the rename would replace it with a file
            raise InputError(where, f"{link}exists and is not a regular file ({_kind(real)}); expected a file path "
                                    "ending in .xlsx")
        if real.exists() and not os.access(real, os.W_OK):
            raise InputError(where, f"{link}exists and is read-only; expected a writable file")
        failure = _probe(real.parent, size)
    except OSError as exc:  # whatever else the file system says about this path (a loop of links, ...)
        raise InputError(where, f"cannot be used ({exc.strerror or exc}); expected a writable .xlsx path") from None
    if failure is not None:
        raise InputError(where, f"{link}folder {folder!r} {_why(failure, size)}")
    return path


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _why(failure: OSError, size: int) -> str:
    """Why a folder cannot take the workbook, for a message."""
    if failure.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"has no room for the workbook: it needs about {max(size, 1) / 1e6:.1f} MB "
                f"({failure.strerror or failure})")
    return f"is not writable ({failure.strerror or failure})"


def _display(path: Path) -> str:
    """A path as the user would write it: relative to the working folder when inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _limits(folder: Path) -> tuple[int, int]:
    """The longest file name and path (bytes) the file system of ``folder`` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # not POSIX, or not said
        return 255, 4096


def unwritable(folder: Path, size: int = 0) -> str | None:
    """Why ``folder`` cannot take a file of ``size`` bytes, or None (see :func:`_probe`)."""
    failure = _probe(folder, size)
    return None if failure is None else str(failure.strerror or failure)


def _probe(folder: Path, size: int = 0) -> OSError | None:
    """The error writing a file of ``size`` bytes in ``folder`` meets, or None.  The only reliable test
    (read-only mounts, /proc, quotas, a full disk, root ignoring permission bits) is to write there: a probe
    file of that size, written, synced and removed."""
    _remove_stale(folder)
    fd = probe = None
    try:
        try:  # a file with no name: whatever happens, nothing is left behind
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600)
        except (AttributeError, OSError) as exc:  # not Linux, or a file system without unnamed files
            if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            with interrupts.deferred():  # never a probe left behind: a signal waits until it has a name
                fd, probe = _create(folder, ".", ".probe")
        _reserve(fd, size)
    except OSError as exc:
        return exc
    finally:
        if fd is not None:
            os.close(fd)
        if probe is not None:
            with contextlib.suppress(OSError):
                os.unlink(probe)
    return None


def _reserve(fd: int, size: int) -> None:
    """Take ``size`` bytes of disk for ``fd`` (a full disk or a quota says so here)."""
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        for start in range(0, size, 2**20):  # no fallocate here: write the bytes
            os.write(fd, bytes(min(2**20, size - start)))
    os.fsync(fd)


def _create(folder: Path, prefix: str, suffix: str, mode: int = 0o600) -> tuple[int, str]:
    """A new file of ours in ``folder``: ``<prefix>valuation-<host>-<pid>-<token><suffix>``, with ``mode``
    exactly (not cut by the umask: an earlier workbook's permissions are kept)."""
    while True:
        path = _our_name(folder, prefix, suffix)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        os.fchmod(fd, mode)
        return fd, path


def _our_name(folder: Path, prefix: str, suffix: str) -> str:
    return os.path.join(folder, f"{prefix}valuation-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _temp_prefix(path: Path, name_max: int) -> str:
    """``.<name>.``, the name cut so that the temporary file's whole name stays within ``name_max`` bytes."""
    ours = len("valuation-") + 8 + 1 + len(str(os.getpid())) + 1 + 8 + len(".tmp")
    room = max(name_max - ours - 2, 0)
    return f".{os.fsencode(path.name)[:room].decode(errors='ignore')}."


_OLD = re.compile(r"^\..+\.xlsx\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's names, as versions before 0.1 made them
OLD_AGE = 3600.0  # seconds after which such a file is stale for sure (a workbook takes seconds to write)


def _remove_stale(folder: Path) -> None:
    """Remove our temporary files in ``folder`` whose process (on this host) is gone, and those of the older
    naming that are over an hour old."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        m = _OURS.match(entry.name)
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if m:
                if m[1] != _HOST or int(m[2]) == os.getpid() or _alive(int(m[2])):
                    continue
            elif not (_OLD.match(entry.name) and now - entry.stat(follow_symlinks=False).st_mtime > OLD_AGE):
                continue
            os.unlink(entry.path)
        except OSError:
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a number no process has): leave its file alone
    return True


def atomic_save(workbook: Workbook, path: Path) -> Path:
    """Save via a temporary file in the same folder and a rename (through a symbolic link to its target).

    The workbook is zipped in memory first, then written to a file with no name (``O_TMPFILE``) and synced,
    and only then given its temporary name and renamed over the target: a kill at any moment leaves the old
    file or the new one, and no name ever holds a partial file (where the file system cannot make unnamed
    files, the temporary file is named when made; a kill while it is written leaves it, and the next write to
    the folder removes it).
    """
    path = Path(os.path.realpath(path))
    made: list[str] = []  # the temporary name, once it exists (a signal may come just after)
    try:
        buffer = io.BytesIO()  # zip in memory: a failing disk then meets one plain write, not a half-open zip
        workbook.save(buffer)
        _remove_stale(path.parent)
        _complete_temporary(path, buffer.getbuffer(), made)
        with interrupts.deferred():  # renamed and noted as complete, or neither
            os.replace(made[0], path)
            made.clear()
            interrupts.completed(path)
        _sync_folder(path.parent)
    except BaseException as exc:
        for tmp in made:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(str(path), f"cannot be written ({exc.strerror or exc}); any earlier file is "
                                        "unchanged") from None
        raise
    return path


def _complete_temporary(path: Path, data: memoryview, made: list[str]) -> None:
    """A temporary file beside ``path`` holding ``data``, synced, with the target's permissions; its name is
    appended to ``made`` in the same step (for a signal) as it comes to exist.  Where the file system links
    unnamed files (:func:`links_unnamed`), the name comes only once the bytes are on disk."""
    folder, mode = path.parent, _file_mode(path)
    prefix = _temp_prefix(path, _limits(folder)[0])
    fd = None
    try:
        if links_unnamed(folder):
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, mode)
            os.fchmod(fd, mode)
            _write_all(fd, data)
            _name_temporary(fd, folder, prefix, made)
            return
        with interrupts.deferred():  # a signal waits until the temporary file is named: then it is removed
            fd, tmp = _create(folder, prefix, ".tmp", mode)
            made.append(tmp)
        _write_all(fd, data)
    finally:
        if fd is not None:
            os.close(fd)


_LINKS_UNNAMED: dict[int, bool] = {}


def links_unnamed(folder: Path) -> bool:
    """Whether files made without a name (``O_TMPFILE``) can be linked into ``folder`` (Linux with /proc, on
    most local file systems); tried once per file system."""
    try:
        device = os.stat(folder).st_dev
    except OSError:
        return False
    if device not in _LINKS_UNNAMED:
        ok = False
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            name = _our_name(folder, ".", ".tmp")
            try:
                os.link(f"/proc/self/fd/{fd}", name, follow_symlinks=True)
                ok = True
                os.unlink(name)
            except OSError:
                pass
            finally:
                os.close(fd)
        _LINKS_UNNAMED[device] = ok
    return _LINKS_UNNAMED[device]


def _write_all(fd: int, data: memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)  # on disk before the rename makes it the workbook


def _name_temporary(fd: int, folder: Path, prefix: str, made: list[str]) -> None:
    """Give the unnamed file ``fd`` (complete, synced) its temporary name."""
    while True:
        name = _our_name(folder, prefix, ".tmp")
        try:
            with interrupts.deferred():  # named and remembered, or neither
                os.link(f"/proc/self/fd/{fd}", name, follow_symlinks=True)
                made.append(name)
            return
        except FileExistsError:
            continue


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (the folder's entry), where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual 0666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
