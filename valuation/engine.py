"""The engine: one fused kernel evaluates every structure on the same paths.

For each path the kernel samples the drivers (AGI declaration and
verification, events, deadlines), steps revenue through time and evaluates
every clause of every structure that applies on the path (a structure whose
required deadline is missed is replaced by its fallback), so all structures
see the same random numbers (common random numbers) and "B beats A on this
path" is meaningful.  Only per-path PVs and a few drivers leave the kernel.

Path ``i`` always uses the random numbers keyed by ``i`` (see
:mod:`models.rng`), and each path writes only its own rows: results are
identical, bit for bit, for any thread count and any chunk size.

How it is fast: paths go in blocks of ``BLOCK`` (the parallel work items); in
a block, ``SUB`` paths at a time get their random numbers in SIMD loops and
their revenue stepped side by side, then each path's clauses are evaluated
window by window.  Everything per path is one compiled function: handing an
array to another compiled function costs two atomic reference-count updates
on memory the threads share, which used to dominate.  Every floating-point
operation on a path is the one, in the order, that a step-by-step loop over
that path alone would do, so results do not depend on these choices.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numba
import numpy as np

from models import rng
from models._jit import jit, pjit
from models.revenue import G0, GBAR, LOG_JUMP, LOG_R0, MULTIPLE, RHO, RHO_C, SIGMA, UPLIFT, log_step, ou_step, overlap
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
SUB = 32  # paths drawn and stepped together (SIMD across paths; scratch of some 50 KB)
CHUNK = 1  # blocks a thread takes at a time: threads that finish early take more (results do not depend on it)

# Draw numbers on the per-path driver stream.
DRAW_DECLARATION, DRAW_LAG, DRAW_VERIFIED, DRAW_FIRST_EVENT = 0, 1, 2, 3


@jit
def _trigger_time(trig_src, trig_val, u, times):
    """Earliest of trigger ``u``'s terms (inf when it has none)."""
    best = np.inf
    for m in range(trig_src.shape[1]):
        s = trig_src[u, m]
        if s == TERM_UNUSED:
            continue
        v = trig_val[u, m] if s == TERM_DATE else times[s] + trig_val[u, m]
        if v < best:
            best = v
    return best


@jit
def _steps_through(t, x, inv_h):
    """``np.searchsorted(t, x, side="right")``: how many step ends are at or before ``x``.

    ``inv_h`` (steps per year) only guesses the answer, which is then checked against ``t``.
    """
    n = t.shape[0]
    if not x >= t[0]:
        return n if x != x else 0
    if x >= t[n - 1]:
        return n
    k = min(int(x * inv_h), n - 2)
    while t[k] > x:
        k -= 1
    while t[k + 1] <= x:
        k += 1
    return k + 1


@jit
def _steps_before(t, x, inv_h):
    """``np.searchsorted(t, x, side="left")``: how many step ends are before ``x``."""
    n = t.shape[0]
    if not x > t[0]:
        return n if x != x else 0
    if x > t[n - 1]:
        return n
    k = min(int(x * inv_h), n - 2)
    while t[k] >= x:
        k -= 1
    while t[k + 1] < x:
        k += 1
    return k + 1


@jit
def _revenue_share(rev_frac, rate, cap, after, cum):
    """Payment of one step and the new cumulative payment at the rate (``cum``: before this step)."""
    due = rate * rev_frac
    if cum + due <= cap:
        return due, cum + due
    room = cap - cum if cap > cum else 0.0
    base_left = rev_frac - (room / rate if rate > 0.0 else 0.0)
    return room + (base_left if base_left > 0.0 else 0.0) * after, cap


@jit
def _end_amount(kind, par0, par1, rate, revenue, h, covered):
    """Amount of an uncapped revenue share or own value in a step of length ``h`` of which its window
    covers ``covered`` (as in the step-by-step loop with ``frac = covered / h``; 0 when nothing is covered)."""
    frac = covered / h
    if frac <= 0.0:
        return 0.0
    if kind == REVENUE_SHARE:
        return rate * (revenue * frac)
    if par0 > 0.0:  # own value, fixed amount per year
        return par1 * h * frac
    return rate * revenue * frac  # own value, share of revenue


@jit
def _profit_share(profit, rate, until, by_profit, basis, pay):
    """One tier of a profit share's walk (the caller skips tiers already full, ``basis >= until``).

    ``basis``: the tier basis so far (payee receipts or cumulative profit); ``pay``: paid so far this
    step.  Returns the profit left to walk on, the basis and the payment, updated.
    """
    room = until - basis
    if by_profit:
        take = profit if profit < room else room
        return profit - take, basis + take, pay + rate * take
    if rate * profit <= room:
        return 0.0, basis + rate * profit, pay + rate * profit
    return profit - room / rate, until, pay + room


@jit
def _pattern(met, req_deadlines):
    """Which of the required deadlines are met, as bits: indexes ``st_eff`` and the flow accumulator."""
    pattern = 0
    for q in range(req_deadlines.shape[0]):
        pattern += np.int64(met[req_deadlines[q]]) << q
    return pattern


@jit
def _simulate_path(first, lo, hi, rk, model, drivers, clauses, n_parties, out_pv, out_times, out_met, out_revenue,
                   block_flows, out_revenue_path):
    """Paths ``first + lo .. first + hi - 1`` into rows ``lo .. hi - 1``, one path after the other; each
    path's undiscounted flows by pattern and clause are added to ``block_flows`` (zeroed here).

    Per path: the drivers (AGI declaration and verification, events, deadlines met), the revenue path,
    each per-step clause over the steps its window touches, then the one-off clauses; then its PVs
    with fallbacks applied.  ``model``, ``drivers``, ``clauses``: see :meth:`Compiled.kernel_args`.

    Called once per block, and written as one function: passing an array to a function costs two
    atomic reference-count updates on memory both threads share, so no array is passed on per path
    except to ``sample_time`` (thread-private copies) and to the random-number batches (per ``SUB`` paths).
    """
    t, dt, sqrt_dt, growth_decay, growth_shock, jump_prob, margin, rev, uplift_full, haircut_steps = model
    (decl_code, decl_par, lag_code, lag_par, never_verified, ev_code, ev_par, dl_date, dl_src, dl_haircut,
     req_deadlines, st_eff, st_used) = drivers
    (cl_type, cl_struct, cl_payer, cl_payee, cl_df_payer, cl_df_payee, cl_term_src, cl_term_val, cl_rate, cl_par,
     cl_tier_rate, cl_tier_until, cl_cond, cl_cond_date, cl_time_df, df, cl_slot, cl_trigger, trig_src, trig_val,
     trig_fixed, cl_order) = clauses
    decl_par = decl_par.copy()  # thread-private: passed on per path (reference counts stay local)
    lag_par = lag_par.copy()
    ev_par = ev_par.copy()
    n_steps = t.shape[0] - 1
    n_struct = st_eff.shape[1]
    n_clauses = cl_type.shape[0]
    n_deadlines = dl_date.shape[0]
    n_events = ev_code.shape[0]
    n_draws = DRAW_FIRST_EVENT + n_events
    n_tiers = cl_tier_rate.shape[1]
    n_record = out_revenue_path.shape[0]
    acc = np.zeros((n_struct, n_parties))
    times = np.empty(out_times.shape[1])
    met = np.empty(n_deadlines, np.uint8)
    # per SUB paths (paths in the last axis): driver draws, shocks and their normals, jump draws, drivers
    draws = np.full((n_draws, SUB), 0.5)
    shocks = np.full((2, n_steps, SUB), 0.5)
    normals = np.zeros((2, n_steps, SUB))
    shocks_flat = shocks.reshape(2 * n_steps * SUB)
    normals_flat = normals.reshape(2 * n_steps * SUB)
    shock1 = shocks[0]
    shock2 = shocks[1]
    jump_u = np.full((n_steps, SUB), 0.5)
    no_pair = draws[:0]
    sub_times = np.zeros((SUB, times.shape[0]))
    sub_met = np.zeros((SUB, n_deadlines), np.uint8)
    sub_pattern = np.zeros(SUB, np.int64)
    declared = np.zeros(SUB)
    missed = np.zeros((n_deadlines, SUB), np.uint8)  # deadline missed and it has a growth haircut
    extra = np.zeros(SUB)
    log_r = np.zeros(SUB)
    g = np.zeros(SUB)
    log_r_steps = np.zeros((n_steps + 1, SUB))
    # per path
    revenue_steps = np.zeros(n_steps + 1)
    amounts = np.zeros(n_steps + 1)  # one clause's amount per step
    jumps = jump_prob[n_steps] > 0.0
    log_r0 = rev[LOG_R0]
    uplift = rev[UPLIFT]
    uplift_zero = uplift * 0.0  # the uplift over a step before the declaration (its sign kept)
    sigma = rev[SIGMA]
    half_var = 0.5 * sigma * sigma
    inv_h = 1.0 / t[1]
    n_triggers = trig_src.shape[0]
    trig_time = np.empty(n_triggers)  # per trigger: its time, and the steps ending at or before / before it
    trig_through = np.empty(n_triggers, np.int64)
    trig_before = np.empty(n_triggers, np.int64)
    for u in range(n_triggers):
        if trig_fixed[u]:  # dates only: the same on every path
            trig_time[u] = _trigger_time(trig_src, trig_val, u, times)
            trig_through[u] = _steps_through(t, trig_time[u], inv_h)
            trig_before[u] = _steps_before(t, trig_time[u], inv_h)
    block_flows[...] = 0.0

    for sub in range(lo, hi, SUB):
        # ---- random numbers of SUB paths at once (the last few may lie beyond `hi`: drawn, never used)
        m = min(SUB, hi - sub)
        rng.uniform_block(rk, first + sub, rng.STREAM_DRIVERS, 0, draws, no_pair)
        rng.uniform_block(rk, first + sub, rng.STREAM_SHOCKS, 1, shock1, shock2)
        rng.ndtri_array(shocks_flat, normals_flat)
        if jumps:
            rng.uniform_block(rk, first + sub, rng.STREAM_JUMPS, 1, jump_u, no_pair)

        # ---- drivers, path by path
        for ii in range(m):
            decl = sample_time(decl_code, decl_par, draws[DRAW_DECLARATION, ii])
            verified = np.inf
            if decl < np.inf:
                if draws[DRAW_VERIFIED, ii] >= never_verified:
                    verified = decl + sample_time(lag_code, lag_par, draws[DRAW_LAG, ii])
            declared[ii] = decl
            sub_times[ii, SRC_DECLARED] = decl
            sub_times[ii, SRC_VERIFIED] = verified
            for e in range(n_events):
                sub_times[ii, FIRST_EVENT + e] = sample_time(ev_code[e], ev_par[e], draws[DRAW_FIRST_EVENT + e, ii])
            pattern = 0
            for d in range(n_deadlines):
                hit = 0
                for j in range(dl_src.shape[1]):
                    src = dl_src[d, j]
                    if src != TERM_UNUSED and sub_times[ii, src] <= dl_date[d]:
                        hit = 1
                sub_met[ii, d] = hit
                missed[d, ii] = hit == 0 and dl_haircut[d] > 0.0
            for q in range(req_deadlines.shape[0]):
                pattern += np.int64(sub_met[ii, req_deadlines[q]]) << q
            sub_pattern[ii] = pattern

        # ---- revenue of the SUB paths step by step, the paths side by side (SIMD); the same operations,
        # in the same order, as one path at a time
        for ii in range(SUB):
            log_r[ii] = log_r0
            g[ii] = rev[G0]
        for k in range(1, n_steps + 1):
            a = t[k - 1]
            b = t[k]
            h = dt[k]
            uk = np.uint64(k - 1)
            if uplift == 0.0:
                for ii in range(SUB):
                    extra[ii] = 0.0
            else:
                full = uplift_full[k]
                for ii in range(SUB):
                    d = declared[ii]
                    left = a if a > d else d
                    part = uplift * (b - left if b > left else 0.0) / h  # uplift * overlap(a, b, d, inf) / h
                    extra[ii] = uplift_zero if b <= d else (full if a >= d else part)
            for dd in range(n_deadlines):
                if dl_haircut[dd] > 0.0:
                    cut = haircut_steps[dd, k]
                    for ii in range(SUB):
                        extra[ii] = extra[ii] - cut if missed[dd, ii] else extra[ii]
            vol_h = sigma * sqrt_dt[k]
            p_jump = jump_prob[k] if jumps else -1.0
            log_jump = rev[LOG_JUMP]
            decay = growth_decay[k]
            shock = growth_shock[k]
            gbar = rev[GBAR]
            rho = rev[RHO]
            rho_c = rev[RHO_C]
            for ii in range(SUB):
                z1 = normals[0, uk, ii]
                lr = log_step(log_r[ii], g[ii], z1, h, vol_h, extra[ii], half_var)
                lr = lr + log_jump if jump_u[uk, ii] < p_jump else lr
                g[ii] = ou_step(g[ii], z1, normals[1, uk, ii], decay, shock, gbar, rho, rho_c)
                log_r[ii] = lr
                log_r_steps[k, ii] = lr

        for ii in range(m):
            i = sub + ii
            path = first + i
            pattern = sub_pattern[ii]
            upattern = np.uint64(pattern)
            for j in range(times.shape[0]):
                times[j] = sub_times[ii, j]
            for d in range(n_deadlines):
                met[d] = sub_met[ii, d]
            for k in range(1, n_steps + 1):
                revenue_steps[k] = math.exp(log_r_steps[k, ii]) * dt[k]
            horizon_rate = math.exp(log_r[ii])
            out_revenue[i] = horizon_rate
            if path < n_record:
                out_revenue_path[path, 0] = math.exp(log_r0)
                for k in range(1, n_steps + 1):
                    out_revenue_path[path, k] = revenue_steps[k] / dt[k]

            # ---- per-step clauses of the structures that apply, each over the steps its window touches:
            # its amount in each step, then its undiscounted flows and the payer's and payee's PVs as running
            # sums in step order, as if added into `acc` step by step (a zero amount changes nothing there: an
            # accumulator starting at +0.0 never becomes -0.0).  Only a window's first and last steps can be
            # partly covered: the others have frac == 1 exactly.  Clauses go structure by structure in turn
            # (`cl_order`): each PV still sums its own structure's clauses in their order, and the sums of
            # successive clauses are independent, so they overlap in the processor.
            for s in range(n_struct):
                for p in range(n_parties):
                    acc[s, p] = 0.0
            for u in range(n_triggers):
                if not trig_fixed[u]:
                    trig_time[u] = _trigger_time(trig_src, trig_val, u, times)
                    trig_through[u] = _steps_through(t, trig_time[u], inv_h)
                    trig_before[u] = _steps_before(t, trig_time[u], inv_h)
            for ci in range(n_clauses):
                c = cl_order[ci]
                kind = cl_type[c]
                s = cl_struct[c]
                if kind == EQUITY_STAKE or kind == PAYMENT or st_used[pattern, s] == 0:
                    continue
                start = trig_time[cl_trigger[c, 0]]
                end = trig_time[cl_trigger[c, 1]]
                k_first = max(1, trig_through[cl_trigger[c, 0]])  # first step ending after the start
                k_last = min(n_steps, trig_before[cl_trigger[c, 1]])  # first step ending at or after the end
                if k_first > k_last:
                    continue
                par0 = cl_par[c, 0]
                par1 = cl_par[c, 1]
                uc = np.uint64(c)
                if kind == PROFIT_SHARE or (kind == REVENUE_SHARE and par0 < np.inf):
                    # the amount depends on what was paid before: step by step
                    state0 = 0.0  # revenue share: paid at the rate; profit share: tier basis
                    state1 = 0.0  # profit share: losses still to recover
                    for k in range(k_first, k_last + 1):
                        frac = 1.0
                        if k == k_first or k == k_last:
                            frac = overlap(t[k - 1], t[k], start, end) / dt[k]
                            if frac <= 0.0:
                                amounts[k] = 0.0
                                continue
                        if kind == REVENUE_SHARE:
                            amount, state0 = _revenue_share(revenue_steps[k] * frac, cl_rate[c, k], par0, par1,
                                                            state0)
                        else:
                            profit = margin[k] * revenue_steps[k] * frac
                            amount = 0.0
                            if par1 > 0.0:  # loss carry-forward
                                if profit <= 0.0:
                                    state1 -= profit
                                    profit = 0.0
                                else:
                                    used = profit if profit < state1 else state1
                                    state1 -= used
                                    profit -= used
                            if not profit <= 0.0:
                                for j in range(n_tiers):
                                    until = cl_tier_until[c, j]
                                    if state0 >= until:
                                        continue
                                    profit, state0, amount = _profit_share(profit, cl_tier_rate[c, j], until,
                                                                           par0 > 0.0, state0, amount)
                                    if profit <= 0.0:
                                        break
                        amounts[k] = amount
                else:
                    # uncapped revenue share, own value: each step on its own (whole steps first, then the ends)
                    if kind == REVENUE_SHARE or par0 <= 0.0:  # a share of revenue
                        for k in range(np.uint64(k_first), np.uint64(k_last + 1)):  # unsigned: SIMD
                            amounts[k] = cl_rate[uc, k] * revenue_steps[k]
                    else:  # own value, fixed amount per year
                        for k in range(np.uint64(k_first), np.uint64(k_last + 1)):
                            amounts[k] = par1 * dt[k]
                    amounts[k_first] = _end_amount(kind, par0, par1, cl_rate[c, k_first], revenue_steps[k_first],
                                                   dt[k_first], overlap(t[k_first - 1], t[k_first], start, end))
                    amounts[k_last] = _end_amount(kind, par0, par1, cl_rate[c, k_last], revenue_steps[k_last],
                                                  dt[k_last], overlap(t[k_last - 1], t[k_last], start, end))
                payer = cl_payer[c]
                payee = cl_payee[c]
                row_payer = np.uint64(cl_df_payer[c] if payer >= 0 else cl_df_payee[c])
                row_payee = np.uint64(cl_df_payee[c])
                if payer >= 0:
                    pv_payer = acc[s, payer]
                    pv_payee = acc[s, payee]
                    for k in range(np.uint64(k_first), np.uint64(k_last + 1)):
                        x = amounts[k]
                        block_flows[upattern, uc, k] += x
                        pv_payer -= x * df[row_payer, k]
                        pv_payee += x * df[row_payee, k]
                    acc[s, payer] = pv_payer
                    acc[s, payee] = pv_payee
                else:
                    pv_payee = acc[s, payee]
                    for k in range(np.uint64(k_first), np.uint64(k_last + 1)):
                        x = amounts[k]
                        block_flows[upattern, uc, k] += x
                        pv_payee += x * df[row_payee, k]
                    acc[s, payee] = pv_payee

            # ---- one-off clauses: payments on their date, stakes at the horizon
            company_value = rev[MULTIPLE] * horizon_rate
            for c in range(n_clauses):
                kind = cl_type[c]
                s = cl_struct[c]
                if (kind != EQUITY_STAKE and kind != PAYMENT) or st_used[pattern, s] == 0:
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
                    payer = cl_payer[c]
                    if payer >= 0:
                        acc[s, payer] -= amount * cl_time_df[c, 0]
                    acc[s, cl_payee[c]] += amount * cl_time_df[c, 1]
                    block_flows[pattern, c, cl_slot[c]] += amount

            # ---- outputs: each structure's PVs are those of the structure that applies on this path
            for s in range(n_struct):
                applies = st_eff[pattern, s]
                for p in range(n_parties):
                    out_pv[i, s, p] = acc[applies, p]
            for j in range(times.shape[0]):
                out_times[i, j] = times[j]
            for d in range(n_deadlines):
                out_met[i, d] = met[d]


@pjit
def _run_block(first, n, key, model, drivers, clauses, n_parties, out_pv, out_times, out_met, out_revenue, out_flows,
               out_revenue_path):
    """Paths ``first .. first + n - 1`` into rows ``0 .. n - 1`` of the outputs, a block of ``BLOCK`` paths
    per work item.

    ``model``, ``drivers``, ``clauses``, ``n_parties``: :meth:`Compiled.kernel_args`.  ``out_flows[b]``
    receives the undiscounted flows of block ``b`` (paths ``first + b*BLOCK ..``) by pattern of required
    deadlines met and clause, summed in path order; ``out_revenue_path`` rows are global path numbers
    (recorded while the path is below its row count).
    """
    n_blocks = (n + BLOCK - 1) // BLOCK
    rk = rng.round_keys(key)
    for blk in numba.prange(n_blocks):
        _simulate_path(first, blk * BLOCK, min(n, (blk + 1) * BLOCK), rk.copy(), model, drivers, clauses, n_parties,
                       out_pv, out_times, out_met, out_revenue, out_flows[blk], out_revenue_path)


def run_paths(compiled: Compiled, key: np.ndarray, first: int, n: int, out: dict[str, np.ndarray],
              flows: np.ndarray | None = None) -> None:
    """Fill ``out`` (arrays with at least ``n`` rows) with paths ``first .. first+n-1``.

    ``flows``, if given, receives the per-block undiscounted flows (shape ``(blocks,) + flow_shape``).
    """
    if flows is None:
        flows = np.empty(((n + BLOCK - 1) // BLOCK, *compiled.flow_shape))
    with numba.parallel_chunksize(CHUNK):
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

    ``block_sums`` (shape ``compiled.flow_shape``) holds each clause's undiscounted flows by pattern of
    required deadlines met; under each pattern, the flows of the structure that applies are credited to
    every structure resolving to it, as paid by the clause's payer and received by its payee.
    """
    S, P = len(compiled.structures), len(compiled.parties)
    by_structure = np.zeros((compiled.st_eff.shape[0], S, P, len(compiled.class_rates), len(compiled.slot_time)))
    for c in range(len(compiled.cl_type)):
        s, payer, payee = compiled.cl_struct[c], compiled.cl_payer[c], compiled.cl_payee[c]
        if payer >= 0:
            by_structure[:, s, payer, compiled.cl_class_payer[c]] -= block_sums[:, c]
        by_structure[:, s, payee, compiled.cl_class_payee[c]] += block_sums[:, c]
    total = np.zeros(by_structure.shape[1:])
    for pattern in range(compiled.st_eff.shape[0]):
        for s in range(S):
            total[s] += by_structure[pattern, compiled.st_eff[pattern, s]]
    return total


def simulate_arrays(compiled: Compiled, key: np.ndarray, paths: int, *, chunk_size: int = 65_536,
                    threads: int | None = None, progress: Any = None, record: int = 0) -> dict[str, np.ndarray]:
    """Run ``paths`` paths in chunks; returns the filled output arrays.

    ``out["flows"]`` holds the flows summed over all paths (before fallbacks are applied, by pattern),
    summed block by block in path order, so it too is the same for any thread count and chunk size.
    """
    out = allocate(compiled, paths)
    out["revenue_path"], out["flows"] = stream_chunks(compiled, key, paths, None, chunk_size=chunk_size,
                                                      threads=threads, progress=progress, record=record, into=out)
    return out


def warm_up(compiled: Compiled) -> float:
    """Compile (or load from cache) the kernel; returns the seconds it took."""
    start = time.perf_counter()
    run_paths(compiled, np.zeros(2, np.uint32), 0, 2, allocate(compiled, 2, record=1))  # 2: the real layout
    return time.perf_counter() - start


def stream_chunks(compiled: Compiled, key: np.ndarray, paths: int, consume: Any, *, chunk_size: int = 65_536,
                  threads: int | None = None, progress: Any = None, record: int = 0,
                  into: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``paths`` paths chunk by chunk.

    Returns the revenue paths of the first ``record`` paths and the undiscounted flows (``flow_shape``)
    summed over all paths block by block in path order (blocks of whole :data:`BLOCK` paths, so the sums
    are the same for any chunk size and thread count).  After each chunk, ``consume(first, out)``, if
    given, receives the chunk's arrays (rows are paths ``first ..``).  They are rows of ``into`` (from
    :func:`allocate` for all ``paths``) when given; otherwise one set of chunk-sized buffers, reused:
    nothing per path is kept.
    """
    chunk = max(BLOCK, -(-chunk_size // BLOCK) * BLOCK)
    size = min(chunk, paths)
    buffers = allocate(compiled, size) if into is None else into
    revenue_path = np.zeros((min(record, paths), len(compiled.t)))
    block_flows = np.empty(((size + BLOCK - 1) // BLOCK, *compiled.flow_shape))
    totals = np.zeros(compiled.flow_shape)
    previous = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        for first in range(0, paths, chunk):
            n = min(chunk, paths - first)
            rows = slice(first, first + n) if into is not None else slice(0, n)
            view = {name: arr[rows] for name, arr in buffers.items() if name != "revenue_path"}
            view["revenue_path"] = revenue_path
            used = block_flows[: (n + BLOCK - 1) // BLOCK]
            run_paths(compiled, key, first, n, view, used)
            for b in range(used.shape[0]):
                totals += used[b]
            if consume is not None:
                consume(first, view)
            if progress is not None:
                progress(n)
    finally:
        numba.set_num_threads(previous)
    return revenue_path, totals
