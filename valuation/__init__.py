"""Monte Carlo valuation of deal structures whose value hinges on uncertain events.

Quick start::

    import valuation as dv
    scenario = dv.load_scenario("inputs/base_case.toml")
    result = dv.simulate(scenario, paths=100_000, seed=7)
    result.summary()                                  # structure x party statistics
    result.pv("oct_2025_recap", "microsoft")          # per-path PVs, USD bn
    result.to_excel("reports/base_case.xlsx")
    variant = scenario.with_values({"revenue.volatility": 0.3})   # a validated copy
    dv.merge([dv.simulate(scenario, paths=50_000, seed=7),        # ranges of one run, bit for bit
              dv.simulate(scenario, paths=50_000, seed=7, first_path=50_000)])
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("agi-deal-valuation")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

# Imported on first use (PEP 562): `valuation run` starts in a few milliseconds and has its Ctrl-C handling
# in place before numba, numpy and pandas load.
_LAZY = {"ArgumentTypeError": "valuation.arguments", "InputError": "valuation.errors",
         "PathsNotKept": "valuation.results", "Scenario": "valuation.scenario", "SimulationResult": "valuation.results",
         "load_scenario": "valuation.scenario", "merge": "valuation.api", "simulate": "valuation.api",
         "Sensitivity": "valuation.analysis", "sensitivity": "valuation.analysis", "BreakEven": "valuation.analysis",
         "break_even": "valuation.analysis", "Negotiation": "valuation.analysis", "negotiate": "valuation.analysis",
         "Attribution": "valuation.analysis", "attribution": "valuation.analysis", "Comparison": "valuation.analysis",
         "compare": "valuation.analysis"}

if TYPE_CHECKING:
    from valuation.analysis import (
        Attribution,
        BreakEven,
        Comparison,
        Negotiation,
        Sensitivity,
        attribution,
        break_even,
        compare,
        negotiate,
        sensitivity,
    )
    from valuation.api import merge, simulate
    from valuation.arguments import ArgumentTypeError
    from valuation.errors import InputError
    from valuation.results import PathsNotKept, SimulationResult
    from valuation.scenario import Scenario, load_scenario


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'valuation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["ArgumentTypeError", "Attribution", "BreakEven", "Comparison", "InputError", "Negotiation", "PathsNotKept",
           "Scenario", "Sensitivity", "SimulationResult", "__version__", "attribution", "break_even", "compare",
           "load_scenario", "merge", "negotiate", "sensitivity", "simulate"]
