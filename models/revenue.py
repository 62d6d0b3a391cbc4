"""Revenue of the company: log-dynamics with mean-reverting stochastic growth.

Per step ``k`` of length ``h`` (years), with ``z1, z2`` independent normals::

    log R_k = log R_{k-1} + (g_{k-1} + u_k - c_k - sigma^2 / 2) h + sigma sqrt(h) z1 + J_k
    g_k     = gbar + (g_{k-1} - gbar) exp(-kappa h)
              + s_g sqrt((1 - exp(-2 kappa h)) / (2 kappa)) (rho z1 + sqrt(1 - rho^2) z2)

``u_k`` is the AGI growth uplift times the share of the step after AGI is
declared, ``c_k`` the growth haircuts of missed deadlines (same pro-rating),
``J_k = log(1 - jump_loss)`` with probability ``1 - exp(-lambda h)``.  The
growth update is the exact Ornstein-Uhlenbeck transition.  Revenue booked in
step k is ``R_k h`` (the annual rate at the step's end times its length);
profit is that times the operating margin averaged over the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

    def params(self) -> np.ndarray:
        """Scalar parameters in the kernel's layout (see :data:`PARAM_NAMES`)."""
        rho = self.correlation
        return np.array([
            np.log(self.initial), self.initial_growth, self.long_run_growth, self.volatility, rho,
            np.sqrt(max(0.0, 1.0 - rho * rho)), np.log1p(-self.jump_loss), self.agi_growth_uplift,
            self.exit_multiple,
        ])

    def step_tables(self, dt: np.ndarray) -> dict[str, np.ndarray]:
        """Per-step constants: sqrt(h), the growth decay and its shock scale, the jump probability."""
        kappa = self.mean_reversion
        decay = np.exp(-kappa * dt)
        if kappa > 0:
            shock = self.growth_volatility * np.sqrt(-np.expm1(-2.0 * kappa * dt) / (2.0 * kappa))
        else:
            shock = self.growth_volatility * np.sqrt(dt)
        return {
            "sqrt_dt": np.sqrt(dt),
            "growth_decay": decay,
            "growth_shock": shock,
            "jump_prob": -np.expm1(-self.jump_intensity * dt),
        }


    def log_envelope(self, t: np.ndarray, sds: float = 8.0) -> np.ndarray:
        """An upper envelope of log revenue on the grid ``t``: ``sds`` standard deviations above the mean path.

        The mean is the discrete model's own (growth at each step's start, the AGI uplift from day one when
        positive, no jumps or haircuts, which only lower revenue); the spread is the revenue shock's
        ``sigma sqrt(t)`` plus the integrated growth shocks' exact OU standard deviation (``s_g^2 t^3 / 3`` with
        no reversion), added as if perfectly correlated.  Used to reject inputs that would overflow.
        """
        h = np.diff(t, prepend=t[0])
        kappa, gbar = self.mean_reversion, self.long_run_growth
        start = np.concatenate(([t[0]], t[:-1]))  # each step's start
        growth = gbar + (self.initial_growth - gbar) * np.exp(-kappa * (start - t[0]))
        drift = growth + max(self.agi_growth_uplift, 0.0) - 0.5 * self.volatility**2
        s = t - t[0]
        with np.errstate(over="ignore", invalid="ignore"):
            if kappa * s[-1] < 1e-3:
                var_g = s**3 / 3.0
            else:
                var_g = (s + 2.0 * np.expm1(-kappa * s) / kappa - np.expm1(-2.0 * kappa * s) / (2.0 * kappa)) \
                    / kappa**2
        spread = self.volatility * np.sqrt(s) + self.growth_volatility * np.sqrt(np.maximum(var_g, 0.0))
        return np.log(self.initial) + np.cumsum(drift * h) + sds * spread


PARAM_NAMES = ("log_initial", "initial_growth", "long_run_growth", "volatility", "rho", "rho_complement",
               "log_jump_factor", "agi_uplift", "exit_multiple")
LOG_R0, G0, GBAR, SIGMA, RHO, RHO_C, LOG_JUMP, UPLIFT, MULTIPLE = range(len(PARAM_NAMES))


@jit
def overlap(a, b, lo, hi):
    """Length of the intersection of (a, b] and [lo, hi)."""
    left = a if a > lo else lo
    right = b if b < hi else hi
    return right - left if right > left else 0.0


@jit
def log_step(log_r, g, z1, h, vol_h, extra_growth, half_var):
    """Log revenue at the end of a step, before any jump, with ``vol_h = sigma * sqrt(h)`` and ``half_var =
    0.5 * sigma * sigma`` given: scalars only, for loops over many paths at once."""
    return log_r + (g + extra_growth - half_var) * h + vol_h * z1


@jit
def ou_step(g, z1, z2, decay, shock, gbar, rho, rho_c):
    """Exact OU transition of the growth rate over one step, the parameters given as scalars."""
    return gbar + (g - gbar) * decay + shock * (rho * z1 + rho_c * z2)
