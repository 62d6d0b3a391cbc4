"""The Python entry point: :func:`simulate`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from models.rng import key_from_seed
from valuation import engine
from valuation.compile import compile_scenario
from valuation.errors import InputError
from valuation.results import SimulationResult
from valuation.scenario import Scenario, load_scenario


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
    _check_count(where, "paths", paths, 1)
    _check_count(where, "seed", seed, 0)
    _check_count(where, "chunk_size", chunk_size, 1)
    if threads is not None:
        import numba

        _check_count(where, "threads", threads, 1)
        if threads > numba.config.NUMBA_NUM_THREADS:
            raise InputError(where, f"threads = {threads}: expected at most {numba.config.NUMBA_NUM_THREADS} "
                                    "(the cores numba can use)")
    compiled = compile_scenario(scenario)
    _check_memory(where, paths, compiled)
    key, ss = key_from_seed(seed)
    compile_seconds = engine.warm_up(compiled)
    start = time.perf_counter()
    out = engine.simulate_arrays(compiled, key, paths, chunk_size=chunk_size, threads=threads, progress=progress)
    run_seconds = time.perf_counter() - start
    _check_finite(where, out["pv"], compiled.structures, compiled.parties)
    drivers = pd.DataFrame({name: out["times"][:, i] for i, name in enumerate(compiled.sources)})
    for d, name in enumerate(compiled.deadlines):
        drivers[f"met:{name}"] = out["met"][:, d].astype(bool)
    drivers["revenue_at_horizon"] = out["revenue"]
    import numba

    return SimulationResult(
        scenario=scenario, pvs=out["pv"], drivers=drivers, structures=compiled.structures,
        parties=compiled.parties, seed=int(seed), entropy=int(ss.entropy), run_seconds=run_seconds,
        compile_seconds=compile_seconds, threads=threads or numba.get_num_threads(), fits=compiled.fits,
        baseline=scenario.baseline,
    )


def _check_count(where: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(where, f"{name} = {value!r}: expected a whole number >= {minimum}")


def _check_memory(where: str, paths: int, compiled) -> None:
    per_path = 8 * (len(compiled.structures) * len(compiled.parties) + len(compiled.sources) + 2) \
        + len(compiled.deadlines)
    need = paths * per_path * 2  # results plus the summary's working copies
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        fit = int(0.8 * total / (per_path * 2))
        raise InputError(where, f"paths = {paths:,}: needs about {need / 2**30:.1f} GiB but this machine has "
                                f"{total / 2**30:.1f} GiB; expected at most about {fit:,} paths")


def _check_finite(where: str, pv: np.ndarray, structures: list[str], parties: list[str]) -> None:
    bad = ~np.isfinite(pv)
    if bad.any():
        i, s, p = (int(v[0]) for v in np.nonzero(bad))
        raise InputError(where, f"non-finite PV on path {i} for structure {structures[s]!r}, party "
                                f"{parties[p]!r} ({int(bad.sum())} values in all): inputs overflow; expected "
                                "smaller volatility, growth or horizon")
