"""The sampler seam: where the kernel's random numbers come from, and how the standard error is estimated.

The kernel takes every uniform and normal through :func:`draw_uniforms` and :func:`draw_normals`, which
dispatch on the sampler's code; the statistics take the standard error of a mean from the sampler's
estimator.  ``"pseudo"`` is the only sampler so far: independent counter-based pseudo-random paths
(Philox4x32-10) and the standard error SD / sqrt(paths).  Another sampler (antithetic pairs, randomized
quasi-Monte Carlo) adds its code here, its branch in the two functions below and its estimator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from models import rng
from models._jit import jit

PSEUDO = 0


@dataclass(frozen=True)
class Sampler:
    """A way to draw the paths' random numbers, with the standard-error estimator that goes with it."""

    name: str
    code: int
    description: str

    def standard_error(self, column: Any) -> float:
        """Standard error of the mean of a column of per-path values (``column.sd``, ``column.n``).

        Independent paths: SD / sqrt(paths).
        """
        return column.sd / math.sqrt(column.n)

    def share_error(self, share: float, n: int) -> float:
        """Standard error of a share of paths (a frequency, e.g. P(deadline met)): sqrt(p (1 - p) / paths)."""
        return float(math.sqrt(share * (1.0 - share) / n)) if n else float("nan")


SAMPLERS = {"pseudo": Sampler("pseudo", PSEUDO, "independent pseudo-random paths, Philox4x32-10 (Random123), "
                                                "counter = (path, draw, stream); normals by inverse CDF (AS241)")}


@jit(inline="always")  # no call, no reference counts: as if the kernel called Philox itself
def draw_uniforms(code, rk, first_path, stream, first_draw, u0, u1):
    """``u0[j, i], u1[j, i]``: the uniforms of draw ``first_draw + j`` on ``stream`` for path ``first_path + i``
    (``u1`` may have no rows).  ``rk``: the Philox round keys of the run's key."""
    if code == PSEUDO:
        rng.uniform_block(rk, first_path, stream, first_draw, u0, u1)


@jit(inline="always")
def draw_normals(code, u, z):
    """``z[j]``: the standard normal of uniform ``u[j]``."""
    if code == PSEUDO:
        rng.ndtri_array(u, z)
