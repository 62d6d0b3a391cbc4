"""Properties of the kernel over randomly generated valid scenarios (hypothesis).

:func:`scenarios` builds scenario dicts the way a TOML file parses (``datetime.date`` for dates, plain
floats): 2-4 parties, every AGI timing family, random revenue models, named events, deadlines (events or a
completion distribution, growth haircuts), structures with random clause mixes (revenue shares with a rate
or a dated schedule, caps with or without ``rate_after_cap``, profit shares with 1-4 tiers, equity stakes,
contingent payments, own value), start/end triggers (dates, events, ``plus_years`` offsets, lists),
``common_clauses`` and ``requires``/``fallback`` chains.  Every generated dict must validate: a rejection is
a bug of the generator (or of the schema), not a reason to skip the example.

Each example is one scenario, on which :func:`test_properties_of_random_scenarios` checks, path by path:

* **finite** -- no NaN or inf in any PV of any run;
* **identical for any thread count and chunk size** -- 1 thread and one chunk, 2 threads and chunks of one
  block, 2 threads and one chunk give bitwise-equal PVs, drivers and flow sums (the runs use a little more
  than one block of paths, so there are several chunks and blocks);
* **conservation** -- undiscounted, without own-value clauses, the parties' PVs of every structure sum to 0
  on every path, within 1e-11 of the path's gross flows (the same structures with every payer replaced by
  one party and every payee by another: all transfer amounts are >= 0, so that party's PV is the gross);
* **caps** -- each capped revenue share alone (undiscounted, one clause in one structure, same paths) pays
  exactly ``min(U, cap)`` where ``U`` is what it pays without the cap; with a ``rate_after_cap`` ``a`` and
  a fixed rate ``r``, ``U`` up to the cap and ``a / r`` of the rest beyond it; with a schedule, between
  ``min(U, cap)`` and that plus ``a`` times the base.  Without a ``rate_after_cap`` it never pays beyond the
  cap.  A capped last tier is never exceeded by a profit share;
* **tier order** -- a profit share alone pays ``f(P)``, where ``P`` is the profit it shares (the same clause
  with one 100% tier: positive profit in its window, after loss carry-forward) and ``f`` is the piecewise
  linear function that fills the tiers in order: tier ``k`` pays ``rate_k`` per unit of profit between its
  breakpoints, which are the ``until`` values for ``basis = "cumulative_profit"`` and, for
  ``"payee_receipts"``, the profit at which receipts reach each ``until`` (tier ``k`` spans
  ``(until_k - until_{k-1}) / rate_k`` of profit).  Nothing is paid under tier ``k + 1`` before tier ``k``
  is full, nothing beyond a capped last tier, and the kernel's step-by-step walk agrees with the formula on
  the cumulative profit;
* **monotonicity in a revenue-share rate** -- one revenue share's rate (every point of its schedule) raised,
  same seed: on every path and structure its payee's PV does not fall, its payer's does not rise and every
  other party's is unchanged, bit for bit.  Clauses do not interact (each depends only on the path's
  drivers and revenue), so only that clause's flows change.  Without a cap each step's payment rises.  With
  a cap (and any ``rate_after_cap``) the cumulative payment at every time rises, but the cap is reached
  earlier; earlier money is worth more only at a discount rate >= 0, so the discounted check is made when
  the rates discounting both legs are >= 0, and the undiscounted one (the clause alone) always;
* **reference** -- on a share of the examples (cheap ones), the kernel's PVs match the independent numpy
  implementation of ``tests/reference.py`` on the first paths.

Every checker is a function of arrays, and ``test_*_checker_*`` show each rejects a broken input.  The
number of scenarios follows ``HYPOTHESIS_PROFILE`` (profiles in ``tests/conftest.py``): default 150, ci 1,000
(what the README's test command runs), long 5,000.  Hypothesis reports some examples as "invalid": those are
its own overruns (a draw longer than its buffer), never a scenario the schema rejected.
``pytest -s --hypothesis-show-statistics tests/test_properties.py`` shows how often each feature occurred
(caps binding, tiers filled, fallbacks used, ...).
"""

from __future__ import annotations

import copy
import math
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import base_case_dict
from models.rng import key_from_seed
from valuation.engine import kernel
from valuation.engine import run as engine
from valuation.engine.compile import compile_scenario
from valuation.scenario import scenario_from_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import reference_simulate  # noqa: E402

# the number of scenarios is the profile's (tests/conftest.py): default 150, ci 1,000 (derandomized), long 5,000
PROPERTY_SETTINGS = settings(print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                     HealthCheck.large_base_example])

SMALL = 128  # paths of the undiscounted and raised-rate runs
REFERENCE_PATHS = 32
REFERENCE_BUDGET = 5_000  # steps x clauses up to which an example is compared with the reference
THREADS = 2  # tests/conftest.py makes sure numba may use 2, also on a one-CPU runner
SOURCE, SINK = "zz gross source", "zz gross sink"  # parties of the gross-flow copies

FAMILIES = ("exponential", "weibull", "lognormal", "gompertz", "piecewise_hazard", "quantiles", "fixed")
PARTY_NAMES = ("alpha", "beta", "Gamma Corp.", "δelta")
EVENT_NAMES = ("ipo", "merger", "licence", "Launch2")
DEADLINE_NAMES = ("closing", "filing", "approval")
STRUCTURE_NAMES = ("s_one", "s_two", "Three (3)", "s4", "s_five")
BUILTIN = ("agi_declared", "agi_verified")


# ================================================================ generator


def num(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def fraction(draw, lo: float = 1e-3) -> float:
    """A share in [0, 1]: sometimes exactly 0 or 1, otherwise at least ``lo``."""
    kind = draw(st.integers(0, 9))  # hypothesis favours 0: the special values at the other end
    if kind == 8:
        return 0.0
    if kind == 9:
        return 1.0
    return draw(num(lo, 1.0))


def day(draw, lo: date, hi: date) -> date:
    return lo + timedelta(days=draw(st.integers(0, (hi - lo).days)))


def days_increasing(draw, lo: date, hi: date, n: int) -> list[date]:
    """``n`` strictly increasing dates from ``lo`` to ``hi`` (gaps drawn, so no filtering for uniqueness)."""
    width = max(1, (hi - lo).days // n)
    out = [lo + timedelta(days=draw(st.integers(0, width)))]
    for _ in range(n - 1):
        out.append(out[-1] + timedelta(days=draw(st.integers(1, width))))
    return out


def maybe(draw, p_in_8: int = 4) -> bool:
    """True about ``p_in_8`` times in 8 (more often: hypothesis favours small integers)."""
    return draw(st.integers(0, 7)) < p_in_8


def rarely(draw) -> bool:
    return draw(st.integers(0, 7)) == 7


@st.composite
def timings(draw, t0: date, absolute: bool) -> dict:
    """A timing table of any family; ``absolute``: event times (dates allowed), else a lag (numbers only)."""
    family = draw(st.sampled_from(FAMILIES))
    spec: dict = {"family": family}
    start = 0.0  # years
    if maybe(draw, 3):
        if absolute and draw(st.booleans()):
            when = day(draw, t0, t0 + timedelta(days=3650))
            spec["start"] = when
            start = (when - t0).days / 365.25
        else:
            start = draw(num(0.0, 10.0))
            spec["start"] = start
    never = 0.0
    if maybe(draw, 2):
        never = draw(num(0.0, 0.6))
        spec["never"] = never
    if family == "exponential":
        spec["rate"] = draw(num(0.01, 2.0))
    elif family == "weibull":
        spec["shape"] = draw(num(0.3, 5.0))
        spec["scale"] = draw(num(0.1, 30.0))
    elif family == "lognormal":
        spec["median"] = draw(num(0.1, 30.0))
        spec["sigma"] = draw(num(0.05, 2.0))
    elif family == "gompertz":
        spec["rate"] = draw(num(0.001, 1.0))
        spec["growth"] = draw(num(0.01, 1.0))
    elif family == "fixed":
        spec["after"] = draw(num(0.0, 20.0))
    elif family == "piecewise_hazard":
        n = draw(st.integers(1, 5))
        if absolute and draw(st.booleans()):
            first = math.floor(start * 365.25) + 1
            froms = days_increasing(draw, t0 + timedelta(days=first), t0 + timedelta(days=first + 9000), n)
        else:
            offset = start + draw(num(0.0, 3.0))
            steps = [draw(num(0.05, 5.0)) for _ in range(n)]
            froms = [offset + sum(steps[:i]) for i in range(n)]
        spec["pieces"] = [{"from": f, "hazard": draw(num(0.0, 2.0))} for f in froms]
    else:  # quantiles
        fit = draw(st.sampled_from(["piecewise", "piecewise", "piecewise", "exponential", "lognormal", "weibull",
                                    "gompertz"]))
        n = draw(st.integers(1 if fit in ("piecewise", "exponential") else 2, 4))
        if absolute and draw(st.booleans()):
            first = math.floor(start * 365.25) + 1
            bys = days_increasing(draw, t0 + timedelta(days=first), t0 + timedelta(days=first + 9000), n)
        else:
            steps = [draw(num(0.05, 8.0)) for _ in range(n)]
            bys = [start + sum(steps[: i + 1]) for i in range(n)]
        top = draw(num(0.05, 0.95)) * (1.0 - never)
        weights = [draw(num(0.1, 1.0)) for _ in range(n)]
        ps = [top * sum(weights[: i + 1]) / sum(weights) for i in range(n)]
        spec["points"] = [{"by": b, "p": p} for b, p in zip(bys, ps, strict=True)]
        if fit != "piecewise" or maybe(draw):
            spec["fit"] = fit
        if fit == "piecewise" and maybe(draw):
            spec["tail"] = draw(st.sampled_from(["continue", "never"]))
    return spec


class Ctx:
    """What clauses may refer to."""

    def __init__(self, t0: date, horizon: date, parties: list[str], events: list[str], deadlines: list[str],
                 scale: float):
        self.t0, self.horizon, self.parties, self.deadlines = t0, horizon, parties, deadlines
        self.events = [*BUILTIN, *events]
        self.scale = scale  # revenue over the horizon at the initial rate (USD bn)


def term(draw, ctx: Ctx):
    kind = draw(st.integers(0, 9))
    if kind <= 2:
        return day(draw, ctx.t0, ctx.horizon + timedelta(days=1000))
    if kind == 3:
        return "valuation_date"
    if kind == 4:
        return "never"
    if kind <= 7:
        return draw(st.sampled_from(ctx.events))
    offset = {"event": draw(st.sampled_from(ctx.events))}
    if maybe(draw, 6):
        offset["plus_years"] = draw(num(0.0, 5.0))
    return offset


def trigger(draw, ctx: Ctx):
    terms = [term(draw, ctx) for _ in range(draw(st.integers(1, 4)))]
    return terms[0] if len(terms) == 1 and draw(st.booleans()) else terms


def window(draw, ctx: Ctx, clause: dict) -> None:
    """Optional start and end triggers; an end of dates only comes after a start of dates only."""
    if maybe(draw, 3):
        clause["start"] = trigger(draw, ctx)
    if maybe(draw):
        clause["end"] = trigger(draw, ctx)
    if "start" in clause and "end" in clause:
        start = clause["start"] if isinstance(clause["start"], list) else [clause["start"]]
        end = clause["end"] if isinstance(clause["end"], list) else [clause["end"]]
        if all(isinstance(x, date) for x in [*start, *end]) and min(start) >= min(end):
            del clause["end"]


def condition(draw, ctx: Ctx) -> dict:
    if ctx.deadlines and draw(st.booleans()):
        cond: dict = {"deadline": draw(st.sampled_from(ctx.deadlines))}
    else:
        cond = {"event": draw(st.sampled_from(ctx.events)),
                "before": day(draw, ctx.t0 + timedelta(days=1), ctx.horizon)}
    if maybe(draw):
        cond["met"] = draw(st.booleans())
    return cond


def two_parties(draw, ctx: Ctx) -> tuple[str, str]:
    a, b = draw(st.lists(st.sampled_from(ctx.parties), min_size=2, max_size=2, unique=True))
    return a, b


def common_keys(draw, clause: dict) -> dict:
    if maybe(draw, 2):
        clause["discount_rate"] = draw(num(-0.05, 0.3))
    if maybe(draw, 1):
        clause["label"] = draw(st.sampled_from(["a clause", "Ünïcode label", " "]))
    return clause


def revenue_share(draw, ctx: Ctx) -> dict:
    payer, payee = two_parties(draw, ctx)
    c: dict = {"type": "revenue_share", "payer": payer, "payee": payee}
    if draw(st.booleans()):
        c["rate"] = fraction(draw)
    else:
        n = draw(st.integers(1, 5))
        dates = days_increasing(draw, ctx.t0 - timedelta(days=1000), ctx.horizon + timedelta(days=1000), n)
        c["schedule"] = [{"date": d, "rate": fraction(draw)} for d in dates]
        if maybe(draw):
            c["interpolation"] = draw(st.sampled_from(["step", "linear"]))
    if maybe(draw, 2):
        c["base_fraction"] = draw(num(0.01, 1.0))
    if maybe(draw):
        c["cap"] = 0.0 if rarely(draw) else ctx.scale * 10 ** draw(num(-3.0, 0.5))
        if maybe(draw):
            c["rate_after_cap"] = fraction(draw)
    window(draw, ctx, c)
    return common_keys(draw, c)


def profit_share(draw, ctx: Ctx) -> dict:
    payer, payee = two_parties(draw, ctx)
    c: dict = {"type": "profit_share", "payer": payer, "payee": payee}
    basis = draw(st.sampled_from([None, "payee_receipts", "cumulative_profit"]))
    if basis is not None:
        c["basis"] = basis
    n = draw(st.integers(1, 4))
    steps = [ctx.scale * 10 ** draw(num(-4.0, -0.5)) for _ in range(n)]
    untils = [sum(steps[: i + 1]) for i in range(n)]
    capped = maybe(draw)
    tiers = []
    for i, until in enumerate(untils):
        has_until = i < n - 1 or capped
        rate = draw(num(1e-3, 1.0)) if has_until and basis != "cumulative_profit" else fraction(draw)
        tiers.append({"rate": rate, "until": until} if has_until else {"rate": rate})
    c["tiers"] = tiers
    if maybe(draw):
        c["loss_carryforward"] = draw(st.booleans())
    window(draw, ctx, c)
    return common_keys(draw, c)


def equity_stake(draw, ctx: Ctx) -> dict:
    holder, issuer = two_parties(draw, ctx)
    c: dict = {"type": "equity_stake", "holder": holder, "issuer": issuer, "fraction": draw(num(1e-4, 1.0))}
    if maybe(draw):
        c["condition"] = condition(draw, ctx)
    return common_keys(draw, c)


def payment(draw, ctx: Ctx) -> dict:
    payer, payee = two_parties(draw, ctx)
    c: dict = {"type": "payment", "payer": payer, "payee": payee, "amount": draw(num(0.0, 100.0)),
               "date": day(draw, ctx.t0, ctx.horizon)}
    if maybe(draw, 5):
        c["condition"] = condition(draw, ctx)
        if maybe(draw):
            c["amount_otherwise"] = draw(num(0.0, 100.0))
    return common_keys(draw, c)


def own_value(draw, ctx: Ctx) -> dict:
    c: dict = {"type": "own_value", "party": draw(st.sampled_from(ctx.parties))}
    if draw(st.booleans()):
        c["revenue_rate"] = draw(num(0.0, 1.0))
    else:
        c["amount_per_year"] = draw(num(-10.0, 10.0))
    window(draw, ctx, c)
    return common_keys(draw, c)


CLAUSE_MAKERS = (revenue_share, revenue_share, revenue_share, profit_share, profit_share, equity_stake, payment,
                 own_value)


def clauses(draw, ctx: Ctx, most: int) -> list[dict]:
    count = draw(st.sampled_from([n for n in (1, 2, 3, 0, 1, 2, 3, 4) if n <= most]))  # not integers: few 0s
    return [draw(st.sampled_from(CLAUSE_MAKERS))(draw, ctx) for _ in range(count)]


def revenue(draw, t0: date, horizon: date) -> dict:
    r: dict = {
        "initial": 10 ** draw(num(-1.0, 2.0)),
        "initial_growth": draw(num(-0.5, 1.0)),
        "long_run_growth": draw(num(-0.2, 0.3)),
        # 0 or >= 1e-3: tests/reference.py loses the growth shocks to cancellation (1 - exp(-2 kappa h)) for a
        # tiny positive reversion, where the kernel (expm1) is right
        "mean_reversion": 0.0 if rarely(draw) else draw(num(1e-3, 3.0)),
        "volatility": draw(num(0.0, 1.0)),
        "exit_multiple": draw(num(0.1, 30.0)),
    }
    if maybe(draw):
        r["growth_volatility"] = draw(num(0.0, 0.3))
    if maybe(draw):
        r["correlation"] = draw(num(-1.0, 1.0))
    if maybe(draw):
        r["jump_intensity"] = draw(num(0.0, 2.0))
        r["jump_loss"] = draw(num(0.0, 0.9))
    if maybe(draw):
        r["agi_growth_uplift"] = draw(num(-0.3, 0.5))
    fit_below_overflow(r, (horizon - t0).days / 365.25)
    # mostly positive margins, so that profit shares have profit to share and their tiers fill
    if draw(st.booleans()):
        r["margin"] = margin(draw, -0.5, 0.6)
    else:
        dates = days_increasing(draw, t0 - timedelta(days=700), horizon + timedelta(days=700),
                                draw(st.integers(1, 4)))
        r["margin"] = [{"date": d, "margin": margin(draw, -1.5, 0.8)} for d in dates]
    return r


def margin(draw, lo: float, hi: float) -> float:
    """A margin in [lo, hi], positive about 6 times in 8."""
    return draw(num(0.0, hi)) if maybe(draw, 6) else draw(num(lo, 0.0))


def log_revenue_bound(r: dict, horizon: float) -> float:
    """Log of a generous upper bound of discounted revenue and exit value: 7 standard deviations above the
    mean path, every positive growth counted, discounted at -5% a year."""
    g0, gbar, kappa = r["initial_growth"], r["long_run_growth"], r["mean_reversion"]
    decay = max(g0 - gbar, 0.0)
    drift = max(gbar, 0.0) * horizon + decay * (min(horizon, 1.0 / kappa) if kappa > 0 else horizon) + decay \
        + max(r.get("agi_growth_uplift", 0.0), 0.0) * horizon
    spread = r["volatility"] * math.sqrt(horizon) + r.get("growth_volatility", 0.0) * math.sqrt(horizon**3 / 3)
    return math.log(r["initial"]) + drift + 7.0 * spread + 0.052 * horizon + math.log(horizon + r["exit_multiple"] + 1)


def fit_below_overflow(r: dict, horizon: float) -> None:
    """Scale growth and volatilities down until revenue cannot come near the kernel's overflow guard (1e12)."""
    for _ in range(60):
        if log_revenue_bound(r, horizon) <= math.log(1e11):
            return
        for key in ("initial_growth", "long_run_growth", "agi_growth_uplift"):
            if r.get(key, 0.0) > 0.0:
                r[key] *= 0.8
        for key in ("volatility", "growth_volatility"):
            if key in r:
                r[key] *= 0.8
    raise AssertionError(f"cannot fit {r} below the overflow guard")


@st.composite
def scenarios(draw) -> dict:
    """A valid scenario dict, as TOML would parse it."""
    t0 = day(draw, date(2020, 1, 1), date(2030, 12, 31))
    years = draw(st.sampled_from([25, 1, 2, 5, 10, 15, 20]))  # sampled, not integers: spread, not mostly short
    horizon = t0 + timedelta(days=max(200, years * 365 - draw(st.integers(0, 300))))
    horizon_years = (horizon - t0).days / 365.25
    parties = draw(st.lists(st.sampled_from(PARTY_NAMES), min_size=2, max_size=4, unique=True))
    events = draw(st.lists(st.sampled_from(EVENT_NAMES), max_size=3, unique=True))
    d: dict = {
        "name": "random scenario",
        "simulation": {"valuation_date": t0, "horizon": horizon,
                       "steps_per_year": draw(st.sampled_from([1, 2, 4, 12])), "paths": 1000, "seed": 1},
        "parties": {p: {"discount_rate": draw(num(-0.05, 0.3))} for p in parties},
        "agi": {"declaration": draw(timings(t0, absolute=True)),
                "verification_lag": draw(timings(t0, absolute=False))},
        "revenue": revenue(draw, t0, horizon),
        "events": {e: draw(timings(t0, absolute=True)) for e in events},
    }
    if maybe(draw):
        d["agi"]["never_verified"] = draw(num(0.0, 1.0))
    deadlines = []
    for name in draw(st.lists(st.sampled_from(DEADLINE_NAMES), max_size=3, unique=True)):
        dl: dict = {"name": name, "date": day(draw, t0 + timedelta(days=1), horizon)}
        if draw(st.booleans()):
            dl["events"] = draw(st.lists(st.sampled_from([*BUILTIN, *events]), min_size=1, max_size=4))
        else:
            dl["completion"] = draw(timings(t0, absolute=True))
        if maybe(draw):
            dl["growth_haircut"] = draw(num(0.0, 0.3))
            if dl["growth_haircut"] > 0 and maybe(draw):
                dl["haircut_years"] = draw(num(0.1, 10.0))
        deadlines.append(dl)
    d["deadlines"] = deadlines
    ctx = Ctx(t0, horizon, parties, events, [dl["name"] for dl in deadlines],
              scale=d["revenue"]["initial"] * horizon_years)
    names = draw(st.lists(st.sampled_from(STRUCTURE_NAMES), min_size=1, max_size=4, unique=True))
    structures = [{"name": name, "clauses": clauses(draw, ctx, 4)} for name in names]
    if deadlines:  # fallbacks go to structures earlier in a random order: no cycles
        order = draw(st.permutations(range(len(structures))))
        for rank, i in enumerate(order):
            if rank > 0 and maybe(draw, 5):
                structures[i]["requires"] = draw(st.sampled_from(ctx.deadlines))
                structures[i]["fallback"] = structures[order[draw(st.integers(0, rank - 1))]]["name"]
    d["structures"] = structures
    if maybe(draw):
        d["common_clauses"] = clauses(draw, ctx, 2)
    if maybe(draw, 2):
        d["simulation"]["baseline"] = draw(st.sampled_from(names))
    return d


# ============================================================== running


def run(d: dict, paths: int, seed: int, *, undiscounted: bool = False, threads: int | None = 1,
        chunk_size: int = 65_536) -> tuple[dict, object]:
    compiled = compile_scenario(scenario_from_dict(d), undiscounted=undiscounted)
    key, _ = key_from_seed(seed)
    arrays = engine.simulate_arrays(compiled, key, paths, chunk_size=chunk_size, threads=threads)
    S = len(compiled.structures)  # the party view's PVs; the market view's (a scenario with [market]) apart
    arrays["market_pv"], arrays["pv"] = arrays["pv"][:, S:], arrays["pv"][:, :S]
    return arrays, compiled


def all_clauses(d: dict) -> list[dict]:
    return [c for s in d["structures"] for c in s["clauses"]] + list(d.get("common_clauses", []))


def single(name: str, clause: dict) -> dict:
    return {"name": name, "clauses": [clause]}


def analysis_dict(d: dict) -> tuple[dict, dict]:
    """The undiscounted analysis scenario: structures without own value (conservation), their gross-flow
    copies, and single-clause probes of every revenue and profit share.  Returns it and an index of what is
    where."""
    a = copy.deepcopy(d)
    a["simulation"].pop("baseline", None)
    a["parties"] = {**a["parties"], SOURCE: {"discount_rate": 0.0}, SINK: {"discount_rate": 0.0}}
    common = [c for c in a.pop("common_clauses", []) if c["type"] != "own_value"]
    a["common_clauses"] = []
    kept = []
    for s in a["structures"]:
        kept.append({**s, "clauses": [c for c in s["clauses"] if c["type"] != "own_value"] + common})
    gross = []
    for s in kept:
        g = {"name": f"gross:{s['name']}", "clauses": []}
        if "requires" in s:
            g["requires"], g["fallback"] = s["requires"], f"gross:{s['fallback']}"
        for c in s["clauses"]:
            c = copy.deepcopy(c)
            for role in ("payer", "issuer"):
                if role in c:
                    c[role] = SOURCE
            for role in ("payee", "holder"):
                if role in c:
                    c[role] = SINK
            g["clauses"].append(c)
        gross.append(g)
    probes: list[dict] = []
    index: dict = {"n_original": len(kept), "revenue_shares": [], "profit_shares": []}
    for i, c in enumerate(all_clauses(d)):
        if c["type"] == "revenue_share":
            plain = {k: v for k, v in c.items() if k not in ("cap", "rate_after_cap")}
            base = {k: v for k, v in plain.items() if k not in ("schedule", "interpolation", "base_fraction")}
            base["rate"] = 1.0
            first = len(kept) + len(gross) + len(probes)
            probes += [single(f"probe:{i}", c), single(f"probe:{i}:uncapped", plain), single(f"probe:{i}:base", base)]
            index["revenue_shares"].append((c, first))
        elif c["type"] == "profit_share":
            whole = {**c, "tiers": [{"rate": 1.0}]}
            first = len(kept) + len(gross) + len(probes)
            probes += [single(f"probe:{i}", c), single(f"probe:{i}:profit", whole)]
            index["profit_shares"].append((c, first))
    a["structures"] = kept + gross + probes
    return a, index


def raise_rate(clause: dict, delta: float) -> dict:
    """The clause with its rate (every point of its schedule) raised by ``delta``, at most to 1."""
    c = copy.deepcopy(clause)
    if "rate" in c:
        c["rate"] = min(1.0, c["rate"] + delta)
    else:
        for point in c["schedule"]:
            point["rate"] = min(1.0, point["rate"] + delta)
    return c


def leg_rates(d: dict, clause: dict) -> list[float]:
    if "discount_rate" in clause:
        return [clause["discount_rate"]]
    return [d["parties"][clause["payer"]]["discount_rate"], d["parties"][clause["payee"]]["discount_rate"]]


# ============================================================== checkers


def check_finite(pv: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(pv)
    assert not bad.any(), f"{what}: {int(bad.sum())} non-finite PVs, first at {np.argwhere(bad)[0].tolist()}"


def check_identical(a: dict, b: dict, what: str) -> None:
    for name in ("pv", "times", "met", "revenue", "flows"):
        assert np.array_equal(a[name], b[name], equal_nan=True), f"{what}: {name} differs"


def check_conservation(pv: np.ndarray, gross: np.ndarray) -> None:
    """``pv`` (paths, structures, parties) undiscounted without own value; ``gross`` (paths, structures) the
    gross flows of each structure: the parties sum to zero within 1e-11 of the gross."""
    total = pv.sum(axis=2)
    bound = 1e-11 * gross + 1e-300
    worst = np.unravel_index(np.argmax(np.abs(total) / bound), total.shape)
    assert np.all(np.abs(total) <= bound), (
        f"transfers do not net to zero: path {worst[0]}, structure {worst[1]}: sum {total[worst]:.6g}, "
        f"gross {gross[worst]:.6g}")


def _close(actual: np.ndarray, expected: np.ndarray, scale: np.ndarray, what: str, rtol: float = 1e-9) -> None:
    err = np.abs(actual - expected)
    bound = rtol * scale + 1e-300
    i = int(np.argmax(err / bound))
    assert np.all(err <= bound), f"{what}: path {i}: {actual[i]!r} != {expected[i]!r}"


def check_revenue_share(paid: np.ndarray, uncapped: np.ndarray, base: np.ndarray, clause: dict) -> None:
    """Payments of one revenue share on its own, undiscounted: ``paid`` as is, ``uncapped`` without its cap,
    ``base`` the revenue in its window (rate 1, whole revenue)."""
    bf = clause.get("base_fraction", 1.0)
    assert np.all(paid >= 0.0) and np.all(uncapped >= 0.0) and np.all(base >= 0.0), "negative payment"
    if "rate" in clause:  # the base times the rate
        _close(uncapped, clause["rate"] * bf * base, uncapped + base, "uncapped != rate x base")
    else:
        top = max(p["rate"] for p in clause["schedule"])
        assert np.all(uncapped <= top * bf * base * (1 + 1e-9) + 1e-300), "schedule pays above its top rate"
    if "cap" not in clause:
        assert np.array_equal(paid, uncapped), "a clause without cap differs from itself"
        return
    cap = clause["cap"]
    after = clause.get("rate_after_cap", 0.0)
    scale = uncapped + cap + after * bf * base
    at_rate = np.minimum(uncapped, cap)
    if after == 0.0:
        assert np.all(paid <= cap * (1 + 1e-12) + 1e-300), f"cap {cap} exceeded: {paid.max()!r}"
        _close(paid, at_rate, scale, "capped payment != min(uncapped, cap)")
    elif "rate" in clause and clause["rate"] > 0.0:
        r = clause["rate"]
        beyond = np.where(uncapped > cap, (after / r) * (uncapped - cap), 0.0)
        _close(paid, at_rate + beyond, scale, "payment beyond the cap != rate_after_cap share")
    else:
        assert np.all(paid >= at_rate - 1e-9 * scale), "pays less than min(uncapped, cap)"
        assert np.all(paid <= at_rate + after * bf * base + 1e-9 * scale), "pays more than rate_after_cap allows"


def tier_breaks(clause: dict) -> tuple[np.ndarray, np.ndarray]:
    """Profit at which each tier starts and ends, and the tier rates (the piecewise-linear ``f``)."""
    by_profit = clause.get("basis", "payee_receipts") == "cumulative_profit"
    ends, rates = [], []
    lo_profit, lo_until = 0.0, 0.0
    for tier in clause["tiers"]:
        until = tier.get("until", math.inf)
        width = until - lo_until if by_profit or until == math.inf else (until - lo_until) / tier["rate"]
        lo_profit += width
        ends.append(lo_profit)
        rates.append(tier["rate"])
        lo_until = until
    return np.array(ends), np.array(rates)


def tiers_formula(profit: np.ndarray, clause: dict) -> np.ndarray:
    ends, rates = tier_breaks(clause)
    starts = np.concatenate(([0.0], ends[:-1]))
    with np.errstate(invalid="ignore"):
        filled = np.clip(profit[:, None] - starts[None, :], 0.0, (ends - starts)[None, :])
    return (filled * rates[None, :]).sum(axis=1)


def check_profit_share(paid: np.ndarray, profit: np.ndarray, clause: dict) -> None:
    """``paid`` by one profit share on its own and the ``profit`` it shares (one 100% tier), undiscounted."""
    assert np.all(paid >= 0.0) and np.all(profit >= 0.0), "negative profit share"
    last = clause["tiers"][-1].get("until")
    if last is not None:
        by_profit = clause.get("basis", "payee_receipts") == "cumulative_profit"
        most = float(tiers_formula(np.array([math.inf]), clause)[0]) if by_profit else last
        assert np.all(paid <= most * (1 + 1e-12) + 1e-300), f"tiers pay beyond the last cap {most}: {paid.max()!r}"
    _close(paid, tiers_formula(profit, clause), profit + paid, "tiers not filled in order")


def check_monotone(low: np.ndarray, high: np.ndarray, payer: int, payee: int) -> None:
    """PVs (paths, structures, parties) before and after raising one clause's rate."""
    tol = 1e-12 * max(1.0, float(np.abs(low).max(initial=0.0)), float(np.abs(high).max(initial=0.0)))
    up = high[:, :, payee] - low[:, :, payee]
    down = high[:, :, payer] - low[:, :, payer]
    assert np.all(up >= -tol), f"payee PV fell by {-up.min():.6g}"
    assert np.all(down <= tol), f"payer PV rose by {down.max():.6g}"
    others = [p for p in range(low.shape[2]) if p not in (payer, payee)]
    assert np.array_equal(low[:, :, others], high[:, :, others]), "another party's PV changed"


def check_reference(kernel: np.ndarray, reference: np.ndarray, gross: float = 0.0) -> None:
    """PVs (paths, structures, parties) of the kernel and the reference agree within 1e-9 of the largest PV of
    the same structure and party, or 1e-11 of ``gross`` (the mean gross flow of a path: where clauses offset,
    a PV can be ~1e-15 of the money that moved, and only rounding is left of it)."""
    for s in range(kernel.shape[1]):
        for p in range(kernel.shape[2]):
            scale = float(np.max(np.abs(reference[:, s, p]), initial=0.0))
            np.testing.assert_allclose(kernel[:, s, p], reference[:, s, p], rtol=1e-9,
                                       atol=1e-9 * scale + 1e-11 * gross,
                                       err_msg=f"kernel vs reference, structure {s}, party {p}")


# ============================================================ the property


def check_scenario(d: dict, seed: int, extra_paths: int, delta: float, which: int, note=event) -> None:
    """Every property on one scenario; ``note`` records what occurred (hypothesis ``event``)."""
    scenario = scenario_from_dict(d)  # a generated scenario must be valid

    # ---- finite, and identical for any thread count and chunk size
    paths = kernel.BLOCK + extra_paths
    one, compiled = run(d, paths, seed, threads=1)
    for name in ("pv", "revenue", "flows"):  # PVs, drivers, the Cash flows sheet's sums (times may be inf: never)
        check_finite(one[name], f"1 thread: {name}")
    two, _ = run(d, paths, seed, threads=THREADS, chunk_size=1)
    check_identical(one, two, f"{THREADS} threads, chunks of one block")
    whole, _ = run(d, paths, seed, threads=THREADS, chunk_size=10 * kernel.BLOCK)
    check_identical(one, whole, f"{THREADS} threads, one chunk")
    pv = one["pv"]

    req = compiled.drivers.req_deadlines
    if len(req):
        pattern = (one["met"][:, req].astype(np.int64) << np.arange(len(req))).sum(axis=1)
        eff = compiled.drivers.st_eff[pattern]
        if (eff != np.arange(len(compiled.structures))).any():
            note("fallback used")
        if (eff == np.arange(len(compiled.structures))).all(axis=1).any():
            note("required deadlines all met on some path")

    # ---- undiscounted: conservation, caps, tiers
    a, index = analysis_dict(d)
    und, acomp = run(a, SMALL, seed, undiscounted=True)
    upv = und["pv"]
    check_finite(upv, "undiscounted analysis")
    n = index["n_original"]
    parties = acomp.parties
    sink = parties.index(SINK)
    assert np.array_equal(upv[:, n:2 * n, parties.index(SOURCE)], -upv[:, n:2 * n, sink])
    check_conservation(upv[:, :n, :], upv[:, n:2 * n, sink])
    if (upv[:, :n, :] != 0).any():
        note("conservation: some transfer")

    for clause, first in index["revenue_shares"]:
        payee = parties.index(clause["payee"])
        paid, uncapped, base = (upv[:, first + j, payee] for j in range(3))
        check_revenue_share(paid, uncapped, base, clause)
        if "cap" in clause:
            binds = uncapped > clause["cap"]
            if binds.any():
                note("cap binds" + (" (rate_after_cap)" if clause.get("rate_after_cap", 0) > 0 else ""))
                note("cap binds" + (" (schedule)" if "schedule" in clause else " (fixed rate)"))
            if (~binds & (uncapped > 0)).any():
                note("cap does not bind on a paying path")
    for clause, first in index["profit_shares"]:
        payee = parties.index(clause["payee"])
        paid, profit = upv[:, first, payee], upv[:, first + 1, payee]
        check_profit_share(paid, profit, clause)
        if (profit > 0).any():
            note("profit share: positive profit on some path")
        ends, _ = tier_breaks(clause)
        filled = int((profit[:, None] >= ends[None, :]).sum(axis=1).max())
        if len(ends) > 1 and filled >= 1:
            note("profit share: a later tier reached on some path")
        if len(ends) > 1 and filled >= len(ends) - 1:
            note("profit share: every tier reached on some path")
        if "until" in clause["tiers"][-1] and filled == len(ends):
            note("profit share: capped last tier filled")

    # ---- monotone in a revenue-share rate (same seed, first SMALL paths of the 1-thread run)
    shares = [(c, first) for c, first in index["revenue_shares"] if
              ("rate" in c and c["rate"] < 1.0) or ("schedule" in c and min(p["rate"] for p in c["schedule"]) < 1)]
    if shares:
        clause, first = shares[which % len(shares)]
        high_clause = raise_rate(clause, delta)
        payer, payee = parties.index(clause["payer"]), parties.index(clause["payee"])
        # undiscounted, the clause alone: its probe and the raised probe
        alone = copy.deepcopy(a)
        alone["structures"] = [single("low", clause), single("high", high_clause)]
        solo, _ = run(alone, SMALL, seed, undiscounted=True)
        check_monotone(solo["pv"][:, :1], solo["pv"][:, 1:], payer, payee)
        # discounted, the whole scenario (where earlier payment is not worth less)
        if "cap" not in clause or min(leg_rates(d, clause)) >= 0.0:
            high = copy.deepcopy(d)
            for c in all_clauses(high):
                if c == clause:
                    c.clear()
                    c.update(high_clause)
                    break
            raised, _ = run(high, SMALL, seed)
            check_finite(raised["pv"], "raised rate")
            op = compiled.parties
            check_monotone(pv[:SMALL], raised["pv"], op.index(clause["payer"]), op.index(clause["payee"]))
            if (raised["pv"][:, :, op.index(clause["payee"])] > pv[:SMALL, :, op.index(clause["payee"])]).any():
                note("monotonicity: payee PV rises on some path")
        else:
            note("monotonicity: capped with a negative discount rate (undiscounted only)")

    # ---- the independent reference (first paths), unless the example is unusually large
    if len(compiled.t) * max(1, len(compiled.clauses.kind)) <= REFERENCE_BUDGET:
        note("compared with the reference")
        ref = reference_simulate(scenario, REFERENCE_PATHS, seed)
        check_reference(pv[:REFERENCE_PATHS], ref.pvs, gross=float(np.abs(one["flows"]).sum()) / paths)


_examples_done = 0


@PROPERTY_SETTINGS
@given(d=scenarios(), seed=st.integers(0, 2**32), extra_paths=st.integers(1, 200), delta=num(0.001, 1.0),
       which=st.integers(0, 7))
def test_properties_of_random_scenarios(d, seed, extra_paths, delta, which):
    global _examples_done
    compiled_before = len(kernel.run_block.signatures)
    check_scenario(d, seed, extra_paths, delta, which)
    if _examples_done:  # the kernel is compiled once per process (and array layout), not per scenario
        assert len(kernel.run_block.signatures) == compiled_before, "the kernel was compiled again"
    _examples_done += 1


# ======================================================= the checkers can fail


def fixed_dict() -> dict:
    """A small scenario where caps bind, tiers fill and a fallback applies (plain numbers, no sources)."""
    return {
        "name": "checkers",
        "simulation": {"valuation_date": date(2025, 1, 1), "horizon": date(2040, 1, 1), "steps_per_year": 4,
                       "paths": 1000, "seed": 3},
        "parties": {"payer": {"discount_rate": 0.1}, "payee": {"discount_rate": 0.05},
                    "third": {"discount_rate": 0.2}},
        "agi": {"declaration": {"family": "exponential", "rate": 0.15},
                "verification_lag": {"family": "lognormal", "median": 1.0, "sigma": 0.5}},
        "revenue": {"initial": 10.0, "initial_growth": 0.3, "long_run_growth": 0.05, "mean_reversion": 0.3,
                    "volatility": 0.3, "exit_multiple": 5.0,
                    "margin": [{"date": date(2025, 1, 1), "margin": -0.5}, {"date": date(2030, 1, 1),
                                                                            "margin": 0.3}]},
        "deadlines": [{"name": "closing", "date": date(2027, 1, 1), "events": ["agi_declared"]}],
        "structures": [
            {"name": "capped", "clauses": [
                {"type": "revenue_share", "payer": "payer", "payee": "payee", "rate": 0.2, "cap": 30.0},
                {"type": "revenue_share", "payer": "payer", "payee": "third", "rate": 0.1, "cap": 10.0,
                 "rate_after_cap": 0.04, "end": "agi_verified"},
                {"type": "own_value", "party": "payee", "revenue_rate": 0.05},
            ]},
            {"name": "tiered", "requires": "closing", "fallback": "capped", "clauses": [
                {"type": "profit_share", "payer": "payer", "payee": "payee", "loss_carryforward": True,
                 "tiers": [{"rate": 0.6, "until": 5.0}, {"rate": 0.3, "until": 20.0}]},
                {"type": "profit_share", "payer": "payer", "payee": "third", "basis": "cumulative_profit",
                 "tiers": [{"rate": 0.5, "until": 10.0}, {"rate": 0.2, "until": 60.0}, {"rate": 0.05}]},
                {"type": "equity_stake", "holder": "payee", "issuer": "payer", "fraction": 0.1},
            ]},
        ],
        "common_clauses": [{"type": "payment", "payer": "third", "payee": "payer", "date": date(2030, 1, 1),
                            "amount": 5.0, "condition": {"deadline": "closing", "met": False}}],
    }


@pytest.fixture(scope="module")
def fixed():
    d = fixed_dict()
    a, index = analysis_dict(d)
    und, compiled = run(a, 2_000, 5, undiscounted=True)
    return d, a, index, und["pv"], compiled.parties


def without_sources(node):
    """``{ value = x, source = "..." }`` -> ``x``, everywhere (the checkers read plain numbers)."""
    if isinstance(node, dict):
        return node["value"] if "value" in node else {k: without_sources(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_sources(v) for v in node]
    return node


def test_base_case_passes_every_check():
    seen: set[str] = set()
    plain = without_sources(base_case_dict())
    plain.pop("correlations")  # plain numbers have no distributions to correlate
    for which in range(3):
        check_scenario(plain, seed=11, extra_paths=100, delta=0.05, which=which,
                       note=seen.add)
    assert {"fallback used", "cap binds (fixed rate)", "profit share: every tier reached on some path"} <= seen


def test_fixed_scenario_passes_every_check():
    seen: set[str] = set()
    for which in range(2):  # monotonicity in each revenue share
        check_scenario(fixed_dict(), seed=5, extra_paths=50, delta=0.05, which=which, note=seen.add)
    assert {"fallback used", "cap binds (fixed rate)", "cap binds (rate_after_cap)", "compared with the reference",
            "profit share: every tier reached on some path", "monotonicity: payee PV rises on some path"} <= seen


def test_conservation_checker_flags_own_value_and_discounting(fixed):
    d, _, index, upv, _ = fixed
    n = index["n_original"]
    sink = upv[:, n:2 * n, -1]
    check_conservation(upv[:, :n, :-2], sink)  # passes without own value
    with_own, _ = run(d, 2_000, 5, undiscounted=True)  # own value is not a transfer
    with pytest.raises(AssertionError, match="do not net to zero"):
        check_conservation(with_own["pv"], sink)
    discounted, _ = run(analysis_dict(d)[0], 2_000, 5)  # the parties discount at different rates
    with pytest.raises(AssertionError, match="do not net to zero"):
        check_conservation(discounted["pv"][:, :n, :], sink)


def test_cap_checker_flags_a_cap_exceeded(fixed):
    _, _, index, upv, parties = fixed
    (plain, first), (after, first_after) = index["revenue_shares"]
    paid, uncapped, base = (upv[:, first + j, parties.index("payee")] for j in range(3))
    check_revenue_share(paid, uncapped, base, plain)
    assert np.mean(uncapped > plain["cap"]) > 0.3  # the cap binds on many paths: the check can fail
    with pytest.raises(AssertionError, match="exceeded"):
        check_revenue_share(uncapped, uncapped, base, plain)  # a kernel that ignored the cap
    with pytest.raises(AssertionError, match="min"):
        check_revenue_share(0.999 * paid, uncapped, base, plain)  # one that stopped short of it

    paid, uncapped, base = (upv[:, first_after + j, parties.index("third")] for j in range(3))
    check_revenue_share(paid, uncapped, base, after)
    assert np.mean(uncapped > after["cap"]) > 0.3 and paid.max() > after["cap"]
    with pytest.raises(AssertionError, match="rate_after_cap"):
        check_revenue_share(paid, uncapped, base, {**after, "rate_after_cap": 0.05})


def test_tier_checker_flags_tiers_out_of_order(fixed):
    d, a, index, upv, parties = fixed
    for (clause, first), payee in zip(index["profit_shares"], ("payee", "third"), strict=True):
        paid, profit = upv[:, first, parties.index(payee)], upv[:, first + 1, parties.index(payee)]
        check_profit_share(paid, profit, clause)
        ends, _ = tier_breaks(clause)
        assert np.mean(profit > ends[0]) > 0.3  # later tiers are reached: their order matters
        swapped = copy.deepcopy(clause)  # the same tiers with their rates swapped
        swapped["tiers"][0]["rate"], swapped["tiers"][1]["rate"] = clause["tiers"][1]["rate"], clause["tiers"][0][
            "rate"]
        b = copy.deepcopy(a)
        b["structures"] = [single("swapped", swapped)]
        wrong, _ = run(b, 2_000, 5, undiscounted=True)
        with pytest.raises(AssertionError, match="not filled in order"):
            check_profit_share(wrong["pv"][:, 0, parties.index(payee)], profit, clause)
    clause, first = index["profit_shares"][0]
    assert np.mean(upv[:, first, parties.index("payee")] >= 20.0 * (1 - 1e-12)) > 0.1  # the last cap binds
    with pytest.raises(AssertionError, match="beyond the last cap"):
        check_profit_share(upv[:, first + 1, parties.index("payee")], upv[:, first + 1, parties.index("payee")],
                           clause)


def test_monotonicity_checker_flags_a_lower_rate():
    d = fixed_dict()
    low, compiled = run(d, 500, 5)
    high = copy.deepcopy(d)
    high["structures"][0]["clauses"][0]["rate"] = 0.25
    raised, _ = run(high, 500, 5)
    payer, payee = compiled.parties.index("payer"), compiled.parties.index("payee")
    check_monotone(low["pv"], raised["pv"], payer, payee)
    assert (raised["pv"][:, 0, payee] > low["pv"][:, 0, payee]).mean() > 0.5
    with pytest.raises(AssertionError, match="payee PV fell"):
        check_monotone(raised["pv"], low["pv"], payer, payee)  # the rate lowered instead
    paid_back = raised["pv"].copy()
    paid_back[7, 1, payer] = low["pv"][7, 1, payer] + 1e-6  # the payer gains on one path
    with pytest.raises(AssertionError, match="payer PV rose"):
        check_monotone(low["pv"], paid_back, payer, payee)
    with pytest.raises(AssertionError, match="another party"):
        check_monotone(low["pv"], raised["pv"], payer, compiled.parties.index("third"))


def test_determinism_and_finiteness_checkers_can_fail():
    d = fixed_dict()
    one, _ = run(d, kernel.BLOCK + 10, 5)
    check_identical(one, run(d, kernel.BLOCK + 10, 5, threads=THREADS, chunk_size=1)[0], "chunks")
    with pytest.raises(AssertionError, match="pv differs"):
        check_identical(one, run(d, kernel.BLOCK + 10, 6)[0], "another seed")
    broken = {**one, "pv": one["pv"].copy()}
    broken["pv"][-1, 0, 0] = np.nextafter(broken["pv"][-1, 0, 0], np.inf)  # one ulp on the last path
    with pytest.raises(AssertionError, match="pv differs"):
        check_identical(one, broken, "one ulp")
    check_finite(one["pv"], "fixed")
    broken["pv"][3, 1, 2] = np.nan
    with pytest.raises(AssertionError, match="non-finite"):
        check_finite(broken["pv"], "nan")


def test_reference_checker_flags_a_changed_rate():
    d = fixed_dict()
    kernel, _ = run(d, REFERENCE_PATHS, 5)
    check_reference(kernel["pv"], reference_simulate(scenario_from_dict(d), REFERENCE_PATHS, 5).pvs)
    other = copy.deepcopy(d)
    other["structures"][0]["clauses"][1]["rate"] = 0.1 + 1e-6
    with pytest.raises(AssertionError, match="kernel vs reference"):
        check_reference(kernel["pv"], reference_simulate(scenario_from_dict(other), REFERENCE_PATHS, 5).pvs)
