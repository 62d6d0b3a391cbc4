"""The kernel's tables, by name: what a compiled scenario hands the kernel.

Four records of arrays (typed named tuples, which numba passes and reads by field): the model of the world
(time grid, revenue, margins), the drivers (AGI timing, named events, deadlines, which structure applies),
the clauses (one row per clause, with the parameters of every kind of clause by name, from the clause
registry) and the triggers (the distinct start and end times clauses use).  Nothing is unpacked by position,
so swapping two arrays of the same type cannot compile into wrong answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from valuation.scenario.base import MAX_DEADLINE_EVENTS, MAX_TIERS, MAX_TRIGGER_TERMS
from valuation.scenario.clauses import CODES, PARAMS

# Clause codes (the kernel's switch), from the registry.
REVENUE_SHARE = CODES["revenue_share"]
PROFIT_SHARE = CODES["profit_share"]
EQUITY_STAKE = CODES["equity_stake"]
PAYMENT = CODES["payment"]
OWN_VALUE = CODES["own_value"]

# Time sources: per-path random times a trigger or deadline can refer to.
SRC_DECLARED, SRC_VERIFIED = 0, 1
FIRST_EVENT = 2
TERM_DATE, TERM_UNUSED = -1, -2
MAX_TERMS = max(MAX_TRIGGER_TERMS, MAX_DEADLINE_EVENTS)
# Condition kinds.
COND_NONE, COND_DEADLINE, COND_EVENT = 0, 1, 2
# Draws of the AGI sources on the driver stream (their names never change, so their numbers never move).
DRAW_DECLARATION, DRAW_LAG, DRAW_VERIFIED = 0, 1, 2
N_AGI_DRAWS = 3


class ModelTables(NamedTuple):
    """The world along the time grid (``K + 1`` step ends, entry 0 at the valuation date)."""

    t: np.ndarray  # step end times, years
    dt: np.ndarray  # step lengths (dt[0] = 0)
    sqrt_dt: np.ndarray
    growth_decay: np.ndarray  # exp(-kappa h)
    growth_mean: np.ndarray  # (1 - exp(-kappa h)) / kappa: the mean integral of (g - gbar) over a step, per unit
    int_z1: np.ndarray  # the integrated growth shock I = int_z1 z1 + int_z2 z2 ...
    int_z2: np.ndarray
    growth_z1: np.ndarray  # ... and the end-of-step growth shock G = growth_z1 z1 + growth_z2 z2 + growth_z3 z3
    growth_z2: np.ndarray
    growth_z3: np.ndarray
    jump_tail: np.ndarray  # (K+1, NJ): P(at least n jumps in the step), n = 1 .. NJ
    margin: np.ndarray  # operating margin averaged over each step
    revenue: np.ndarray  # revenue model scalars, models.revenue layout
    uplift_full: np.ndarray  # the AGI growth uplift over a step wholly after the declaration
    haircut_steps: np.ndarray  # (D, K+1): each deadline's growth haircut pro-rated over each step
    company_df: np.ndarray  # (K+2,) discount factors of the company's profit in each step, then of its exit value
    year_first: np.ndarray  # (K+1,) calendar year (index from the valuation date's) a step starts in
    year_cut: np.ndarray  # (K+1, 2) where a new calendar year starts inside a step (fraction of it; nan: none)


class DriverTables(NamedTuple):
    """Per-path random times and what they decide."""

    decl_code: int  # models.timing family code of the AGI declaration
    decl_par: np.ndarray
    lag_code: int  # ... of the verification lag
    lag_par: np.ndarray
    never_verified: float
    ev_code: np.ndarray  # (E,) named events, then deadline completions
    ev_par: np.ndarray  # (E, models.timing.N_PARAMS)
    ev_stream: np.ndarray  # (E,) counter words of each source, from its name (models.rng.named_counter)
    ev_draw: np.ndarray  # (E,)
    dl_date: np.ndarray  # (D,) years
    dl_src: np.ndarray  # (D, MAX_TERMS) source indices, TERM_UNUSED for none
    dl_haircut: np.ndarray  # (D,)
    dl_haircut_end: np.ndarray  # (D,) years: when each haircut stops (inf: at the horizon)
    req_deadlines: np.ndarray  # (Q,) the deadlines some structure requires
    st_eff: np.ndarray  # (2**Q, S): the structure that applies, by pattern of those deadlines met (bit q)
    st_used: np.ndarray  # (2**Q, S): 1 when structure s applies to some structure under that pattern


_COMMON_CLAUSE_FIELDS = [
    ("kind", np.ndarray),  # (C,) registry code
    ("one_off", np.ndarray),  # (C,) 1: booked once (on a date, at the horizon); 0: each step
    ("structure", np.ndarray),  # (C,) structure index
    ("payer", np.ndarray),  # (C,) party index, -1 for none (own value)
    ("payee", np.ndarray),
    ("df_payer", np.ndarray),  # (C,) row of `df` discounting the payer's leg
    ("df_payee", np.ndarray),
    ("cond_kind", np.ndarray),  # (C,) COND_NONE / COND_DEADLINE / COND_EVENT
    ("cond_index", np.ndarray),  # (C,) the deadline, or the time source
    ("cond_wanted", np.ndarray),  # (C,) 1: met / on time; 0: missed / late
    ("cond_date", np.ndarray),  # (C,) years: the event's deadline
    ("time_df", np.ndarray),  # (C, 2) discount factors of a one-off flow (payer, payee)
    ("df_market", np.ndarray),  # (C,) row of `df` discounting the clause in the market view (its risk class)
    ("time_df_market", np.ndarray),  # (C,) the market view's discount factor of a one-off flow
    ("in_market", np.ndarray),  # (C,) 1: a flow of the market view (a transfer); 0: an own-value stream
    ("df", np.ndarray),  # (R, K+1) discount factors per rate row
    ("slot", np.ndarray),  # (C,) time slot of a one-off flow, -1 per step
    ("trigger", np.ndarray),  # (C, 2) trigger of the start and the end
    ("order", np.ndarray),  # (C,) clauses taking structures in turn (each structure's in their own order)
]
# The kinds' own parameters, by name (valuation.scenario.clauses.PARAMS): scalars (C,), per step (C, K+1),
# per tier (C, MAX_TIERS).
ClauseTables = NamedTuple("ClauseTables", [*_COMMON_CLAUSE_FIELDS, *[(name, np.ndarray) for name in PARAMS]])


class TriggerTables(NamedTuple):
    """The distinct triggers (lists of terms, the earliest applies) of all clauses."""

    src: np.ndarray  # (U, MAX_TERMS) source index, TERM_DATE (a fixed time) or TERM_UNUSED
    val: np.ndarray  # (U, MAX_TERMS) the fixed time, or the delay after the source's time
    fixed: np.ndarray  # (U,) 1 when the trigger refers to dates only (the same on every path)


CLAUSE_MOMENTS = 8  # per clause and block: (sum, sum of squares) of its PV, per view (2) and leg (payer, payee)


def clause_moment(view: int, leg: int, square: int) -> int:
    """Offset, after the flow slots, of one clause PV sum: ``leg`` 0 the payer's, 1 the payee's."""
    return (view * 2 + leg) * 2 + square


def empty_params(n_clauses: int, n_times: int) -> dict[str, np.ndarray]:
    """The kinds' parameter arrays, filled with their defaults."""
    sizes = {"scalar": (), "steps": (n_times,), "tiers": (MAX_TIERS,)}
    return {p.name: np.full((n_clauses, *sizes[p.shape]), p.default) for p in PARAMS.values()}


@dataclass(frozen=True)
class Compiled:
    """A scenario compiled for the kernel: its tables, and the names and layout the results need."""

    structures: list[str]
    parties: list[str]
    deadlines: list[str]
    sources: list[str]  # names of the per-path random times
    model: ModelTables
    drivers: DriverTables
    clauses: ClauseTables
    triggers: TriggerTables
    views: list[str]  # "party", then "market" where the scenario has [market] rates
    years: list[int]  # calendar years of revenue_by_year (the valuation date's to the horizon's)
    class_payer: np.ndarray  # (C,) discount class of each leg (for expected cash flows)
    class_payee: np.ndarray
    class_rates: np.ndarray  # (n_class,) classes 0..P-1: each party's own rate; then clause rates
    slot_time: np.ndarray  # (K+1+J,) years: the step ends, then the one-off dates
    fits: dict[str, Any] = field(default_factory=dict)  # quantile fits by key path
    inputs: Any = None  # the kernel's tables of uncertain inputs (valuation.engine.uncertain.InputTables)
    plan: Any = None  # how the uncertain inputs are drawn (None: every input is its value)

    @property
    def t(self) -> np.ndarray:
        return self.model.t

    @property
    def n_steps(self) -> int:
        return len(self.model.t) - 1

    @property
    def flow_shape(self) -> tuple[int, int, int]:
        """Shape of a block's sums by pattern and clause: each slot's undiscounted flow
        (:func:`valuation.engine.run.expected_flows` spreads them over structures, parties and classes), then
        :data:`CLAUSE_MOMENTS` sums of each clause's PVs (:func:`clause_moment`)."""
        return (self.drivers.st_eff.shape[0], len(self.clauses.kind), len(self.slot_time) + CLAUSE_MOMENTS)

    def clause_legs(self, view: int) -> list[tuple[int, int, int, list[int]]]:
        """(structure, party, clause, legs) of every clause whose flows reach the party under the structure on
        some paths (its own, common or a fallback's clause; legs 0 payer, 1 payee), in the kernel's order: the
        rows of ``SimulationResult.by_clause`` for view ``view`` (the market view has transfers only)."""
        st_eff, cl = self.drivers.st_eff, self.clauses
        out = []
        for s in range(len(self.structures)):
            owners = set(st_eff[:, s].tolist())
            for p in range(len(self.parties)):
                for c in range(len(cl.kind)):
                    if int(cl.structure[c]) not in owners or (view == 1 and not cl.in_market[c]):
                        continue
                    legs = [leg for leg, who in ((0, cl.payer[c]), (1, cl.payee[c])) if who == p]
                    if legs:
                        out.append((s, p, c, legs))
        return out

    def flow_columns(self) -> list[tuple[int, int, int]]:
        """(structure, party, discount class) that can have flows, in that order: those of the clauses of each
        structure that applies under some pattern of deadlines met (known before any path runs)."""
        found = set()
        st_eff, cl = self.drivers.st_eff, self.clauses
        for pattern in range(st_eff.shape[0]):
            for s in range(len(self.structures)):
                for c in np.flatnonzero(cl.structure == st_eff[pattern, s]):
                    if cl.payer[c] >= 0:
                        found.add((s, int(cl.payer[c]), int(self.class_payer[c])))
                    found.add((s, int(cl.payee[c]), int(self.class_payee[c])))
        return sorted(found)
