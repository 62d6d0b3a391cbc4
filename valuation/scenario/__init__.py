"""The scenario: its schema (what a file may say), the clause registry, loading and the Assumptions round trip.

``base`` (what all tables share: text, names, triggers, conditions, messages), ``timing`` (event-time
tables), ``clauses`` (the clause registry), ``schema`` (the world, structures and :class:`Scenario`, and
:func:`scenario_from_dict`, where every scenario is validated), ``load`` (files and workbooks in),
``assumptions`` (the scenario as rows of the Assumptions sheet and back), ``docs`` (the README's reference).
"""

from valuation.scenario.base import BUILTIN_EVENTS, Condition, EventOffset, FrozenDict
from valuation.scenario.clauses import (
    CLAUSE_TYPES,
    REGISTRY,
    EquityStake,
    OwnValue,
    Payment,
    ProfitShare,
    RatePoint,
    RevenueShare,
    Tier,
)
from valuation.scenario.load import load_scenario
from valuation.scenario.schema import (
    MAX_PATHS,
    Agi,
    Deadline,
    MarginPoint,
    Party,
    Revenue,
    Scenario,
    Simulation,
    Structure,
    scenario_from_dict,
)
from valuation.scenario.timing import (
    TIMING_FAMILIES,
    ExponentialTiming,
    FixedTiming,
    GompertzTiming,
    HazardPiece,
    LognormalTiming,
    PiecewiseTiming,
    QuantilePoint,
    QuantileTiming,
    WeibullTiming,
)

__all__ = [
    "BUILTIN_EVENTS", "CLAUSE_TYPES", "MAX_PATHS", "REGISTRY", "TIMING_FAMILIES", "Agi", "Condition", "Deadline",
    "EquityStake", "EventOffset", "ExponentialTiming", "FixedTiming", "FrozenDict", "GompertzTiming",
    "HazardPiece", "LognormalTiming", "MarginPoint", "OwnValue", "Party", "Payment", "PiecewiseTiming",
    "ProfitShare", "QuantilePoint", "QuantileTiming", "RatePoint", "Revenue", "RevenueShare", "Scenario",
    "Simulation", "Structure", "Tier", "WeibullTiming", "load_scenario", "scenario_from_dict",
]
