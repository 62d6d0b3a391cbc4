"""The clause registry: one entry per kind of clause, from which everything else about clauses is derived.

An entry names the kind's schema table, its code in the kernel's switch, which of its keys say who pays whom,
when it books its flows (each step, on a date, at the horizon), its kernel parameters by name and how each is
computed from the clause, its own cross checks, and its section of the README's reference.  The schema's
union of clause tables, the list of clause types, the kernel's parameter tables (``valuation.engine.tables``),
the compile step (``valuation.engine.compile``) and the reference (``valuation.scenario.docs``) are read from
:data:`REGISTRY`.  Adding a kind of clause touches its entry here, its branch in the kernel and its tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date as Date
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import Field, field_validator, model_validator

from valuation.errors import Problem
from valuation.scenario.base import (
    MAX_TIERS,
    Condition,
    Items,
    Label,
    Model,
    Name,
    Trigger,
    bad,
    check_increasing,
    unit,
)

# ------------------------------------------------------------------ tables


class RatePoint(Model):
    date: Date = unit("date", "From this date (step) or at this date (linear).")
    rate: float = unit("fraction", "Share of the base.", ge=0.0, le=1.0)


class ClauseBase(Model):
    label: Label | None = unit("text", "Display name of the clause.", default=None)
    discount_rate: float | None = unit(
        "per year", "Discount rate for this clause's flows, for both parties (default: each party's own).",
        default=None, gt=-1.0, le=10.0,
    )
    risk: Name | None = unit("name", "Risk class of the flows in the market view (a key of [market.rates]; default "
                             "by kind: revenue_share and own value on revenue -> revenue, profit_share and "
                             "equity_stake -> equity, payment and fixed amounts -> contractual).", default=None)
    agreed: Date | None = unit("date", "When this clause was agreed, where it differs from its structure's.",
                               default=None)


class _Transfer(ClauseBase):
    payer: Name = unit("party", "Party that pays.")
    payee: Name = unit("party", "Party that receives.")

    @model_validator(mode="after")
    def _two_parties(self) -> _Transfer:
        if self.payer == self.payee:
            raise bad("payee", "a party other than the payer")
        return self


class _Windowed(Model):
    start: Trigger = unit("trigger", "When the clause starts: date, event, {event, plus_years} or a list "
                           "(earliest).", default_factory=lambda: ("valuation_date",))
    end: Trigger = unit("trigger", "When it ends: as `start` (earliest of a list applies).",
                         default_factory=lambda: ("never",))


class RevenueShare(_Transfer, _Windowed):
    type: Literal["revenue_share"]
    rate: float | None = unit("fraction", "Constant share of revenue (or give `schedule`).", default=None,
                               ge=0.0, le=1.0)
    schedule: Items[RatePoint] | None = unit(
        "list", "Rate over time: {date, rate} points; 0 before the first date, the last rate after the last.",
        default=None,
    )
    interpolation: Literal["step", "linear"] = unit(
        "choice", "step: each rate holds from its date; linear: straight lines between dates.", default="step"
    )
    base_fraction: float = unit("fraction", "Share of the company's revenue that forms the base.", default=1.0,
                                 gt=0.0, le=1.0)
    cap: float | None = unit("USD bn", "Cap on cumulative payments at the rate (undiscounted).", default=None,
                              ge=0.0)
    rate_after_cap: float = unit("fraction", "Rate once the cap is reached.", default=0.0, ge=0.0, le=1.0)

    @field_validator("schedule")
    @classmethod
    def _schedule_increasing(cls, schedule: tuple[RatePoint, ...] | None) -> tuple[RatePoint, ...] | None:
        if schedule is not None:
            if not schedule:
                raise ValueError("at least one {date, rate} point")
            check_increasing([p.date for p in schedule], "schedule", "date")
        return schedule

    @model_validator(mode="after")
    def _rate_or_schedule(self) -> RevenueShare:
        if (self.rate is None) == (self.schedule is None):
            raise ValueError("exactly one of 'rate' (a number) or 'schedule' (a list of {date, rate})")
        if "interpolation" in self.model_fields_set and self.schedule is None:
            raise bad("interpolation", "no interpolation without a 'schedule'")
        if "rate_after_cap" in self.model_fields_set and self.cap is None:
            raise bad("rate_after_cap", "no rate_after_cap without a 'cap'")
        return self


class Tier(Model):
    rate: float = unit("fraction", "Share of positive profit paid in this tier.", ge=0.0, le=1.0)
    until: float | None = unit("USD bn", "Tier ends when the cumulative basis reaches this (last: none).",
                                default=None, gt=0.0)


class ProfitShare(_Transfer, _Windowed):
    """Positive profit shared tier by tier."""

    type: Literal["profit_share"]
    tiers: Items[Tier] = unit("list", "Tiers {rate, until} in increasing `until`.", min_length=1,
                                   max_length=MAX_TIERS)
    basis: Literal["payee_receipts", "cumulative_profit"] = unit(
        "choice", "What `until` counts: the payee's cumulative receipts, or cumulative positive profit.",
        default="payee_receipts",
    )
    loss_carryforward: bool = unit("true/false", "Losses must be recovered before profit is shared.",
                                    default=False)

    @model_validator(mode="after")
    def _tiers_can_fill(self) -> ProfitShare:
        if self.basis == "payee_receipts":
            for i, tier in enumerate(self.tiers):
                if tier.rate == 0.0 and tier.until is not None:
                    raise bad("tiers", f"tiers[{i}].rate > 0: with basis payee_receipts a 0% tier never "
                                        "reaches its 'until'")
        return self

    @field_validator("tiers")
    @classmethod
    def _tiers_increase(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        for i, tier in enumerate(tiers[:-1]):
            if tier.until is None:
                raise ValueError(f"an 'until' on every tier but the last; tiers[{i}] has none")
        check_increasing([t.until for t in tiers if t.until is not None], "tiers", "until")
        return tiers


class EquityStake(ClauseBase):
    type: Literal["equity_stake"]
    holder: Name = unit("party", "Party that holds the stake.")
    issuer: Name = unit("party", "Party whose owners give up the stake.")
    fraction: float = unit("fraction", "Share of company value at the horizon.", gt=0.0, le=1.0)
    condition: Condition | None = unit("table", "The stake applies only on paths where this holds.",
                                        default=None)

    @model_validator(mode="after")
    def _two_parties(self) -> EquityStake:
        if self.holder == self.issuer:
            raise bad("holder", "a party other than the issuer")
        return self


class Payment(_Transfer):
    type: Literal["payment"]
    amount: float = unit("USD bn", "Paid on `date` when the condition holds (or always).", ge=0.0, le=1e6)
    amount_otherwise: float = unit("USD bn", "Paid on `date` when the condition fails.", default=0.0, ge=0.0,
                                    le=1e6)
    date: Date = unit("date", "Payment date (within the horizon).")
    condition: Condition | None = unit("table", "Condition for `amount`.", default=None)


class OwnValue(ClauseBase, _Windowed):
    type: Literal["own_value"]
    party: Name = unit("party", "Party that enjoys the value (not a transfer).")
    revenue_rate: float | None = unit("fraction", "Value as a share of the company's revenue.", default=None,
                                       ge=0.0, le=10.0)
    amount_per_year: float | None = unit("USD bn per year", "Or a fixed value per year (negative: a cost).",
                                          default=None, ge=-1e6, le=1e6)

    @model_validator(mode="after")
    def _one_basis(self) -> OwnValue:
        if (self.revenue_rate is None) == (self.amount_per_year is None):
            raise ValueError("exactly one of 'revenue_rate' or 'amount_per_year'")
        return self




# ------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Param:
    """A named parameter of the kernel's clause tables (one value per clause, per step or per tier)."""

    name: str
    shape: Literal["scalar", "steps", "tiers"]
    default: float
    doc: str


PARAMS = {p.name: p for p in (
    Param("rate", "steps", 0.0, "share of revenue paid (or enjoyed) in each step, averaged over the step"),
    Param("cap", "scalar", math.inf, "cap on cumulative payments at the rate (USD bn)"),
    Param("rate_after_cap", "scalar", 0.0, "share of revenue once the cap is reached"),
    Param("tier_rate", "tiers", 0.0, "share of positive profit in each tier (0 beyond a capped last tier)"),
    Param("tier_until", "tiers", math.inf, "cumulative basis at which each tier ends"),
    Param("by_profit", "scalar", 0.0, "1: tiers count cumulative positive profit; 0: the payee's receipts"),
    Param("carryforward", "scalar", 0.0, "1: losses are recovered before profit is shared"),
    Param("fraction", "scalar", 0.0, "share of company value at the horizon"),
    Param("amount", "scalar", 0.0, "paid on the date when the condition holds (USD bn)"),
    Param("amount_otherwise", "scalar", 0.0, "paid on the date when the condition fails (USD bn)"),
    Param("fixed_amount", "scalar", 0.0, "1: a fixed value per year; 0: a share of revenue"),
    Param("amount_per_year", "scalar", 0.0, "fixed value per year (USD bn per year)"),
)}


@dataclass(frozen=True)
class CheckContext:
    """What a kind's own cross checks may look at."""

    valuation_date: Date
    horizon: Date


@dataclass(frozen=True)
class ClauseKind:
    """Everything about one kind of clause.

    ``roles``: the keys naming the party that gives (None: nobody, the value is not a transfer) and the party
    that gets.  ``books``: when the flows fall: ``steps`` (each step its window touches), ``date`` (on the
    clause's ``date``), ``horizon``.  ``fill(clause, grid)``: the kind's kernel parameters (names of
    :data:`PARAMS`); ``grid`` gives ``t`` (step ends, years), ``years(date)`` and ``step_average(xs, ys, linear,
    before)``.  ``checks(clause, key, context)``: problems only this kind can have.
    """

    name: str
    code: int
    model: type[ClauseBase]
    summary: str
    roles: tuple[str | None, str]
    books: Literal["steps", "date", "horizon"]
    fill: Callable[[Any, Any], dict[str, Any]]
    parts: tuple[tuple[str, type[Model], str], ...] = ()
    checks: Callable[[Any, str, CheckContext], Iterator[Problem]] = field(default=lambda c, key, ctx: iter(()))
    risk: Callable[[Any], str] = field(default=lambda c: "contractual")  # the default risk class of its flows


def risk_class(clause: Any) -> str:
    """The risk class discounting a clause's flows in the market view: its own ``risk``, else its kind's default."""
    return clause.risk if clause.risk is not None else kind_of(clause).risk(clause)


def _revenue_share(c: RevenueShare, grid: Any) -> dict[str, Any]:
    if c.schedule is not None:
        xs = np.array([grid.years(p.date) for p in c.schedule])
        ys = np.array([p.rate for p in c.schedule])
        rate = grid.step_average(xs, ys, linear=c.interpolation == "linear", before=0.0)
    else:
        rate = np.full(len(grid.t), c.rate)
    return {"rate": rate * c.base_fraction, "cap": math.inf if c.cap is None else c.cap,
            "rate_after_cap": c.rate_after_cap * c.base_fraction}


def _profit_share(c: ProfitShare, grid: Any) -> dict[str, Any]:
    rates = np.zeros(MAX_TIERS)
    until = np.full(MAX_TIERS, math.inf)
    for k, tier in enumerate(c.tiers):  # beyond a capped last tier the table holds rate 0: nothing more is paid
        rates[k] = tier.rate
        until[k] = math.inf if tier.until is None else tier.until
    return {"tier_rate": rates, "tier_until": until, "by_profit": 1.0 if c.basis == "cumulative_profit" else 0.0,
            "carryforward": 1.0 if c.loss_carryforward else 0.0}


def _equity_stake(c: EquityStake, grid: Any) -> dict[str, Any]:
    return {"fraction": c.fraction}


def _payment(c: Payment, grid: Any) -> dict[str, Any]:
    return {"amount": c.amount, "amount_otherwise": c.amount_otherwise}


def _own_value(c: OwnValue, grid: Any) -> dict[str, Any]:
    if c.revenue_rate is not None:
        return {"rate": np.full(len(grid.t), c.revenue_rate)}
    return {"fixed_amount": 1.0, "amount_per_year": c.amount_per_year}


def _payment_checks(c: Payment, key: str, ctx: CheckContext) -> Iterator[Problem]:
    if not ctx.valuation_date <= c.date <= ctx.horizon:
        yield Problem(f"{key}.date", f"a date from {ctx.valuation_date} to the horizon {ctx.horizon}", c.date)


REGISTRY: tuple[ClauseKind, ...] = (
    ClauseKind("revenue_share", 0, RevenueShare, "In `[[structures.clauses]]` or `[[common_clauses]]`.",
               roles=("payer", "payee"), books="steps", fill=_revenue_share,
               parts=(("rate point", RatePoint, "An element of `schedule`."),), risk=lambda c: "revenue"),
    ClauseKind("profit_share", 1, ProfitShare, "Paid on positive profit, tier by tier.", roles=("payer", "payee"),
               books="steps", fill=_profit_share, parts=(("tier", Tier, "An element of `tiers`."),),
               risk=lambda c: "equity"),
    ClauseKind("equity_stake", 2, EquityStake, "Valued at the horizon: fraction x exit_multiple x revenue.",
               roles=("issuer", "holder"), books="horizon", fill=_equity_stake, risk=lambda c: "equity"),
    ClauseKind("payment", 3, Payment, "A fixed or contingent payment (e.g. funding).", roles=("payer", "payee"),
               books="date", fill=_payment, checks=_payment_checks),
    ClauseKind("own_value", 4, OwnValue, "Value to one party that is not a transfer.", roles=(None, "party"),
               books="steps", fill=_own_value,
               risk=lambda c: "revenue" if c.revenue_rate is not None else "contractual"),
)
KINDS = {kind.name: kind for kind in REGISTRY}
CODES = {kind.name: kind.code for kind in REGISTRY}
CLAUSE_TYPES = tuple(KINDS)

Clause = Annotated[Union[tuple(kind.model for kind in REGISTRY)], Field(discriminator="type")]  # noqa: UP007


def kind_of(clause: ClauseBase) -> ClauseKind:
    """The registry entry of a clause."""
    return KINDS[clause.type]  # type: ignore[attr-defined]
