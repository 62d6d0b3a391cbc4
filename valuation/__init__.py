"""Monte Carlo valuation of deal structures whose value hinges on uncertain events.

Quick start::

    import valuation as dv
    scenario = dv.load_scenario("inputs/base_case.toml")
    result = dv.simulate(scenario, paths=100_000, seed=7)
    result.summary()                                  # structure x party statistics
    result.pv("oct_2025_recap", "microsoft")          # per-path PVs, USD bn
    result.to_excel("reports/base_case.xlsx")
"""

from importlib.metadata import PackageNotFoundError, version

from valuation.api import simulate
from valuation.errors import InputError
from valuation.results import SimulationResult
from valuation.scenario import Scenario, load_scenario

try:
    __version__ = version("agi-deal-valuation")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["InputError", "Scenario", "SimulationResult", "__version__", "load_scenario", "simulate"]
