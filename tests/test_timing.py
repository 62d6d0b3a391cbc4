"""Tests for models.timing: event-time distributions, the sampling kernel and quantile fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from models import timing
from models.timing import (
    MAX_PIECES,
    N_PARAMS,
    Exponential,
    Fixed,
    Gompertz,
    Lognormal,
    PiecewiseHazard,
    Weibull,
    fit_quantiles,
    from_params,
    sample_time,
    sample_times,
)

N_SAMPLES = 20_000

CONTINUOUS = [
    Exponential(0.3),
    Exponential(0.2, start=1.0, never=0.05),
    Weibull(1.5, 8.0),
    Weibull(0.7, 3.0, start=0.5, never=0.1),
    Lognormal(7.2, 0.9),
    Lognormal(7.2, 0.9, start=1.5, never=0.05),
    Gompertz(0.05, 0.3),
    Gompertz(0.02, 0.5, start=2.0, never=0.2),
    PiecewiseHazard((0.0, 2.0, 5.0), (0.1, 0.3, 0.05)),
    PiecewiseHazard((0.0, 2.0, 5.0), (0.1, 0.3, 0.0), start=1.0, never=0.1),
]
ALL = [*CONTINUOUS, Fixed(0.5), Fixed(0.25, start=1.0, never=0.3)]


def _ids(dists):
    return [str(d) for d in dists]


@pytest.fixture(scope="module")
def uniforms():
    return np.random.default_rng(12345).random(N_SAMPLES)


# --------------------------------------------------------------------------
# Sampling kernel
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dist", CONTINUOUS, ids=_ids(CONTINUOUS))
def test_kernel_samples_follow_the_distribution(dist, uniforms):
    code, params = dist.to_params()
    x = sample_times(code, params, uniforms)
    # The vector kernel is the scalar kernel in a loop.
    for i in range(0, N_SAMPLES, 997):
        assert sample_time(code, params, uniforms[i]) == x[i]

    # Mass at +inf: never, plus whatever a zero tail hazard leaves.
    p_inf = float(dist.sf(np.inf))
    frac_inf = np.mean(np.isinf(x))
    if p_inf == 0.0:
        assert frac_inf == 0.0
    else:
        se = math.sqrt(p_inf * (1.0 - p_inf) / N_SAMPLES)
        assert abs(frac_inf - p_inf) < 4.0 * se

    finite = x[np.isfinite(x)]
    assert np.all(finite >= dist.start)
    p_fin = float(dist.cdf(np.inf))
    result = stats.kstest(finite, lambda t: dist.cdf(t) / p_fin)
    assert result.pvalue > 0.01


def test_fixed_samples_are_a_step(uniforms):
    dist = Fixed(0.25, start=1.0, never=0.3)
    code, params = dist.to_params()
    x = sample_times(code, params, uniforms)
    finite = x[np.isfinite(x)]
    assert np.all(finite == 1.25)
    se = math.sqrt(0.3 * 0.7 / N_SAMPLES)
    assert abs(np.mean(np.isinf(x)) - 0.3) < 4.0 * se
    assert dist.cdf(1.25) == pytest.approx(0.7)
    assert dist.cdf(np.nextafter(1.25, 0.0)) == 0.0
    assert dist.sf(1.25) == pytest.approx(0.3)
    assert dist.ppf(0.7) == 1.25
    assert dist.ppf(0.70001) == np.inf
    assert dist.hazard(1.0) == 0.0
    assert dist.hazard(1.25) == np.inf


EXTREME_U = np.array(
    [
        1e-300,
        1e-15,
        1e-9,
        0.01,
        0.3,
        0.499999,
        0.5,
        0.5000001,
        0.7,
        0.84,
        0.9,
        0.99,
        1.0 - 1e-9,
        1.0 - 1e-12,
        1.0 - 2.0**-52,
    ]
)


@pytest.mark.parametrize("dist", ALL, ids=_ids(ALL))
def test_kernel_agrees_with_python_ppf(dist):
    u = np.concatenate(
        [EXTREME_U, (1.0 - dist.never) * np.array([1.0 - 1e-12, 1.0 - 1e-6])]
    )
    code, params = dist.to_params()
    kernel = np.array([sample_time(code, params, ui) for ui in u])
    python = dist.ppf(u)
    assert python.shape == u.shape and python.dtype == np.float64
    np.testing.assert_allclose(kernel, python, rtol=1e-12, atol=0.0)
    # Beyond 1 - never the event never happens.
    above = (1.0 - dist.never) + 1e-9
    if above < 1.0:
        assert dist.ppf(above) == np.inf
        assert sample_time(code, params, above) == np.inf


def test_unknown_code_gives_nan():
    assert math.isnan(sample_time(99, np.zeros(N_PARAMS), 0.5))


# --------------------------------------------------------------------------
# cdf / sf / ppf / hazard
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dist", CONTINUOUS, ids=_ids(CONTINUOUS))
def test_round_trip_and_complement(dist):
    u = np.linspace(0.001, 0.999, 101) * (1.0 - dist.never)
    t = dist.ppf(u)
    if isinstance(dist, PiecewiseHazard) and dist.hazards[-1] == 0.0:
        t = t[np.isfinite(t)]
    np.testing.assert_allclose(dist.ppf(dist.cdf(t)), t, rtol=1e-10)
    grid = np.concatenate(
        [[-1.0, 0.0, dist.start], np.linspace(0.0, 60.0, 241), [np.inf]]
    )
    np.testing.assert_allclose(
        dist.cdf(grid) + dist.sf(grid), 1.0, rtol=0.0, atol=1e-15
    )
    assert np.all(dist.cdf(grid[grid <= dist.start]) == 0.0)
    assert dist.cdf(np.inf) == pytest.approx(1.0 - dist.sf(np.inf))


@pytest.mark.parametrize("dist", ALL, ids=_ids(ALL))
def test_scalars_and_shapes(dist):
    for method in (dist.cdf, dist.sf, dist.ppf, dist.hazard):
        scalar = method(0.6)
        assert isinstance(scalar, np.float64)
        arr = method(np.full((3, 2), 0.6))
        assert arr.shape == (3, 2) and arr.dtype == np.float64
        assert np.all(arr == scalar)
    assert math.isnan(dist.ppf(1.5)) and math.isnan(dist.ppf(-0.1))
    assert math.isnan(dist.cdf(np.nan))


def test_ppf_tails_against_scipy():
    u_lo, u_hi = 1e-15, 1.0 - 1e-12
    d = Exponential(0.2, start=1.0)
    assert d.ppf(u_lo) - 1.0 == pytest.approx(1e-15 / 0.2, rel=1e-14)
    assert d.ppf(u_hi) - 1.0 == pytest.approx(-math.log(1.0 - u_hi) / 0.2, rel=1e-14)
    d = Weibull(1.5, 8.0)
    ref = stats.weibull_min(1.5, scale=8.0)
    assert d.ppf(u_lo) == pytest.approx(ref.ppf(u_lo), rel=1e-13)
    assert d.ppf(u_hi) == pytest.approx(ref.isf(1.0 - u_hi), rel=1e-13)
    d = Lognormal(7.2, 0.9)
    ref = stats.lognorm(0.9, scale=7.2)
    assert d.ppf(u_lo) == pytest.approx(ref.ppf(u_lo), rel=1e-13)
    assert d.ppf(u_hi) == pytest.approx(ref.isf(1.0 - u_hi), rel=1e-13)
    d = Gompertz(0.05, 0.3)
    ref = stats.gompertz(0.05 / 0.3, scale=1.0 / 0.3)
    assert d.ppf(u_lo) == pytest.approx(ref.ppf(u_lo), rel=1e-9)
    assert d.ppf(u_hi) == pytest.approx(ref.isf(1.0 - u_hi), rel=1e-12)
    np.testing.assert_allclose(d.cdf([1.0, 10.0]), ref.cdf([1.0, 10.0]), rtol=1e-13)
    # With never > 0 the accurate upper tail is 1 - never - u, not 1 - u.
    d = Exponential(1.0, never=0.25)
    q = 1e-13
    assert d.ppf(0.75 - q) == pytest.approx(
        -math.log((0.75 - (0.75 - q)) / 0.75), rel=1e-12
    )


def test_piecewise_values():
    d = PiecewiseHazard((0.0, 2.0, 5.0), (0.1, 0.3, 0.05), start=1.0)
    h = np.array([0.0, 0.1, 0.2, 0.2 + 0.9, 1.1 + 0.5])
    t = np.array([1.0, 2.0, 3.0, 6.0, 16.0])
    np.testing.assert_allclose(d.sf(t), np.exp(-h), rtol=1e-14)
    np.testing.assert_allclose(
        d.hazard([0.5, 1.0, 2.9, 3.0, 5.9, 6.0, 100.0]),
        [0.0, 0.1, 0.1, 0.3, 0.3, 0.05, 0.05],
    )
    np.testing.assert_allclose(d.ppf(-np.expm1(-h)), t, rtol=1e-13)
    # Zero tail hazard: remaining mass never happens.
    d = PiecewiseHazard((0.0, 2.0), (0.1, 0.0))
    assert d.sf(np.inf) == pytest.approx(math.exp(-0.2))
    assert d.ppf(1.0 - math.exp(-0.2) + 1e-9) == np.inf
    assert d.ppf(0.5 * (1.0 - math.exp(-0.2))) < 2.0
    # A zero-hazard middle segment: ppf at the plateau is its left end.
    d = PiecewiseHazard((0.0, 1.0, 3.0), (0.5, 0.0, 0.5))
    assert d.ppf(float(d.cdf(1.0))) == pytest.approx(1.0)
    assert d.ppf(float(d.cdf(1.0)) + 1e-12) == pytest.approx(3.0, abs=1e-10)


def test_hazard_matches_density_over_survival():
    for dist in CONTINUOUS[:8]:
        t = dist.start + np.array([0.3, 1.0, 4.0, 12.0])
        eps = 1e-6 * t
        dens = (dist.cdf(t + eps) - dist.cdf(t - eps)) / (2.0 * eps)
        np.testing.assert_allclose(dist.hazard(t), dens / dist.sf(t), rtol=1e-6)
    assert Exponential(0.2, start=1.0).hazard(0.5) == 0.0


def test_params_round_trip_and_layout():
    for dist in ALL:
        code, params = dist.to_params()
        assert params.shape == (N_PARAMS,) and params.dtype == np.float64
        assert params[0] == dist.start and params[1] == dist.never
        assert from_params(code, params) == dist
    code, params = Lognormal(7.2, 0.9, start=1.5, never=0.05).to_params()
    assert code == timing.LOGNORMAL == 2
    assert N_PARAMS == 2 * MAX_PIECES + 4
    assert (
        timing.EXPONENTIAL,
        timing.WEIBULL,
        timing.GOMPERTZ,
        timing.PIECEWISE,
        timing.FIXED,
    ) == (0, 1, 3, 4, 5)
    times = tuple(float(i) for i in range(MAX_PIECES))
    PiecewiseHazard(times, (0.1,) * MAX_PIECES)  # the maximum is fine
    with pytest.raises(ValueError, match="times"):
        PiecewiseHazard((*times, 99.0), (0.1,) * (MAX_PIECES + 1))


def test_describe():
    d = Lognormal(7.2, 0.9, start=1.5, never=0.05)
    assert d.describe() == "lognormal(median 7.2 y, sigma 0.9) from 1.5 y, P(never) 5%"
    assert str(d) == d.describe()
    assert str(Exponential(0.25)) == "exponential(rate 0.25/y, mean 4 y)"
    for dist in ALL:
        assert "\n" not in str(dist)


# --------------------------------------------------------------------------
# Quantile fits
# --------------------------------------------------------------------------


@pytest.mark.parametrize("never", [0.0, 0.1])
@pytest.mark.parametrize("tail", ["continue", "never"])
def test_fit_piecewise_is_exact(tail, never):
    times = [2.0, 3.5, 7.0, 15.0]
    probs = [0.05, 0.2, 0.5, 0.8]
    fit = fit_quantiles(times, probs, start=1.0, never=never, tail=tail)
    d = fit.distribution
    assert isinstance(d, PiecewiseHazard) and fit.family == "piecewise"
    np.testing.assert_allclose(d.cdf(times), probs, rtol=0.0, atol=1e-12)
    assert fit.residual < 1e-12
    assert fit.times == tuple(times) and fit.probs == tuple(probs)
    tail_mass = d.sf(np.inf)
    if tail == "never":
        assert tail_mass == pytest.approx(0.2)
        assert d.ppf(0.9) == np.inf
    else:
        assert tail_mass == pytest.approx(never)


@pytest.mark.parametrize("family", ["weibull", "lognormal", "gompertz"])
@pytest.mark.parametrize("never", [0.0, 0.05])
def test_fit_two_parameter_families_exact_with_two_points(family, never):
    times, probs = [3.0, 10.0], [0.2, 0.7]
    fit = fit_quantiles(times, probs, family=family, start=1.0, never=never)
    assert fit.family == family
    assert fit.residual < 1e-9
    np.testing.assert_allclose(fit.distribution.cdf(times), probs, atol=1e-9)
    assert fit.distribution.start == 1.0 and fit.distribution.never == never


def test_fit_exponential_exact_with_one_point():
    fit = fit_quantiles([5.0], [0.4], family="exponential", start=1.0)
    assert fit.residual < 1e-9
    assert fit.distribution.rate == pytest.approx(-math.log(0.6) / 4.0, rel=1e-12)


def test_fit_reports_residual_when_inconsistent():
    times = np.array([2.0, 4.0, 8.0, 20.0])
    probs = np.array([0.05, 0.3, 0.4, 0.9])
    fit = fit_quantiles(times, probs, family="lognormal", start=1.0)
    d = fit.distribution
    ref = stats.lognorm(d.sigma, scale=d.median)
    independent = np.max(np.abs(ref.cdf(times - 1.0) - probs))
    assert fit.residual > 1e-3
    assert fit.residual == pytest.approx(independent, rel=1e-10)
    # It is a least-squares optimum: nudging the parameters does not help.
    sse = np.sum((ref.cdf(times - 1.0) - probs) ** 2)
    for dm, ds in [(1.001, 1.0), (0.999, 1.0), (1.0, 1.001), (1.0, 0.999)]:
        other = stats.lognorm(d.sigma * ds, scale=d.median * dm)
        assert np.sum((other.cdf(times - 1.0) - probs) ** 2) >= sse


def test_fit_validation():
    with pytest.raises(ValueError, match="times"):
        fit_quantiles([3.0, 2.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="probs"):
        fit_quantiles([2.0, 3.0], [0.3, 0.2])
    with pytest.raises(ValueError, match="probs"):
        fit_quantiles([2.0, 3.0], [0.3, 1.0])
    with pytest.raises(ValueError, match="start"):
        fit_quantiles([2.0, 3.0], [0.1, 0.2], start=2.5)
    with pytest.raises(ValueError, match="family"):
        fit_quantiles([2.0, 3.0], [0.1, 0.2], family="cauchy")
    with pytest.raises(ValueError, match="tail"):
        fit_quantiles([2.0, 3.0], [0.1, 0.2], tail="stop")
    with pytest.raises(ValueError, match="never"):
        fit_quantiles([2.0, 3.0], [0.1, 0.95], never=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        fit_quantiles([2.0], [0.1], family="weibull")


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Exponential(0.0), "rate"),
        (lambda: Exponential(-1.0), "rate"),
        (lambda: Exponential(np.nan), "rate"),
        (lambda: Weibull(-1.0, 2.0), "shape"),
        (lambda: Weibull(1.0, 0.0), "scale"),
        (lambda: Lognormal(0.0, 1.0), "median"),
        (lambda: Lognormal(1.0, -1.0), "sigma"),
        (lambda: Gompertz(0.0, 1.0), "rate"),
        (lambda: Gompertz(1.0, 0.0), "growth"),
        (lambda: Fixed(-0.5), "value"),
        (lambda: Exponential(1.0, start=-1.0), "start"),
        (lambda: Exponential(1.0, never=1.0), "never"),
        (lambda: Exponential(1.0, never=-0.1), "never"),
        (lambda: PiecewiseHazard((0.5, 1.0), (0.1, 0.1)), "times"),
        (lambda: PiecewiseHazard((0.0, 1.0, 1.0), (0.1, 0.1, 0.1)), "times"),
        (lambda: PiecewiseHazard((0.0, 1.0), (0.1,)), "hazards"),
        (lambda: PiecewiseHazard((0.0, 1.0), (0.1, -0.1)), "hazards"),
    ],
)
def test_invalid_parameters_raise(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_error_message_names_value():
    with pytest.raises(ValueError, match=r"sigma must be > 0.*-1\.0"):
        Lognormal(1.0, -1.0)


def test_frozen():
    d = Exponential(0.1)
    with pytest.raises(AttributeError):
        d.rate = 0.2
