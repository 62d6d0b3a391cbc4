"""One accumulator: a run is a sequence of path ranges, each turned into a partial result that merges.

A :class:`Partial` covers the paths ``[first, stop)``; the run loop (:mod:`valuation.engine.run`) adds chunks of
kernel output to it in path order, and :meth:`Partial.merged` joins two adjacent partials.  Two
implementations: :class:`KeptPartial` keeps every path (exact statistics), :class:`StreamedPartial` folds each
chunk into moments, histograms and counts and keeps only the first paths (flat memory).  Both expose the same
finished interface (columns, differences, flows, driver counts) that the statistics and the workbook read.

**The same bits whatever the split.**  What is summed in floating point (each block's cash flows, a streamed
column's moments) is summed per block of :data:`~valuation.engine.kernel.BLOCK` paths aligned to absolute path
numbers, in path order, and the blocks are combined in a fixed binary tree over absolute block numbers
(:class:`BlockTree`); counts, histograms and extremes are exact.  A block split between two adjacent ranges
is computed again, whole, when they merge (``recompute``).  So a run over ``[0, n)`` and any split of it into
chunks, threads, ranges or workers give the same bits.  The tree also sums pairwise: the rounding error grows
with the logarithm of the number of blocks, not the number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from valuation.engine.kernel import BLOCK
from valuation.engine.run import pv_array
from valuation.stats.catalogue import HEAD
from valuation.stats.columns import KeptColumn
from valuation.stats.histogram import (
    BUCKETS,
    MAX,
    MEAN,
    MIN,
    N_MOMENTS,
    NEG,
    POS,
    StreamColumn,
    combine_moments,
    fold_pvs,
    fold_values,
    new_extremes,
)


@dataclass
class Piece:
    """The paths ``[first, stop)`` of block ``block`` (a whole block or the part a range covers) and its payload."""

    block: int
    first: int
    stop: int
    payload: Any

    @property
    def whole(self) -> bool:
        return self.first == self.block * BLOCK and self.stop == (self.block + 1) * BLOCK


@dataclass
class BlockTree:
    """Per-block payloads of a path range, combined in a fixed dyadic tree over absolute block numbers.

    ``lead``: the first block when the range starts inside it; ``nodes``: the largest aligned subtrees of whole
    blocks, ``(level, index, payload)`` covering blocks ``[index * 2**level, (index + 1) * 2**level)``, in
    order; ``trail``: the last block when the range ends inside it.  A node is always ``combine(left, right)``
    of its two halves, so its value depends on the blocks alone; :meth:`total` folds lead, nodes and trail left
    to right -- the same pieces, hence the same bits, however the range was built.
    """

    combine: Callable[[Any, Any], Any]
    first: int | None = None
    stop: int | None = None
    lead: Piece | None = None
    nodes: list[tuple[int, int, Any]] = field(default_factory=list)
    trail: Piece | None = None

    def add(self, piece: Piece) -> None:
        """The next piece, adjacent to what is here."""
        if self.first is None:
            self.first = piece.first
        elif piece.first != self.stop:
            raise ValueError(f"paths {piece.first}.. do not follow paths ..{self.stop}")
        self.stop = piece.stop
        if piece.whole:
            self._push(0, piece.block, piece.payload)
        elif piece.first != piece.block * BLOCK:  # starts inside its block: the range's first piece
            if self.lead is not None or self.nodes or self.trail is not None:
                raise ValueError("a block split inside a range")
            self.lead = piece
        else:  # starts a block and stops inside it: the range's last piece
            self.trail = piece

    def _push(self, level: int, index: int, payload: Any) -> None:
        while self.nodes and self.nodes[-1][0] == level and self.nodes[-1][1] == index - 1 and index % 2 == 1:
            _, left, left_payload = self.nodes.pop()
            payload = self.combine(left_payload, payload)
            level, index = level + 1, left // 2
        self.nodes.append((level, index, payload))

    def merged(self, other: BlockTree, recompute: Callable[[int, int], Piece]) -> BlockTree:
        """This range followed by ``other`` (adjacent); a block split between them is computed again, whole."""
        if self.first is None:
            return other
        if other.first is None:
            return self
        if other.first != self.stop:
            raise ValueError(f"ranges not adjacent: ..{self.stop} and {other.first}..")
        out = BlockTree(self.combine, self.first, other.stop, self.lead, list(self.nodes), self.trail)
        rest = list(other.nodes)
        trail = other.trail
        if self.stop % BLOCK:  # one block lies on both sides: each side's piece of it goes, the whole comes back
            k = self.stop // BLOCK
            if out.trail is not None:
                out.trail = None
            else:  # the left range lies inside block k
                out.lead = None
            lo, hi = max(self.first, k * BLOCK), min(other.stop, (k + 1) * BLOCK)
            piece = recompute(lo, hi)
            if piece.whole:
                out._push(0, k, piece.payload)
            elif lo > k * BLOCK:  # starts inside block k: the merged range's first piece
                out.lead = piece
            else:  # ends inside block k: the merged range's last piece (the right range lay inside it)
                trail = piece
        elif other.lead is not None:
            raise ValueError("a range starting inside a block after one that ends on its boundary")
        for level, index, payload in rest:
            out._push(level, index, payload)
        out.trail = trail
        return out

    def total(self) -> Any:
        parts = [*([self.lead.payload] if self.lead else []), *[p for _, _, p in self.nodes],
                 *([self.trail.payload] if self.trail else [])]
        if not parts:
            return None
        result = parts[0]
        for part in parts[1:]:
            result = self.combine(result, part)
        return result


@dataclass
class Layout:
    """What a partial needs to know of the compiled scenario."""

    structures: list[str]
    parties: list[str]
    deadlines: list[str]
    sources: list[str]
    flow_shape: tuple[int, int, int]
    n_times: int  # step ends, valuation date included
    record: int  # paths whose revenue path is kept (from the start of the range)
    base: int  # the baseline structure (a streamed partial compares with it)
    views: int = 1  # PV columns are view-major: structure s of view v is column v * len(structures) + s
    years: int = 0  # calendar years of revenue_by_year

    @property
    def declared(self) -> int:
        return self.sources.index("agi_declared")

    @property
    def verified(self) -> int:
        return self.sources.index("agi_verified")


def _blocks(first: int, n: int) -> list[tuple[int, int, int]]:
    """(block, first, stop) of each absolute block paths ``[first, first + n)`` touch."""
    out = []
    p = first
    while p < first + n:
        b = p // BLOCK
        stop = min(first + n, (b + 1) * BLOCK)
        out.append((b, p, stop))
        p = stop
    return out


class Partial:
    """The common part of both kinds: the range, the revenue paths of its first paths, the flows tree."""

    kept: bool

    def __init__(self, layout: Layout, first: int, n: int):
        self.layout = layout
        self.first, self.stop = first, first
        self.revenue_path = np.zeros((min(layout.record, n), layout.n_times))
        self.tree = BlockTree(self._combine)

    @property
    def n(self) -> int:
        return self.stop - self.first

    def _combine(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def pieces(self, chunk: Any) -> list[Piece]:
        """The payload of each block a chunk of kernel output touches."""
        raise NotImplementedError

    def add(self, chunk: Any) -> None:
        """A chunk of kernel output, the paths right after those here (``chunk.first == self.stop``)."""
        if chunk.first != self.stop:
            raise ValueError(f"chunk of paths {chunk.first}.. does not follow paths ..{self.stop}")
        self._absorb(chunk)
        for piece in self.pieces(chunk):
            self.tree.add(piece)
        self.stop = chunk.first + chunk.n

    def _absorb(self, chunk: Any) -> None:
        raise NotImplementedError

    def merged(self, other: Partial, recompute: Callable[[int, int], Any]) -> Partial:
        """This range followed by ``other``'s (see :func:`merged_partials`)."""
        return merged_partials([self, other], recompute)

    def _merge_common(self, out: Partial, parts: list[Partial], recompute: Callable[[int, int], Any]) -> None:
        out.first, out.stop = parts[0].first, parts[-1].stop
        rows = min(self.layout.record, out.stop - out.first)
        out.revenue_path = np.concatenate([p.revenue_path for p in parts])[:rows]

        def piece(lo: int, hi: int) -> Piece:
            (whole,) = self.pieces(recompute(lo, hi))
            return whole

        tree = parts[0].tree
        for p in parts[1:]:
            tree = tree.merged(p.tree, piece)
        out.tree = tree

    @property
    def flows(self) -> np.ndarray:
        """Undiscounted flows summed over the range (``flow_shape``)."""
        total = self.tree.total()
        return np.zeros(self.layout.flow_shape) if total is None else self._flows_of(total)

    def _flows_of(self, payload: Any) -> np.ndarray:
        raise NotImplementedError


class KeptPartial(Partial):
    """Every path's PVs, times, deadlines met and revenue at the horizon (preallocated for ``n`` paths)."""

    kept = True

    def __init__(self, layout: Layout, first: int, n: int):
        super().__init__(layout, first, n)
        S, P = len(layout.structures), len(layout.parties)
        self.pv = pv_array(layout.views * S, P, n)
        self.times = np.empty((n, len(layout.sources)))
        self.met = np.empty((n, len(layout.deadlines)), np.uint8)
        self.revenue = np.empty(n)
        self.company = np.empty(n)
        self.years = np.empty((n, layout.years))

    def buffers(self, first: int, n: int) -> dict[str, np.ndarray]:
        rows = slice(first - self.first, first - self.first + n)
        return {"pv": self.pv[rows], "times": self.times[rows], "met": self.met[rows], "revenue": self.revenue[rows],
                "company": self.company[rows], "years": self.years[rows]}

    def _combine(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def _flows_of(self, payload: np.ndarray) -> np.ndarray:
        return payload

    def pieces(self, chunk: Any) -> list[Piece]:
        return [Piece(b, lo, hi, chunk.flows[j].copy()) for j, (b, lo, hi) in enumerate(_blocks(chunk.first, chunk.n))]

    def _absorb(self, chunk: Any) -> None:
        pass  # the kernel wrote into this partial's own arrays

    @classmethod
    def _merged_all(cls, parts: list[KeptPartial], recompute: Callable[[int, int], Any]) -> KeptPartial:
        out = cls.__new__(cls)
        out.layout = parts[0].layout
        out.pv = pv_array(out.layout.views * len(out.layout.structures), len(out.layout.parties),
                          sum(p.n for p in parts))
        np.concatenate([p.pv for p in parts], out=out.pv)  # copied once
        out.times = np.concatenate([p.times for p in parts])
        out.met = np.concatenate([p.met for p in parts])
        out.revenue = np.concatenate([p.revenue for p in parts])
        out.company = np.concatenate([p.company for p in parts])
        out.years = np.concatenate([p.years for p in parts])
        parts[0]._merge_common(out, parts, recompute)
        return out

    # ---- the finished interface
    def column(self, s: int, p: int) -> KeptColumn:
        return KeptColumn(self.pv[:, s, p])

    def difference(self, s: int, p: int, base: int) -> KeptColumn:
        return KeptColumn(self.pv[:, s, p] - self.pv[:, base, p])

    def company_column(self) -> KeptColumn:
        return KeptColumn(self.company)

    def year_column(self, y: int) -> KeptColumn:
        return KeptColumn(np.ascontiguousarray(self.years[:, y]))

    def driver_counts(self, grid: np.ndarray) -> DriverCounts:
        counts = DriverCounts.empty(grid, len(self.layout.deadlines))
        counts.add(self.times[:, self.layout.declared], self.times[:, self.layout.verified], self.met)
        return counts

    def lag(self) -> KeptColumn:
        declared, verified = self.times[:, self.layout.declared], self.times[:, self.layout.verified]
        lag = verified - declared
        return KeptColumn(lag[np.isfinite(lag)])

    def head(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = min(HEAD, self.n)
        return self.pv[:n], self.times[:n], self.met[:n], self.revenue[:n]


@dataclass
class DriverCounts:
    """Exact counts of the drivers the workbook reports: P(declared / verified by each ``grid`` time), deadlines."""

    grid: np.ndarray
    n: int
    declared_by: np.ndarray
    verified_by: np.ndarray
    ever_declared: int
    verified_after_declared: int
    met: np.ndarray

    @classmethod
    def empty(cls, grid: np.ndarray, deadlines: int) -> DriverCounts:
        grid = np.asarray(grid, float)
        return cls(grid, 0, np.zeros(grid.size, np.int64), np.zeros(grid.size, np.int64), 0, 0,
                   np.zeros(deadlines, np.int64))

    def add(self, declared: np.ndarray, verified: np.ndarray, met: np.ndarray) -> None:
        self.n += declared.size
        self.declared_by += np.searchsorted(np.sort(declared), self.grid, side="right")
        self.verified_by += np.searchsorted(np.sort(verified), self.grid, side="right")
        was = np.isfinite(declared)
        self.ever_declared += int(was.sum())
        self.verified_after_declared += int((was & np.isfinite(verified)).sum())
        self.met += met.sum(axis=0, dtype=np.int64)

    def merged(self, other: DriverCounts) -> DriverCounts:
        return DriverCounts(self.grid, self.n + other.n, self.declared_by + other.declared_by,
                            self.verified_by + other.verified_by, self.ever_declared + other.ever_declared,
                            self.verified_after_declared + other.verified_after_declared, self.met + other.met)


class StreamedPartial(Partial):
    """Moments, histograms, extremes and driver counts of every column, and the first :data:`HEAD` paths whole.

    Columns: every structure x party, then every other structure - the baseline, x party.  Payload of a block:
    (flows, column moments (columns, 3), verification-lag moments (3,)).
    """

    kept = False

    def __init__(self, layout: Layout, first: int, n: int, grid: np.ndarray, chunk_paths: int):
        super().__init__(layout, first, n)
        S, P, V = len(layout.structures), len(layout.parties), layout.views
        self.pv_columns = V * S * P + V * (S - 1) * P  # PVs, then differences from the baseline, view by view
        self.columns = self.pv_columns + 1 + layout.years  # then the company's value, revenue in each year
        self.hist = np.zeros((self.columns, BUCKETS), np.int64)
        self.ext = new_extremes(self.columns)
        self.lag_hist = np.zeros(BUCKETS, np.int64)
        self.lag_ext = new_extremes(1)[0]
        self.counts = DriverCounts.empty(grid, len(layout.deadlines))
        self._head: dict[str, np.ndarray] = {}
        size = min(chunk_paths, n)
        self._buffers = {"pv": pv_array(V * S, P, size),
                         "times": np.empty((size, len(layout.sources))),
                         "met": np.empty((size, len(layout.deadlines)), np.uint8), "revenue": np.empty(size),
                         "company": np.empty(size), "years": np.empty((size, layout.years))}
        self._block_moments: list[np.ndarray] = []

    def buffers(self, first: int, n: int) -> dict[str, np.ndarray]:
        return {name: arr[:n] for name, arr in self._buffers.items()}

    def _combine(self, a: tuple, b: tuple) -> tuple:
        return a[0] + b[0], combine_moments(a[1], b[1]), combine_moments(a[2], b[2])

    def _flows_of(self, payload: tuple) -> np.ndarray:
        return payload[0]

    def _fold(self, chunk: Any, hist: np.ndarray, ext: np.ndarray, lag_hist: np.ndarray, lag_ext: np.ndarray):
        """Fold a chunk into these histograms and extremes; returns the per-block moments (columns, lag)."""
        pv = chunk.pv.transpose(1, 2, 0)  # (structures, parties, paths): contiguous for a whole chunk
        pv = pv if pv.flags.c_contiguous else np.ascontiguousarray(pv)
        n_blocks = len(_blocks(chunk.first, chunk.n))
        moments = np.zeros((n_blocks, self.columns, 3))
        k = self.pv_columns
        pv_moments = np.zeros((n_blocks, k, 3))
        fold_pvs(pv, np.int64(chunk.first), np.int64(self.layout.base), np.int64(self.layout.views), hist[:k],
                 ext[:k], pv_moments)
        moments[:, :k] = pv_moments
        company = chunk.company
        moments[:, k] = fold_values(company, np.isfinite(company).astype(np.uint8), chunk.first, hist[k], ext[k])
        for y in range(self.layout.years):
            moments[:, k + 1 + y] = fold_values(chunk.years[:, y], np.zeros(0, np.uint8), chunk.first,
                                                hist[k + 1 + y], ext[k + 1 + y])
        declared = chunk.times[:, self.layout.declared]
        verified = chunk.times[:, self.layout.verified]
        done = np.isfinite(declared) & np.isfinite(verified)
        lag = np.where(done, verified - declared, 0.0)
        lag_moments = fold_values(lag, done.astype(np.uint8), chunk.first, lag_hist, lag_ext)
        return moments, lag_moments

    def pieces(self, chunk: Any) -> list[Piece]:
        if getattr(chunk, "_moments", None) is None:  # a recomputed block: fold it aside (counted already)
            chunk._moments = self._fold(chunk, np.zeros_like(self.hist), new_extremes(self.columns),
                                        np.zeros_like(self.lag_hist), new_extremes(1)[0])
        moments, lag = chunk._moments
        return [Piece(b, lo, hi, (chunk.flows[j].copy(), moments[j], lag[j]))
                for j, (b, lo, hi) in enumerate(_blocks(chunk.first, chunk.n))]

    def _absorb(self, chunk: Any) -> None:
        chunk._moments = self._fold(chunk, self.hist, self.ext, self.lag_hist, self.lag_ext)
        self.counts.add(chunk.times[:, self.layout.declared], chunk.times[:, self.layout.verified], chunk.met)
        done = self.stop - self.first
        if done < HEAD:
            k = min(HEAD - done, chunk.n)
            for name in ("pv", "times", "met", "revenue", "company", "years"):
                part = getattr(chunk, name)[:k].copy()
                self._head[name] = part if name not in self._head else np.concatenate((self._head[name], part))

    @classmethod
    def _merged_all(cls, parts: list[StreamedPartial], recompute: Callable[[int, int], Any]) -> StreamedPartial:
        first = parts[0]
        out = cls.__new__(cls)
        out.layout, out.columns, out._buffers = first.layout, first.columns, first._buffers
        out.pv_columns = first.pv_columns
        out.hist, out.lag_hist = first.hist.copy(), first.lag_hist.copy()
        out.ext, out.lag_ext = first.ext.copy(), first.lag_ext.copy()
        out.counts = first.counts
        for p in parts[1:]:  # exact: counts add, extremes compare
            out.hist += p.hist
            out.lag_hist += p.lag_hist
            out.ext = _merged_extremes(out.ext, p.ext)
            out.lag_ext = _merged_extremes(out.lag_ext[None], p.lag_ext[None])[0]
            out.counts = out.counts.merged(p.counts)
        heads = [p._head for p in parts if p._head]
        out._head = {name: np.concatenate([h[name] for h in heads])[:HEAD] for name in heads[0]} if heads else {}
        first._merge_common(out, parts, recompute)
        return out

    # ---- the finished interface
    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        total = self.tree.total()
        if total is None:
            return np.zeros((self.columns, 3)), np.zeros(3)
        return total[1], total[2]

    def _column(self, c: int, moments: np.ndarray) -> StreamColumn:
        mom = np.empty(N_MOMENTS)
        mom[:3] = moments
        mom[MIN], mom[MAX], mom[NEG], mom[POS] = self.ext[c]
        return StreamColumn(mom, self.hist[c])

    def column(self, s: int, p: int) -> StreamColumn:
        c = s * len(self.layout.parties) + p
        return self._column(c, self._moments()[0][c])

    def difference(self, s: int, p: int, base: int) -> StreamColumn:
        S, P, V = len(self.layout.structures), len(self.layout.parties), self.layout.views
        view, s, base = s // S, s % S, base - (s // S) * S
        if base != self.layout.base:
            raise ValueError("a streamed run compares with its own baseline only")
        if s == base:
            raise ValueError("the baseline is not compared with itself")
        c = V * S * P + view * (S - 1) * P + (s - (s > base)) * P + p
        return self._column(c, self._moments()[0][c])

    def company_column(self) -> StreamColumn:
        return self._column(self.pv_columns, self._moments()[0][self.pv_columns])

    def year_column(self, y: int) -> StreamColumn:
        c = self.pv_columns + 1 + y
        return self._column(c, self._moments()[0][c])

    def driver_counts(self, grid: np.ndarray) -> DriverCounts:
        return self.counts

    def lag(self) -> StreamColumn:
        mom = np.empty(N_MOMENTS)
        mom[:3] = self._moments()[1]
        mom[MIN], mom[MAX], mom[NEG], mom[POS] = self.lag_ext
        return StreamColumn(mom, self.lag_hist)

    def head(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        h = self._head
        return h["pv"], h["times"], h["met"], h["revenue"]


def merged_partials(parts: list[Partial], recompute: Callable[[int, int], Any]) -> Partial:
    """Adjacent partials of one kind, in order, as one: arrays joined once, exact counts added, block trees
    merged (a block split between two of them computed again by ``recompute(first, stop)``, a kernel chunk)."""
    if not parts:
        raise ValueError("nothing to merge")
    kind = type(parts[0])
    if any(type(p) is not kind for p in parts):
        raise ValueError("kept and streamed partials do not merge")
    for a, b in zip(parts, parts[1:], strict=False):
        if a.stop != b.first:
            raise ValueError(f"ranges not adjacent: ..{a.stop} and {b.first}..")
    return parts[0] if len(parts) == 1 else kind._merged_all(parts, recompute)


def _merged_extremes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(min, max, count < 0, count > 0) of two sets of columns together (exact)."""
    return np.column_stack((np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1]), a[:, 2] + b[:, 2],
                            a[:, 3] + b[:, 3]))


assert MEAN == 1  # moments 0..2 are (count, mean, M2), in the order combine_moments keeps
