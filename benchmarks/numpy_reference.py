"""The base-case model in vectorised numpy: the kernel's benchmark competitor and an independent check.

The same model as the numba kernel (:func:`valuation.engine.kernel._simulate_path`), written the way a quant
would write it in numpy: paths in chunks (arrays across the paths of a chunk), a Python loop over time
steps for the revenue, and each clause over the ``(steps, paths)`` block at once; clauses with state
(a revenue cap, profit tiers, loss carry-forward) step through time with that state held in arrays across
the paths.  It reads the compiled flat tables (:func:`valuation.engine.compile.compile_scenario`), so the
scenario is interpreted once, in one place.

Random numbers come from :class:`numpy.random.Generator` (PCG64), not from the kernel's Philox streams,
and event times from inverse CDFs written here per family code: the numbers agree with the kernel's only
in distribution, which is what makes this an independent statistical check.

Entry point: :func:`simulate_means`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

from models import timing
from models.revenue import G0, GBAR, INV_MARKET, LOG_JUMP, LOG_X0, MULTIPLE, SIGMA, UPLIFT
from valuation.engine.tables import (
    COND_DEADLINE,
    COND_EVENT,
    EQUITY_STAKE,
    FIRST_EVENT,
    OWN_VALUE,
    PAYMENT,
    PROFIT_SHARE,
    REVENUE_SHARE,
    SRC_DECLARED,
    SRC_VERIFIED,
    TERM_DATE,
    TERM_UNUSED,
    Compiled,
)

CHUNK = 65_536

_PIECES = 4  # offsets of the piecewise breakpoints and hazards in a timing parameter row (models.timing)
_HAZARDS = 4 + timing.MAX_PIECES


# ------------------------------------------------------------------------------------------ event times


def sample_times(code: int, par: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Event times (years after valuation) by inverse transform of the uniforms ``u``, for one family code.

    The law is ``start + X`` with probability ``1 - never`` and ``+inf`` otherwise (the layout of
    ``par`` is that of :meth:`models.timing._TimeDistribution.to_params`).
    """
    start, never = float(par[0]), float(par[1])
    u = np.asarray(u, dtype=np.float64)
    happens = u < 1.0 - never
    if code == timing.FIXED:
        return np.where(happens, start + float(par[2]), np.inf)
    v = np.where(happens, u / (1.0 - never), 0.0)  # inner probability
    if code == timing.LOGNORMAL:
        x = float(par[2]) * np.exp(float(par[3]) * ndtri(v))
    else:
        cum = -np.log1p(-v)  # inner cumulative hazard reached at the event
        if code == timing.EXPONENTIAL:
            x = cum / float(par[2])
        elif code == timing.WEIBULL:
            x = float(par[3]) * cum ** (1.0 / float(par[2]))
        elif code == timing.GOMPERTZ:
            rate, growth = float(par[2]), float(par[3])
            x = np.log1p(cum * growth / rate) / growth
        elif code == timing.PIECEWISE:
            x = _piecewise_inverse(par, cum)
        else:
            raise ValueError(f"unknown timing code {code!r}")
    return np.where(happens, start + x, np.inf)


def _piecewise_inverse(par: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Time after start at which a piecewise-constant hazard accumulates ``cum`` (inf past a zero tail)."""
    n = int(par[2])
    breaks = par[_PIECES:_PIECES + n]
    hazards = par[_HAZARDS:_HAZARDS + n]
    at_break = np.concatenate(([0.0], np.cumsum(hazards[:-1] * np.diff(breaks))))
    seg = np.clip(np.searchsorted(at_break, cum, side="left") - 1, 0, n - 1)  # at_break[seg] < cum <= next
    rate = hazards[seg]
    upper = np.append(breaks[1:], np.inf)[seg]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(rate > 0.0, breaks[seg] + (cum - at_break[seg]) / rate, np.inf)
    return np.where(cum <= 0.0, 0.0, np.minimum(x, upper))


# ------------------------------------------------------------------------------------------- one chunk


def _trigger(src: np.ndarray, val: np.ndarray, times: np.ndarray) -> float | np.ndarray:
    """Earliest of a trigger's terms: a float when every term is a date, else one time per path."""
    fixed = math.inf
    random = None
    for s, v in zip(src, val, strict=True):
        if s == TERM_UNUSED:
            continue
        if s == TERM_DATE:
            fixed = min(fixed, float(v))
        else:
            x = times[s] + v
            random = x if random is None else np.minimum(random, x)
    return fixed if random is None else np.minimum(random, fixed)


def _fraction(t: np.ndarray, start: float | np.ndarray, end: float | np.ndarray) -> np.ndarray:
    """Share of each step (t[k-1], t[k]] inside the window [start, end): (K,) or (K, paths)."""
    a, b = t[:-1, None], t[1:, None]
    lo = start if np.ndim(start) == 0 else start[None, :]
    hi = end if np.ndim(end) == 0 else end[None, :]
    frac = np.maximum(np.minimum(b, hi) - np.maximum(a, lo), 0.0) / (b - a)
    return frac[:, 0] if np.ndim(start) == 0 and np.ndim(end) == 0 else frac


def _steps_touched(t: np.ndarray, start: float | np.ndarray, end: float | np.ndarray) -> range:
    """Steps k (1..K) whose interval can overlap the window on some path."""
    lo = float(np.min(start))
    hi = float(np.max(end))
    first = max(1, int(np.searchsorted(t, lo, side="right")))
    last = min(len(t) - 1, int(np.searchsorted(t, hi, side="left")))
    return range(first, last + 1)


def _drivers(c: Compiled, gen: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-path times of every source (sources, n) and deadlines met (deadlines, n), as booleans."""
    u = gen.random((3 + len(c.drivers.ev_code), n))
    times = np.empty((len(c.sources), n))
    declared = sample_times(c.drivers.decl_code, c.drivers.decl_par, u[0])
    lag = sample_times(c.drivers.lag_code, c.drivers.lag_par, u[1])
    times[SRC_DECLARED] = declared
    times[SRC_VERIFIED] = np.where(np.isfinite(declared) & (u[2] >= c.drivers.never_verified), declared + lag, np.inf)
    for e in range(len(c.drivers.ev_code)):
        times[FIRST_EVENT + e] = sample_times(int(c.drivers.ev_code[e]), c.drivers.ev_par[e], u[3 + e])
    met = np.zeros((len(c.drivers.dl_date), n), dtype=bool)
    for d in range(len(c.drivers.dl_date)):
        for s in c.drivers.dl_src[d]:
            if s != TERM_UNUSED:
                met[d] |= times[s] <= c.drivers.dl_date[d]
    return times, met


def _mean_rate(la: np.ndarray, lb: np.ndarray, inv_m: float) -> np.ndarray:
    """Mean revenue rate along the log-linear path of the unbounded rate from exp(la) to exp(lb)."""
    d = lb - la
    small = np.abs(d) < 1e-3
    safe = np.where(small, 1.0, d)
    mid = np.exp(0.5 * (la + lb))
    if inv_m == 0.0:
        return np.where(small, mid * (1.0 + d * d / 24.0), (np.exp(lb) - np.exp(la)) / safe)
    y2 = (mid * inv_m) ** 2
    near = mid / np.sqrt(1.0 + y2) * (1.0 + (1.0 - 2.0 * y2) / (1.0 + y2) ** 2 * d * d / 24.0)
    far = (np.arcsinh(np.exp(lb) * inv_m) - np.arcsinh(np.exp(la) * inv_m)) / (inv_m * safe)
    return np.where(small, near, far)


def _revenue(c: Compiled, gen: np.random.Generator, declared: np.ndarray, met: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Revenue earned in each step, (K, n) with row k-1 for step k, and the revenue rate at the horizon."""
    par = c.model.revenue
    m = c.model
    n = declared.shape[0]
    t = c.t
    sigma, gbar = par[SIGMA], par[GBAR]
    uplift, inv_m = par[UPLIFT], par[INV_MARKET]
    dr = c.drivers
    missed = [(float(dr.dl_haircut[d]), float(dr.dl_date[d]), float(dr.dl_haircut_end[d]), (~met[d]).astype(float))
              for d in range(len(dr.dl_date)) if dr.dl_haircut[d] > 0.0]
    log_x = np.full(n, par[LOG_X0])
    g = np.full(n, par[G0])
    revenue = np.empty((c.n_steps, n))
    extra = np.empty(n)
    for k in range(1, c.n_steps + 1):
        a, b, h = t[k - 1], t[k], m.dt[k]
        z1, z2, z3 = gen.standard_normal((3, n))
        # growth added after AGI is declared and cut after a missed deadline, pro rata over the step
        if uplift != 0.0:
            np.clip((b - declared) / h, 0.0, 1.0, out=extra)
            extra *= uplift
        else:
            extra.fill(0.0)
        for size, lo, hi, miss in missed:
            share = max(0.0, min(b, hi) - max(a, lo)) / h
            if share > 0.0:
                extra -= (size * share) * miss
        # exact over the step: log X += (gbar + extra - sigma^2/2) h + (g - gbar) B + I + sigma sqrt(h) z1
        dev = g - gbar
        before = log_x.copy()
        log_x += (gbar + extra - 0.5 * sigma * sigma) * h + dev * m.growth_mean[k]
        log_x += m.int_z1[k] * z1 + m.int_z2[k] * z2 + (sigma * m.sqrt_dt[k]) * z1
        g = gbar + dev * m.growth_decay[k] + m.growth_z1[k] * z1 + m.growth_z2[k] * z2 + m.growth_z3[k] * z3
        if m.jump_tail[k, 0] > 0.0:  # Poisson count of jumps in the step
            u = gen.random(n)
            log_x += par[LOG_JUMP] * (u[None, :] < m.jump_tail[k][:, None]).sum(axis=0)
        revenue[k - 1] = h * _mean_rate(before, log_x, inv_m)
    x = np.exp(log_x)
    return revenue, x / np.sqrt(1.0 + (x * inv_m) ** 2)


def _capped_share(c: Compiled, ci: int, revenue: np.ndarray, frac: np.ndarray, steps: range,
                  df_payer: np.ndarray, df_payee: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Revenue share with a cap: discounted payments (payer leg, payee leg) per path."""
    n = revenue.shape[1]
    cap, after = c.clauses.cap[ci], c.clauses.rate_after_cap[ci]
    paid = np.zeros(n)  # cumulative payments at the rate
    pv_payer, pv_payee = np.zeros(n), np.zeros(n)
    for k in steps:
        rate = c.clauses.rate[ci, k]
        base = revenue[k - 1] * frac[k - 1]
        due = rate * base
        within = paid + due <= cap
        room = np.maximum(cap - paid, 0.0)
        left = np.maximum(base - room / rate, 0.0) if rate > 0.0 else base
        pay = np.where(within, due, room + left * after)
        paid = np.where(within, paid + due, cap)
        pv_payer += pay * df_payer[k]
        pv_payee += pay * df_payee[k]
    return pv_payer, pv_payee


def _profit_share(c: Compiled, ci: int, revenue: np.ndarray, frac: np.ndarray, steps: range,
                  df_payer: np.ndarray, df_payee: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tiered profit share (basis: payee receipts or cumulative profit; optional loss carry-forward)."""
    n = revenue.shape[1]
    by_profit = c.clauses.by_profit[ci] > 0.0
    carry = c.clauses.carryforward[ci] > 0.0
    tiers = [(float(r), float(u)) for r, u in zip(c.clauses.tier_rate[ci], c.clauses.tier_until[ci], strict=True)
             if r > 0.0 or math.isfinite(u)]
    basis = np.zeros(n)  # payee receipts or cumulative shared profit so far
    losses = np.zeros(n)  # losses still to recover
    pv_payer, pv_payee = np.zeros(n), np.zeros(n)
    for k in steps:
        if not carry and c.model.margin[k] <= 0.0:
            continue  # no positive profit on any path: nothing paid, no state moves
        profit = c.model.margin[k] * revenue[k - 1] * frac[k - 1]
        if carry:
            loss = profit <= 0.0
            losses -= np.where(loss, profit, 0.0)
            used = np.where(loss, 0.0, np.minimum(profit, losses))
            losses -= used
            profit = profit - used
        pay = np.zeros(n)
        for rate, until in tiers:
            go = (profit > 0.0) & (basis < until)
            if not go.any():
                continue
            room = until - basis
            if by_profit:
                take = np.where(go, np.minimum(profit, room), 0.0)
                pay += rate * take
                basis += take
                profit = profit - take
            else:
                due = rate * profit
                fits = due <= room
                pay += np.where(go, np.where(fits, due, room), 0.0)
                basis = np.where(go, np.where(fits, basis + due, until), basis)
                rest = profit - room / rate if rate > 0.0 else np.zeros(n)
                profit = np.where(go, np.where(fits, 0.0, rest), profit)
        pv_payer += pay * df_payer[k]
        pv_payee += pay * df_payee[k]
    return pv_payer, pv_payee


def simulate_chunk(c: Compiled, gen: np.random.Generator, n: int) -> np.ndarray:
    """PVs of ``n`` paths, (structures, parties, n), after fallbacks."""
    times, met = _drivers(c, gen, n)
    revenue, horizon_rate = _revenue(c, gen, times[SRC_DECLARED], met)
    S, P = len(c.structures), len(c.parties)
    acc = np.zeros((S, P, n))
    t = c.t

    # per-step clauses: the share of each step inside the clause's window, kept per distinct window
    windows: dict[bytes, tuple] = {}
    for ci in range(len(c.clauses.kind)):
        kind = c.clauses.kind[ci]
        if kind in (EQUITY_STAKE, PAYMENT):
            continue
        src, val = c.triggers.src[c.clauses.trigger[ci]], c.triggers.val[c.clauses.trigger[ci]]  # (start, end)
        key = src.tobytes() + val.tobytes()
        if key not in windows:
            start = _trigger(src[0], val[0], times)
            end = _trigger(src[1], val[1], times)
            frac = _fraction(t, start, end)
            windows[key] = (frac, _steps_touched(t, start, end), {})
        frac, steps, cache = windows[key]
        df_payer = c.clauses.df[c.clauses.df_payer[ci]]
        df_payee = c.clauses.df[c.clauses.df_payee[ci]]
        if kind == REVENUE_SHARE and math.isfinite(c.clauses.cap[ci]):
            pv_payer, pv_payee = _capped_share(c, ci, revenue, frac, steps, df_payer, df_payee)
        elif kind == PROFIT_SHARE:
            pv_payer, pv_payee = _profit_share(c, ci, revenue, frac, steps, df_payer, df_payee)
        elif kind == OWN_VALUE and c.clauses.fixed_amount[ci] > 0.0:  # fixed amount per year
            per_year = c.clauses.amount_per_year[ci] * c.model.dt[1:]
            pv_payer = (per_year * df_payer[1:]) @ frac
            pv_payee = (per_year * df_payee[1:]) @ frac
        else:  # stateless share of revenue: an uncapped revenue share, or own value as a share of revenue
            rate = c.clauses.rate[ci, 1:]
            if frac.ndim == 1:
                pv_payer = (rate * frac * df_payer[1:]) @ revenue
                pv_payee = (rate * frac * df_payee[1:]) @ revenue
            else:
                if "base" not in cache:
                    cache["base"] = revenue * frac  # revenue inside the window, shared by its clauses
                pv_payer = (rate * df_payer[1:]) @ cache["base"]
                pv_payee = (rate * df_payee[1:]) @ cache["base"]
        s = c.clauses.structure[ci]
        if c.clauses.payer[ci] >= 0:
            acc[s, c.clauses.payer[ci]] -= pv_payer
        acc[s, c.clauses.payee[ci]] += pv_payee

    # one-off clauses: payments on their date, equity stakes at the horizon
    company_value = c.model.revenue[MULTIPLE] * horizon_rate
    for ci in range(len(c.clauses.kind)):
        kind = c.clauses.kind[ci]
        if kind not in (EQUITY_STAKE, PAYMENT):
            continue
        cond, index, wanted = c.clauses.cond_kind[ci], c.clauses.cond_index[ci], c.clauses.cond_wanted[ci]
        if cond == COND_DEADLINE:
            holds = met[index] == bool(wanted)
        elif cond == COND_EVENT:
            holds = (times[index] <= c.clauses.cond_date[ci]) == bool(wanted)
        else:
            holds = np.ones(n, dtype=bool)
        if kind == EQUITY_STAKE:
            amount = np.where(holds, c.clauses.fraction[ci] * company_value, 0.0)
        else:
            amount = np.where(holds, c.clauses.amount[ci], c.clauses.amount_otherwise[ci])
        s = c.clauses.structure[ci]
        if c.clauses.payer[ci] >= 0:
            acc[s, c.clauses.payer[ci]] -= amount * c.clauses.time_df[ci, 0]
        acc[s, c.clauses.payee[ci]] += amount * c.clauses.time_df[ci, 1]

    # fallbacks: the structure that applies, by the pattern of required deadlines met
    pattern = np.zeros(n, dtype=np.int64)
    for q, d in enumerate(c.drivers.req_deadlines):
        pattern |= met[d].astype(np.int64) << q
    eff = c.drivers.st_eff[pattern].T  # (S, n)
    return acc[eff[:, None, :], np.arange(P)[None, :, None], np.arange(n)[None, None, :]]


def simulate_means(compiled: Compiled, paths: int, seed: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Mean PV and its standard error, each shaped (structures, parties), after fallbacks.

    Chunks are merged with Chan's parallel update of (count, mean, sum of squared deviations); the
    standard error is the sample SD (ddof 1) over sqrt(paths), as in the kernel's summary.
    """
    if paths < 2:
        raise ValueError(f"paths must be >= 2, got {paths}")
    gen = np.random.default_rng(seed)
    shape = (len(compiled.structures), len(compiled.parties))
    count, mean, m2 = 0, np.zeros(shape), np.zeros(shape)
    for first in range(0, paths, chunk):
        n = min(chunk, paths - first)
        pv = simulate_chunk(compiled, gen, n)
        m = pv.mean(axis=2)
        dev = ((pv - m[..., None]) ** 2).sum(axis=2)
        total = count + n
        delta = m - mean
        mean = mean + delta * (n / total)
        m2 = m2 + dev + delta * delta * (count * n / total)
        count = total
    se = np.sqrt(m2 / (count - 1) / count)
    return mean, se
