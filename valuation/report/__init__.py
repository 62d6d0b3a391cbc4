"""Reports: the Excel workbook (``workbook``, with its openpyxl helpers and atomic save in ``xlsx``) and the
console table (``console``).  They read a result; nothing here imports the command line."""

from valuation.report.console import format_summary
from valuation.report.workbook import SHEETS, check_fits, estimated_bytes, sheet_sizes, write_workbook
from valuation.report.xlsx import check_output_path

__all__ = ["SHEETS", "check_fits", "check_output_path", "estimated_bytes", "format_summary", "sheet_sizes",
           "write_workbook"]
