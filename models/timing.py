"""Distributions of random event times.

Every time here is in **years after the valuation date**.  The module is used
for the AGI declaration time, the AGI verification lag and the completion times
of deadline events.

Each family is a frozen dataclass in the style of :mod:`scipy.stats`
(closed-form ``cdf``, ``sf``, ``ppf`` and ``hazard`` that take scalars or numpy
arrays) with two common optional fields:

``start``
    Years after the valuation date at which the clock starts.  The event time is
    ``start + X`` where ``X >= 0`` follows the family's *inner* law ``F0``; the
    hazard is zero before ``start``.
``never``
    Probability that the event never happens (an atom at ``+inf``).

So the full law is ``cdf(t) = (1 - never) * F0(t - start)`` for ``t > start``
(``0`` before) and ``ppf(u) = start + F0^{-1}(u / (1 - never))`` for
``u <= 1 - never``, ``+inf`` above.

For the Monte Carlo kernels a distribution is flattened by
:meth:`to_params` into ``(code, params)``, an integer family code and a float64
array of fixed length :data:`N_PARAMS`, and sampled by inverse transform with
the compiled scalar function :func:`sample_time`.

Parameter layout of ``params`` (length ``N_PARAMS = 2 * MAX_PIECES + 4``)::

    params[0]   start (years)
    params[1]   never (probability)
    params[2]   first family parameter   (see table)
    params[3]   second family parameter  (see table, 0.0 if unused)
    params[4 : 4 + MAX_PIECES]               piecewise breakpoints (years after start)
    params[4 + MAX_PIECES : 4 + 2*MAX_PIECES] piecewise hazards (per year)

    code         params[2]            params[3]
    EXPONENTIAL  rate (1/y)           -
    WEIBULL      shape (-)            scale (y)
    LOGNORMAL    median (y)           sigma (-)
    GOMPERTZ     rate (1/y)           growth (1/y)
    PIECEWISE    number of pieces n   -
    FIXED        value (y)            -

Unused entries are zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.optimize import brentq, least_squares

from models._jit import jit
from models.rng import ndtri

__all__ = [
    "EXPONENTIAL",
    "FIXED",
    "GOMPERTZ",
    "LOGNORMAL",
    "MAX_PIECES",
    "N_PARAMS",
    "PIECEWISE",
    "WEIBULL",
    "Exponential",
    "Fixed",
    "Gompertz",
    "Lognormal",
    "PiecewiseHazard",
    "QuantileFit",
    "Weibull",
    "fit_quantiles",
    "from_params",
    "sample_time",
    "sample_times",
]

EXPONENTIAL = 0
WEIBULL = 1
LOGNORMAL = 2
GOMPERTZ = 3
PIECEWISE = 4
FIXED = 5

MAX_PIECES = 32
N_PARAMS = 2 * MAX_PIECES + 4

_BREAKS = 4  # offset of the piecewise breakpoints in ``params``
_HAZARDS = 4 + MAX_PIECES  # offset of the piecewise hazards in ``params``


# --------------------------------------------------------------------------
# Compiled kernels
# --------------------------------------------------------------------------


@jit
def _tail_split(u, never):
    """Split ``u`` into the inner lower and upper probabilities.

    Returns ``(v, q, q_num)`` with ``v = u / (1 - never)``, the inner upper
    probability ``q = 1 - v`` computed without cancellation, and
    ``q_num = 1 - never - u`` (negative when ``u > 1 - never``).  ``1 - u`` is
    carried exactly with a Fast2Sum error term so ``q`` is accurate even when
    ``u`` is close to ``1 - never``.
    """
    a = 1.0 - u
    err = (1.0 - a) - u
    q_num = (a - never) + err
    one_m = 1.0 - never
    return u / one_m, q_num / one_m, q_num


@jit
def _cumhaz(v, q):
    """Cumulative hazard ``-ln(1 - v)`` from the lower ``v`` or upper ``q``."""
    if v < 0.5:
        return -math.log1p(-v)
    return -math.log(q)


@jit
def _piecewise_inverse(params, h_target):
    """Years after start at which the piecewise cumulative hazard reaches ``h_target``."""
    if h_target <= 0.0:
        return 0.0
    n = int(params[2])
    h_cum = 0.0
    for i in range(n - 1):
        t_lo = params[_BREAKS + i]
        t_hi = params[_BREAKS + i + 1]
        rate = params[_HAZARDS + i]
        h_next = h_cum + rate * (t_hi - t_lo)
        if h_next >= h_target:
            # h_cum < h_target <= h_next, so rate > 0 here.
            return min(t_lo + (h_target - h_cum) / rate, t_hi)
        h_cum = h_next
    rate = params[_HAZARDS + n - 1]
    if rate > 0.0:
        return params[_BREAKS + n - 1] + (h_target - h_cum) / rate
    return math.inf


@jit
def sample_time(code, params, u):
    """Event time (years after valuation) for one uniform ``u`` by inverse transform.

    Parameters
    ----------
    code : int
        Family code (:data:`EXPONENTIAL`, ..., :data:`FIXED`).
    params : ndarray of float64, shape (N_PARAMS,)
        Parameters as laid out by :meth:`to_params`.
    u : float
        Uniform variate in (0, 1).

    Returns
    -------
    float
        ``ppf(u)`` in years after the valuation date; ``+inf`` when the event
        never happens (``u > 1 - never``, or beyond a zero tail hazard).
        ``nan`` for an unknown code.
    """
    start = params[0]
    never = params[1]
    if code == FIXED:
        a = 1.0 - u
        err = (1.0 - a) - u
        if (a - never) + err < 0.0:
            return math.inf
        return start + params[2]
    if u <= 0.0:
        return start
    v, q, q_num = _tail_split(u, never)
    if q_num <= 0.0:
        return math.inf
    if code == LOGNORMAL:
        if v < 0.5:
            z = ndtri(v)
        else:
            z = -ndtri(q)
        return start + params[2] * math.exp(params[3] * z)
    h = _cumhaz(v, q)
    if code == EXPONENTIAL:
        x = h / params[2]
    elif code == WEIBULL:
        x = params[3] * h ** (1.0 / params[2])
    elif code == GOMPERTZ:
        x = math.log1p(h * params[3] / params[2]) / params[3]
    elif code == PIECEWISE:
        x = _piecewise_inverse(params, h)
    else:
        return math.nan
    return start + x


@jit
def sample_times(code, params, u):
    """Vector version of :func:`sample_time` over a 1-D array ``u``; returns years."""
    out = np.empty(u.shape[0])
    for i in range(u.shape[0]):
        out[i] = sample_time(code, params, u[i])
    return out


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def _check_positive(name, value):
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be > 0 and finite, got {value!r}")
    return value


def _check_nonnegative(name, value):
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be >= 0 and finite, got {value!r}")
    return value


def _fmt(x):
    return f"{x:.3g}"


# --------------------------------------------------------------------------
# Common behaviour
# --------------------------------------------------------------------------


class _TimeDistribution:
    """Shared ``cdf``/``sf``/``ppf``/``hazard`` on top of the inner law.

    Subclasses provide, for ``x = t - start >= 0`` (arrays):
    ``_inner_cdf``, ``_inner_sf``, ``_inner_hazard`` and ``_inner_ppf(v, q)``
    (``v`` lower probability, ``q = 1 - v`` computed accurately).
    """

    start: float
    never: float
    code: int

    def _validate_common(self):
        object.__setattr__(self, "start", _check_nonnegative("start", self.start))
        never = float(self.never)
        if not (0.0 <= never < 1.0):
            raise ValueError(f"never must be in [0, 1), got {never!r}")
        object.__setattr__(self, "never", never)

    # -- public API --------------------------------------------------------

    def cdf(self, t):
        """P(event time <= t).

        Parameters
        ----------
        t : float or array_like
            Years after the valuation date.

        Returns
        -------
        float64 or ndarray
            Probability, same shape as ``t``; tends to ``1 - never``.
        """
        t = np.asarray(t, dtype=np.float64)
        x = t - self.start
        with np.errstate(all="ignore"):
            inner = self._inner_cdf(np.where(x > 0.0, x, 0.0))
        out = np.where(x > 0.0, (1.0 - self.never) * inner, 0.0)
        return np.where(np.isnan(t), np.nan, out)[()]

    def sf(self, t):
        """P(event time > t), including the ``never`` atom.

        Parameters
        ----------
        t : float or array_like
            Years after the valuation date.

        Returns
        -------
        float64 or ndarray
            Probability, same shape as ``t``; tends to ``never``.
        """
        t = np.asarray(t, dtype=np.float64)
        x = t - self.start
        with np.errstate(all="ignore"):
            inner = self._inner_sf(np.where(x > 0.0, x, 0.0))
        out = np.where(x > 0.0, self.never + (1.0 - self.never) * inner, 1.0)
        return np.where(np.isnan(t), np.nan, out)[()]

    def ppf(self, u):
        """Quantile: the earliest time by which the event has happened with probability ``u``.

        Parameters
        ----------
        u : float or array_like
            Probability in [0, 1].

        Returns
        -------
        float64 or ndarray
            Years after the valuation date, same shape as ``u``; ``+inf`` for
            ``u > 1 - never``; ``nan`` outside [0, 1].
        """
        u = np.asarray(u, dtype=np.float64)
        with np.errstate(all="ignore"):
            a = 1.0 - u
            err = (1.0 - a) - u
            q_num = (a - self.never) + err
            one_m = 1.0 - self.never
            v = u / one_m
            q = q_num / one_m
            x = self._inner_ppf(
                np.where(q_num > 0.0, v, 0.0), np.where(q_num > 0.0, q, 1.0)
            )
        out = np.where(q_num > 0.0, self.start + x, np.inf)
        out = np.where(u <= 0.0, self.start, out)
        out = np.where((u >= 0.0) & (u <= 1.0), out, np.nan)
        return out[()]

    def hazard(self, t):
        """Hazard rate of the full law (``never`` included) at ``t``.

        With ``never > 0`` this is ``(1 - never) f0 / sf``, lower than the inner
        hazard because survivors include those for whom the event never comes.

        Parameters
        ----------
        t : float or array_like
            Years after the valuation date.

        Returns
        -------
        float64 or ndarray
            Events per year, same shape as ``t``; zero before ``start``.
        """
        t = np.asarray(t, dtype=np.float64)
        x = t - self.start
        xc = np.where(x >= 0.0, x, 0.0)
        with np.errstate(all="ignore"):
            h0 = self._inner_hazard(xc)
            if self.never > 0.0:
                s0 = self._inner_sf(xc)
                weight = (
                    (1.0 - self.never) * s0 / (self.never + (1.0 - self.never) * s0)
                )
                h0 = np.where(weight > 0.0, h0 * weight, 0.0)
        out = np.where(x >= 0.0, h0, 0.0)
        return np.where(np.isnan(t), np.nan, out)[()]

    def to_params(self) -> tuple[int, np.ndarray]:
        """Flatten to ``(code, params)`` for :func:`sample_time`.

        Returns
        -------
        code : int
            Family code.
        params : ndarray of float64, shape (N_PARAMS,)
            See the module docstring for the layout.
        """
        params = np.zeros(N_PARAMS, dtype=np.float64)
        params[0] = self.start
        params[1] = self.never
        self._fill_params(params)
        return self.code, params

    def describe(self) -> str:
        """One-line human description, e.g. ``lognormal(median 7.2 y, sigma 0.9) from 1.5 y, P(never) 5%``."""
        text = self._describe_inner()
        if self.start > 0.0:
            text += f" from {_fmt(self.start)} y"
        if self.never > 0.0:
            text += f", P(never) {_fmt(100.0 * self.never)}%"
        return text

    def __str__(self):
        return self.describe()


# --------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Exponential(_TimeDistribution):
    """Constant hazard ``rate`` per year after ``start``.

    Parameters
    ----------
    rate : float
        Hazard (1/year), > 0.
    start : float
        Years after valuation at which the clock starts, >= 0.
    never : float
        Probability the event never happens, in [0, 1).
    """

    rate: float
    start: float = 0.0
    never: float = 0.0

    code = EXPONENTIAL

    def __post_init__(self):
        object.__setattr__(self, "rate", _check_positive("rate", self.rate))
        self._validate_common()

    def _inner_cdf(self, x):
        return -np.expm1(-self.rate * x)

    def _inner_sf(self, x):
        return np.exp(-self.rate * x)

    def _inner_hazard(self, x):
        return np.full_like(x, self.rate)

    def _inner_ppf(self, v, q):
        return _np_cumhaz(v, q) / self.rate

    def _fill_params(self, params):
        params[2] = self.rate

    def _describe_inner(self):
        return f"exponential(rate {_fmt(self.rate)}/y, mean {_fmt(1.0 / self.rate)} y)"


@dataclass(frozen=True)
class Weibull(_TimeDistribution):
    """Weibull law, inner cdf ``1 - exp(-(x / scale) ** shape)``.

    Parameters
    ----------
    shape : float
        Shape (dimensionless), > 0; > 1 means a rising hazard.
    scale : float
        Scale (years), > 0; the inner 63.2% quantile.
    start, never : float
        See module docstring.
    """

    shape: float
    scale: float
    start: float = 0.0
    never: float = 0.0

    code = WEIBULL

    def __post_init__(self):
        object.__setattr__(self, "shape", _check_positive("shape", self.shape))
        object.__setattr__(self, "scale", _check_positive("scale", self.scale))
        self._validate_common()

    def _inner_cdf(self, x):
        return -np.expm1(-((x / self.scale) ** self.shape))

    def _inner_sf(self, x):
        return np.exp(-((x / self.scale) ** self.shape))

    def _inner_hazard(self, x):
        return (self.shape / self.scale) * (x / self.scale) ** (self.shape - 1.0)

    def _inner_ppf(self, v, q):
        return self.scale * _np_cumhaz(v, q) ** (1.0 / self.shape)

    def _fill_params(self, params):
        params[2] = self.shape
        params[3] = self.scale

    def _describe_inner(self):
        return f"weibull(shape {_fmt(self.shape)}, scale {_fmt(self.scale)} y)"


@dataclass(frozen=True)
class Lognormal(_TimeDistribution):
    """Lognormal law, ``X = median * exp(sigma * Z)`` with ``Z`` standard normal.

    Parameters
    ----------
    median : float
        Inner median (years), > 0.
    sigma : float
        Standard deviation of ``ln X`` (dimensionless), > 0.
    start, never : float
        See module docstring.
    """

    median: float
    sigma: float
    start: float = 0.0
    never: float = 0.0

    code = LOGNORMAL

    def __post_init__(self):
        object.__setattr__(self, "median", _check_positive("median", self.median))
        object.__setattr__(self, "sigma", _check_positive("sigma", self.sigma))
        self._validate_common()

    def _z(self, x):
        return np.log(x / self.median) / self.sigma

    def _inner_cdf(self, x):
        return special.ndtr(self._z(x))

    def _inner_sf(self, x):
        return special.ndtr(-self._z(x))

    def _inner_hazard(self, x):
        z = self._z(x)
        log_pdf = -0.5 * z * z - 0.5 * math.log(2.0 * math.pi) - np.log(x * self.sigma)
        h = np.exp(log_pdf - special.log_ndtr(-z))
        return np.where(x > 0.0, h, 0.0)

    def _inner_ppf(self, v, q):
        z = np.where(v < 0.5, special.ndtri(v), -special.ndtri(q))
        return self.median * np.exp(self.sigma * z)

    def _fill_params(self, params):
        params[2] = self.median
        params[3] = self.sigma

    def _describe_inner(self):
        return f"lognormal(median {_fmt(self.median)} y, sigma {_fmt(self.sigma)})"


@dataclass(frozen=True)
class Gompertz(_TimeDistribution):
    """Gompertz law: hazard ``rate * exp(growth * x)``.

    Inner cdf ``1 - exp(-(rate / growth) * (exp(growth * x) - 1))``.

    Parameters
    ----------
    rate : float
        Initial hazard at ``start`` (1/year), > 0.
    growth : float
        Exponential growth rate of the hazard (1/year), > 0.
    start, never : float
        See module docstring.
    """

    rate: float
    growth: float
    start: float = 0.0
    never: float = 0.0

    code = GOMPERTZ

    def __post_init__(self):
        object.__setattr__(self, "rate", _check_positive("rate", self.rate))
        object.__setattr__(self, "growth", _check_positive("growth", self.growth))
        self._validate_common()

    def _cum(self, x):
        return (self.rate / self.growth) * np.expm1(self.growth * x)

    def _inner_cdf(self, x):
        return -np.expm1(-self._cum(x))

    def _inner_sf(self, x):
        return np.exp(-self._cum(x))

    def _inner_hazard(self, x):
        return self.rate * np.exp(self.growth * x)

    def _inner_ppf(self, v, q):
        return np.log1p(_np_cumhaz(v, q) * self.growth / self.rate) / self.growth

    def _fill_params(self, params):
        params[2] = self.rate
        params[3] = self.growth

    def _describe_inner(self):
        return f"gompertz(rate {_fmt(self.rate)}/y, growth {_fmt(self.growth)}/y)"


@dataclass(frozen=True)
class PiecewiseHazard(_TimeDistribution):
    """Piecewise-constant hazard.

    Parameters
    ----------
    times : tuple of float
        Breakpoints in years after ``start``, strictly increasing, first 0.0;
        at most :data:`MAX_PIECES`.
    hazards : tuple of float
        ``hazards[i]`` (1/year, >= 0) applies on ``[times[i], times[i+1])``;
        the last applies forever after.  A last hazard of 0 leaves the
        remaining mass on "never" (``ppf`` then returns ``+inf``).
    start, never : float
        See module docstring.
    """

    times: tuple
    hazards: tuple
    start: float = 0.0
    never: float = 0.0

    code = PIECEWISE

    def __post_init__(self):
        times = tuple(
            float(t) for t in np.atleast_1d(np.asarray(self.times, dtype=np.float64))
        )
        hazards = tuple(
            float(h) for h in np.atleast_1d(np.asarray(self.hazards, dtype=np.float64))
        )
        if len(times) == 0:
            raise ValueError("times must have at least one breakpoint, got ()")
        if len(times) != len(hazards):
            raise ValueError(
                f"times and hazards must have the same length, got {len(times)} and {len(hazards)}"
            )
        if len(times) > MAX_PIECES:
            raise ValueError(
                f"times must have at most {MAX_PIECES} pieces, got {len(times)}"
            )
        if times[0] != 0.0:
            raise ValueError(
                f"times[0] must be 0.0 (relative to start), got {times[0]!r}"
            )
        for i in range(1, len(times)):
            if not (math.isfinite(times[i]) and times[i] > times[i - 1]):
                raise ValueError(
                    f"times must be finite and strictly increasing, got times[{i}]={times[i]!r} "
                    f"after {times[i - 1]!r}"
                )
        for i, h in enumerate(hazards):
            if not (math.isfinite(h) and h >= 0.0):
                raise ValueError(
                    f"hazards must be >= 0 and finite, got hazards[{i}]={h!r}"
                )
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "hazards", hazards)
        self._validate_common()

    def _arrays(self):
        t = np.array(self.times)
        h = np.array(self.hazards)
        # Same summation order as the compiled kernel.
        h_cum = np.concatenate(([0.0], np.cumsum(h[:-1] * np.diff(t))))
        return t, h, h_cum

    def _cum(self, x):
        t, h, h_cum = self._arrays()
        k = np.searchsorted(t, x, side="right") - 1
        k = np.clip(k, 0, len(t) - 1)
        rate = h[k]
        return h_cum[k] + np.where(rate > 0.0, rate * (x - t[k]), 0.0)

    def _inner_cdf(self, x):
        return -np.expm1(-self._cum(x))

    def _inner_sf(self, x):
        return np.exp(-self._cum(x))

    def _inner_hazard(self, x):
        t, h, _ = self._arrays()
        k = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(t) - 1)
        return h[k]

    def _inner_ppf(self, v, q):
        t, h, h_cum = self._arrays()
        target = _np_cumhaz(v, q)
        n = len(t)
        j = np.searchsorted(
            h_cum, target, side="left"
        )  # first breakpoint with H >= target
        seg = np.clip(j - 1, 0, n - 1)
        rate = h[seg]
        upper = np.append(t[1:], np.inf)[seg]
        x = np.where(rate > 0.0, t[seg] + (target - h_cum[seg]) / rate, np.inf)
        x = np.minimum(x, upper)
        return np.where(target <= 0.0, 0.0, x)

    def _fill_params(self, params):
        n = len(self.times)
        params[2] = float(n)
        params[_BREAKS : _BREAKS + n] = self.times
        params[_HAZARDS : _HAZARDS + n] = self.hazards

    def _describe_inner(self):
        parts = []
        n = len(self.times)
        for i in range(n - 1):
            parts.append(
                f"{_fmt(self.hazards[i])}/y on [{_fmt(self.times[i])}, {_fmt(self.times[i + 1])}) y"
            )
        parts.append(f"{_fmt(self.hazards[-1])}/y from {_fmt(self.times[-1])} y")
        return "piecewise hazard(" + ", ".join(parts) + ")"


@dataclass(frozen=True)
class Fixed(_TimeDistribution):
    """Degenerate law: the event happens exactly ``value`` years after ``start``.

    ``hazard`` is 0 everywhere except ``+inf`` at the event time.

    Parameters
    ----------
    value : float
        Years after ``start``, >= 0.
    start, never : float
        See module docstring.
    """

    value: float
    start: float = 0.0
    never: float = 0.0

    code = FIXED

    def __post_init__(self):
        object.__setattr__(self, "value", _check_nonnegative("value", self.value))
        self._validate_common()

    def cdf(self, t):
        t = np.asarray(t, dtype=np.float64)
        out = np.where(t >= self.start + self.value, 1.0 - self.never, 0.0)
        return np.where(np.isnan(t), np.nan, out)[()]

    cdf.__doc__ = _TimeDistribution.cdf.__doc__

    def sf(self, t):
        t = np.asarray(t, dtype=np.float64)
        out = np.where(t >= self.start + self.value, self.never, 1.0)
        return np.where(np.isnan(t), np.nan, out)[()]

    sf.__doc__ = _TimeDistribution.sf.__doc__

    def ppf(self, u):
        u = np.asarray(u, dtype=np.float64)
        a = 1.0 - u
        err = (1.0 - a) - u
        q_num = (a - self.never) + err
        out = np.where(q_num < 0.0, np.inf, self.start + self.value)
        out = np.where((u >= 0.0) & (u <= 1.0), out, np.nan)
        return out[()]

    ppf.__doc__ = _TimeDistribution.ppf.__doc__

    def hazard(self, t):
        t = np.asarray(t, dtype=np.float64)
        out = np.where(t == self.start + self.value, np.inf, 0.0)
        return np.where(np.isnan(t), np.nan, out)[()]

    hazard.__doc__ = _TimeDistribution.hazard.__doc__

    def _fill_params(self, params):
        params[2] = self.value

    def _describe_inner(self):
        return f"fixed({_fmt(self.value)} y)"


def _np_cumhaz(v, q):
    """Vector twin of :func:`_cumhaz`."""
    with np.errstate(all="ignore"):
        return np.where(v < 0.5, -np.log1p(-v), -np.log(q))


def from_params(code, params):
    """Inverse of :meth:`to_params`: rebuild the distribution object."""
    params = np.asarray(params, dtype=np.float64)
    if params.shape != (N_PARAMS,):
        raise ValueError(f"params must have shape ({N_PARAMS},), got {params.shape}")
    common = {"start": float(params[0]), "never": float(params[1])}
    a, b = float(params[2]), float(params[3])
    if code == EXPONENTIAL:
        return Exponential(a, **common)
    if code == WEIBULL:
        return Weibull(a, b, **common)
    if code == LOGNORMAL:
        return Lognormal(a, b, **common)
    if code == GOMPERTZ:
        return Gompertz(a, b, **common)
    if code == PIECEWISE:
        n = int(a)
        return PiecewiseHazard(
            tuple(params[_BREAKS : _BREAKS + n]),
            tuple(params[_HAZARDS : _HAZARDS + n]),
            **common,
        )
    if code == FIXED:
        return Fixed(a, **common)
    raise ValueError(f"code must be one of 0..5, got {code!r}")


# --------------------------------------------------------------------------
# Fitting to elicited quantiles
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantileFit:
    """Result of :func:`fit_quantiles`.

    Attributes
    ----------
    distribution : Exponential, Weibull, Lognormal, Gompertz or PiecewiseHazard
        The fitted law.
    residual : float
        ``max_i |distribution.cdf(times[i]) - probs[i]|`` (probability).
    times : tuple of float
        The elicited times (years after valuation).
    probs : tuple of float
        The elicited probabilities P(event by times[i]).
    family : str
        The family that was fitted.
    """

    distribution: _TimeDistribution
    residual: float
    times: tuple
    probs: tuple
    family: str


_N_FAMILY_PARAMS = {"exponential": 1, "weibull": 2, "lognormal": 2, "gompertz": 2}


def _logexpm1(y):
    """``log(exp(y) - 1)`` for ``y > 0`` without overflow."""
    return y + np.log(-np.expm1(-y))


def _starting_values(family, r, h, pn):
    """Positive starting parameters from the linearised problem.

    ``r``: years after start; ``h``: inner cumulative hazards; ``pn``: inner probabilities.
    Exact when the number of points equals the number of parameters.
    """
    if family == "exponential":
        return np.array([np.dot(h, r) / np.dot(r, r)])
    if family == "weibull":
        slope, intercept = np.polyfit(np.log(r), np.log(h), 1)
        return np.array([slope, math.exp(-intercept / slope)])
    if family == "lognormal":
        slope, intercept = np.polyfit(special.ndtri(pn), np.log(r), 1)
        return np.array([math.exp(intercept), slope])
    # gompertz: growth from the first and last points, rate from the last.
    r1, rn, h1, hn = r[0], r[-1], h[0], h[-1]
    log_ratio = math.log(hn) - math.log(h1)
    growth = 1e-3 / rn
    if log_ratio > math.log(rn / r1) * (1.0 + 1e-12) and rn > r1:

        def gap(g):
            return _logexpm1(g * rn) - _logexpm1(g * r1) - log_ratio

        lo, hi = 1e-12 / rn, log_ratio / (rn - r1)
        if gap(lo) < 0.0 < gap(hi):
            growth = brentq(
                gap, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500
            )
    rate = hn * growth / math.expm1(growth * rn)
    return np.array([rate, growth])


def _make(family, theta, start, never):
    if family == "exponential":
        return Exponential(theta[0], start=start, never=never)
    if family == "weibull":
        return Weibull(theta[0], theta[1], start=start, never=never)
    if family == "lognormal":
        return Lognormal(theta[0], theta[1], start=start, never=never)
    return Gompertz(theta[0], theta[1], start=start, never=never)


def fit_quantiles(
    times, probs, family="piecewise", start=0.0, *, never=0.0, tail="continue"
):
    """Fit a time distribution to elicited points ``P(event by times[i]) = probs[i]``.

    Parameters
    ----------
    times : array_like of float
        Years after valuation, strictly increasing and all > ``start``.
    probs : array_like of float
        Probabilities in (0, 1), strictly increasing, all < ``1 - never``.
    family : {"piecewise", "exponential", "weibull", "lognormal", "gompertz"}
        ``"piecewise"`` is exact: a :class:`PiecewiseHazard` with breakpoints at
        0 and each ``times[i] - start``.  The others are least-squares fits in
        probability space on log-parameters (exact when the number of points
        equals the number of parameters; otherwise the misfit is reported in
        ``residual``).
    start : float
        Years after valuation at which the clock starts, >= 0.
    never : float, keyword-only
        Probability the event never happens, held fixed, in [0, 1).
    tail : {"continue", "never"}, keyword-only
        Piecewise only: after the last point the last segment's hazard
        continues, or the hazard drops to 0 (remaining mass never happens).

    Returns
    -------
    QuantileFit
    """
    family = str(family).lower()
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    p = np.atleast_1d(np.asarray(probs, dtype=np.float64))
    start = _check_nonnegative("start", start)
    never = float(never)
    if not (0.0 <= never < 1.0):
        raise ValueError(f"never must be in [0, 1), got {never!r}")
    if t.ndim != 1 or t.shape != p.shape or t.size == 0:
        raise ValueError(
            f"times and probs must be 1-D of the same non-zero length, got {t.shape} and {p.shape}"
        )
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0.0):
        raise ValueError(
            f"times must be finite and strictly increasing, got {t.tolist()}"
        )
    if t[0] <= start:
        raise ValueError(f"times must all be > start={start!r}, got times[0]={t[0]!r}")
    if not np.all((p > 0.0) & (p < 1.0)) or np.any(np.diff(p) <= 0.0):
        raise ValueError(
            f"probs must be strictly increasing in (0, 1), got {p.tolist()}"
        )
    if p[-1] >= 1.0 - never:
        raise ValueError(
            f"probs must be < 1 - never = {1.0 - never!r}, got probs[-1]={p[-1]!r}"
        )

    r = t - start
    pn = p / (1.0 - never)
    h = -np.log1p(-pn)

    if family == "piecewise":
        if tail not in ("continue", "never"):
            raise ValueError(f"tail must be 'continue' or 'never', got {tail!r}")
        breaks = np.concatenate(([0.0], r))
        rates = np.diff(np.concatenate(([0.0], h))) / np.diff(breaks)
        if tail == "continue":
            breaks = breaks[:-1]
        else:
            rates = np.append(rates, 0.0)
        if len(breaks) > MAX_PIECES:
            raise ValueError(
                f"times must have at most {MAX_PIECES - (tail == 'never')} points for a "
                f"piecewise fit with tail={tail!r}, got {len(t)}"
            )
        dist = PiecewiseHazard(tuple(breaks), tuple(rates), start=start, never=never)
    elif family in _N_FAMILY_PARAMS:
        k = _N_FAMILY_PARAMS[family]
        if len(t) < k:
            raise ValueError(
                f"times must have at least {k} points to fit a {family}, got {len(t)}"
            )
        theta0 = _starting_values(family, r, h, pn)
        if not np.all(np.isfinite(theta0) & (theta0 > 0.0)):
            theta0 = np.ones(k)

        def resid(log_theta):
            with np.errstate(all="ignore"):
                try:
                    d = _make(family, np.exp(log_theta), start, never)
                except ValueError:
                    return np.full(len(t), 1.0)
                return d.cdf(t) - p

        x0 = np.log(theta0)
        sol = least_squares(
            resid, x0, jac="3-point", method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15
        )
        best = sol.x if np.sum(sol.fun**2) <= np.sum(resid(x0) ** 2) else x0
        dist = _make(family, np.exp(best), start, never)
    else:
        raise ValueError(
            "family must be one of 'piecewise', 'exponential', 'weibull', 'lognormal', "
            f"'gompertz', got {family!r}"
        )
    residual = float(np.max(np.abs(dist.cdf(t) - p)))
    return QuantileFit(dist, residual, tuple(t.tolist()), tuple(p.tolist()), family)
