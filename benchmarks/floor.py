"""The random-number floor: the same Philox generator and normal transform, a bare log-normal step.

What the machine's RNG + exp costs per path-step, with nothing else; the full model's throughput is
reported as a fraction of it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from models import rng
from models._jit import pjit


@pjit
def floor_kernel(key, n_paths, n_steps, dt, sigma, out):
    """Per path: log S over ``n_steps`` steps of a driftless log-normal walk; writes S at the end."""
    sqrt_dt = math.sqrt(dt)
    drift = -0.5 * sigma * sigma * dt
    for i in numba.prange(n_paths):
        log_s = 0.0
        for k in range(1, n_steps + 1):
            z = rng.ndtri(rng.uniform(key, i, rng.STREAM_SHOCKS, k))
            log_s += drift + sigma * sqrt_dt * z
        out[i] = math.exp(log_s)


def run_floor(paths: int, steps: int, seed: int = 1) -> np.ndarray:
    key, _ = rng.key_from_seed(seed)
    out = np.empty(paths)
    floor_kernel(key, paths, steps, 0.25, 0.2, out)
    return out
