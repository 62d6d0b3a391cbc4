"""Analysis on common random numbers: sensitivity (tornado and spider), attribution from one run, break-even,
negotiation (zone of agreement, Nash point), named variants compared; every answer with its
standard error."""

from valuation.analysis.attribution import Attribution, attribution
from valuation.analysis.break_even import BreakEven, break_even
from valuation.analysis.compare import Comparison, compare
from valuation.analysis.negotiate import Negotiation, negotiate
from valuation.analysis.sensitivity import Sensitivity, sensitivity

__all__ = ["Attribution", "BreakEven", "Comparison", "Negotiation", "Sensitivity", "attribution", "break_even",
           "compare", "negotiate", "sensitivity"]
