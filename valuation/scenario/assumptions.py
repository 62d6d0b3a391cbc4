"""The scenario as flat rows (the workbook's Assumptions sheet) and back again.

Every input becomes one row: a key path (``structures[0].clauses[2].tiers[1].until``), a value, a type,
its unit, whether it was given or left at its default, its own source and the source of its table.
Lists of plain values (triggers, event names) are spread over indexed keys (``end[0]``, ``end[1]``), so
every value is a single cell.  Reading the rows back rebuilds the nested tables and validates them with
the same checks as a TOML file: an unedited sheet gives the same scenario, hence the same numbers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date as Date
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from valuation import keys
from valuation.errors import InputError, Problem
from valuation.scenario.base import EventOffset
from valuation.scenario.schema import Scenario, scenario_from_dict

TYPES = ("number", "integer", "date", "text", "true/false", "")  # "": an empty optional input
COLUMNS = ("Key", "Value", "Type", "Unit", "Given or default", "Source", "Table source", "Description", "Source date",
           "Low", "High", "Distribution")
REQUIRED_COLUMNS = COLUMNS[:8]  # a workbook written before sources had dates (or inputs ranges) has these
FIELDS = ("key", "value", "type", "unit", "given", "source", "table_source", "description", "source_date", "low",
          "high", "dist")  # the row dict's name of each column


def assumption_rows(scenario: Scenario, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every input of the scenario as a row (see the module docstring).

    ``overrides`` replace the values of some keys and mark them given (e.g. the paths and seed of the run
    a workbook reports, so that re-running the workbook reproduces it).
    """
    rows: list[dict[str, Any]] = []
    _walk(scenario, "", None, scenario.sources, rows)
    for row in rows:
        row["source_date"] = scenario.source_dates.get(row["key"], "")
        span = scenario.ranges.get(row["key"])
        row["low"], row["high"], row["dist"] = (span.low, span.high, span.dist or "") if span else ("", "", "")
        if overrides and row["key"] in overrides:
            row["value"] = _cell(overrides[row["key"]])
            row["given"] = "given"
            row["source"] = row["source"] or "the run this workbook reports"
    return rows


def _walk(model: BaseModel, prefix: str, inherited: str | None, sources: dict[str, str],
          rows: list[dict[str, Any]]) -> None:
    table_source = getattr(model, "source", None) or inherited
    for name, field in type(model).model_fields.items():
        if field.exclude:
            continue
        key = keys.join(prefix, field.alias or name)
        value = getattr(model, name)
        if name == "source":
            if value is not None:
                rows.append(_row(key, value, field, model, name, None, inherited))
            continue
        if isinstance(value, BaseModel):
            _walk(value, key, table_source, sources, rows)
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, BaseModel):
                    _walk(v, keys.join(key, k), table_source, sources, rows)
                else:  # a table of named numbers (market.rates)
                    rows.append(_row(keys.join(key, k), v, field, model, name, sources.get(keys.join(key, k)),
                                     table_source))
        elif isinstance(value, tuple) and value and not all(isinstance(v, EventOffset) for v in value) and \
                all(isinstance(v, BaseModel) for v in value):
            for i, v in enumerate(value):
                _walk(v, f"{key}[{i}]", table_source, sources, rows)
        elif isinstance(value, tuple) and name in ("start", "end", "events", "between"):
            for i, v in enumerate(value):
                if isinstance(v, EventOffset):
                    rows.append(_row(f"{key}[{i}].event", v.event, field, model, name, None, table_source))
                    rows.append(_row(f"{key}[{i}].plus_years", v.plus_years, field, model, name, None,
                                     table_source))
                else:
                    rows.append(_row(f"{key}[{i}]", v, field, model, name, None, table_source))
        elif isinstance(value, tuple):  # an empty list of tables: nothing to show
            continue
        else:
            rows.append(_row(key, value, field, model, name, sources.get(key), table_source))


def _row(key: str, value: Any, field: Any, model: BaseModel, name: str, source: str | None,
         table_source: str | None) -> dict[str, Any]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return {
        "key": key,
        "value": _cell(value),
        "type": _type_of(value),
        "unit": extra.get("unit", ""),
        "given": "given" if name in model.model_fields_set else "default",
        "source": source or "",
        "table_source": table_source or "",
        "description": field.description or "",
    }


def _cell(value: Any) -> Any:
    """A value as the sheet holds it."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53:
        return str(value)  # beyond a spreadsheet number's 53 bits: keep every digit as text
    return value


def _type_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, Date):
        return "date"
    return "text"


# ------------------------------------------------------------------ reading


def scenario_from_rows(rows: list[dict[str, Any]], where: str) -> Scenario:
    """Rebuild and validate a scenario from Assumptions rows (dicts with the keys of :data:`COLUMNS`).

    Rows marked ``given`` make up the scenario; a ``default`` row whose value was edited is taken as
    given.  Problems name ``where``, the key, the cell and what was expected.
    """
    problems: list[Problem] = []
    cells = {r["key"]: r.get("cell", "") for r in rows}
    for r in rows:  # the range's cells, for messages about them
        number = r.get("cell", "")[1:]
        if number:
            cells.update({f"{r['key']}.low": f"J{number}", f"{r['key']}.high": f"K{number}",
                          f"{r['key']}.dist": f"L{number}"})
    data: dict[str, Any] = {}
    parsed = []
    for r in rows:
        value = _parse(r, problems)
        parsed.append((r, value))
        if r["given"] == "given":
            _assign(data, r["key"], value, r.get("source") or None, problems, r.get("cell", ""),
                    _source_date(r, problems), _range(r, problems))
    if problems:
        raise InputError(where, problems)
    scenario = _with_cells(lambda: scenario_from_dict(data, source=where), where, cells)
    spans = {r["key"]: _range(r, problems) for r, _ in parsed if r["given"] != "given"}
    # a default row whose value was edited, or that was given a range, is taken as given
    edited = {r["key"]: _sourced(value, r.get("source") or None, _source_date(r, problems), spans[r["key"]])
              for r, value in parsed
              if r["given"] != "given" and value is not None and (value != scenario.value_at(r["key"])
                                                                  or spans[r["key"]])}
    if problems:
        raise InputError(where, problems)
    return _with_cells(lambda: scenario.with_values(edited), where, cells) if edited else scenario


def _source_date(row: dict[str, Any], problems: list[Problem]) -> Date | None:
    """The row's Source date cell: a date, or empty."""
    when = row.get("source_date")
    if when is None or when == "":
        return None
    if isinstance(when, datetime):
        return when.date()
    if isinstance(when, Date):
        return when
    try:
        return Date.fromisoformat(str(when).strip())
    except ValueError:
        cell = row.get("cell", "")
        where = f"{row['key']} (cell I{cell[1:]})" if cell else row["key"]
        problems.append(Problem(where, "a Source date such as 2025-07-31, or empty", when))
        return None


def _range(row: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """The row's Low, High and Distribution cells, as a file would write them (empty cells left out)."""
    out: dict[str, Any] = {}
    number = row.get("cell", "")[1:]
    for name, column in (("low", "J"), ("high", "K"), ("dist", "L")):
        cell = row.get(name)
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            continue
        if name != "dist" and isinstance(cell, str):
            try:
                cell = float(cell.strip())
            except ValueError:
                where = f"{row['key']}.{name} (cell {column}{number})" if number else f"{row['key']}.{name}"
                problems.append(Problem(where, "a number, or empty", cell))
                continue
        out[name] = cell.strip() if isinstance(cell, str) else cell
    return out


def _sourced(value: Any, source: str | None, when: Date | None, span: dict[str, Any] | None = None) -> Any:
    """A value as a file would write it: with its source, the source's date and its range where there are any."""
    if source is None and when is None and not span:
        return value
    return {"value": value, **({"source": source} if source else {}), **({"date": when} if when else {}),
            **(span or {})}


def _with_cells(build: Any, where: str, cells: dict[str, str]) -> Scenario:
    """``build()``, its problems naming the cell of each key."""
    try:
        return build()
    except InputError as exc:
        problems = []
        for p in exc.problems:
            cell = cells.get(p.key) or next((c for k, c in cells.items() if k.startswith(p.key + ".")), "")
            problems.append(replace(p, key=f"{p.key} (cell {cell})") if cell else p)
        raise InputError(where, problems) from None


def _parse(row: dict[str, Any], problems: list[Problem]) -> Any:
    """A cell's value in the row's declared type (or as found, for validation to report)."""
    value, kind = row.get("value"), row.get("type") or ""
    if value is None or value == "":
        return None
    if kind not in TYPES:
        cell = row.get("cell", "")
        where = f"{row['key']} (cell C{cell[1:]})" if cell else row["key"]
        problems.append(Problem(where, f"a Type of {', '.join(t or '(blank)' for t in TYPES)}", kind))
        return value
    if isinstance(value, datetime):  # spreadsheets hand dates back with a time of day
        return value.date()
    if isinstance(value, str) and (kind == "date" or (kind in ("", "text") and row["key"].endswith("]"))):
        try:  # a date typed as text, where a date is what the key takes (dates, trigger terms)
            return Date.fromisoformat(value.strip())
        except ValueError:
            if kind == "date":
                problems.append(Problem(_where(row), "a date such as 2030-12-31", value))
            return value
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "integer" and isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "text" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a label typed as a number is still a label
    return value


def _where(row: dict[str, Any]) -> str:
    return f"{row['key']} (cell {row['cell']})" if row.get("cell") else row["key"]


MAX_INDEX = 10_000  # list positions a key may name (a sheet of this tool's has a few hundred rows)


def _assign(data: dict[str, Any], key: str, value: Any, source: str | None, problems: list[Problem],
            cell: str, when: Date | None = None, span: dict[str, Any] | None = None) -> None:
    where = f"{key} (cell {cell})" if cell else key
    try:
        path = keys.parse(key)
    except ValueError:
        problems.append(Problem(where, "a key path such as structures[0].clauses[1].rate", has_value=False))
        return
    if any(isinstance(p, int) and p > MAX_INDEX for p in path):
        problems.append(Problem(where, f"list positions of at most {MAX_INDEX:,}", has_value=False))
        return
    node: Any = data
    for depth, (here, nxt) in enumerate(zip(path[:-1], path[1:], strict=True)):
        fresh: Any = [] if isinstance(nxt, int) else {}
        if isinstance(here, int) and isinstance(node, list):
            while len(node) <= here:
                node.append(None)
            if node[here] is None:
                node[here] = fresh
            node = node[here]
        elif isinstance(here, str) and isinstance(node, dict):
            node = node.setdefault(here, fresh)
        else:
            node = None
        if not isinstance(node, (dict, list)):
            problems.append(Problem(where, f"a key that agrees with the other rows: {keys.build(path[:depth + 1])} "
                                    "holds a value there, not a table or list", has_value=False))
            return
    last = path[-1]
    if isinstance(last, int) != isinstance(node, list):
        problems.append(Problem(where, f"a key that agrees with the other rows: {keys.build(path[:-1]) or 'the top'} "
                                f"is a {'list' if isinstance(node, list) else 'table'}", has_value=False))
        return
    if value is None:
        return
    item = _sourced(value, source, when, span) if last != "source" else value
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
        node[last] = item
    else:
        node[last] = item


