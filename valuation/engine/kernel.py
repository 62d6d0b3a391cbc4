"""The kernel: one fused loop evaluates every structure on the same paths.

For each path the kernel samples the drivers (AGI declaration and verification, events, deadlines met),
steps revenue through time and evaluates every clause of every structure that applies on the path (a
structure whose required deadline is missed is replaced by its fallback), so all structures see the same
random numbers (common random numbers) and "B beats A on this path" is meaningful.  Only per-path PVs and a
few drivers leave the kernel.

Path ``i`` always uses the random numbers keyed by ``i`` (see :mod:`models.rng`), and each path writes only
its own rows: results are identical, bit for bit, for any thread count, chunk size or path range.  Each
named random source (an event, a deadline's completion) has its own counter, derived from its name, so
adding, removing or reordering one changes no other source's numbers.

How it is fast: paths go in blocks of ``BLOCK`` (the parallel work items, aligned to absolute path
numbers); in a block, ``SUB`` paths at a time get their random numbers in SIMD loops and their revenue
stepped side by side, then each path's clauses are evaluated window by window.  Everything per path is one
compiled function: handing an array to another compiled function costs two atomic reference-count updates on
memory the threads share, which used to dominate.  Every floating-point operation on a path is the one, in
the order, that a step-by-step loop over that path alone would do, so results do not depend on these choices.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from models import rng
from models._jit import jit, pjit
from models.revenue import (
    G0,
    GBAR,
    INV_MARKET,
    LOG_JUMP,
    LOG_X0,
    MARKET,
    MULTIPLE,
    SIGMA,
    UPLIFT,
    mean_rate,
    overlap,
    saturated,
)
from models.timing import MAX_PIECES, sample_time
from valuation.engine.sampling import draw_normals, draw_uniforms
from valuation.engine.tables import (
    CLAUSE_MOMENTS,
    COND_DEADLINE,
    COND_EVENT,
    DRAW_DECLARATION,
    DRAW_LAG,
    DRAW_VERIFIED,
    EQUITY_STAKE,
    FIRST_EVENT,
    N_AGI_DRAWS,
    PROFIT_SHARE,
    REVENUE_SHARE,
    SRC_DECLARED,
    SRC_VERIFIED,
    TERM_DATE,
    TERM_UNUSED,
)
from valuation.engine.uncertain import (
    F_ANY,
    F_COEF,
    F_DYNAMICS,
    F_HAIRCUT,
    F_JUMPS,
    F_LOG_JUMP,
    F_LOG_X0,
    F_MARGIN,
    F_MARKET,
    F_REVENUE,
    F_THREE,
    R_G0,
    R_GBAR,
    R_INITIAL,
    R_JUMP_LOSS,
    R_KAPPA,
    R_LAMBDA,
    R_MARKET,
    R_MULTIPLE,
    R_RHO,
    R_SG,
    R_SIGMA,
    R_UPLIFT,
    T_HAIRCUT,
    T_HAIRCUT_YEARS,
    T_MARGIN,
    T_NEVER_VERIFIED,
    T_QUANTILE_P,
    T_REVENUE,
    T_TIMING,
    poisson_tail_paths,
    step_coefficients_paths,
)

BLOCK = 1024  # paths per parallel work item, aligned to absolute path numbers: scratch and flow sums per block
SUB = 32  # paths drawn and stepped together (SIMD across paths; scratch of some 50 KB)
CHUNK = 1  # blocks a thread takes at a time: threads that finish early take more (results do not depend on it)


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
def _end_amount(kind, fixed, per_year, rate, revenue, h, covered):
    """Amount of an uncapped revenue share or own value in a step of length ``h`` of which its window
    covers ``covered`` (as in the step-by-step loop with ``frac = covered / h``; 0 when nothing is covered)."""
    frac = covered / h
    if frac <= 0.0:
        return 0.0
    if kind == REVENUE_SHARE:
        return rate * (revenue * frac)
    if fixed:  # own value, fixed amount per year
        return per_year * h * frac
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
def _antiderivative(log_x, x, inv_m, log_inv_m):
    """``asinh(x inv_m)`` for ``x = exp(log_x)`` (the rate's antiderivative in ``log x``, over the market size),
    as :func:`models.revenue.mean_rate` takes it: ``log_x + log inv_m + log 2`` beyond 1e8."""
    z = log_x + log_inv_m
    if z > 18.42:
        return z + 0.6931471805599453
    return math.asinh(x * inv_m)


@jit
def _booked(la, lb, xa, xb, fa, fb, inv_m):
    """Mean revenue rate over a step from log-unbounded ``la`` to ``lb``: :func:`models.revenue.mean_rate`, from
    the exponentials ``xa, xb`` and antiderivatives ``fa, fb`` already taken at the step ends where it can."""
    d = lb - la
    if -1e-3 < d < 1e-3:
        return mean_rate(la, lb, inv_m)
    if inv_m == 0.0:
        return (xb - xa) / d
    return (fb - fa) / (inv_m * d)


@jit(inline="always")  # at most 30 arguments: numba inlines no more
def _revenue_own(model, drivers, step_class, declared, missed, raw, p_log_r0, p_half_var, p_log_jump, p_coef, p_tail,
                 p_haircut, p_haircut_end, unc_coef, unc_jumps, unc_haircut, jumps, three, normals, normals3, jump_u,
                 extra, log_r, g, log_r_steps, last_end):
    """The revenue of ``SUB`` paths, each with its own parameters (uncertain inputs): the step of the fixed
    case, with each path's drift, volatility, uplift, haircuts, growth coefficients and jump tails
    (``last_end``: scratch of a deadline each, where the paths' haircuts end at the latest)."""
    t, dt, sqrt_dt, jump_tail, haircut_steps = model.t, model.dt, model.sqrt_dt, model.jump_tail, model.haircut_steps
    growth_decay, growth_mean, int_z1, int_z2 = model.growth_decay, model.growth_mean, model.int_z1, model.int_z2
    growth_z1, growth_z2, growth_z3 = model.growth_z1, model.growth_z2, model.growth_z3
    dl_date, dl_haircut = drivers.dl_date, drivers.dl_haircut
    n_steps = t.shape[0] - 1
    n_sub = log_r.shape[0]
    n_cols = p_tail.shape[1] if unc_jumps else jump_tail.shape[1]
    for ii in range(n_sub):
        log_r[ii] = p_log_r0[ii]
        g[ii] = raw[R_G0, ii]
    if unc_haircut:  # a step outside every path's haircut (or with none) subtracts +0.0: skipped, the same bits
        for dd in range(dl_date.shape[0]):
            last = -np.inf
            for ii in range(n_sub):
                end = p_haircut_end[dd, ii] if p_haircut[dd, ii] > 0.0 and missed[dd, ii] else -np.inf
                last = end if end > last else last
            last_end[dd] = last
    for k in range(1, n_steps + 1):
        a = t[k - 1]
        b = t[k]
        h = dt[k]
        uk = np.uint64(k - 1)
        cls = step_class[k]
        inv_h = 1.0 / h  # (a product per path, not a division)
        whole = (b - a) * inv_h
        for ii in range(n_sub):
            up = raw[R_UPLIFT, ii]
            d = declared[ii]
            left = a if a > d else d
            part = up * ((b - left if b > left else 0.0) * inv_h)
            extra[ii] = up * 0.0 if b <= d else (up * whole if a >= d else part)
        for dd in range(dl_date.shape[0]):
            if unc_haircut:  # each path's own haircut and end (branch-free: the paths side by side)
                date = dl_date[dd]
                if b <= date or a >= last_end[dd]:
                    continue
                left = a if a > date else date
                for ii in range(n_sub):
                    end = p_haircut_end[dd, ii]
                    right = b if b < end else end
                    cut = p_haircut[dd, ii] * ((right - left if right > left else 0.0) * inv_h)
                    extra[ii] = extra[ii] - (cut if missed[dd, ii] else 0.0)
            elif dl_haircut[dd] > 0.0:
                cut = haircut_steps[dd, k]
                for ii in range(n_sub):
                    extra[ii] = extra[ii] - cut if missed[dd, ii] else extra[ii]
        root = sqrt_dt[k]
        if unc_coef:  # this step's coefficients, path by path
            for ii in range(n_sub):
                z1 = normals[0, uk, ii]
                z2 = normals[1, uk, ii]
                z3 = normals3[uk, ii] if three else 0.0
                gbar = raw[R_GBAR, ii]
                dev = g[ii] - gbar
                lr = log_r[ii] + (gbar + extra[ii] - p_half_var[ii]) * h + dev * p_coef[1, cls, ii] + \
                    (p_coef[2, cls, ii] * z1 + p_coef[3, cls, ii] * z2) + raw[R_SIGMA, ii] * root * z1
                g[ii] = gbar + dev * p_coef[0, cls, ii] + (p_coef[4, cls, ii] * z1 + p_coef[5, cls, ii] * z2
                                                           + p_coef[6, cls, ii] * z3)
                log_r[ii] = lr
                log_r_steps[k, ii] = lr
        else:  # the step's (the same for every path)
            decay, mean_k, i1, i2 = growth_decay[k], growth_mean[k], int_z1[k], int_z2[k]
            g1, g2, g3 = growth_z1[k], growth_z2[k], growth_z3[k]
            for ii in range(n_sub):
                z1 = normals[0, uk, ii]
                z2 = normals[1, uk, ii]
                z3 = normals3[uk, ii] if three else 0.0
                gbar = raw[R_GBAR, ii]
                dev = g[ii] - gbar
                lr = log_r[ii] + (gbar + extra[ii] - p_half_var[ii]) * h + dev * mean_k + \
                    (i1 * z1 + i2 * z2) + raw[R_SIGMA, ii] * root * z1
                g[ii] = gbar + dev * decay + (g1 * z1 + g2 * z2 + g3 * z3)
                log_r[ii] = lr
                log_r_steps[k, ii] = lr
        if jumps:
            for ii in range(n_sub):
                u = jump_u[uk, ii]
                n_j = 0
                while n_j < n_cols and u < (p_tail[cls, n_j, ii] if unc_jumps else jump_tail[k, n_j]):
                    n_j += 1
                if n_j > 0:
                    log_r[ii] = log_r[ii] + n_j * p_log_jump[ii]
                    log_r_steps[k, ii] = log_r[ii]


@jit(inline="always")
def _book(acc, block_flows, pattern, c, s, n_struct, n_views, n_slots, payer, payee, pv_payer, pv_payee, pv_market,
          in_market):
    """Add one clause's leg PVs on a path to its structure's PVs (both views) and to the clause's PV sums
    (offsets of :func:`valuation.engine.tables.clause_moment`: view, leg, sum or square)."""
    if payer >= 0:
        acc[s, payer] -= pv_payer
        block_flows[pattern, c, n_slots] -= pv_payer
        block_flows[pattern, c, n_slots + 1] += pv_payer * pv_payer
    acc[s, payee] += pv_payee
    block_flows[pattern, c, n_slots + 2] += pv_payee
    block_flows[pattern, c, n_slots + 3] += pv_payee * pv_payee
    if n_views > 1 and in_market:
        acc[n_struct + s, payer] -= pv_market
        acc[n_struct + s, payee] += pv_market
        block_flows[pattern, c, n_slots + 4] -= pv_market
        block_flows[pattern, c, n_slots + 5] += pv_market * pv_market
        block_flows[pattern, c, n_slots + 6] += pv_market
        block_flows[pattern, c, n_slots + 7] += pv_market * pv_market


@jit
def _simulate_path(first, lo, hi, rk, sampler, model, drivers, clauses, triggers, inputs, in_values, n_parties, out_pv,
                   out_times, out_met, out_revenue, block_flows, out_revenue_path, record_from, out_company, out_years):
    """Paths ``first + lo .. first + hi - 1`` into rows ``lo .. hi - 1``, one path after the other; each
    path's undiscounted flows by pattern and clause are added to ``block_flows`` (zeroed here).

    Per path: the drivers (AGI declaration and verification, events, deadlines met), the revenue path,
    each per-step clause over the steps its window touches, then the one-off clauses; then its PVs
    with fallbacks applied.  ``model``, ``drivers``, ``clauses``, ``triggers``: the named tables of
    :mod:`valuation.engine.tables`; ``inputs`` and ``in_values`` (column ``i`` for path ``first + i``): the
    uncertain inputs (:mod:`valuation.engine.uncertain`), each path's own values of them.  The revenue path of
    path ``p`` goes to row ``p - record_from`` of ``out_revenue_path`` while there is one.

    Called once per block, and written as one function: passing an array to a function costs two
    atomic reference-count updates on memory both threads share, so no array is passed on per path
    except to ``sample_time`` (thread-private copies) and to the random-number batches (per ``SUB`` paths).
    """
    t = model.t
    dt = model.dt
    sqrt_dt = model.sqrt_dt
    growth_decay = model.growth_decay
    growth_mean = model.growth_mean
    int_z1 = model.int_z1
    int_z2 = model.int_z2
    growth_z1 = model.growth_z1
    growth_z2 = model.growth_z2
    growth_z3 = model.growth_z3
    jump_tail = model.jump_tail
    company_df = model.company_df
    year_first = model.year_first
    year_cut = model.year_cut
    margin = model.margin
    rev = model.revenue
    uplift_full = model.uplift_full
    haircut_steps = model.haircut_steps
    decl_code = drivers.decl_code
    decl_par = drivers.decl_par
    lag_code = drivers.lag_code
    lag_par = drivers.lag_par
    never_verified = drivers.never_verified
    ev_code = drivers.ev_code
    ev_par = drivers.ev_par
    ev_stream = drivers.ev_stream
    ev_draw = drivers.ev_draw
    dl_date = drivers.dl_date
    dl_src = drivers.dl_src
    dl_haircut = drivers.dl_haircut
    req_deadlines = drivers.req_deadlines
    st_eff = drivers.st_eff
    st_used = drivers.st_used
    cl_type = clauses.kind
    cl_one_off = clauses.one_off
    cl_struct = clauses.structure
    cl_payer = clauses.payer
    cl_payee = clauses.payee
    cl_df_payer = clauses.df_payer
    cl_df_payee = clauses.df_payee
    cl_rate = clauses.rate
    cl_cap = clauses.cap
    cl_rate_after_cap = clauses.rate_after_cap
    cl_by_profit = clauses.by_profit
    cl_carryforward = clauses.carryforward
    cl_fraction = clauses.fraction
    cl_amount = clauses.amount
    cl_amount_otherwise = clauses.amount_otherwise
    cl_fixed_amount = clauses.fixed_amount
    cl_amount_per_year = clauses.amount_per_year
    cl_tier_rate = clauses.tier_rate
    cl_tier_until = clauses.tier_until
    cl_cond_kind = clauses.cond_kind
    cl_cond_index = clauses.cond_index
    cl_cond_wanted = clauses.cond_wanted
    cl_cond_date = clauses.cond_date
    cl_time_df = clauses.time_df
    cl_df_market = clauses.df_market
    cl_time_df_market = clauses.time_df_market
    cl_in_market = clauses.in_market
    df = clauses.df
    cl_slot = clauses.slot
    cl_trigger = clauses.trigger
    cl_order = clauses.order
    trig_src = triggers.src
    trig_val = triggers.val
    trig_fixed = triggers.fixed
    # thread-private (passed on per path: reference counts stay local), in one table a row per timing source, so a
    # path's uncertain inputs are written in place without handing an array on
    tpar = np.empty((2 + ev_par.shape[0], decl_par.shape[0]))
    tpar[0] = decl_par
    tpar[1] = lag_par
    tpar[2:] = ev_par
    decl_par = tpar[0]
    lag_par = tpar[1]
    ev_par = tpar[2:]
    # ---- uncertain inputs: what each changes, and per SUB paths the values the paths compute for themselves
    in_target = inputs.target
    in_index = inputs.index
    in_slot = inputs.slot
    flags = inputs.flags
    n_inputs = in_target.shape[0]
    timing_q = np.empty(n_inputs, np.int64)  # the inputs of timing tables, then the others (each path's loops)
    other_q = np.empty(n_inputs, np.int64)
    n_timing_q = n_other_q = 0
    for q in range(n_inputs):
        if in_target[q] == T_TIMING or in_target[q] == T_QUANTILE_P:
            timing_q[n_timing_q] = q
            n_timing_q += 1
        else:
            other_q[n_other_q] = q
            n_other_q += 1
    unc = flags[F_ANY] > 0
    unc_rev = flags[F_REVENUE] > 0
    unc_path = flags[F_DYNAMICS] > 0  # the revenue path itself differs from path to path
    unc_coef = flags[F_COEF] > 0
    unc_jumps = flags[F_JUMPS] > 0
    unc_margin = flags[F_MARGIN] > 0
    unc_haircut = flags[F_HAIRCUT] > 0
    base_raw = inputs.base_raw
    step_class = inputs.step_class
    class_h = inputs.class_h
    margin_w = inputs.margin_w
    qp_n = inputs.qp_n
    qp_r = inputs.qp_r
    qp_by = inputs.qp_by
    qp_start = inputs.qp_start
    qp_tail_never = inputs.qp_tail_never
    qp_fit_row = inputs.qp_fit_row
    # the SUB paths' timing inputs and fitted tables' parameters, copied from their rows of the values at once
    # (each row a stream through memory: read path by path, every value waited for its own cache line)
    fit_at = np.full(qp_fit_row.shape[0], -1, np.int64)  # where a fitted table's two rows sit in sub_values
    n_sub_rows = n_timing_q
    for src in range(qp_fit_row.shape[0]):
        if qp_n[src] > 0 and qp_fit_row[src] >= 0:
            fit_at[src] = n_sub_rows
            n_sub_rows += 2
    sub_rows = np.empty(n_sub_rows, np.int64)
    for qq in range(n_timing_q):
        sub_rows[qq] = timing_q[qq]
    for src in range(qp_fit_row.shape[0]):
        if fit_at[src] >= 0:
            sub_rows[fit_at[src]] = qp_fit_row[src]
            sub_rows[fit_at[src] + 1] = qp_fit_row[src] + 1
    sub_values = np.zeros((n_sub_rows, SUB))
    qp_p = inputs.qp_p.copy()
    r_path = np.zeros(qp_r.shape[1])  # a path's quantile points, years after its table's start
    n_classes = class_h.shape[0]
    raw = np.zeros((base_raw.shape[0], SUB))
    p_margin = np.zeros((margin_w.shape[1], SUB))
    p_log_r0 = np.zeros(SUB)
    p_half_var = np.zeros(SUB)
    p_log_jump = np.zeros(SUB)
    p_inv_m = np.zeros(SUB)
    p_size = np.zeros(SUB)
    p_coef = np.zeros((7, n_classes, SUB))
    p_tail = np.zeros((n_classes, inputs.jump_cols.shape[0], SUB))
    unc_pmf = np.zeros((inputs.jump_cols.shape[0] + 11, SUB))  # scratch: Poisson terms, path by path
    unc_term, unc_acc = np.zeros(SUB), np.zeros(SUB)
    jump_mean = np.zeros(SUB)
    unc_work = np.zeros((7, SUB))  # scratch: the growth coefficients' series, path by path
    p_haircut = np.zeros((dl_date.shape[0], SUB))
    p_haircut_end = np.zeros((dl_date.shape[0], SUB))
    p_never = np.zeros(SUB)
    last_end = np.zeros(dl_date.shape[0])  # per deadline: where the SUB paths' haircuts end at the latest
    margin_path = np.zeros(model.margin.shape[0])  # a path's own margin per step
    margin_sub = np.zeros((model.margin.shape[0], SUB))  # ... of the SUB paths
    n_steps = t.shape[0] - 1
    n_struct = st_eff.shape[1]
    n_views = out_pv.shape[1] // n_struct  # the party view, then the market view where there is one
    n_slots = block_flows.shape[2] - CLAUSE_MOMENTS  # then each clause's PV sums (tables.clause_moment)
    n_years = out_years.shape[1]
    n_clauses = cl_type.shape[0]
    n_deadlines = dl_date.shape[0]
    n_events = ev_code.shape[0]
    n_tiers = cl_tier_rate.shape[1]
    n_record = out_revenue_path.shape[0]
    acc = np.zeros((n_views * n_struct, n_parties))
    times = np.empty(out_times.shape[1])
    met = np.empty(n_deadlines, np.uint8)
    # per SUB paths (paths in the last axis): driver draws, shocks and their normals, jump draws, drivers
    draws = np.full((N_AGI_DRAWS, SUB), 0.5)
    ev_u = np.full((n_events, SUB), 0.5)
    shocks = np.full((2, n_steps, SUB), 0.5)
    normals = np.zeros((2, n_steps, SUB))
    shocks_flat = shocks.reshape(2 * n_steps * SUB)
    normals_flat = normals.reshape(2 * n_steps * SUB)
    shock1 = shocks[0]
    shock2 = shocks[1]
    three = (growth_z3[1:].max() > 0.0 if n_steps > 0 else False) or flags[F_THREE] > 0  # a third normal a step
    shock3 = np.full((n_steps if three else 0, SUB), 0.5)
    normals3 = np.zeros((n_steps if three else 0, SUB))
    shock3_flat = shock3.reshape(shock3.size)
    normals3_flat = normals3.reshape(normals3.size)
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
    revenue_steps = np.zeros(n_steps + 1)  # revenue earned over each step (USD bn)
    unbounded = np.zeros(n_steps + 1)  # the unbounded rate at each step end
    amounts = np.zeros(n_steps + 1)  # one clause's amount per step
    jumps = jump_tail[n_steps, 0] > 0.0 or unc_jumps
    n_jump_cols = jump_tail.shape[1]
    base_inv_m = rev[INV_MARKET]
    antider = np.zeros(n_steps + 1)  # per path: the rate's antiderivative at each step end (with a market size)
    base_size = rev[MARKET]  # rates and means are clamped to it: below it in exact arithmetic, at most an ulp above
    base_log_r0 = rev[LOG_X0]
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
        draw_uniforms(sampler, rk, first + sub, rng.STREAM_DRIVERS, 0, draws, no_pair)
        for e in range(n_events):  # each named source on its own counter: adding one moves no other
            draw_uniforms(sampler, rk, first + sub, ev_stream[e], ev_draw[e], ev_u[e:e + 1], no_pair)
        draw_uniforms(sampler, rk, first + sub, rng.STREAM_SHOCKS, 1, shock1, shock2)
        draw_normals(sampler, shocks_flat, normals_flat)
        if three or jumps:  # the jump stream's pair: the jump uniform, and the growth's third normal
            draw_uniforms(sampler, rk, first + sub, rng.STREAM_JUMPS, 1, jump_u, shock3)  # (shock3: no rows if not)
        if three:
            draw_normals(sampler, shock3_flat, normals3_flat)

        # ---- uncertain inputs: each path's own parameters (a path's timing tables are set just before its
        # drivers are drawn, below)
        if unc:  # input by input, the paths side by side (simple loops, SIMD)
            for k in range(n_sub_rows):
                row = sub_rows[k]
                for ii in range(m):
                    sub_values[k, ii] = in_values[row, sub + ii]
            for r in range(base_raw.shape[0]):
                x = base_raw[r]
                for ii in range(SUB):
                    raw[r, ii] = x
            for j in range(p_margin.shape[0]):
                x = inputs.margin_base[j]
                for ii in range(SUB):
                    p_margin[j, ii] = x
            for ii in range(SUB):
                p_never[ii] = never_verified
            for d in range(n_deadlines):
                x, end = dl_haircut[d], drivers.dl_haircut_end[d]
                for ii in range(SUB):
                    p_haircut[d, ii] = x
                    p_haircut_end[d, ii] = end
            for qq in range(n_other_q):
                q = other_q[qq]
                code = in_target[q]
                idx = in_index[q]
                if code == T_REVENUE:
                    for ii in range(m):
                        raw[idx, ii] = in_values[q, sub + ii]
                elif code == T_MARGIN:
                    for ii in range(m):
                        p_margin[idx, ii] = in_values[q, sub + ii]
                elif code == T_NEVER_VERIFIED:
                    for ii in range(m):
                        p_never[ii] = in_values[q, sub + ii]
                elif code == T_HAIRCUT:
                    for ii in range(m):
                        p_haircut[idx, ii] = in_values[q, sub + ii]
                elif code == T_HAIRCUT_YEARS:
                    date = dl_date[idx]
                    for ii in range(m):
                        p_haircut_end[idx, ii] = date + in_values[q, sub + ii]
            if unc_rev:
                if flags[F_MARKET] > 0:
                    for ii in range(m):
                        p_inv_m[ii] = 1.0 / raw[R_MARKET, ii]
                        p_size[ii] = raw[R_MARKET, ii]
                else:
                    for ii in range(m):
                        p_inv_m[ii] = base_inv_m
                        p_size[ii] = base_size
                if flags[F_LOG_X0] > 0:
                    for ii in range(m):
                        market = raw[R_MARKET, ii]
                        x0 = raw[R_INITIAL, ii]
                        ratio = x0 / market
                        p_log_r0[ii] = math.log(x0 / math.sqrt(1.0 - ratio * ratio)) if market < np.inf else \
                            math.log(x0)
                else:
                    for ii in range(m):
                        p_log_r0[ii] = base_log_r0
                for ii in range(m):
                    p_half_var[ii] = 0.5 * raw[R_SIGMA, ii] * raw[R_SIGMA, ii]
                if flags[F_LOG_JUMP] > 0:
                    for ii in range(m):
                        p_log_jump[ii] = math.log1p(-raw[R_JUMP_LOSS, ii])
                else:
                    for ii in range(m):
                        p_log_jump[ii] = rev[LOG_JUMP]
            if unc_coef:  # each step class's coefficients and jump-count tails, the paths side by side (SIMD)
                for c in range(n_classes):
                    step_coefficients_paths(class_h[c], raw[R_KAPPA], raw[R_SG], raw[R_RHO], m, p_coef, c, unc_work)
            if unc_jumps:
                for c in range(n_classes):
                    for ii in range(m):
                        jump_mean[ii] = raw[R_LAMBDA, ii] * class_h[c]
                    poisson_tail_paths(jump_mean, m, p_tail, c, unc_pmf, unc_term, unc_acc)

        if unc_margin:  # each path's margin per step: the points' weights, the paths side by side (SIMD)
            for k in range(n_steps + 1):
                for ii in range(SUB):
                    margin_sub[k, ii] = 0.0
                for j in range(p_margin.shape[0]):
                    w = margin_w[k, j]
                    if w != 0.0:  # (adding 0 * a finite margin changes no sum)
                        for ii in range(SUB):
                            margin_sub[k, ii] += w * p_margin[j, ii]

        # ---- drivers, path by path
        for ii in range(m):
            if unc:  # this path's timing tables, written in place (no array handed on per path: see above)
                for qq in range(n_timing_q):
                    q = timing_q[qq]
                    v = sub_values[qq, ii]
                    if in_target[q] == T_QUANTILE_P:
                        qp_p[in_index[q], in_slot[q]] = v
                    else:
                        tpar[in_index[q], in_slot[q]] = v
                for src in range(qp_n.shape[0]):
                    n_pts = qp_n[src]
                    if n_pts == 0:
                        continue
                    at = fit_at[src]
                    if at >= 0:  # a least-squares table: the draw pass fitted it (uncertain._fit_block)
                        tpar[src, 2] = sub_values[at, ii]
                        tpar[src, 3] = sub_values[at + 1, ii]
                        continue
                    # a piecewise table's exact fit (models.timing.fit_quantiles): its hazards from its points, its
                    # years after the start from qp_r, or from the points' years where the start moves (its breaks
                    # move with it)
                    start_unc = qp_start[src] > 0
                    tail_never = qp_tail_never[src] > 0
                    r_path[0] = 0.0
                    for j in range(n_pts):
                        r_path[j + 1] = qp_by[src, j] - tpar[src, 0] if start_unc else qp_r[src, j + 1]
                    if start_unc:
                        for j in range(n_pts + 1 if tail_never else n_pts):
                            tpar[src, 4 + j] = r_path[j]  # (models.timing: the breaks from slot 4)
                    never = tpar[src, 1]
                    h_prev = 0.0
                    for j in range(n_pts):
                        h = -math.log1p(-(qp_p[src, j] / (1.0 - never)))
                        tpar[src, MAX_PIECES + 4 + j] = (h - h_prev) / (r_path[j + 1] - r_path[j])
                        h_prev = h
                    if tail_never:
                        tpar[src, MAX_PIECES + 4 + n_pts] = 0.0
            decl = sample_time(decl_code, decl_par, draws[DRAW_DECLARATION, ii])
            verified = np.inf
            if decl < np.inf:
                if draws[DRAW_VERIFIED, ii] >= (p_never[ii] if unc else never_verified):
                    verified = decl + sample_time(lag_code, lag_par, draws[DRAW_LAG, ii])
            declared[ii] = decl
            sub_times[ii, SRC_DECLARED] = decl
            sub_times[ii, SRC_VERIFIED] = verified
            for e in range(n_events):
                sub_times[ii, FIRST_EVENT + e] = sample_time(ev_code[e], ev_par[e], ev_u[e, ii])
            pattern = 0
            for d in range(n_deadlines):
                hit = 0
                for j in range(dl_src.shape[1]):
                    src = dl_src[d, j]
                    if src != TERM_UNUSED and sub_times[ii, src] <= dl_date[d]:
                        hit = 1
                sub_met[ii, d] = hit
                missed[d, ii] = hit == 0 and (dl_haircut[d] > 0.0 or unc_haircut)
            for q in range(req_deadlines.shape[0]):
                pattern += np.int64(sub_met[ii, req_deadlines[q]]) << q
            sub_pattern[ii] = pattern

        # ---- revenue of the SUB paths step by step, the paths side by side (SIMD); the same operations,
        # in the same order, as one path at a time
        if unc_path:  # each path with its own parameters
            _revenue_own(model, drivers, step_class, declared, missed, raw, p_log_r0, p_half_var, p_log_jump, p_coef,
                         p_tail, p_haircut, p_haircut_end, unc_coef, unc_jumps, unc_haircut, jumps, three, normals,
                         normals3, jump_u, extra, log_r, g, log_r_steps, last_end)
        else:
            for ii in range(SUB):
                log_r[ii] = base_log_r0
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
                log_jump = rev[LOG_JUMP]
                decay = growth_decay[k]
                mean_k = growth_mean[k]
                i1, i2 = int_z1[k], int_z2[k]
                g1, g2, g3 = growth_z1[k], growth_z2[k], growth_z3[k]
                gbar = rev[GBAR]
                for ii in range(SUB):
                    z1 = normals[0, uk, ii]
                    z2 = normals[1, uk, ii]
                    z3 = normals3[uk, ii] if three else 0.0
                    dev = g[ii] - gbar
                    # exact over the step: the integral of the growth rate (mean and integrated OU shock I), the
                    # revenue shock, and the growth rate at the end (shock G), jointly Gaussian
                    lr = log_r[ii] + (gbar + extra[ii] - half_var) * h + dev * mean_k + (i1 * z1 + i2 * z2) + vol_h * z1
                    g[ii] = gbar + dev * decay + (g1 * z1 + g2 * z2 + g3 * z3)
                    log_r[ii] = lr
                    log_r_steps[k, ii] = lr
                if jumps:  # Poisson counts: n jumps where u < P(N >= n)
                    for ii in range(SUB):
                        u = jump_u[uk, ii]
                        n_j = 0
                        while n_j < n_jump_cols and u < jump_tail[k, n_j]:
                            n_j += 1
                        if n_j > 0:
                            log_r[ii] = log_r[ii] + n_j * log_jump
                            log_r_steps[k, ii] = log_r[ii]

        for ii in range(m):
            i = sub + ii
            path = first + i
            pattern = sub_pattern[ii]
            inv_m, size, log_r0, multiple, mg = base_inv_m, base_size, base_log_r0, rev[MULTIPLE], margin
            if unc_rev:  # this path's own parameters
                inv_m, size, log_r0, multiple = p_inv_m[ii], p_size[ii], p_log_r0[ii], raw[R_MULTIPLE, ii]
                if unc_margin:
                    for k in range(n_steps + 1):
                        margin_path[k] = margin_sub[k, ii]
                    mg = margin_path
            log_inv_m = math.log(inv_m) if inv_m > 0.0 else 0.0
            upattern = np.uint64(pattern)
            for j in range(times.shape[0]):
                times[j] = sub_times[ii, j]
            for d in range(n_deadlines):
                met[d] = sub_met[ii, d]
            # ---- revenue earned over each step (along the log-linear path of the unbounded rate), by calendar
            # year too; the company's own cash flows (operating profit, then its exit value) at its rate
            unbounded[0] = math.exp(log_r0)
            for k in range(1, n_steps + 1):
                unbounded[k] = math.exp(log_r_steps[k, ii])
            if inv_m > 0.0:  # the antiderivative at each step end, once (two steps share it)
                antider[0] = _antiderivative(log_r0, unbounded[0], inv_m, log_inv_m)
                for k in range(1, n_steps + 1):
                    antider[k] = _antiderivative(log_r_steps[k, ii], unbounded[k], inv_m, log_inv_m)
            for y in range(n_years):
                out_years[i, y] = 0.0
            company = 0.0
            for k in range(1, n_steps + 1):
                la = log_r_steps[k - 1, ii] if k > 1 else log_r0
                lb = log_r_steps[k, ii]
                booked = dt[k] * min(_booked(la, lb, unbounded[k - 1], unbounded[k], antider[k - 1], antider[k],
                                             inv_m), size)
                revenue_steps[k] = booked
                company += mg[k] * booked * company_df[k]
                y = year_first[k]
                rest = booked
                done = 0.0
                l0, x0, f0 = la, unbounded[k - 1], antider[k - 1]
                for j in range(2):  # a new calendar year starting inside the step: the part before it
                    cut = year_cut[k, j]
                    if not cut == cut:
                        break
                    l1 = la + cut * (lb - la)
                    x1 = math.exp(l1)
                    f1 = _antiderivative(l1, x1, inv_m, log_inv_m) if inv_m > 0.0 else 0.0
                    part = (cut - done) * dt[k] * min(_booked(l0, l1, x0, x1, f0, f1, inv_m), size)
                    out_years[i, y] += part
                    rest -= part
                    done, l0, x0, f0 = cut, l1, x1, f1
                    y += 1
                out_years[i, y] += rest
            horizon_rate = min(saturated(unbounded[n_steps], inv_m), size)
            out_revenue[i] = horizon_rate
            company += multiple * horizon_rate * company_df[n_steps + 1]
            out_company[i] = company
            row = path - record_from
            if 0 <= row < n_record:
                for k in range(n_steps + 1):
                    out_revenue_path[row, k] = min(saturated(unbounded[k], inv_m), size)

            # ---- per-step clauses of the structures that apply, each over the steps its window touches:
            # its amount in each step, then its undiscounted flows and the payer's and payee's PVs as running
            # sums in step order, as if added into `acc` step by step (a zero amount changes nothing there: an
            # accumulator starting at +0.0 never becomes -0.0).  Only a window's first and last steps can be
            # partly covered: the others have frac == 1 exactly.  Clauses go structure by structure in turn
            # (`cl_order`): each PV still sums its own structure's clauses in their order, and the sums of
            # successive clauses are independent, so they overlap in the processor.
            for s in range(n_views * n_struct):
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
                if cl_one_off[c] or st_used[pattern, s] == 0:
                    continue
                start = trig_time[cl_trigger[c, 0]]
                end = trig_time[cl_trigger[c, 1]]
                k_first = max(1, trig_through[cl_trigger[c, 0]])  # first step ending after the start
                k_last = min(n_steps, trig_before[cl_trigger[c, 1]])  # first step ending at or after the end
                if k_first > k_last:
                    continue
                cap = cl_cap[c]
                fixed = cl_fixed_amount[c] > 0.0
                per_year = cl_amount_per_year[c]
                uc = np.uint64(c)
                if kind == PROFIT_SHARE or (kind == REVENUE_SHARE and cap < np.inf):
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
                            amount, state0 = _revenue_share(revenue_steps[k] * frac, cl_rate[c, k], cap,
                                                            cl_rate_after_cap[c], state0)
                        else:
                            profit = mg[k] * revenue_steps[k] * frac
                            amount = 0.0
                            if cl_carryforward[c] > 0.0:  # loss carry-forward
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
                                                                           cl_by_profit[c] > 0.0, state0, amount)
                                    if profit <= 0.0:
                                        break
                        amounts[k] = amount
                else:
                    # uncapped revenue share, own value: each step on its own (whole steps first, then the ends)
                    if kind == REVENUE_SHARE or not fixed:  # a share of revenue
                        for k in range(np.uint64(k_first), np.uint64(k_last + 1)):  # unsigned: SIMD
                            amounts[k] = cl_rate[uc, k] * revenue_steps[k]
                    else:  # own value, fixed amount per year
                        for k in range(np.uint64(k_first), np.uint64(k_last + 1)):
                            amounts[k] = per_year * dt[k]
                    amounts[k_first] = _end_amount(kind, fixed, per_year, cl_rate[c, k_first],
                                                   revenue_steps[k_first], dt[k_first],
                                                   overlap(t[k_first - 1], t[k_first], start, end))
                    amounts[k_last] = _end_amount(kind, fixed, per_year, cl_rate[c, k_last], revenue_steps[k_last],
                                                  dt[k_last], overlap(t[k_last - 1], t[k_last], start, end))
                # each leg's PV of this clause (payer's, payee's; the market view's at its risk class's rate),
                # then added to the structure's PVs: what the clause is worth is known on its own (by_clause)
                payer = cl_payer[c]
                payee = cl_payee[c]
                row_payer = np.uint64(cl_df_payer[c] if payer >= 0 else cl_df_payee[c])
                row_payee = np.uint64(cl_df_payee[c])
                in_market = n_views > 1 and cl_in_market[c] > 0
                row_market = np.uint64(cl_df_market[c]) if in_market else row_payer
                # one running sum per distinct discount row (a clause at one rate for both legs sums once)
                pv_payer = 0.0
                pv_payee = 0.0
                pv_market = 0.0
                if row_payee == row_payer and row_market == row_payer:
                    for k in range(np.uint64(k_first), np.uint64(k_last + 1)):
                        x = amounts[k]
                        block_flows[upattern, uc, k] += x
                        pv_payer += x * df[row_payer, k]
                    pv_payee = pv_payer
                    pv_market = pv_payer
                else:
                    for k in range(np.uint64(k_first), np.uint64(k_last + 1)):
                        x = amounts[k]
                        block_flows[upattern, uc, k] += x
                        pv_payer += x * df[row_payer, k]
                        pv_payee += x * df[row_payee, k]
                        pv_market += x * df[row_market, k]
                _book(acc, block_flows, pattern, c, s, n_struct, n_views, n_slots, payer, payee, pv_payer, pv_payee,
                      pv_market, in_market)

            # ---- one-off clauses: payments on their date, stakes at the horizon
            company_value = multiple * horizon_rate
            for c in range(n_clauses):
                kind = cl_type[c]
                s = cl_struct[c]
                if not cl_one_off[c] or st_used[pattern, s] == 0:
                    continue
                holds = True
                ck = cl_cond_kind[c]
                if ck == COND_DEADLINE:
                    holds = met[cl_cond_index[c]] == cl_cond_wanted[c]
                elif ck == COND_EVENT:
                    holds = (times[cl_cond_index[c]] <= cl_cond_date[c]) == (cl_cond_wanted[c] == 1)
                if kind == EQUITY_STAKE:
                    amount = cl_fraction[c] * company_value if holds else 0.0
                else:
                    amount = cl_amount[c] if holds else cl_amount_otherwise[c]
                if amount != 0.0:
                    _book(acc, block_flows, pattern, c, s, n_struct, n_views, n_slots, cl_payer[c], cl_payee[c],
                          amount * cl_time_df[c, 0], amount * cl_time_df[c, 1], amount * cl_time_df_market[c],
                          cl_in_market[c])
                    block_flows[pattern, c, cl_slot[c]] += amount

            # ---- outputs: each structure's PVs are those of the structure that applies on this path, per view
            for v in range(n_views):
                for s in range(n_struct):
                    applies = st_eff[pattern, s]
                    for p in range(n_parties):
                        out_pv[i, v * n_struct + s, p] = acc[v * n_struct + applies, p]
            for j in range(times.shape[0]):
                out_times[i, j] = times[j]
            for d in range(n_deadlines):
                out_met[i, d] = met[d]


@pjit
def run_block(first, n, key, sampler, model, drivers, clauses, triggers, inputs, in_values, n_parties, out_pv,
              out_times, out_met, out_revenue, out_flows, out_revenue_path, record_from, out_company, out_years):
    """Paths ``first .. first + n - 1`` into rows ``0 .. n - 1`` of the outputs, one work item per block of
    ``BLOCK`` paths aligned to absolute path numbers (the first and last may be partial).

    ``out_flows[j]`` receives the undiscounted flows of the ``j``-th of those blocks (paths from
    ``max(first, (first // BLOCK + j) * BLOCK)``) by pattern of required deadlines met and clause, summed in
    path order: the same sums for a block whatever range it is run in, as long as the range covers it.
    """
    b0 = first // BLOCK
    n_blocks = (first + n - 1) // BLOCK - b0 + 1
    rk = rng.round_keys(key)
    for j in numba.prange(n_blocks):
        lo = max(first, (b0 + j) * BLOCK) - first
        hi = min(first + n, (b0 + j + 1) * BLOCK) - first
        _simulate_path(first, lo, hi, rk.copy(), sampler, model, drivers, clauses, triggers, inputs, in_values,
                       n_parties, out_pv, out_times, out_met, out_revenue, out_flows[j], out_revenue_path, record_from,
                       out_company, out_years)
