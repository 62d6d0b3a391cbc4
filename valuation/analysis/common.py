"""What every analysis shares: the statistic of a party's PV that it reads (and its standard error), the runs of
variants of one scenario on the same random numbers, and the checks of its arguments.

**Statistics.**  ``"mean"`` (the mean PV), ``"diff"`` (the mean of PV minus the baseline structure's PV, path by
path), ``"p<q>"`` (a percentile, ``q`` from 1 to 99, e.g. ``"p5"``) and ``"cvar<q>"`` (minus the mean of the
worst ``q``% of paths: a loss is positive).  A mean's standard error is the sampler's; a percentile's or a
CVaR's comes from batches: the paths cut into :data:`BATCHES` consecutive batches, the statistic of each, their
standard deviation over ``sqrt(BATCHES)`` (a percentile's spread falls as ``1 / sqrt(paths)``, so the batches'
spread scaled so is the whole run's).  The same batches give the standard error of a difference between two
variants on the same paths (a swing, a gain): computed per batch, it keeps the pairing.

**Variants.**  Every variant is a :meth:`Scenario.with_values` copy run with the same seed and paths: the same
random numbers draw by draw (each is keyed by its name, so a changed input moves no other draw), so two
variants' difference is free of most of the noise in either.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from valuation import arguments
from valuation.errors import InputError, Problem
from valuation.scenario import Scenario
from valuation.scenario.ranges import is_number
from valuation.stats.columns import Moments

BATCHES = 20  # batches for a percentile's standard error: enough degrees of freedom, each batch still large
_STATISTIC = re.compile(r"^(mean|diff|p([1-9][0-9]?)|cvar([1-9][0-9]?))$")
STATISTIC_HELP = ("mean (mean PV), diff (mean of PV minus the baseline structure's PV, path by path), p<q> (a "
                  "percentile, q from 1 to 99, e.g. p5) or cvar<q> (minus the mean of the worst q% of paths)")


@dataclass(frozen=True)
class Statistic:
    """A statistic of per-path values (see the module's notes)."""

    name: str

    @property
    def versus_baseline(self) -> bool:
        return self.name == "diff"

    @property
    def label(self) -> str:
        if self.name == "mean":
            return "mean PV"
        if self.name == "diff":
            return "mean PV minus the baseline's"
        if self.name.startswith("p"):
            return f"P{self.name[1:]} of PV"
        return f"CVaR {self.name[4:]}% of PV (a loss is positive)"

    def of(self, x: np.ndarray) -> np.ndarray:
        """The statistic of each column of ``x`` (paths along axis 0)."""
        if self.name in ("mean", "diff"):
            return np.mean(x, axis=0)
        if self.name.startswith("p"):
            return np.percentile(x, float(self.name[1:]), axis=0)
        k = max(1, math.ceil(float(self.name[4:]) / 100.0 * x.shape[0]))
        return -np.mean(np.sort(x, axis=0)[:k], axis=0)

    def with_error(self, x: np.ndarray, sampler: Any) -> tuple[np.ndarray, np.ndarray]:
        """The statistic of each column of ``x`` and its standard error."""
        value = self.of(x)
        if self.name in ("mean", "diff"):
            n = x.shape[0]
            sd = np.std(x, axis=0, ddof=1) if n > 1 else np.full(value.shape, np.nan)
            return value, np.array([sampler.standard_error(Moments(n, float(s))) for s in np.ravel(sd)]).reshape(
                value.shape)
        return value, self.batch_error(x)

    def batch_error(self, x: np.ndarray) -> np.ndarray:
        """The standard error of the statistic of each column of ``x`` from :data:`BATCHES` batches of paths."""
        n = x.shape[0]
        size = n // BATCHES
        if size < 2:
            return np.full(x.shape[1:], np.nan)
        each = np.array([self.of(x[b * size:(b + 1) * size]) for b in range(BATCHES)])
        return np.std(each, axis=0, ddof=1) / math.sqrt(BATCHES)


def statistic(where: str, value: Any, name: str = "statistic") -> Statistic:
    if not isinstance(value, str):
        raise arguments.ArgumentTypeError(where, [Problem(name, STATISTIC_HELP, value)])
    if not _STATISTIC.match(value.strip().lower()):
        raise InputError("", [Problem(name, STATISTIC_HELP, value)])
    return Statistic(value.strip().lower())


def paired_error(stat: Statistic, a: np.ndarray, b: np.ndarray, sampler: Any) -> np.ndarray:
    """The standard error of ``stat(a) - stat(b)`` for two variants on the same paths: a mean's from the
    path-by-path difference, any other statistic's from batches of both."""
    if stat.name in ("mean", "diff"):
        return stat.with_error(a - b, sampler)[1]
    n = a.shape[0]
    size = n // BATCHES
    if size < 2:
        return np.full(a.shape[1:], np.nan)
    each = np.array([stat.of(a[k * size:(k + 1) * size]) - stat.of(b[k * size:(k + 1) * size])
                     for k in range(BATCHES)])
    return np.std(each, axis=0, ddof=1) / math.sqrt(BATCHES)


def checked_scenario(where: str, scenario: Any) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario.checked()
    from valuation.scenario import load_scenario

    return load_scenario(arguments.path(where, "scenario", scenario, "a Scenario, or the path of a .toml scenario "
                                        "or an .xlsx report")).checked()


def ranged_inputs(where: str, scenario: Scenario, inputs: Any) -> list[str]:
    """The inputs to vary: the given key paths (each must have a ``low``/``high`` range, ``low < high``), or
    every input with a range."""
    ranges = scenario.ranges
    source = scenario.path or "<scenario>"
    if inputs is None:
        chosen = list(ranges)
        if not chosen:
            raise InputError(source, [Problem("ranges", "at least one input with a low/high range (e.g. `volatility = "
                                              "{ value = 0.2, low = 0.15, high = 0.3 }`)", has_value=False)])
    else:
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, Sequence) or not all(isinstance(k, str) for k in inputs):
            raise arguments.ArgumentTypeError(where, [Problem("inputs", "a list of key paths (text), or None for "
                                                              "every input with a range", inputs)])
        chosen = list(dict.fromkeys(k.strip() for k in inputs))
        problems = []
        for key in chosen:
            if key in ranges:
                continue
            value = _value_or_none(scenario, key)
            if value is None:
                problems.append(Problem(key, "is not an input of the scenario; expected the key path of an input "
                                        f"with a low/high range, one of {sorted(ranges)}", has_value=False))
            else:
                problems.append(Problem(key, "an input with a low/high range (give it low and high in the "
                                        "scenario); it has only a value", value))
        if not chosen:
            problems.append(Problem("inputs", "at least one key path", has_value=False))
        if problems:
            raise InputError(source, problems)
    empty = [Problem(k, "a range with low < high (low = high leaves nothing to vary)", ranges[k].low)
             for k in chosen if not ranges[k].low < ranges[k].high]
    if empty:
        raise InputError(source, empty)
    return chosen


def _value_or_none(scenario: Scenario, key: str) -> Any:
    try:
        value = scenario.value_at(key)
    except (KeyError, ValueError, IndexError, InputError):
        return None
    return value if is_number(value) else None


def usable_range(scenario: Scenario, key: str, cuts: dict[str, str], low: float | None = None,
                 high: float | None = None) -> Any:
    """The input's range (``low``/``high``, default its own), each end moved toward the input's value as far as
    needed for the scenario to stay valid with every other input at its value (bisection, to 1e-9 of the range);
    a cut end's reason goes into ``cuts[key]``."""
    from valuation.scenario.ranges import InputRange

    stated = scenario.ranges.get(key)
    low = stated.low if low is None else low
    high = stated.high if high is None else high
    value = float(scenario.value_at(key))
    ends = []
    for end in (low, high):
        why = _invalid(scenario, key, end)
        if why is None:
            ends.append(end)
            continue
        good, bad = min(max(value, low), high), end
        if _invalid(scenario, key, good) is not None:  # the value itself outside the range given: no way in
            raise InputError("", [Problem("between", f"a range in which the scenario is valid: {end:g} is "
                                          f"refused ({why})", [low, high])])
        for _ in range(200):
            if abs(bad - good) <= 1e-9 * (high - low):
                break
            mid = 0.5 * (good + bad)
            if _invalid(scenario, key, mid) is None:
                good = mid
            else:
                bad = mid
        ends.append(good)
        cuts[key] = "; ".join(filter(None, [cuts.get(key), f"{end:g} is refused ({why}), so {good:.10g} is "
                                                           "used"]))
    return InputRange(ends[0], ends[1], stated.dist if stated is not None else None)


def _invalid(scenario: Scenario, key: str, value: float) -> str | None:
    try:
        scenario.with_values({key: value})
    except InputError as exc:
        return "; ".join(p.render() for p in exc.problems)
    return None


def number_at(where: str, scenario: Scenario, name: str, key: Any) -> float:
    """The number at key path ``key`` (the argument ``name``), or a clear refusal."""
    from pydantic import BaseModel

    if not isinstance(key, str):
        raise arguments.ArgumentTypeError(where, [Problem(name, "a key path (text), e.g. revenue.exit_multiple", key)])
    try:
        value = scenario.value_at(key)
    except (KeyError, ValueError, IndexError, InputError):
        value = None
    if not is_number(value):
        what = "the scenario has no input there" if value is None else "not " + (
            "a table or list" if isinstance(value, (dict, tuple, list, BaseModel)) else
            f"{type(value).__name__} {value!r}")
        raise InputError("", [Problem(name, f"the key path of a number of the scenario (e.g. "
                                      f"revenue.exit_multiple); {what}", key)])
    return float(value)


def search_between(where: str, scenario: Scenario, key: str, value: float, between: Any,
                   cuts: dict[str, str] | None = None) -> tuple[float, float]:
    """The range a solve searches: ``between`` (checked), else the input's low/high range, else its allowed
    range (:func:`valuation.calibrate.search_range`); each end then moved in as far as the scenario needs to stay
    valid (the cut said in ``cuts``)."""
    from valuation.calibrate import search_range

    if between is None:
        if key in scenario.ranges and scenario.ranges[key].low < scenario.ranges[key].high:
            lo, hi = float(scenario.ranges[key].low), float(scenario.ranges[key].high)
        else:
            lo, hi = search_range(scenario, key, value)
    else:
        pair = tuple(between) if isinstance(between, (tuple, list)) and len(between) == 2 else None
        if pair is None or not all(is_number(x) for x in pair) or not (
                math.isfinite(pair[0]) and math.isfinite(pair[1]) and pair[0] < pair[1]):
            raise InputError("", [Problem("between", "two finite numbers, the lower first", between)])
        lo, hi = float(pair[0]), float(pair[1])
    used = usable_range(scenario, key, cuts if cuts is not None else {}, lo, hi)
    return float(used.low), float(used.high)


def check_term(where: str, scenario: Scenario, key: str, structures: list[str]) -> None:
    """A term a solve varies: not a run setting, and if it is a structure's, one of ``structures`` (a term of
    another structure moves nothing compared here)."""
    if key.startswith("simulation."):
        raise InputError("", [Problem("vary", "an input of the model or of a deal, not a run setting "
                                      "(simulation.*)", key)])
    names = scenario.structure_names()
    structures = list(dict.fromkeys(structures))
    match = re.match(r"^structures\[(\d+)\]", key)
    if match and int(match.group(1)) < len(names) and names[int(match.group(1))] not in structures:
        raise InputError("", [Problem("vary", f"a term of {' or '.join(structures)} (this key is one of "
                                      f"{names[int(match.group(1))]}, which the comparison does not involve), or an "
                                      "input of the model", key)])


def name_argument(where: str, name: str, value: Any, names: list[str], what: str) -> str:
    if not isinstance(value, str):
        raise arguments.ArgumentTypeError(where, [Problem(name, f"the name of {what}: one of {names}", value)])
    if value not in names:
        raise InputError("", [Problem(name, f"the name of {what}: one of {names}", value)])
    return value


def run_variant(scenario: Scenario, changes: dict[str, Any], *, paths: int, seed: int, uncertain: bool,
                threads: int | None, view: str = "party") -> Any:
    """One variant on the shared random numbers: its per-path PVs ``(paths, structures, parties)`` and the run."""
    from valuation.api import simulate

    variant = scenario.with_values(changes) if changes else scenario
    result = simulate(variant, paths=paths, seed=seed, threads=threads, keep_paths=True, uncertain=uncertain)
    return np.asarray(result.view_pvs(view)), result


def values_of(stat: Statistic, pv: np.ndarray, base: int) -> np.ndarray:
    """What the statistic reads, per path, structure and party: the PV, or its difference from the baseline's."""
    return pv - pv[:, base:base + 1, :] if stat.versus_baseline else pv


Progress = Callable[[int, int], None] | None
