"""What every table of the scenario schema shares: the model base, text, names, triggers, conditions, and how
pydantic's errors become the loader's messages (file, key path, value, what was expected).

Scenarios are immutable: tables are frozen, lists are tuples, tables of names (parties, events) are
:class:`FrozenDict`; a changed scenario is a new one (:meth:`~valuation.scenario.Scenario.with_values`),
validated like a file.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from datetime import date as Date
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from valuation import keys
from valuation.errors import InputError, Problem

BUILTIN_EVENTS = ("agi_declared", "agi_verified")
RESERVED_NAMES = (*BUILTIN_EVENTS, "valuation_date", "never", "revenue_at_horizon", "revenue_growth")
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# What a workbook cannot hold (XML 1.0: C0 controls but tab and line breaks, lone surrogates, U+FFFE/U+FFFF),
# and the DEL and C1 controls no label or source needs (a terminal may act on them).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
MAX_TEXT = 32_767  # characters in a spreadsheet cell
MAX_DEPTH = 32  # tables and lists inside one another (the schema needs 8)
# Sizes of the kernel's fixed-width tables (see valuation.engine).
MAX_TRIGGER_TERMS = 4
MAX_DEADLINE_EVENTS = 4
MAX_TIERS = 8
MAX_REQUIRED_DEADLINES = 6
MAX_POINTS = 31
TRIGGER_WORDS = ("valuation_date", "never", *BUILTIN_EVENTS)


def bad(key: str, expected: str) -> ValueError:
    """An error about one key of the table being validated (the loader appends ``key`` to the path)."""
    return ValueError(f"{key}{KEY_SEP}{expected}")


KEY_SEP = "\x1f"


def unit(unit: str, doc: str, **kwargs: Any) -> Any:
    """A field with a unit and a one-line description (for docs and the workbook)."""
    return Field(description=doc, json_schema_extra={"unit": unit}, **kwargs)


class Model(BaseModel):
    """A table of the schema: unknown keys are errors, types are strict, nothing changes once made."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    source: str | None = unit("text", "Where the numbers of this table come from.", default=None)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy, validated like a file when ``update`` changes anything (pydantic's own copy skips validation)."""
        update = update_mapping(type(self), update)
        if not update:
            return super().model_copy(deep=deep)
        plain = thawed(self.model_dump(by_alias=True, exclude_unset=True))
        fields = type(self).model_fields
        for name, value in update.items():
            field = fields.get(name)
            plain[(field.alias or name) if field is not None else name] = plain_data(value)
        try:
            return type(self).model_validate(plain)
        except ValidationError as exc:
            raise InputError(f"{type(self).__name__}.model_copy()", [problem(e) for e in exc.errors()]) from None


def update_mapping(cls: type, update: Any) -> dict[str, Any]:
    """``model_copy``'s ``update``: a mapping of keys to values, not too deep to check (else the project's error)."""
    from valuation.arguments import ArgumentTypeError

    if update is None:
        return {}
    if not isinstance(update, Mapping):
        raise ArgumentTypeError(f"{cls.__name__}.model_copy()", [Problem("update", "a mapping of keys to values",
                                                                         update)])
    deep = too_deep(dict(update))
    if deep is not None:
        raise InputError(f"{cls.__name__}.model_copy()", [Problem(deep, f"expected tables and lists nested at most "
                                                                        f"{MAX_DEPTH} deep", has_value=False)])
    return dict(update)


def too_deep(data: Any) -> str | None:
    """The key path of the first node more than MAX_DEPTH tables or lists deep (without recursing), or None."""
    stack = [(data, "", 0)]
    while stack:
        node, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            return key or "(top level)"
        if isinstance(node, Mapping):
            stack.extend((v, keys.join(key, str(k)), depth + 1) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, keys.join(key, i), depth + 1) for i, v in enumerate(node))
    return None


def plain_data(value: Any) -> Any:
    """Tables of the schema as plain dicts and lists (what a file parses to), to validate again; numpy scalars as
    Python numbers (a count from numpy is a count)."""
    if isinstance(value, BaseModel):
        return thawed(value.model_dump(by_alias=True, exclude_unset=True))
    return thawed(value)


def thawed(value: Any) -> Any:
    """Tuples as lists and mappings as dicts, all the way down (a dump of a scenario, made editable)."""
    if isinstance(value, Mapping):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thawed(v) for v in value]
    if isinstance(value, BaseModel):
        return plain_data(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be an input (every text goes through this check), or None."""
    found = CONTROL.search(text)
    if found:
        return (f"text without control characters (a workbook cannot hold them; found {found.group()!r} at "
                f"character {found.start() + 1:,})")
    if len(text) > MAX_TEXT:
        return f"text of at most {MAX_TEXT:,} characters (a spreadsheet cell's limit), got {len(text):,}"
    return None


class FrozenDict(dict):
    """A table of names (parties, events) that cannot change in place: a changed scenario is a new one."""

    def _frozen(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a scenario cannot be changed in place; Scenario.with_values({...}) makes a changed copy")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _frozen  # type: ignore

    def __reduce__(self):  # pickling (a Dask worker) rebuilds it whole
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # frozen, so hashable like the scenario that holds it
        return hash(tuple(self.items()))


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


T = TypeVar("T")
Items = Annotated[tuple[T, ...], BeforeValidator(_tuple)]  # a list in the file, a tuple in the scenario
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Label = Annotated[str, Field(min_length=1, max_length=200)]  # a display name: headers and chart legends


def frozen_mapping(value: dict) -> FrozenDict:
    """After validation: a table of names as a :class:`FrozenDict`."""
    return FrozenDict(value) if isinstance(value, dict) else value


# ---------------------------------------------------------------- triggers


class EventOffset(Model):
    """An event time plus a fixed delay, e.g. ``{ event = "agi_verified", plus_years = 2 }``."""

    event: Name = unit("name", "agi_declared, agi_verified or the name of an [events] entry.")
    plus_years: float = unit("years", "Delay added to the event time.", default=0.0, ge=0.0)


TriggerTerm = Union[Date, str, EventOffset]


def _as_trigger(value: Any) -> Any:
    """A trigger is one term or a list of terms (the earliest applies)."""
    terms = list(value) if isinstance(value, (list, tuple)) else [value]
    if not terms:
        raise ValueError("a non-empty list of trigger terms")
    if len(terms) > MAX_TRIGGER_TERMS:
        raise ValueError(f"at most {MAX_TRIGGER_TERMS} trigger terms, got {len(terms)}")
    out: list[Any] = []
    for term in terms:
        if isinstance(term, EventOffset):
            term = term.model_dump(exclude_unset=True)
        if isinstance(term, dict):
            unknown = set(term) - {"event", "plus_years"}
            if unknown or "event" not in term:
                raise ValueError("{ event = <name>, plus_years = <years> } (keys 'event' and optional "
                                 f"'plus_years'), got keys {sorted(term)}")
            event, plus = term["event"], term.get("plus_years", 0.0)
            if not isinstance(event, str) or not event:
                raise ValueError(f"an event name in {{ event = ... }}, got {event!r}")
            if isinstance(plus, bool) or not isinstance(plus, (int, float)) or not 0.0 <= plus < math.inf:
                raise ValueError(f"plus_years a number of years >= 0, got {plus!r}")
            term = EventOffset(event=event, plus_years=float(plus))
        elif isinstance(term, datetime):
            raise ValueError(f"a date without a time of day, got {term.isoformat()}")
        elif isinstance(term, bool) or not isinstance(term, (Date, str)):
            raise ValueError(
                "a date, 'valuation_date', 'never', 'agi_declared', 'agi_verified', an event name, "
                "{ event = ..., plus_years = ... }, or a list of these (earliest applies)"
            )
        out.append(term)
    return tuple(out)


Trigger = Annotated[tuple[TriggerTerm, ...], BeforeValidator(_as_trigger)]


class Condition(Model):
    """When a payment or stake applies.

    Either ``{ deadline = "name", met = true }`` or
    ``{ event = "agi_declared", before = 2028-12-31 }``.
    """

    deadline: Name | None = unit("name", "A deadline whose outcome decides.", default=None)
    met: bool = unit("true/false", "Apply when the deadline is met / the event happens in time (true) or "
                      "not (false).", default=True)
    event: Name | None = unit("name", "An event that must happen before `before`.", default=None)
    before: Date | None = unit("date", "The event must happen on or before this date.", default=None)

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        if (self.deadline is None) == (self.event is None):
            raise ValueError("exactly one of 'deadline' or 'event' (with 'before')")
        if self.event is not None and self.before is None:
            raise bad("before", "a date together with 'event'")
        if self.deadline is not None and self.before is not None:
            raise bad("before", "no 'before' with 'deadline' (a deadline has its own date)")
        return self


def check_increasing(values: list[Any], field: str, key: str) -> None:
    kinds = {type(v) is Date for v in values}
    if len(kinds) > 1:
        raise ValueError(f"all {field}[*].{key} of one kind: dates or numbers, not both")
    for i in range(1, len(values)):
        if not values[i] > values[i - 1]:
            raise ValueError(
                f"{field}[*].{key} strictly increasing, but {field}[{i}].{key} = {values[i]} "
                f"does not exceed {field}[{i - 1}].{key} = {values[i - 1]}"
            )



# ------------------------------------------------------------ error messages


def schema_models() -> list[type[Model]]:
    """Every table of the schema (the subclasses of :class:`Model`, wherever they are defined)."""
    seen: list[type[Model]] = []
    todo = list(Model.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def field_names() -> list[str]:
    """Every key of every table (for "did you mean")."""
    return sorted({f.alias or n for m in schema_models() for n, f in m.model_fields.items() if not f.exclude})


def union_tags() -> set[str]:
    """The values of the keys that pick a table's kind (``family``, ``type``): pydantic puts them in error
    locations, where they are not keys of the file."""
    tags: set[str] = set()
    for m in schema_models():
        for name in ("family", "type"):
            field = m.model_fields.get(name)
            if field is not None and get_origin(field.annotation) is Literal:
                tags.update(get_args(field.annotation))
    return tags


_EXPECTED = {
    "missing": "missing: this key is required",
    "float_type": "a number",
    "int_type": "a whole number",
    "string_type": "text in quotes",
    "bool_type": "true or false",
    "date_type": "a date such as 2030-12-31",
    "list_type": "a list [ ... ]",
    "tuple_type": "a list [ ... ]",
    "dict_type": "a table",
    "model_type": "a table",
    "finite_number": "a finite number (not nan or inf)",
    "union_tag_not_found": "a table with a 'family' or 'type' key",
    "string_too_short": "non-empty text",
    "string_too_long": "shorter text (at most 200 characters)",
    "int_from_float": "a whole number",
}




def key_path(loc: tuple[Any, ...], tags: set[str] | None = None) -> str:
    """The key path of a pydantic error location, without the tags pydantic inserts for tagged unions (a tag
    right after a key of ``events`` or ``parties`` is that key: an event may be named ``fixed``)."""
    tags = union_tags() if tags is None else tags
    key = ""
    for i, item in enumerate(loc):
        if item == "[key]":
            continue
        if isinstance(item, str) and item in tags and i > 0 and loc[i - 1] not in ("events", "parties"):
            continue
        key = keys.join(key, item if isinstance(item, int) else str(item))
    return key


def problem(err: dict[str, Any]) -> Problem:
    """One pydantic error as the loader's message."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    key = key_path(loc)
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(name, field_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return Problem(key, f"unknown key{hint}; see the scenario file reference in README.md", has_value=False)
    if kind == "missing":
        return Problem(key, "missing: this key is required", has_value=False)
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        return Problem(key, f"a number {sign} {bound}", value)
    if kind == "literal_error":
        return Problem(key, f"one of {ctx.get('expected', '')}", value)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(ctx.get("discriminator", "'type'")).strip("'")
        if kind == "union_tag_not_found":
            return Problem(f"{key}.{tag}", "missing: this key is required", has_value=False)
        return Problem(f"{key}.{tag}", f"one of {ctx.get('expected_tags', '')}", ctx.get("tag", value))
    if kind == "too_short":
        return Problem(key, f"at least {ctx.get('min_length', 1)} item(s)", list(value) if isinstance(value, tuple)
                       else value)
    if kind == "too_long":
        return Problem(key, f"at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}", value)
    if kind == "value_error":
        msg = str(ctx.get("error", err.get("msg", "")))
        if KEY_SEP in msg:  # raised by a table about one of its keys
            sub, msg = msg.split(KEY_SEP, 1)
            value = value.get(sub) if isinstance(value, dict) else None
            if value is None or isinstance(value, (dict, list, tuple)):
                return Problem(f"{key}.{sub}", f"expected {msg}", has_value=False)
            return Problem(f"{key}.{sub}", msg, value)
        if isinstance(value, (dict, list, tuple)):  # about the table as a whole: do not dump it
            return Problem(key, f"expected {msg}", has_value=False)
        return Problem(key, msg, value)
    return Problem(key, _EXPECTED.get(kind, err.get("msg", "a valid value")), value)


