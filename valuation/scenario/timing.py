"""Timing tables of the scenario: when the AGI declaration, its verification lag, named events and deadline
completions happen (each becomes a :mod:`models.timing` distribution when compiled)."""

from __future__ import annotations

from datetime import date as Date
from typing import Annotated, Literal, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

from valuation.scenario.base import MAX_POINTS, Items, Model, bad, check_increasing, unit


class _Timing(Model):
    start: Date | float | None = unit(
        "date or years",
        "The clock starts here: nothing happens before. A date for event times, years for lags.",
        default=None,
    )
    never: float = unit("probability", "Probability the event never happens.", default=0.0, ge=0.0, lt=1.0)


class ExponentialTiming(_Timing):
    family: Literal["exponential"]
    rate: float = unit("per year", "Constant hazard rate.", gt=0.0)


class WeibullTiming(_Timing):
    family: Literal["weibull"]
    shape: float = unit("1", "Weibull shape k (k > 1: hazard rises over time).", gt=0.0)
    scale: float = unit("years", "Weibull scale (63% of the mass falls before it).", gt=0.0)


class LognormalTiming(_Timing):
    family: Literal["lognormal"]
    median: float = unit("years", "Median time after the start.", gt=0.0)
    sigma: float = unit("1", "Standard deviation of the log time.", gt=0.0)


class GompertzTiming(_Timing):
    family: Literal["gompertz"]
    rate: float = unit("per year", "Hazard at the start.", gt=0.0)
    growth: float = unit("per year", "Exponential growth rate of the hazard.", gt=0.0)


class HazardPiece(Model):
    start: Date | float = unit("date or years", "Where this piece's hazard begins.", alias="from")
    hazard: float = unit("per year", "Constant hazard on this piece.", ge=0.0)

    model_config = ConfigDict(populate_by_name=False)


class PiecewiseTiming(_Timing):
    family: Literal["piecewise_hazard"]
    pieces: Items[HazardPiece] = unit(
        "list", "Hazard by period, in increasing order of `from`; the last piece continues.", min_length=1,
        max_length=MAX_POINTS,
    )

    @field_validator("pieces")
    @classmethod
    def _increasing(cls, pieces: tuple[HazardPiece, ...]) -> tuple[HazardPiece, ...]:
        check_increasing([p.start for p in pieces], "pieces", "from")
        return pieces


class QuantilePoint(Model):
    by: Date | float = unit("date or years", "The event has happened by this date with probability p.")
    p: float = unit("probability", "Cumulative probability at `by`.", gt=0.0, lt=1.0)


class QuantileTiming(_Timing):
    family: Literal["quantiles"]
    points: Items[QuantilePoint] = unit("list", "Elicited points P(by date) = p, increasing.", min_length=1,
                                        max_length=MAX_POINTS)
    fit: Literal["piecewise", "lognormal", "weibull", "gompertz", "exponential"] = unit(
        "choice", "piecewise: exact, hazard constant between points; otherwise least squares.",
        default="piecewise",
    )
    tail: Literal["continue", "never"] = unit(
        "choice", "piecewise only: after the last point the hazard continues, or the rest never happens.",
        default="continue",
    )

    @field_validator("points")
    @classmethod
    def _increasing(cls, points: tuple[QuantilePoint, ...]) -> tuple[QuantilePoint, ...]:
        check_increasing([p.by for p in points], "points", "by")
        check_increasing([p.p for p in points], "points", "p")
        return points

    @model_validator(mode="after")
    def _fit_needs(self) -> QuantileTiming:
        if "tail" in self.model_fields_set and self.fit != "piecewise":
            raise bad("tail", "no 'tail' unless fit = \"piecewise\" (a fitted family has its own tail)")
        needed = 1 if self.fit in ("piecewise", "exponential") else 2
        if len(self.points) < needed:
            raise bad("points", f"at least {needed} points to fit a {self.fit}")
        return self


class FixedTiming(_Timing):
    family: Literal["fixed"]
    after: float = unit("years", "The event happens exactly this long after the start.", ge=0.0)


Timing = Annotated[
    Union[ExponentialTiming, WeibullTiming, LognormalTiming, GompertzTiming, PiecewiseTiming, QuantileTiming,
          FixedTiming],
    Field(discriminator="family"),
]
TIMING_FAMILIES = ("exponential", "weibull", "lognormal", "gompertz", "piecewise_hazard", "quantiles", "fixed")
