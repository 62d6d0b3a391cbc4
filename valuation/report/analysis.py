"""The analysis workbooks: a Read me and the analysis's own sheet, native charts, written atomically.

**Sensitivity.**  The tornado table (every structure x party and input, the swing's paired and independent-seed
standard errors side by side), one tornado chart per structure x party that some input moves (horizontal bars:
the change from the base value at each end of each input's range, the largest swing on top) and a spider chart
per pair (the statistic across each input's range, the top inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference, ScatterChart, Series
from openpyxl.chart.shapes import GraphicalProperties
from openpyxl.utils import get_column_letter

from valuation.errors import printable
from valuation.report.xlsx import (
    BN,
    BN3,
    LABEL_FONT,
    NOTE_FONT,
    WRAP_LEFT,
    atomic_save,
    check_output_path,
    header,
    print_setup,
    put,
    style_chart,
    table,
    title,
    widths,
)

if TYPE_CHECKING:
    from valuation.analysis.attribution import Attribution
    from valuation.analysis.break_even import BreakEven
    from valuation.analysis.compare import Comparison
    from valuation.analysis.negotiate import Negotiation
    from valuation.analysis.sensitivity import Sensitivity

TOP_INPUTS = 10  # bars per tornado chart
SPIDER_INPUTS = 6  # lines per spider chart
CHART_ROWS = 22  # rows a chart takes (with a gap)


def _workbook(heading: str, scenario: Any, facts: list[tuple[str, str]], notes: list[str]) -> Workbook:
    """A new workbook whose first sheet is its Read me: the heading, the scenario file, ``facts`` and ``notes``."""
    wb = Workbook()
    readme = wb.active
    readme.title = "Read me"
    _read_me(readme, f"{heading}: {scenario.name}",
             [("Scenario file", printable(Path(scenario.path).name) if scenario.path else "(built in Python)"),
              *facts], notes)
    return wb


def _read_me(ws, heading: str, facts: list[tuple[str, str]], notes: list[str]) -> None:
    title(ws, heading)
    row = 3
    for label, value in facts:
        put(ws, row, 1, label, font=LABEL_FONT)
        put(ws, row, 2, value)
        row += 1
    row += 1
    for note in notes:
        put(ws, row, 1, note, font=NOTE_FONT)
        ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=8)
        ws.cell(row=row, column=1).alignment = WRAP_LEFT
        ws.row_dimensions[row].height = 15 * max(1, len(note) // 110 + 1)
        row += 1
    widths(ws, {1: 28, 2: 90})
    print_setup(ws, landscape=False)


def write_sensitivity(sens: Sensitivity, path: str | Path) -> Path:
    """The sensitivity workbook at ``path`` (atomically); returns the path."""
    path = check_output_path(path, 200_000 + 400 * len(sens.tornado) + 200 * len(sens.spider))
    wb = _workbook("Sensitivity", sens.scenario, [
        ("Statistic", f"{sens.statistic.label} (USD bn)" + (f", against {sens.baseline}"
                                                           if sens.statistic.versus_baseline else "")),
        ("Inputs varied", f"{len(sens.inputs)}, one at a time over their low/high ranges"),
        ("Paths per run", f"{sens.paths:,}"), ("Seed", str(sens.seed)),
        ("Runs", f"{sens.runs}, all on the same random numbers (common random numbers)"),
        ("Uncertain inputs", "drawn per path (the varied input held at each point)" if sens.uncertain else "fixed"),
    ], [
        "Each input is set to its low and then its high end (and points between, for the spider) with every other "
        "input at its value; every run uses the same random numbers, so the difference between two runs is due to "
        "the input alone.",
        "Swing = statistic at the high end minus statistic at the low end. 'Swing SE' is its standard error on the "
        "same paths; 'SE, independent seeds' is what it would be had each end been run on its own random numbers: "
        "the ratio is what common random numbers buy.",
        "A party's PV is what the deal moves to (positive) or from (negative) that party, in its own view (its "
        "discount rates and own-value streams).",
    ])
    ws = wb.create_sheet("Sensitivity")
    _sensitivity_sheet(ws, wb.create_sheet("Chart data"), sens)
    return atomic_save(wb, path)


def _chart_pairs(structures: list[str], parties: list[str], frame) -> list[tuple[str, str, str]]:
    """The structure x party pairs to chart, with their titles: ``frame(structure, party)`` gives a pair's numbers
    (None: nothing to chart); a party whose numbers are the same under every structure is charted once ("every
    structure")."""
    out = []
    for party in parties:
        frames = {structure: frame(structure, party) for structure in structures}
        moving = [structure for structure, f in frames.items() if f is not None]
        if not moving:
            continue
        first = frames[moving[0]]
        if len(moving) == len(structures) and all(frames[st].equals(first) for st in moving[1:]):
            out.append((moving[0], party, f"{party}, every structure"))
        else:
            out += [(structure, party, f"{structure}: {party}") for structure in moving]
    return out


def _sensitivity_sheet(ws, data, sens: Sensitivity) -> None:
    title(ws, f"Sensitivity of the {sens.statistic.label} (USD bn)",
          f"{len(sens.inputs)} inputs, {sens.paths:,} paths per run, seed {sens.seed}; bars: change from the base "
          "value with the input at its low and high end")
    # the charts first, two per row band: tornado (left) and spider (right) of each structure x party; their
    # numbers on the Chart data sheet (the table below holds everything)
    put(data, 1, 1, "The numbers the Sensitivity sheet's charts draw (the full table is on that sheet)", font=NOTE_FONT)
    data_col = 1
    row = 4
    data_row = 3
    def numbers(structure: str, party: str):
        return sens.bars(structure, party)[["at_low", "at_high"]] if (structure, party) in sens.moving() else None

    for structure, party, label in _chart_pairs(sens.structures, sens.parties, numbers):
        bars = sens.bars(structure, party).head(TOP_INPUTS)
        base = float(sens.base.loc[(structure, party), "value"])
        top = data_row
        header(data, top, ["Input", "Low end", "High end"], col=data_col)
        # reversed: a bar chart draws its first category at the bottom; the largest swing belongs on top
        for i, (key, r) in enumerate(reversed(list(bars.iterrows()))):
            put(data, top + 1 + i, data_col, key)
            put(data, top + 1 + i, data_col + 1, r["at_low"] - base, BN)
            put(data, top + 1 + i, data_col + 2, r["at_high"] - base, BN)
        last = top + len(bars)
        chart = BarChart()
        chart.type = "bar"
        chart.grouping = "clustered"
        chart.overlap = 100
        chart.gapWidth = 40
        chart.add_data(Reference(data, min_col=data_col + 1, max_col=data_col + 2, min_row=top, max_row=last),
                       titles_from_data=True)
        chart.set_categories(Reference(data, min_col=data_col, min_row=top + 1, max_row=last))
        style_chart(chart, f"{label} (base {base:,.1f})", "Input",
                    "Change from the base value (USD bn)", width=16, height=10)
        chart.y_axis.number_format = "#,##0.0"
        chart.y_axis.numFmt.sourceLinked = False
        ws.add_chart(chart, f"A{row}")
        spider_top = last + 2
        data_row = _spider_data(data, sens, structure, party, list(bars.index[:SPIDER_INPUTS]), spider_top, data_col)
        spider = ScatterChart()
        style_chart(spider, f"{label}, across each range", "Position in the input's range "
                    "(0 = low end, 1 = high end)", f"{sens.statistic.label} (USD bn)", width=16, height=10)
        spider.y_axis.tickLblPos = "low"
        spider.x_axis.scaling.min, spider.x_axis.scaling.max = 0.0, 1.0
        n = sens.spider.index.get_level_values("point").max() + 1
        for j in range(min(SPIDER_INPUTS, len(bars))):
            x = Reference(data, min_col=data_col, min_row=spider_top + 1, max_row=spider_top + n)
            y = Reference(data, min_col=data_col + 1 + j, min_row=spider_top, max_row=spider_top + n)
            series = Series(y, x, title_from_data=True)
            series.smooth = False
            spider.series.append(series)
        ws.add_chart(spider, f"F{row}")
        row += CHART_ROWS
    # the full table
    row += 1
    put(ws, row, 1, "Every structure x party and input (largest swing first)", font=LABEL_FONT)
    row += 1
    columns = ["Structure", "Party", "Input", "Low end", "High end", "At low", "SE", "At high", "SE", "Swing",
               "Swing SE (paired)", "SE, independent seeds", "Base", "Base SE"]
    header(ws, row, columns, height=45)
    first = row
    for (structure, party, key), r in sens.tornado.iterrows():
        row += 1
        values = [structure, party, key, r["low"], r["high"], r["at_low"], r["at_low_se"], r["at_high"],
                  r["at_high_se"], r["swing"], r["swing_se"], r["swing_se_independent"], r["base"], r["base_se"]]
        formats = [None, None, None, "General", "General", BN, BN3, BN, BN3, BN, BN3, BN3, BN, BN3]
        for c, (value, fmt) in enumerate(zip(values, formats, strict=True)):
            put(ws, row, 1 + c, value, fmt)
    if row > first:
        table(ws, "Tornado", first, row, len(columns))
    widths(ws, {1: 22, 2: 14, 3: 34, **{c: 11 for c in range(4, 15)}})
    widths(data, {1: 34})
    for c in range(2, 2 + SPIDER_INPUTS):
        data.column_dimensions[get_column_letter(c)].width = 14
    print_setup(ws)
    print_setup(data)


def _spider_data(ws, sens: Sensitivity, structure: str, party: str, keys: list[str], top: int, col: int) -> int:
    """The spider's table at ``top``: position, then the statistic of each input; returns the next free row."""
    header(ws, top, ["Position", *keys], col=col)
    frame = sens.spider.xs((structure, party), level=["structure", "party"])
    n = int(frame.index.get_level_values("point").max()) + 1
    for i in range(n):
        put(ws, top + 1 + i, col, i / (n - 1), "0.00")
        for j, key in enumerate(keys):
            put(ws, top + 1 + i, col + 1 + j, float(frame.loc[(key, i), "value"]), BN)
    return top + n + 2


# ---------------------------------------------------------------- negotiation

def write_negotiation(neg: Negotiation, path: str | Path) -> Path:
    """The negotiation workbook at ``path`` (atomically); returns the path."""
    path = check_output_path(path, 100_000 + 300 * len(neg.curve) * (1 + len(neg.parties)))
    wb = _workbook("Negotiation", neg.scenario, [
        ("Negotiated term", " x ".join(neg.keys) + f" (now {', '.join(f'{v:g}' for v in neg.originals)})"),
        ("Structure", neg.structure),
        ("Walk-away", ", ".join(f"{p}: {w}" for p, w in neg.walk_away.items())),
        ("Statistic", f"{neg.statistic.label} (USD bn), each party in its own view"),
        ("Bargaining weights", ", ".join(f"{p} {w:g}" for p, w in zip(neg.parties, neg.weights, strict=True))),
        ("Paths per run", f"{neg.paths:,}"), ("Seed", str(neg.seed)),
        ("Runs", f"{neg.runs}, all on the same random numbers (common random numbers)"),
    ], [
        "A party's gain is its value under the structure with the term at a given value minus its value under its "
        "walk-away structure, each in the party's own view (its discount rates and own-value streams).",
        "The zone of possible agreement is where every party gains; its ends are where one party's gain is zero, "
        "each with a standard error (delta method). The Nash bargaining point maximises the weighted sum of the "
        "logarithms of the gains over the zone.",
    ])
    ws = wb.create_sheet("Negotiation")
    if len(neg.keys) == 1:
        _negotiation_curve(ws, neg)
    else:
        _negotiation_grid(ws, neg)
    return atomic_save(wb, path)


def _negotiation_summary(ws, neg: Negotiation, row: int) -> int:
    put(ws, row, 1, "Zone of possible agreement", font=LABEL_FONT)
    if len(neg.keys) == 1 and neg.zone:
        for (a, a_se, a_why), (b, b_se, b_why) in neg.zone:
            put(ws, row, 2, f"{a:.6g} (SE {a_se:.3g}; {a_why}) to {b:.6g} (SE {b_se:.3g}; {b_why})")
            row += 1
    elif len(neg.keys) == 2 and neg.nash is not None:
        put(ws, row, 2, "the grid points marked in the table below")
        row += 1
    else:
        put(ws, row, 2, f"empty: the best point leaves a party {-neg.shortfall:,.2f} USD bn short")
        row += 1
    put(ws, row, 1, "Nash bargaining point", font=LABEL_FONT)
    if neg.nash is None:
        put(ws, row, 2, "none (no zone)")
    else:
        where = ", ".join(f"{k} = {v:.6g}" for k, v in zip(neg.keys, np.atleast_1d(neg.nash["value"]), strict=True))
        se = f" (SE {neg.nash['se']:.3g})" if neg.nash.get("se") is not None else " (the best grid point)"
        gains = ", ".join(f"{p} {g:+,.2f}" for p, g in neg.nash["gains"].items())
        put(ws, row, 2, f"{where}{se}; gains {gains} USD bn")
    return row + 2


def _negotiation_curve(ws, neg: Negotiation) -> None:
    title(ws, f"Negotiation over {neg.keys[0]} under {neg.structure}",
          "Each party's gain over its walk-away (USD bn, own view), across the term's range")
    row = _negotiation_summary(ws, neg, 3)
    columns = [neg.keys[0], *[f"Gain: {p}" for p in neg.parties], *[f"SE: {p}" for p in neg.parties]]
    header(ws, row, columns, height=45)
    top = row
    for _, r in neg.curve.iterrows():
        row += 1
        put(ws, row, 1, float(r[neg.keys[0]]), "0.0000")
        for i, p in enumerate(neg.parties):
            put(ws, row, 2 + i, float(r[f"gain:{p}"]), BN)
            put(ws, row, 2 + len(neg.parties) + i, float(r[f"se:{p}"]), BN3)
    last = row
    # the zone (a band along zero) and the Nash point, as their own series
    marks = last + 2
    put(ws, marks, 1, "Chart marks", font=LABEL_FONT)
    header(ws, marks + 1, [neg.keys[0], "Zone of possible agreement", "Nash point"], height=45)
    mrow = marks + 1
    for (a, _, _), (b, _, _) in neg.zone:
        for x in (a, b):
            mrow += 1
            put(ws, mrow, 1, x, "0.0000")
            put(ws, mrow, 2, 0.0, BN)
    if neg.nash is not None:
        mrow += 1
        put(ws, mrow, 1, float(neg.nash["value"]), "0.0000")
        put(ws, mrow, 3, float(min(neg.nash["gains"].values())), BN)
    chart = ScatterChart()
    style_chart(chart, f"Gains over the walk-away: {neg.structure}", neg.keys[0], "Gain (USD bn)", width=22,
                height=12)
    chart.y_axis.tickLblPos = "low"
    chart.x_axis.scaling.min = float(neg.curve[neg.keys[0]].min())
    chart.x_axis.scaling.max = float(neg.curve[neg.keys[0]].max())
    x = Reference(ws, min_col=1, min_row=top + 1, max_row=last)
    for i in range(len(neg.parties)):
        series = Series(Reference(ws, min_col=2 + i, min_row=top, max_row=last), x, title_from_data=True)
        series.smooth = False
        chart.series.append(series)
    if neg.zone:
        zx = Reference(ws, min_col=1, min_row=marks + 2, max_row=marks + 1 + 2 * len(neg.zone))
        band = Series(Reference(ws, min_col=2, min_row=marks + 1, max_row=marks + 1 + 2 * len(neg.zone)), zx,
                      title_from_data=True)
        band.graphicalProperties.line.width = 120_000  # EMU: a thick band along zero
        band.graphicalProperties.line.solidFill = "A9D18E"
        band.marker.symbol = "none"
        chart.series.append(band)
    if neg.nash is not None:
        nx = Reference(ws, min_col=1, min_row=mrow, max_row=mrow)
        point = Series(Reference(ws, min_col=3, min_row=mrow, max_row=mrow), nx, title="Nash point")
        point.marker.symbol = "diamond"
        point.marker.size = 11
        point.marker.graphicalProperties = GraphicalProperties(solidFill="C00000")
        point.marker.graphicalProperties.line.solidFill = "C00000"
        point.graphicalProperties.line.noFill = True
        chart.series.append(point)
    ws.add_chart(chart, f"{get_column_letter(3 + 2 * len(neg.parties))}3")
    widths(ws, {1: 30, **{c: 14 for c in range(2, 2 + 2 * len(neg.parties))}})
    print_setup(ws)


def _negotiation_grid(ws, neg: Negotiation) -> None:
    from openpyxl.styles import PatternFill

    title(ws, f"Negotiation over {neg.keys[0]} x {neg.keys[1]} under {neg.structure}",
          "The smallest party gain at each grid point (USD bn); the zone of possible agreement shaded green, the "
          "Nash point bold")
    row = _negotiation_summary(ws, neg, 3)
    xs = sorted(set(neg.curve[neg.keys[0]]))
    ys = sorted(set(neg.curve[neg.keys[1]]))
    put(ws, row, 1, f"{neg.keys[0]} (rows) x {neg.keys[1]} (columns)", font=LABEL_FONT)
    header(ws, row + 1, ["", *[f"{y:.4g}" for y in ys]])
    zone_fill = PatternFill("solid", fgColor="C6EFCE")
    gains = [f"gain:{p}" for p in neg.parties]
    nash = tuple(np.atleast_1d(neg.nash["value"])) if neg.nash is not None else None
    for i, x in enumerate(xs):
        put(ws, row + 2 + i, 1, x, "0.0000", font=LABEL_FONT)
        for j, y in enumerate(ys):
            r = neg.curve[(neg.curve[neg.keys[0]] == x) & (neg.curve[neg.keys[1]] == y)].iloc[0]
            cell = put(ws, row + 2 + i, 2 + j, float(min(r[g] for g in gains)), BN)
            if r["in_zone"]:
                cell.fill = zone_fill
            if nash is not None and (x, y) == nash:
                cell.font = LABEL_FONT
    table_row = row + 3 + len(xs)
    columns = [*neg.keys, *[f"Gain: {p}" for p in neg.parties], *[f"SE: {p}" for p in neg.parties], "In the zone"]
    header(ws, table_row, columns, height=45)
    for k, (_, r) in enumerate(neg.curve.iterrows()):
        values = [r[neg.keys[0]], r[neg.keys[1]], *[r[f"gain:{p}"] for p in neg.parties],
                  *[r[f"se:{p}"] for p in neg.parties], "yes" if r["in_zone"] else "no"]
        for c, v in enumerate(values):
            put(ws, table_row + 1 + k, 1 + c, v if isinstance(v, str) else float(v), None if isinstance(v, str)
                else (BN if 2 <= c < 2 + 2 * len(neg.parties) else "0.0000"))
    widths(ws, {1: 30, 2: 30, **{c: 14 for c in range(3, 4 + 2 * len(neg.parties))}})
    print_setup(ws)


# ---------------------------------------------------------------- attribution

def write_attribution(att: Attribution, path: str | Path) -> Path:
    """The attribution workbook at ``path`` (atomically); returns the path."""
    path = check_output_path(path, 100_000 + 300 * len(att.indices) * 3)
    r = att.result
    wb = _workbook("Attribution", r.scenario, [
        ("Paths", f"{r.paths:,}"), ("Seed", str(r.seed)),
        ("Uncertain inputs", "drawn per path" if r.uncertain else "fixed"),
        ("Sources", f"{len(att.sources)}: " + ", ".join(att.sources)),
    ], [
        "First-order index of a source: the share of a PV's variance that the source explains on its own, "
        "Var(E[PV | source]) / Var(PV), from the paths of this one run: the paths sorted by the source and cut "
        "into equal-count bins, the variance of the bin means less its small-sample bias, over the PV's variance. "
        "Standard errors: the grouped jackknife over 20 batches of paths.",
        "Sources that depend on each other (the AGI declaration and its verification) share what they explain: "
        "the indices need not sum to one.",
        "Deciles: the mean PV of the paths in each tenth of the source (low to high) minus the mean PV of all "
        "paths, as @RISK's 'change in output statistic'.",
    ])
    ws = wb.create_sheet("Attribution")
    title(ws, "What drives each PV: first-order indices from one run",
          f"{r.paths:,} paths; a party's PV in its own view; the largest sources first")
    data = wb.create_sheet("Chart data")
    put(data, 1, 1, "The numbers the Attribution sheet's charts draw", font=NOTE_FONT)
    row, data_row = 4, 3

    def numbers(structure: str, party: str):
        top = att.top(structure, party, TOP_INPUTS)
        return None if top["index"].isna().all() or not (top["index"].fillna(0) > 0).any() else top

    for structure, party, label in _chart_pairs(list(r.structures), list(r.parties), numbers):
        top = att.top(structure, party, TOP_INPUTS)
        header(data, data_row, ["Source", "First-order index"])
        ordered = list(reversed(list(top.iterrows())))
        for i, (source, v) in enumerate(ordered):
            put(data, data_row + 1 + i, 1, source)
            put(data, data_row + 1 + i, 2, float(v["index"]), "0.000")
        last = data_row + len(ordered)
        chart = BarChart()
        chart.type = "bar"
        chart.add_data(Reference(data, min_col=2, min_row=data_row, max_row=last), titles_from_data=True)
        chart.set_categories(Reference(data, min_col=1, min_row=data_row + 1, max_row=last))
        style_chart(chart, label, "Source", "Share of the PV's variance", width=16, height=9)
        chart.legend = None
        ws.add_chart(chart, f"A{row}")
        lead = top.index[0]
        d = att.deciles.loc[(structure, party, lead)]
        dec_top = last + 2
        header(data, dec_top, ["Decile", f"Mean PV minus overall: {lead}"])
        n = int(d.notna().sum())
        for i in range(n):
            put(data, dec_top + 1 + i, 1, f"D{i + 1}")
            put(data, dec_top + 1 + i, 2, float(d.iloc[i]), BN)
        bars = BarChart()
        bars.add_data(Reference(data, min_col=2, min_row=dec_top, max_row=dec_top + n), titles_from_data=True)
        bars.set_categories(Reference(data, min_col=1, min_row=dec_top + 1, max_row=dec_top + n))
        style_chart(bars, f"{label}, by decile of {lead}", f"Decile of {lead} (low to high)",
                    "Mean PV minus overall mean (USD bn)", width=16, height=9)
        bars.legend = None
        ws.add_chart(bars, f"F{row}")
        row += 19
        data_row = dec_top + n + 2
    row += 1
    put(ws, row, 1, "Every structure x party and source", font=LABEL_FONT)
    row += 1
    columns = ["Structure", "Party", "Source", "Index", "SE", *[f"D{i + 1}" for i in range(10)]]
    header(ws, row, columns, height=30)
    first = row
    for (structure, party, source), v in att.indices.iterrows():
        row += 1
        d = att.deciles.loc[(structure, party, source)]
        values = [structure, party, source, v["index"], v["se"], *[float(x) for x in d]]
        for c, value in enumerate(values):
            put(ws, row, 1 + c, value, None if c < 3 else ("0.000" if c < 5 else BN), nan="")
    if row > first:
        table(ws, "Attribution", first, row, len(columns))
    widths(ws, {1: 22, 2: 14, 3: 36, **{c: 9 for c in range(4, 16)}})
    widths(data, {1: 36, 2: 16})
    print_setup(ws)
    print_setup(data)
    return atomic_save(wb, path)


# ---------------------------------------------------------------- scenarios

def write_comparison(cmp: Comparison, path: str | Path) -> Path:
    """The comparison workbook at ``path`` (atomically); returns the path."""
    path = check_output_path(path, 100_000 + 300 * len(cmp.table))
    scenario = cmp.scenario
    wb = _workbook("Scenarios", scenario, [
        ("Statistic", f"{cmp.statistic.label} (USD bn)"),
        ("Variants", ", ".join(cmp.variants)),
        ("Paths per run", f"{cmp.paths:,}"), ("Seed", str(cmp.seed)),
        ("Uncertain inputs", "drawn per path" if cmp.uncertain else "fixed"),
    ], [
        "Each variant is the scenario with the inputs it names set to other values, run on the same random "
        "numbers as the scenario: its difference from the scenario is due to those inputs alone, and its standard "
        "error (paired, path by path) is far below either run's.",
        *[f"{v.name}: {v.label or ''} {v.description or ''} Changes: "
          + "; ".join(f"{c.input} = {c.to}" for c in v.changes) for v in scenario.variants if v.name in cmp.variants],
    ])
    ws = wb.create_sheet("Scenarios")
    title(ws, f"Variants of the scenario: {cmp.statistic.label} (USD bn)",
          f"{cmp.paths:,} paths per run, seed {cmp.seed}, all on the same random numbers; a party's PV in its own "
          "view (what the deal moves to it, positive, or from it, negative)")
    row = 4
    columns = ["Structure", "Party", "Base", "SE"]
    for v in cmp.variants:
        columns += [v, "SE", f"{v} - base", "SE (paired)"]
    header(ws, row, columns, height=45)
    first = row
    t = cmp.table
    for structure in cmp.structures:
        for party in cmp.parties:
            row += 1
            put(ws, row, 1, structure)
            put(ws, row, 2, party)
            base = t.loc[("base", structure, party)]
            put(ws, row, 3, float(base["value"]), BN)
            put(ws, row, 4, float(base["se"]), BN3)
            for k, v in enumerate(cmp.variants):
                r = t.loc[(v, structure, party)]
                col = 5 + 4 * k
                put(ws, row, col, float(r["value"]), BN)
                put(ws, row, col + 1, float(r["se"]), BN3)
                put(ws, row, col + 2, float(r["diff"]), BN)
                put(ws, row, col + 3, float(r["diff_se"]), BN3)
    last = row
    table(ws, "Variants", first, last, len(columns))
    # a chart per party some variant moves: each variant's difference from the scenario, by structure
    data = wb.create_sheet("Chart data")
    put(data, 1, 1, "The numbers the Scenarios sheet's charts draw", font=NOTE_FONT)
    data_row, chart_row = 3, last + 3
    for party in cmp.parties:
        diffs = t.xs(party, level="party")
        if diffs["diff"].abs().max() == 0:
            continue
        header(data, data_row, ["Structure", *cmp.variants])
        for i, structure in enumerate(cmp.structures):
            put(data, data_row + 1 + i, 1, structure)
            for k, v in enumerate(cmp.variants):
                put(data, data_row + 1 + i, 2 + k, float(t.loc[(v, structure, party), "diff"]), BN)
        end = data_row + len(cmp.structures)
        chart = BarChart()
        chart.type = "col"
        chart.add_data(Reference(data, min_col=2, max_col=1 + len(cmp.variants), min_row=data_row, max_row=end),
                       titles_from_data=True)
        chart.set_categories(Reference(data, min_col=1, min_row=data_row + 1, max_row=end))
        style_chart(chart, f"{party}: each variant minus the scenario", "Structure", "USD bn", width=18, height=9)
        ws.add_chart(chart, f"A{chart_row}")
        chart_row += 19
        data_row = end + 2
    widths(ws, {1: 22, 2: 14, **{c: 12 for c in range(3, len(columns) + 1)}})
    widths(data, {1: 24})
    print_setup(ws)
    print_setup(data)
    return atomic_save(wb, path)


# ---------------------------------------------------------------- break-even

def write_break_even(be: BreakEven, path: str | Path) -> Path:
    """The break-even workbook at ``path`` (atomically); returns the path."""
    path = check_output_path(path, 60_000 + 200 * len(be.trials))
    against = (f"its value under {be.versus}" + (f" plus {be.target:g} USD bn" if be.target else "")
               if be.versus else f"{be.target:g} USD bn")
    wb = _workbook("Break-even", be.scenario, [
        ("Input varied", f"{be.key} (now {be.original:g})"),
        ("Solved for", f"{be.party}'s {be.label} under {be.structure} = {against}"),
        ("Range searched", f"{be.low[0]:g} to {be.high[0]:g}"),
        ("Paths per run", f"{be.paths:,}"), ("Seed", str(be.seed)),
        ("Runs", f"{be.evaluations}, on the same random numbers (the confirmation on the next seed)"),
    ], [
        "The gap is the party's statistic under the structure minus the one it is compared with. Every value "
        "tried runs on the same random numbers, so the gap is a smooth function of the input and Brent's method "
        "finds where it is zero. The root's standard error is the delta method's: the gap's standard error at "
        "the root over its slope there.",
    ])
    ws = wb.create_sheet("Break-even")
    title(ws, f"Break-even of {be.key}", " ".join(be.lines()[1:]))
    put(ws, 3, 1, "Answer", font=LABEL_FONT)
    put(ws, 3, 2, " ".join(line.strip() for line in be.lines()[1:]))
    header(ws, 5, [be.key, "Gap (USD bn)", "SE"])
    trials = sorted(be.trials)
    for i, (x, g, se) in enumerate(trials):
        put(ws, 6 + i, 1, x, "0.000000")
        put(ws, 6 + i, 2, g, BN)
        put(ws, 6 + i, 3, se, BN3)
    last = 5 + len(trials)
    chart = ScatterChart()
    style_chart(chart, f"The gap across {be.key}", be.key, "Gap (USD bn)", width=18, height=10)
    chart.y_axis.tickLblPos = "low"
    series = Series(Reference(ws, min_col=2, min_row=5, max_row=last), Reference(ws, min_col=1, min_row=6,
                                                                               max_row=last), title_from_data=True)
    series.marker.symbol = "circle"
    chart.series.append(series)
    if be.found:
        put(ws, last + 2, 1, "Root", font=LABEL_FONT)
        put(ws, last + 3, 1, be.value, "0.000000")
        put(ws, last + 3, 2, 0.0, BN)
        root = Series(Reference(ws, min_col=2, min_row=last + 3, max_row=last + 3),
                      Reference(ws, min_col=1, min_row=last + 3, max_row=last + 3), title="Break-even")
        root.marker.symbol = "diamond"
        root.marker.size = 11
        root.marker.graphicalProperties = GraphicalProperties(solidFill="C00000")
        root.graphicalProperties.line.noFill = True
        chart.series.append(root)
    ws.add_chart(chart, "E5")
    widths(ws, {1: 30, 2: 16, 3: 12})
    print_setup(ws)
    return atomic_save(wb, path)

