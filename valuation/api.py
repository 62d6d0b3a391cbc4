"""The Python entry points: :func:`simulate` (a path range of a scenario) and :func:`merge` (adjacent ranges)."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np

from models.rng import key_from_seed
from valuation import arguments, environment
from valuation.engine.compile import PV_LIMIT, compile_scenario
from valuation.engine.run import Chunk, Runner, warm_up
from valuation.engine.sampling import SAMPLERS
from valuation.errors import InputError, Problem
from valuation.results import SimulationResult, year_ends
from valuation.scenario import MAX_PATHS, Scenario, load_scenario
from valuation.stats.accumulate import KeptPartial, Layout, StreamedPartial, merged_partials

REVENUE_SAMPLE = 2_000  # paths whose whole revenue path is kept (for the revenue fan)
REVENUE_BYTES = 128 * 2**20  # ... fewer on a long fine grid (a daily one over decades), within this memory
KEEP_LIMIT = 2**30  # bytes of per-path PVs up to which keep_paths=None keeps them (10M paths x 20 PVs do not)
MAX_FIRST_PATH = 2**62  # path numbers are 64-bit counters


def simulate(
    scenario: Scenario | str | Path,
    paths: int | None = None,
    seed: int | np.random.SeedSequence | None = None,
    *,
    threads: int | None = None,
    chunk_size: int = 65_536,
    progress: Callable[[int], None] | None = None,
    keep_paths: bool | None = None,
    baseline: str | None = None,
    first_path: int = 0,
    sampling: str = "pseudo",
    uncertain: bool | None = None,
    target_se: float | None = None,
    target_rel: float | None = None,
    max_paths: int | None = None,
    outputs: Sequence[Sequence[str]] | None = None,
) -> SimulationResult:
    """Run the Monte Carlo: every structure, every party, on the same paths.

    Parameters
    ----------
    scenario
        A :class:`Scenario` or the path of a scenario file.
    paths
        Number of paths (default: the scenario's ``simulation.paths``).
    seed
        Non-negative integer seed, or a ``numpy.random.SeedSequence`` (default: the scenario's
        ``simulation.seed``).  The same seed gives the same numbers, bit for bit, for any ``threads``,
        ``chunk_size`` and split into path ranges.
    threads
        Worker threads (default: numba's default, all cores).
    chunk_size
        Paths per chunk; chunks drive ``progress``.
    progress
        Called with the number of paths completed after each chunk.
    keep_paths
        True keeps every path's PVs and drivers (``result.pvs``, exact percentiles); False streams: statistics
        are folded chunk by chunk and memory stays flat (exact means and standard errors, percentiles within
        ``result.quantile_error``, the first 1,000 paths in ``result.head()``).  Default: keep them when
        their PVs take at most :data:`KEEP_LIMIT` bytes.
    baseline
        Structure the others are compared with (default: the scenario's).  A streaming run can only compare
        with this one.
    first_path
        Run paths ``first_path .. first_path + paths - 1``: ranges of one run, computed apart (on other
        machines, in batches), that :func:`merge` joins into the run over their union, bit for bit.
    sampling
        Where the random numbers come from (:data:`valuation.engine.sampling.SAMPLERS`; ``"pseudo"``).
    uncertain
        True draws every input that has a distribution (``dist``) once per path, correlated as the scenario's
        ``[[correlations]]`` say (:mod:`valuation.engine.uncertain`); False holds every input at its value
        (bit for bit the run without distributions).  Default: the scenario's ``simulation.uncertain``.
    target_se, target_rel
        Auto-stop: run batches of paths until every output's standard error is at most ``target_se`` (USD bn)
        or ``target_rel`` times the size of its mean (both given: either suffices).  ``paths`` is then the first
        batch (default 10,000); each next batch is sized from the precision reached (to 110% of the paths the
        worst output needs, at least a quarter more, whole blocks of 1,024).  Paths are prefix-stable, so the
        result is, bit for bit, the fixed run of the paths it stopped at.  ``result.stop`` says whether the
        targets were met, the paths used and the precision reached.
    max_paths
        Auto-stop's limit (default 10,000,000): it stops there, targets met or not.
    outputs
        What auto-stop watches (default: every structure x party mean): ``(structure, party)`` for a mean,
        ``(structure, party, "diff")`` for the mean difference from the baseline, path by path.

    Returns
    -------
    SimulationResult
    """
    where = "simulate()"
    if target_se is not None or target_rel is not None or max_paths is not None or outputs is not None:
        return _auto_stop(scenario, paths, seed, threads=threads, chunk_size=chunk_size, progress=progress,
                          keep_paths=keep_paths, baseline=baseline, first_path=first_path, sampling=sampling,
                          uncertain=uncertain, target_se=target_se, target_rel=target_rel, max_paths=max_paths,
                          outputs=outputs)
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(arguments.path(where, "scenario", scenario, "a Scenario, or the path of a .toml "
                                                "scenario or an .xlsx report"))
    scenario = scenario.checked()  # a scenario built in Python is validated like a file
    paths = arguments.count(where, "paths", scenario.simulation.paths if paths is None else paths, 1, MAX_PATHS)
    seed = scenario.simulation.seed if seed is None else seed
    if not isinstance(seed, np.random.SeedSequence):
        seed = arguments.count(where, "seed", seed, 0, 2**63 - 1)
    chunk_size = arguments.count(where, "chunk_size", chunk_size, 1)
    first_path = arguments.count(where, "first_path", first_path, 0, MAX_FIRST_PATH)
    if threads is not None:
        threads = arguments.count(where, "threads", threads, 1, numba.config.NUMBA_NUM_THREADS)
    progress = arguments.optional_callable(where, "progress", progress, "a function called with the number of "
                                           "paths done after each chunk, or None")
    keep_paths = arguments.optional_flag(where, "keep_paths", keep_paths)
    uncertain = arguments.optional_flag(where, "uncertain", uncertain)
    uncertain = scenario.simulation.uncertain if uncertain is None else uncertain
    baseline = arguments.optional_name(where, "baseline", baseline, scenario.structure_names(),
                                       "a structure") or scenario.baseline
    sampler = _sampler(sampling)
    environment.check()
    compiled = compile_scenario(scenario, uncertain=uncertain)
    _warn_if_no_workbook(compiled, scenario, paths)
    keep = 8 * paths * len(compiled.views) * len(compiled.structures) * len(compiled.parties) <= KEEP_LIMIT \
        if keep_paths is None else keep_paths
    if keep:
        _check_memory(paths, compiled)
    key, ss = key_from_seed(seed)
    compile_seconds = warm_up(compiled, sampler.code)
    runner = Runner(compiled, key, sampler.code, threads=threads, chunk_size=chunk_size)
    layout = _layout(compiled, baseline)
    partial = KeptPartial(layout, first_path, paths) if keep else \
        StreamedPartial(layout, first_path, paths, year_ends(scenario)[1], runner.chunk)
    start = time.perf_counter()
    runner.run(_Checked(partial, scenario.path or "<scenario>", compiled), first_path, paths, progress)
    return SimulationResult(
        scenario=scenario, structures=compiled.structures, parties=compiled.parties,
        seed=None if isinstance(seed, np.random.SeedSequence) else int(seed), entropy=ss.entropy,
        run_seconds=time.perf_counter() - start, compile_seconds=compile_seconds,
        threads=threads or numba.get_num_threads(), partial=partial, compiled=compiled, fits=compiled.fits,
        baseline=baseline, first_path=first_path, sampler=sampler, seed_sequence=ss)


AUTO_FIRST = 10_000  # auto-stop's first batch, unless paths says otherwise
AUTO_MAX = 10_000_000  # auto-stop's limit, unless max_paths says otherwise
AUTO_BLOCK = 1024  # batches are whole blocks of paths


def _auto_stop(scenario: Any, paths: int | None, seed: Any, *, target_se: Any, target_rel: Any, max_paths: Any,
               outputs: Any, progress: Any, keep_paths: Any, first_path: int, **options: Any) -> SimulationResult:
    """Batches of paths until every output meets its target (see :func:`simulate`)."""
    where = "simulate()"
    if target_se is None and target_rel is None:
        raise InputError("", [Problem("target_se", "a target for auto-stop: target_se (USD bn) or target_rel (a "
                                      "fraction of each mean), with max_paths or outputs", has_value=False)])
    for name, value, most in (("target_se", target_se, math.inf), ("target_rel", target_rel, 1.0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or
                                  not math.isfinite(value) or not 0 < value <= most):
            raise InputError("", [Problem(name, "a positive number" + (" at most 1 (a fraction of each mean's "
                                                                        "size: 0.001 is 0.1%)" if most == 1 else ""),
                                          value)])
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(arguments.path(where, "scenario", scenario, "a Scenario, or the path of a .toml "
                                                "scenario or an .xlsx report"))
    scenario = scenario.checked()
    limit = arguments.count(where, "max_paths", AUTO_MAX if max_paths is None else max_paths, 1, MAX_PATHS)
    first = arguments.count(where, "paths", min(AUTO_FIRST, limit) if paths is None else paths, 1, limit)
    watched = _watched(scenario, outputs)
    keep_paths = arguments.optional_flag(where, "keep_paths", keep_paths)
    if keep_paths is None:  # one mode for every batch, so that they merge: kept if the limit's PVs fit
        n_pv = len(scenario.structures) * len(scenario.parties) * (2 if scenario.market is not None else 1)
        keep_paths = 8 * limit * n_pv <= KEEP_LIMIT
    parts: list[SimulationResult] = []
    done, batch, batches = 0, first, 0
    while True:
        batches += 1
        offset = done

        def moved(n: int, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + n)

        parts.append(simulate(scenario, paths=batch, seed=seed, first_path=first_path + done, keep_paths=keep_paths,
                              progress=moved, **options))
        done += batch
        result = merge(parts) if len(parts) > 1 else parts[0]
        report = _precision(result, watched, target_se, target_rel)
        if report["met"] or done >= limit:
            break
        need = max(r["needed"] for r in report["outputs"])
        want = max(math.ceil(1.1 * need * done) - done, math.ceil(done / 4))
        batch = min(-(-want // AUTO_BLOCK) * AUTO_BLOCK, limit - done)
        parts = [result]  # merged so far (merging again is a fixed-order fold of the same blocks)
    result.stop = {"met": report["met"], "paths": done, "batches": batches,
                   "target_se": target_se, "target_rel": target_rel, "max_paths": limit, "worst": report["worst"],
                   "outputs": report["outputs"]}
    return result


def _watched(scenario: Scenario, outputs: Any) -> list[tuple[str, str, str]]:
    structures, parties = scenario.structure_names(), scenario.party_names()
    if outputs is None:
        return [(s, p, "mean") for s in structures for p in parties]
    if isinstance(outputs, str) or not isinstance(outputs, Sequence) or not outputs:
        raise arguments.ArgumentTypeError("simulate()", [Problem("outputs", "a list of (structure, party) or "
                                                                 "(structure, party, 'diff')", outputs)])
    out = []
    for item in outputs:
        ok = isinstance(item, (tuple, list)) and len(item) in (2, 3) and all(isinstance(x, str) for x in item)
        if not ok or item[0] not in structures or item[1] not in parties or (len(item) == 3 and item[2] != "diff"):
            raise InputError("", [Problem("outputs", f"(structure, party) or (structure, party, 'diff') with a "
                                          f"structure among {structures} and a party among {parties}", item)])
        out.append((item[0], item[1], "diff" if len(item) == 3 else "mean"))
    return out


def _precision(result: SimulationResult, watched: list[tuple[str, str, str]], target_se: Any,
               target_rel: Any) -> dict[str, Any]:
    """Each watched output's mean, standard error and target, whether all are met, and the worst."""
    summary = result.summary()
    rows = []
    for s, p, what in watched:
        row = summary.loc[(s, p)]
        mean, se = (row["mean"], row["se"]) if what == "mean" else (row["diff_mean"], row["diff_se"])
        targets = [t for t in (target_se, None if target_rel is None else target_rel * abs(mean)) if t is not None]
        target = max(targets)
        met = bool(se <= target)
        ratio = float(se) / float(target) if target > 0 else math.inf
        needed = 1.0 if met else (ratio * ratio if ratio < 1e100 else math.inf)
        rows.append({"structure": s, "party": p, "what": what, "mean": float(mean), "se": float(se),
                     "target": float(target), "met": met, "needed": needed})
    finite = [r for r in rows if math.isfinite(r["needed"])]
    worst = max(rows, key=lambda r: r["se"] / r["target"] if r["target"] > 0 else math.inf)
    for r in rows:
        if not math.isfinite(r["needed"]):  # a relative target on a mean of 0 that is not exactly 0
            r["needed"] = max([f["needed"] for f in finite] + [4.0])
    return {"met": all(r["met"] for r in rows), "outputs": rows, "worst": worst}


def merge(results: Sequence[SimulationResult]) -> SimulationResult:
    """Join results of adjacent path ranges of one run (``simulate(..., first_path=...)``).

    The results must come from the same scenario, seed, sampler and mode (kept or streaming; a streaming run
    with the same baseline); their ranges must follow one another without gap or overlap (in any order given).
    The merged result equals, bit for bit, one run over the union: ``merge([simulate(sc, paths=a, seed=s),
    simulate(sc, paths=b, seed=s, first_path=a)]).summary()`` is ``simulate(sc, paths=a + b, seed=s).summary()``.
    """
    where = "merge()"
    if isinstance(results, SimulationResult) or not isinstance(results, Sequence) or not results or \
            not all(isinstance(r, SimulationResult) for r in results):
        raise arguments.ArgumentTypeError(where, [Problem("results", "a non-empty list of SimulationResult",
                                                          results)])
    ordered = sorted(results, key=lambda r: r.first_path)
    head = ordered[0]
    for r in ordered[1:]:
        for what, a, b in (("scenario", head.scenario.fingerprint(), r.scenario.fingerprint()),
                           ("seed", _seed_identity(head), _seed_identity(r)),
                           ("sampling", head.sampler.name, r.sampler.name),
                           ("uncertain", head.uncertain, r.uncertain),
                           ("keep_paths", head.kept_paths, r.kept_paths), ("baseline", head.baseline, r.baseline)):
            if a != b and not (what == "baseline" and head.kept_paths):
                raise InputError(where, [Problem("results", f"results of one run: the same {what} in each",
                                                 has_value=False)])
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.first_path + a.paths != b.first_path:
            raise InputError(where, [Problem("results", f"adjacent path ranges, but paths {a.first_path:,}.."
                                             f"{a.first_path + a.paths - 1:,} are followed by {b.first_path:,}..",
                                             has_value=False)])
    key, _ = key_from_seed(head.seed_sequence if head.seed_sequence is not None else head.seed)
    runner = Runner(head.compiled, key, head.sampler.code)
    partial = merged_partials([r.partial for r in ordered], runner.block)
    return SimulationResult(
        scenario=head.scenario, structures=head.structures, parties=head.parties, seed=head.seed,
        entropy=head.entropy, run_seconds=sum(r.run_seconds for r in ordered),
        compile_seconds=max(r.compile_seconds for r in ordered), threads=max(r.threads for r in ordered),
        partial=partial, compiled=head.compiled, fits=head.fits, baseline=head.baseline,
        first_path=head.first_path, sampler=head.sampler, seed_sequence=head.seed_sequence)


def _seed_identity(result: SimulationResult) -> tuple:
    """What decides a run's random numbers: the SeedSequence's whole state (entropy, spawn key, pool size)."""
    ss = result.seed_sequence
    if ss is None:
        return ("seed", result.seed)
    return (repr(ss.entropy), tuple(ss.spawn_key), ss.pool_size, tuple(key_from_seed(ss)[0].tolist()))


def _sampler(sampling: Any):
    if not isinstance(sampling, str):
        raise arguments.ArgumentTypeError("simulate()", [Problem("sampling", f"one of {sorted(SAMPLERS)} (text)",
                                                                 sampling)])
    if sampling not in SAMPLERS:
        raise InputError("", [Problem("sampling", f"one of {sorted(SAMPLERS)}", sampling)])
    return SAMPLERS[sampling]


def _layout(compiled, baseline: str) -> Layout:
    return Layout(structures=compiled.structures, parties=compiled.parties, deadlines=compiled.deadlines,
                  sources=compiled.sources, flow_shape=compiled.flow_shape, n_times=len(compiled.t),
                  record=_recorded(compiled), base=compiled.structures.index(baseline), views=len(compiled.views),
                  years=len(compiled.years))


class _Checked:
    """A partial whose chunks are checked first: no non-finite (or absurd) PV is ever folded or averaged."""

    def __init__(self, partial: Any, where: str, compiled: Any):
        self.partial, self.where, self.compiled = partial, where, compiled
        self.first, self.revenue_path = partial.first, partial.revenue_path

    def buffers(self, first: int, n: int) -> dict[str, np.ndarray]:
        return self.partial.buffers(first, n)

    def add(self, chunk: Chunk) -> None:
        c = self.compiled
        _check_finite(self.where, chunk.pv, [f"{s}{'' if v == 'party' else ' (market view)'}" for v in c.views
                                             for s in c.structures], c.parties, chunk.first)
        self.partial.add(chunk)


def _warn_if_no_workbook(compiled, scenario: Scenario, paths: int) -> None:
    """Say before the run, not after it, that ``to_excel()`` will refuse this result (Excel's limits)."""
    from valuation.report import check_fits

    try:
        check_fits(compiled, scenario, paths, "to_excel()")
    except InputError as exc:
        warnings.warn(f"{exc.message()}: to_excel() will refuse this result (summary() and the per-path results "
                      "are not affected)", UserWarning, stacklevel=3)


def _recorded(compiled) -> int:
    """Paths whose revenue path is kept for the fan: REVENUE_SAMPLE, fewer on a grid too long for memory."""
    return max(1, min(REVENUE_SAMPLE, REVENUE_BYTES // (8 * len(compiled.t))))


def _check_memory(paths: int, compiled) -> None:
    """Kept paths must fit in memory; otherwise suggest the streaming mode."""
    per_path = 8 * (len(compiled.views) * len(compiled.structures) * len(compiled.parties) + len(compiled.sources)
                    + len(compiled.years) + 3) + len(compiled.deadlines)
    need = paths * per_path * 2  # results plus the summary's working copies
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        fit = int(0.8 * total / (per_path * 2))
        raise InputError("", [Problem("paths", f"at most about {fit:,} paths with every path kept: {paths:,} "
                                               f"need about {need / 2**30:.1f} GiB and this machine has "
                                               f"{total / 2**30:.1f} GiB; the streaming mode (keep_paths=False, "
                                               "`valuation run --stream`) runs any number in flat memory",
                                      paths)])


def _check_finite(where: str, pv: np.ndarray, structures: list[str], parties: list[str], first: int = 0) -> None:
    """Never average a non-finite (or absurdly large) PV: name the first such path instead.

    ``pv`` holds paths ``first, first + 1, ...``.
    """
    bad = ~(np.abs(pv) <= PV_LIMIT)  # also catches nan
    if bad.any():
        i, s, p = (int(v[0]) for v in np.nonzero(bad))
        raise InputError(where, f"PV {pv[i, s, p]:.3g} on path {first + i} for structure {structures[s]!r}, party "
                                f"{parties[p]!r} ({int(bad.sum())} values in all) is not finite or exceeds "
                                f"{PV_LIMIT:.0e} USD bn: the inputs overflow; expected smaller volatility, growth, "
                                "revenue or horizon")
