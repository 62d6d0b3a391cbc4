"""Revenue of the company: log-dynamics with mean-reverting stochastic growth, bounded by a market.

The continuous model, for the unbounded revenue rate ``X`` (USD bn per year) and its growth rate ``g``::

    d log X = (g + u(t) - c(t) - sigma^2 / 2) dt + sigma dW1 + log(1 - jump_loss) dN
    dg      = kappa (gbar - g) dt + s_g (rho dW1 + sqrt(1 - rho^2) dW2)

``u`` is the AGI growth uplift once AGI is declared, ``c`` the growth haircuts of missed deadlines, ``N`` a
Poisson process of intensity ``lambda``.  The revenue rate is ``R = X / sqrt(1 + (X / M)^2)`` for a market size
``M`` (``R = X`` without one): close to ``X`` while revenue is small beside the market, never above ``M``,
smooth in between (no pile of paths at a cap).

**Exact at the step ends.**  Over a step of length ``h`` the growth rate and its integral are jointly Gaussian
with the revenue shock (the integrated Ornstein-Uhlenbeck process)::

    g_end        = gbar + (g - gbar) e + G,                           e = exp(-kappa h)
    int g dt     = gbar h + (g - gbar) B + I,                         B = (1 - e) / kappa
    sigma dW1    = sigma sqrt(h) z1

with ``(sqrt(h) z1, I, G)`` drawn exactly from their joint covariance (:meth:`RevenueModel.step_tables`, three
normals a step), the uplift and haircuts integrated over the part of the step they cover, and the number of
jumps in the step Poisson (not at most one).  So ``X`` at every step end has the continuous model's law, at any
step length.

**Revenue earned over a step** is the integral of the rate along the log-linear path between the step's ends,
``h * mean of R(l) for l from log X_a to log X_b`` (:func:`mean_rate`: ``h (X_b - X_a) / (log X_b - log X_a)``
without a market size), not the end-of-step rate times the length; profit is that times the operating margin
averaged over the step.  The same integral splits a step between calendar years.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from models._jit import jit


@dataclass(frozen=True)
class RevenueModel:
    """Parameters of the revenue process (rates per year, money in USD bn per year)."""

    initial: float
    initial_growth: float
    long_run_growth: float
    mean_reversion: float
    volatility: float
    growth_volatility: float = 0.0
    correlation: float = 0.0
    jump_intensity: float = 0.0
    jump_loss: float = 0.0
    agi_growth_uplift: float = 0.0
    exit_multiple: float = 1.0
    market_size: float = math.inf

    @property
    def initial_unbounded(self) -> float:
        """``X`` today: the unbounded rate whose saturated value is today's revenue rate."""
        if not math.isfinite(self.market_size):
            return self.initial
        return self.initial / math.sqrt(1.0 - (self.initial / self.market_size) ** 2)

    def params(self) -> np.ndarray:
        """Scalar parameters in the kernel's layout (see :data:`PARAM_NAMES`)."""
        rho = self.correlation
        return np.array([
            math.log(self.initial_unbounded), self.initial_growth, self.long_run_growth, self.volatility, rho,
            np.sqrt(max(0.0, 1.0 - rho * rho)), np.log1p(-self.jump_loss), self.agi_growth_uplift,
            self.exit_multiple, 1.0 / self.market_size, self.market_size,
        ])

    def step_tables(self, dt: np.ndarray) -> dict[str, np.ndarray]:
        """Per-step constants (entry 0 unused): ``sqrt_dt``, the growth decay ``e`` and mean factor ``B``, the
        Cholesky factor of ``(sqrt(h) z1, I, G)`` (``int_z1, int_z2`` for I; ``growth_z1 .. growth_z3`` for G)
        and ``jump_tail[k, n - 1] = P(N >= n)`` for the jumps of the step (as many columns as matter)."""
        h = np.asarray(dt, np.float64)
        kappa, s, rho = self.mean_reversion, self.growth_volatility, self.correlation
        cov = integrated_ou_table(h, kappa)
        e = np.array([c[0] for c in cov])
        b = np.array([c[1] for c in cov])
        v_i = s * s * np.array([c[2] for c in cov])  # Var I
        c_ig = s * s * np.array([c[3] for c in cov])  # Cov(I, G)
        v_g = s * s * np.array([c[4] for c in cov])  # Var G
        c_wi = rho * s * np.array([c[5] for c in cov])  # Cov(dW1, I)
        c_wg = rho * s * b  # Cov(dW1, G)
        root = np.sqrt(h)
        with np.errstate(divide="ignore", invalid="ignore"):
            int_z1 = np.where(h > 0, c_wi / root, 0.0)
            growth_z1 = np.where(h > 0, c_wg / root, 0.0)
            int_z2 = np.sqrt(np.maximum(v_i - int_z1**2, 0.0))
            growth_z2 = np.where(int_z2 > 0, (c_ig - int_z1 * growth_z1) / int_z2, 0.0)
        growth_z3 = np.sqrt(np.maximum(v_g - growth_z1**2 - growth_z2**2, 0.0))
        return {"sqrt_dt": root, "growth_decay": e, "growth_mean": b, "int_z1": int_z1, "int_z2": int_z2,
                "growth_z1": growth_z1, "growth_z2": growth_z2, "growth_z3": growth_z3,
                "jump_tail": jump_tail(self.jump_intensity * h)}

    def log_envelope(self, t: np.ndarray, sds: float = 8.0) -> np.ndarray:
        """An upper envelope of log revenue on the grid ``t``: ``sds`` standard deviations above the mean path.

        The mean is the model's own (growth reverting from today's, the AGI uplift from day one when positive,
        no jumps or haircuts, which only lower revenue); the spread is the revenue shock's ``sigma sqrt(t)`` plus
        the integrated growth shocks' exact OU standard deviation, added as if perfectly correlated.  Used to
        reject inputs that would overflow; a market size bounds revenue whatever the envelope.
        """
        kappa, gbar = self.mean_reversion, self.long_run_growth
        s = t - t[0]
        table = integrated_ou_table(s, kappa)
        mean_int = gbar * s + (self.initial_growth - gbar) * np.array([c[1] for c in table])
        drift = mean_int + (max(self.agi_growth_uplift, 0.0) - 0.5 * self.volatility**2) * s
        var_g = np.array([c[2] for c in table])
        spread = self.volatility * np.sqrt(s) + self.growth_volatility * np.sqrt(np.maximum(var_g, 0.0))
        log_x = math.log(self.initial_unbounded) + drift + sds * spread
        if math.isfinite(self.market_size):
            return np.minimum(log_x, math.log(self.market_size))
        return log_x


def integrated_ou_table(h: np.ndarray, kappa: float) -> list[tuple[float, float, float, float, float, float]]:
    """:func:`integrated_ou` of each step length, computed once per distinct length (a grid has few)."""
    h = np.asarray(h, np.float64)
    values, inverse = np.unique(h, return_inverse=True)
    if len(values) > 64:  # an envelope's elapsed times (all distinct): the closed forms where they are exact
        return [integrated_ou(float(x), kappa) for x in h] if len(h) <= 4096 else _integrated_ou_fast(h, kappa)
    rows = [integrated_ou(float(x), kappa) for x in values]
    return [rows[j] for j in inverse.ravel()]


def _integrated_ou_fast(h: np.ndarray, kappa: float) -> list[tuple[float, float, float, float, float, float]]:
    """The envelope's long grids: B and Var I only matter there (an upper bound), to a few digits."""
    x = kappa * h
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(x > 1e-6, -np.expm1(-x) / np.where(kappa > 0, kappa, 1.0), h)
        v_i = np.where(x > 1e-2, (h - 2 * b - np.expm1(-2 * x) / (2 * np.where(kappa > 0, kappa, 1.0)))
                       / np.where(kappa > 0, kappa, 1.0) ** 2, h**3 / 3 * (1 - 3 * x / 4))
    return [(0.0, float(bb), float(vv), 0.0, 0.0, 0.0) for bb, vv in zip(b, v_i, strict=True)]


def integrated_ou(h: float, kappa: float) -> tuple[float, float, float, float, float, float]:
    """For unit growth volatility and unit correlation, over a step ``h``: ``e = exp(-kappa h)``,
    ``B = (1 - e) / kappa``, ``Var I``, ``Cov(I, G)``, ``Var G`` and ``Cov(W1, I)`` (for ``W1`` the growth's own
    Brownian motion), accurate to rounding for any ``kappa h``: below ``kappa h = 1`` by their power series in
    ``x = kappa h`` (the closed forms cancel there), above it in closed form."""
    x = kappa * h
    e = math.exp(-x)
    if x < 1.0:
        b = v_i = c_ig = v_g = c_wi = 0.0
        term = 1.0  # (-x)^n / n!
        p2 = 1.0  # 2^n, exactly (what 2.0 ** n gives, without a power per term)
        for n in range(0, 60):
            if n > 0:
                term *= -x / n
                p2 *= 2.0
            # term = (-1)^n x^n / n!; each series below in these terms (divided by the x powers taken out)
            b += term / (n + 1)  # (1 - e^-x) / x = sum (-x)^n / (n + 1)!
            v_g += term * p2 / (n + 1)  # (1 - e^-2x) / 2x = sum (-2x)^n / (n + 1)!
            c_wi += term / ((n + 1) * (n + 2))  # (x - 1 + e^-x) / x^2 = sum (-x)^n / (n + 2)!
            c_ig -= term * (1.0 - 2.0 * p2) / ((n + 1) * (n + 2))  # ((1 - e^-x) - (1 - e^-2x) / 2) / x^2
            # (x - 2 (1 - e^-x) + (1 - e^-2x) / 2) / x^3 = sum (-x)^n (2^(n+2) - 2) / (n + 3)!
            v_i += term * (4.0 * p2 - 2.0) / ((n + 1) * (n + 2) * (n + 3))
            if abs(term) < 1e-300:
                break
            # from n = 3 on every series' terms shrink (x < 1): once each is below a quarter of an ulp of its sum,
            # no later one can change a sum, so stopping here gives the very sums of running on
            if n >= 3 and abs(term) * p2 < 1e-17 * min(abs(b), abs(v_g), abs(c_wi), abs(c_ig), abs(v_i)):
                break
        return e, h * b, h**3 * v_i, h * h * c_ig, h * v_g, h * h * c_wi
    b = -math.expm1(-x) / kappa
    half = -math.expm1(-2 * x) / (2 * kappa)  # (1 - e^2) / (2 kappa)
    v_i = (h - 2 * b + half) / kappa**2
    c_ig = (b - half) / kappa
    return e, b, v_i, c_ig, half, (h - b) / kappa


def jump_tail(mean: np.ndarray, tiny: float = 1e-18) -> np.ndarray:
    """``P(N >= n)`` for ``n = 1, 2, ...`` of Poisson counts with these means (one row each), up to the first
    ``n`` beyond which every row's tail is below ``tiny``; at least one column."""
    mean = np.asarray(mean, np.float64)
    top = float(mean.max()) if mean.size else 0.0
    n_max = 1
    while n_max < 1000 and stats.poisson.sf(n_max, top) >= tiny:
        n_max += 1
    n = np.arange(1, n_max + 1)
    return stats.poisson.sf(n[None, :] - 1, mean[:, None])


PARAM_NAMES = ("log_initial", "initial_growth", "long_run_growth", "volatility", "rho", "rho_complement",
               "log_jump_factor", "agi_uplift", "exit_multiple", "inverse_market_size", "market_size")
LOG_X0, G0, GBAR, SIGMA, RHO, RHO_C, LOG_JUMP, UPLIFT, MULTIPLE, INV_MARKET, MARKET = range(len(PARAM_NAMES))


@jit
def overlap(a, b, lo, hi):
    """Length of the intersection of (a, b] and [lo, hi)."""
    left = a if a > lo else lo
    right = b if b < hi else hi
    return right - left if right > left else 0.0


@jit
def saturated(x, inv_m):
    """The revenue rate of the unbounded rate ``x`` for ``inv_m = 1 / market size`` (0: no market size); the
    market size itself once ``x`` is beyond 1e8 of it (where ``y * y`` would overflow, or ``x`` has)."""
    if inv_m == 0.0:
        return x
    y = x * inv_m
    if y > 1e8:
        return 1.0 / inv_m
    return x / math.sqrt(1.0 + y * y)


@jit
def _asinh_exp(log_x, inv_m):
    """``asinh(exp(log_x) * inv_m)`` without overflow: ``log_x + log(inv_m) + log 2`` once the argument passes
    1e8."""
    z = log_x + math.log(inv_m)
    if z > 18.42:  # exp(z) > 1e8: asinh(u) = log(2u) + 1/(4u^2) - ..., the rest below rounding
        return z + 0.6931471805599453
    return math.asinh(math.exp(z))


@jit
def mean_rate(la, lb, inv_m):
    """Mean of the revenue rate along the log-linear path of the unbounded rate from ``exp(la)`` to ``exp(lb)``:
    ``(F(lb) - F(la)) / (lb - la)`` with ``F(l) = M asinh(exp(l) / M)`` (``exp(l)`` without a market size), and
    near ``la == lb`` the midpoint rule with its second-order term (error below 1e-16 relative)."""
    d = lb - la
    if -1e-3 < d < 1e-3:
        mid = 0.5 * (la + lb)
        x = math.exp(mid)
        if inv_m == 0.0:
            return x * (1.0 + d * d / 24.0)
        if x * inv_m > 1e8:
            return 1.0 / inv_m
        y2 = (x * inv_m) * (x * inv_m)
        r = x / math.sqrt(1.0 + y2)
        return r * (1.0 + (1.0 - 2.0 * y2) / ((1.0 + y2) * (1.0 + y2)) * d * d / 24.0)
    if inv_m == 0.0:
        return (math.exp(lb) - math.exp(la)) / d
    return (_asinh_exp(lb, inv_m) - _asinh_exp(la, inv_m)) / (inv_m * d)
