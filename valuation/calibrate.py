"""Calibration to a market mark: solve one input so that the model's value of the company meets the mark.

Every trial value is simulated on the same random numbers (the same seed and paths: common random numbers), so
the implied value is a smooth function of the input and a bracketing root finder (Brent) converges on it.  The
root's standard error comes from the delta method: the standard error of the implied value at the root over
the slope of the implied value in the input (a central difference, on the same random numbers).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel
from scipy.optimize import brentq

from valuation import keys
from valuation.errors import InputError, Problem
from valuation.scenario import Scenario
from valuation.scenario.base import thawed
from valuation.scenario.ranges import bounds
from valuation.stats.catalogue import Z95

Z_ROOT = 1e-7  # the root finder's tolerance, relative to the input's scale (far below its standard error)


@dataclass(frozen=True)
class Calibration:
    """The outcome of :func:`calibrate`.

    ``value``: the input's calibrated value, ``se`` its standard error (delta method); ``implied`` and
    ``implied_se``: the model's company value at the root (it meets ``mark_value`` to the root finder's
    tolerance); ``slope``: d(company value) / d(input) at the root; ``low``/``high``: the range searched, with
    the implied values at its ends; ``scenario``: the calibrated scenario (the input's new value carries the
    source "calibrated to <mark>"); ``evaluations``: runs made.
    """

    key: str
    mark: str
    mark_value: float
    original: float
    value: float
    se: float
    implied: float
    implied_se: float
    slope: float
    low: tuple[float, float]
    high: tuple[float, float]
    paths: int
    seed: int
    evaluations: int
    scenario: Scenario

    def lines(self) -> list[str]:
        """What ``valuation calibrate`` prints."""
        return [f"{self.key}: {self.original:g} -> {self.value:.6g} (SE {self.se:.3g}; 95% interval "
                f"{self.value - Z95 * self.se:.6g} to {self.value + Z95 * self.se:.6g})",
                f"company value at the root: {self.implied:,.2f} USD bn (SE {self.implied_se:.2f}) against mark "
                f"{self.mark!r} of {self.mark_value:,.2f} USD bn",
                f"slope: {self.slope:,.4g} USD bn per unit of {self.key}; searched {self.low[0]:g} (implied "
                f"{self.low[1]:,.1f}) to {self.high[0]:g} (implied {self.high[1]:,.1f}); {self.evaluations} runs of "
                f"{self.paths:,} paths, seed {self.seed}, common random numbers"]


def calibrate(scenario: Scenario, vary: str, mark: str, *, paths: int | None = None, seed: int | None = None,
              between: tuple[float, float] | None = None, threads: int | None = None) -> Calibration:
    """Solve the input at key path ``vary`` so that ``result.company_value()`` meets market mark ``mark``.

    Parameters
    ----------
    scenario
        A scenario with a ``[market]`` table holding the mark.
    vary
        The key path of a number (``"revenue.exit_multiple"``, ``"market.rates.equity"``,
        ``"revenue.agi_growth_uplift"``).
    mark
        The name of one of ``market.marks``.
    paths, seed
        Of every run (default: the scenario's).
    between
        The range to search (default: the input's allowed range, see :func:`search_range`).

    Raises
    ------
    InputError
        No mark of that name, an input that is not a number, or no root in the range (with the implied values at
        both ends).
    """
    from valuation import arguments
    from valuation.api import simulate

    if not isinstance(scenario, Scenario):
        raise arguments.ArgumentTypeError("calibrate()", [Problem("scenario", "a Scenario (load_scenario(...))",
                                                                  scenario)])
    for name, value in (("vary", vary), ("mark", mark)):
        if not isinstance(value, str):
            raise arguments.ArgumentTypeError("calibrate()", [Problem(name, "text", value)])
    if paths is not None:
        paths = arguments.count("calibrate()", "paths", paths, 2)
    if seed is not None:
        seed = arguments.count("calibrate()", "seed", seed, 0, 2**63 - 1)
    if between is not None:
        lo_hi = tuple(float(x) for x in between) if isinstance(between, (tuple, list)) and len(between) == 2 \
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in between) else None
        if lo_hi is None or not (math.isfinite(lo_hi[0]) and math.isfinite(lo_hi[1]) and lo_hi[0] < lo_hi[1]):
            raise InputError("calibrate()", [Problem("between", "two finite numbers, the lower first", between)])
        between = lo_hi
    where = scenario.path or "<scenario>"
    if scenario.market is None:
        raise InputError(where, [Problem("market", "a [market] table with rates and marks to calibrate to",
                                         has_value=False)])
    marks = {m.name: m for m in scenario.market.marks}
    if mark not in marks:
        raise InputError("", [Problem("--mark", f"one of the scenario's marks {sorted(marks)}", mark)])
    original = scenario.value_at(vary)
    if isinstance(original, bool) or not isinstance(original, (int, float)):
        what = "a table or list" if isinstance(original, (dict, tuple, list, BaseModel)) else \
            "no input" if original is None else f"{type(original).__name__} {original!r}"
        raise InputError("", [Problem("--vary", f"the key path of a number of the scenario (e.g. "
                                      f"revenue.exit_multiple), not {what}", vary)])
    target = marks[mark].equity_value
    paths = scenario.simulation.paths if paths is None else paths
    seed = scenario.simulation.seed if seed is None else seed
    lo, hi = between if between is not None else search_range(scenario, vary, float(original))
    runs = {"n": 0}

    def implied(x: float) -> tuple[float, float]:
        variant = scenario.with_values({vary: float(x)})
        runs["n"] += 1
        table = simulate(variant, paths=paths, seed=seed, threads=threads, keep_paths=False).company_value()
        return float(table.loc["model", "value"]), float(table.loc["model", "se"])

    v_lo, v_hi = implied(lo)[0], implied(hi)[0]
    if not (v_lo - target) * (v_hi - target) <= 0:
        raise InputError(where, [Problem(vary, f"a value whose implied company value meets mark {mark!r} "
                                         f"({target:,.1f} USD bn), but none lies in {lo:g} to {hi:g}: the implied "
                                         f"value is {v_lo:,.1f} at {lo:g} and {v_hi:,.1f} at {hi:g} (give another "
                                         "range, or vary another input)", has_value=False)])
    scale = max(abs(lo), abs(hi), 1e-12)
    root = brentq(lambda x: implied(x)[0] - target, lo, hi, xtol=Z_ROOT * scale, rtol=4 * np.finfo(float).eps)
    value, value_se = implied(root)
    step = 1e-3 * max(abs(root), 1e-3 * scale)
    up, down = min(root + step, hi), max(root - step, lo)
    slope = (implied(up)[0] - implied(down)[0]) / (up - down)
    se = value_se / abs(slope) if slope != 0 else math.inf
    note = (f"calibrated to {mark} ({marks[mark].label or mark}, {target:g} USD bn on {marks[mark].date}): "
            f"{paths:,} paths, seed {seed}, SE {se:.3g}; was {original:g}")
    calibrated = scenario.with_values({vary: {"value": float(root), "source": note, "date": marks[mark].date}})
    return Calibration(key=vary, mark=mark, mark_value=target, original=float(original), value=float(root), se=se,
                       implied=value, implied_se=value_se, slope=slope, low=(lo, v_lo), high=(hi, v_hi), paths=paths,
                       seed=seed, evaluations=runs["n"], scenario=calibrated)


def search_range(scenario: Scenario, key: str, value: float) -> tuple[float, float]:
    """Where :func:`calibrate` looks by default: the input's allowed range (its schema bounds; an open bound a
    hair inside), each unbounded side ten times the input's size (at least 10) from it."""
    lo, hi, open_lo, open_hi = bounds(scenario, key)
    size = 10.0 * max(abs(value), 1.0)
    lo = value - size if lo is None else lo
    hi = value + size if hi is None else hi
    nudge = 1e-6 * max(abs(hi - lo), 1e-9)
    return (lo + nudge if open_lo else lo), (hi - nudge if open_hi else hi)


# ------------------------------------------------------------------ writing


def scenario_toml(scenario: Scenario, header: str = "") -> str:
    """A scenario as a TOML file that loads back to it: every given input, each with its source, its date and its
    range."""
    import tomli_w

    plain = thawed(scenario.model_dump(by_alias=True, exclude_unset=True))
    for key in sorted(set(scenario.sources) | set(scenario.source_dates) | set(scenario.ranges),
                      key=lambda k: -len(keys.parse(k))):
        _attach(plain, keys.parse(key), scenario.sources.get(key), scenario.source_dates.get(key),
                scenario.ranges.get(key))
    text = tomli_w.dumps(plain, multiline_strings=False)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return ("\n".join(lines) + "\n\n" if lines else "") + text


def _attach(plain: Any, parts: list[str | int], source: str | None, when: Date | None, span: Any = None) -> None:
    """Write ``{value, source, date, low, high, dist}`` at a key path of a dumped scenario."""
    node = plain
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and \
                part < len(node):
            node = node[part]
        else:
            return
    last = parts[-1]
    if not (isinstance(node, dict) and last in node or isinstance(node, list) and isinstance(last, int)
            and last < len(node)):
        return
    value = node[last]
    if isinstance(value, (dict, list)):
        return
    node[last] = {"value": value, **({"source": source} if source else {}), **({"date": when} if when else {}),
                  **(span.as_dict() if span is not None else {})}


def check_output(out: str | Path, never: str | Path | None = None) -> Path:
    """Where a calibrated scenario may go: a new ``.toml`` in an existing folder, never ``never`` (the input)."""
    out = Path(out)
    if never is not None and (out.resolve() == Path(never).resolve() or
                              out.exists() and os.path.samefile(out, never)):
        raise InputError("", [Problem("--out", "a new file, not the input scenario (calibration never edits it)",
                                      str(out))])
    if out.suffix.lower() != ".toml":
        raise InputError("", [Problem("--out", "a path ending in .toml", str(out))])
    if not out.parent.is_dir():
        raise InputError("", [Problem("--out", "a path in an existing folder", str(out))])
    return out


def write_scenario(scenario: Scenario, out: Path, header: str, *, never: Path | None = None) -> Path:
    """Write ``scenario`` to ``out`` whole or not at all (a temporary file renamed over it); never onto ``never``
    (the input file)."""
    out = check_output(out, never)
    text = scenario_toml(scenario, header)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["Calibration", "calibrate", "check_output", "scenario_toml", "search_range", "write_scenario"]
