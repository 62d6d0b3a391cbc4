"""The Python entry point: :func:`simulate`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from models.rng import key_from_seed
from valuation import engine
from valuation.compile import compile_scenario
from valuation.errors import InputError, Problem
from valuation.results import SimulationResult
from valuation.scenario import Scenario, load_scenario

PV_LIMIT = 1e12  # USD bn: beyond this a PV is an overflow, not a valuation
REVENUE_SAMPLE = 2_000  # paths whose whole revenue path is kept (for the revenue fan)


def simulate(
    scenario: Scenario | str | Path,
    paths: int | None = None,
    seed: int | None = None,
    *,
    threads: int | None = None,
    chunk_size: int = 65_536,
    progress: Callable[[int], None] | None = None,
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

    Returns
    -------
    SimulationResult
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    paths = scenario.simulation.paths if paths is None else paths
    seed = scenario.simulation.seed if seed is None else seed
    where = scenario.path or "<scenario>"
    _check_count("paths", paths, 1)
    _check_count("seed", seed, 0, 2**63 - 1)
    _check_count("chunk_size", chunk_size, 1)
    if threads is not None:
        _check_count("threads", threads, 1, numba.config.NUMBA_NUM_THREADS)
    compiled = compile_scenario(scenario)
    _check_memory(paths, compiled)
    key, ss = key_from_seed(seed)
    compile_seconds = engine.warm_up(compiled)
    start = time.perf_counter()
    out = engine.simulate_arrays(compiled, key, paths, chunk_size=chunk_size, threads=threads, progress=progress,
                                 record=REVENUE_SAMPLE)
    run_seconds = time.perf_counter() - start
    _check_finite(where, out["pv"], compiled.structures, compiled.parties)
    drivers = pd.DataFrame({name: out["times"][:, i] for i, name in enumerate(compiled.sources)})
    for d, name in enumerate(compiled.deadlines):
        drivers[f"met:{name}"] = out["met"][:, d].astype(bool)
    drivers["revenue_at_horizon"] = out["revenue"]
    out["pv"].flags.writeable = False  # results are evidence: views handed out cannot change them
    return SimulationResult(
        scenario=scenario, pvs=out["pv"], drivers=drivers, structures=compiled.structures,
        parties=compiled.parties, seed=int(seed), entropy=int(ss.entropy), run_seconds=run_seconds,
        compile_seconds=compile_seconds, threads=threads or numba.get_num_threads(), fits=compiled.fits,
        baseline=scenario.baseline,
        cash_flows=engine.expected_flows(compiled, out["flows"]) / paths, slot_time=compiled.slot_time,
        class_rates=compiled.class_rates, step_time=compiled.t, revenue_sample=out["revenue_path"],
    )


def _check_count(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    """A run argument (not from the scenario file): a whole number in range."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum
    if ok and (maximum is None or value <= maximum):
        return
    upper = f" and <= {maximum}" if maximum is not None else ""
    raise InputError("", [Problem(name, f"a whole number >= {minimum}{upper}", value)])


def _check_memory(paths: int, compiled) -> None:
    per_path = 8 * (len(compiled.structures) * len(compiled.parties) + len(compiled.sources) + 2) \
        + len(compiled.deadlines)
    need = paths * per_path * 2  # results plus the summary's working copies
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        fit = int(0.8 * total / (per_path * 2))
        raise InputError("", [Problem("paths", f"at most about {fit:,} paths: {paths:,} need about "
                                               f"{need / 2**30:.1f} GiB and this machine has {total / 2**30:.1f} GiB",
                                      paths)])


def _check_finite(where: str, pv: np.ndarray, structures: list[str], parties: list[str]) -> None:
    """Never average a non-finite (or absurdly large) PV: name the first such path instead."""
    bad = ~(np.abs(pv) <= PV_LIMIT)  # also catches nan
    if bad.any():
        i, s, p = (int(v[0]) for v in np.nonzero(bad))
        raise InputError(where, f"PV {pv[i, s, p]:.3g} on path {i} for structure {structures[s]!r}, party "
                                f"{parties[p]!r} ({int(bad.sum())} values in all) is not finite or exceeds "
                                f"{PV_LIMIT:.0e} USD bn: the inputs overflow; expected smaller volatility, growth, "
                                "revenue or horizon")
