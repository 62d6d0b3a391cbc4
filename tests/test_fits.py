"""The path-by-path fitter's pieces (valuation.engine.fits): the arithmetic exponential and the normal CDF they
use against the C library's and scipy's, and the lane fit against the one-path fit, lane by lane, whatever the
other lanes hold."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from models import timing
from valuation.engine import fits


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.spacing(np.abs(b))


def test_exp_lanes_is_the_c_librarys_exp_within_two_ulps():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-708.0, 709.0, 20_000), rng.uniform(-3.0, 3.0, 20_000),
                        [0.0, -0.0, 1.0, -1.0, 709.0, -708.0, 0.5 * math.log(2.0), -0.5 * math.log(2.0)]])
    m = len(x)
    out, bits = np.empty(m), np.empty(m, np.int64)
    fits.exp_lanes(x, out, bits, m)
    exact = np.array([math.exp(v) for v in x])
    assert _ulps(out, exact).max() <= 2.0
    assert out[np.flatnonzero(x == 0.0)].tolist() == [1.0, 1.0]
    below = np.array([-708.5, -745.0, -1e300])
    fits.exp_lanes(below, out, bits, 3)
    assert out[:3].tolist() == [0.0, 0.0, 0.0]  # no subnormals


def test_ndtr_and_density_are_scipys_to_their_conditioning_scalar_and_in_lanes():
    """Both are ``exp(-z^2 / 2)`` times a rational: the exponent's own rounding (relative 1 ulp of ``z^2 / 2``)
    moves the result by ``z^2 / 2`` ulps in any implementation, so the bound is a few ulps plus that."""
    rng = np.random.default_rng(2)
    z = np.concatenate([rng.uniform(-38.0, 38.0, 5_000), rng.normal(size=5_000),
                        [0.0, -0.7071067811865476, 0.7071067811865476, -1.4142135623730951, 11.3, -11.3]])
    m = len(z)
    cdf, pdf = np.empty(m), np.empty(m)
    t, e, bits = np.empty(m), np.empty(m), np.empty(m, np.int64)
    fits.ndtr_pdf_lanes(z, cdf, pdf, t, e, bits, m)
    scalar = np.array([fits.ndtr_pdf(v) for v in z])
    density = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    tiny = special.ndtr(z) < 1e-300  # exp_lanes stops at -708: its tail is 0 there
    for got in (cdf, scalar[:, 0]):
        assert np.all(_ulps(got[~tiny], special.ndtr(z[~tiny])) <= 4.0 + z[~tiny] ** 2)
        assert np.all(got[tiny] < 1e-300)
    ok = density > 1e-300
    for got in (pdf, scalar[:, 1]):
        assert np.all(_ulps(got[ok], density[ok]) <= 4.0 + 2.0 * z[ok] ** 2)
    assert np.all(_ulps(cdf[~tiny], scalar[~tiny, 0]) <= 4.0 + z[~tiny] ** 2)


def _problems(k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` lognormal fitting problems of three points each, as an uncertain elicited table makes them: the
    base case's probabilities moved across their ranges (0.25, 0.5, 0.85 by up to 0.1, 0.1, 0.08), its dates by
    up to 10%, a chance of never or not.  (Points far from any lognormal can leave the sum of squares two local
    minima, and the two fits, from different starts, may then settle in different ones.)"""
    rng = np.random.default_rng(seed)
    p = np.array([[0.25], [0.5], [0.85]]) + rng.uniform(-1.0, 1.0, (3, k)) * np.array([[0.1], [0.1], [0.08]])
    never = rng.choice([0.0, 0.05], k)
    r = np.array([[3.0], [6.0], [10.0]]) * rng.uniform(0.9, 1.1, (3, k))
    assert np.all(np.diff(p, axis=0) > 0) and np.all(np.diff(r, axis=0) > 0) and np.all(p[2] < 1.0 - never)
    return p, never, r


def _lane_fit(p, never, r):
    pn = p / (1.0 - never)
    median, sigma = np.empty(fits.LANES), np.empty(fits.LANES)
    fits.fit_lognormal_lanes(3, np.ascontiguousarray(pn), np.ascontiguousarray(np.log(r)), median, sigma)
    return median, sigma


def test_the_lane_fit_is_the_one_path_fit_in_every_lane():
    """Every lane of a full block finishes (no lane left stepping) at the one-path fit's minimum, to 1e-13."""
    p, never, r = _problems(fits.LANES, 3)
    median, sigma = _lane_fit(p, never, r)
    out, work = np.zeros(2), np.zeros((14, 3))
    for i in range(fits.LANES):
        fits.fit_family(timing.LOGNORMAL, 3, p[:, i].copy(), r[:, i].copy(), np.log(r[:, i]), never[i], out, work)
        assert abs(median[i] - out[0]) <= 1e-13 * out[0], (i, median[i], out[0])
        assert abs(sigma[i] - out[1]) <= 1e-13 * out[1], (i, sigma[i], out[1])


def test_a_lanes_fit_does_not_depend_on_the_other_lanes():
    """The same problem gives the same bits in any lane beside any neighbours: results do not change with the
    block size, the thread count or the split of a run."""
    p, never, r = _problems(fits.LANES, 4)
    median, sigma = _lane_fit(p, never, r)
    order = np.random.default_rng(5).permutation(fits.LANES)
    m2, s2 = _lane_fit(p[:, order], never[order], r[:, order])
    assert np.array_equal(m2, median[order]) and np.array_equal(s2, sigma[order])
    one = np.repeat(np.arange(1), fits.LANES)  # a block padded with copies of one path, as a short block is
    m3, s3 = _lane_fit(p[:, one], never[one], r[:, one])
    assert np.all(m3 == median[0]) and np.all(s3 == sigma[0])


def test_the_python_code_of_the_one_path_fit_gives_the_compiled_bits():
    """A scenario's own fitted table is fitted by the fit's Python code (validating compiles nothing): the very
    bits of the compiled fit, for each family."""
    from models._jit import python_version

    python = python_version(fits.fit_family)
    p, never, r = _problems(200, 6)
    compiled, interpreted, work = np.zeros(2), np.zeros(2), np.zeros((14, 3))
    for code in (timing.LOGNORMAL, timing.WEIBULL, timing.EXPONENTIAL):
        for i in range(200):
            args = (code, 3, p[:, i].copy(), r[:, i].copy(), np.log(r[:, i]), never[i])
            fits.fit_family(*args, compiled, work)
            python(*args, interpreted, work)
            assert np.array_equal(compiled, interpreted), (code, i, compiled, interpreted)
