"""Analysis on common random numbers: sensitivity (tornado and spider), break-even,
negotiation (zone of agreement, Nash point); every answer with its
standard error."""

from valuation.analysis.break_even import BreakEven, break_even
from valuation.analysis.negotiate import Negotiation, negotiate
from valuation.analysis.sensitivity import Sensitivity, sensitivity

__all__ = ["BreakEven", "Negotiation", "Sensitivity", "break_even", "negotiate", "sensitivity"]
