"""What bad input gets: every mistake in the README's catalogue, run through the command line.

Each row of the README table "What bad input gets" has a case here that makes the mistake.  The test checks
the contract for every one: exit code 2, one message (no traceback) that contains the README's excerpt (file,
key, value and what was expected), and no file written or touched: an earlier workbook at the output path
stays byte for byte, no temporary file is left, no ``reports/`` folder appears.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from conftest import BASE_CASE, ROOT
from valuation.cli import main

TEXT = BASE_CASE.read_text(encoding="utf-8")
README = ROOT / "README.md"
PRECIOUS = b"an earlier workbook the user wants to keep\n"


def _replace(old: str, new: str, count: int = 1) -> str:
    assert old in TEXT, old
    return TEXT.replace(old, new, count)


@dataclass(frozen=True)
class Mistake:
    """One row of the catalogue: ``setup(folder, report)`` writes the files and returns the arguments."""

    id: str
    where: str  # scenario file, workbook or command line
    what: str  # the mistake, as the README's table says it
    key: str  # what the message must name (the README's excerpt contains it)
    setup: Callable[[Path, Path], list[str]]
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the run


RUN = ["--paths", "100", "--out", "out.xlsx"]


def scenario(text: str | bytes | None) -> Callable[[Path, Path], list[str]]:
    """A scenario file ``bad.toml`` holding ``text`` (None: no file at all)."""

    def setup(folder: Path, report: Path) -> list[str]:
        if isinstance(text, bytes):
            (folder / "bad.toml").write_bytes(text)
        elif text is not None:
            (folder / "bad.toml").write_text(text, encoding="utf-8")
        return ["run", "bad.toml", *RUN]

    return setup


def workbook(edit: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    """A report ``bad.xlsx`` (a real one from this version), changed by ``edit``."""

    def setup(folder: Path, report: Path) -> list[str]:
        target = folder / "bad.xlsx"
        shutil.copyfile(report, target)
        edit(target)
        return ["run", "bad.xlsx", *RUN]

    return setup


def without_market(*args: str) -> Callable[[Path, Path], list[str]]:
    """The base case without its [market] table as ``nomarket.toml``, and these arguments."""

    def setup(folder: Path, report: Path) -> list[str]:
        text = TEXT.split("\n[market]\n")[0]
        (folder / "nomarket.toml").write_text(text, encoding="utf-8")
        return list(args)

    return setup


def without_dists(*args: str) -> Callable[[Path, Path], list[str]]:
    """The base case without distributions (nor the correlation that needs one) as ``fixed.toml``."""

    def setup(folder: Path, report: Path) -> list[str]:
        text = re.sub(r', dist = "[a-z]+"', "", TEXT.split("\n[[correlations]]\n")[0])
        (folder / "fixed.toml").write_text(text, encoding="utf-8")
        return list(args)

    return setup


def edited_case(change: tuple[str, str], *args: str) -> Callable[[Path, Path], list[str]]:
    """The base case with one text change as ``edited.toml``, and these arguments."""

    def setup(folder: Path, report: Path) -> list[str]:
        (folder / "edited.toml").write_text(_replace(*change), encoding="utf-8")
        return list(args)

    return setup


def copied(*args: str) -> Callable[[Path, Path], list[str]]:
    """The base case copied as ``bc.toml``, and these arguments."""

    def setup(folder: Path, report: Path) -> list[str]:
        shutil.copyfile(BASE_CASE, folder / "bc.toml")
        return list(args)

    return setup


def arguments(*args: str, out: str | None = "out.xlsx") -> Callable[[Path, Path], list[str]]:
    """The shipped base case with these command-line arguments."""

    def setup(folder: Path, report: Path) -> list[str]:
        if args and args[0] in ("run", "validate", "calibrate", "sensitivity", "break-even", "negotiate",
                                "compare", "frobnicate"):
            return list(args)
        return ["run", str(BASE_CASE), *args, *(["--out", out] if out else [])]

    return setup


def _edit_cell(key: str, value: object, column: int = 2, given: bool = False) -> Callable[[Path], None]:
    """The cell in ``column`` (2: Value, 1: Key) of ``key``'s row on the Assumptions sheet set to ``value``
    (and the row marked given)."""

    def edit(path: Path) -> None:
        wb = load_workbook(path)
        ws = wb["Assumptions"]
        row = next(r for r in range(2, ws.max_row + 1) if ws.cell(row=r, column=1).value == key)
        ws.cell(row=row, column=column, value=value)
        if given:
            ws.cell(row=row, column=5, value="given")
        wb.save(path)

    return edit


def _without_assumptions(path: Path) -> None:
    wb = load_workbook(path)
    del wb["Assumptions"]
    wb.save(path)


def _blank_workbook(path: Path) -> None:
    wb = Workbook()
    wb.active["A1"] = "prices"
    wb.save(path)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _out_is_a_folder(folder: Path, report: Path) -> list[str]:
    (folder / "out.xlsx").unlink()
    (folder / "out.xlsx").mkdir()
    return ["run", str(BASE_CASE), "--paths", "100", "--out", "out.xlsx"]


def _reports_is_a_file(folder: Path, report: Path) -> list[str]:
    (folder / "reports").write_text("notes\n")
    return ["run", str(BASE_CASE), "--paths", "100"]


def _scenario_is_a_folder(folder: Path, report: Path) -> list[str]:
    (folder / "bad.toml").mkdir()
    return ["run", "bad.toml", *RUN]


def _link(target: str) -> Callable[[Path, Path], list[str]]:
    """``--out link.xlsx``, a symbolic link to ``target``."""

    def setup(folder: Path, report: Path) -> list[str]:
        (folder / "link.xlsx").symlink_to(target)
        return ["run", str(BASE_CASE), "--paths", "100", "--out", "link.xlsx"]

    return setup


def _out_is_a_pipe(folder: Path, report: Path) -> list[str]:
    os.mkfifo(folder / "pipe.xlsx")
    return ["run", str(BASE_CASE), "--paths", "100", "--out", "pipe.xlsx"]


def _link_loop(folder: Path, report: Path) -> list[str]:
    (folder / "a.xlsx").symlink_to("b.xlsx")
    (folder / "b.xlsx").symlink_to("a.xlsx")
    return ["run", str(BASE_CASE), "--paths", "100", "--out", "a.xlsx"]


def wide_scenario(structures: int, parties: int) -> str:
    """A valid scenario of many structures and parties (one payment each), built as a user might script it."""
    head = TEXT.split("[parties.microsoft]")[0]
    out = [head]
    for p in range(parties):
        out.append(f"[parties.p{p}]\ndiscount_rate = 0.1\n")
    out.append(TEXT[TEXT.index("# ---------------------------------------------------------------- AGI"):
                    TEXT.index("[[deadlines]]")].replace("[simulation]", ""))
    for i in range(structures):
        out.append(f'[[structures]]\nname = "s{i}"\n[[structures.clauses]]\ntype = "payment"\npayer = "p0"\n'
                   f'payee = "p{1 + i % (parties - 1)}"\namount = 1.0\ndate = 2030-12-31\n')
    return "\n".join(out).replace('baseline = "terms_2019_2023"', 'baseline = "s0"')


CONFLICT = "".join(f'\n[[correlations]]\nbetween = ["{a}", "{b}"]\nrank = {r}\n' for a, b, r in (
    ("revenue.long_run_growth", "revenue.volatility", 0.9), ("revenue.volatility", "revenue.market_size", 0.9),
    ("revenue.long_run_growth", "revenue.market_size", -0.9)))
LATER_POINTS = "".join(f"{line}\n" for line in TEXT.splitlines()  # the declaration's second and third points
                       if line.startswith(("  { by = 2032-12-31", "  { by = 2047-12-31")))
CONTRACTUAL_RATE = next(f"{line}\n" for line in TEXT.splitlines() if line.startswith("contractual = "))
IPO_SIGMA = 'sigma = { value = 0.8, source = "Assumption", date = 2025-08-06 }'
MARKET_SIZE = next(f"{line}\n" for line in TEXT.splitlines() if line.startswith("market_size = "))
IPO = ('family = "lognormal"\nstart = 2026-01-01\n'
       'median = { value = 3.5, low = 2.0, high = 6.0, dist = "lognormal", source = "Assumption: IPO median mid-2029 '
       '(P5 2028, P95 2032)", date = 2025-08-06 }\n'
       'sigma = { value = 0.8, source = "Assumption", date = 2025-08-06 }\n')
RATE_2030 = "{ date = 2030-12-31, rate = { value = 0.08"
PIECE = 'family = "piecewise_hazard"\nstart = 2027-01-01\npieces = [{ from = 2026-01-01, hazard = 0.2 }]\n'
CYCLE = ('name = "terms_2019_2023"\nlabel = "2019/2023 terms (status quo)"\nrequires = "notes_conversion"\n'
         'fallback = "oct_2025_recap"')

CATALOGUE = [
    # ------------------------------------------------------------ scenario files
    Mistake("missing-file", "scenario file", "The file does not exist", "file not found", scenario(None)),
    Mistake("scenario-is-a-folder", "scenario file", "The path is a folder", "is a directory",
            _scenario_is_a_folder),
    Mistake("not-utf8", "scenario file", "Bytes that are not UTF-8 text", "UTF-8", scenario(b'name = "\xff\xfe"\n')),
    Mistake("empty-file", "scenario file", "An empty file", "is empty", scenario("")),
    Mistake("toml-syntax", "scenario file", "Malformed TOML (`steps_per_year = = 4`)", "TOML syntax error",
            scenario(_replace("steps_per_year = 4", "steps_per_year = = 4"))),
    Mistake("unknown-key", "scenario file", "A misspelt key (`step_per_year`)", "simulation.step_per_year",
            scenario(_replace("steps_per_year = 4", "steps_per_year = 4\nstep_per_year = 4"))),
    Mistake("missing-key", "scenario file", "A required key left out (`horizon`)", "simulation.horizon",
            scenario(_replace("horizon = 2040-12-31\n", ""))),
    Mistake("wrong-type", "scenario file", "Text where a number belongs", "simulation.steps_per_year",
            scenario(_replace("steps_per_year = 4", 'steps_per_year = "four"'))),
    Mistake("nan-value", "scenario file", "`nan` for a number", "revenue.initial_growth",
            scenario(_replace("initial_growth = { value = 1.0", "initial_growth = { value = nan"))),
    Mistake("inf-value", "scenario file", "`inf` for a number", "revenue.initial_growth",
            scenario(_replace("initial_growth = { value = 1.0", "initial_growth = { value = inf"))),
    Mistake("negative-volatility", "scenario file", "A negative volatility", "revenue.volatility",
            scenario(_replace("volatility = { value = 0.20", "volatility = { value = -0.20"))),
    Mistake("absurd-volatility", "scenario file", "An absurd volatility (5,000% a year)", "revenue.volatility",
            scenario(_replace("volatility = { value = 0.20", "volatility = { value = 50"))),
    Mistake("explosive-growth", "scenario file",
            "Growth that would overflow (500% a year, no mean reversion, no market size, to 2220)", "revenue",
            scenario(_replace("horizon = 2040-12-31", "horizon = 2220-12-31")
                     .replace(MARKET_SIZE, "")
                     .replace("initial_growth = { value = 1.0, low = 0.72, high = 1.15",
                              "initial_growth = { value = 5.0, low = 0.72, high = 5.0")
                     .replace("mean_reversion = { value = 0.30", "mean_reversion = { value = 0.0"))),
    Mistake("negative-discount-rate", "scenario file", "A discount rate of -100%", "parties.microsoft.discount_rate",
            scenario(_replace("discount_rate = { value = 0.09", "discount_rate = { value = -1.0"))),
    Mistake("probability-above-one", "scenario file", "A probability above 1", "agi.never_verified",
            scenario(_replace("never_verified = { value = 0.10", "never_verified = { value = 1.10"))),
    Mistake("never-is-certain", "scenario file", "An event that never happens with probability 1",
            "events.ipo.never", scenario(_replace(IPO_SIGMA, f"{IPO_SIGMA}\nnever = 1.0"))),
    Mistake("horizon-before-start", "scenario file", "A horizon before the valuation date", "simulation.horizon",
            scenario(_replace("horizon = 2040-12-31", "horizon = 2020-12-31"))),
    Mistake("horizon-too-far", "scenario file", "A horizon 7,974 years out (the time grid would not fit)",
            "simulation.horizon", scenario(_replace("horizon = 2040-12-31", "horizon = 9999-12-31"))),
    Mistake("steps-too-many", "scenario file", "100 million steps a year", "simulation.steps_per_year",
            scenario(_replace("steps_per_year = 4", "steps_per_year = 100_000_000"))),
    Mistake("paths-zero-in-file", "scenario file", "`paths = 0`", "simulation.paths",
            scenario(_replace("paths = 100_000", "paths = 0"))),
    Mistake("paths-negative-in-file", "scenario file", "`paths = -5`", "simulation.paths",
            scenario(_replace("paths = 100_000", "paths = -5"))),
    Mistake("baseline-unknown-in-file", "scenario file", "A baseline that is not a structure",
            "simulation.baseline", scenario(_replace('baseline = "terms_2019_2023"', 'baseline = "terms"'))),
    Mistake("unsorted-schedule", "scenario file", "A rate schedule with dates out of order",
            "structures[1].clauses[0].schedule",
            scenario(_replace(RATE_2030, "{ date = 2025-01-31, rate = { value = 0.08"))),
    Mistake("duplicate-schedule-date", "scenario file", "A rate schedule with the same date twice",
            "structures[1].clauses[0].schedule",
            scenario(_replace(RATE_2030, "{ date = 2025-08-06, rate = { value = 0.08"))),
    Mistake("negative-cap", "scenario file", "A cap below zero", "structures[3].clauses[0].cap",
            scenario(_replace("cap = { value = 38.0", "cap = { value = -38.0"))),
    Mistake("rate-after-cap-without-cap", "scenario file", "A rate after the cap on a clause without a cap",
            "structures[0].clauses[0].rate_after_cap",
            scenario(_replace('end = ["agi_declared", 2030-12-31]   #',
                              'rate_after_cap = 0.1\nend = ["agi_declared", 2030-12-31]   #'))),
    Mistake("tiers-not-increasing", "scenario file", "Profit-share tiers whose caps do not increase",
            "structures[0].clauses[2].tiers", scenario(_replace("until = { value = 92.0", "until = { value = 12.0"))),
    Mistake("unknown-clause-type", "scenario file", "A misspelt clause type", "structures[0].clauses[3].type",
            scenario(_replace('type = "own_value"', 'type = "own_valu"'))),
    Mistake("unknown-party", "scenario file", "A payee that is not a party", "structures[0].clauses[0].payee",
            scenario(_replace('payee = "microsoft"', 'payee = "microsfot"'))),
    Mistake("same-payer-and-payee", "scenario file", "A party paying itself", "common_clauses[0].payee",
            scenario(_replace('payer = "softbank"\npayee = "openai"', 'payer = "openai"\npayee = "openai"'))),
    Mistake("too-many-trigger-terms", "scenario file", "An end trigger with five terms", "structures[0].clauses[0].end",
            scenario(_replace('end = ["agi_declared", 2030-12-31]',
                              'end = ["agi_declared", "ipo", "ipo", "ipo", 2030-12-31]'))),
    Mistake("negative-plus-years", "scenario file", "An event offset of -2 years", "structures[2].clauses[0].end",
            scenario(_replace('end = "agi_verified"', 'end = { event = "agi_verified", plus_years = -2 }'))),
    Mistake("condition-before-valuation-date", "scenario file", "A condition dated before the valuation date",
            "common_clauses[5].condition.before",
            scenario(_replace('condition = { deadline = "amazon_contingency", met = true }',
                              'condition = { event = "ipo", before = 2020-01-01 }'))),
    Mistake("fallback-missing", "scenario file", "A fallback to a structure that does not exist",
            "structures[1].fallback", scenario(_replace('fallback = "terms_2019_2023"', 'fallback = "terms_2019"'))),
    Mistake("fallback-cycle", "scenario file", "Fallbacks in a cycle (A falls back to B falls back to A)",
            "structures[0].fallback",
            scenario(_replace('name = "terms_2019_2023"\nlabel = "2019/2023 terms (status quo)"', CYCLE))),
    Mistake("duplicate-structure", "scenario file", "Two structures with the same name", "structures[2].name",
            scenario(_replace('name = "oct_2025_recap"', 'name = "terms_2019_2023"'))),
    Mistake("deadline-after-horizon", "scenario file", "A deadline after the horizon", "deadlines[2].date",
            scenario(_replace("date = 2028-12-31\nevents", "date = 2045-12-31\nevents"))),
    Mistake("deadline-without-events", "scenario file", "A deadline with an empty list of events", "deadlines[2]",
            scenario(_replace('events = ["ipo", "agi_declared"]', "events = []"))),
    Mistake("reserved-event-name", "scenario file", "An event named like a built-in driver",
            "events.revenue_at_horizon", scenario(TEXT.replace("[events.ipo]", "[events.revenue_at_horizon]").replace(
                '"ipo", "agi_declared"', '"revenue_at_horizon", "agi_declared"'))),
    Mistake("quantile-point-before-start", "scenario file", "A quantile point before its table's start",
            "agi.declaration.points[0].by",
            scenario(_replace("{ by = 2029-12-31, p = { value = 0.25", "{ by = 2025-12-31, p = { value = 0.25"))),
    Mistake("too-few-points-for-fit", "scenario file", "One quantile point for a two-parameter fit",
            "agi.declaration.points", scenario(_replace(
                LATER_POINTS, ""))),
    Mistake("tail-without-piecewise", "scenario file", "A `tail` option on a fitted (not piecewise) table",
            "agi.declaration.tail", scenario(_replace('fit = "lognormal"\n', 'fit = "lognormal"\ntail = "never"\n'))),
    Mistake("piece-before-start", "scenario file", "A hazard piece before its table's start", "events.ipo",
            scenario(_replace(IPO, PIECE))),
    Mistake("source-not-text", "scenario file", "A source that is a number, and a stray key beside it",
            "parties.microsoft.discount_rate.source",
            scenario(_replace('{ value = 0.09, low = 0.08, high = 0.105, source = "MSFT WACC',
                              '{ value = 0.09, low = 0.08, high = 0.105, source = 9, note = "MSFT WACC'))),
    Mistake("source-control-character", "scenario file", "A source with a control character (an escape code "
            "pasted in)", "parties.microsoft.discount_rate.source",
            scenario(_replace('source = "MSFT WACC', 'source = "\\u001bMSFT WACC'))),
    Mistake("payment-absurd", "scenario file", "A payment of 1e300", "amount",
            scenario(_replace("amount = { value = 30.0,", "amount = { value = 1e300,"))),
    Mistake("label-control-character", "scenario file", "A label written as `{ value = ..., source = ... }` "
            "with a control character", "structures[0].label",
            scenario(_replace('label = "2019/2023 terms (status quo)"',
                              'label = { value = "2019/2023\\u0001 terms", source = "x" }'))),
    Mistake("label-empty", "scenario file", "An empty label", "structures[0].label",
            scenario(_replace('label = "2019/2023 terms (status quo)"', 'label = ""'))),
    Mistake("label-too-long", "scenario file", "A label of 300 characters (labels head tables and legends)",
            "structures[0].label",
            scenario(_replace('label = "2019/2023 terms (status quo)"', f'label = "{"x" * 300}"'))),
    Mistake("nested-too-deep", "scenario file", "500 nested `[` in a 1 KB file", "nested too deeply",
            scenario(TEXT + "\nextra = " + "[" * 500 + "]" * 500 + "\n")),
    Mistake("nested-deeper-than-the-schema", "scenario file", "Lists nested 40 deep where a number belongs",
            "simulation.steps_per_year[0][0]",
            scenario(_replace("steps_per_year = 4", "steps_per_year = " + "[" * 40 + "4" + "]" * 40))),
    Mistake("utf16-file", "scenario file", "A file saved as UTF-16 (\"Unicode\" in Notepad)", "UTF-16",
            scenario(TEXT.encode("utf-16"))),
    Mistake("file-too-large", "scenario file", "A 17 MB file (a data dump, not a scenario)", "larger than 16 MB",
            scenario(TEXT + "#" * (17 * 2**20) + "\n")),
    Mistake("workbook-too-wide", "scenario file", "255 structures x 65 parties: the Paths sheet would need more "
            "columns than Excel has", "sheet Paths", scenario(wide_scenario(255, 65))),
    Mistake("too-many-parties-for-charts", "scenario file", "256 parties: more series than an Excel chart holds",
            "charts", scenario(wide_scenario(2, 256))),
    Mistake("mark-in-the-future", "scenario file", "A market mark dated after the valuation date (hindsight)",
            "market.marks[0].date", scenario(_replace("date = 2025-03-31\nequity_value", "date = 2025-09-01\n"
                                                                                             "equity_value"))),
    Mistake("source-after-valuation-date", "scenario file", "An economic input whose source is dated after the "
            "valuation date (hindsight)", "revenue.initial.date",
            scenario(_replace("(Reuters/Investing.com, ~31 Jul 2025)\", date = 2025-08-04",
                              "(Reuters/Investing.com, ~31 Jul 2025)\", date = 2026-01-31"))),
    Mistake("source-date-not-a-date", "scenario file", "A source date that is not a date", "revenue.initial.date",
            scenario(_replace("(Reuters/Investing.com, ~31 Jul 2025)\", date = 2025-08-04",
                              "(Reuters/Investing.com, ~31 Jul 2025)\", date = \"last summer\""))),
    Mistake("market-size-below-revenue", "scenario file", "A market size below today's revenue", "revenue.market_size",
            scenario(_replace("market_size = { value = 1100.0", "market_size = { value = 10.0"))),
    Mistake("risk-class-without-rate", "scenario file", "A clause's risk class that no rate is given for",
            "structures[0].clauses[0].risk", scenario(_replace(
                'label = "OpenAI -> Microsoft revenue share"\n',
                'label = "OpenAI -> Microsoft revenue share"\nrisk = "venture"\n'))),
    Mistake("default-risk-class-without-rate", "scenario file", "No rate for the risk class of a kind's flows "
            "(payments are contractual)", "common_clauses[0]",
            scenario(_replace(CONTRACTUAL_RATE, ""))),
    Mistake("risk-without-market", "scenario file", "A risk class in a scenario without a [market] table",
            "structures[0].clauses[0].risk", scenario(_replace(
                'label = "OpenAI -> Microsoft revenue share"\n',
                'label = "OpenAI -> Microsoft revenue share"\nrisk = "revenue"\n').split("\n[market]\n")[0])),
    Mistake("range-low-above-high", "scenario file", "A range whose low is above its high (and the value)",
            "revenue.volatility.low", scenario(_replace("volatility = { value = 0.20, low = 0.15, high = 0.30",
                                                        "volatility = { value = 0.20, low = 0.35, high = 0.30"))),
    Mistake("range-outside-allowed", "scenario file", "A range reaching outside the input's allowed values",
            "revenue.volatility.high", scenario(_replace("volatility = { value = 0.20, low = 0.15, high = 0.30",
                                                         "volatility = { value = 0.20, low = 0.15, high = 3.5"))),
    Mistake("dist-on-a-deal-term", "scenario file", "A distribution on a deal term (a revenue share's cap)",
            "structures[3].clauses[0].cap.dist", scenario(_replace(
                "cap = { value = 38.0", 'cap = { value = 38.0, low = 30.0, high = 40.0, dist = "pert"'))),
    Mistake("unknown-distribution", "scenario file", "A distribution the tool does not know", "revenue.volatility.dist",
            scenario(_replace('high = 0.30, dist = "pert"', 'high = 0.30, dist = "betapert"'))),
    Mistake("correlation-unknown-name", "scenario file", "A correlation naming no uncertain input or driver",
            "correlations[0].between[1]", scenario(_replace('between = ["agi_declared", "revenue.initial_growth"]',
                                                            'between = ["agi_declared", "revenue.initial_grwth"]'))),
    Mistake("correlation-out-of-range", "scenario file", "A rank correlation outside [-1, 1]", "correlations[0].rank",
            scenario(_replace("rank = { value = -0.4", "rank = { value = -1.4"))),
    Mistake("correlations-cannot-hold", "scenario file", "Rank correlations that cannot hold together (not positive "
            "semi-definite)", "correlations", scenario(TEXT + CONFLICT)),
    # ------------------------------------------------------------ workbooks
    Mistake("not-a-workbook", "workbook", "A text file named `.xlsx`", "not an Excel workbook",
            workbook(lambda path: path.write_text("name,value\nvolatility,0.2\n"))),
    Mistake("damaged-workbook", "workbook", "A workbook cut in half (a failed download)", "bad.xlsx",
            workbook(_truncated)),
    Mistake("no-assumptions-sheet", "workbook", "A workbook without an Assumptions sheet", "Assumptions",
            workbook(_without_assumptions)),
    Mistake("other-workbook", "workbook", "Somebody else's workbook", "Assumptions", workbook(_blank_workbook)),
    Mistake("edited-value-out-of-range", "workbook", "An Assumptions value edited to a negative volatility",
            "revenue.volatility", workbook(_edit_cell("revenue.volatility", -0.3))),
    Mistake("edited-value-not-a-number", "workbook", "An Assumptions value edited to text", "revenue.initial",
            workbook(_edit_cell("revenue.initial", "twelve"))),
    Mistake("edited-date-not-a-date", "workbook", "A date edited to text", "simulation.horizon",
            workbook(_edit_cell("simulation.horizon", "end of 2040"))),
    Mistake("edited-key-conflict", "workbook", "An Assumptions key edited to run into another "
            "(`simulation.steps_per_year.x`)", "simulation.steps_per_year",
            workbook(_edit_cell("simulation.paths", "simulation.steps_per_year.x", column=1, given=True))),
    Mistake("edited-index-huge", "workbook", "An Assumptions key edited to a list position of 100 million",
            "structures[99999999]",
            workbook(_edit_cell("structures[0].name", "structures[99999999].name", column=1, given=True))),
    Mistake("edited-low-not-a-number", "workbook", "A range's Low edited to text", "revenue.volatility.low",
            workbook(_edit_cell("revenue.volatility", "low", column=10))),
    Mistake("edited-distribution-unknown", "workbook", "A Distribution edited to one the tool does not know",
            "revenue.volatility.dist", workbook(_edit_cell("revenue.volatility", "gamma", column=12))),
    # ------------------------------------------------------------ environment
    Mistake("numba-threads-zero", "environment", "`NUMBA_NUM_THREADS=0`", "NUMBA_NUM_THREADS",
            arguments("--paths", "100"), env=(("NUMBA_NUM_THREADS", "0"),)),
    Mistake("numba-threads-not-a-number", "environment", "`NUMBA_NUM_THREADS=two`", "NUMBA_NUM_THREADS",
            arguments("--paths", "100"), env=(("NUMBA_NUM_THREADS", "two"),)),
    Mistake("threading-layer-unknown", "environment", "`NUMBA_THREADING_LAYER=fast` (no such layer)",
            "NUMBA_THREADING_LAYER", arguments("--paths", "100"), env=(("NUMBA_THREADING_LAYER", "fast"),)),
    # ------------------------------------------------------------ command line
    Mistake("paths-zero", "command line", "`--paths 0`", "paths", arguments("--paths", "0")),
    Mistake("paths-negative", "command line", "`--paths -5` (without `--out`: no `reports/` folder is made either)",
            "paths", arguments("--paths", "-5", out=None)),
    Mistake("paths-not-a-number", "command line", "`--paths many`", "--paths", arguments("--paths", "many")),
    Mistake("paths-absurd", "command line", "`--paths 1e11` written out (a typo: about 3 days of work)", "paths",
            arguments("--paths", "100_000_000_000")),
    Mistake("paths-beyond-memory", "command line",
            "`--keep-paths` with more paths than memory holds (estimated before running, from this machine's memory)",
            "paths",
            arguments("--keep-paths", "--paths", "9_000_000_000")),
    Mistake("seed-too-large", "command line", "A seed beyond 64 bits", "seed", arguments("--seed", str(2**70))),
    Mistake("seed-negative", "command line", "A negative seed", "seed", arguments("--seed", "-1")),
    Mistake("threads-too-many", "command line", "More threads than the machine has", "threads",
            arguments("--threads", "999")),
    Mistake("baseline-unknown", "command line", "A baseline that is not a structure", "--baseline",
            arguments("--baseline", "nope")),
    Mistake("stream-and-keep", "command line", "`--stream` and `--keep-paths` together", "--keep-paths",
            arguments("--stream", "--keep-paths")),
    Mistake("out-folder-missing", "command line", "An output path in a folder that does not exist", "does not exist",
            arguments(out="no/such/folder/out.xlsx")),
    Mistake("out-folder-read-only", "command line", "An output path in a folder no one can write in (`/proc`)",
            "not writable", arguments(out="/proc/out.xlsx")),
    Mistake("out-is-a-folder", "command line", "An output path that is a folder", "is a directory",
            _out_is_a_folder),
    Mistake("default-folder-is-a-file", "command line", "No `--out`, and a file named `reports` where the "
            "default folder goes", "reports", _reports_is_a_file),
    Mistake("out-name-too-long", "command line", "An output file name of 261 bytes (the file system takes 255)",
            "a file name of 261 bytes", arguments(out="y" * 256 + ".xlsx")),
    Mistake("out-link-target-missing", "command line", "An output path that is a link into a folder that does "
            "not exist", "link.xlsx", _link("missing/out.xlsx")),
    Mistake("out-link-target-read-only", "command line", "An output path that is a link into a folder no one "
            "can write in (`/proc`)", "link.xlsx", _link("/proc/out.xlsx")),
    Mistake("out-link-loop", "command line", "An output path that is a loop of links", "a.xlsx", _link_loop),
    Mistake("out-is-a-pipe", "command line", "An output path that is a named pipe (or a device)", "pipe.xlsx",
            _out_is_a_pipe),
    Mistake("out-not-xlsx", "command line", "An output path not ending in `.xlsx`", "out.csv",
            arguments(out="out.csv")),
    Mistake("unknown-option", "command line", "A misspelt option (`--path`; no abbreviations)", "--path",
            arguments("run", str(BASE_CASE), "--path", "100")),
    Mistake("no-file", "command line", "`valuation run` without a file", "file", arguments("run")),
    Mistake("unknown-command", "command line", "An unknown command", "frobnicate", arguments("frobnicate")),
    Mistake("view-market-without-market", "command line", "`--view market` for a scenario without [market]",
            "--view", without_market("run", "nomarket.toml", "--view", "market", *RUN)),
    Mistake("calibrate-unknown-mark", "command line", "`calibrate --mark` naming no mark of the scenario", "--mark",
            arguments("calibrate", str(BASE_CASE), "--vary", "revenue.exit_multiple", "--mark", "ipo_2027",
                      "--paths", "100")),
    Mistake("calibrate-not-a-number", "command line", "`calibrate --vary` naming an input that is not a number",
            "--vary", arguments("calibrate", str(BASE_CASE), "--vary", "structures[0].name", "--mark",
                                "softbank_round_2025", "--paths", "100")),
    Mistake("calibrate-no-root", "command line", "A calibration with no root in the range searched",
            "revenue.exit_multiple", arguments("calibrate", str(BASE_CASE), "--vary", "revenue.exit_multiple",
                                               "--mark", "softbank_round_2025", "--paths", "200", "--between",
                                               "1", "2")),
    Mistake("uncertain-without-distributions", "command line", "`--uncertain` for a scenario in which no input "
            "has a distribution", "--uncertain", without_dists("run", "fixed.toml", "--uncertain", *RUN)),
    Mistake("sensitivity-unknown-input", "command line", "`sensitivity --inputs` naming no input of the scenario",
            "revenue.nonsense", arguments("sensitivity", str(BASE_CASE), "--inputs", "revenue.nonsense", "--paths",
                                          "100", "--out", "out.xlsx")),
    Mistake("sensitivity-input-without-range", "command line", "`sensitivity --inputs` naming an input without a "
            "low/high range", "revenue.mean_reversion", arguments("sensitivity", str(BASE_CASE), "--inputs",
                                                                  "revenue.mean_reversion", "--out", "out.xlsx")),
    Mistake("sensitivity-empty-range", "command line", "`sensitivity` of an input whose range is empty "
            "(`low = high`)", "revenue.exit_multiple",
            edited_case(('exit_multiple = { value = 6.818, low = 6.0, high = 10.0',
                         'exit_multiple = { value = 6.818, low = 6.818, high = 6.818'),
                        "sensitivity", "edited.toml", "--inputs", "revenue.exit_multiple", "--out", "out.xlsx")),
    Mistake("sensitivity-unknown-statistic", "command line", "`sensitivity --statistic` of no known statistic",
            "--statistic", arguments("sensitivity", str(BASE_CASE), "--statistic", "p150", "--out", "out.xlsx")),
    Mistake("sensitivity-one-point", "command line", "`sensitivity --points` below 2", "--points",
            arguments("sensitivity", str(BASE_CASE), "--points", "1", "--out", "out.xlsx")),
    Mistake("negotiate-walk-away-is-the-structure", "command line", "`negotiate --walk-away` naming the structure "
            "negotiated", "--walk-away", arguments("negotiate", str(BASE_CASE), "--vary", "revenue.exit_multiple",
                                                   "--structure", "oct_2025_recap", "--walk-away", "oct_2025_recap",
                                                   "--out", "out.xlsx")),
    Mistake("negotiate-unknown-party", "command line", "`negotiate --parties` naming no party of the scenario",
            "--parties", arguments("negotiate", str(BASE_CASE), "--vary", "revenue.exit_multiple", "--structure",
                                   "oct_2025_recap", "--parties", "microsoft", "nobody", "--out", "out.xlsx")),
    Mistake("break-even-unknown-structure", "command line", "`break-even --structure` naming no structure",
            "--structure", arguments("break-even", str(BASE_CASE), "--vary", "revenue.exit_multiple", "--structure",
                                     "nope", "--party", "microsoft")),
    Mistake("compare-unknown-variant", "command line", "`compare --variants` naming no variant of the scenario",
            "--variants", arguments("compare", str(BASE_CASE), "--variants", "nope", "--out", "out.xlsx")),
    Mistake("calibrate-onto-the-input", "command line", "`calibrate --out` naming the input scenario", "--out",
            copied("calibrate", "bc.toml", "--vary", "revenue.exit_multiple", "--mark", "softbank_round_2025",
                   "--out", "bc.toml")),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A real report of this version, to damage and edit."""
    from valuation import simulate

    return simulate(BASE_CASE, paths=200, seed=1).to_excel(tmp_path_factory.mktemp("report") / "report.xlsx")


def _snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry's bytes and time (a link's own, not its target's: some point nowhere)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None,
                                         p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def run_mistake(mistake: Mistake, folder: Path, report: Path) -> tuple[int, dict, dict]:
    """Make the mistake in ``folder`` (the working directory) beside an earlier ``out.xlsx``."""
    (folder / "out.xlsx").write_bytes(PRECIOUS)
    argv = mistake.setup(folder, report)
    before = _snapshot(folder)
    cwd = os.getcwd()
    saved = {name: os.environ.get(name) for name, _ in mistake.env}
    os.chdir(folder)
    os.environ.update(dict(mistake.env))
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    finally:
        os.chdir(cwd)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code, before, _snapshot(folder)


def readme_catalogue() -> list[tuple[str, str, str, str]]:
    """(id, where, what, excerpt) of each row of the README table "What bad input gets"."""
    text = README.read_text(encoding="utf-8")
    if "## What bad input gets" not in text:
        return []
    section = text.split("## What bad input gets", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 4 and re.fullmatch(r"`[a-z0-9-]+`", cells[0]):
            excerpt = cells[3].strip("`").replace("\\|", "|")
            rows.append((cells[0].strip("`"), cells[1], cells[2], excerpt))
    return rows


README_ROWS = {row[0]: row for row in readme_catalogue()}


def _quotes(excerpt: str, err: str) -> bool:
    """The message contains the excerpt: its parts, in order, where ``…`` marks text left out."""
    text, at = " ".join(err.split()), 0
    for part in (p for p in excerpt.split("…") if p):
        at = text.find(part, at)
        if at < 0:
            raise AssertionError(f"{part!r} (from the README's excerpt {excerpt!r}) is not in the message:\n{err}")
        at += len(part)
    return True


def test_the_readme_catalogues_every_case_and_only_those():
    assert [row[0] for row in readme_catalogue()] == [m.id for m in CATALOGUE]
    assert len(CATALOGUE) >= 30
    for m in CATALOGUE:
        _, where, what, excerpt = README_ROWS[m.id]
        assert (where, what) == (m.where, m.what), m.id
        assert m.key in excerpt, (m.id, m.key, excerpt)


@pytest.mark.parametrize("mistake", CATALOGUE, ids=[m.id for m in CATALOGUE])
def test_bad_input_gets_exit_2_one_message_and_nothing_written(tmp_path, capsys, report, mistake):
    code, before, after = run_mistake(mistake, tmp_path, report)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(re.findall(r"^(?:valuation[a-z ]*: )?error: ", err, re.M)) == 1, err
    assert _quotes(README_ROWS[mistake.id][3], err)
    assert after == before  # nothing written, nothing touched (the earlier out.xlsx included)
    assert not (tmp_path / "reports").is_dir()  # not even the default folder


SCENARIO_ROWS = [m for m in CATALOGUE if m.where == "scenario file" and m.id not in ("missing-file",)]


@pytest.mark.parametrize("mistake", SCENARIO_ROWS[::4], ids=lambda m: m.id)
def test_validate_reports_the_same_problem(tmp_path, capsys, monkeypatch, report, mistake):
    argv = mistake.setup(tmp_path, report)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", argv[1]]) == 2
    assert _quotes(README_ROWS[mistake.id][3], capsys.readouterr().err)


def test_good_file_validates(capsys):
    assert main(["validate", str(BASE_CASE)]) == 0
    assert "valid" in capsys.readouterr().out


def test_console_script_exit_code_and_no_traceback(tmp_path):
    """The installed entry point, in a real process."""
    bad = tmp_path / "bad.toml"
    bad.write_text(_replace("volatility = { value = 0.20", "volatility = { value = -0.20"), encoding="utf-8")
    exe = Path(sys.executable).with_name("valuation")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "valuation.cli"]
    proc = subprocess.run([*cmd, "run", str(bad), "--out", str(tmp_path / "x.xlsx")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    assert proc.returncode == 2
    assert "revenue.volatility" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.xlsx").exists()
