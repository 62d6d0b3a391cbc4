"""The engine: one fused kernel evaluates every structure on the same paths.

For each path the kernel samples the drivers (AGI declaration and
verification, events, deadlines), steps revenue through time and evaluates
every clause of every structure at every step, so all structures see the
same random numbers (common random numbers) and "B beats A on this path" is
meaningful.  Only per-path PVs and a few drivers leave the kernel.

Path ``i`` always uses the random numbers keyed by ``i`` (see
:mod:`models.rng`), and each path writes only its own rows: results are
identical, bit for bit, for any thread count and any chunk size.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numba
import numpy as np

from models import rng
from models._jit import jit, pjit
from models.revenue import G0, LOG_JUMP, LOG_R0, MULTIPLE, UPLIFT, growth_step, log_revenue_step, overlap
from models.timing import sample_time
from valuation.compile import (
    COND_DEADLINE,
    COND_EVENT,
    EQUITY_STAKE,
    FIRST_EVENT,
    PAYMENT,
    PROFIT_SHARE,
    REVENUE_SHARE,
    SRC_DECLARED,
    SRC_VERIFIED,
    TERM_DATE,
    TERM_UNUSED,
    Compiled,
)

BLOCK = 1024  # paths per parallel work item: scratch and cash-flow sums are kept per block

# Draw numbers on the per-path driver stream.
DRAW_DECLARATION, DRAW_LAG, DRAW_VERIFIED, DRAW_FIRST_EVENT = 0, 1, 2, 3


@jit
def _trigger_time(src, vals, times):
    """Earliest of a clause's trigger terms (inf when it has none)."""
    best = np.inf
    for m in range(src.shape[0]):
        s = src[m]
        if s == TERM_UNUSED:
            continue
        v = vals[m] if s == TERM_DATE else times[s] + vals[m]
        if v < best:
            best = v
    return best


@jit
def _revenue_share(rev_frac, rate, cap, after, state):
    """Payment of one step; ``state[0]`` is the cumulative payment at the rate."""
    due = rate * rev_frac
    cum = state[0]
    if cum + due <= cap:
        state[0] = cum + due
        return due
    room = cap - cum if cap > cum else 0.0
    base_left = rev_frac - (room / rate if rate > 0.0 else 0.0)
    state[0] = cap
    return room + (base_left if base_left > 0.0 else 0.0) * after


@jit
def _profit_share(profit, tier_rate, tier_until, by_profit, carry, state):
    """Payment of one step from positive profit walked through the tiers.

    ``state[0]``: the tier basis so far (payee receipts or cumulative profit);
    ``state[1]``: losses still to recover (with loss carry-forward).
    """
    if carry:
        if profit <= 0.0:
            state[1] -= profit
            return 0.0
        used = profit if profit < state[1] else state[1]
        state[1] -= used
        profit -= used
    if profit <= 0.0:
        return 0.0
    pay = 0.0
    for k in range(tier_rate.shape[0]):
        until = tier_until[k]
        if state[0] >= until:
            continue
        r = tier_rate[k]
        room = until - state[0]
        if by_profit:
            take = profit if profit < room else room
            pay += r * take
            state[0] += take
            profit -= take
        elif r * profit <= room:
            pay += r * profit
            state[0] += r * profit
            profit = 0.0
        else:
            pay += room
            state[0] = until
            profit -= room / r
        if profit <= 0.0:
            break
    return pay


@jit
def _book(acc, flows, s, payer, payee, amount, df_payer, df_payee, class_payer, class_payee, slot):
    """Book a flow: discounted into the path's PVs, undiscounted into the expected cash flows."""
    if payer >= 0:
        acc[s, payer] -= amount * df_payer
        flows[s, payer, class_payer, slot] -= amount
    acc[s, payee] += amount * df_payee
    flows[s, payee, class_payee, slot] += amount


@jit
def _simulate_path(path, key, t, dt, sqrt_dt, growth_decay, growth_shock, jump_prob, margin, rev,
                   decl_code, decl_par, lag_code, lag_par, never_verified, ev_code, ev_par,
                   dl_date, dl_src, dl_haircut, dl_haircut_end,
                   cl_type, cl_struct, cl_payer, cl_payee, cl_df_payer, cl_df_payee, cl_term_src, cl_term_val,
                   cl_rate, cl_par, cl_tier_rate, cl_tier_until, cl_cond, cl_cond_date, cl_time_df, df,
                   req_deadlines, cl_class_payer, cl_class_payee, cl_slot,
                   times, met, window, state, acc, block_flows, revenue_path, revenue_steps):
    """Simulate one path; fills ``times``, ``met``, ``acc`` (PV per structure x party before fallbacks),
    adds its undiscounted flows to ``block_flows`` and, when it has rows, records ``revenue_path``.

    Returns the revenue rate at the horizon and the pattern of required deadlines met (see ``st_eff``).
    """
    # ---- drivers
    u = rng.uniform(key, path, rng.STREAM_DRIVERS, DRAW_DECLARATION)
    declared = sample_time(decl_code, decl_par, u)
    verified = np.inf
    if declared < np.inf:
        if rng.uniform(key, path, rng.STREAM_DRIVERS, DRAW_VERIFIED) >= never_verified:
            verified = declared + sample_time(lag_code, lag_par,
                                              rng.uniform(key, path, rng.STREAM_DRIVERS, DRAW_LAG))
    times[SRC_DECLARED] = declared
    times[SRC_VERIFIED] = verified
    for e in range(ev_code.shape[0]):
        u = rng.uniform(key, path, rng.STREAM_DRIVERS, DRAW_FIRST_EVENT + e)
        times[FIRST_EVENT + e] = sample_time(ev_code[e], ev_par[e], u)
    for d in range(dl_date.shape[0]):
        met[d] = 0
        for m in range(dl_src.shape[1]):
            s = dl_src[d, m]
            if s != TERM_UNUSED and times[s] <= dl_date[d]:
                met[d] = 1
    n_clauses = cl_type.shape[0]
    pattern = _pattern(met, req_deadlines)
    flows = block_flows[pattern]
    record = revenue_path.shape[0] > 0
    if record:
        revenue_path[0] = math.exp(rev[LOG_R0])
    for c in range(n_clauses):
        window[c, 0] = _trigger_time(cl_term_src[c, 0], cl_term_val[c, 0], times)
        window[c, 1] = _trigger_time(cl_term_src[c, 1], cl_term_val[c, 1], times)
        state[c, 0] = 0.0
        state[c, 1] = 0.0
    acc[:, :] = 0.0

    # ---- revenue, step by step
    log_r = rev[LOG_R0]
    g = rev[G0]
    uplift = rev[UPLIFT]
    jumps = jump_prob[-1] > 0.0
    for k in range(1, t.shape[0]):
        a = t[k - 1]
        b = t[k]
        h = dt[k]
        z1, z2 = rng.normal_pair(key, path, rng.STREAM_SHOCKS, k)
        extra = uplift * overlap(a, b, declared, np.inf) / h if uplift != 0.0 else 0.0
        for d in range(dl_date.shape[0]):
            if met[d] == 0 and dl_haircut[d] > 0.0:
                extra -= dl_haircut[d] * overlap(a, b, dl_date[d], dl_haircut_end[d]) / h
        log_r = log_revenue_step(log_r, g, z1, h, sqrt_dt[k], extra, rev)
        if jumps and rng.uniform(key, path, rng.STREAM_JUMPS, k) < jump_prob[k]:
            log_r += rev[LOG_JUMP]
        g = growth_step(g, z1, z2, growth_decay[k], growth_shock[k], rev)
        revenue_steps[k] = math.exp(log_r) * h
        if record:
            revenue_path[k] = revenue_steps[k] / h

    # ---- per-step clauses, each over the steps its window touches (clause by clause: no dispatch per step)
    n_steps = t.shape[0] - 1
    for c in range(n_clauses):
        kind = cl_type[c]
        if kind == EQUITY_STAKE or kind == PAYMENT:
            continue
        start = window[c, 0]
        end = window[c, 1]
        first = max(1, np.searchsorted(t, start, side="right"))  # first step ending after the start
        last = min(n_steps, np.searchsorted(t, end, side="left"))  # first step ending at or after the end
        s = cl_struct[c]
        for k in range(first, last + 1):
            h = dt[k]
            frac = overlap(t[k - 1], t[k], start, end) / h
            if frac <= 0.0:
                continue
            revenue = revenue_steps[k]
            if kind == REVENUE_SHARE:
                amount = _revenue_share(revenue * frac, cl_rate[c, k], cl_par[c, 0], cl_par[c, 1], state[c])
            elif kind == PROFIT_SHARE:
                amount = _profit_share(margin[k] * revenue * frac, cl_tier_rate[c], cl_tier_until[c],
                                       cl_par[c, 0] > 0.0, cl_par[c, 1] > 0.0, state[c])
            elif cl_par[c, 0] > 0.0:  # own value, fixed amount per year
                amount = cl_par[c, 1] * h * frac
            else:  # own value, share of revenue
                amount = cl_rate[c, k] * revenue * frac
            if amount != 0.0:
                _book(acc, flows, s, cl_payer[c], cl_payee[c], amount, df[cl_df_payer[c], k],
                      df[cl_df_payee[c], k], cl_class_payer[c], cl_class_payee[c], k)

    # ---- one-off clauses: payments on their date, stakes at the horizon
    horizon_rate = math.exp(log_r)
    company_value = rev[MULTIPLE] * horizon_rate
    for c in range(n_clauses):
        kind = cl_type[c]
        if kind != EQUITY_STAKE and kind != PAYMENT:
            continue
        holds = True
        ck = cl_cond[c, 0]
        if ck == COND_DEADLINE:
            holds = met[cl_cond[c, 1]] == cl_cond[c, 2]
        elif ck == COND_EVENT:
            holds = (times[cl_cond[c, 1]] <= cl_cond_date[c]) == (cl_cond[c, 2] == 1)
        if kind == EQUITY_STAKE:
            amount = cl_par[c, 0] * company_value if holds else 0.0
        else:
            amount = cl_par[c, 0] if holds else cl_par[c, 1]
        if amount != 0.0:
            _book(acc, flows, cl_struct[c], cl_payer[c], cl_payee[c], amount, cl_time_df[c, 0], cl_time_df[c, 1],
                  cl_class_payer[c], cl_class_payee[c], cl_slot[c])
    return horizon_rate, pattern


@jit
def _pattern(met, req_deadlines):
    """Which of the required deadlines are met, as bits: indexes ``st_eff`` and the flow accumulator."""
    pattern = 0
    for q in range(req_deadlines.shape[0]):
        pattern += np.int64(met[req_deadlines[q]]) << q
    return pattern


@pjit
def _run_block(first, n, key, t, dt, sqrt_dt, growth_decay, growth_shock, jump_prob, margin, rev,
               decl_code, decl_par, lag_code, lag_par, never_verified, ev_code, ev_par,
               dl_date, dl_src, dl_haircut, dl_haircut_end,
               cl_type, cl_struct, cl_payer, cl_payee, cl_df_payer, cl_df_payee, cl_term_src, cl_term_val,
               cl_rate, cl_par, cl_tier_rate, cl_tier_until, cl_cond, cl_cond_date, cl_time_df, df,
               req_deadlines, st_eff, cl_class_payer, cl_class_payee, cl_slot, n_parties,
               out_pv, out_times, out_met, out_revenue, out_flows, out_revenue_path):
    """Paths ``first .. first + n - 1`` into rows ``0 .. n - 1`` of the outputs.

    ``out_flows[b]`` receives the undiscounted flows of block ``b`` (paths ``first + b*BLOCK ..``), summed
    in path order; ``out_revenue_path`` rows are global path numbers (recorded while the path is below
    its row count).
    """
    n_struct = st_eff.shape[1]
    n_blocks = (n + BLOCK - 1) // BLOCK
    no_path = out_revenue_path[:0, 0]
    for blk in numba.prange(n_blocks):
        window = np.empty((cl_type.shape[0], 2))
        state = np.empty((cl_type.shape[0], 2))
        acc = np.empty((n_struct, n_parties))
        met = np.empty(dl_date.shape[0], np.uint8)
        times = np.empty(out_times.shape[1])
        revenue_steps = np.empty(t.shape[0])
        block_flows = out_flows[blk]
        block_flows[...] = 0.0
        stop = min(n, (blk + 1) * BLOCK)
        for i in range(blk * BLOCK, stop):
            path = first + i
            record = out_revenue_path[path] if path < out_revenue_path.shape[0] else no_path
            out_revenue[i], pattern = _simulate_path(
                path, key, t, dt, sqrt_dt, growth_decay, growth_shock, jump_prob, margin, rev,
                decl_code, decl_par, lag_code, lag_par, never_verified, ev_code, ev_par,
                dl_date, dl_src, dl_haircut, dl_haircut_end,
                cl_type, cl_struct, cl_payer, cl_payee, cl_df_payer, cl_df_payee, cl_term_src, cl_term_val,
                cl_rate, cl_par, cl_tier_rate, cl_tier_until, cl_cond, cl_cond_date, cl_time_df, df,
                req_deadlines, cl_class_payer, cl_class_payee, cl_slot,
                times, met, window, state, acc, block_flows, record, revenue_steps)
            eff = st_eff[pattern]
            for s in range(n_struct):
                for p in range(n_parties):
                    out_pv[i, s, p] = acc[eff[s], p]
            out_times[i, :] = times
            out_met[i, :] = met


def run_paths(compiled: Compiled, key: np.ndarray, first: int, n: int, out: dict[str, np.ndarray],
              flows: np.ndarray | None = None) -> None:
    """Fill ``out`` (arrays with at least ``n`` rows) with paths ``first .. first+n-1``.

    ``flows``, if given, receives the per-block undiscounted flows (shape ``(blocks,) + flow_shape``).
    """
    if flows is None:
        flows = np.empty(((n + BLOCK - 1) // BLOCK, *compiled.flow_shape))
    _run_block(np.int64(first), np.int64(n), key, *compiled.kernel_args(),
               out["pv"], out["times"], out["met"], out["revenue"], flows, out["revenue_path"])


def allocate(compiled: Compiled, n: int, record: int = 0) -> dict[str, np.ndarray]:
    """Output arrays for ``n`` paths, recording the revenue path of the first ``record``."""
    return {
        # (paths, structures, parties) as a view of a (structures, parties, paths) block: each party's PVs
        # under one structure are contiguous, which is what statistics and sorting read.
        "pv": np.empty((len(compiled.structures), len(compiled.parties), n)).transpose(2, 0, 1),
        "times": np.empty((n, len(compiled.sources))),
        "met": np.empty((n, len(compiled.deadlines)), np.uint8),
        "revenue": np.empty(n),
        "revenue_path": np.zeros((min(record, n), len(compiled.t))),
    }


def expected_flows(compiled: Compiled, block_sums: np.ndarray) -> np.ndarray:
    """Total flows by structure as applied on each path: (structures, parties, classes, slots).

    ``block_sums`` has the patterns axis first; flows of the structure that applies under each
    pattern are credited to every structure resolving to it.
    """
    S = len(compiled.structures)
    total = np.zeros(compiled.flow_shape[1:])
    for pattern in range(compiled.st_eff.shape[0]):
        for s in range(S):
            total[s] += block_sums[pattern, compiled.st_eff[pattern, s]]
    return total


def simulate_arrays(compiled: Compiled, key: np.ndarray, paths: int, *, chunk_size: int = 65_536,
                    threads: int | None = None, progress: Any = None, record: int = 0) -> dict[str, np.ndarray]:
    """Run ``paths`` paths in chunks; returns the filled output arrays.

    ``out["flows"]`` holds the flows summed over all paths (before fallbacks are applied, by pattern),
    summed block by block in path order, so it too is the same for any thread count and chunk size.
    """
    out = allocate(compiled, paths, record)
    chunk = max(BLOCK, -(-chunk_size // BLOCK) * BLOCK)  # whole blocks: sums group the same paths
    totals = np.zeros(compiled.flow_shape)
    block_sums = np.empty(((min(chunk, paths) + BLOCK - 1) // BLOCK, *compiled.flow_shape))
    previous = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        for first in range(0, paths, chunk):
            n = min(chunk, paths - first)
            view = {name: arr[first:first + n] for name, arr in out.items() if name != "revenue_path"}
            view["revenue_path"] = out["revenue_path"]
            used = block_sums[: (n + BLOCK - 1) // BLOCK]
            run_paths(compiled, key, first, n, view, used)
            for b in range(used.shape[0]):
                totals += used[b]
            if progress is not None:
                progress(n)
    finally:
        numba.set_num_threads(previous)
    out["flows"] = totals
    return out


def warm_up(compiled: Compiled) -> float:
    """Compile (or load from cache) the kernel; returns the seconds it took."""
    start = time.perf_counter()
    run_paths(compiled, np.zeros(2, np.uint32), 0, 2, allocate(compiled, 2, record=1))  # 2: the real layout
    return time.perf_counter() - start


def stream_chunks(compiled: Compiled, key: np.ndarray, paths: int, consume: Any, *, chunk_size: int = 131_072,
                  threads: int | None = None, progress: Any = None, record: int = 0) -> np.ndarray:
    """Run ``paths`` paths chunk by chunk in one reused set of buffers; nothing per path is kept.

    After each chunk, ``consume(first, out, block_flows)`` receives the chunk's arrays (rows are paths
    ``first ..``) and its per-block flow sums.  Returns the revenue paths of the first ``record`` paths.
    """
    chunk = max(BLOCK, -(-chunk_size // BLOCK) * BLOCK)
    size = min(chunk, paths)
    out = allocate(compiled, size)
    revenue_path = np.zeros((min(record, paths), len(compiled.t)))
    block_flows = np.empty(((size + BLOCK - 1) // BLOCK, *compiled.flow_shape))
    previous = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        for first in range(0, paths, chunk):
            n = min(chunk, paths - first)
            view = {name: arr[:n] for name, arr in out.items() if name != "revenue_path"}
            view["revenue_path"] = revenue_path
            used = block_flows[: (n + BLOCK - 1) // BLOCK]
            run_paths(compiled, key, first, n, view, used)
            consume(first, view, used)
            if progress is not None:
                progress(n)
    finally:
        numba.set_num_threads(previous)
    return revenue_path
