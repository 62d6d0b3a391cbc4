"""The Excel workbook a finance team opens: eight sheets, native charts, a live PV and editable assumptions.

Sheets: Read me, Summary, Distributions, Versus baseline, Cash flows, Drivers, Assumptions, Paths.
Written with openpyxl, atomically (a temporary file in the target folder, then a rename), so a failure
never leaves a partial workbook and never touches an earlier one.  Text from inputs is always written
as text, never as a formula.  Nothing per path is written beyond the Paths sample, so a 10-million-path
result makes a workbook of the same size as a 10-thousand-path one.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from datetime import date as Date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.chart import Reference
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.pagebreak import Break

from valuation.errors import InputError, Problem, printable
from valuation.report.xlsx import (
    BN,
    BN3,
    DATE,
    HEADER_FILL,
    HEADER_FONT,
    INPUT_FILL,
    LABEL_FONT,
    NOTE_FONT,
    PCT,
    TOP,
    TOP_LEFT,
    WRAP,
    WRAP_LEFT,
    YEARS,
    absolute,
    atomic_save,
    bar_chart,
    check_output_path,
    error_bars,
    formula,
    header,
    line_chart,
    lines,
    print_setup,
    put,
    ref,
    row_height,
    scatter_chart,
    scatter_series,
    straight,
    table,
    title,
    widths,
)
from valuation.scenario.assumptions import COLUMNS, assumption_rows
from valuation.scenario.ranges import DISTS, correlation_matrix
from valuation.stats.catalogue import CONFIDENCE, DIFFERENCE_STATISTICS, HEAD, SUMMARY, Z95, confidence

if TYPE_CHECKING:  # the workbook reads a result; it does not import the results module
    from valuation.results import SimulationResult

__all__ = ["SHEETS", "check_fits", "estimated_bytes", "sheet_sizes", "write_workbook"]

SHEETS = ("Read me", "Summary", "Market view", "Value by clause", "Distributions", "Versus baseline", "Cash flows",
          "Drivers", "Uncertain inputs", "Assumptions", "Paths")

# The Summary sheet's columns: the catalogue's summary statistics, the mean's 95% interval after its SE.
SUMMARY_SHEET = (*SUMMARY[:2], *CONFIDENCE, *SUMMARY[2:])


def write_workbook(result: SimulationResult, path: str | Path) -> Path:
    """Write the workbook for ``result`` to ``path`` (atomically); returns the path."""
    check_fits(result.compiled, result.scenario, result.paths, str(path))
    path = check_output_path(path, estimated_bytes(result.compiled, result.scenario, result.paths))
    wb = Workbook()
    sheets = {name: (wb.active if i == 0 else wb.create_sheet(name)) for i, name in enumerate(SHEETS)}
    sheets["Read me"].title = "Read me"
    names = _Names(result)
    _read_me(sheets["Read me"], result)
    _summary(sheets["Summary"], result, names)
    _market_view(sheets["Market view"], result, names)
    _by_clause(sheets["Value by clause"], result, names)
    _distributions(sheets["Distributions"], result, names)
    _versus_baseline(sheets["Versus baseline"], result, names)
    _cash_flows(sheets["Cash flows"], result, names)
    _drivers(sheets["Drivers"], result)
    _uncertain(sheets["Uncertain inputs"], result)
    _assumptions(sheets["Assumptions"], result)
    _paths(sheets["Paths"], result)
    return atomic_save(wb, path)


EXCEL_ROWS, EXCEL_COLUMNS, EXCEL_SERIES = 1_048_576, 16_384, 255  # a sheet's rows and columns; a chart's series


def sheet_sizes(compiled, scenario, paths: int) -> dict[str, tuple[int, int]]:
    """Rows and columns each sheet will use, from the shape of the run alone (before any path runs).

    ``compiled``: the scenario's kernel tables.  Kept in step with the writers below by a test that writes
    workbooks of many shapes and compares.
    """
    S, P, D, K = len(compiled.structures), len(compiled.parties), len(compiled.deadlines), compiled.n_steps
    years = scenario.simulation.horizon.year - scenario.simulation.valuation_date.year + 1
    F = len(compiled.fits)
    read_me = 35 + (2 if scenario.description else 0) + (2 + F if F else 0)
    versus = 8 + (S - 1) * (P + 2) if S > 1 else 5
    cash_top = 8 + len(compiled.class_rates) + 2 * S * P + 9 + 21 * ((S + 1) // 2)
    drivers = max(4 + years, 24) + 15 + D + K + 4 + years
    summary = (S * P + 2 * S + 10 + len(SUMMARY_SHEET) + len(later_terms(scenario)),
               max(2 + len(SUMMARY_SHEET), P + 1))
    marks = len(scenario.market.marks) if scenario.market is not None else 0
    views = len(compiled.views)
    clause_rows = sum(2 + len(compiled.clause_legs(v)) for v in range(views)) + views - 1
    return {
        "Read me": (read_me + 2, 4),
        "Summary": summary,
        "Market view": (summary[0] + 30 + marks, max(summary[1], 7)) if scenario.market is not None else (2, 1),
        "Value by clause": (3 + clause_rows, 8),
        "Distributions": (103 * P + 1, 5 + 2 * S),
        "Versus baseline": (versus, max(11, P + 1)),
        "Cash flows": (cash_top + 6 + len(compiled.slot_time), max(3 + years, 2 + len(compiled.flow_columns()))),
        "Drivers": (drivers, 7),
        "Uncertain inputs": uncertain_size(scenario),
        "Assumptions": (len(assumption_rows(scenario)) + 1, len(COLUMNS)),
        "Paths": (min(HEAD, paths) + 3, 2 + len(compiled.sources) + D + S * P),
    }


def check_fits(compiled, scenario, paths: int, where: str) -> None:
    """Refuse, before any path runs, a workbook that would pass a limit of Excel's (rows, columns, series)."""
    S, P = len(compiled.structures), len(compiled.parties)
    problems = []
    for sheet, (rows, cols) in sheet_sizes(compiled, scenario, paths).items():
        for need, limit, what in ((rows, EXCEL_ROWS, "rows"), (cols, EXCEL_COLUMNS, "columns")):
            if need > limit:
                problems.append(Problem(f"sheet {sheet}", f"at most {limit:,} {what}, Excel's limit; this run "
                                        f"needs {need:,} ({_HINTS[sheet]}, now {S} structures, {P} parties, "
                                        f"{compiled.n_steps:,} steps)", has_value=False))
    for count, what in ((P, "parties"), (S, "structures")):
        if count > EXCEL_SERIES:
            problems.append(Problem("charts", f"at most {EXCEL_SERIES} {what}, one series each in a chart "
                                    f"(Excel's limit); this scenario has {count:,}", has_value=False))
    if problems:
        raise InputError(where, problems)


BYTES_PER_CELL = 10  # a numeric cell, zipped, in the workbooks this writer makes (measured: 7 to 9)
FIXED_BYTES = 128 * 1024  # styles, charts, the parts every workbook has


def estimated_bytes(compiled, scenario, paths: int) -> int:
    """A generous estimate of the workbook's size (the room checked on disk before any path runs): its cells,
    and its text at full length (sources and labels are the only text that can be long)."""
    sizes = sheet_sizes(compiled, scenario, paths)
    cells = sum(rows * cols for rows, cols in sizes.values()) - sizes["Distributions"][0] * sizes["Distributions"][1]
    cells += len(compiled.parties) * 140 * (len(compiled.structures) + 3)  # Distributions is sparse
    text = sum(len(str(r[k]).encode()) for r in assumption_rows(scenario) for k in ("value", "source",
                                                                                     "table_source"))
    labels = sum(len((x.label or x.name).encode()) for x in [*scenario.structures, *scenario.parties.values()]
                 if hasattr(x, "name")) + sum(len((p.label or "").encode()) for p in scenario.parties.values())
    return FIXED_BYTES + BYTES_PER_CELL * cells + 2 * text + 50 * labels + len((scenario.description or "").encode())


_HINTS = {"Read me": "fewer fitted distributions", "Summary": "fewer structures x parties",
          "Market view": "fewer structures x parties", "Value by clause": "fewer structures or clauses",
          "Distributions": "fewer parties or structures", "Versus baseline": "fewer structures x parties",
          "Cash flows": "fewer steps (steps_per_year, horizon), structures x parties or discount rates",
          "Drivers": "fewer steps or deadlines", "Assumptions": "fewer inputs",
          "Uncertain inputs": "fewer ranges or correlations",
          "Paths": "fewer structures x parties, events or deadlines"}


class _Names:
    """Display labels of structures and parties."""

    def __init__(self, result: SimulationResult):
        s = result.scenario
        self.structure = [next(x.label or x.name for x in s.structures if x.name == n) for n in result.structures]
        self.party = [s.parties[p].label or p for p in result.parties]


# ------------------------------------------------------------------ read me


def run_metadata(result: SimulationResult) -> list[tuple[str, Any]]:
    s = result.scenario
    from valuation import __version__

    digest = s.digest or ""  # of the bytes that were loaded (the file may have changed since)
    if digest and s.changed_since_loaded:
        digest += " (the file as loaded; the scenario run was changed in Python after loading)"
    return [
        ("Scenario", s.name),
        ("Scenario file", printable(s.path or "")),  # a file name is not checked text: escape what a cell refuses
        ("Scenario file SHA-256", digest),
        ("Valuation date", s.simulation.valuation_date),
        ("Horizon", s.simulation.horizon),
        ("Steps per year", s.simulation.steps_per_year),
        ("Paths", result.paths),
        ("First path", _number(result.first_path)),
        ("Re-run from the Assumptions sheet", _rerun(result)),
        ("Seed", _seed(result)),
        ("SeedSequence entropy", str(result.entropy)),
        ("Random generator", f"{result.sampler.name}: {result.sampler.description}; each event and deadline "
                             "completion on its own counter, from its name"),
        ("Baseline structure", result.baseline or result.structures[0]),
        ("Uncertain inputs", _uncertain_note(result)),
        ("Package version", __version__),
        ("Simulation time (s)", round(result.run_seconds, 3)),
        ("Threads", result.threads),
        ("Paths kept", "all" if result.kept_paths else f"first {min(HEAD, result.paths):,} (streaming run)"),
        ("Percentiles, VaR, CVaR", result.quantile_error),
        ("Written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Python / platform", f"{platform.python_version()} / {platform.platform(terse=True)}"),
    ]


def _uncertain_note(result: SimulationResult) -> str:
    n = len(result.scenario.ranges_with_dist())
    if result.uncertain:
        return f"{n} inputs drawn once per path (see the Uncertain inputs sheet)"
    return f"off: every input at its value ({n} have a distribution: `valuation run --uncertain`)" if n else \
        "none: no input has a distribution"


def _number(n: int) -> int | str:
    """A whole number as a cell holds it: beyond a spreadsheet number's 53 bits, as text with every digit."""
    return n if abs(n) < 2**53 else str(n)


def _rerun(result: SimulationResult) -> str:
    """Whether running this workbook again (``valuation run <workbook>``) gives these numbers."""
    if result.first_path or result.seed is None:
        why = "paths from a first path other than 0" if result.first_path else "a SeedSequence as the seed"
        return (f"runs the scenario again from path 0 with the file's seed: this run used {why}, which the "
                "Assumptions sheet does not hold")
    return "gives these numbers again, bit for bit (the sheet holds the paths and the seed)"


def _seed(result: SimulationResult) -> Any:
    if result.seed is None:
        ss = result.seed_sequence
        return f"SeedSequence(entropy={ss.entropy}, spawn_key={tuple(ss.spawn_key)})"
    return result.seed if result.seed < 2**53 else str(result.seed)  # Excel numbers hold 53 bits


_TOUR = [
    ("Summary", "Each party's present value under each structure: mean with its Monte Carlo standard error "
                "and 95% confidence interval, spread (SD, percentiles) and risk (VaR and CVaR at 5%, the chance "
                "of a loss). The chart shows the means with 95% error bars."),
    ("Market view", "The same table in the market view: every transfer discounted at the rate of its risk class, "
                    "the same for payer and payee, so transfers net to zero and own-value streams are left out "
                    "(fair value). Below it, the model's value of 100% of the company against the market marks."),
    ("Value by clause", "Each party's mean PV under each structure split by clause (own, common, and the "
                        "fallback's where it applies), with standard errors, in both views."),
    ("Distributions", "For each party, how PVs are distributed under each structure: histogram frequencies on "
                      "shared bins, and the cumulative distribution (S-curve) from the 1st to 99th percentile."),
    ("Versus baseline", "Path by path, how much better or worse each structure is than the baseline for each "
                        "party, on the same random numbers: mean difference, its standard error, the chance of "
                        "being better."),
    ("Cash flows", "Expected cash flows by calendar year, and a live PV: change the yellow discount rates and "
                   "the PVs re-discount in the workbook. At the scenario's rates they equal the simulated means."),
    ("Drivers", "What drove the results: AGI declaration and verification timing against the model, the "
                "verification lag, how often each deadline was met, a fan of revenue paths and the revenue "
                "earned in each calendar year."),
    ("Uncertain inputs", "The inputs with a range (low, high) and those with a distribution, drawn once per path "
                         "in a run with uncertain inputs: what low and high mean, the draws' mean, SD and "
                         "percentiles; the rank correlations asked for, used and achieved on the paths."),
    ("Assumptions", "Every input with its unit, whether it was given or left at its default, its source and "
                    "its range (Low, High, Distribution). Edit a value here and run `valuation run <this "
                    "workbook>` to get a new report."),
    ("Paths", "The first 1,000 simulated paths: drivers and every PV, for your own checks."),
]


def _read_me(ws, result: SimulationResult) -> None:
    ws.sheet_view.showGridLines = False
    title(ws, f"Deal valuation: {result.scenario.name}",
          "Monte Carlo valuation of deal structures; every figure in USD bn (present value at the valuation "
          "date unless stated).")
    row = 4
    if result.scenario.description:
        put(ws, row, 1, result.scenario.description).alignment = WRAP
        ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=4)
        row_height(ws, row, lines(result.scenario.description, 150))
        row += 2
    put(ws, row, 1, "Sheets", font=LABEL_FONT)
    for name, text in _TOUR:
        row += 1
        put(ws, row, 1, name).alignment = TOP
        put(ws, row, 2, text).alignment = WRAP
        ws.merge_cells(start_row=row, start_column=2, end_row=row, end_column=4)
        row_height(ws, row, lines(text, 130))
    row += 2
    put(ws, row, 1, "Run", font=LABEL_FONT)
    for label, value in run_metadata(result):
        row += 1
        put(ws, row, 1, label)
        put(ws, row, 2, value, fmt=DATE if isinstance(value, Date) else None).alignment = TOP_LEFT
    if result.fits:
        row += 2
        put(ws, row, 1, "Fitted distributions", font=LABEL_FONT)
        for key, fit in result.fits.items():
            row += 1
            put(ws, row, 1, key)
            put(ws, row, 2, f"{fit.distribution}; fitted to {len(fit.probs)} points, largest miss "
                            f"{fit.residual:.3g} in probability")
    widths(ws, {1: 26, 2: 70, 3: 30, 4: 30})
    print_setup(ws, landscape=False)


# ------------------------------------------------------------------ summary


VIEW_TEXT = {"party": "Party view: each party's own discount rates and own-value streams (what each side believes)",
             "market": "Market view: each transfer at the rate of its risk class, the same for payer and payee "
                       "(fair value; own-value streams left out)"}


def later_terms(scenario) -> list[str]:
    """Notes on the structures agreed after the valuation date (valued as if known then)."""
    t0 = scenario.simulation.valuation_date
    return [f"{st.label or st.name}: agreed {st.agreed}, after the valuation date; valued as if known then"
            for st in scenario.structures if st.agreed is not None and st.agreed > t0]


def _summary(ws, result: SimulationResult, names: _Names, view: str = "party") -> int:
    """The statistics of one view, its notes and its chart; returns the last row used."""
    ws.sheet_view.showGridLines = False
    summary = result.summary(view=view)
    title(ws, f"Payoff distributions by structure and party -- {view} view",
          f"{VIEW_TEXT[view]}. PV in USD bn at {result.scenario.simulation.valuation_date}; {result.paths:,} "
          f"paths, seed {_seed(result)}; standard errors are those of the Monte Carlo mean (see Read me for the run)."
          + ("" if result.kept_paths else f" Streaming run: percentiles, VaR and CVaR {result.quantile_error}."))
    for key, values in confidence(summary).items():  # the catalogue's 95% interval of each mean
        summary[key] = values
    cols = SUMMARY_SHEET
    top = 4
    row = _statistics_table(ws, top, summary, cols, result, names)
    table(ws, "SummaryTable" if view == "party" else "MarketTable", top, row, 2 + len(cols))
    ws.freeze_panes = ws.cell(row=top + 1, column=3)
    row += 2
    put(ws, row, 1, "Columns", font=LABEL_FONT)
    for c in cols:
        row += 1
        put(ws, row, 1, c.short)
        put(ws, row, 2, c.description)
    for note in later_terms(result.scenario):
        row += 1
        put(ws, row, 1, "Note")
        put(ws, row, 2, note)
    row += 2
    means = summary["mean"].unstack()[result.parties].loc[result.structures].to_numpy()
    half = (Z95 * summary["se"]).unstack()[result.parties].loc[result.structures].to_numpy()
    _means_chart(ws, row, names, names.structure, means, half, "Mean PV",
                 f"Mean PV by structure and party, {view} view (95% confidence bars)", "PV, USD bn")
    widths(ws, {1: 46, 2: 26, **{3 + j: 12 for j in range(len(cols))}})
    ws.row_dimensions[top].height = 32
    print_setup(ws, one_page=True)
    return row + 2 * len(result.structures) + 4


def _market_view(ws, result: SimulationResult, names: _Names) -> None:
    """The market view's statistics, and the company's value against the marks."""
    if "market" not in result.views:
        ws.sheet_view.showGridLines = False
        title(ws, "Market view", "The scenario has no [market] table (a discount rate per risk class), so it has "
                                 "no market view and no company value.")
        return
    _summary(ws, result, names, "market")
    company = result.company_value()
    row = ws.max_row + 28  # below the means chart (12 cm: some 24 rows)
    model = company.loc["model"]
    put(ws, row, 1, f"Company value: 100% of the equity at the valuation date, at {company.attrs['rate']:.1%} "
                    f"({company.attrs['discount_class']})", font=LABEL_FONT)
    top = row + 1
    header(ws, top, ["Value", "Date", "USD bn", "SE", "95% CI low", "95% CI high", "Model / mark"])
    row = top + 1
    put(ws, row, 1, "Model (operating profit each step, exit value at the horizon)")
    put(ws, row, 2, model["date"], fmt=DATE)
    for j, key in enumerate(("value", "se", "ci_low", "ci_high")):
        put(ws, row, 3 + j, float(model[key]), fmt=BN)
    for _, mark in company.drop(index="model").iterrows():
        row += 1
        put(ws, row, 1, f"Mark: {mark['label']}")
        put(ws, row, 2, mark["date"], fmt=DATE)
        put(ws, row, 3, float(mark["value"]), fmt=BN)
        put(ws, row, 7, float(mark["model_to_mark"]), fmt='0.00"x"')
    table(ws, "CompanyValue", top, row, 7)


def _by_clause(ws, result: SimulationResult, names: _Names) -> None:
    """Each structure x party's mean PV by clause, both views."""
    ws.sheet_view.showGridLines = False
    title(ws, "Value by clause", "Mean PV (USD bn) of each clause for each party under each structure, with its "
                                 "standard error; the clauses of a structure x party sum to its mean PV. 'Via': the "
                                 "structure a clause belongs to (its fallback on the paths where it falls back).")
    row = 3
    for view in result.views:
        frame = result.by_clause(view=view).reset_index()
        frame["s"] = frame["structure"].map(result.structures.index)  # the scenario's order, not by name
        frame["p"] = frame["party"].map(result.parties.index)
        frame = frame.sort_values(["s", "p", "order"], kind="stable")
        row += 1
        put(ws, row, 1, VIEW_TEXT[view], font=LABEL_FONT)
        top = row + 1
        header(ws, top, ["Structure", "Party", "Clause", "Via", "Common", "Mean (USD bn)", "SE", "Share"])
        row = top
        for _, r in frame.iterrows():
            row += 1
            put(ws, row, 1, names.structure[result.structures.index(r["structure"])])
            put(ws, row, 2, names.party[result.parties.index(r["party"])])
            put(ws, row, 3, r["clause"])
            put(ws, row, 4, names.structure[result.structures.index(r["via"])])
            put(ws, row, 5, "yes" if r["common"] else "")
            put(ws, row, 6, float(r["mean"]), fmt=BN)
            put(ws, row, 7, float(r["se"]), fmt=BN3)
            put(ws, row, 8, float(r["share"]), fmt=PCT, nan="-")
        if row > top:
            table(ws, f"Clauses{view.title()}", top, row, 8)
        row += 1
    widths(ws, {1: 52, 2: 24, 3: 50, 4: 52, 5: 9, 6: 14, 7: 10, 8: 9})
    ws.freeze_panes = "A3"
    print_setup(ws, landscape=True)


def _statistics_table(ws, top: int, frame: pd.DataFrame, cols: tuple, result: SimulationResult, names: _Names
                      ) -> int:
    """A header at ``top`` and one row per (structure, party) of ``frame``, the catalogue's ``cols`` with their
    labels and formats ("-" where a statistic does not apply); returns the last row."""
    header(ws, top, ["Structure", "Party", *[c.short for c in cols]])
    row = top
    for (structure, party), values in frame.iterrows():
        row += 1
        put(ws, row, 1, names.structure[result.structures.index(structure)])
        put(ws, row, 2, names.party[result.parties.index(party)])
        for j, c in enumerate(cols):
            put(ws, row, 3 + j, float(values[c.key]), fmt=c.excel, nan="-")
    return row


def _means_chart(ws, top: int, names: _Names, row_names: list[str], means: np.ndarray, half: np.ndarray,
                 label: str, chart_title: str, y_title: str) -> None:
    """Two blocks (means; 95% half-widths) by structure x party, and a clustered bar chart with error bars."""
    P, n = len(names.party), len(row_names)
    half_top = top + n + 2  # the half-widths sit under the means, in the same columns
    for block_top, block, values in ((top, f"{label} (USD bn)", means), (half_top, "95% CI half-width (USD bn)",
                                                                          half)):
        header(ws, block_top, [block, *names.party], height=45)
        for i, name in enumerate(row_names):
            put(ws, block_top + 1 + i, 1, name)
            for j in range(P):
                put(ws, block_top + 1 + i, 2 + j, float(values[i, j]), fmt=BN)
    chart = bar_chart(title_text=chart_title, x_title="Structure", y_title=y_title, width=28, height=12)
    for j in range(P):
        chart.add_data(ref(ws, 2 + j, top, top + n), titles_from_data=True)
        chart.series[-1].errBars = error_bars(absolute(ws, 2 + j, half_top + 1, half_top + n))
    chart.set_categories(ref(ws, 1, top + 1, top + n))
    ws.add_chart(chart, f"A{half_top + n + 3}")


# ------------------------------------------------------------ distributions


def _distributions(ws, result: SimulationResult, names: _Names) -> None:
    ws.sheet_view.showGridLines = False
    title(ws, "Distributions of PV by party",
          "Histogram: share of paths in each bin (bins shared by all structures of a party; paths beyond the "
          "range are counted in the end bins). S-curve: the PV at each percentile.")
    S = len(result.structures)
    row = 4
    for p, party in enumerate(names.party):
        tables = result.party_tables(p)
        edges, freq, pct = tables.edges, tables.freq, tables.percentiles
        if p:
            ws.row_breaks.append(Break(id=row - 1))  # each party starts a page: no chart cut in two
        put(ws, row, 1, party, font=LABEL_FONT)
        top = row + 1
        header(ws, top, ["Bin from", "Bin to", "Bin middle", *names.structure], height=60)
        for b in range(len(freq)):
            r = top + 1 + b
            put(ws, r, 1, edges[b], fmt=BN)
            put(ws, r, 2, edges[b + 1], fmt=BN)
            put(ws, r, 3, 0.5 * (edges[b] + edges[b + 1]), fmt=BN)
            for s in range(S):
                put(ws, r, 4 + s, freq[b, s], fmt=PCT)
        pcol = 5 + S
        header(ws, top, ["Percentile", *names.structure], col=pcol)
        for q in range(99):
            r = top + 1 + q
            put(ws, r, pcol, (q + 1) / 100, fmt='0%')
            for s in range(S):
                put(ws, r, pcol + 1 + s, pct[q, s], fmt=BN)
        table(ws, f"Histogram{p + 1}", top, top + len(freq), 3 + S)
        table(ws, f"Percentiles{p + 1}", top, top + 99, 1 + S, first_col=pcol)
        hist = line_chart(title_text=f"{party}: distribution of PV", x_title="PV, USD bn (bin middle)",
                          y_title="Share of paths", width=22, height=11)
        hist.add_data(ref(ws, 4, top, top + len(freq), 3 + S), titles_from_data=True)
        straight(hist)
        hist.x_axis.tickLblSkip = 4
        hist.set_categories(ref(ws, 3, top + 1, top + len(freq)))
        hist.x_axis.number_format = '#,##0'
        hist.y_axis.number_format = '0%'
        anchor_col = get_column_letter(pcol + S + 2)
        ws.add_chart(hist, f"{anchor_col}{top}")
        curve = scatter_chart(title_text=f"{party}: S-curve (cumulative distribution)", x_title="PV, USD bn",
                              y_title="Probability PV is at most x", width=22, height=11)
        for s in range(S):
            curve.series.append(scatter_series(ref(ws, pcol + 1 + s, top + 1, top + 99),
                                               ref(ws, pcol, top + 1, top + 99), names.structure[s]))
        curve.y_axis.number_format = '0%'
        curve.y_axis.scaling.min = 0
        curve.y_axis.scaling.max = 1
        ws.add_chart(curve, f"{anchor_col}{top + 24}")
        row = top + 102
    widths(ws, {**{j: 16 for j in range(1, 6 + 2 * S)}, 4 + S: 3})
    ws.freeze_panes = "A4"
    print_setup(ws)


# ---------------------------------------------------------- versus baseline


def _versus_baseline(ws, result: SimulationResult, names: _Names) -> None:
    ws.sheet_view.showGridLines = False
    base = result.baseline or result.structures[0]
    title(ws, f"Each structure against the baseline: {names.structure[result.structures.index(base)]}",
          "Difference = PV under the structure - PV under the baseline, path by path on the same random numbers "
          "(USD bn). P(better) and P(worse) count paths; the rest are ties.")
    table_df = result.versus()
    cols = DIFFERENCE_STATISTICS
    top = 4
    row = _statistics_table(ws, top, table_df, cols, result, names)
    if row > top:
        table(ws, "VersusBaseline", top, row, 2 + len(cols))
        others = [s for s in result.structures if s != base]
        mean = table_df["mean"].unstack()[result.parties].loc[others].to_numpy()
        half = (Z95 * table_df["se"]).unstack()[result.parties].loc[others].to_numpy()
        labels = [names.structure[result.structures.index(s)] for s in others]
        _means_chart(ws, row + 2, names, labels, mean, half, "Mean difference",
                     "Mean gain over the baseline (95% confidence bars)", "PV difference, USD bn")
    else:
        put(ws, top + 1, 1, "Only one structure: nothing to compare.")
    ws.freeze_panes = ws.cell(row=top + 1, column=3)
    widths(ws, {1: 46, 2: 26, **{3 + j: 13 for j in range(len(cols))}})
    ws.row_dimensions[top].height = 32
    print_setup(ws, one_page=True)


# --------------------------------------------------------------- cash flows


def _class_labels(result: SimulationResult, names: _Names) -> list[str]:
    P = len(result.parties)
    return [f"{names.party[c]}: own rate" if c < P else f"Clauses with their own rate ({result.class_rates[c]:.2%})"
            for c in range(len(result.class_rates))]


def _cash_flows(ws, result: SimulationResult, names: _Names) -> None:
    """Editable rates, live PVs, the annual table and its charts; underneath, the flows the live PV discounts."""
    ws.sheet_view.showGridLines = False
    title(ws, "Expected cash flows and a live PV",
          "Expected (mean over paths) undiscounted flows in USD bn; positive = received. They include payments "
          "on their dates and equity stakes valued at the horizon (fraction x exit multiple x revenue).")
    S, P = len(result.structures), len(result.parties)
    classes = _class_labels(result, names)
    flows = result.cash_flows
    # --- editable rates
    row = 4
    put(ws, row, 1, "Discount rates: edit the yellow cells and the live PVs follow", font=LABEL_FONT)
    header(ws, row + 1, ["Discount class", "Annual rate", "Scenario's rate"])
    rate_cell = {}
    for c, label in enumerate(classes):
        r = row + 2 + c
        put(ws, r, 1, label)
        put(ws, r, 2, float(result.class_rates[c]), fmt='0.00%').fill = INPUT_FILL
        put(ws, r, 3, float(result.class_rates[c]), fmt='0.00%')
        rate_cell[c] = f"$B${r}"
    # --- annual table (position fixed first: the live PV block refers to rows below it)
    annual = result.annual_cash_flows()
    live_top = row + 4 + len(classes)
    annual_top = live_top + S * P + 4
    charts_top = annual_top + S * P + 3
    detail_top = charts_top + 21 * ((S + 1) // 2) + 2
    detail = result.compiled.flow_columns()  # (structure, party, class) that can have flows: a column each
    dates_row = detail_top + 2  # the detail block: a header of four rows, then one row per time slot
    pv_row = dates_row + 3
    first_col = 3
    detail_col = {key: first_col + j for j, key in enumerate(detail)}

    # --- live PV per structure and party
    put(ws, live_top - 1, 1, "Live PV (USD bn): the expected flows at the foot of this sheet, discounted at the "
                             "rates above", font=LABEL_FONT)
    header(ws, live_top, ["Structure", "Party", "Live PV", "Simulated mean PV", "Difference"], height=30)
    means = result.means()
    row = live_top
    for s in range(S):
        for p in range(P):
            row += 1
            put(ws, row, 1, names.structure[s])
            put(ws, row, 2, names.party[p])
            cols = [detail_col[(s, p, c)] for c in range(len(classes)) if (s, p, c) in detail_col]
            cells = f"SUM({get_column_letter(cols[0])}{pv_row}:{get_column_letter(cols[-1])}{pv_row})" if cols \
                else "0"  # one party's classes are side by side: a range, however many there are
            formula(ws, row, 3, f"={cells}", fmt=BN)
            put(ws, row, 4, float(means[s, p]), fmt=BN)
            formula(ws, row, 5, f"=C{row}-D{row}", fmt="0.000000;-0.000000;0")
    table(ws, "LivePV", live_top, row, 5)
    put(ws, row + 1, 1, "At the scenario's rates the live PV equals the simulated mean PV (to rounding).",
        font=NOTE_FONT)

    # --- annual table and one chart per structure
    put(ws, annual_top - 1, 1, "Expected cash flow by calendar year (USD bn, undiscounted); the last column holds "
                               "values booked at the horizon (equity stakes), left out of the charts",
        font=LABEL_FONT)
    header(ws, annual_top, ["Structure", "Party", *[str(y) for y in annual.columns]], height=30)
    row = annual_top
    for (structure, party), values in annual.iterrows():
        row += 1
        put(ws, row, 1, names.structure[result.structures.index(structure)])
        put(ws, row, 2, names.party[result.parties.index(party)])
        for j, v in enumerate(values.to_numpy()):
            put(ws, row, 3 + j, float(v), fmt=BN)
    table(ws, "AnnualCashFlows", annual_top, row, 2 + len(annual.columns))
    n_years = len(annual.columns) - 1  # the charts leave out the horizon values
    for s in range(S):
        chart = line_chart(title_text=f"{names.structure[s]}: expected cash flow by year", x_title="Year",
                           y_title="USD bn per year", width=19, height=10)
        first = annual_top + 1 + s * P
        chart.add_data(Reference(ws, min_col=2, max_col=2 + n_years, min_row=first, max_row=first + P - 1),
                       from_rows=True, titles_from_data=True)
        straight(chart)
        chart.x_axis.tickLblSkip = 2
        chart.set_categories(Reference(ws, min_col=3, max_col=2 + n_years, min_row=annual_top,
                                       max_row=annual_top))
        ws.add_chart(chart, f"{'A' if s % 2 == 0 else 'C'}{charts_top + (s // 2) * 21}")

    # --- the flows the live PV discounts: one column per structure, party and discount class, one row per time
    # (down the rows: a daily grid over decades has more times than a sheet has columns)
    n_slots = len(result.slot_time)
    dates = result.slot_dates()
    put(ws, detail_top, 1, "Expected flows by time (rows) for each structure, party and discount class (columns): "
                           "what the live PV discounts", font=LABEL_FONT)
    labels = (("Structure", dates_row - 1), ("Party and discount class", dates_row), ("Rate", dates_row + 1),
              ("PV", pv_row))
    for text, r in labels:
        put(ws, r, 2, text, font=LABEL_FONT)
    header(ws, pv_row + 1, ["Date", "Years after the valuation date"], height=30)
    first_slot, last_slot = pv_row + 2, pv_row + 1 + n_slots
    for k in range(n_slots):
        put(ws, first_slot + k, 1, dates[k], fmt=DATE)
        put(ws, first_slot + k, 2, float(result.slot_time[k]), fmt='0.000')
    for (s, p, c), col in detail_col.items():
        letter = get_column_letter(col)
        for r, text in ((dates_row - 1, names.structure[s]),
                        (dates_row, f"{names.party[p]}, {classes[c][0].lower()}{classes[c][1:]}" if c >= P
                         else classes[c])):
            cell = put(ws, r, col, text, font=HEADER_FONT)  # column heads (a structure's repeat: not a Table)
            cell.fill = HEADER_FILL
            cell.alignment = WRAP
        formula(ws, dates_row + 1, col, f"={rate_cell[c]}", fmt='0.00%')
        formula(ws, pv_row, col, f"=SUMPRODUCT({letter}{first_slot}:{letter}{last_slot},"
                                 f"(1+{letter}${dates_row + 1})^(-$B${first_slot}:$B${last_slot}))", fmt=BN)
        for k in range(n_slots):
            put(ws, first_slot + k, col, float(flows[s, p, c, k]), fmt=BN3)
    row_height(ws, dates_row - 1, 3)
    row_height(ws, dates_row, 4)
    widths(ws, {1: 46, 2: 44, **{3 + k: 16 for k in range(max(len(detail), n_years + 1))}})
    ws.freeze_panes = "A4"
    ws.print_area = f"A1:{get_column_letter(3 + n_years)}{detail_top - 1}"
    print_setup(ws, one_page=True)


# ------------------------------------------------------------------ drivers


def _drivers(ws, result: SimulationResult) -> None:
    ws.sheet_view.showGridLines = False
    s = result.scenario
    title(ws, "Drivers: AGI timing, verification, deadlines and revenue",
          "Simulated frequencies over all paths (except the revenue fan: see its note).")
    agi = result.agi_timing_table()
    top = 4
    header(ws, top, ["Year end", "P(declared by), simulated", "P(declared by), model", "P(verified by), simulated"],
           height=30)
    for i, (year, values) in enumerate(agi.iterrows(), start=1):
        put(ws, top + i, 1, year)
        put(ws, top + i, 2, values["declared"], fmt=PCT)
        put(ws, top + i, 3, values["model"], fmt=PCT)
        put(ws, top + i, 4, values["verified"], fmt=PCT)
    last = top + len(agi)
    table(ws, "AgiTiming", top, last, 4)
    chart = line_chart(title_text="AGI: probability declared / verified by year end", x_title="Year",
                       y_title="Probability", width=20, height=11)
    chart.add_data(ref(ws, 2, top, last, 4), titles_from_data=True)
    straight(chart)
    chart.set_categories(ref(ws, 1, top + 1, last))
    chart.y_axis.number_format = '0%'
    chart.y_axis.scaling.min = 0
    ws.add_chart(chart, "G4")

    # verification lag and deadlines
    row = max(last, top + 20) + 2
    stats = result.driver_stats()
    put(ws, row, 1, "Verification", font=LABEL_FONT)
    verification = [("Paths with AGI declared (ever)", stats.p_ever_declared, PCT),
                    ("P(never verified | declared), simulated", stats.p_never_verified, PCT),
                    ("P(never verified | declared), input", s.agi.never_verified, PCT),
                    ("Median lag, years", stats.lag_median, YEARS),
                    ("P90 lag, years", stats.lag_p90, YEARS)]
    for label, value, fmt in verification:
        row += 1
        put(ws, row, 1, label)
        put(ws, row, 2, value, fmt=fmt)
    row += 2
    put(ws, row, 1, "Deadlines", font=LABEL_FONT)
    dtop = row + 1
    header(ws, dtop, ["Deadline", "Date", "P(met), simulated", "SE"])
    row = dtop
    n = result.paths
    for d, p in zip(s.deadlines, stats.p_met, strict=True):
        row += 1
        p = float(p)
        put(ws, row, 1, d.label or d.name)
        put(ws, row, 2, d.date, fmt=DATE)
        put(ws, row, 3, p, fmt=PCT)
        put(ws, row, 4, result.sampler.share_error(p, n), fmt='0.000%')
    if s.deadlines:
        table(ws, "Deadlines", dtop, row, 4)

    # revenue fan
    fan = result.revenue_fan()
    row += 3
    put(ws, row, 1, f"Revenue fan (USD bn per year), from the first {result.revenue_sample.shape[0]:,} paths",
        font=LABEL_FONT)
    ftop = row + 1
    header(ws, ftop, ["Date", "P5", "P25", "P50", "P75", "P95"])
    for i, (when, values) in enumerate(fan.iterrows(), start=1):
        put(ws, ftop + i, 1, when, fmt=DATE)
        for j, v in enumerate(values.to_numpy()):
            put(ws, ftop + i, 2 + j, float(v), fmt=BN)
    flast = ftop + len(fan)
    table(ws, "RevenueFan", ftop, flast, 6)
    fan_chart = line_chart(title_text="Revenue: percentiles of the annual rate", x_title="Date",
                           y_title="USD bn per year", width=20, height=11)
    fan_chart.add_data(ref(ws, 2, ftop, flast, 6), titles_from_data=True)
    straight(fan_chart)
    fan_chart.x_axis.tickLblSkip = 4
    fan_chart.set_categories(ref(ws, 1, ftop + 1, flast))
    fan_chart.x_axis.number_format = 'yyyy'
    ws.add_chart(fan_chart, f"G{ftop}")

    # revenue earned in each calendar year
    years = result.revenue_by_year()
    row = flast + 3
    put(ws, row, 1, "Revenue earned in each calendar year (USD bn), over all paths", font=LABEL_FONT)
    ytop = row + 1
    header(ws, ytop, ["Year", "Days simulated", "Mean", "SE", "P5", "P50", "P95"])
    for i, (year, values) in enumerate(years.iterrows(), start=1):
        put(ws, ytop + i, 1, int(year))
        put(ws, ytop + i, 2, int(values["days"]))
        for j, key in enumerate(("mean", "se", "p5", "p50", "p95")):
            put(ws, ytop + i, 3 + j, float(values[key]), fmt=BN3 if key == "se" else BN)
    table(ws, "RevenueByYear", ytop, ytop + len(years), 7)
    widths(ws, {1: 40, 2: 22, 3: 22, 4: 22, 5: 12, 6: 12, 7: 12})
    ws.freeze_panes = "A4"
    print_setup(ws, one_page=True)


# -------------------------------------------------------------- uncertain inputs

INPUT_COLUMNS = ("Key", "Distribution", "Low", "High", "Low and high are", "Value (fixed runs)", "Mean of draws",
                 "SD of draws", "P5 of draws", "P95 of draws", "Source")
CORRELATION_COLUMNS = ("Between", "And", "Target rank correlation", "Used", "Achieved on the paths", "SE")


def _correlated(scenario) -> int:
    """Variables of the copula (drivers and inputs named by the correlations)."""
    return len({n for c in scenario.correlations for n in c.between})


def uncertain_size(scenario) -> tuple[int, int]:
    rows = 4 + max(len(scenario.ranges), 1)
    if scenario.correlations:
        k = _correlated(scenario)
        rows += 3 + k * (k - 1) // 2
    return rows, len(INPUT_COLUMNS)


def _uncertain(ws, result: SimulationResult) -> None:
    ws.sheet_view.showGridLines = False
    s = result.scenario
    drawn = result.uncertain
    n_dist = len(s.ranges_with_dist())
    note = (f"This run drew {n_dist} inputs once per path (uncertain inputs on); the others are fixed at their "
            "value." if drawn else
            f"This run held every input at its value; {n_dist} inputs have a distribution and are drawn per path "
            "with `valuation run --uncertain` (or simulation.uncertain = true). The ranges are the sensitivity "
            "ranges of the inputs.")
    title(ws, "Uncertain inputs: ranges, distributions and correlations", note)
    header(ws, 4, list(INPUT_COLUMNS), height=30)
    stats = result.inputs() if drawn else None
    for i, key in enumerate(sorted(s.ranges), start=5):
        r = s.ranges[key]
        source = s.sources.get(key, "")
        put(ws, i, 1, key).alignment = TOP
        fmt = "#,##0.0" if max(abs(r.low), abs(r.high)) >= 100 else "0.000" if max(abs(r.low), abs(r.high)) >= 1 \
            else "0.0000"
        put(ws, i, 2, r.dist or "fixed (range only)").alignment = TOP
        put(ws, i, 3, r.low, fmt=fmt).alignment = TOP
        put(ws, i, 4, r.high, fmt=fmt).alignment = TOP
        put(ws, i, 5, "" if r.dist is None else "5th and 95th percentiles" if r.dist in ("normal", "lognormal")
            else "bounds").alignment = TOP
        put(ws, i, 6, s.value_at(key), fmt=fmt).alignment = TOP
        if stats is not None and key in stats.index:
            row = stats.loc[key]
            for j, col in enumerate(("mean", "sd", "p5", "p95"), start=7):
                put(ws, i, j, float(row[col]), fmt=fmt).alignment = TOP
        put(ws, i, 11, source).alignment = WRAP
        if lines(source, 60) > 1:  # the whole source is on the Assumptions sheet: three lines of it here
            row_height(ws, i, min(lines(source, 60), 3))
    if not s.ranges:
        put(ws, 5, 1, "(no input has a range)")
    last = 4 + max(len(s.ranges), 1)
    table(ws, "UncertainInputs", 4, last, len(INPUT_COLUMNS))
    if s.correlations:
        top = last + 2
        table_ = result.correlations() if drawn else None
        repaired = table_ is not None and table_.attrs["repaired"]
        put(ws, top, 1, "Rank correlations (Gaussian copula)" + (": the scenario's matrix could not hold; the "
            "nearest valid one (Frobenius norm) was used" if repaired else ""), font=LABEL_FONT)
        header(ws, top + 1, list(CORRELATION_COLUMNS), height=30)
        if table_ is not None:
            pairs = [(a, b, row["target"], row["used"], row["achieved"], row["se"])
                     for (a, b), row in table_.iterrows()]
        else:
            names, _, rank, _ = correlation_matrix(s)
            pairs = [(names[i], names[j], float(rank[i, j]), None, None, None) for i in range(len(names))
                     for j in range(i + 1, len(names))]
        for k, pair in enumerate(pairs, start=top + 2):
            for j, value in enumerate(pair, start=1):
                put(ws, k, j, value if value is not None else "", fmt=None if j < 3 else "0.000")
        table(ws, "Correlations", top + 1, top + 1 + max(len(pairs), 1), len(CORRELATION_COLUMNS))
    widths(ws, {1: 40, 2: 16, 3: 10, 4: 10, 5: 22, 6: 12, 7: 12, 8: 12, 9: 12, 10: 12, 11: 60})
    ws.freeze_panes = "B5"
    print_setup(ws)


# -------------------------------------------------------------- assumptions


def _assumptions(ws, result: SimulationResult) -> None:
    ws.sheet_view.showGridLines = False
    header(ws, 1, list(COLUMNS), height=30)
    overrides: dict[str, Any] = {"simulation.paths": result.paths}
    if result.uncertain != result.scenario.simulation.uncertain:  # re-running the workbook draws as this run did
        overrides["simulation.uncertain"] = result.uncertain
    if result.seed is not None:  # a SeedSequence has no place in the file: the Read me records it
        overrides["simulation.seed"] = result.seed
    rows = assumption_rows(result.scenario, overrides=overrides)
    for i, r in enumerate(rows, start=2):
        put(ws, i, 1, r["key"]).alignment = TOP
        v = r["value"]
        put(ws, i, 2, v, fmt=DATE if isinstance(v, Date) else None).alignment = WRAP_LEFT
        put(ws, i, 3, r["type"]).alignment = TOP
        put(ws, i, 4, r["unit"]).alignment = TOP
        put(ws, i, 5, r["given"]).alignment = TOP
        put(ws, i, 6, r["source"]).alignment = WRAP
        put(ws, i, 7, r["table_source"]).alignment = WRAP
        put(ws, i, 8, r["description"]).alignment = WRAP
        put(ws, i, 9, r["source_date"] or None, fmt=DATE).alignment = TOP
        put(ws, i, 10, r["low"] if r["low"] != "" else None).alignment = TOP
        put(ws, i, 11, r["high"] if r["high"] != "" else None).alignment = TOP
        put(ws, i, 12, r["dist"] or None).alignment = TOP
        n = max(lines(str(r["source"]), 50), lines(str(r["table_source"]), 40), lines(str(r["description"]), 44),
                lines(str(v), 24) if isinstance(v, str) else 1)
        if n > 1:  # spreadsheet programs do not grow rows for wrapped text written by openpyxl
            row_height(ws, i, n)
    table(ws, "Assumptions", 1, len(rows) + 1, len(COLUMNS))
    choose = DataValidation(type="list", formula1=f'"{",".join(DISTS)}"', allow_blank=True,
                            errorTitle="Distribution", error=f"one of {', '.join(DISTS)}, or empty (fixed)")
    choose.add(f"L2:L{len(rows) + 1}")
    ws.add_data_validation(choose)
    ws.freeze_panes = "B2"
    widths(ws, {1: 46, 2: 24, 3: 10, 4: 14, 5: 10, 6: 50, 7: 40, 8: 44, 9: 12, 10: 10, 11: 10, 12: 13})
    ws.print_title_rows = "1:1"
    print_setup(ws)


# ------------------------------------------------------------------ paths


def _paths(ws, result: SimulationResult) -> None:
    drivers, pvs = result.head()
    n = min(HEAD, len(drivers))
    names = ["Path"]
    for col in drivers.columns:
        if col.startswith("met:"):
            names.append(f"Met: {col[4:]}")
        elif col == "revenue_at_horizon":
            names.append("Revenue at horizon (USD bn/yr)")
        else:
            names.append(f"{col} (years)")
    pv_cols = [(s, p) for s in range(len(result.structures)) for p in range(len(result.parties))]
    names += [f"PV {result.structures[s]} / {result.parties[p]}" for s, p in pv_cols]
    header(ws, 1, names)
    columns = [drivers[c].to_numpy() for c in drivers.columns]
    flags = [c.startswith("met:") for c in drivers.columns]
    revenue = [c == "revenue_at_horizon" for c in drivers.columns]
    for i in range(n):
        r = i + 2
        put(ws, r, 1, _number(result.first_path + i))
        for j, values in enumerate(columns):
            if flags[j]:
                put(ws, r, 2 + j, bool(values[i]))
            else:
                put(ws, r, 2 + j, float(values[i]), fmt=BN if revenue[j] else YEARS, infinity="never")
        base = 2 + len(columns)
        for j, (s, p) in enumerate(pv_cols):
            put(ws, r, base + j, float(pvs[i, s, p]), fmt=BN)
    table(ws, "Paths", 1, n + 1, len(names))
    ws.freeze_panes = "B2"
    widths(ws, {j: 16 for j in range(1, len(names) + 1)})
    ws.row_dimensions[1].height = 45
    ws.print_title_rows = "1:1"
    put(ws, n + 3, 1, f"The first {n:,} of {result.paths:,} paths. Times are years after the valuation date "
                      "(they may fall beyond the horizon); 'never' = the event never happens on that path.")
    print_setup(ws)
