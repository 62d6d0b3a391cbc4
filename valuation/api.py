"""The Python entry point: :func:`simulate`."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from models.rng import key_from_seed
from valuation import arguments, engine, environment
from valuation.compile import PV_LIMIT, compile_scenario
from valuation.errors import InputError, Problem
from valuation.results import HEAD, SimulationResult, year_ends
from valuation.scenario import MAX_PATHS, Scenario, load_scenario
from valuation.stream import DriverTally, PVStream

REVENUE_SAMPLE = 2_000  # paths whose whole revenue path is kept (for the revenue fan)
REVENUE_BYTES = 128 * 2**20  # ... fewer on a long fine grid (a daily one over decades), within this memory
KEEP_LIMIT = 2**30  # bytes of per-path PVs up to which keep_paths=None keeps them (10M paths x 20 PVs do not)


def simulate(
    scenario: Scenario | str | Path,
    paths: int | None = None,
    seed: int | None = None,
    *,
    threads: int | None = None,
    chunk_size: int = 65_536,
    progress: Callable[[int], None] | None = None,
    keep_paths: bool | None = None,
    baseline: str | None = None,
) -> SimulationResult:
    """Run the Monte Carlo: every structure, every party, on the same paths.

    Parameters
    ----------
    scenario
        A :class:`Scenario` or the path of a scenario file.
    paths
        Number of paths (default: the scenario's ``simulation.paths``).
    seed
        Non-negative integer seed (default: the scenario's ``simulation.seed``).
        The same seed gives the same numbers, bit for bit, for any ``threads``
        and ``chunk_size``.
    threads
        Worker threads (default: numba's default, all cores).
    chunk_size
        Paths per chunk; chunks drive ``progress``.
    progress
        Called with the number of paths completed after each chunk.
    keep_paths
        True keeps every path's PVs and drivers (``result.pvs``, exact
        percentiles); False streams: statistics are folded chunk by chunk and
        memory stays flat (exact means and standard errors, percentiles within
        ``result.quantile_error``, the first 1,000 paths in ``result.head()``).
        Default: keep them when their PVs take at most :data:`KEEP_LIMIT` bytes.
    baseline
        Structure the others are compared with (default: the scenario's). A
        streaming run can only compare with this one.

    Returns
    -------
    SimulationResult
    """
    where = "simulate()"
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(arguments.path(where, "scenario", scenario, "a Scenario, or the path of a .toml "
                                                "scenario or an .xlsx report"))
    scenario = scenario.checked()  # a scenario changed in Python is validated like a file
    paths = arguments.count(where, "paths", scenario.simulation.paths if paths is None else paths, 1, MAX_PATHS)
    seed = arguments.count(where, "seed", scenario.simulation.seed if seed is None else seed, 0, 2**63 - 1)
    chunk_size = arguments.count(where, "chunk_size", chunk_size, 1)
    if threads is not None:
        threads = arguments.count(where, "threads", threads, 1, numba.config.NUMBA_NUM_THREADS)
    progress = arguments.optional_callable(where, "progress", progress, "a function called with the number of "
                                           "paths done after each chunk, or None")
    keep_paths = arguments.optional_flag(where, "keep_paths", keep_paths)
    names = scenario.structure_names()
    baseline = arguments.optional_name(where, "baseline", baseline, names, "a structure") or scenario.baseline
    environment.check()
    where = scenario.path or "<scenario>"
    compiled = compile_scenario(scenario)
    _warn_if_no_workbook(compiled, scenario, paths)
    pv_bytes = 8 * paths * len(compiled.structures) * len(compiled.parties)
    keep = pv_bytes <= KEEP_LIMIT if keep_paths is None else keep_paths
    if keep:
        _check_memory(paths, compiled)
    key, ss = key_from_seed(seed)
    compile_seconds = engine.warm_up(compiled)
    common = dict(scenario=scenario, structures=compiled.structures, parties=compiled.parties, seed=int(seed),
                  entropy=int(ss.entropy), compile_seconds=compile_seconds,
                  threads=threads or numba.get_num_threads(), fits=compiled.fits, baseline=baseline,
                  slot_time=compiled.slot_time, class_rates=compiled.class_rates, step_time=compiled.t,
                  n_paths=paths, compiled=compiled)
    start = time.perf_counter()
    if not keep:
        return _simulate_streaming(key, paths, where, chunk_size=chunk_size,
                                   progress=progress, start=start, **common)
    out = engine.simulate_arrays(compiled, key, paths, chunk_size=chunk_size, threads=threads, progress=progress,
                                 record=_recorded(compiled))
    run_seconds = time.perf_counter() - start
    _check_finite(where, out["pv"], compiled.structures, compiled.parties)
    out["pv"].flags.writeable = False  # results are evidence: views handed out cannot change them
    return SimulationResult(
        path_pvs=out["pv"], path_drivers=_drivers(compiled, out), run_seconds=run_seconds,
        cash_flows=engine.expected_flows(compiled, out["flows"]) / paths, revenue_sample=out["revenue_path"],
        **common)


def _drivers(compiled, out: dict[str, np.ndarray]) -> pd.DataFrame:
    drivers = pd.DataFrame({name: out["times"][:, i] for i, name in enumerate(compiled.sources)})
    for d, name in enumerate(compiled.deadlines):
        drivers[f"met:{name}"] = out["met"][:, d].astype(bool)
    drivers["revenue_at_horizon"] = out["revenue"]
    return drivers


def _simulate_streaming(key: np.ndarray, paths: int, where: str, *, chunk_size: int, progress, start: float,
                        **common) -> SimulationResult:
    """Chunk by chunk: fold each chunk's PVs and drivers into the statistics, keep only the first paths."""
    compiled = common["compiled"]
    S, P = len(compiled.structures), len(compiled.parties)
    base = compiled.structures.index(common["baseline"] or compiled.structures[0])
    stream = PVStream(S, P, base)
    tally = DriverTally(year_ends(common["scenario"])[1], len(compiled.deadlines))
    declared, verified = compiled.sources.index("agi_declared"), compiled.sources.index("agi_verified")
    head: dict[str, np.ndarray] = {}

    def consume(first: int, out: dict[str, np.ndarray]) -> None:
        _check_finite(where, out["pv"], compiled.structures, compiled.parties, first)
        pv = out["pv"].transpose(1, 2, 0)  # (structures, parties, paths): contiguous for a whole chunk
        stream.add(pv if pv.flags.c_contiguous else np.ascontiguousarray(pv))
        tally.add(out["times"][:, declared], out["times"][:, verified], out["met"])
        if first < HEAD:
            n = min(HEAD - first, out["pv"].shape[0])
            for name in ("pv", "times", "met", "revenue"):
                part = out[name][:n].copy()
                head[name] = part if name not in head else np.concatenate((head[name], part))

    revenue_path, flows = engine.stream_chunks(compiled, key, paths, consume, chunk_size=chunk_size,
                                               threads=common["threads"], progress=progress, record=_recorded(compiled))
    return SimulationResult(
        path_pvs=None, path_drivers=None, run_seconds=time.perf_counter() - start, stream=stream, tally=tally,
        head_pvs=head["pv"], head_drivers=_drivers(compiled, head),
        cash_flows=engine.expected_flows(compiled, flows) / paths, revenue_sample=revenue_path, **common)


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
    per_path = 8 * (len(compiled.structures) * len(compiled.parties) + len(compiled.sources) + 2) \
        + len(compiled.deadlines)
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
