"""An outside yardstick: QuantLib's Monte Carlo engine pricing a European call on geometric Brownian motion.

What is measured: ``ql.MCEuropeanEngine(process, "PseudoRandom", ...)`` (the C++ ``MCEuropeanEngine<PseudoRandom>``)
on a ``BlackScholesMertonProcess`` with flat rate, dividend and volatility curves, simulating ``paths`` paths of
``steps`` time steps each, with no antithetic variate, no Brownian bridge and no control variate.  Throughput is
path-steps per second (``paths * steps / seconds``), the median of ``repeats`` timed runs.  Each timed run builds a
new engine and attaches it with ``option.setPricingEngine``, which invalidates the instrument's cached NPV, so
``option.NPV()`` really re-simulates every path every time (QuantLib's instruments are lazy and would otherwise
return the cached result).  The one-off cost of importing QuantLib and building the curves is not timed.

Why it is a fair comparison with our kernel (and with ``benchmarks.floor``):

* the same number of time steps per path, each step drawing one standard normal (Mersenne Twister uniform, inverse
  cumulative normal) and applying one exact log-normal step ``S * exp(drift * dt + sigma * sqrt(dt) * z)``;
* the step length matches the floor's quarterly ``dt = 0.25``: the option matures ``steps`` quarters out;
* single-threaded: QuantLib's Monte Carlo engines run on one core, so compare against our one-thread figures
  (or divide a multi-threaded figure by the thread count);
* compiled code on both sides: the whole simulation loop runs in QuantLib's C++, Python only builds the engine.

QuantLib does more per step than a bare kernel (it stores the whole path, and its generic process looks up the
rate, dividend and variance curves at every step), so the figure is what a general-purpose, well-known library
delivers on the same work, not a lower bound on the cost of a log-normal step.

The run is also checked: the MC price must agree with the analytic Black-Scholes price (``AnalyticEuropeanEngine``)
within four times QuantLib's own error estimate.

QuantLib is an optional dependency (the ``bench`` extra); it is imported only inside the functions, so this module
imports without it.
"""

from __future__ import annotations

import statistics
import time

SPOT = 100.0
STRIKE = 100.0
RATE = 0.03
DIVIDEND = 0.0
SIGMA = 0.2
MONTHS_PER_STEP = 3  # dt = 0.25 years, as in benchmarks.floor
SEED = 42  # fixed, non-zero: QuantLib takes seed 0 to mean "seed from the clock"


def available() -> bool:
    """Whether QuantLib can be imported."""
    try:
        import QuantLib  # noqa: F401
    except ImportError:
        return False
    return True


def quantlib_gbm(paths: int, steps: int, repeats: int) -> dict:
    """Price a European call with QuantLib's pseudo-random MC engine; throughput in path-steps per second.

    Returns ``{'paths', 'steps', 'seconds', 'path_steps_per_s', 'price', 'error_estimate', 'analytic', 'version'}``,
    ``seconds`` being the median over ``repeats`` runs, each of which re-simulates all ``paths`` paths.  Raises
    ``AssertionError`` if the MC price is more than four error estimates away from the analytic price.
    """
    import QuantLib as ql

    if paths < 2 or steps < 1 or repeats < 1:
        raise ValueError("need paths >= 2, steps >= 1, repeats >= 1")

    settings = ql.Settings.instance()
    previous_date = settings.evaluationDate
    today = ql.Date(2, ql.January, 2025)
    settings.evaluationDate = today
    try:
        day_count = ql.Actual365Fixed()
        calendar = ql.NullCalendar()
        process = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(SPOT)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, DIVIDEND, day_count)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, RATE, day_count)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, calendar, SIGMA, day_count)),
        )
        maturity = today + ql.Period(MONTHS_PER_STEP * steps, ql.Months)
        option = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call, STRIKE), ql.EuropeanExercise(maturity))

        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        analytic = option.NPV()

        def simulate() -> None:
            # A new engine each time: setPricingEngine invalidates the cached NPV, so NPV() re-runs the simulation.
            engine = ql.MCEuropeanEngine(
                process,
                "PseudoRandom",
                timeSteps=steps,
                brownianBridge=False,
                antitheticVariate=False,
                requiredSamples=paths,
                seed=SEED,
            )
            option.setPricingEngine(engine)
            option.NPV()

        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            simulate()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)

        price = option.NPV()  # cached result of the last timed run
        error_estimate = option.errorEstimate()
    finally:
        settings.evaluationDate = previous_date

    if abs(price - analytic) > 4.0 * error_estimate:
        raise AssertionError(
            f"QuantLib MC price {price:.6f} is more than 4 x {error_estimate:.6f} from the analytic {analytic:.6f}"
        )
    return {
        "paths": paths,
        "steps": steps,
        "seconds": seconds,
        "path_steps_per_s": paths * steps / seconds,
        "price": price,
        "error_estimate": error_estimate,
        "analytic": analytic,
        "version": ql.__version__,
    }
