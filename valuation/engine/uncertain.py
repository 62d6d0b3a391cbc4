"""Uncertain inputs: the inputs with a distribution, drawn once per path, correlated through a Gaussian copula.

Each uncertain input has its own random source, a counter from its key path (``"input:" + key``, see
:func:`models.rng.named_counter`): its uniform on a path does not depend on what else is uncertain, so adding,
removing or reordering uncertain inputs changes no other input's draws.  An input named in no correlation
takes its distribution's inverse CDF of that uniform directly.

**Correlations.**  The variables named in ``[[correlations]]`` -- drivers first (the AGI declaration, the
revenue path, named events), then inputs in key order -- get normal scores: an input's is ``ndtri`` of its
uniform, the AGI declaration's and an event's ``ndtri`` of the uniform the kernel draws for it, and the revenue
path's the standardised Gaussian part of log revenue at the horizon (:func:`growth_scores`).  A target rank
correlation ``r_s`` becomes the normal scores' correlation ``2 sin(pi r_s / 6)`` (the Gaussian copula's exact
relation), the matrix is factored (lower Cholesky, drivers first) and each input's correlated score is
``L z``; its value is its inverse CDF at ``Phi(L z)``.  Drivers come first and are never correlated with one
another, so their rows of ``L`` are unit rows: the drivers keep their own numbers, and the inputs move to meet
them.  A matrix that is not positive semi-definite is refused, naming the smallest set of entries that
conflict, unless the scenario asks for the nearest valid one (:func:`nearest_correlation`, Frobenius norm,
driver pairs held at 0).

The kernel reads the values as a ``(paths, inputs)`` array with, per input, what it changes
(:class:`InputTables`).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numba
import numpy as np
from scipy import special, stats

from models import rng, timing
from models._jit import jit, pjit
from models.copula import cholesky_psd, is_psd, nearest_correlation, normal_to_rank, rank_to_normal
from valuation import keys
from valuation.engine import fits
from valuation.scenario.ranges import BOUNDED, Z95, InputRange, bounds, correlation_matrix, dist_inputs, timing_keys

# What an input changes (InputTables.target)
T_REVENUE, T_MARGIN, T_NEVER_VERIFIED, T_TIMING, T_QUANTILE_P, T_HAIRCUT, T_HAIRCUT_YEARS = range(7)
# The raw revenue numbers (InputTables.base_raw, T_REVENUE's index)
RAW = ("initial", "initial_growth", "long_run_growth", "mean_reversion", "volatility", "growth_volatility",
       "correlation", "jump_intensity", "jump_loss", "agi_growth_uplift", "exit_multiple", "market_size")
R_INITIAL, R_G0, R_GBAR, R_KAPPA, R_SIGMA, R_SG, R_RHO, R_LAMBDA, R_JUMP_LOSS, R_UPLIFT, R_MULTIPLE, R_MARKET = \
    range(len(RAW))
# Flags (InputTables.flags): which derived quantities a path computes for itself
F_ANY, F_REVENUE, F_LOG_X0, F_COEF, F_JUMPS, F_MARGIN, F_HAIRCUT, F_MARKET, F_LOG_JUMP, F_THREE, F_DYNAMICS = range(11)
N_FLAGS = 11  # F_REVENUE: a path's own revenue numbers; F_DYNAMICS: among them, some that move its revenue path
_PAR_SLOTS = {"start": 0, "never": 1, "rate": 2, "shape": 2, "median": 2, "after": 2, "scale": 3, "sigma": 3,
              "growth": 3}
FIT_CODES = {"piecewise": timing.PIECEWISE, "exponential": timing.EXPONENTIAL, "weibull": timing.WEIBULL,
             "lognormal": timing.LOGNORMAL}  # the fits a path redoes for itself (not gompertz: see ranges)
SAMPLE_LIMIT = 1_000_000  # paths the achieved correlations are measured on (the first ones of the run)


class InputTables(NamedTuple):
    """What the kernel needs to apply per-path input values (nothing when no input is uncertain)."""

    target: np.ndarray  # (U,) T_* code of each input
    index: np.ndarray  # (U,) the raw revenue number, margin point, timing source or deadline
    slot: np.ndarray  # (U,) a timing source's parameter slot (models.timing layout) or quantile point
    flags: np.ndarray  # (N_FLAGS,) uint8
    base_raw: np.ndarray  # (len(RAW),) the scenario's revenue numbers (market size inf: none)
    step_class: np.ndarray  # (K+1,) class of each step's length (entry 0 unused)
    class_h: np.ndarray  # (C,) each class's step length
    margin_w: np.ndarray  # (K+1, M) each step's margin as weights of the margin points (linear in them)
    margin_base: np.ndarray  # (M,)
    jump_cols: np.ndarray  # (NJ,) room for jump-count tails (as many as the largest intensity needs)
    qp_n: np.ndarray  # (2 + E,) points of a quantile table refitted on each path (0: not one)
    qp_p: np.ndarray  # (2 + E, MAX_PIECES) its probabilities
    qp_r: np.ndarray  # (2 + E, MAX_PIECES + 1) its breaks (0, then each point's years after the start)
    qp_log_r: np.ndarray  # (2 + E, MAX_PIECES + 1) their logarithms (-inf for the 0)
    qp_tail_never: np.ndarray  # (2 + E,) 1: the hazard stops after the last point
    qp_by: np.ndarray  # (2 + E, MAX_PIECES) each point's years after the valuation date
    qp_fit: np.ndarray  # (2 + E,) the table's fit: models.timing's family code (PIECEWISE: exact)
    qp_start: np.ndarray  # (2 + E,) 1: its start is uncertain (the points' years after it move)
    qp_fit_row: np.ndarray  # (2 + E,) a fitted table's row of the values (its two parameters, by the draw pass), or -1


K_UNIFORM, K_TRIANGULAR, K_PERT, K_NORMAL, K_LOGNORMAL = range(5)
TABLE_Z = 8.5  # the PERT table spans normal scores -8.5 .. 8.5 (every uniform the generator gives)
TABLE_NODES = 8193
VALUES_BLOCK = 8192  # paths per work item of the pass that draws the inputs (one input's table stays in cache)
LOOKUP_BLOCK = 1024  # PERT draws looked up at a time (the nodes found, gathered, then interpolated)


@dataclass(frozen=True)
class Input:
    """One uncertain input: its key, range and distribution, and where its draws come from."""

    key: str
    range: InputRange
    value: float  # the input's value (the mode of triangular and pert)
    lo: float  # where the draws are cut (the allowed range; bounds for bounded distributions)
    hi: float
    stream: int
    draw: int
    par: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(4))  # see _draw
    table: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((1, 2)))  # PERT: x, dx/dz per node

    @property
    def kind(self) -> int:
        return ("uniform", "triangular", "pert", "normal", "lognormal").index(self.range.dist)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """The input's values at uniforms ``u`` (inverse CDF; normal and lognormal cut to ``[lo, hi]``)."""
        return all_draws(np.ascontiguousarray(u, np.float64).reshape(1, -1), np.array([self.kind], np.int64),
                         self.par.reshape(1, 4), self.table.reshape(1, *self.table.shape), np.array([self.lo]),
                         np.array([self.hi]))[0]


def make_input(scenario: Any, key: str, r: InputRange) -> Input:
    """An uncertain input, with its distribution's constants (and a PERT's table) computed once."""
    lo, hi = cut_range(scenario, key, r)
    value = float(scenario.value_at(key))
    stream, draw = rng.named_counter(f"input:{key}")
    par = np.zeros(4)
    table = np.zeros((1, 2))
    if r.dist in ("uniform", "triangular", "pert"):
        par[:3] = r.low, value, r.high
    if r.dist == "pert":
        table = pert_table(*pert_shapes(r.low, value, r.high))
    elif r.dist in ("normal", "lognormal"):
        mu, sd, log = normal_parameters(r)
        a = special.ndtr(((_log(lo) if log else lo) - mu) / sd)
        b = special.ndtr(((_log(hi) if log else hi) - mu) / sd)
        par[:] = mu, sd, a, b
    return Input(key, r, value, lo, hi, stream, draw, par, table)


def pert_table(a: float, b: float) -> np.ndarray:
    """``(TABLE_NODES, 2)``: the Beta(a, b) quantile at normal scores ``z`` from -TABLE_Z to TABLE_Z, and its
    derivative in ``z`` (``phi(z) / pdf(x)``), for cubic Hermite interpolation (error below 1e-11)."""
    z = np.linspace(-TABLE_Z, TABLE_Z, TABLE_NODES)
    with np.errstate(all="ignore"):  # the upper half from the upper tail: 1 - ndtr(z) loses digits there
        x = np.where(z <= 0, special.betaincinv(a, b, special.ndtr(z)), special.betainccinv(a, b, special.ndtr(-z)))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = stats.norm.pdf(z) / stats.beta.pdf(x, a, b)
    fd = np.gradient(x, z)
    d = np.where(np.isfinite(d), d, fd)
    return np.ascontiguousarray(np.column_stack([x, d]))  # a node's value and slope side by side: one cache line


@jit(inline="always")
def _normal_scores(u, z, m):
    """``z[i] = ndtri(u[i])``, ``i < m`` (models.rng.ndtri_array), :data:`LOOKUP_BLOCK` at a time: its scratch
    stays small, so memory comes from the allocator's free lists, not fresh from the system (a page fault every
    4 KiB, as much again as the scores)."""
    for lo in range(0, m, LOOKUP_BLOCK):
        hi = min(m, lo + LOOKUP_BLOCK)
        rng.ndtri_array(u[lo:hi], z[lo:hi])


@jit(inline="always")
def _pert_lookup(z, m, par, tq, low, high, out, cut, node, near):
    """A PERT input's values at normal scores ``z[:m]`` into ``out[:m]``: cubic Hermite in the normal score
    between the table's nodes (value, slope), in three simple loops (each SIMD; one loop would not be) over
    :data:`LOOKUP_BLOCK` draws at a time; ``cut``: scratch of ``m``."""
    n_nodes = tq.shape[0]
    scale = (n_nodes - 1) / (2.0 * TABLE_Z)
    step = 2.0 * TABLE_Z / (n_nodes - 1)
    a, span = par[0], par[2] - par[0]
    x0, s0, x1, s1 = near
    for lo in range(0, m, LOOKUP_BLOCK):  # three simple loops (each SIMD), not one (scalar)
        hi = min(m, lo + LOOKUP_BLOCK)
        for i in range(lo, hi):  # the node and where between it and the next
            f = (z[i] + TABLE_Z) * scale
            j = min(max(int(f), 0), n_nodes - 2)
            node[i - lo] = j
            cut[i] = f - j
        for i in range(hi - lo):  # the two nodes' values and slopes (four arrays: rows of one would not SIMD)
            j = node[i]
            x0[i] = tq[j, 0]
            s0[i] = tq[j, 1]
            x1[i] = tq[j + 1, 0]
            s1[i] = tq[j + 1, 1]
        for i in range(hi - lo):
            t = cut[lo + i]
            t2 = t * t
            t3 = t2 * t
            x = a + span * ((2 * t3 - 3 * t2 + 1) * x0[i] + (t3 - 2 * t2 + t) * step * s0[i]
                            + (-2 * t3 + 3 * t2) * x1[i] + (t3 - t2) * step * s1[i])
            cut[lo + i] = min(max(x, low), high)
    for i in range(m):
        out[i] = cut[i]


@jit(inline="always")
def _draw_input(u, m, kind, par, tq, low, high, out, cut, z, node, near):
    """One input's inverse CDF at the uniforms ``u[:m]`` into ``out[:m]``, cut to ``[low, high]``, a loop of its
    own for each kind (without branches, so SIMD): uniform, triangular (``par``: low, mode, high); pert (its
    table ``tq``: cubic Hermite in the normal score, :func:`pert_table`); normal and lognormal (``par``: mean, SD
    of the log, and the CDF at the cut's ends; the normal score of the cut probability by
    models.rng.ndtri_array, the same bits as ndtri).  ``cut``, ``z``: scratch of ``m``; ``node``, ``near``: of
    ``LOOKUP_BLOCK`` and four of ``LOOKUP_BLOCK``."""
    if kind == K_PERT:  # cubic Hermite in the normal score between the table's nodes
        _normal_scores(u, z, m)
        _pert_lookup(z, m, par, tq, low, high, out, cut, node, near)
    elif kind == K_UNIFORM:
        a, span = par[0], par[2] - par[0]
        for i in range(m):
            out[i] = min(max(a + u[i] * span, low), high)
    elif kind == K_TRIANGULAR:
        a, mode, b = par[0], par[1], par[2]
        c = (mode - a) / (b - a)
        for i in range(m):
            p = u[i]
            below = p < c
            s = math.sqrt(p * (b - a) * (mode - a) if below else (1.0 - p) * (b - a) * (b - mode))
            out[i] = min(max(a + s if below else b - s, low), high)
    else:
        for i in range(m):
            cut[i] = par[2] + u[i] * (par[3] - par[2])
        _normal_scores(cut, z, m)
        mu, sd = par[0], par[1]
        if kind == K_LOGNORMAL:
            for i in range(m):
                out[i] = min(max(math.exp(mu + sd * z[i]), low), high)
        else:
            for i in range(m):
                out[i] = min(max(mu + sd * z[i], low), high)


@pjit
def all_draws(u, kinds, par, table, lo, hi):
    """``(inputs, paths)``: each input's inverse CDF at its uniforms ``u[input, path]`` (:func:`_draw_input`),
    blocks of paths in parallel."""
    n = u.shape[1]
    out = np.empty(u.shape)
    width = 1024
    for b in numba.prange((n + width - 1) // width):
        first = b * width
        m = min(n, first + width) - first
        cut, z = np.empty(m), np.zeros(m)
        node = np.empty(LOOKUP_BLOCK, np.int64)
        near = (np.empty(LOOKUP_BLOCK), np.empty(LOOKUP_BLOCK), np.empty(LOOKUP_BLOCK), np.empty(LOOKUP_BLOCK))
        for q in range(kinds.shape[0]):
            _draw_input(u[q, first:first + m], m, kinds[q], par[q], table[q], lo[q], hi[q], out[q, first:first + m],
                        cut, z, node, near)
    return out


@jit(inline="always")
def _correlate_block(u, m, drivers, first, factor, cols, z):
    """The copula on ``m`` paths in place: input ``cols[j]``'s uniform (row of ``u``) becomes ``Phi(L z)`` of
    its row of the factor ``L`` (``factor[n_drivers + j]``) and the scores ``z`` (the drivers' from
    ``drivers[:, first + i]``, then the inputs' ``ndtri`` of their own uniforms), cut to ``[1e-300,
    1 - 2^-53]``; ``z``: scratch of ``(variables, m)``."""
    n_drivers = drivers.shape[0]
    for v in range(n_drivers):
        for i in range(m):
            z[v, i] = drivers[v, first + i]
    for j in range(cols.shape[0]):
        rng.ndtri_array(u[cols[j], :m], z[n_drivers + j, :m])
    for j in range(cols.shape[0]):
        row = factor[n_drivers + j]
        q = cols[j]
        for i in range(m):
            x = 0.0
            for v in range(n_drivers + j + 1):
                x += row[v] * z[v, i]
            u[q, i] = min(max(_ndtr(x), 1e-300), 1.0 - 2**-53)


@pjit
def input_values(rk, first, n, streams, draws, drivers, factor, cols, kinds, par, table, lo, hi, fits_int, fits_flt,
                 out):
    """``out[q, i]`` (``(inputs, n)``): each uncertain input's value on paths ``first .. first + n - 1`` in one
    pass, blocks of
    ``VALUES_BLOCK`` paths in parallel: the correlated inputs' uniforms (draw ``draws[q]`` on ``streams[q]``,
    as :func:`all_uniforms`) through the copula first (:func:`_correlate_block`: ``cols``, the correlated
    inputs; ``drivers``, the drivers' scores on the paths), then input by input its own uniforms (unless
    correlated) and its inverse CDF (:func:`_draw_input`), then each refitted table's parameters (``fits_int``,
    ``fits_flt``: :func:`_fit_block`) into the rows after the inputs'.  One input at a time over many paths, so its PERT
    table stays in cache (every input's at once would not).  ``out`` is the caller's: a run keeps one (writing
    into memory fresh from the system costs about as much as the draws)."""
    n_inputs = streams.shape[0]
    n_cols = cols.shape[0]
    width = VALUES_BLOCK
    for b in numba.prange((n + width - 1) // width):
        start = b * width
        m = min(n, start + width) - start
        uc = np.empty((n_cols, width))  # the correlated inputs' uniforms, then Phi(L z)
        if n_cols > 0:
            for j in range(n_cols):
                rng.uniform_block(rk, first + start, streams[cols[j]], draws[cols[j]], uc[j:j + 1], uc[:0])
            _correlate_block(uc, m, drivers, start, factor, np.arange(n_cols),
                             np.empty((drivers.shape[0] + n_cols, m)))
        buf = np.empty((1, width))
        cut, z, res = np.empty(width), np.zeros(width), np.empty(width)
        node = np.empty(LOOKUP_BLOCK, np.int64)
        near = (np.empty(LOOKUP_BLOCK), np.empty(LOOKUP_BLOCK), np.empty(LOOKUP_BLOCK), np.empty(LOOKUP_BLOCK))
        for q in range(n_inputs):
            jc = -1
            for j in range(n_cols):
                if cols[j] == q:
                    jc = j
            if jc < 0:
                rng.uniform_block(rk, first + start, streams[q], draws[q], buf, buf[:0])
            else:
                for i in range(width):
                    buf[0, i] = uc[jc, i] if i < m else 0.5
            # the whole block (the paths past the last drawn, never used): a trip count the compiler knows runs
            # these loops half again as fast
            _draw_input(buf[0], width, kinds[q], par[q], table[q], lo[q], hi[q], res, cut, z, node, near)
            row = out[q]
            for i in range(m):
                row[start + i] = res[i]
        if fits_int.shape[0] > 0:
            _fit_block(fits_int, fits_flt, out, n_inputs, start, m)


@jit(inline="always")
def _fit_block(fits_int, fits_flt, out, first_row, start, m):
    """Each refitted table's least-squares fit on paths ``start .. start + m - 1`` of ``out`` (its points'
    probabilities, never and start from the inputs' rows where uncertain, else the table's own), its two
    parameters into rows ``first_row + 2 f`` and ``+ 1``: the lognormal :data:`fits.LANES` paths side by side
    (:func:`fits.fit_lognormal_lanes`), the others one path at a time (:func:`fits.fit_family`).

    ``fits_int[f]``: family code, points, the never's and the start's input rows, each point's (-1: fixed);
    ``fits_flt[f]``: never, start, then per point (MAX_PIECES each) probability, years after the valuation date,
    years after the start and their logarithm."""
    n_pieces = timing.MAX_PIECES
    lanes = fits.LANES
    p_raw = np.empty((n_pieces, lanes))
    pn = np.empty((n_pieces, lanes))
    r = np.empty((n_pieces, lanes))
    log_r = np.empty((n_pieces, lanes))
    never = np.empty(lanes)
    a, b = np.empty(lanes), np.empty(lanes)
    p_one, r_one, log_one, params, one_work = (np.empty(n_pieces), np.empty(n_pieces), np.empty(n_pieces),
                                               np.empty(2), np.empty((14, n_pieces)))
    for f in range(fits_int.shape[0]):
        code, n, never_row, start_row = fits_int[f, 0], fits_int[f, 1], fits_int[f, 2], fits_int[f, 3]
        for lo in range(0, m, lanes):
            mm = min(lanes, m - lo)
            for i in range(mm):  # (simple loops, each of its own arrays: SIMD)
                never[i] = fits_flt[f, 0]
            if never_row >= 0:
                src = out[never_row]
                for i in range(mm):
                    never[i] = src[start + lo + i]
            for j in range(n):
                p_row = fits_int[f, 4 + j]
                pj, nj, rj, lj = p_raw[j], pn[j], r[j], log_r[j]
                for i in range(mm):
                    pj[i] = fits_flt[f, 2 + j]
                if p_row >= 0:
                    src = out[p_row]
                    for i in range(mm):
                        pj[i] = src[start + lo + i]
                for i in range(mm):
                    nj[i] = pj[i] / (1.0 - never[i])
                if start_row >= 0:  # the points' years after a moved start
                    src = out[start_row]
                    by = fits_flt[f, 2 + n_pieces + j]
                    for i in range(mm):
                        rj[i] = by - src[start + lo + i]
                    for i in range(mm):
                        lj[i] = math.log(rj[i])
                else:
                    for i in range(mm):
                        rj[i] = fits_flt[f, 2 + 2 * n_pieces + j]
                    for i in range(mm):
                        lj[i] = fits_flt[f, 2 + 3 * n_pieces + j]
            if code == timing.LOGNORMAL:  # every lane (past mm: the first's again, never used): a known count
                for j in range(n):
                    nj, lj = pn[j], log_r[j]
                    for i in range(mm, lanes):
                        nj[i] = nj[0]
                        lj[i] = lj[0]
                fits.fit_lognormal_lanes(n, pn, log_r, a, b)
            else:
                for i in range(mm):
                    for j in range(n):
                        p_one[j], r_one[j], log_one[j] = p_raw[j, i], r[j, i], log_r[j, i]
                    fits.fit_family(code, n, p_one, r_one, log_one, never[i], params, one_work)
                    a[i], b[i] = params[0], params[1]
            dst = out[first_row + 2 * f]
            for i in range(mm):
                dst[start + lo + i] = a[i]
            dst = out[first_row + 2 * f + 1]
            for i in range(mm):
                dst[start + lo + i] = b[i]


@pjit
def all_uniforms(rk, first, n, streams, draws):
    """``(inputs, paths)``: the first uniform of draw ``draws[q]`` on ``streams[q]`` for paths ``first ..
    first + n - 1`` (as the kernel draws them), blocks of paths in parallel, each path's number its own."""
    n_inputs = streams.shape[0]
    out = np.empty((n_inputs, n))
    width = 2048
    for b in numba.prange((n + width - 1) // width):
        lo = b * width
        _block_uniforms(rk, first + lo, min(n, lo + width) - lo, streams, draws, np.empty((1, width)), out, lo)
    return out


@jit(inline="always")
def _block_uniforms(rk, path0, m, streams, draws, buf, out, col):
    """``out[q, col + i]``: the first uniform of draw ``draws[q]`` on ``streams[q]`` for path ``path0 + i``,
    ``i < m`` (``buf``: scratch of one row of at least ``m``)."""
    for q in range(streams.shape[0]):
        rng.uniform_block(rk, path0, streams[q], draws[q], buf, buf[:0])
        for i in range(m):
            out[q, col + i] = buf[0, i]


def stream_uniforms(rk: np.ndarray, first: int, n: int, stream: int, draw: int) -> np.ndarray:
    """One source's uniforms on paths ``first .. first + n - 1`` (see :func:`all_uniforms`)."""
    return all_uniforms(rk, np.int64(first), np.int64(n), np.array([stream], np.int64), np.array([draw], np.int64))[0]


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def pert_shapes(low: float, mode: float, high: float) -> tuple[float, float]:
    """The Beta shapes of a PERT distribution on ``[low, high]`` with this mode."""
    return 1.0 + 4.0 * (mode - low) / (high - low), 1.0 + 4.0 * (high - mode) / (high - low)


def normal_parameters(r: InputRange) -> tuple[float, float, bool]:
    """(mean, SD, on the log scale) of a normal or lognormal whose 5th and 95th percentiles are low and high."""
    log = r.dist == "lognormal"
    lo, hi = (math.log(r.low), math.log(r.high)) if log else (r.low, r.high)
    return 0.5 * (lo + hi), (hi - lo) / (2.0 * Z95), log


def cut_range(scenario: Any, key: str, r: InputRange) -> tuple[float, float]:
    """Where an input's draws lie: its bounds (uniform, triangular, pert), or its allowed range, an open end a
    hair inside (normal, lognormal)."""
    if r.dist in BOUNDED:
        return r.low, r.high
    lo, hi, open_lo, open_hi = bounds(scenario, key)
    lo = -math.inf if lo is None else (np.nextafter(lo, math.inf) if open_lo else lo)
    hi = math.inf if hi is None else (np.nextafter(hi, -math.inf) if open_hi else hi)
    if r.dist == "lognormal":
        lo = max(lo, np.nextafter(0.0, 1.0))
    return float(lo), float(hi)


# ------------------------------------------------------------------ correlations


@dataclass(frozen=True)
class Copula:
    """The correlated variables (drivers first, then inputs), the requested and used rank correlations and the
    factor of the normal scores' correlation matrix."""

    names: list[str]
    drivers: int  # the first `drivers` names are drivers
    requested: np.ndarray  # rank correlations as given (0 where none is)
    used: np.ndarray  # ... or their nearest valid matrix (repaired)
    factor: np.ndarray  # lower Cholesky factor of the normal scores' correlations (from `used`)
    repaired: bool


def build_copula(scenario: Any) -> Copula | None:
    """The copula of the scenario's correlations (see the module docstring); None without any.  A matrix that
    cannot hold was refused by the scenario's checks unless it asks for the nearest valid one."""
    if not scenario.correlations:
        return None
    names, n_drivers, rank, _ = correlation_matrix(scenario)
    normal = np.vectorize(rank_to_normal)(rank)
    np.fill_diagonal(normal, 1.0)
    repaired = False
    if not is_psd(normal):
        fixed = np.zeros(normal.shape, bool)
        fixed[:n_drivers, :n_drivers] = True
        normal = nearest_correlation(normal, fixed)
        repaired = True
    used = np.vectorize(normal_to_rank)(normal)
    np.fill_diagonal(used, 1.0)
    return Copula(names=names, drivers=n_drivers, requested=rank, used=used, factor=cholesky_psd(normal),
                  repaired=repaired)


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class UncertainPlan:
    """The uncertain inputs of a compiled scenario and how to draw them on any path range."""

    inputs: list[Input]
    copula: Copula | None
    tables: InputTables
    growth: np.ndarray | None = None  # (3, K+1) coefficients of the revenue path's score (when correlated)
    event_counters: dict[str, tuple[int, int]] = field(default_factory=dict)
    fits: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 4 + timing.MAX_PIECES), np.int64),
                                           np.zeros((0, 2 + 4 * timing.MAX_PIECES)))  # see _fits

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.inputs]

    @property
    def rows(self) -> int:
        """Rows of :meth:`columns`: each input's, then each refitted table's two parameters."""
        return len(self.inputs) + 2 * self.fits[0].shape[0]

    def values(self, key: np.ndarray, first: int, n: int) -> np.ndarray:
        """``(n, inputs)``: each uncertain input's value on paths ``first .. first + n - 1``."""
        return self.columns(key, first, n)[: len(self.inputs)].T

    def columns(self, key: np.ndarray, first: int, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """``(rows, n)``: each uncertain input's values on paths ``first .. first + n - 1``, then each refitted
        table's parameters (:attr:`rows`; as the kernel reads them), into ``out`` (C-contiguous, that shape)
        where given."""
        out = np.empty((self.rows, n)) if out is None else out
        rk = rng.round_keys(np.asarray(key, np.uint32))
        c = self.copula
        if c is None:
            drivers, cols, factor = np.zeros((0, n)), np.zeros(0, np.int64), np.zeros((0, 0))
        else:
            col = {inp.key: j for j, inp in enumerate(self.inputs)}
            drivers = self._driver_scores(key, first, n)
            cols = np.array([col[name] for name in c.names[c.drivers:]], np.int64)
            factor = np.ascontiguousarray(c.factor)
        input_values(rk, np.int64(first), np.int64(n), np.array([i.stream for i in self.inputs], np.int64),
                     np.array([i.draw for i in self.inputs], np.int64), drivers, factor, cols, *self._constants,
                     *self.fits, out)
        return out

    @functools.cached_property
    def _constants(self) -> tuple[np.ndarray, ...]:
        """The inputs' kinds, constants, PERT tables and cuts, stacked for :func:`all_draws`."""
        nodes = max(inp.table.shape[0] for inp in self.inputs)
        table = np.zeros((len(self.inputs), nodes, 2))
        for q, inp in enumerate(self.inputs):
            table[q, : inp.table.shape[0]] = inp.table
        return (np.array([inp.kind for inp in self.inputs], np.int64), np.array([inp.par for inp in self.inputs]),
                table, np.array([inp.lo for inp in self.inputs]), np.array([inp.hi for inp in self.inputs]))

    def _raw_uniforms(self, key: np.ndarray, first: int, n: int) -> np.ndarray:
        rk = rng.round_keys(np.asarray(key, np.uint32))
        return all_uniforms(rk, np.int64(first), np.int64(n), np.array([i.stream for i in self.inputs], np.int64),
                            np.array([i.draw for i in self.inputs], np.int64))

    def _driver_scores(self, key: np.ndarray, first: int, n: int) -> np.ndarray:
        """``(drivers, n)``: the correlated drivers' normal scores on the paths."""
        c = self.copula
        rk = rng.round_keys(np.asarray(key, np.uint32))
        out = np.empty((c.drivers, n))
        for v, name in enumerate(c.names[: c.drivers]):
            if name == "revenue_growth":
                out[v] = growth_scores(rk, np.int64(first), np.int64(n), self.growth)
            else:
                stream, draw = (rng.STREAM_DRIVERS, 0) if name == "agi_declared" else self.event_counters[name]
                out[v] = normal_scores(stream_uniforms(rk, first, n, stream, draw))
        return out

    def scores(self, key: np.ndarray, first: int, n: int) -> np.ndarray:
        """``(n, copula variables)``: the normal scores before the copula (drivers', then inputs')."""
        c = self.copula
        u = self._raw_uniforms(key, first, n)
        col = {inp.key: j for j, inp in enumerate(self.inputs)}
        inputs = np.array([u[col[name]] for name in c.names[c.drivers:]]).reshape(-1, n)
        return np.vstack([self._driver_scores(key, first, n), normal_scores(inputs)]).T

    def achieved(self, key: np.ndarray, paths: int, first: int = 0) -> list[dict[str, Any]]:
        """The rank correlations on the run's paths (the first :data:`SAMPLE_LIMIT`), beside their targets: one
        row per pair of the copula's variables, with the standard error of each achieved value."""
        c = self.copula
        if c is None:
            return []
        n = min(paths, SAMPLE_LIMIT)
        z_in = self.scores(key, first, n)
        z = z_in @ c.factor.T
        ranks = np.column_stack([stats.rankdata(z[:, v]) for v in range(len(c.names))])
        rho = np.corrcoef(ranks, rowvar=False) if n > 1 else np.eye(len(c.names))
        rows = []
        for i, j in itertools.combinations(range(len(c.names)), 2):
            r = float(rho[i, j]) if n > 3 else math.nan
            se = (1.0 - r * r) * math.sqrt((1.0 + r * r / 2.0) / (n - 3)) if n > 3 else math.nan  # Bonett-Wright
            rows.append({"between": (c.names[i], c.names[j]), "target": float(c.requested[i, j]),
                         "used": float(c.used[i, j]), "achieved": r, "se": se, "paths": n})
        return rows


@pjit
def normal_scores(u):
    """``ndtri`` of each uniform (an array of one or two dimensions), blocks in parallel."""
    flat = u.reshape(u.size)
    out = np.empty(u.size)
    width = 4096
    for b in numba.prange((u.size + width - 1) // width):
        lo = b * width
        hi = min(u.size, lo + width)
        rng.ndtri_array(flat[lo:hi], out[lo:hi])
    return out.reshape(u.shape)


@jit(inline="always")
def _ndtr(x):
    """The standard normal CDF (as cephes' ndtr: erf near 0, erfc beyond)."""
    y = x * (0.5 * math.sqrt(2.0))
    if abs(y) < 0.5 * math.sqrt(2.0):
        return 0.5 + 0.5 * math.erf(y)
    tail = 0.5 * math.erfc(abs(y))
    return 1.0 - tail if y > 0 else tail


@pjit
def growth_scores(rk, first, n, coef):
    """The revenue path's score on each path: ``sum_k coef[:, k] . z_k`` over its step normals (the two shock
    normals and the third growth normal, as the kernel draws them), standardised."""
    n_steps = coef.shape[1] - 1
    norm = 0.0
    for k in range(1, n_steps + 1):
        for j in range(3):
            norm += coef[j, k] * coef[j, k]
    norm = math.sqrt(norm) if norm > 0 else 1.0
    out = np.zeros(n)
    width = 256
    for b in numba.prange((n + width - 1) // width):  # blocks of paths in parallel, each path's sum its own
        lo = b * width
        m = min(width, n - lo)
        shocks = np.empty((2, n_steps, width))
        third = np.empty((n_steps, width))
        jump_u = np.empty((n_steps, width))
        z = np.empty(n_steps * width)
        rng.uniform_block(rk, first + lo, rng.STREAM_SHOCKS, 1, shocks[0], shocks[1])
        rng.uniform_block(rk, first + lo, rng.STREAM_JUMPS, 1, jump_u, third)
        for j in range(3):
            src = shocks[j] if j < 2 else third
            rng.ndtri_array(src.reshape(n_steps * width), z)
            zz = z.reshape(n_steps, width)
            for k in range(1, n_steps + 1):
                c = coef[j, k]
                if c != 0.0:
                    for ii in range(m):
                        out[lo + ii] += c * zz[k - 1, ii]
    for i in range(n):
        out[i] /= norm
    return out


def growth_coefficients(model: Any) -> np.ndarray:
    """``(3, K+1)``: the Gaussian part of log revenue at the horizon as a combination of each step's normals
    (the revenue shock's, the growth's second and third), from the model tables: a growth shock ``G_k`` adds
    ``c_k G_k`` with ``c_k = sum over later steps j of B_j prod(e_l, k < l < j)``."""
    n = len(model.t) - 1
    c = np.zeros(n + 1)
    for k in range(n - 1, 0, -1):
        c[k] = model.growth_mean[k + 1] + model.growth_decay[k + 1] * c[k + 1]
    vol = model.revenue[3] * model.sqrt_dt  # SIGMA
    out = np.zeros((3, n + 1))
    out[0, 1:] = (model.int_z1 + vol + c * model.growth_z1)[1:]
    out[1, 1:] = (model.int_z2 + c * model.growth_z2)[1:]
    out[2, 1:] = (c * model.growth_z3)[1:]
    return out


def step_classes(dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each step's class of length (lengths equal to 12 significant digits share one) and each class's length."""
    cls = np.zeros(len(dt), np.int64)
    lengths: list[float] = []
    for k in range(1, len(dt)):
        for c, h in enumerate(lengths):
            if abs(h - dt[k]) <= 1e-12 * h:
                cls[k] = c
                break
        else:
            cls[k] = len(lengths)
            lengths.append(float(dt[k]))
    return cls, np.array(lengths or [0.0])


def no_inputs(n_steps: int, n_sources: int) -> InputTables:
    """The tables of a run without uncertain inputs."""
    return InputTables(
        target=np.zeros(0, np.int64), index=np.zeros(0, np.int64), slot=np.zeros(0, np.int64),
        flags=np.zeros(N_FLAGS, np.uint8), base_raw=np.zeros(len(RAW)), step_class=np.zeros(n_steps + 1, np.int64),
        class_h=np.zeros(1), margin_w=np.zeros((n_steps + 1, 1)), margin_base=np.zeros(1),
        jump_cols=np.zeros(1), qp_n=np.zeros(n_sources, np.int64), qp_p=np.zeros((n_sources, timing.MAX_PIECES)),
        qp_r=np.zeros((n_sources, timing.MAX_PIECES + 1)), qp_log_r=np.zeros((n_sources, timing.MAX_PIECES + 1)),
        qp_tail_never=np.zeros(n_sources, np.uint8), qp_fit_row=np.full(n_sources, -1, np.int64),
        qp_by=np.zeros((n_sources, timing.MAX_PIECES)), qp_fit=np.zeros(n_sources, np.int64),
        qp_start=np.zeros(n_sources, np.uint8))


def plan(scenario: Any, t: np.ndarray, model: Any, timing_sources: list[str], margin_weights: np.ndarray,
         margin_base: np.ndarray, jump_columns: int) -> UncertainPlan:
    """The uncertain inputs of a scenario, checked, and the kernel's tables for them.

    ``timing_sources``: key paths of the timing tables in the kernel's order (declaration, lag, then each event
    and deadline completion); ``margin_weights``: each step's margin as weights of the margin points.
    """
    names = dist_inputs(scenario)
    inputs, target, index, slot = [], [], [], []
    src_of = {k: i for i, k in enumerate(timing_sources)}
    tables_of = timing_keys(scenario)
    n_src = len(timing_sources)
    qp_n = np.zeros(n_src, np.int64)
    qp_p = np.zeros((n_src, timing.MAX_PIECES))
    qp_r = np.zeros((n_src, timing.MAX_PIECES + 1))
    qp_never = np.zeros(n_src, np.uint8)
    qp_by = np.zeros((n_src, timing.MAX_PIECES))
    qp_fit = np.zeros(n_src, np.int64)
    qp_start = np.zeros(n_src, np.uint8)
    flags = np.zeros(N_FLAGS, np.uint8)
    for key in names:
        inputs.append(make_input(scenario, key, scenario.ranges[key]))
        code, idx, sl = _target(scenario, key, src_of, tables_of)
        target.append(code)
        index.append(idx)
        slot.append(sl)
        if code in (T_TIMING, T_QUANTILE_P) and getattr(tables_of[timing_sources[idx]], "family", "") == "quantiles":
            spec = tables_of[timing_sources[idx]]
            start = _years(scenario, spec.start) if spec.start is not None else 0.0
            n = len(spec.points)
            qp_n[idx] = n
            qp_p[idx, :n] = [p.p for p in spec.points]
            qp_r[idx, 1:n + 1] = [_years(scenario, p.by) - start for p in spec.points]
            qp_by[idx, :n] = [_years(scenario, p.by) for p in spec.points]
            qp_never[idx] = spec.tail == "never"
            qp_fit[idx] = FIT_CODES[spec.fit]
            qp_start[idx] |= code == T_TIMING and sl == 0
    for code, idx in zip(target, index, strict=True):
        if code in (T_REVENUE, T_HAIRCUT, T_HAIRCUT_YEARS, T_MARGIN):
            flags[F_REVENUE] = 1
        if code in (T_HAIRCUT, T_HAIRCUT_YEARS) or (code == T_REVENUE and idx != R_MULTIPLE):
            flags[F_DYNAMICS] = 1  # the margin and the exit multiple do not change the revenue path
        if code == T_MARGIN:
            flags[F_MARGIN] = 1
        if code in (T_HAIRCUT, T_HAIRCUT_YEARS):
            flags[F_HAIRCUT] = 1
        if code == T_REVENUE:
            flags[F_LOG_X0] |= idx in (R_INITIAL, R_MARKET)
            flags[F_COEF] |= idx in (R_KAPPA, R_SG, R_RHO)
            flags[F_THREE] |= idx in (R_SG, R_RHO)
            flags[F_JUMPS] |= idx == R_LAMBDA
            flags[F_MARKET] |= idx == R_MARKET
            flags[F_LOG_JUMP] |= idx == R_JUMP_LOSS
    flags[F_ANY] = 1 if inputs else 0
    rev = scenario.revenue
    base_raw = np.array([rev.initial, rev.initial_growth, rev.long_run_growth, rev.mean_reversion, rev.volatility,
                         rev.growth_volatility, rev.correlation, rev.jump_intensity, rev.jump_loss,
                         rev.agi_growth_uplift, rev.exit_multiple,
                         math.inf if rev.market_size is None else rev.market_size], np.float64)
    dt = np.concatenate(([0.0], np.diff(t)))
    cls, class_h = step_classes(dt)
    tables = InputTables(
        target=np.array(target, np.int64), index=np.array(index, np.int64), slot=np.array(slot, np.int64),
        flags=flags, base_raw=base_raw, step_class=cls, class_h=class_h,
        margin_w=np.ascontiguousarray(margin_weights), margin_base=np.asarray(margin_base, np.float64),
        jump_cols=np.zeros(max(jump_columns, 1)), qp_n=qp_n, qp_p=qp_p, qp_r=qp_r, qp_log_r=_log_breaks(qp_r),
        qp_tail_never=qp_never, qp_by=qp_by, qp_fit=qp_fit, qp_start=qp_start,
        qp_fit_row=np.full(len(qp_n), -1, np.int64))
    fits, qp_fit_row = _fits(scenario, [tables_of[k] for k in timing_sources], target, index, slot, qp_n, qp_fit,
                             qp_p, qp_by, qp_r, len(inputs))
    tables = tables._replace(qp_fit_row=qp_fit_row)
    copula = build_copula(scenario)
    growth = growth_coefficients(model) if copula is not None and "revenue_growth" in copula.names else None
    counters = {name: rng.named_counter(f"event:{name}") for name in scenario.events}
    return UncertainPlan(inputs=inputs, copula=copula, tables=tables, growth=growth, event_counters=counters,
                         fits=fits)


def _fits(scenario: Any, specs: list[Any], target: list[int], index: list[int], slot: list[int], qp_n: np.ndarray,
          qp_fit: np.ndarray, qp_p: np.ndarray, qp_by: np.ndarray, qp_r: np.ndarray,
          n_inputs: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The least-squares tables each path refits (the draw pass fits them, :func:`_fit_block`), as
    ``(fits_int, fits_flt)`` (see :data:`FIT_INT`, :data:`FIT_FLT`), and each timing source's row of its two fitted
    parameters in the values (-1: none)."""
    n_pieces = timing.MAX_PIECES
    rows, ints, flts = np.full(len(qp_n), -1, np.int64), [], []
    for src in range(len(qp_n)):
        if qp_n[src] == 0 or qp_fit[src] == timing.PIECEWISE:
            continue
        spec, n = specs[src], int(qp_n[src])
        fi = np.full(4 + n_pieces, -1, np.int64)
        fi[0], fi[1] = qp_fit[src], n
        for q, (code, idx, sl) in enumerate(zip(target, index, slot, strict=True)):
            if idx != src:
                continue
            if code == T_QUANTILE_P:
                fi[4 + sl] = q
            elif code == T_TIMING and sl in (0, 1):
                fi[3 - sl] = q  # the start's row in fi[3], the never's in fi[2]
        ff = np.zeros(2 + 4 * n_pieces)
        ff[0] = spec.never
        ff[1] = _years(scenario, spec.start) if spec.start is not None else 0.0
        ff[2:2 + n] = qp_p[src, :n]
        ff[2 + n_pieces:2 + n_pieces + n] = qp_by[src, :n]
        ff[2 + 2 * n_pieces:2 + 2 * n_pieces + n] = qp_r[src, 1:n + 1]
        ff[2 + 3 * n_pieces:2 + 3 * n_pieces + n] = _log_breaks(qp_r[src, 1:n + 1])
        rows[src] = n_inputs + 2 * len(ints)
        ints.append(fi)
        flts.append(ff)
    return (np.array(ints, np.int64).reshape(-1, 4 + n_pieces), np.array(flts).reshape(-1, 2 + 4 * n_pieces)), rows


def _log_breaks(r: np.ndarray) -> np.ndarray:
    """The logarithms of a table's breaks (``math.log`` of each, as a path with a moved start takes them)."""
    out = np.full(r.shape, -math.inf)
    for idx in zip(*np.nonzero(r > 0), strict=True):
        out[idx] = math.log(float(r[idx]))
    return out


def _years(scenario: Any, x: Any) -> float:
    return scenario.years(x) if not isinstance(x, (int, float)) else float(x)


def _target(scenario: Any, key: str, src_of: dict[str, int], tables_of: dict[str, Any]) -> tuple[int, int, int]:
    """What the input at ``key`` changes: (T_* code, index, slot)."""
    parts = keys.parse(key)
    if parts[0] == "revenue":
        if parts[1] == "margin":
            return T_MARGIN, (parts[2] if len(parts) > 2 else 0), 0
        return T_REVENUE, RAW.index(parts[1]), 0
    if key == "agi.never_verified":
        return T_NEVER_VERIFIED, 0, 0
    if parts[0] == "deadlines" and parts[2] in ("growth_haircut", "haircut_years"):
        return (T_HAIRCUT if parts[2] == "growth_haircut" else T_HAIRCUT_YEARS), parts[1], 0
    for prefix, spec in tables_of.items():
        if key.startswith(prefix + "."):
            src = src_of[prefix]
            rest = keys.parse(key[len(prefix) + 1:])
            if rest[0] == "points":
                return T_QUANTILE_P, src, rest[1]
            if rest[0] == "pieces":
                start = _years(scenario, spec.start) if spec.start is not None else 0.0
                shift = 1 if _years(scenario, spec.pieces[0].start) - start > 0 else 0  # a zero piece goes first
                return T_TIMING, src, timing.MAX_PIECES + 4 + rest[1] + shift
            return T_TIMING, src, _PAR_SLOTS[rest[0]]
    raise ValueError(f"no kernel target for {key}")


# ------------------------------------------------------------------ compiled helpers for the kernel


@jit
def step_coefficients_paths(h, kappa, s, rho, m, out, c, work):
    """:meth:`models.revenue.RevenueModel.step_tables` (e, B, int_z1, int_z2, growth_z1..3) for one step length
    ``h`` and the first ``m`` paths' own kappa, growth volatility and correlation, side by side (SIMD), into
    ``out[:, c, :m]``; the same bits, path by path, as one path at a time.  Below ``kappa h = 1`` each path's
    series runs on until every path's has stopped: the later terms are below a quarter of an ulp of each sum
    (see :func:`models.revenue.integrated_ou`), so they change no sum.  ``work``: scratch of ``(7, m)`` or
    more."""
    x, term, b, v_i, c_ig, v_g, c_wi = work[0], work[1], work[2], work[3], work[4], work[5], work[6]
    series = False
    for ii in range(m):
        x[ii] = kappa[ii] * h
        term[ii] = 1.0
        b[ii] = v_i[ii] = c_ig[ii] = v_g[ii] = c_wi[ii] = 0.0
        series |= x[ii] < 1.0
    p2 = 1.0
    for n in range(0, 60 if series else 0):
        if n > 0:
            p2 *= 2.0
        for ii in range(m):
            t = term[ii] * (-x[ii] / n) if n > 0 else term[ii]
            term[ii] = t
            b[ii] += t / (n + 1)
            v_g[ii] += t * p2 / (n + 1)
            c_wi[ii] += t / ((n + 1) * (n + 2))
            c_ig[ii] -= t * (1.0 - 2.0 * p2) / ((n + 1) * (n + 2))
            v_i[ii] += t * (4.0 * p2 - 2.0) / ((n + 1) * (n + 2) * (n + 3))
        done = True
        for ii in range(m):
            if x[ii] < 1.0:
                t = abs(term[ii])
                done &= t < 1e-300 or (n >= 3 and t * p2 < 1e-17 * min(abs(b[ii]), abs(v_g[ii]), abs(c_wi[ii]),
                                                                       abs(c_ig[ii]), abs(v_i[ii])))
        if done:
            break
    root = math.sqrt(h)
    for ii in range(m):
        xx = x[ii]
        k = kappa[ii]
        e = math.exp(-xx)
        if xx < 1.0:
            bb, vi, cig, vg, cwi = h * b[ii], h**3 * v_i[ii], h * h * c_ig[ii], h * v_g[ii], h * h * c_wi[ii]
        else:
            bb = -math.expm1(-xx) / k
            half = -math.expm1(-2 * xx) / (2 * k)
            vi = (h - 2 * bb + half) / k**2
            cig = (bb - half) / k
            vg = half
            cwi = (h - bb) / k
        sg = s[ii]
        vi = sg * sg * vi
        cig = sg * sg * cig
        vg = sg * sg * vg
        cwi = rho[ii] * sg * cwi
        cwg = rho[ii] * sg * bb
        i1 = cwi / root if h > 0 else 0.0
        g1 = cwg / root if h > 0 else 0.0
        i2 = math.sqrt(max(vi - i1 * i1, 0.0))
        g2 = (cig - i1 * g1) / i2 if i2 > 0 else 0.0
        g3 = math.sqrt(max(vg - g1 * g1 - g2 * g2, 0.0))
        out[0, c, ii] = e
        out[1, c, ii] = bb
        out[2, c, ii] = i1
        out[3, c, ii] = i2
        out[4, c, ii] = g1
        out[5, c, ii] = g2
        out[6, c, ii] = g3


@jit
def poisson_tail_paths(mean, m, out, c, pmf, term, acc):
    """``out[c, n - 1, i] = P(N >= n)`` for Poisson counts with the first ``m`` paths' means, side by side (SIMD):
    each tail summed from the far end (accurate where it is tiny), ``1 - P(0)`` exact above a mean of 1; ``pmf``:
    scratch of ``(columns + 11, m)`` or more (the terms, ten beyond the columns kept); ``term``, ``acc``: of ``m``
    (the running term and sums: arrays of their own, so each loop runs in SIMD)."""
    cols = out.shape[1]
    top = pmf.shape[0] - 1
    for ii in range(m):
        term[ii] = math.exp(-mean[ii])
    for ii in range(m):
        pmf[0, ii] = term[ii]
    for j in range(1, top + 1):
        for ii in range(m):
            term[ii] = term[ii] * (mean[ii] / j)
        row = pmf[j]
        for ii in range(m):
            row[ii] = term[ii]
    for j in range(cols):
        row = out[c, j]
        for ii in range(m):
            row[ii] = 0.0
    for ii in range(m):
        acc[ii] = 0.0
    for j in range(top, 0, -1):
        row = pmf[j]
        for ii in range(m):
            acc[ii] += row[ii]
        if j <= cols:
            row = out[c, j - 1]
            for ii in range(m):
                row[ii] = acc[ii] if mean[ii] > 0.0 else 0.0
    for ii in range(m):
        if mean[ii] > 1.0:
            out[c, 0, ii] = -math.expm1(-mean[ii])
