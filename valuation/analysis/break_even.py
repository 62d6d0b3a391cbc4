"""Break-even (goal seek): the value of one input at which a party's statistic under one structure equals its
value under another (or a target).

Every trial value is run on the same random numbers (the same seed and paths), so the gap ``g(x) = stat(PV under
S) - stat(PV under B) - target`` is a smooth function of the input with the noise of a difference on shared
paths, and a bracketing root finder (Brent) converges on it.  The root's standard error comes from the delta
method: the gap's standard error at the root (paired: both structures on the same paths) over the gap's slope
there (a central difference on the same random numbers).  A re-run at the root on **other** random numbers (the
next seed) confirms it: the gap there should be within a few of its standard errors of zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from scipy.optimize import brentq

from valuation import arguments
from valuation.analysis import common
from valuation.errors import InputError, Problem
from valuation.scenario import Scenario
from valuation.stats.catalogue import Z95

MAX_ITER = 200  # root-finder steps (each a run)
ROOT_TOLERANCE = 1e-9  # the root finder's tolerance, absolute and relative to the root (far below its SE)


@dataclass(frozen=True)
class BreakEven:
    """The outcome of :func:`break_even`.

    ``found``: whether the gap changes sign over the range searched; ``value`` and ``se``: the root and its
    standard error (delta method; None when not found); ``gap_se``: the gap's standard error at the root;
    ``slope``: d(gap)/d(input) there; ``low``/``high``: the range searched with the gap at each end (and its
    standard error); ``confirm``: the gap at the root re-run on the next seed and its standard error;
    ``evaluations``: runs made; ``trials``: every value tried on the run's seed with the gap there and its
    standard error, in the order tried.  The gap is the party's statistic under ``structure`` minus that under
    ``versus`` (or minus ``target`` without one).
    """

    key: str
    structure: str
    party: str
    versus: str | None
    statistic: str
    target: float
    found: bool
    value: float | None
    se: float | None
    gap_se: float | None
    slope: float | None
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    confirm: tuple[float, float] | None
    original: float
    paths: int
    seed: int
    evaluations: int
    scenario: Scenario
    trials: tuple[tuple[float, float, float], ...] = ()
    cut: str | None = None  # why the range searched was cut where the scenario stays valid (None: not cut)

    def to_excel(self, path: str | Path) -> Path:
        """Write the workbook (a Read me and the Break-even sheet: the gap at every value tried, the root
        marked); returns its path."""
        from valuation.report.analysis import write_break_even

        return write_break_even(self, arguments.path("to_excel()", "path", path, "the path of an .xlsx workbook"))

    def lines(self) -> list[str]:
        against = (f"its value under {self.versus}" + (f" plus {self.target:g} USD bn" if self.target else "")
                   if self.versus else f"{self.target:g} USD bn")
        what = f"{self.party}'s {self.label} under {self.structure}"
        head = f"break-even of {self.key} (now {self.original:g}): where {what} equals {against}"
        runs = f"{self.paths:,} paths, seed {self.seed}, {self.evaluations} runs on the same random numbers"
        note = [f"  note: the range searched is cut to where the scenario is valid: {self.cut}"] if self.cut else []
        if not self.found and self.low[1] == 0 and self.high[1] == 0:
            return [head, *note, f"  the gap is zero across {self.low[0]:g} to {self.high[0]:g}: {self.key} does "
                                 f"not move it (every value is a break-even; {runs})"]
        if not self.found:
            return [head, *note, f"  no break-even between {self.low[0]:g} and {self.high[0]:g}: the gap is "
                          f"{self.low[1]:+,.2f} (SE {self.low[2]:.2f}) at {self.low[0]:g} and {self.high[1]:+,.2f} "
                          f"(SE {self.high[2]:.2f}) at {self.high[0]:g} USD bn ({runs})"]
        assert self.value is not None and self.se is not None and self.confirm is not None
        return [head, *note,
                f"  {self.key} = {self.value:.6g} (SE {self.se:.3g}; 95% interval {self.value - Z95 * self.se:.4g} "
                f"to {self.value + Z95 * self.se:.4g}); slope {self.slope:+.4g} USD bn per unit ({runs})",
                f"  re-run at the root on the next seed: gap {self.confirm[0]:+,.3f} USD bn "
                f"(SE {self.confirm[1]:.3f}), "
                f"{self.confirm_z:.1f} SE from zero: "
                + ("confirmed" if self.confirmed else "NOT confirmed (more paths, or a gap that is not smooth)")]

    @property
    def label(self) -> str:
        """The statistic in words."""
        return common.Statistic(self.statistic).label

    @property
    def confirm_z(self) -> float:
        """How many of its standard errors the gap at the root is from zero on the next seed."""
        if self.confirm is None:
            return math.nan
        g, se = self.confirm
        return abs(g) / se if se > 0 else (0.0 if g == 0 else math.inf)

    @property
    def confirmed(self) -> bool:
        """The re-run on the next seed puts the gap within 3 standard errors of zero (and a deterministic gap
        within rounding of it)."""
        return self.confirm is not None and (self.confirm_z <= 3.0 or abs(self.confirm[0]) <= 1e-9 * max(
            1.0, abs(self.low[1]), abs(self.high[1])))


def break_even(scenario: Scenario | str | Path, vary: str, structure: str, party: str, versus: str | None = None,
               *, statistic: str = "mean", target: float = 0.0, paths: int | None = None, seed: int | None = None,
               between: tuple[float, float] | None = None, uncertain: bool | None = None,
               threads: int | None = None, progress: common.Progress = None) -> BreakEven:
    """The value of input ``vary`` at which ``party``'s statistic under ``structure`` equals its value under
    ``versus`` (or ``target``, USD bn, without one), on common random numbers.

    Parameters
    ----------
    vary
        The key path of a number (``"structures[3].clauses[0].cap"``, ``"revenue.exit_multiple"``).
    between
        The range to search (default: the input's low/high range if it has one, else its allowed range: its
        schema bounds, an unbounded side ten times its size from it).
    statistic
        As for :func:`valuation.sensitivity` (``"mean"``, ``"p<q>"``, ``"cvar<q>"``).

    Returns
    -------
    BreakEven
        ``found`` False (with the gap at both ends) when the gap does not change sign over the range.
    """
    where = "break_even()"
    scenario = common.checked_scenario(where, scenario)
    names = scenario.structure_names()
    structure = common.name_argument(where, "structure", structure, names, "a structure")
    party = common.name_argument(where, "party", party, scenario.party_names(), "a party")
    if versus is not None:
        versus = common.name_argument(where, "versus", versus, names, "a structure")
        if versus == structure:
            raise InputError("", [Problem("versus", f"a structure other than {structure!r} (the gap against "
                                          "itself is zero everywhere)", versus)])
    stat = common.statistic(where, statistic)
    if stat.versus_baseline:
        raise InputError("", [Problem("statistic", "mean, p<q> or cvar<q> (give the structure to compare with as "
                                      "versus)", statistic)])
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
        raise arguments.ArgumentTypeError(where, [Problem("target", "a finite number (USD bn)", target)])
    original = common.number_at(where, scenario, "vary", vary)
    common.check_term(where, scenario, vary, [structure, *([versus] if versus else [])])
    paths = arguments.count(where, "paths", scenario.simulation.paths if paths is None else paths, 2 * common.BATCHES)
    seed = arguments.count(where, "seed", scenario.simulation.seed if seed is None else seed, 0, 2**63 - 2)
    uncertain = arguments.optional_flag(where, "uncertain", uncertain)
    uncertain = scenario.simulation.uncertain if uncertain is None else uncertain
    cuts: dict[str, str] = {}
    lo, hi = common.search_between(where, scenario, vary, original, between, cuts)
    s_idx, v_idx = names.index(structure), (names.index(versus) if versus else None)
    p_idx = scenario.party_names().index(party)
    runs = [0]
    trials: list[tuple[float, float, float]] = []

    def gap(x: float, run_seed: int = seed) -> tuple[float, float]:
        out = _gap(x, run_seed)
        if run_seed == seed:
            trials.append((float(x), *out))
        return out

    def _gap(x: float, run_seed: int) -> tuple[float, float]:
        pv, result = common.run_variant(scenario, {vary: float(x)}, paths=paths, seed=run_seed, uncertain=uncertain,
                                        threads=threads)
        runs[0] += 1
        if progress is not None:
            progress(runs[0], 0)
        a = pv[:, s_idx, p_idx][:, None]
        value, se = stat.with_error(a, result.sampler)
        if v_idx is None:
            return float(value[0]) - target, float(se[0])
        b = pv[:, v_idx, p_idx][:, None]
        return float(value[0] - stat.of(b)[0]) - target, float(common.paired_error(stat, a, b, result.sampler)[0])

    g_lo, g_hi = gap(lo), gap(hi)
    common_fields = {"key": vary, "structure": structure, "party": party, "versus": versus, "statistic": stat.name,
                     "target": float(target), "original": original, "paths": paths, "seed": seed,
                     "low": (lo, *g_lo), "high": (hi, *g_hi), "scenario": scenario, "trials": trials,
                     "cut": cuts.get(vary)}
    if not g_lo[0] * g_hi[0] <= 0 or (g_lo[0] == 0 and g_hi[0] == 0):  # (zero at both ends: it moves nothing)
        return BreakEven(found=False, value=None, se=None, gap_se=None, slope=None, confirm=None,
                         evaluations=runs[0], **{**common_fields, "trials": tuple(trials)})
    try:
        root = brentq(lambda x: gap(x)[0], lo, hi, xtol=ROOT_TOLERANCE, rtol=ROOT_TOLERANCE, maxiter=MAX_ITER)
    except RuntimeError:  # (not converged: a range of many orders of magnitude, or a gap that jumps)
        raise InputError("", [Problem("between", f"a range the root finder can narrow in {MAX_ITER} runs: the gap "
                                      f"changes sign between {lo:g} and {hi:g} but the root was not pinned down; "
                                      "give a narrower range", [lo, hi])]) from None
    at_root = gap(root)
    step = 1e-3 * max(abs(root), abs(original), 1e-6 * (hi - lo), 1e-9)  # the root's own scale, not the range's
    up, down = min(root + step, hi), max(root - step, lo)
    slope = (gap(up)[0] - gap(down)[0]) / (up - down)
    se = at_root[1] / abs(slope) if slope != 0 else math.inf
    confirm = gap(root, seed + 1)
    return BreakEven(found=True, value=float(root), se=float(se), gap_se=at_root[1], slope=float(slope),
                     confirm=confirm, evaluations=runs[0], **{**common_fields, "trials": tuple(trials)})
