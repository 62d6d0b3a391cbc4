"""Scenario files: TOML in, a validated :class:`Scenario` out.

A scenario holds everything about a run: parties, the time grid, the AGI
model, the revenue model, events and deadlines, and the deal structures.
Every mistake becomes an :class:`~valuation.errors.InputError` naming the
file, the key path (``structures[2].clauses[0].cap``), the bad value and what
was expected.  Unknown keys are errors.

Any number may be written as ``{ value = 0.2, source = "..." }``; the source
is kept (see :attr:`Scenario.sources`) and shown on the workbook's
Assumptions sheet.  Every table may also carry a ``source`` of its own.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from valuation import keys
from valuation.errors import InputError, Problem

BUILTIN_EVENTS = ("agi_declared", "agi_verified")
RESERVED_NAMES = (*BUILTIN_EVENTS, "valuation_date", "never", "revenue_at_horizon")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# What a workbook cannot hold (XML 1.0: C0 controls but tab and line breaks, lone surrogates, U+FFFE/U+FFFF),
# and the DEL and C1 controls no label or source needs (a terminal may act on them).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
MAX_TEXT = 32_767  # characters in a spreadsheet cell
MAX_DEPTH = 32  # tables and lists inside one another (the schema needs 8)
MAX_FILE_BYTES = 16 * 2**20  # a scenario file (the base case is 12 KB)
# Sizes of the kernel's fixed-width tables (see valuation.compile).
MAX_TRIGGER_TERMS = 4
MAX_DEADLINE_EVENTS = 4
MAX_TIERS = 8
MAX_REQUIRED_DEADLINES = 6
MAX_POINTS = 31
_TRIGGER_WORDS = ("valuation_date", "never", *BUILTIN_EVENTS)


def _bad(key: str, expected: str) -> ValueError:
    """An error about one key of the table being validated (the loader appends ``key`` to the path)."""
    return ValueError(f"{key}{_KEY_SEP}{expected}")


_KEY_SEP = "\x1f"


def _unit(unit: str, doc: str, **kwargs: Any) -> Any:
    """A field with a unit and a one-line description (for docs and the workbook)."""
    return Field(description=doc, json_schema_extra={"unit": unit}, **kwargs)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    source: str | None = _unit("text", "Where the numbers of this table come from.", default=None)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy, validated like a file when ``update`` changes anything (pydantic's own copy skips validation)."""
        update = _update_mapping(type(self), update)
        if not update:
            return super().model_copy(deep=deep)
        plain = self.model_dump(by_alias=True, exclude_unset=True)
        fields = type(self).model_fields
        for name, value in update.items():
            field = fields.get(name)
            plain[(field.alias or name) if field is not None else name] = plain_data(value)
        try:
            return type(self).model_validate(plain)
        except ValidationError as exc:
            raise InputError(f"{type(self).__name__}.model_copy()", [_problem(e) for e in exc.errors()]) from None


def _update_mapping(cls: type, update: Any) -> dict[str, Any]:
    """``model_copy``'s ``update``: a mapping of keys to values, not too deep to check (else the project's error)."""
    from valuation.arguments import ArgumentTypeError

    if update is None:
        return {}
    if not isinstance(update, Mapping):
        raise ArgumentTypeError(f"{cls.__name__}.model_copy()", [Problem("update", "a mapping of keys to values",
                                                                         update)])
    deep = _too_deep(dict(update))
    if deep is not None:
        raise InputError(f"{cls.__name__}.model_copy()", [Problem(deep, f"expected tables and lists nested at most "
                                                                        f"{MAX_DEPTH} deep", has_value=False)])
    return dict(update)


def plain_data(value: Any) -> Any:
    """Tables of the schema as plain dicts and lists (what a file parses to), to validate again; numpy scalars as
    Python numbers (a count from numpy is a count)."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(value, Mapping):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be an input (every text goes through this check), or None."""
    bad = _CONTROL.search(text)
    if bad:
        return (f"text without control characters (a workbook cannot hold them; found {bad.group()!r} at "
                f"character {bad.start() + 1:,})")
    if len(text) > MAX_TEXT:
        return f"text of at most {MAX_TEXT:,} characters (a spreadsheet cell's limit), got {len(text):,}"
    return None


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Label = Annotated[str, Field(min_length=1, max_length=200)]  # a display name: headers and chart legends


# ---------------------------------------------------------------- triggers


class EventOffset(_Model):
    """An event time plus a fixed delay, e.g. ``{ event = "agi_verified", plus_years = 2 }``."""

    event: Name = _unit("name", "agi_declared, agi_verified or the name of an [events] entry.")
    plus_years: float = _unit("years", "Delay added to the event time.", default=0.0, ge=0.0)


TriggerTerm = Union[Date, str, EventOffset]


def _as_trigger(value: Any) -> Any:
    """A trigger is one term or a list of terms (the earliest applies)."""
    terms = value if isinstance(value, list) else [value]
    if not terms:
        raise ValueError("a non-empty list of trigger terms")
    if len(terms) > MAX_TRIGGER_TERMS:
        raise ValueError(f"at most {MAX_TRIGGER_TERMS} trigger terms, got {len(terms)}")
    out: list[Any] = []
    for term in terms:
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
    return out


Trigger = Annotated[list[TriggerTerm], BeforeValidator(_as_trigger)]


class Condition(_Model):
    """When a payment or stake applies.

    Either ``{ deadline = "name", met = true }`` or
    ``{ event = "agi_declared", before = 2028-12-31 }``.
    """

    deadline: Name | None = _unit("name", "A deadline whose outcome decides.", default=None)
    met: bool = _unit("true/false", "Apply when the deadline is met / the event happens in time (true) or "
                      "not (false).", default=True)
    event: Name | None = _unit("name", "An event that must happen before `before`.", default=None)
    before: Date | None = _unit("date", "The event must happen on or before this date.", default=None)

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        if (self.deadline is None) == (self.event is None):
            raise ValueError("exactly one of 'deadline' or 'event' (with 'before')")
        if self.event is not None and self.before is None:
            raise _bad("before", "a date together with 'event'")
        if self.deadline is not None and self.before is not None:
            raise _bad("before", "no 'before' with 'deadline' (a deadline has its own date)")
        return self


# ------------------------------------------------------ timing distributions


class _Timing(_Model):
    start: Date | float | None = _unit(
        "date or years",
        "The clock starts here: nothing happens before. A date for event times, years for lags.",
        default=None,
    )
    never: float = _unit("probability", "Probability the event never happens.", default=0.0, ge=0.0, lt=1.0)


class ExponentialTiming(_Timing):
    family: Literal["exponential"]
    rate: float = _unit("per year", "Constant hazard rate.", gt=0.0)


class WeibullTiming(_Timing):
    family: Literal["weibull"]
    shape: float = _unit("1", "Weibull shape k (k > 1: hazard rises over time).", gt=0.0)
    scale: float = _unit("years", "Weibull scale (63% of the mass falls before it).", gt=0.0)


class LognormalTiming(_Timing):
    family: Literal["lognormal"]
    median: float = _unit("years", "Median time after the start.", gt=0.0)
    sigma: float = _unit("1", "Standard deviation of the log time.", gt=0.0)


class GompertzTiming(_Timing):
    family: Literal["gompertz"]
    rate: float = _unit("per year", "Hazard at the start.", gt=0.0)
    growth: float = _unit("per year", "Exponential growth rate of the hazard.", gt=0.0)


class HazardPiece(_Model):
    start: Date | float = _unit("date or years", "Where this piece's hazard begins.", alias="from")
    hazard: float = _unit("per year", "Constant hazard on this piece.", ge=0.0)

    model_config = ConfigDict(populate_by_name=False)


class PiecewiseTiming(_Timing):
    family: Literal["piecewise_hazard"]
    pieces: list[HazardPiece] = _unit(
        "list", "Hazard by period, in increasing order of `from`; the last piece continues.", min_length=1,
        max_length=MAX_POINTS,
    )

    @field_validator("pieces")
    @classmethod
    def _increasing(cls, pieces: list[HazardPiece]) -> list[HazardPiece]:
        _check_increasing([p.start for p in pieces], "pieces", "from")
        return pieces


class QuantilePoint(_Model):
    by: Date | float = _unit("date or years", "The event has happened by this date with probability p.")
    p: float = _unit("probability", "Cumulative probability at `by`.", gt=0.0, lt=1.0)


class QuantileTiming(_Timing):
    family: Literal["quantiles"]
    points: list[QuantilePoint] = _unit("list", "Elicited points P(by date) = p, increasing.", min_length=1,
                                        max_length=MAX_POINTS)
    fit: Literal["piecewise", "lognormal", "weibull", "gompertz", "exponential"] = _unit(
        "choice", "piecewise: exact, hazard constant between points; otherwise least squares.",
        default="piecewise",
    )
    tail: Literal["continue", "never"] = _unit(
        "choice", "piecewise only: after the last point the hazard continues, or the rest never happens.",
        default="continue",
    )

    @field_validator("points")
    @classmethod
    def _increasing(cls, points: list[QuantilePoint]) -> list[QuantilePoint]:
        _check_increasing([p.by for p in points], "points", "by")
        _check_increasing([p.p for p in points], "points", "p")
        return points

    @model_validator(mode="after")
    def _fit_needs(self) -> QuantileTiming:
        if "tail" in self.model_fields_set and self.fit != "piecewise":
            raise _bad("tail", "no 'tail' unless fit = \"piecewise\" (a fitted family has its own tail)")
        needed = 1 if self.fit in ("piecewise", "exponential") else 2
        if len(self.points) < needed:
            raise _bad("points", f"at least {needed} points to fit a {self.fit}")
        return self


class FixedTiming(_Timing):
    family: Literal["fixed"]
    after: float = _unit("years", "The event happens exactly this long after the start.", ge=0.0)


Timing = Annotated[
    Union[ExponentialTiming, WeibullTiming, LognormalTiming, GompertzTiming, PiecewiseTiming, QuantileTiming,
          FixedTiming],
    Field(discriminator="family"),
]
TIMING_FAMILIES = ("exponential", "weibull", "lognormal", "gompertz", "piecewise_hazard", "quantiles", "fixed")


def _check_increasing(values: list[Any], field: str, key: str) -> None:
    kinds = {type(v) is Date for v in values}
    if len(kinds) > 1:
        raise ValueError(f"all {field}[*].{key} of one kind: dates or numbers, not both")
    for i in range(1, len(values)):
        if not values[i] > values[i - 1]:
            raise ValueError(
                f"{field}[*].{key} strictly increasing, but {field}[{i}].{key} = {values[i]} "
                f"does not exceed {field}[{i - 1}].{key} = {values[i - 1]}"
            )


# --------------------------------------------------------------- the world


MAX_PATHS = 10**10  # about 8 hours of the base case on 2 cores: more is a typo, not a plan


class Simulation(_Model):
    valuation_date: Date = _unit("date", "Time zero; all PVs are as of this date.")
    horizon: Date = _unit("date", "Last date simulated; stakes are valued here.")
    steps_per_year: int = _unit("per year", "Time steps per year (4 = quarterly).", default=4, ge=1, le=365)
    paths: int = _unit("count", "Default number of Monte Carlo paths.", default=100_000, ge=1, le=MAX_PATHS)
    seed: int = _unit("integer", "Default seed of the random generator.", default=20250806, ge=0, lt=2**63)
    baseline: Name | None = _unit("name", "Structure others are compared with (default: the first).", default=None)

    @model_validator(mode="after")
    def _horizon_after_start(self) -> Simulation:
        if self.horizon <= self.valuation_date:
            raise _bad("horizon", f"a date after valuation_date ({self.valuation_date})")
        if (self.horizon - self.valuation_date).days > 200 * 366:
            raise _bad("horizon", f"at most 200 years after valuation_date ({self.valuation_date})")
        return self


class Party(_Model):
    discount_rate: float = _unit("per year", "Annual rate discounting this party's flows: (1+r)^-t.", gt=-1.0,
                                 le=10.0)
    label: Label | None = _unit("text", "Display name.", default=None)


class Agi(_Model):
    declaration: Timing = _unit("table", "Distribution of the date AGI is declared.")
    verification_lag: Timing = _unit("table", "Distribution of the lag from declaration to verification (years).")
    never_verified: Probability = _unit(
        "probability", "Probability a declaration is never verified (the panel rejects it).", default=0.0
    )


class MarginPoint(_Model):
    date: Date = _unit("date", "Date of this point of the margin path.")
    margin: float = _unit("fraction", "Operating margin (profit / revenue); negative is a loss.", ge=-20.0, le=1.0)


class Revenue(_Model):
    initial: float = _unit("USD bn per year", "Annual revenue rate at the valuation date.", gt=0.0, le=1e6)
    initial_growth: float = _unit("per year", "Growth rate of revenue today (log, continuous).", ge=-2.0, le=5.0)
    long_run_growth: float = _unit("per year", "Growth rate revenue growth reverts to.", ge=-1.0, le=1.0)
    mean_reversion: float = _unit("per year", "Speed at which growth reverts (half-life ln2/speed).", ge=0.0,
                                  le=50.0)
    volatility: float = _unit("per sqrt(year)", "Volatility of log revenue.", ge=0.0, le=3.0)
    growth_volatility: float = _unit("per year per sqrt(year)", "Volatility of the growth rate.", default=0.0,
                                     ge=0.0, le=3.0)
    correlation: float = _unit("1", "Correlation of revenue and growth shocks.", default=0.0, ge=-1.0, le=1.0)
    jump_intensity: float = _unit("per year", "Rate of downward jumps (competition shocks).", default=0.0, ge=0.0,
                                  le=20.0)
    jump_loss: float = _unit("fraction", "Share of revenue lost at each jump.", default=0.0, ge=0.0, lt=1.0)
    agi_growth_uplift: float = _unit("per year", "Added to revenue growth after AGI is declared.", default=0.0,
                                     ge=-1.0, le=3.0)
    exit_multiple: float = _unit("x revenue", "Company value at the horizon = multiple x revenue rate.", gt=0.0,
                                 le=1000.0)
    margin: list[MarginPoint] | float = _unit(
        "fraction", "Operating margin: one number, or a path of {date, margin} points (linear between, flat outside).",
    )

    @field_validator("margin")
    @classmethod
    def _margin_path(cls, margin: list[MarginPoint] | float) -> list[MarginPoint] | float:
        if isinstance(margin, list):
            if not margin:
                raise ValueError("at least one {date, margin} point")
            _check_increasing([p.date for p in margin], "margin", "date")
        elif not -20.0 <= margin <= 1.0:
            raise ValueError(f"a margin between -20 and 1, got {margin}")
        return margin


class Deadline(_Model):
    name: Name = _unit("name", "Name used by structures and conditions.")
    date: Date = _unit("date", "The deadline: met if the event happens on or before it.")
    events: list[Name] | None = _unit(
        "names", "Met if any of these events (agi_declared, agi_verified, [events] names) happens by the date.",
        default=None, max_length=MAX_DEADLINE_EVENTS,
    )
    completion: Timing | None = _unit("table", "Time-to-completion distribution of this deadline's own event.",
                                      default=None)
    growth_haircut: float = _unit("per year", "Subtracted from revenue growth after a missed deadline.",
                                  default=0.0, ge=0.0, le=3.0)
    haircut_years: float | None = _unit("years", "How long the haircut lasts (default: to the horizon).",
                                        default=None, gt=0.0)
    label: Label | None = _unit("text", "Display name.", default=None)

    @model_validator(mode="after")
    def _one_kind(self) -> Deadline:
        if (self.events is None) == (self.completion is None):
            raise ValueError("exactly one of 'events' (a list of event names) or 'completion' (a distribution)")
        if self.events is not None and not self.events:
            raise _bad("events", "at least one event name")
        if "haircut_years" in self.model_fields_set and self.growth_haircut == 0.0:
            raise _bad("haircut_years", "no haircut_years without a growth_haircut")
        return self


# ------------------------------------------------------------------ clauses


class RatePoint(_Model):
    date: Date = _unit("date", "From this date (step) or at this date (linear).")
    rate: float = _unit("fraction", "Share of the base.", ge=0.0, le=1.0)


class _Clause(_Model):
    label: Label | None = _unit("text", "Display name of the clause.", default=None)
    discount_rate: float | None = _unit(
        "per year", "Discount rate for this clause's flows, for both parties (default: each party's own).",
        default=None, gt=-1.0, le=10.0,
    )


class _Transfer(_Clause):
    payer: Name = _unit("party", "Party that pays.")
    payee: Name = _unit("party", "Party that receives.")

    @model_validator(mode="after")
    def _two_parties(self) -> _Transfer:
        if self.payer == self.payee:
            raise _bad("payee", "a party other than the payer")
        return self


class _Windowed(_Model):
    start: Trigger = _unit("trigger", "When the clause starts: date, event, {event, plus_years} or a list "
                           "(earliest).", default_factory=lambda: ["valuation_date"])
    end: Trigger = _unit("trigger", "When it ends: as `start` (earliest of a list applies).",
                         default_factory=lambda: ["never"])


class RevenueShare(_Transfer, _Windowed):
    type: Literal["revenue_share"]
    rate: float | None = _unit("fraction", "Constant share of revenue (or give `schedule`).", default=None,
                               ge=0.0, le=1.0)
    schedule: list[RatePoint] | None = _unit(
        "list", "Rate over time: {date, rate} points; 0 before the first date, the last rate after the last.",
        default=None,
    )
    interpolation: Literal["step", "linear"] = _unit(
        "choice", "step: each rate holds from its date; linear: straight lines between dates.", default="step"
    )
    base_fraction: float = _unit("fraction", "Share of the company's revenue that forms the base.", default=1.0,
                                 gt=0.0, le=1.0)
    cap: float | None = _unit("USD bn", "Cap on cumulative payments at the rate (undiscounted).", default=None,
                              ge=0.0)
    rate_after_cap: float = _unit("fraction", "Rate once the cap is reached.", default=0.0, ge=0.0, le=1.0)

    @field_validator("schedule")
    @classmethod
    def _schedule_increasing(cls, schedule: list[RatePoint] | None) -> list[RatePoint] | None:
        if schedule is not None:
            if not schedule:
                raise ValueError("at least one {date, rate} point")
            _check_increasing([p.date for p in schedule], "schedule", "date")
        return schedule

    @model_validator(mode="after")
    def _rate_or_schedule(self) -> RevenueShare:
        if (self.rate is None) == (self.schedule is None):
            raise ValueError("exactly one of 'rate' (a number) or 'schedule' (a list of {date, rate})")
        if "interpolation" in self.model_fields_set and self.schedule is None:
            raise _bad("interpolation", "no interpolation without a 'schedule'")
        if "rate_after_cap" in self.model_fields_set and self.cap is None:
            raise _bad("rate_after_cap", "no rate_after_cap without a 'cap'")
        return self


class Tier(_Model):
    rate: float = _unit("fraction", "Share of positive profit paid in this tier.", ge=0.0, le=1.0)
    until: float | None = _unit("USD bn", "Tier ends when the cumulative basis reaches this (last: none).",
                                default=None, gt=0.0)


class ProfitShare(_Transfer, _Windowed):
    """Positive profit shared tier by tier."""

    type: Literal["profit_share"]
    tiers: list[Tier] = _unit("list", "Tiers {rate, until} in increasing `until`.", min_length=1,
                                   max_length=MAX_TIERS)
    basis: Literal["payee_receipts", "cumulative_profit"] = _unit(
        "choice", "What `until` counts: the payee's cumulative receipts, or cumulative positive profit.",
        default="payee_receipts",
    )
    loss_carryforward: bool = _unit("true/false", "Losses must be recovered before profit is shared.",
                                    default=False)

    @model_validator(mode="after")
    def _tiers_can_fill(self) -> ProfitShare:
        if self.basis == "payee_receipts":
            for i, tier in enumerate(self.tiers):
                if tier.rate == 0.0 and tier.until is not None:
                    raise _bad("tiers", f"tiers[{i}].rate > 0: with basis payee_receipts a 0% tier never "
                                        "reaches its 'until'")
        return self

    @field_validator("tiers")
    @classmethod
    def _tiers_increase(cls, tiers: list[Tier]) -> list[Tier]:
        for i, tier in enumerate(tiers[:-1]):
            if tier.until is None:
                raise ValueError(f"an 'until' on every tier but the last; tiers[{i}] has none")
        _check_increasing([t.until for t in tiers if t.until is not None], "tiers", "until")
        return tiers


class EquityStake(_Clause):
    type: Literal["equity_stake"]
    holder: Name = _unit("party", "Party that holds the stake.")
    issuer: Name = _unit("party", "Party whose owners give up the stake.")
    fraction: float = _unit("fraction", "Share of company value at the horizon.", gt=0.0, le=1.0)
    condition: Condition | None = _unit("table", "The stake applies only on paths where this holds.",
                                        default=None)

    @model_validator(mode="after")
    def _two_parties(self) -> EquityStake:
        if self.holder == self.issuer:
            raise _bad("holder", "a party other than the issuer")
        return self


class Payment(_Transfer):
    type: Literal["payment"]
    amount: float = _unit("USD bn", "Paid on `date` when the condition holds (or always).", ge=0.0, le=1e6)
    amount_otherwise: float = _unit("USD bn", "Paid on `date` when the condition fails.", default=0.0, ge=0.0,
                                    le=1e6)
    date: Date = _unit("date", "Payment date (within the horizon).")
    condition: Condition | None = _unit("table", "Condition for `amount`.", default=None)


class OwnValue(_Clause, _Windowed):
    type: Literal["own_value"]
    party: Name = _unit("party", "Party that enjoys the value (not a transfer).")
    revenue_rate: float | None = _unit("fraction", "Value as a share of the company's revenue.", default=None,
                                       ge=0.0, le=10.0)
    amount_per_year: float | None = _unit("USD bn per year", "Or a fixed value per year (negative: a cost).",
                                          default=None, ge=-1e6, le=1e6)

    @model_validator(mode="after")
    def _one_basis(self) -> OwnValue:
        if (self.revenue_rate is None) == (self.amount_per_year is None):
            raise ValueError("exactly one of 'revenue_rate' or 'amount_per_year'")
        return self


Clause = Annotated[
    Union[RevenueShare, ProfitShare, EquityStake, Payment, OwnValue], Field(discriminator="type")
]
CLAUSE_TYPES = ("revenue_share", "profit_share", "equity_stake", "payment", "own_value")


class Structure(_Model):
    name: Name = _unit("name", "Identifier of the structure.")
    label: Label | None = _unit("text", "Display name.", default=None)
    requires: Name | None = _unit("deadline", "A deadline this structure needs; missed -> `fallback` applies.",
                                  default=None)
    fallback: Name | None = _unit("structure", "Structure that applies where `requires` is missed.",
                                  default=None)
    clauses: list[Clause] = _unit("list", "The clauses, evaluated on every path.", default_factory=list)

    @model_validator(mode="after")
    def _fallback_pairs(self) -> Structure:
        if (self.requires is None) != (self.fallback is None):
            raise ValueError("'requires' and 'fallback' together (or neither)")
        return self


PROVENANCE = ("sources", "path", "digest", "loaded")  # fields of a Scenario set by the loader, not the file


class Scenario(_Model):
    """A validated scenario: the whole input of a run."""

    name: Name = _unit("text", "Title of the scenario.")
    description: str | None = _unit("text", "What the scenario represents.", default=None)
    simulation: Simulation = _unit("table", "Time grid and run defaults.")
    parties: dict[Name, Party] = _unit("table", "Parties by name.", min_length=1)
    agi: Agi = _unit("table", "AGI declaration and verification.")
    revenue: Revenue = _unit("table", "The company's revenue model.")
    events: dict[Name, Timing] = _unit("table", "Named random event times (e.g. an IPO).", default_factory=dict)
    deadlines: list[Deadline] = _unit("list", "Deal deadlines.", default_factory=list)
    common_clauses: list[Clause] = _unit("list", "Clauses added to every structure (e.g. funding rounds).",
                                         default_factory=list)
    structures: list[Structure] = _unit("list", "The deal structures to compare.", min_length=1)

    # Set by the loader, not by the file: sources by key path, the file it came from, the SHA-256 of the bytes
    # that were loaded, and a fingerprint of the inputs as loaded (a copy changed since has another).
    sources: dict[str, str] = Field(default_factory=dict, exclude=True)
    path: str | None = Field(default=None, exclude=True)
    digest: str | None = Field(default=None, exclude=True)
    loaded: str | None = Field(default=None, exclude=True)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Scenario:
        """A copy; with ``update``, validated exactly like a file (key paths, cross checks, text)."""
        update = _update_mapping(type(self), update)
        if not update or set(update) <= set(PROVENANCE):  # what the loader sets: nothing to validate
            return BaseModel.model_copy(self, update=update, deep=deep)
        plain = self.model_dump(by_alias=True, exclude_unset=True)
        provenance = {name: getattr(self, name) for name in PROVENANCE}
        for name, value in update.items():
            if name in provenance:
                provenance[name] = value
            else:
                field = type(self).model_fields.get(name)
                plain[(field.alias or name) if field is not None else name] = plain_data(value)
        copy = scenario_from_dict(plain, source=f"{provenance['path'] or '<scenario>'} (a copy changed in Python)",
                                  **provenance)
        return _kept_sources(self, copy)

    def value_at(self, key: str) -> Any:
        """The input at a key path (as on the Assumptions sheet); None where there is none."""
        try:
            tokens = keys.parse(key)
        except ValueError:
            return None
        node: Any = self
        for token in tokens:
            if isinstance(token, int):
                node = node[token] if isinstance(node, (list, tuple)) and 0 <= token < len(node) else None
            elif isinstance(node, Mapping):
                node = node.get(token)
            elif isinstance(node, BaseModel):
                name = next((n for n, f in type(node).model_fields.items() if (f.alias or n) == token), None)
                node = getattr(node, name) if name is not None else None
            else:
                return None
            if node is None:
                return None
        return node

    def checked(self) -> Scenario:
        """This scenario validated again, as a file is (the engine runs only what this returns).

        A scenario built or changed in Python (``model_construct``, a list changed in place, pydantic's own
        constructors) has skipped the loader's checks; this runs all of them and raises
        :class:`~valuation.errors.InputError` naming the key, as for a file.
        """
        plain = self.model_dump(by_alias=True, exclude_unset=True, warnings=False)
        return scenario_from_dict(plain, source=self.path or "<scenario>",
                                  **{name: getattr(self, name) for name in PROVENANCE})

    def fingerprint(self) -> str:
        """SHA-256 of the inputs (values and sources): equal fingerprints, equal scenarios."""
        plain = self.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)
        text = json.dumps([plain, self.sources], sort_keys=True, ensure_ascii=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def changed_since_loaded(self) -> bool:
        """True for a copy changed in Python after its file was loaded (the file's digest no longer describes it)."""
        return self.loaded is not None and self.fingerprint() != self.loaded

    @property
    def baseline(self) -> str:
        return self.simulation.baseline or self.structures[0].name

    def structure_names(self) -> list[str]:
        return [s.name for s in self.structures]

    def party_names(self) -> list[str]:
        return list(self.parties)

    def years(self, when: Date) -> float:
        """Years from the valuation date (days / 365.25)."""
        return (when - self.simulation.valuation_date).days / 365.25

    @property
    def horizon_years(self) -> float:
        return self.years(self.simulation.horizon)


def _kept_sources(old: Scenario, new: Scenario) -> Scenario:
    """``new`` with the sources of the inputs that kept their values: a changed value loses its old source."""
    kept = {key: note for key, note in new.sources.items()
            if key not in old.sources or new.value_at(key) == old.value_at(key)}
    return new if len(kept) == len(new.sources) else BaseModel.model_copy(new, update={"sources": kept})


# ------------------------------------------------------------------ loading


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
    from valuation.arguments import path as path_argument

    path = path_argument("load_scenario()", "path", path, "the path of a .toml scenario or an .xlsx report")
    if path.suffix.lower() == ".xlsx":
        from valuation.assumptions import load_workbook_scenario

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


def scenario_from_dict(data: dict[str, Any], source: str = "<scenario>", **provenance: Any) -> Scenario:
    """Validate a scenario given as nested dicts (as parsed from TOML): every way to a Scenario comes here.

    ``provenance``: ``path`` (default: ``source``), ``digest``, ``sources`` (more sources by key path, e.g. of a
    copy) and ``loaded`` (default: this scenario's own fingerprint).
    """
    if not isinstance(data, dict):
        raise InputError(source, [Problem("", "a table of the scenario's keys (a dict)", data)])
    deep = _too_deep(data)
    if deep is not None:
        raise InputError(source, [Problem(deep, f"expected tables and lists nested at most {MAX_DEPTH} deep",
                                          has_value=False)])
    sources: dict[str, str] = {}
    stripping: list[Problem] = []
    plain = _strip_sources(data, "", sources, stripping)
    for key, note in (provenance.pop("sources", None) or {}).items():
        problem = text_problem(note) if isinstance(note, str) else "text in quotes"
        if problem:
            stripping.append(Problem(keys.join(key, "source"), problem, note))
        sources.setdefault(key, note)
    try:
        scenario = Scenario.model_validate(plain)
    except ValidationError as exc:
        raise InputError(source, stripping + [_problem(err) for err in exc.errors()]) from None
    if stripping:
        raise InputError(source, stripping)
    problems = list(_cross_checks(scenario))
    if problems:
        raise InputError(source, problems)
    provenance.setdefault("path", source)  # the name messages use: the file, or what stands for it
    scenario = BaseModel.model_copy(scenario, update={"sources": sources, **provenance})
    if scenario.loaded is None:
        scenario = BaseModel.model_copy(scenario, update={"loaded": scenario.fingerprint()})
    return scenario


def _too_deep(data: Any) -> str | None:
    """The key path of the first node more than MAX_DEPTH tables or lists deep (without recursing), or None."""
    stack = [(data, "", 0)]
    while stack:
        node, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            return key or "(top level)"
        if isinstance(node, dict):
            stack.extend((v, keys.join(key, str(k)), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, keys.join(key, i), depth + 1) for i, v in enumerate(node))
    return None


def _strip_sources(node: Any, path: str, sources: dict[str, str], problems: list[Problem]) -> Any:
    """Replace ``{value = x, source = "..."}`` by ``x``, recording the source by key path; check every text.

    No table of the schema has a key ``value``, so any table with one is a sourced number.  Every string --
    plain, the ``value`` of a sourced entry, a source, a key -- meets :func:`text_problem` here, the one
    check of text whatever form it is written in.
    """
    if isinstance(node, dict):
        if "value" in node:
            for extra in sorted(set(node) - {"value", "source"}, key=str):
                problems.append(Problem(keys.join(path, str(extra)), "no such key: a sourced number has only "
                                        "'value' and 'source'", has_value=False))
            if "source" in node:
                if isinstance(node["source"], str):
                    sources[path] = _strip_sources(node["source"], keys.join(path, "source"), sources, problems)
                else:
                    problems.append(Problem(keys.join(path, "source"), "text in quotes", node["source"]))
            return _strip_sources(node["value"], path, sources, problems)
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                problems.append(Problem(path or "(top level)", f"keys that are text, got {key!r}", has_value=False))
                continue
            if _CONTROL.search(key):
                problems.append(Problem(keys.join(path, key), "a name without control characters",
                                        has_value=False))
            out[key] = _strip_sources(value, keys.join(path, key), sources, problems)
        return out
    if isinstance(node, (list, tuple)):
        return [_strip_sources(v, keys.join(path, i), sources, problems) for i, v in enumerate(node)]
    if isinstance(node, str):
        problem = text_problem(node)
        if problem:
            problems.append(Problem(path, problem, node) if len(node) <= MAX_TEXT else
                            Problem(path, f"expected {problem}", has_value=False))
    return node


# Loc elements pydantic inserts for tagged unions; they are not keys of the file.
_UNION_TAGS = set(TIMING_FAMILIES) | set(CLAUSE_TYPES)
_EXPECTED = {
    "missing": "missing: this key is required",
    "float_type": "a number",
    "int_type": "a whole number",
    "string_type": "text in quotes",
    "bool_type": "true or false",
    "date_type": "a date such as 2030-12-31",
    "list_type": "a list [ ... ]",
    "dict_type": "a table",
    "model_type": "a table",
    "finite_number": "a finite number (not nan or inf)",
    "union_tag_not_found": "a table with a 'family' or 'type' key",
    "string_too_short": "non-empty text",
    "string_too_long": "shorter text (at most 200 characters)",
    "int_from_float": "a whole number",
}


def _key_path(loc: tuple[Any, ...]) -> str:
    """The key path of a pydantic error location, without the tags pydantic inserts for tagged unions (a tag
    right after a key of ``events`` or ``parties`` is that key: an event may be named ``fixed``)."""
    key = ""
    for i, item in enumerate(loc):
        if item == "[key]":
            continue
        if isinstance(item, str) and item in _UNION_TAGS and i > 0 and loc[i - 1] not in ("events", "parties"):
            continue
        key = keys.join(key, item if isinstance(item, int) else str(item))
    return key


def _problem(err: dict[str, Any]) -> Problem:
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    key = _key_path(loc)
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(name, _all_field_names(), n=1)
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
        return Problem(key, f"at least {ctx.get('min_length', 1)} item(s)", value)
    if kind == "too_long":
        return Problem(key, f"at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}", value)
    if kind == "value_error":
        msg = str(ctx.get("error", err.get("msg", "")))
        if _KEY_SEP in msg:  # raised by a table about one of its keys
            sub, msg = msg.split(_KEY_SEP, 1)
            value = value.get(sub) if isinstance(value, dict) else None
            if value is None or isinstance(value, (dict, list)):
                return Problem(f"{key}.{sub}", f"expected {msg}", has_value=False)
            return Problem(f"{key}.{sub}", msg, value)
        if isinstance(value, (dict, list)):  # about the table as a whole: do not dump it
            return Problem(key, f"expected {msg}", has_value=False)
        return Problem(key, msg, value)
    return Problem(key, _EXPECTED.get(kind, err.get("msg", "a valid value")), value)


def _all_field_names() -> list[str]:
    models = (Scenario, Simulation, Party, Agi, Revenue, MarginPoint, Deadline, Structure, Condition, EventOffset,
              ExponentialTiming, WeibullTiming, LognormalTiming, GompertzTiming, PiecewiseTiming, HazardPiece,
              QuantileTiming, QuantilePoint, FixedTiming, RevenueShare, RatePoint, ProfitShare, Tier, EquityStake,
              Payment, OwnValue)
    return sorted({f.alias or n for m in models for n, f in m.model_fields.items() if not f.exclude})


# ------------------------------------------------------------ cross checks


def _cross_checks(s: Scenario) -> Iterator[Problem]:
    """Checks that need the whole scenario: names, references, cycles, dates."""
    t0, horizon = s.simulation.valuation_date, s.simulation.horizon
    parties = set(s.parties)
    events = set(BUILTIN_EVENTS) | set(s.events)
    for name in s.events:
        if name in RESERVED_NAMES or not _IDENTIFIER.fullmatch(name):
            yield Problem(keys.join("events", name), "expected a name of letters, digits and _ (starting with a "
                          f"letter), other than {', '.join(RESERVED_NAMES)}", has_value=False)
    deadlines: dict[str, int] = {}
    for i, d in enumerate(s.deadlines):
        if d.name in deadlines:
            yield Problem(f"deadlines[{i}].name", "a name not used by another deadline", d.name)
        deadlines[d.name] = i
        if not t0 < d.date <= horizon:
            yield Problem(f"deadlines[{i}].date", f"a date after {t0} and not after the horizon {horizon}", d.date)
        for j, ev in enumerate(d.events or []):
            if ev not in events:
                yield Problem(f"deadlines[{i}].events[{j}]", f"one of {sorted(events)}", ev)
    yield from _timing_checks(s.agi.declaration, "agi.declaration", t0, absolute=True)
    yield from _timing_checks(s.agi.verification_lag, "agi.verification_lag", t0, absolute=False)
    for name, timing in s.events.items():
        yield from _timing_checks(timing, keys.join("events", name), t0, absolute=True)
    for i, d in enumerate(s.deadlines):
        if d.completion is not None:
            yield from _timing_checks(d.completion, f"deadlines[{i}].completion", t0, absolute=True)
    names: dict[str, int] = {}
    for i, st in enumerate(s.structures):
        if st.name in names:
            yield Problem(f"structures[{i}].name", "a name not used by another structure", st.name)
        names[st.name] = i
    for i, st in enumerate(s.structures):
        if st.requires is not None and st.requires not in deadlines:
            yield Problem(f"structures[{i}].requires", f"a deadline name, one of {sorted(deadlines)}", st.requires)
        if st.fallback is not None:
            if st.fallback not in names:
                yield Problem(f"structures[{i}].fallback", f"a structure name, one of {sorted(names)}", st.fallback)
            elif st.fallback == st.name:
                yield Problem(f"structures[{i}].fallback", "another structure, not itself", st.fallback)
        for j, clause in enumerate(st.clauses):
            yield from _clause_checks(clause, f"structures[{i}].clauses[{j}]", s, parties, events, deadlines)
    for j, clause in enumerate(s.common_clauses):
        yield from _clause_checks(clause, f"common_clauses[{j}]", s, parties, events, deadlines)
    yield from _fallback_cycles(s)
    required = sorted({st.requires for st in s.structures if st.requires is not None})
    if len(required) > MAX_REQUIRED_DEADLINES:
        yield Problem("structures", f"expected at most {MAX_REQUIRED_DEADLINES} distinct deadlines named by "
                      f"'requires', found {len(required)}", has_value=False)
    if s.simulation.baseline is not None and s.simulation.baseline not in names:
        yield Problem("simulation.baseline", f"a structure name, one of {sorted(names)}", s.simulation.baseline)


def _timing_checks(t: Any, key: str, t0: Date, absolute: bool) -> Iterator[Problem]:
    def years(value: Any) -> float:
        return (value - t0).days / 365.25 if isinstance(value, Date) else float(value)

    def check(value: Any, where: str, after_start: bool) -> Iterator[Problem]:
        if absolute and isinstance(value, Date) and value < t0:
            yield Problem(where, f"a date on or after the valuation date {t0}", value)
        elif not absolute and isinstance(value, Date):
            yield Problem(where, "years (a number): a lag has no calendar date", value)
        elif isinstance(value, float) and value < 0:
            yield Problem(where, "years >= 0", value)
        elif after_start and t.start is not None and not years(value) > years(t.start):
            yield Problem(where, f"a time after this table's start ({t.start})", value)

    if t.start is not None:
        yield from check(t.start, f"{key}.start", False)
    if isinstance(t, PiecewiseTiming):
        for i, piece in enumerate(t.pieces):
            yield from check(piece.start, f"{key}.pieces[{i}].from", False)
            if t.start is not None and years(piece.start) < years(t.start):
                yield Problem(f"{key}.pieces[{i}].from", f"a time on or after this table's start ({t.start})",
                              piece.start)
    if isinstance(t, QuantileTiming):
        for i, point in enumerate(t.points):
            yield from check(point.by, f"{key}.points[{i}].by", True)
        if t.never > 0 and t.points[-1].p >= 1 - t.never:
            yield Problem(f"{key}.never", f"a probability below 1 - {t.points[-1].p} (the last point)", t.never)


def _clause_checks(c: Any, key: str, s: Scenario, parties: set[str], events: set[str],
                   deadlines: dict[str, int]) -> Iterator[Problem]:
    for role in ("payer", "payee", "holder", "issuer", "party"):
        who = getattr(c, role, None)
        if who is not None and who not in parties:
            yield Problem(f"{key}.{role}", f"a party, one of {sorted(parties)}", who)
    for which in ("start", "end"):
        for k, term in enumerate(getattr(c, which, None) or []):
            where = f"{key}.{which}" if len(getattr(c, which)) == 1 else f"{key}.{which}[{k}]"
            if isinstance(term, str) and term not in events and term not in _TRIGGER_WORDS:
                yield Problem(where, f"a date or one of {sorted(set(_TRIGGER_WORDS) | events)}", term)
            if isinstance(term, EventOffset) and term.event not in events:
                yield Problem(f"{where}.event", f"one of {sorted(events)}", term.event)
            if isinstance(term, Date) and term < s.simulation.valuation_date:
                yield Problem(where, f"a date on or after the valuation date {s.simulation.valuation_date}", term)
    start, end = getattr(c, "start", None), getattr(c, "end", None)
    if start and end and all(isinstance(x, Date) for x in [*start, *end]) and min(start) >= min(end):
        yield Problem(f"{key}.end", f"a date after the clause's start ({min(start)})", min(end))
    t0, horizon = s.simulation.valuation_date, s.simulation.horizon
    cond = getattr(c, "condition", None)
    if cond is not None:
        if cond.deadline is not None and cond.deadline not in deadlines:
            yield Problem(f"{key}.condition.deadline", f"a deadline name, one of {sorted(deadlines)}", cond.deadline)
        if cond.event is not None and cond.event not in events:
            yield Problem(f"{key}.condition.event", f"one of {sorted(events)}", cond.event)
        if cond.before is not None and not t0 < cond.before <= horizon:
            yield Problem(f"{key}.condition.before", f"a date after {t0} and not after the horizon {horizon}",
                          cond.before)
    if isinstance(c, Payment) and not t0 <= c.date <= horizon:
        yield Problem(f"{key}.date", f"a date from {t0} to the horizon {horizon}", c.date)


def _fallback_cycles(s: Scenario) -> Iterator[Problem]:
    fallback = {st.name: st.fallback for st in s.structures}
    index = {st.name: i for i, st in enumerate(s.structures)}
    for i, st in enumerate(s.structures):
        seen = [st.name]
        nxt = st.fallback
        while nxt is not None and nxt in fallback:
            if nxt in seen:
                if nxt == st.name and index[st.name] == min(index[n] for n in seen):
                    chain = " -> ".join([*seen, nxt])
                    yield Problem(f"structures[{i}].fallback", f"fallbacks without a cycle, found {chain}",
                                  st.fallback)
                break
            seen.append(nxt)
            nxt = fallback[nxt]

