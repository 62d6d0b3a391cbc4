"""Analysis on common random numbers: sensitivity (tornado and spider), break-even; every answer with its
standard error."""

from valuation.analysis.break_even import BreakEven, break_even
from valuation.analysis.sensitivity import Sensitivity, sensitivity

__all__ = ["BreakEven", "Sensitivity", "break_even", "sensitivity"]
