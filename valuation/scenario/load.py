"""Loading a scenario: a TOML file, or the Assumptions sheet of a workbook this tool wrote.

Both read the file's bytes once (what is hashed, :attr:`Scenario.digest`, is what was parsed) and hand plain
tables to :func:`valuation.scenario.schema.scenario_from_dict`, so a workbook's inputs are checked exactly as
a file's.  Nothing else in the package reads files.
"""

from __future__ import annotations

import hashlib
import io
import re
import tomllib
from pathlib import Path

from valuation.arguments import path as path_argument
from valuation.errors import InputError, Problem
from valuation.scenario.assumptions import COLUMNS, FIELDS, REQUIRED_COLUMNS, scenario_from_rows
from valuation.scenario.base import MAX_DEPTH
from valuation.scenario.schema import Scenario, scenario_from_dict

MAX_FILE_BYTES = 16 * 2**20  # a scenario file (the base case is 12 KB)
MAX_WORKBOOK_BYTES = 256 * 2**20  # a report is a few MB whatever its paths


def load_scenario(path: str | Path) -> Scenario:
    """Read, validate and check a scenario file.

    Parameters
    ----------
    path
        A ``.toml`` scenario file, or an ``.xlsx`` report whose Assumptions sheet holds the scenario.

    Returns
    -------
    Scenario
        Validated; its ``sources`` map key paths to source notes, its ``digest`` is the SHA-256 of the
        bytes that were read.

    Raises
    ------
    InputError
        For a missing or unreadable file, a TOML syntax error or any invalid
        value, with the file, key path, value and what was expected.
    """
    path = path_argument("load_scenario()", "path", path, "the path of a .toml scenario or an .xlsx report")
    if path.suffix.lower() == ".xlsx":
        return load_workbook_scenario(path)
    raw_bytes = read_input(path, "a .toml scenario file", MAX_FILE_BYTES)
    text = _decode(path, raw_bytes)
    if not text.strip():
        raise InputError(path, "is empty; expected a TOML scenario (inputs/base_case.toml is a complete example)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"TOML syntax error: {exc}{_show_line(text, str(exc))}") from None
    except RecursionError:
        raise InputError(path, "tables or arrays nested too deeply for the TOML parser (hundreds of levels); "
                               f"expected at most {MAX_DEPTH} levels") from None
    return scenario_from_dict(data, source=str(path), path=str(path), digest=hashlib.sha256(raw_bytes).hexdigest())


def read_input(path: Path, what: str, limit: int) -> bytes:
    """The bytes of an input file (read once: what is hashed is what is parsed), or an InputError."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, f"is a directory, expected {what}") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(path, f"is larger than {limit // 2**20} MB; expected {what} (the base case is 12 KB)")
    return data


_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
         b"\xfe\xff": "UTF-16"}


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text, with the byte-order mark some Windows editors write removed."""
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise InputError(path, f"is {name} text (it starts with a {name} byte-order mark); expected UTF-8: "
                                   "save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte {exc.start}); expected a TOML scenario file") from None
    return text.removeprefix("\ufeff")


def _show_line(text: str, message: str) -> str:
    """The line a TOML error points at, quoted (``... (at line N, column M)``)."""
    m = re.search(r"at line (\d+)", message)
    lines = text.splitlines()
    if not m or not 1 <= int(m[1]) <= len(lines):
        return ""
    line = lines[int(m[1]) - 1].strip()
    return f": {line[:77] + '...' if len(line) > 80 else line!r}" if line else ""


def _uncalculated_formulas(data: bytes, values: list[tuple]) -> list[tuple[str, str]]:
    """Value cells that hold a formula whose result was never saved (a script wrote it): they read as empty."""
    if not any(len(row) > 1 and row[1] is None for row in values[1:]):
        return []
    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    try:
        found = []
        for number, row in enumerate(wb["Assumptions"].iter_rows(min_col=2, max_col=2, values_only=True), start=1):
            text = row[0]
            if number > 1 and isinstance(text, str) and text.startswith("=") and values[number - 1][1] is None:
                found.append((f"B{number}", text))
        return found
    finally:
        wb.close()


def _unreadable(path: Path, exc: Exception) -> InputError:
    return InputError(str(path), f"not an Excel workbook this tool can read ({type(exc).__name__}: "
                                 f"{str(exc)[:120]}); expected an .xlsx report written by `valuation run`")


def load_workbook_scenario(path: str | Path) -> Scenario:
    """Read the scenario from a workbook's Assumptions sheet (a report this tool wrote, perhaps edited)."""
    from openpyxl import load_workbook

    path = Path(path)
    where = f"{path} (sheet Assumptions)"
    data = read_input(path, "an .xlsx report written by `valuation run`", MAX_WORKBOOK_BYTES)
    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # whatever openpyxl trips on, the file is not a workbook we can read
        raise _unreadable(path, exc) from None
    try:
        if "Assumptions" not in wb.sheetnames:
            raise InputError(str(path), f"has no sheet named 'Assumptions' (sheets: {', '.join(wb.sheetnames)}); "
                                        "expected a report written by `valuation run`")
        values = list(wb["Assumptions"].iter_rows(values_only=True))  # read-only: parsed here, lazily
        formulas = _uncalculated_formulas(data, values)
    except InputError:
        raise
    except Exception as exc:  # a damaged part (XML, compression) shows only while it is read
        raise _unreadable(path, exc) from None
    finally:
        wb.close()
    if formulas:
        raise InputError(where, [Problem(f"cell {cell}", "a value, not a formula without a saved result (save the "
                                 "workbook in Excel or LibreOffice, or type the value)", text)
                                 for cell, text in formulas])
    if not values or tuple(values[0][: len(REQUIRED_COLUMNS)]) != REQUIRED_COLUMNS:
        found = list(values[0][: len(COLUMNS)]) if values else []
        raise InputError(where, f"row 1 = {found}: expected the headers {list(COLUMNS)}")
    present = 8  # the columns this workbook has: older ones lack the source date, then the range
    while present < len(COLUMNS) and len(values[0]) > present and values[0][present] == COLUMNS[present]:
        present += 1
    names = FIELDS[:present]
    rows = []
    for number, cells in enumerate(values[1:], start=2):
        if not cells or cells[0] in (None, ""):
            continue
        row = dict(zip(names, (*cells[: len(names)], *([None] * (len(names) - len(cells)))), strict=True))
        row["key"] = str(row["key"]).strip()
        row["given"] = str(row["given"] or "default").strip().lower()
        row["source"] = row["source"] if isinstance(row["source"], str) else None
        row["cell"] = f"B{number}"
        rows.append(row)
    scenario = scenario_from_rows(rows, where)
    return scenario.model_copy(update={"path": str(path), "digest": hashlib.sha256(data).hexdigest()})
