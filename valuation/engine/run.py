"""The run loop: a path range, chunk by chunk, through the kernel into an accumulator.

:class:`Runner` holds what a run needs (the compiled tables, the key, the sampler, threads, chunk size) and
turns the paths ``[first, first + n)`` into chunks aligned to absolute multiples of the chunk size, runs the
kernel on each into the buffers the accumulator (a :class:`valuation.stats.accumulate.Partial`) gives, and
hands it each chunk.  The same loop serves a whole run, a range of one (``first_path``), a block computed
again when two ranges merge, and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from valuation.engine import kernel
from valuation.engine.kernel import BLOCK, CHUNK
from valuation.engine.tables import Compiled


@dataclass
class Chunk:
    """Kernel output for paths ``[first, first + n)``: rows are paths; ``flows[j]`` is the ``j``-th absolute
    block's flow sums (``Compiled.flow_shape``)."""

    first: int
    n: int
    pv: np.ndarray  # (n, structures, parties)
    times: np.ndarray  # (n, sources)
    met: np.ndarray  # (n, deadlines)
    revenue: np.ndarray  # (n,) revenue rate at the horizon
    flows: np.ndarray
    company: np.ndarray  # (n,) the company's value at the valuation date (nan without [market])
    years: np.ndarray  # (n, calendar years) revenue earned in each calendar year
    _moments: Any = None  # a streamed accumulator's per-block moments, once folded


def chunk_paths(chunk_size: int) -> int:
    """Paths per chunk: a whole number of blocks, at least one."""
    return max(BLOCK, -(-chunk_size // BLOCK) * BLOCK)


def n_blocks(first: int, n: int) -> int:
    """Absolute blocks that paths ``[first, first + n)`` touch."""
    return (first + n - 1) // BLOCK - first // BLOCK + 1 if n > 0 else 0


class Runner:
    """Runs path ranges of one compiled scenario with one key and sampler."""

    def __init__(self, compiled: Compiled, key: np.ndarray, sampler: int = 0, *, threads: int | None = None,
                 chunk_size: int = 65_536):
        self.compiled, self.key, self.sampler = compiled, key, sampler
        self.threads, self.chunk = threads, chunk_paths(chunk_size)
        self._values = np.empty(0)  # room for the uncertain inputs' values of a chunk, kept from chunk to chunk

    def _input_values(self, first: int, n: int) -> np.ndarray:
        """``(rows, n)``: the uncertain inputs' values on the paths (no rows without any), in memory the run keeps:
        memory fresh from the system costs a page fault every 4 KiB, about as much as the draws."""
        plan = self.compiled.plan
        if plan is None:
            return np.zeros((0, n))
        size = plan.rows * n
        if self._values.size < size:
            self._values = np.empty(max(size, plan.rows * self.chunk))
        return plan.columns(self.key, first, n, out=self._values[:size].reshape(plan.rows, n))

    def _kernel(self, first: int, n: int, out: dict[str, np.ndarray], flows: np.ndarray, revenue_path: np.ndarray,
                record_from: int) -> None:
        c = self.compiled
        values = self._input_values(first, n)
        with numba.parallel_chunksize(CHUNK):
            kernel.run_block(np.int64(first), np.int64(n), self.key, np.int64(self.sampler), c.model, c.drivers,
                             c.clauses, c.triggers, c.inputs, values, len(c.parties), out["pv"], out["times"],
                             out["met"], out["revenue"], flows, revenue_path, np.int64(record_from), out["company"],
                             out["years"])

    def run(self, sink: Any, first: int, n: int, progress: Callable[[int], None] | None = None) -> None:
        """Paths ``[first, first + n)`` into ``sink`` (``sink.buffers(first, n)`` gives the output arrays,
        ``sink.revenue_path`` and ``sink.first`` where revenue paths go, ``sink.add(chunk)`` takes each chunk);
        ``progress(paths)`` after each chunk."""
        flows = np.empty((n_blocks(0, self.chunk) + 1, *self.compiled.flow_shape))
        previous = numba.get_num_threads()
        if self.threads is not None:
            numba.set_num_threads(self.threads)
        try:
            start = first
            while start < first + n:
                stop = min(first + n, (start // self.chunk + 1) * self.chunk)  # aligned: the same chunks any run
                m = stop - start
                out = sink.buffers(start, m)
                used = flows[: n_blocks(start, m)]
                self._kernel(start, m, out, used, sink.revenue_path, sink.first)
                sink.add(chunk_of(start, m, out, used))
                if progress is not None:
                    progress(m)
                start = stop
        finally:
            numba.set_num_threads(previous)

    def block(self, first: int, stop: int) -> Chunk:
        """Paths ``[first, stop)`` on their own, all at once (a block two merging ranges split, a test's range)."""
        n = stop - first
        out = allocate(self.compiled, n)
        flows = np.empty((n_blocks(first, n), *self.compiled.flow_shape))
        self._kernel(first, n, out, flows, np.zeros((0, len(self.compiled.t))), first)
        return chunk_of(first, n, out, flows)


def chunk_of(first: int, n: int, out: dict[str, np.ndarray], flows: np.ndarray) -> Chunk:
    return Chunk(first, n, out["pv"], out["times"], out["met"], out["revenue"], flows, out["company"], out["years"])


def pv_array(structures: int, parties: int, paths: int) -> np.ndarray:
    """Room for per-path PVs, ``(paths, structures, parties)``, as a view of a ``(structures, parties, paths + 1)``
    block: each party's PVs under one structure are contiguous (what statistics and sorting read), and the view
    is never contiguous as a whole, so the kernel always meets one array layout (one compile, not two)."""
    return np.empty((structures, parties, paths + 1))[:, :, :paths].transpose(2, 0, 1)


def allocate(compiled: Compiled, n: int) -> dict[str, np.ndarray]:
    """Output arrays for ``n`` paths."""
    return {
        "pv": pv_array(len(compiled.views) * len(compiled.structures), len(compiled.parties), n),
        "times": np.empty((n, len(compiled.sources))),
        "met": np.empty((n, len(compiled.deadlines)), np.uint8),
        "revenue": np.empty(n),
        "company": np.empty(n),
        "years": np.empty((n, len(compiled.years))),
    }


def expected_flows(compiled: Compiled, block_sums: np.ndarray) -> np.ndarray:
    """Total flows by structure as applied on each path: (structures, parties, classes, slots).

    ``block_sums`` (shape ``compiled.flow_shape``) holds each clause's undiscounted flows by pattern of
    required deadlines met; under each pattern, the flows of the structure that applies are credited to
    every structure resolving to it, as paid by the clause's payer and received by its payee.
    """
    S, P = len(compiled.structures), len(compiled.parties)
    st_eff, cl = compiled.drivers.st_eff, compiled.clauses
    n_slots = len(compiled.slot_time)
    by_structure = np.zeros((st_eff.shape[0], S, P, len(compiled.class_rates), n_slots))
    for c in range(len(cl.kind)):
        s, payer, payee = cl.structure[c], cl.payer[c], cl.payee[c]
        if payer >= 0:
            by_structure[:, s, payer, compiled.class_payer[c]] -= block_sums[:, c, :n_slots]
        by_structure[:, s, payee, compiled.class_payee[c]] += block_sums[:, c, :n_slots]
    total = np.zeros(by_structure.shape[1:])
    for pattern in range(st_eff.shape[0]):
        for s in range(S):
            total[s] += by_structure[pattern, st_eff[pattern, s]]
    return total


def warm_up(compiled: Compiled, sampler: int = 0) -> float:
    """Compile (or load from cache) the kernel; returns the seconds it took."""
    start = time.perf_counter()
    runner = Runner(compiled, np.zeros(2, np.uint32), sampler)
    out = allocate(compiled, 2)  # 2 paths: the real layout
    runner._kernel(0, 2, out, np.empty((1, *compiled.flow_shape)), np.zeros((1, len(compiled.t))), 0)
    return time.perf_counter() - start


class _Arrays:
    """A bare sink: the kernel's arrays for every path, nothing folded (the benchmarks' hot loop)."""

    def __init__(self, compiled: Compiled, n: int, record: int):
        self.first, self.arrays = 0, allocate(compiled, n)
        self.revenue_path = np.zeros((min(record, n), len(compiled.t)))
        self.flows = np.zeros(compiled.flow_shape)

    def buffers(self, first: int, n: int) -> dict[str, np.ndarray]:
        return {name: arr[first:first + n] for name, arr in self.arrays.items()}

    def add(self, chunk: Chunk) -> None:
        for b in range(chunk.flows.shape[0]):
            self.flows += chunk.flows[b]


def simulate_arrays(compiled: Compiled, key: np.ndarray, paths: int, *, threads: int | None = None,
                    chunk_size: int = 65_536, record: int = 0) -> dict[str, np.ndarray]:
    """The kernel's arrays for paths ``0 .. paths - 1`` (and ``flows``, the summed flow blocks)."""
    sink = _Arrays(compiled, paths, record)
    Runner(compiled, key, threads=threads, chunk_size=chunk_size).run(sink, 0, paths)
    return {**sink.arrays, "revenue_path": sink.revenue_path, "flows": sink.flows}
