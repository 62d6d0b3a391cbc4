"""The scenario: parties, the time grid, the AGI and revenue models, events, deadlines and the deal structures,
validated.  Every way to a :class:`Scenario` -- a file, a workbook's Assumptions sheet, a copy changed in Python
(:meth:`Scenario.with_values`, ``model_copy``) -- goes through :func:`scenario_from_dict`: the same checks and
the same messages (file, key path, value, what was expected).

Any number may be written as ``{ value = 0.2, source = "..." }``; the source is kept (see
:attr:`Scenario.sources`) and shown on the workbook's Assumptions sheet.  Every table may also carry a
``source`` of its own.  A number may also carry a range, ``low`` and ``high``, and an input of the world a
distribution, ``dist`` (see :mod:`valuation.scenario.ranges`, kept in :attr:`Scenario.ranges`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from datetime import date as Date
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator, model_validator

from valuation import keys
from valuation.arguments import ArgumentTypeError
from valuation.errors import InputError, Problem
from valuation.scenario.base import (
    BUILTIN_EVENTS,
    CONTROL,
    IDENTIFIER,
    MAX_DEADLINE_EVENTS,
    MAX_DEPTH,
    MAX_REQUIRED_DEADLINES,
    MAX_TEXT,
    RESERVED_NAMES,
    TRIGGER_WORDS,
    EventOffset,
    FrozenDict,
    Items,
    Label,
    Model,
    Name,
    Probability,
    bad,
    check_increasing,
    frozen_mapping,
    plain_data,
    problem,
    text_problem,
    thawed,
    too_deep,
    unit,
    update_mapping,
)
from valuation.scenario.clauses import CheckContext, Clause, kind_of, risk_class
from valuation.scenario.ranges import (
    DISTS,
    RANGE_KEYS,
    InputRange,
    correlation_checks,
    dist_inputs,
    is_number,
    range_checks,
)
from valuation.scenario.timing import PiecewiseTiming, QuantileTiming, Timing

# --------------------------------------------------------------- the world


MAX_PATHS = 10**10  # about 8 hours of the base case on 2 cores: more is a typo, not a plan


class Simulation(Model):
    valuation_date: Date = unit("date", "Time zero; all PVs are as of this date.")
    horizon: Date = unit("date", "Last date simulated; stakes are valued here.")
    steps_per_year: int = unit("per year", "Time steps per year (4 = quarterly).", default=4, ge=1, le=365)
    paths: int = unit("count", "Default number of Monte Carlo paths.", default=100_000, ge=1, le=MAX_PATHS)
    seed: int = unit("integer", "Default seed of the random generator.", default=20250806, ge=0, lt=2**63)
    baseline: Name | None = unit("name", "Structure others are compared with (default: the first).", default=None)
    uncertain: bool = unit("true/false", "Sample the inputs that have a distribution (dist), one draw per path, "
                           "unless the run says otherwise (--uncertain / --fixed).", default=False)
    repair_correlations: bool = unit(
        "true/false", "Where the [[correlations]] cannot hold together (not positive semi-definite), use the "
        "nearest valid matrix (Frobenius norm) instead of refusing the scenario.", default=False)

    @model_validator(mode="after")
    def _horizon_after_start(self) -> Simulation:
        if self.horizon <= self.valuation_date:
            raise bad("horizon", f"a date after valuation_date ({self.valuation_date})")
        if (self.horizon - self.valuation_date).days > 200 * 366:
            raise bad("horizon", f"at most 200 years after valuation_date ({self.valuation_date})")
        return self


class Party(Model):
    discount_rate: float = unit("per year", "Annual rate discounting this party's flows: (1+r)^-t.", gt=-1.0,
                                 le=10.0)
    label: Label | None = unit("text", "Display name.", default=None)


class Agi(Model):
    declaration: Timing = unit("table", "Distribution of the date AGI is declared.")
    verification_lag: Timing = unit("table", "Distribution of the lag from declaration to verification (years).")
    never_verified: Probability = unit(
        "probability", "Probability a declaration is never verified (the panel rejects it).", default=0.0
    )


class MarginPoint(Model):
    date: Date = unit("date", "Date of this point of the margin path.")
    margin: float = unit("fraction", "Operating margin (profit / revenue); negative is a loss.", ge=-20.0, le=1.0)


class Revenue(Model):
    initial: float = unit("USD bn per year", "Annual revenue rate at the valuation date.", gt=0.0, le=1e6)
    initial_growth: float = unit("per year", "Growth rate of revenue today (log, continuous).", ge=-2.0, le=5.0)
    long_run_growth: float = unit("per year", "Growth rate revenue growth reverts to.", ge=-1.0, le=1.0)
    mean_reversion: float = unit("per year", "Speed at which growth reverts (half-life ln2/speed).", ge=0.0,
                                  le=50.0)
    volatility: float = unit("per sqrt(year)", "Volatility of log revenue.", ge=0.0, le=3.0)
    growth_volatility: float = unit("per year per sqrt(year)", "Volatility of the growth rate.", default=0.0,
                                     ge=0.0, le=3.0)
    correlation: float = unit("1", "Correlation of revenue and growth shocks.", default=0.0, ge=-1.0, le=1.0)
    jump_intensity: float = unit("per year", "Rate of downward jumps (competition shocks).", default=0.0, ge=0.0,
                                  le=20.0)
    jump_loss: float = unit("fraction", "Share of revenue lost at each jump.", default=0.0, ge=0.0, lt=1.0)
    agi_growth_uplift: float = unit("per year", "Added to revenue growth after AGI is declared.", default=0.0,
                                     ge=-1.0, le=3.0)
    exit_multiple: float = unit("x revenue", "Company value at the horizon = multiple x revenue rate.", gt=0.0,
                                 le=1000.0)
    margin: Items[MarginPoint] | float = unit(
        "fraction", "Operating margin: one number, or a path of {date, margin} points (linear between, flat outside).",
    )
    market_size: float | None = unit(
        "USD bn per year", "Size of the market revenue cannot exceed: the rate approaches it smoothly "
        "(X / sqrt(1 + (X / market_size)^2) of the unbounded rate X); none: unbounded.", default=None, gt=0.0,
        le=1e7)

    @field_validator("margin")
    @classmethod
    def _margin_path(cls, margin: tuple[MarginPoint, ...] | float) -> tuple[MarginPoint, ...] | float:
        if isinstance(margin, tuple):
            if not margin:
                raise ValueError("at least one {date, margin} point")
            check_increasing([p.date for p in margin], "margin", "date")
        elif not -20.0 <= margin <= 1.0:
            raise ValueError(f"a margin between -20 and 1, got {margin}")
        return margin

    @model_validator(mode="after")
    def _market_above_today(self) -> Revenue:
        if self.market_size is not None and not self.market_size > self.initial:
            raise bad("market_size", f"a market size above today's revenue rate (initial = {self.initial:g} USD bn "
                      "per year): revenue can only approach it")
        return self


class Deadline(Model):
    name: Name = unit("name", "Name used by structures and conditions.")
    date: Date = unit("date", "The deadline: met if the event happens on or before it.")
    events: Items[Name] | None = unit(
        "names", "Met if any of these events (agi_declared, agi_verified, [events] names) happens by the date.",
        default=None, max_length=MAX_DEADLINE_EVENTS,
    )
    completion: Timing | None = unit("table", "Time-to-completion distribution of this deadline's own event.",
                                      default=None)
    growth_haircut: float = unit("per year", "Subtracted from revenue growth after a missed deadline.",
                                  default=0.0, ge=0.0, le=3.0)
    haircut_years: float | None = unit("years", "How long the haircut lasts (default: to the horizon).",
                                        default=None, gt=0.0)
    label: Label | None = unit("text", "Display name.", default=None)

    @model_validator(mode="after")
    def _one_kind(self) -> Deadline:
        if (self.events is None) == (self.completion is None):
            raise ValueError("exactly one of 'events' (a list of event names) or 'completion' (a distribution)")
        if self.events is not None and not self.events:
            raise bad("events", "at least one event name")
        if "haircut_years" in self.model_fields_set and self.growth_haircut == 0.0:
            raise bad("haircut_years", "no haircut_years without a growth_haircut")
        return self


class Structure(Model):
    name: Name = unit("name", "Identifier of the structure.")
    label: Label | None = unit("text", "Display name.", default=None)
    agreed: Date | None = unit("date", "When these terms were agreed (or proposed); a date after the valuation date "
                               "marks terms valued before they existed.", default=None)
    requires: Name | None = unit("deadline", "A deadline this structure needs; missed -> `fallback` applies.",
                                  default=None)
    fallback: Name | None = unit("structure", "Structure that applies where `requires` is missed.",
                                  default=None)
    clauses: Items[Clause] = unit("list", "The clauses, evaluated on every path.", default_factory=tuple)

    @model_validator(mode="after")
    def _fallback_pairs(self) -> Structure:
        if (self.requires is None) != (self.fallback is None):
            raise ValueError("'requires' and 'fallback' together (or neither)")
        return self


class Correlation(Model):
    """A rank (Spearman) correlation between two uncertain inputs, or an uncertain input and a driver."""

    between: Items[Annotated[str, Field(min_length=1, max_length=400)]] = unit(
        "names", "Two names: key paths of inputs with a dist, or drivers (agi_declared, revenue_growth, an "
        "[events] name).")
    rank: float = unit("1", "Target rank correlation (Spearman), from -1 to 1.", ge=-1.0, le=1.0)
    label: Label | None = unit("text", "Display name.", default=None)


class VariantChange(Model):
    """One input of a variant: its key path and the value it takes there."""

    input: Annotated[str, Field(min_length=1, max_length=400)] = unit(
        "key path", "The input changed, as on the Assumptions sheet (e.g. revenue.initial_growth).")
    to: float = unit("as the input", "Its value in the variant (a number).")


class Variant(Model):
    """A named variant of the scenario (a bear case, early AGI): inputs set to other values, compared with the
    scenario on the same random numbers (`valuation compare`)."""

    name: Name = unit("name", "Identifier of the variant (`valuation compare --variants NAME`).")
    label: Label | None = unit("text", "Display name.", default=None)
    description: str | None = unit("text", "What the variant represents.", default=None)
    changes: Items[VariantChange] = unit("list", "The inputs it changes, each `{ input = \"key.path\", to = ... }`.",
                                         min_length=1)


class Mark(Model):
    """A market mark: the value of 100% of the company's equity on a date (a funding round, a secondary sale)."""

    name: Name = unit("name", "Identifier of the mark (`valuation calibrate --mark NAME`).")
    label: Label | None = unit("text", "Display name.", default=None)
    date: Date = unit("date", "When the mark was known (on or before the valuation date).")
    equity_value: float = unit("USD bn", "Value of 100% of the equity.", gt=0.0, le=1e7)


class Market(Model):
    """The market view: a discount rate per risk class, the marks the model is calibrated to."""

    rates: Annotated[dict[Name, float], AfterValidator(frozen_mapping)] = unit(
        "per year", "Discount rate of each risk class, e.g. revenue, equity, contractual: (1+r)^-t.", min_length=1)
    company_class: Name = unit("name", "Risk class discounting the company's own cash flows (its value).",
                               default="equity")
    marks: Items[Mark] = unit("list", "Market values of 100% of the equity, known by the valuation date.",
                              default_factory=tuple)

    @field_validator("rates")
    @classmethod
    def _rates_in_range(cls, rates: dict[str, float]) -> dict[str, float]:
        for name, rate in rates.items():
            if not -1.0 < rate <= 10.0:
                raise bad(name, f"a discount rate > -1 and <= 10 per year, got {rate}")
        return rates


_NAMED_TABLES = ("parties", "events", "market.rates")  # tables whose keys are names the scenario gives
PROVENANCE = ("sources", "source_dates", "ranges", "path", "digest", "loaded")  # set by the loader, not by the file


class Scenario(Model):
    """A validated scenario: the whole input of a run."""

    name: Name = unit("text", "Title of the scenario.")
    description: str | None = unit("text", "What the scenario represents.", default=None)
    simulation: Simulation = unit("table", "Time grid and run defaults.")
    parties: Annotated[dict[Name, Party], AfterValidator(frozen_mapping)] = unit("table", "Parties by name.",
                                                                                   min_length=1)
    agi: Agi = unit("table", "AGI declaration and verification.")
    revenue: Revenue = unit("table", "The company's revenue model.")
    events: Annotated[dict[Name, Timing], AfterValidator(frozen_mapping)] = unit(
        "table", "Named random event times (e.g. an IPO).", default_factory=FrozenDict)
    deadlines: Items[Deadline] = unit("list", "Deal deadlines.", default_factory=tuple)
    common_clauses: Items[Clause] = unit("list", "Clauses added to every structure (e.g. funding rounds).",
                                          default_factory=tuple)
    structures: Items[Structure] = unit("list", "The deal structures to compare.", min_length=1)
    market: Market | None = unit("table", "Risk classes' discount rates (the market view) and market marks.",
                                 default=None)
    correlations: Items[Correlation] = unit("list", "Rank correlations among uncertain inputs and drivers.",
                                            default_factory=tuple)
    variants: Items[Variant] = unit("list", "Named variants (bear, bull, early AGI), compared on the same random "
                                    "numbers by `valuation compare`.", default_factory=tuple)

    # Set by the loader, not by the file: sources by key path, the file it came from, the SHA-256 of the bytes
    # that were loaded, and a fingerprint of the inputs as loaded (a copy changed since has another).
    sources: Annotated[dict[str, str], AfterValidator(frozen_mapping)] = Field(default_factory=FrozenDict,
                                                                                  exclude=True)
    source_dates: Annotated[dict[str, Date], AfterValidator(frozen_mapping)] = Field(default_factory=FrozenDict,
                                                                                       exclude=True)
    ranges: Annotated[dict[str, InputRange], AfterValidator(frozen_mapping)] = Field(default_factory=FrozenDict,
                                                                                       exclude=True)
    path: str | None = Field(default=None, exclude=True)
    digest: str | None = Field(default=None, exclude=True)
    loaded: str | None = Field(default=None, exclude=True)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Scenario:
        """A copy; with ``update``, validated exactly like a file (key paths, cross checks, text)."""
        update = update_mapping(type(self), update)
        if not update or set(update) <= set(PROVENANCE):  # what the loader sets: nothing to validate
            return BaseModel.model_copy(self, update=update, deep=deep)
        plain = thawed(self.model_dump(by_alias=True, exclude_unset=True))
        provenance = {name: getattr(self, name) for name in PROVENANCE}
        for name, value in update.items():
            if name in provenance:
                provenance[name] = value
            else:
                field = type(self).model_fields.get(name)
                plain[(field.alias or name) if field is not None else name] = plain_data(value)
        if "ranges" not in update:  # a changed value loses its range (as its source), and so its correlations
            provenance["ranges"] = {k: r for k, r in self.ranges.items() if _plain_at(plain, k) == self.value_at(k)}
            if "correlations" not in update:
                _drop_correlations(plain, self, provenance["ranges"])
        copy = scenario_from_dict(plain, source=f"{provenance['path'] or '<scenario>'} (a copy changed in Python)",
                                  **provenance)
        return _kept_sources(self, copy)

    def with_values(self, changes: Mapping[str, Any]) -> Scenario:
        """A new scenario with the inputs at these key paths changed, validated exactly like a file.

        Parameters
        ----------
        changes
            Key paths as on the Assumptions sheet and in error messages (``"revenue.volatility"``,
            ``"structures[3].clauses[0].cap"``, ``"parties.microsoft.discount_rate"``, a list element
            ``"structures[0].clauses[0].end[1]"``) to new values: numbers, dates, text, ``True``/``False``,
            lists or tables as a file would hold them, or ``{"value": ..., "source": "..."}``.

        Returns
        -------
        Scenario
            A new scenario (this one does not change).  A changed input loses the source of its old value
            unless a new one is given; the copy keeps the file's digest and reports itself as changed since
            loaded (see :attr:`changed_since_loaded`).

        Raises
        ------
        InputError
            A key that is not one of the scenario's, or a value it does not take: the message a file gets.
        """
        where = f"{self.path or '<scenario>'} (with_values)"
        if not isinstance(changes, Mapping):
            raise ArgumentTypeError("with_values()", [Problem("changes", "a mapping of key paths to values, e.g. "
                                                           "{'revenue.volatility': 0.3}", changes)])
        plain = thawed(self.model_dump(by_alias=True, exclude_unset=True))
        sources = dict(self.sources)
        dates = dict(self.source_dates)
        ranges = dict(self.ranges)
        problems: list[Problem] = []
        for key, value in changes.items():
            if not isinstance(key, str):
                raise ArgumentTypeError("with_values()", [Problem("changes", "key paths as text", key)])
            try:
                parts = keys.parse(key)
            except ValueError:
                problems.append(Problem(key, "expected a key path such as structures[0].clauses[1].rate (the keys "
                                        "of the Assumptions sheet and of error messages)", has_value=False))
                continue
            trouble = self._set(plain, parts, plain_data(value))
            if trouble:
                problems.append(Problem(key, trouble, has_value=False))
            sources.pop(keys.build(parts), None)  # the old value's source does not describe the new one
            dates.pop(keys.build(parts), None)
            changed = keys.build(parts)  # nor its range (or those inside a table or list given anew): fixed now
            for key in [k for k in ranges if k == changed or k.startswith((changed + ".", changed + "["))]:
                del ranges[key]
        if problems:
            raise InputError(where, problems)
        if "correlations" not in changes:
            _drop_correlations(plain, self, ranges)
        return _kept_sources(self, scenario_from_dict(plain, source=where, path=self.path, digest=self.digest,
                                                      loaded=self.loaded, sources=sources, source_dates=dates,
                                                      ranges=ranges))

    def variant(self, name: str) -> Scenario:
        """The scenario with variant ``name``'s changes applied (validated like a file; it has no variants)."""
        names = [v.name for v in self.variants]
        if name not in names:
            raise InputError("", [Problem("variant", f"one of the scenario's variants {names}" if names else
                                          "a variant of the scenario, but it has none ([[variants]])", name)])
        v = self.variants[names.index(name)]
        changes = {c.input: {"value": c.to, "source": self.sources.get(
            f"variants[{names.index(name)}].changes[{j}].to", f"variant {name}")} for j, c in enumerate(v.changes)}
        return self.without_variants().with_values(changes)

    def check_variants(self, names: list[str] | None = None) -> None:
        """Raise :class:`InputError` naming every variant (of ``names``, default all) whose changes do not make a
        valid scenario."""
        bare = self.without_variants()
        problems = []
        for i, v in enumerate(self.variants):
            if names is not None and v.name not in names:
                continue
            try:
                bare.with_values({c.input: c.to for c in v.changes})
            except InputError as exc:
                problems.append(Problem(f"variants[{i}].changes", f"changes the scenario accepts, but variant "
                                        f"{v.name!r} gives: " + "; ".join(p.render() for p in exc.problems),
                                        has_value=False))
        if problems:
            raise InputError(self.path or "<scenario>", problems)

    def without_variants(self) -> Scenario:
        return self if not self.variants else self.model_copy(update={"variants": ()})

    def _set(self, plain: dict, parts: list[str | int], value: Any) -> str | None:
        """Put ``value`` at ``parts`` of ``plain`` (this scenario's dump); why not, or None.  A key left at its
        default is not in the dump: its current value is put there first, so its list elements can change."""
        node: Any = plain
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = keys.build(parts[:depth]) or "the scenario"
            if isinstance(part, int):
                if not isinstance(node, list):
                    return f"expected a key that exists: {where} is not a list"
                if not 0 <= part < len(node):
                    return f"expected a list position from 0 to {len(node) - 1}: {where} has {len(node)} items"
            elif not isinstance(node, dict):
                return f"expected a key that exists: {where} holds a value, not a table"
            elif keys.build(parts[:depth]) in _NAMED_TABLES and part not in node:  # a name, not a setting
                names = sorted(node)
                close = difflib.get_close_matches(part, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return (f"expected one of the scenario's {where}, {names}{hint}: with_values changes inputs, it "
                        f"does not add {where}")
            elif part not in node and not last:
                current = self.value_at(keys.build(parts[: depth + 1]))
                node[part] = plain_data(current) if current is not None else ({} if isinstance(parts[depth + 1], str)
                                                                               else [])
            if last:
                node[part] = value
            else:
                node = node[part]
        return None

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

        A scenario built in Python (``model_construct``, pydantic's own constructors) has skipped the
        loader's checks; this runs all of them and raises :class:`~valuation.errors.InputError` naming the
        key, as for a file.
        """
        plain = thawed(self.model_dump(by_alias=True, exclude_unset=True, warnings=False))
        return scenario_from_dict(plain, source=self.path or "<scenario>",
                                  **{name: getattr(self, name) for name in PROVENANCE})

    def fingerprint(self) -> str:
        """SHA-256 of the inputs (values and sources): equal fingerprints, equal scenarios."""
        plain = self.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)
        text = json.dumps([plain, self.sources, {k: str(v) for k, v in self.source_dates.items()},
                           {k: r.as_dict() for k, r in self.ranges.items()}], sort_keys=True, ensure_ascii=True,
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def changed_since_loaded(self) -> bool:
        """True for a copy changed in Python after its file was loaded (the file's digest no longer describes it)."""
        return self.loaded is not None and self.fingerprint() != self.loaded

    @property
    def baseline(self) -> str:
        return self.simulation.baseline or self.structures[0].name

    def ranges_with_dist(self) -> list[str]:
        """Key paths of the inputs with a distribution (uncertain when a run asks for it), sorted."""
        return dist_inputs(self)

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



# ------------------------------------------------------------ validation


def _plain_at(plain: Any, key: str) -> Any:
    """The value at a key path of a scenario's plain data (a sourced entry's value); None where there is none."""
    node = plain
    for part in keys.parse(key):
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node.get("value") if isinstance(node, dict) else node


def _drop_correlations(plain: dict, old: Scenario, ranges: Mapping[str, InputRange]) -> None:
    """A copy's correlations without those naming an input that lost its distribution (a value changed in Python
    fixes the input: it no longer moves with others)."""
    if "correlations" not in plain:
        return
    kept_dist = {k for k, r in ranges.items() if r.dist is not None}
    lost = set(old.ranges_with_dist()) - kept_dist
    if lost:
        plain["correlations"] = [c for c in plain["correlations"] if not set(c.get("between", ())) & lost]


def _kept_sources(old: Scenario, new: Scenario) -> Scenario:
    """``new`` with the sources of the inputs that kept their values: a changed value loses its old source."""
    def keep(key: str, mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> bool:
        return theirs.get(key) != mine[key] or new.value_at(key) == old.value_at(key)

    kept = {key: note for key, note in new.sources.items() if keep(key, new.sources, old.sources)}
    dated = {key: when for key, when in new.source_dates.items() if keep(key, new.source_dates, old.source_dates)}
    ranged = {key: r for key, r in new.ranges.items() if keep(key, new.ranges, old.ranges)}
    if len(kept) == len(new.sources) and len(dated) == len(new.source_dates) and len(ranged) == len(new.ranges):
        return new
    return BaseModel.model_copy(new, update={"sources": FrozenDict(kept), "source_dates": FrozenDict(dated),
                                             "ranges": FrozenDict(ranged)})


def scenario_from_dict(data: dict[str, Any], source: str = "<scenario>", **provenance: Any) -> Scenario:
    """Validate a scenario given as nested dicts (as parsed from TOML): every way to a Scenario comes here.

    ``provenance``: ``path`` (default: ``source``), ``digest``, ``sources`` (more sources by key path, e.g. of a
    copy) and ``loaded`` (default: this scenario's own fingerprint).
    """
    if not isinstance(data, Mapping):
        raise InputError(source, [Problem("", "a table of the scenario's keys (a dict)", data)])
    deep = too_deep(data)
    if deep is not None:
        raise InputError(source, [Problem(deep, f"expected tables and lists nested at most {MAX_DEPTH} deep",
                                          has_value=False)])
    sources: dict[str, str] = {}
    dates: dict[str, Date] = {}
    ranges: dict[str, InputRange] = {}
    stripping: list[Problem] = []
    plain = _strip_sources(data, "", sources, stripping, dates, ranges)
    for key, note in (provenance.pop("sources", None) or {}).items():
        trouble = text_problem(note) if isinstance(note, str) else "text in quotes"
        if trouble:
            stripping.append(Problem(keys.join(key, "source"), trouble, note))
        sources.setdefault(key, note)
    for key, when in (provenance.pop("source_dates", None) or {}).items():
        if not isinstance(when, Date) or isinstance(when, datetime):
            stripping.append(Problem(keys.join(key, "date"), "a date such as 2025-07-31", when))
        else:
            dates.setdefault(key, when)
    for key, r in (provenance.pop("ranges", None) or {}).items():
        if not isinstance(r, InputRange):
            stripping.append(Problem(key, "a range (low, high, dist)", r))
        else:
            ranges.setdefault(key, r)
    try:
        scenario = Scenario.model_validate(plain)
    except ValidationError as exc:
        errors = exc.errors()
        # a list whose item is wrong is also reported "too short" (pydantic counts the valid items): the item's
        # own problem says it
        errors = [e for e in errors if not (e.get("type") == "too_short" and any(
            len(o.get("loc", ())) > len(e.get("loc", ())) and tuple(o["loc"][:len(e["loc"])]) == tuple(e["loc"])
            for o in errors))]
        raise InputError(source, stripping + [problem(err) for err in errors]) from None
    if stripping:
        raise InputError(source, stripping)
    problems = list(cross_checks(scenario)) + list(_hindsight(scenario, dates)) + list(range_checks(scenario, ranges))
    if problems:
        raise InputError(source, problems)
    provenance.setdefault("path", source)  # the name messages use: the file, or what stands for it
    scenario = BaseModel.model_copy(scenario, update={"sources": FrozenDict(sources),
                                                      "source_dates": FrozenDict(dates),
                                                      "ranges": FrozenDict(ranges), **provenance})
    problems = list(correlation_checks(scenario)) + list(_variant_checks(scenario))
    if problems:
        raise InputError(source, problems)
    if scenario.loaded is None:
        scenario = BaseModel.model_copy(scenario, update={"loaded": scenario.fingerprint()})
    return scenario


def _variant_checks(s: Scenario) -> Iterator[Problem]:
    """Each variant's name unique, and no input changed twice in one variant.  (Whether its changes make a valid
    scenario is checked where variants are used, :meth:`Scenario.check_variants`: a copy changed in Python that
    reshapes what a variant changes stays usable for everything else.)"""
    seen: set[str] = set()
    for i, v in enumerate(s.variants):
        if v.name in seen:
            yield Problem(f"variants[{i}].name", "a name not used by another variant", v.name)
        seen.add(v.name)
        inputs = [c.input for c in v.changes]
        for j, key in enumerate(inputs):
            if key in inputs[:j]:
                yield Problem(f"variants[{i}].changes[{j}].input", "an input not changed twice in one variant", key)


def _strip_sources(node: Any, path: str, sources: dict[str, str], problems: list[Problem],
                   dates: dict[str, Date], ranges: dict[str, InputRange]) -> Any:
    """Replace ``{value = x, source = "..."}`` by ``x``, recording the source (and a date, a range) by key path;
    check every text.

    No table of the schema has a key ``value``, so any table with one is a sourced number.  Every string --
    plain, the ``value`` of a sourced entry, a source, a key -- meets :func:`text_problem` here, the one
    check of text whatever form it is written in.
    """
    if isinstance(node, dict):
        if "value" in node:
            for extra in sorted(set(node) - {"value", "source", "date", *RANGE_KEYS}, key=str):
                problems.append(Problem(keys.join(path, str(extra)), "no such key: a sourced number has only "
                                        "'value', 'source', 'date', 'low', 'high' and 'dist'", has_value=False))
            _strip_range(node, path, problems, ranges)
            if "date" in node:
                when = node["date"]
                if isinstance(when, Date) and not isinstance(when, datetime):
                    dates[path] = when
                else:
                    problems.append(Problem(keys.join(path, "date"), "a date such as 2025-07-31 (when the source "
                                            "was published)", when))
            if "source" in node:
                if isinstance(node["source"], str):
                    sources[path] = _strip_sources(node["source"], keys.join(path, "source"), sources, problems,
                                                  dates, ranges)
                else:
                    problems.append(Problem(keys.join(path, "source"), "text in quotes", node["source"]))
            return _strip_sources(node["value"], path, sources, problems, dates, ranges)
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                problems.append(Problem(path or "(top level)", f"keys that are text, got {key!r}", has_value=False))
                continue
            if CONTROL.search(key):
                problems.append(Problem(keys.join(path, key), "a name without control characters",
                                        has_value=False))
            out[key] = _strip_sources(value, keys.join(path, key), sources, problems, dates, ranges)
        return out
    if isinstance(node, (list, tuple)):
        return [_strip_sources(v, keys.join(path, i), sources, problems, dates, ranges) for i, v in enumerate(node)]
    if isinstance(node, str):
        trouble = text_problem(node)
        if trouble:
            problems.append(Problem(path, trouble, node) if len(node) <= MAX_TEXT else
                            Problem(path, f"expected {trouble}", has_value=False))
    return node


def _strip_range(node: dict, path: str, problems: list[Problem], ranges: dict[str, InputRange]) -> None:
    """A sourced number's ``low``, ``high`` and ``dist``: both ends or neither, numbers, a known distribution."""
    if not any(k in node for k in RANGE_KEYS):
        return
    ends = {}
    for end in ("low", "high"):
        if end not in node:
            other = "high" if end == "low" else "low"
            problems.append(Problem(keys.join(path, end), f"expected a {end} beside the {other} (a range has both "
                                    "ends)", has_value=False))
        elif not is_number(node[end]) or not math.isfinite(node[end]):
            problems.append(Problem(keys.join(path, end), "a finite number", node[end]))
        else:
            ends[end] = float(node[end])
    dist = node.get("dist")
    if dist is not None and dist not in DISTS:
        close = difflib.get_close_matches(str(dist), DISTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(Problem(keys.join(path, "dist"), f"one of {', '.join(DISTS)}{hint}", dist))
        return
    if len(ends) == 2:
        ranges[path] = InputRange(ends["low"], ends["high"], dist)


# ------------------------------------------------------------ cross checks

ECONOMIC = ("revenue", "agi", "events", "market")  # tables of economic inputs (and each party's discount rate)


def is_economic(key: str) -> bool:
    """Whether an input is economic (the world and how it is valued), not a deal term: it may use only what was
    known at the valuation date."""
    parts = keys.parse(key) if key else []
    if not parts:
        return False
    return parts[0] in ECONOMIC or (parts[0] == "parties" and parts[-1] == "discount_rate")


def _hindsight(s: Scenario, dates: Mapping[str, Date]) -> Iterator[Problem]:
    """Economic inputs whose source post-dates the valuation date, and marks from its future."""
    t0 = s.simulation.valuation_date
    for key, when in sorted(dates.items()):
        if when > t0 and is_economic(key):
            yield Problem(keys.join(key, "date"), f"a source dated on or before the valuation date {t0}: an economic "
                          "input may use only what was known then (a back-test compares with later facts; terms "
                          "agreed later belong in structures, with `agreed`)", when)
    for i, mark in enumerate(s.market.marks if s.market is not None else ()):
        if mark.date > t0:
            yield Problem(f"market.marks[{i}].date", f"a mark known on or before the valuation date {t0} (a later "
                          "value is hindsight: test against it, do not calibrate to it)", mark.date)


def cross_checks(s: Scenario) -> Iterator[Problem]:
    """Checks that need the whole scenario: names, references, cycles, dates."""
    t0, horizon = s.simulation.valuation_date, s.simulation.horizon
    parties = set(s.parties)
    events = set(BUILTIN_EVENTS) | set(s.events)
    for name in s.events:
        if name in RESERVED_NAMES or not IDENTIFIER.fullmatch(name):
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
    yield from _market_checks(s)


def all_clauses(s: Scenario) -> Iterator[tuple[str, Any]]:
    """Every clause of the scenario with its key path."""
    for i, st in enumerate(s.structures):
        for j, clause in enumerate(st.clauses):
            yield f"structures[{i}].clauses[{j}]", clause
    for j, clause in enumerate(s.common_clauses):
        yield f"common_clauses[{j}]", clause


def _market_checks(s: Scenario) -> Iterator[Problem]:
    """Every risk class a flow is in has a rate; marks have distinct names."""
    market = s.market
    if market is None:
        for key, clause in all_clauses(s):
            if clause.risk is not None:
                yield Problem(f"{key}.risk", "no risk class without a [market] table giving each class's rate "
                              "(risk classes price the market view)", clause.risk)
        return
    classes = sorted(market.rates)
    if market.company_class not in market.rates:
        yield Problem("market.company_class", f"a risk class with a rate in market.rates, one of {classes}",
                      market.company_class)
    for key, clause in all_clauses(s):
        if kind_of(clause).roles[0] is None and clause.risk is None:
            continue  # own value: not a flow of the market view
        wanted = risk_class(clause)
        if wanted not in market.rates:
            if clause.risk is not None:
                yield Problem(f"{key}.risk", f"a risk class with a rate in market.rates, one of {classes}", wanted)
            else:
                yield Problem(key, f"a rate for risk class {wanted!r} (the default of {clause.type} clauses) in "
                              f"market.rates, which has {classes}; or a 'risk' key naming one of them",
                              has_value=False)
    seen: dict[str, int] = {}
    for i, mark in enumerate(market.marks):
        if mark.name in seen:
            yield Problem(f"market.marks[{i}].name", "a name not used by another mark", mark.name)
        seen[mark.name] = i


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
    kind = kind_of(c)
    for role in kind.roles:
        who = getattr(c, role) if role is not None else None
        if who is not None and who not in parties:
            yield Problem(f"{key}.{role}", f"a party, one of {sorted(parties)}", who)
    for which in ("start", "end"):
        for k, term in enumerate(getattr(c, which, None) or []):
            where = f"{key}.{which}" if len(getattr(c, which)) == 1 else f"{key}.{which}[{k}]"
            if isinstance(term, str) and term not in events and term not in TRIGGER_WORDS:
                yield Problem(where, f"a date or one of {sorted(set(TRIGGER_WORDS) | events)}", term)
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
    yield from kind.checks(c, key, CheckContext(t0, horizon))


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

