"""The console table of ``valuation run``: the catalogue's summary statistics, formatted for a terminal."""

from __future__ import annotations

import pandas as pd

from valuation.stats.catalogue import SUMMARY


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a console table (USD bn, percentages): every statistic of ``summary()``, by the catalogue."""
    show = summary[[s.key for s in SUMMARY]].copy()
    show.columns = [s.short for s in SUMMARY]
    formats = {s.short: s.text.format for s in SUMMARY}
    return show.to_string(formatters=formats, na_rep="-")  # NaN: the baseline is not compared with itself
