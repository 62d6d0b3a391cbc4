"""Least-squares fits of quantile tables, path by path (uncertain elicited probabilities, a chance of never or a
start: each path refits its table).

A table fitted as ``exponential``, ``weibull`` or ``lognormal`` is the least-squares fit, in probability space and
on log-parameters, of its points (:func:`models.timing.fit_quantiles`, scipy's).  :func:`fit_family` fits one path:
Newton steps on the sum of squares with exact first and second derivatives, from the weighted linearised
problem's solution, a Levenberg-Marquardt step where the Hessian is not positive definite, each step halved until
the sum falls, until a step no longer moves the parameters (the minimum to rounding; the tests hold it to 1e-13 of
a 40-digit Newton).

:func:`fit_lognormal_lanes` is the same algorithm for many paths side by side (the lognormal, the family of the
base case's AGI declaration): each path in its own lane, every lane stepping in turn, so the compiler runs the
arithmetic in SIMD.  Its exponentials are :func:`exp_lanes` (pure arithmetic, the same bits in any lane and on any
machine) and its normal CDF and density come from cephes' rational approximations (:func:`ndtr_pdf`, one
exponential for both), so nothing in a lane calls the C library.  A lane's numbers depend on its own inputs only:
the same fit whatever the other lanes hold, so results stay the same for any block size, thread count or split of
a run.  Its start is the one-path fit's start polished by a few Gauss-Newton steps on a Taylor expansion, so that
most lanes need one or two steps; where the points admit two local minima (points far from any lognormal: the
elicited ranges of the shipped scenarios stay clear of it, the tests hold the two fits equal there) the two fits
may settle in different ones.
"""

from __future__ import annotations

import math

import numpy as np

from models import rng, timing
from models._jit import jit

LANES = 1024  # paths fitted side by side (scratch of a few hundred KB)
# exp: Cody and Waite's reduction x = k ln 2 + r (ln 2 in two parts, the first with 11 trailing zero bits, so
# k ln2_hi is exact for |k| < 2^11), then a degree-13 Taylor polynomial on |r| <= ln 2 / 2 (its remainder below
# 5e-18 relative)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.44269504088896338700e00
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_HALF = 0.5 * math.sqrt(2.0)


@jit(inline="always")
def exp_lanes(x, out, bits, m):
    """``out[i] = exp(x[i])`` for ``i < m``, within 2 ulp, in two simple loops (SIMD): arithmetic only, so the
    same bits in any lane on any machine; 0 below -708 (no subnormals), ``exp(709)`` above 709.  ``bits``: int64
    scratch of ``m``."""
    for i in range(m):
        xi = min(max(x[i], -708.0), 709.0)
        k = math.floor(xi * _LOG2E + 0.5)
        r = (xi - k * _LN2_HI) - k * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        out[i] = p * r + 1.0
        bits[i] = (np.int64(k) + np.int64(1023)) << np.int64(52)  # 2^k as a double's bits
    scale = bits[:m].view(np.float64)
    for i in range(m):
        out[i] = out[i] * scale[i] if x[i] >= -708.0 else 0.0


# cephes' rational approximations of erf (|x| < 1) and erfc (1 <= x < 8, x >= 8), as scipy.special's erf and erfc
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3, 7.00332514112805075473e3,
          5.55923013010394962768e4)
_ERF_U = (3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3, 2.26290000613890934246e4,
          4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0, 4.86371970985681366614e1,
           1.96520832956077098242e2, 5.26445194995477358631e2, 9.34528527171957607540e2, 1.02755188689515710272e3,
           5.57535335369399327526e2)
_ERFC_Q = (1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2, 9.75708501743205489753e2,
           1.82390916687909736289e3, 2.24633760818710981792e3, 1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0, 6.16021097993053585195e0,
           7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1, 1.70814450747565897222e1,
           9.60896809063285878198e0, 3.36907645100081516050e0)


@jit(inline="always")
def _erf_small(y):
    """erf(y) for ``|y| < 1`` (cephes)."""
    x = y * y
    t = _ERF_T
    u = _ERF_U
    num = (((t[0] * x + t[1]) * x + t[2]) * x + t[3]) * x + t[4]
    den = ((((x + u[0]) * x + u[1]) * x + u[2]) * x + u[3]) * x + u[4]
    return y * num / den


@jit(inline="always")
def ndtr_pdf(z):
    """``(Phi(z), phi(z))``, the standard normal CDF and density, with one exponential: cephes' ndtr (erf near 0,
    erfc beyond, the same rational approximations as scipy.special's, relative error a few ulps) and the
    density from the same ``exp(-z^2 / 2)`` that erfc scales."""
    y = z * (0.5 * math.sqrt(2.0))
    a = abs(y)
    e = math.exp(-(a * a))
    pdf = e * (1.0 / math.sqrt(2.0 * math.pi))
    if a < 0.5 * math.sqrt(2.0):
        return 0.5 + 0.5 * _erf_small(y), pdf
    if a < 1.0:
        erfc = 1.0 - _erf_small(a)
    elif a < 8.0:
        p, q = _ERFC_P, _ERFC_Q
        num = (((((((p[0] * a + p[1]) * a + p[2]) * a + p[3]) * a + p[4]) * a + p[5]) * a + p[6]) * a + p[7]) * a \
            + p[8]
        den = (((((((a + q[0]) * a + q[1]) * a + q[2]) * a + q[3]) * a + q[4]) * a + q[5]) * a + q[6]) * a + q[7]
        erfc = e * num / den
    else:
        r, s = _ERFC_R, _ERFC_S
        num = ((((r[0] * a + r[1]) * a + r[2]) * a + r[3]) * a + r[4]) * a + r[5]
        den = (((((a + s[0]) * a + s[1]) * a + s[2]) * a + s[3]) * a + s[4]) * a + s[5]
        erfc = e * num / den
    tail = 0.5 * erfc
    return (1.0 - tail if y > 0 else tail), pdf


@jit(inline="always")
def _fit_cost(code, n, pn, log_r, r, y0, y1, res, der):
    """Half the sum of squares of the residuals ``F(r_j) - pn_j`` of a family's inner CDF at log-parameters
    ``(y0, y1)``, and their first and second derivatives in ``y``: ``der[0:2, j]``, ``der[2:5, j]`` (d00, d01,
    d11)."""
    a = math.exp(y0)
    inv_b = math.exp(-y1)
    cost = 0.0
    for j in range(n):
        if code == timing.LOGNORMAL:
            z = (log_r[j] - y0) * inv_b
            f, phi = ndtr_pdf(z)
            d0 = -phi * inv_b
            der[0, j] = d0
            der[1, j] = -phi * z
            der[2, j] = z * d0 * inv_b
            der[3, j] = -d0 * (1.0 - z * z)
            der[4, j] = z * phi * (1.0 - z * z)
        else:
            if code == timing.EXPONENTIAL:
                h = a * r[j]
                h0, h1, h00, h01, h11 = h, 0.0, h, 0.0, 0.0
            else:  # weibull: a the shape, b the scale
                x = log_r[j] - y1
                h = math.exp(a * x)
                h0, h1 = h * a * x, -a * h
                h00, h01, h11 = a * x * (h0 + h), a * (h1 * x - h), -a * h1
            f = -math.expm1(-h)
            sf = math.exp(-h)
            der[0, j] = sf * h0
            der[1, j] = sf * h1
            der[2, j] = sf * (h00 - h0 * h0)
            der[3, j] = sf * (h01 - h0 * h1)
            der[4, j] = sf * (h11 - h1 * h1)
        res[j] = f - pn[j]
        cost += 0.5 * res[j] * res[j]
    return cost


@jit
def fit_family(code, n, p, r, log_r, never, out, work):
    """:func:`models.timing.fit_quantiles` for a fitted family (exponential, weibull, lognormal) on one path: the
    least-squares fit in probability space, on log-parameters, of ``P(by r_j) = p_j`` (``r``: years after the
    start; ``log_r``: their logarithms), the chance of never held at ``never``; ``out[0], out[1]``: the parameters in
    :meth:`models.timing.TimeDistribution.to_params` order.

    It starts from the linearised problem's solution (:func:`_fit_start`) and takes
    Newton steps on the sum of squares (exact first and second derivatives), a Levenberg-Marquardt step where
    the Hessian is not positive definite, each step halved until the sum falls, until a step no longer moves the
    parameters.  ``work``: scratch of ``(14, n)`` or more."""
    k = 1 if code == timing.EXPONENTIAL else 2
    pn, res, trial, der, der_trial = work[0], work[2], work[3], work[4:9], work[9:14]
    for j in range(n):
        pn[j] = p[j] / (1.0 - never)
    y0, y1 = _fit_start(code, n, pn, log_r, r, trial, res)
    cost = _fit_cost(code, n, pn, log_r, r, y0, y1, res, der)
    lam = 1e-3
    for _ in range(200):
        g0 = g1 = j00 = j01 = j11 = s00 = s01 = s11 = 0.0
        for j in range(n):
            e = res[j]
            g0 += der[0, j] * e
            j00 += der[0, j] * der[0, j]
            s00 += der[2, j] * e
            if k == 2:
                g1 += der[1, j] * e
                j01 += der[0, j] * der[1, j]
                j11 += der[1, j] * der[1, j]
                s01 += der[3, j] * e
                s11 += der[4, j] * e
        h00, h01, h11 = j00 + s00, j01 + s01, j11 + s11
        if k == 1:
            newton = h00 > 0.0
            d0, d1 = (-g0 / h00 if newton else -g0 / (j00 * (1.0 + lam))), 0.0
        else:
            det = h00 * h11 - h01 * h01
            newton = h00 > 0.0 and det > 0.0
            if not newton:  # Levenberg-Marquardt on the Gauss-Newton matrix
                floor = 1e-9 * (j00 + j11)
                h00 = j00 + lam * max(j00, floor)
                h11 = j11 + lam * max(j11, floor)
                h01 = j01
                det = h00 * h11 - h01 * h01
                lam *= 4.0
            d0, d1 = -(h11 * g0 - h01 * g1) / det, -(h00 * g1 - h01 * g0) / det
        longest = max(abs(d0), abs(d1))
        if longest > 1.0:  # at most a factor e on a parameter per step
            d0, d1 = d0 / longest, d1 / longest
        if not (abs(d0) > 1e-15 * (1.0 + abs(y0)) or abs(d1) > 1e-15 * (1.0 + abs(y1))):
            break  # the step no longer moves the parameters (or is not a number)
        if newton and longest < 1e-8:  # Newton's last step: what it leaves is of order its square, below rounding
            y0, y1 = y0 + d0, y1 + d1
            break
        moved = False
        for _ in range(60):
            new = _fit_cost(code, n, pn, log_r, r, y0 + d0, y1 + d1, trial, der_trial)
            if new < cost or (newton and max(abs(d0), abs(d1)) < 1e-9):  # (rounding decides the sum there)
                y0, y1, cost = y0 + d0, y1 + d1, new
                for j in range(n):
                    res[j] = trial[j]
                    for i in range(5):
                        der[i, j] = der_trial[i, j]
                moved = True
                break
            d0, d1 = 0.5 * d0, 0.5 * d1
        if not moved:
            break
        if newton:
            lam = max(lam * 0.2, 1e-15)
    out[0] = math.exp(y0)
    out[1] = math.exp(y1) if k == 2 else 0.0


@jit(inline="always")
def _fit_start(code, n, pn, log_r, r, z, w):
    """The linearised problem's solution on log-parameters (0 where it is not a positive number), as
    :func:`models.timing._starting_values` but each point weighted as the least squares in probability space
    weigh it to first order (lognormal: ``phi(z_j)^2``; weibull: ``(S_j h_j)^2``): closer to the minimum, so
    fewer Newton steps.  ``z``, ``w``: scratch of ``n``."""
    if code == timing.EXPONENTIAL:
        num = den = 0.0
        for j in range(n):
            num += -math.log1p(-pn[j]) * r[j]
            den += r[j] * r[j]
        a = num / den
        return (math.log(a) if a > 0 and a < np.inf else 0.0), 0.0
    # a weighted line through (x_j, y_j): weibull log h on log r, lognormal log r on ndtri(pn)
    for j in range(n):
        if code == timing.LOGNORMAL:
            z[j] = rng.ndtri(pn[j])
            w[j] = math.exp(-z[j] * z[j])
        else:
            h = -math.log1p(-pn[j])
            z[j] = math.log(h)
            sh = (1.0 - pn[j]) * h
            w[j] = sh * sh  # (not ** 2: Python's is the C library's pow, not always the rounded product)
    sw = mx = my = 0.0
    for j in range(n):
        x, y = (z[j], log_r[j]) if code == timing.LOGNORMAL else (log_r[j], z[j])
        sw += w[j]
        mx += w[j] * x
        my += w[j] * y
    mx /= sw
    my /= sw
    sxx = sxy = 0.0
    for j in range(n):
        x, y = (z[j], log_r[j]) if code == timing.LOGNORMAL else (log_r[j], z[j])
        sxx += w[j] * (x - mx) * (x - mx)
        sxy += w[j] * (x - mx) * (y - my)
    slope = sxy / sxx
    intercept = my - slope * mx
    if code == timing.LOGNORMAL:
        a, b = math.exp(intercept), slope
    else:
        a, b = slope, math.exp(-intercept / slope)
    if not (a > 0 and b > 0 and a < np.inf and b < np.inf):
        return 0.0, 0.0
    return math.log(a), math.log(b)




# ------------------------------------------------------------------ many paths side by side (lognormal)


@jit(inline="always")
def ndtr_pdf_lanes(z, cdf, pdf, t, e, bits, m):
    """:func:`ndtr_pdf` of ``z[i]``, ``i < m``, into ``cdf[i]`` and ``pdf[i]``: every branch's rational taken and
    the lane's chosen (no branches, so SIMD), the exponential by :func:`exp_lanes`.  ``t``, ``e``, ``bits``:
    scratch of ``m``."""
    for i in range(m):
        y = z[i] * _SQRT_HALF
        t[i] = -(y * y)
    exp_lanes(t, e, bits, m)
    p, q, r, s = _ERFC_P, _ERFC_Q, _ERFC_R, _ERFC_S
    for i in range(m):
        y = z[i] * _SQRT_HALF
        a = abs(y)
        es = _erf_small(a)
        near = a < 8.0
        num = (((((((p[0] * a + p[1]) * a + p[2]) * a + p[3]) * a + p[4]) * a + p[5]) * a + p[6]) * a + p[7]) * a \
            + p[8]
        den = (((((((a + q[0]) * a + q[1]) * a + q[2]) * a + q[3]) * a + q[4]) * a + q[5]) * a + q[6]) * a + q[7]
        num_far = ((((r[0] * a + r[1]) * a + r[2]) * a + r[3]) * a + r[4]) * a + r[5]
        den_far = (((((a + s[0]) * a + s[1]) * a + s[2]) * a + s[3]) * a + s[4]) * a + s[5]
        erfc = e[i] * (num if near else num_far) / (den if near else den_far)
        erfc = 1.0 - es if a < 1.0 else erfc
        tail = 0.5 * erfc
        central = 0.5 + 0.5 * (-es if y < 0.0 else es)
        cdf[i] = central if a < _SQRT_HALF else (1.0 - tail if y > 0.0 else tail)
        pdf[i] = e[i] * _INV_SQRT_2PI


@jit(inline="always")
def _lognormal_cost_lanes(n, pn, log_r, y0, y1, cost, res, der0, der1, der2, der3, der4, w, m):
    """:func:`_fit_cost` for the lognormal in every lane ``i < m`` at ``(y0[i], y1[i])``: ``cost[i]``, ``res[j, i]``,
    ``derK[j, i]``.  ``w``: scratch (:func:`_scratch`).  Each loop writes one row of an array (the compiler cannot
    tell two rows of one array apart, and would not vectorise)."""
    inv_b, z, cdf, pdf, t, e, bits = w
    for i in range(m):
        t[i] = -y1[i]
    for i in range(m):
        cost[i] = 0.0
    exp_lanes(t, inv_b, bits, m)
    for j in range(n):
        lj, rj, e0, e1, e2, e3, e4, pj = log_r[j], res[j], der0[j], der1[j], der2[j], der3[j], der4[j], pn[j]
        for i in range(m):
            z[i] = (lj[i] - y0[i]) * inv_b[i]
        ndtr_pdf_lanes(z, cdf, pdf, t, e, bits, m)
        for i in range(m):
            e0[i] = -pdf[i] * inv_b[i]
        for i in range(m):
            e1[i] = -pdf[i] * z[i]
        for i in range(m):
            e2[i] = z[i] * e0[i] * inv_b[i]
        for i in range(m):
            e3[i] = -e0[i] * (1.0 - z[i] * z[i])
        for i in range(m):
            e4[i] = z[i] * pdf[i] * (1.0 - z[i] * z[i])
        for i in range(m):
            rj[i] = cdf[i] - pj[i]
        for i in range(m):
            cost[i] += 0.5 * rj[i] * rj[i]


@jit(inline="always")
def _scratch(m):
    """The lane fit's scratch: separate arrays (rows of one would alias, as far as the compiler can tell)."""
    return (np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m, np.int64))


@jit(inline="always")
def _zero(x, m):
    for i in range(m):
        x[i] = 0.0


@jit(inline="always")
def _gather(x, idx, k, buf):
    """``x[:k] = x[idx[:k]]`` (``idx`` rising)."""
    for i in range(k):
        buf[i] = x[idx[i]]
    for i in range(k):
        x[i] = buf[i]


@jit(inline="always")
def _take(ok, new, old, m):
    """``old[i] = new[i]`` where ``ok[i]``."""
    for i in range(m):
        old[i] = new[i] if ok[i] > 0.0 else old[i]


_STEP, _TRY, _DONE = 0.0, 1.0, 2.0  # a lane's state: work out its next step, try it, or finished


@jit
def fit_lognormal_lanes(n, pn, log_r, median, sigma):
    """:func:`fit_family` for the lognormal in :data:`LANES` lanes side by side (a count the compiler knows: its
    loops run faster so; pad with copies of a lane): lane ``i`` fits ``P(by r_j) = pn[j, i]``
    (``pn``: the probabilities over ``1 - never``; ``log_r[j, i]``: the logarithm of point ``j``'s years after the
    start) into ``median[i]`` and ``sigma[i]``.  The same steps as the one-path fit, lane by lane: each round every
    lane that needs one works out its step, every trial point is evaluated, and each lane takes or halves its step;
    a finished lane sits still.  Each pass is a small loop over a few separate arrays, without branches (``&``, not
    ``and``), so that the compiler runs it in SIMD."""
    m = LANES
    y0, y1, cost, lam, d0, d1, newt, t_y0, t_y1, t_cost = (np.empty(m), np.empty(m), np.empty(m), np.empty(m),
                                                           np.empty(m), np.empty(m), np.empty(m), np.empty(m),
                                                           np.empty(m), np.empty(m))
    tmp, state, steps, halvings, ok, act = np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    g0, g1, j00, j01, j11, s00, s01, s11 = (np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m),
                                            np.empty(m), np.empty(m), np.empty(m))
    h00, h01, h11, det, a0, a1, longest = (np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m),
                                           np.empty(m), np.empty(m))
    res, t_res = np.empty((n, m)), np.empty((n, m))
    der0, der1, der2, der3, der4 = (np.empty((n, m)), np.empty((n, m)), np.empty((n, m)), np.empty((n, m)),
                                    np.empty((n, m)))
    t_der0, t_der1, t_der2, t_der3, t_der4 = (np.empty((n, m)), np.empty((n, m)), np.empty((n, m)),
                                              np.empty((n, m)), np.empty((n, m)))
    sc = _scratch(m)
    bits = sc[6]
    # the start: the weighted line through (ndtri(pn_j), log r_j), weights phi(z_j)^2 (up to a constant)
    z = t_res  # (scratch until the first trial)
    for j in range(n):
        rng.ndtri_array(pn[j, :m], z[j])
    sw, mx, my, sxx, sxy = g0, g1, j00, j01, j11
    for i in range(m):
        sw[i] = 0.0
    for i in range(m):
        mx[i] = 0.0
    for i in range(m):
        my[i] = 0.0
    for i in range(m):
        sxx[i] = 0.0
    for i in range(m):
        sxy[i] = 0.0
    for j in range(n):
        zj, lj, wt = z[j], log_r[j], der0[j]  # (der0: scratch for the weights)
        for i in range(m):
            tmp[i] = -(zj[i] * zj[i])
        exp_lanes(tmp, wt, bits, m)
        for i in range(m):
            sw[i] += wt[i]
        for i in range(m):
            mx[i] += wt[i] * zj[i]
        for i in range(m):
            my[i] += wt[i] * lj[i]
    for i in range(m):
        mx[i] /= sw[i]
    for i in range(m):
        my[i] /= sw[i]
    for j in range(n):
        zj, lj, wt = z[j], log_r[j], der0[j]
        for i in range(m):
            sxx[i] += wt[i] * (zj[i] - mx[i]) * (zj[i] - mx[i])
        for i in range(m):
            sxy[i] += wt[i] * (zj[i] - mx[i]) * (lj[i] - my[i])
    bt, cc = h00, h01  # the line as w_j = bt log r_j + cc (1 / sigma, -log median / sigma): 0 where no good
    for i in range(m):
        slope = sxy[i] / sxx[i]
        intercept = my[i] - slope * mx[i]
        good = (slope > 0.0) & (slope < np.inf) & (intercept > -700.0) & (intercept < 700.0)
        bt[i] = 1.0 / slope if good else 0.0
    for i in range(m):
        slope = sxy[i] / sxx[i]
        intercept = my[i] - slope * mx[i]
        cc[i] = -intercept / slope if bt[i] > 0.0 else 0.0
    # then Gauss-Newton steps on the residuals' Taylor polynomial about z_j (no exponential: phi(z_j) is the root
    # of the weight), Phi(z + d) - Phi(z) = phi(z) sum_k (-1)^(k-1) He_(k-1)(z) d^k / k!, to d^5, where
    # d = bt log r_j + cc - z_j: the linear start is the first-order minimum; this one's error is of the sixth
    # order, so Newton needs an evaluation or two fewer
    for j in range(n):
        wt = der0[j]
        for i in range(m):
            wt[i] = math.sqrt(wt[i]) * _INV_SQRT_2PI
    for _ in range(3):
        for acc in (g0, g1, j00, j01, j11):
            _zero(acc, m)
        for j in range(n):
            zj, lj, ph = z[j], log_r[j], der0[j]
            for i in range(m):  # a00 (j00), a01 (j01), a11 (j11), b0 (g0), b1 (g1)
                zz = zj[i]
                d = bt[i] * lj[i] + cc[i] - zz
                h2, h3, h4 = zz * zz - 1.0, zz * (zz * zz - 3.0), (zz * zz - 6.0) * zz * zz + 3.0  # Hermite He_2..4
                f = ph[i] * d * (1.0 + d * (-0.5 * zz + d * (h2 / 6.0 + d * (-h3 / 24.0 + d * h4 / 120.0))))
                g = ph[i] * (1.0 + d * (-zz + d * (0.5 * h2 + d * (-h3 / 6.0 + d * h4 / 24.0))))
                j00[i] += g * lj[i] * g * lj[i]
                j01[i] += g * lj[i] * g
                j11[i] += g * g
                g0[i] += g * lj[i] * f
                g1[i] += g * f
        for i in range(m):
            dt = j00[i] * j11[i] - j01[i] * j01[i]
            nb = bt[i] - (j11[i] * g0[i] - j01[i] * g1[i]) / dt
            nc = cc[i] - (j00[i] * g1[i] - j01[i] * g0[i]) / dt
            fine = (bt[i] > 0.0) & (nb > 0.0) & (nb < np.inf) & (abs(nc) < np.inf)
            tmp[i] = nb if fine else bt[i]
            sxx[i] = nc if fine else cc[i]
        for i in range(m):
            bt[i] = tmp[i]
            cc[i] = sxx[i]
    for i in range(m):
        good = (bt[i] > 0.0) & (abs(cc[i] / bt[i]) < 700.0)
        y0[i] = -cc[i] / bt[i] if good else 0.0
        tmp[i] = 1.0 / bt[i] if good else 1.0
    for i in range(m):
        y1[i] = math.log(tmp[i])
    for i in range(m):
        lam[i] = 1e-3
        state[i] = _STEP
    for i in range(m):
        steps[i] = 0.0
        halvings[i] = 0.0
    for i in range(m):
        d0[i] = 0.0
        d1[i] = 0.0
    for i in range(m):
        newt[i] = 0.0
    _lognormal_cost_lanes(n, pn, log_r, y0, y1, cost, res, der0, der1, der2, der3, der4, sc, m)
    # rounds: a lane's arithmetic is its own whatever the others do, so once half the lanes are done (before a
    # round's evaluation) the rest move to the front (in order; ``perm``: where each came from) and the round and
    # later ones run over them only
    perm = np.arange(m)
    idx = np.empty(m, np.int64)
    y0_out, y1_out = np.empty(m), np.empty(m)
    w = m
    while True:
        # each waiting lane's step (fit_family's loop): the gradient and Hessian, Newton's step where the Hessian is
        # positive definite, else Levenberg-Marquardt's on the Gauss-Newton matrix
        _zero(g0, w)
        _zero(g1, w)
        _zero(j00, w)
        _zero(j01, w)
        _zero(j11, w)
        _zero(s00, w)
        _zero(s01, w)
        _zero(s11, w)
        for j in range(n):
            e, da, db, dc, dd, de = res[j], der0[j], der1[j], der2[j], der3[j], der4[j]
            for i in range(w):
                g0[i] += da[i] * e[i]
            for i in range(w):
                j00[i] += da[i] * da[i]
            for i in range(w):
                s00[i] += dc[i] * e[i]
            for i in range(w):
                g1[i] += db[i] * e[i]
            for i in range(w):
                j01[i] += da[i] * db[i]
            for i in range(w):
                j11[i] += db[i] * db[i]
            for i in range(w):
                s01[i] += dd[i] * e[i]
            for i in range(w):
                s11[i] += de[i] * e[i]
        for i in range(w):
            h00[i] = j00[i] + s00[i]
        for i in range(w):
            h11[i] = j11[i] + s11[i]
        for i in range(w):
            h01[i] = j01[i] + s01[i]
        for i in range(w):
            det[i] = h00[i] * h11[i] - h01[i] * h01[i]
        for i in range(w):  # 1: Newton's step
            tmp[i] = 1.0 if (h00[i] > 0.0) & (det[i] > 0.0) else 0.0
        for i in range(w):  # Levenberg-Marquardt's matrix where not Newton's (h01 is then j01)
            floor = 1e-9 * (j00[i] + j11[i])
            h00[i] = h00[i] if tmp[i] > 0.0 else j00[i] + lam[i] * max(j00[i], floor)
        for i in range(w):
            floor = 1e-9 * (j00[i] + j11[i])
            h11[i] = h11[i] if tmp[i] > 0.0 else j11[i] + lam[i] * max(j11[i], floor)
        for i in range(w):
            h01[i] = h01[i] if tmp[i] > 0.0 else j01[i]
        for i in range(w):
            det[i] = h00[i] * h11[i] - h01[i] * h01[i]
        for i in range(w):
            a0[i] = -(h11[i] * g0[i] - h01[i] * g1[i]) / det[i]
        for i in range(w):
            a1[i] = -(h00[i] * g1[i] - h01[i] * g0[i]) / det[i]
        for i in range(w):  # at most a factor e on a parameter per step
            longest[i] = max(abs(a0[i]), abs(a1[i]))
        for i in range(w):
            a0[i] = a0[i] / longest[i] if longest[i] > 1.0 else a0[i]
        for i in range(w):
            a1[i] = a1[i] / longest[i] if longest[i] > 1.0 else a1[i]
        for i in range(w):  # what each lane does: 0 nothing, 1 try its step, 2 take Newton's last step and stop,
            # 3 stop (the step no longer moves it), 4 stop (200 steps)
            waiting = state[i] == _STEP
            active = waiting & (steps[i] < 200.0)
            moves = (abs(a0[i]) > 1e-15 * (1.0 + abs(y0[i]))) | (abs(a1[i]) > 1e-15 * (1.0 + abs(y1[i])))
            last = (tmp[i] > 0.0) & (longest[i] < 1e-8)
            code = 3.0 if active & (not moves) else (2.0 if active & last else 1.0)
            act[i] = (code if active else 4.0) if waiting else 0.0
        for i in range(w):
            lam[i] = lam[i] * 4.0 if (act[i] > 0.0) & (act[i] < 4.0) & (tmp[i] == 0.0) else lam[i]
        for i in range(w):
            steps[i] = steps[i] + 1.0 if (act[i] > 0.0) & (act[i] < 4.0) else steps[i]
        for i in range(w):
            y0[i] = y0[i] + a0[i] if act[i] == 2.0 else y0[i]
        for i in range(w):
            y1[i] = y1[i] + a1[i] if act[i] == 2.0 else y1[i]
        for i in range(w):
            d0[i] = a0[i] if act[i] == 1.0 else d0[i]
        for i in range(w):
            d1[i] = a1[i] if act[i] == 1.0 else d1[i]
        for i in range(w):
            newt[i] = tmp[i] if act[i] == 1.0 else newt[i]
        for i in range(w):
            halvings[i] = 0.0 if act[i] == 1.0 else halvings[i]
        for i in range(w):
            state[i] = _TRY if act[i] == 1.0 else (_DONE if act[i] > 1.0 else state[i])
        live = 0
        for i in range(w):
            if state[i] != _DONE:
                live += 1
        if 2 * live <= w:
            for i in range(w):
                if state[i] == _DONE:
                    y0_out[perm[i]], y1_out[perm[i]] = y0[i], y1[i]
        if live == 0:
            break
        if 2 * live <= w:
            k = 0
            for i in range(w):
                if state[i] != _DONE:
                    idx[k] = i
                    k += 1
            for x in (y0, y1, cost, lam, d0, d1, newt, state, steps, halvings):
                _gather(x, idx, k, tmp)
            for x in (pn, log_r, res, der0, der1, der2, der3, der4):
                for j in range(n):
                    _gather(x[j], idx, k, tmp)
            for i in range(k):
                idx[i] = perm[idx[i]]
            for i in range(k):
                perm[i] = idx[i]
            w = k
        for i in range(w):
            t_y0[i] = y0[i] + d0[i] if state[i] == _TRY else y0[i]
        for i in range(w):
            t_y1[i] = y1[i] + d1[i] if state[i] == _TRY else y1[i]
        _lognormal_cost_lanes(n, pn, log_r, t_y0, t_y1, t_cost, t_res, t_der0, t_der1, t_der2, t_der3, t_der4, sc, w)
        for i in range(w):  # take the step where the sum fell (or Newton's tiny step, where rounding decides it)
            tiny = (newt[i] > 0.0) & (max(abs(d0[i]), abs(d1[i])) < 1e-9)
            ok[i] = 1.0 if (state[i] == _TRY) & ((t_cost[i] < cost[i]) | tiny) else 0.0
        for i in range(w):
            y0[i] = t_y0[i] if ok[i] > 0.0 else y0[i]
        for i in range(w):
            y1[i] = t_y1[i] if ok[i] > 0.0 else y1[i]
        for i in range(w):
            cost[i] = t_cost[i] if ok[i] > 0.0 else cost[i]
        for i in range(w):
            lam[i] = max(lam[i] * 0.2, 1e-15) if (ok[i] > 0.0) & (newt[i] > 0.0) else lam[i]
        for i in range(w):  # else halve it (60 halvings: done); act: 1 where halved
            act[i] = 1.0 if (state[i] == _TRY) & (ok[i] == 0.0) else 0.0
        for i in range(w):
            d0[i] = 0.5 * d0[i] if act[i] > 0.0 else d0[i]
        for i in range(w):
            d1[i] = 0.5 * d1[i] if act[i] > 0.0 else d1[i]
        for i in range(w):
            halvings[i] = halvings[i] + 1.0 if act[i] > 0.0 else halvings[i]
        for i in range(w):
            state[i] = _STEP if ok[i] > 0.0 else (_DONE if (act[i] > 0.0) & (halvings[i] == 60.0) else state[i])
        for j in range(n):
            _take(ok, t_res[j], res[j], w)
            _take(ok, t_der0[j], der0[j], w)
            _take(ok, t_der1[j], der1[j], w)
            _take(ok, t_der2[j], der2[j], w)
            _take(ok, t_der3[j], der3[j], w)
            _take(ok, t_der4[j], der4[j], w)
    exp_lanes(y0_out, median, bits, m)
    exp_lanes(y1_out, sigma, bits, m)
