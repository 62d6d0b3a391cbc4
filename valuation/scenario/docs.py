"""The scenario file reference, generated from the schema and the clause registry
(``python -m valuation.scenario.docs``).

README.md carries this text between markers; a test keeps the two in step.
"""

from __future__ import annotations

import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from valuation.scenario import base, schema, timing
from valuation.scenario.clauses import REGISTRY

SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("top level", schema.Scenario, "The file itself."),
    ("[simulation]", schema.Simulation, "Time grid and run defaults."),
    ("[parties.NAME]", schema.Party, "One table per party; NAME is used by clauses."),
    ("[agi]", schema.Agi, "AGI declaration and verification."),
    ("timing: exponential", timing.ExponentialTiming, "Any timing table (agi.declaration, agi.verification_lag, "
                                                      "events.NAME, deadlines[].completion) has `family` and the "
                                                      "common keys `start`, `never`."),
    ("timing: weibull", timing.WeibullTiming, ""),
    ("timing: lognormal", timing.LognormalTiming, ""),
    ("timing: gompertz", timing.GompertzTiming, ""),
    ("timing: piecewise_hazard", timing.PiecewiseTiming, ""),
    ("piecewise piece", timing.HazardPiece, "An element of `pieces`."),
    ("timing: quantiles", timing.QuantileTiming, "Fitted to elicited points; the fit's residual is reported."),
    ("quantile point", timing.QuantilePoint, "An element of `points`."),
    ("timing: fixed", timing.FixedTiming, ""),
    ("[revenue]", schema.Revenue, "The company's revenue, growth and margin."),
    ("margin point", schema.MarginPoint, "An element of `revenue.margin`."),
    ("[[deadlines]]", schema.Deadline, "Met when any of its events happens by its date."),
    ("[[structures]]", schema.Structure, "A named list of clauses."),
    *[section for kind in REGISTRY
      for section in ((f"clause: {kind.name}", kind.model, kind.summary), *kind.parts)],
    ("[[correlations]]", schema.Correlation, "A rank correlation between two uncertain inputs, or an uncertain "
                                             "input and a driver (see \"Uncertain inputs\")."),
    ("condition", base.Condition, "For payments and stakes."),
    ("trigger { event, plus_years }", base.EventOffset, "A trigger term: an event time plus a delay."),
]


_KIND = {"family": "Which distribution this table describes.", "type": "Which kind of clause this is."}


def _allowed(annotation: Any, metadata: list[Any]) -> str:
    bounds = []
    for m in metadata:
        for cls, sign, attr in ((Ge, ">=", "ge"), (Gt, ">", "gt"), (Le, "<=", "le"), (Lt, "<", "lt")):
            if isinstance(m, cls):
                bounds.append(f"{sign} {getattr(m, attr)}")
    literals = _literals(annotation)
    if literals:
        return " \\| ".join(f"`{v}`" for v in literals)
    return ", ".join(bounds)


def _literals(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return []


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return f"`{list(value)}`" if value else "none"
    if field.default is None or field.default is PydanticUndefined:
        return "none"
    return f"`{field.default}`"


def reference() -> str:
    """Markdown tables: key, unit, default, allowed values, meaning."""
    out = [
        "Every number may be written as `{ value = ..., source = \"...\" }` (with `date`, the source's date, and "
        "`low`, `high`, its range; an input of the world may add `dist`: see \"Uncertain inputs\"); every table "
        "may carry a `source`. "
        "Dates are TOML dates (`2030-12-31`). A trigger (`start`, `end`) is a date, `valuation_date`, `never`, "
        "`agi_declared`, `agi_verified`, an event name, `{ event = ..., plus_years = ... }`, or a list of these "
        "(the earliest applies). Unknown keys are errors.",
        "",
    ]
    for title, model, note in SECTIONS:
        out.append(f"**{title}**" + (f" — {note}" if note else ""))
        out.append("")
        out.append("| key | unit | default | allowed | meaning |")
        out.append("|---|---|---|---|---|")
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            if name == "source" and model is not schema.Scenario:
                continue
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            key = field.alias or name
            allowed = _allowed(field.annotation, field.metadata)
            meaning = field.description or _KIND.get(key, "")
            out.append(f"| `{key}` | {extra.get('unit', '')} | {_default(field)} | {allowed} | {meaning} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


START, END = "<!-- reference:start -->\n", "<!-- reference:end -->"


def update_readme(path: str = "README.md") -> None:
    """Replace the reference section of the README with the current one."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(head + START + reference() + END + tail)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--update"]:
        update_readme(*sys.argv[2:3])
    else:
        print(reference(), end="")
