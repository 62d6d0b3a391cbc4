"""Command line: ``valuation run FILE`` and ``valuation validate FILE``.

Exit codes: 0 success; 2 bad input or usage, or a workbook that could not be
written (a message, no traceback); 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM), either with nothing written unless the workbook was complete;
1 unexpected failure (a traceback to report).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import sys
from pathlib import Path

from valuation import interrupts
from valuation.errors import InputError, Problem, printable
from valuation.interrupts import Terminated

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
DEFAULT_FOLDER = "reports"  # where `valuation run` writes without --out


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)  # `--path` is a typo, not `--paths`

    def error(self, message: str):  # usage errors: exit 2 with the usage line and the message
        if message.startswith("unrecognized arguments: "):
            message += _did_you_mean(message.split(": ", 1)[1].split()[0], self)
        self.print_usage(sys.stderr)
        _say(sys.stderr, f"{self.prog}: error: {printable(message)}")
        raise SystemExit(EXIT_INPUT)


def _did_you_mean(word: str, parser: argparse.ArgumentParser) -> str:
    options = [o for action in parser._actions for o in action.option_strings]
    close = difflib.get_close_matches(word.split("=")[0], options, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="valuation", description="Monte Carlo valuation of AGI-era deal structures.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="simulate a scenario, print the summary and write the workbook")
    run.add_argument("file", help="scenario file (.toml), or a report (.xlsx) whose Assumptions sheet to re-run")
    run.add_argument("--paths", type=_count, help="number of Monte Carlo paths (default: the scenario's)")
    run.add_argument("--seed", type=_count, help="random seed (default: the scenario's)")
    run.add_argument("--out", help="workbook path (default: reports/<file stem>.xlsx)")
    run.add_argument("--threads", type=_count, help="worker threads (default: all cores)")
    run.add_argument("--baseline", help="structure to compare the others with (default: the scenario's)")
    keep = run.add_mutually_exclusive_group()
    keep.add_argument("--stream", dest="keep_paths", action="store_false", default=None,
                      help="keep no per-path arrays: flat memory for any number of paths, percentiles from "
                           "histograms (within 0.05%%); the default above about 6M paths of the base case")
    keep.add_argument("--keep-paths", dest="keep_paths", action="store_true", default=None,
                      help="keep every path (exact percentiles), however many")
    draws = run.add_mutually_exclusive_group()
    draws.add_argument("--uncertain", dest="uncertain", action="store_true", default=None,
                       help="draw every input that has a distribution (dist) once per path, correlated as the "
                            "scenario's [[correlations]] say (default: the scenario's simulation.uncertain)")
    draws.add_argument("--fixed", dest="uncertain", action="store_false", default=None,
                       help="hold every input at its value, whatever the scenario's default")
    run.add_argument("--target-se", type=float, metavar="USD_BN",
                     help="auto-stop: add batches of paths until every mean's standard error is at most this")
    run.add_argument("--target-rel", type=float, metavar="FRACTION",
                     help="auto-stop: ... at most this fraction of the mean's size (e.g. 0.001)")
    run.add_argument("--max-paths", type=_count, help="auto-stop's limit (default 10,000,000); --paths is then "
                                                      "the first batch (default 10,000)")
    run.add_argument("--view", choices=("party", "market", "both"), default=None,
                     help="which PVs to print: each party's own rates and own-value streams (party), each flow at "
                          "its risk class's rate (market), or both (the default where the scenario has [market])")
    check = sub.add_parser("validate", help="check a scenario file and report every problem")
    check.add_argument("file", help="scenario file (.toml) or report (.xlsx)")
    cal = sub.add_parser("calibrate", help="solve one input so that the model's company value meets a market mark")
    cal.add_argument("file", help="scenario file (.toml) or report (.xlsx) with a [market] table and marks")
    cal.add_argument("--vary", required=True, help="key path of the number to solve, e.g. revenue.exit_multiple")
    cal.add_argument("--mark", required=True, help="name of the mark in market.marks to meet")
    cal.add_argument("--out", help="write the calibrated scenario here (.toml; never the input file)")
    cal.add_argument("--paths", type=_count, help="paths of every run (default: the scenario's)")
    cal.add_argument("--seed", type=_count, help="random seed of every run (default: the scenario's)")
    cal.add_argument("--between", type=float, nargs=2, metavar=("LOW", "HIGH"),
                     help="range to search (default: the input's allowed range)")
    sens = sub.add_parser("sensitivity", help="tornado and spider: each input with a low/high range re-run at its "
                                              "ends on the same random numbers; writes a workbook")
    sens.add_argument("file", help="scenario file (.toml) or report (.xlsx)")
    sens.add_argument("--inputs", nargs="+", metavar="KEY", help="key paths of the inputs to vary (default: every "
                                                                 "input with a low/high range)")
    sens.add_argument("--statistic", default="mean", help=common_statistic_help())
    sens.add_argument("--points", type=_count, default=5, help="points across each range for the spider, both ends "
                                                               "included (default 5; 2: the tornado only)")
    sens.add_argument("--baseline", help="structure the diff statistic compares with (default: the scenario's)")
    _run_options(sens, "-sensitivity", " (the varied one held at each point)")
    be = sub.add_parser("break-even", help="the value of one input at which a party's statistic under one structure "
                                           "equals that under another (or a target), on common random numbers")
    be.add_argument("file", help="scenario file (.toml) or report (.xlsx)")
    be.add_argument("--vary", required=True, help="key path of the number to solve, e.g. structures[3].clauses[0].cap")
    be.add_argument("--structure", required=True, help="the structure whose value is solved for")
    be.add_argument("--party", required=True, help="the party whose value it is")
    be.add_argument("--versus", help="the structure to break even against (default: none; then --target)")
    be.add_argument("--target", type=float, default=0.0, help="the value to meet without --versus (USD bn; default 0)")
    be.add_argument("--statistic", default="mean", help="mean (the default), p<q> or cvar<q>")
    be.add_argument("--between", type=float, nargs=2, metavar=("LOW", "HIGH"),
                    help="range to search (default: the input's low/high range, else its allowed range)")
    _run_options(be, "-break-even")
    neg = sub.add_parser("negotiate", help="each party's gain over its walk-away across a negotiated term: the zone "
                                          "of possible agreement and the Nash point; writes a workbook")
    neg.add_argument("file", help="scenario file (.toml) or report (.xlsx)")
    neg.add_argument("--vary", required=True, nargs="+", metavar="KEY",
                     help="key path of the negotiated term (two for a grid), e.g. "
                          "structures[1].clauses[0].schedule[1].rate")
    neg.add_argument("--structure", required=True, help="the structure whose term is negotiated")
    neg.add_argument("--parties", nargs="+", metavar="PARTY",
                     help="the parties at the table (default: the two sides of the clause the term belongs to)")
    neg.add_argument("--walk-away", help="each party's alternative structure (default: the baseline)")
    neg.add_argument("--weights", type=float, nargs="+", metavar="W",
                     help="bargaining power, one per party (default: equal)")
    neg.add_argument("--statistic", default="mean", help="mean (the default), p<q> or cvar<q> (a risk-adjusted gain)")
    neg.add_argument("--points", type=_count, default=11, help="grid points across each term's range (default 11)")
    neg.add_argument("--between", type=float, nargs=2, metavar=("LOW", "HIGH"),
                     help="the term's range (one term; default: its low/high range, else its allowed range)")
    _run_options(neg, "-negotiation")
    att = sub.add_parser("attribution", help="how much of each PV's variance each random source explains, from one "
                                            "run (first-order indices, decile bars); writes a workbook")
    att.add_argument("file", help="scenario file (.toml) or report (.xlsx)")
    att.add_argument("--bins", type=_count, help="bins for the conditional means (default 50)")
    _run_options(att, "-attribution")
    cmp = sub.add_parser("compare", help="the scenario's named [[variants]] on the same random numbers, side by "
                                        "side with their differences; writes a workbook")
    cmp.add_argument("file", help="scenario file (.toml) or report (.xlsx) with [[variants]]")
    cmp.add_argument("--variants", nargs="+", metavar="NAME", help="the variants to run (default: all)")
    cmp.add_argument("--statistic", default="mean", help=common_statistic_help())
    _run_options(cmp, "-scenarios")
    parser.set_defaults(commands={"run": run, "validate": check, "calibrate": cal, "sensitivity": sens,
                                  "break-even": be, "negotiate": neg, "attribution": att, "compare": cmp})
    return parser


def _run_options(parser: argparse.ArgumentParser, out_suffix: str | None = None, held: str = "") -> None:
    """An analysis command's options for its runs (and its workbook, where it writes one)."""
    parser.add_argument("--paths", type=_count, help="paths of every run (default: the scenario's)")
    parser.add_argument("--seed", type=_count, help="random seed of every run (default: the scenario's)")
    parser.add_argument("--threads", type=_count, help="worker threads (default: all cores)")
    if out_suffix is not None:
        parser.add_argument("--out", help=f"workbook path (default: reports/<file stem>{out_suffix}.xlsx)")
    draws = parser.add_mutually_exclusive_group()
    draws.add_argument("--uncertain", dest="uncertain", action="store_true", default=None,
                       help=f"draw the inputs that have a distribution{held}")
    draws.add_argument("--fixed", dest="uncertain", action="store_false", default=None,
                       help="hold every input at its value, whatever the scenario's default")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Arguments; an unknown option is reported by its command's parser, with a suggestion."""
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        args.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    _forgiving_streams()
    args = _parse(argv)
    with interrupts.handled():
        try:
            from valuation import environment

            environment.check()  # before numba starts: a bad NUMBA_* setting is bad input, not a traceback
            if args.command == "validate":
                return _validate(args)
            if args.command == "calibrate":
                return _calibrate(args)
            if args.command == "sensitivity":
                return _sensitivity(args)
            if args.command == "break-even":
                return _break_even(args)
            if args.command == "negotiate":
                return _negotiate(args)
            if args.command == "attribution":
                return _attribution(args)
            if args.command == "compare":
                return _compare(args)
            return _run(args)
        except InputError as exc:
            _say(sys.stderr, f"error: {_as_flags(exc).message()}")
            return EXIT_INPUT
        except KeyboardInterrupt as exc:
            return _stopped(exc)
        except Exception as exc:
            if interrupts.received() is not None:  # a failure the interruption caused (e.g. a compile cut short)
                return _stopped(interrupts.exception_for(interrupts.received()))
            import traceback  # an unexpected failure is a bug: keep the traceback for the report

            traceback.print_exc()
            _say(sys.stderr, f"unexpected failure ({type(exc).__name__}); please report it with the traceback above")
            return EXIT_FAILURE


# the Python API's argument names as the command line spells them: a check made inside the API names the flag
FLAGS = {name: "--" + name.replace("_", "-") for name in (
    "paths", "seed", "threads", "points", "between", "statistic", "inputs", "variants", "weights", "parties",
    "walk_away", "vary", "structure", "party", "versus", "target", "bins", "baseline", "target_se", "target_rel",
    "max_paths")}


def _as_flags(exc: InputError) -> InputError:
    """An argument error from the API (no file named) with its argument named as the command line spells it."""
    if exc.source:
        return exc
    problems = [dataclasses.replace(p, key=FLAGS.get(p.key, p.key)) for p in exc.problems]
    return InputError("", problems)


def _forgiving_streams() -> None:
    """Text the console's encoding cannot show (PYTHONIOENCODING=latin-1, an ASCII locale) is escaped, never
    an error: names and labels come from inputs.  A standard descriptor that was closed (``>&-``) is opened
    on /dev/null first: otherwise the next file opened -- the workbook -- would take its number."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            _silence(fd)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (OSError, ValueError):  # a closed stream
                pass


def _say(stream, text: str) -> bool:
    """Write a line and flush; False if the stream is gone, closed or full (never an exception)."""
    try:
        if stream is None:
            return False
        stream.write(text + "\n")
        stream.flush()
        return True
    except (OSError, ValueError):
        return False


def _silence(fd: int) -> None:
    """Point a failed (or closed) standard descriptor at /dev/null, so that Python's flush at exit does not
    fail (exit 120) and no file we open takes its number."""
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
    except OSError:
        pass


def _stopped(exc: KeyboardInterrupt) -> int:
    what = "terminated" if isinstance(exc, Terminated) else "interrupted"
    done = interrupts.last_completed()  # the workbook's rename and this note are one step for a signal
    if done is not None:
        _say(sys.stderr, f"{what}: the workbook {printable(str(done))} was already complete")
    else:
        _say(sys.stderr, f"{what}: nothing was written (any earlier workbook is unchanged)")
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def _validate(args: argparse.Namespace) -> int:
    from valuation.engine.compile import compile_scenario
    from valuation.report import check_fits
    from valuation.scenario import load_scenario

    scenario = load_scenario(args.file)
    scenario.check_variants()
    compiled = compile_scenario(scenario)
    check_fits(compiled, scenario, scenario.simulation.paths, f"{args.file} (its workbook)")
    lines = [f"{printable(args.file)}: valid: {len(scenario.structures)} structures, {len(scenario.parties)} parties, "
             f"{len(scenario.deadlines)} deadlines, {compiled.n_steps} steps"]
    for key, fit in compiled.fits.items():
        lines.append(f"  {key}: {fit.distribution} fitted to {len(fit.probs)} points, residual {fit.residual:.2g}")
    if not _say(sys.stdout, "\n".join(lines)) and _has_fileno(sys.stdout):
        _silence(sys.stdout.fileno())
    return EXIT_OK


def _output(args: argparse.Namespace, size: int, suffix: str = "") -> tuple[Path, Path | None]:
    """The workbook path, checked (room for ``size`` bytes), and the default folder to create just before
    writing (None: none); the default name is the file's stem and ``suffix``."""
    from valuation.report.xlsx import check_output_path, unwritable

    if args.out is not None:
        if not args.out.strip():
            raise InputError("", [Problem("--out", "the path of an .xlsx workbook", args.out)])
        return check_output_path(args.out, size), None
    folder = Path(DEFAULT_FOLDER)
    out = folder / f"{Path(args.file).stem}{suffix}.xlsx"
    if out.exists() and Path(args.file).exists() and os.path.realpath(out) == os.path.realpath(args.file):
        out = out.with_name(f"{out.stem}-rerun.xlsx")  # never overwrite the workbook we read by default
    if folder.is_dir():
        return check_output_path(out, size), None
    if folder.exists() or folder.is_symlink():
        raise InputError(str(folder), "is not a folder; expected the folder for workbooks (or give --out)")
    try:
        here = Path.cwd()
    except OSError as exc:  # the working folder was removed under us
        raise InputError(str(out), f"the working folder cannot be found ({exc.strerror or exc}); expected an "
                                   "existing working folder (or give --out)") from None
    problem = unwritable(here, size)
    if problem:
        raise InputError(str(out), f"the folder {DEFAULT_FOLDER!r} cannot be created in {str(here)!r} "
                                   f"({problem}); expected a writable working folder (or give --out)")
    return out, folder


def _run(args: argparse.Namespace) -> int:
    from valuation import simulate
    from valuation.engine.compile import compile_scenario
    from valuation.report import check_fits, estimated_bytes
    from valuation.scenario import load_scenario

    scenario = load_scenario(args.file)
    if args.view in ("market", "both") and scenario.market is None:
        raise InputError("", [Problem("--view", "party: the scenario has no [market] table (rates by risk class), so "
                                      "it has no market view", args.view)])
    if args.baseline is not None and args.baseline not in scenario.structure_names():
        raise InputError("", [Problem("--baseline", f"one of {scenario.structure_names()}", args.baseline)])
    uncertain = scenario.simulation.uncertain if args.uncertain is None else args.uncertain
    if uncertain and not scenario.ranges_with_dist():
        raise InputError("", [Problem("--uncertain", "expected a scenario with at least one input with a "
                                      "distribution (e.g. `volatility = { value = 0.2, low = 0.15, high = 0.3, "
                                      f"dist = \"pert\" }}`); {args.file} has none", has_value=False)])
    compiled = compile_scenario(scenario, uncertain=uncertain)  # every check, the correlations' too
    auto = args.target_se is not None or args.target_rel is not None
    for name, value, most in (("--target-se", args.target_se, math.inf), ("--target-rel", args.target_rel, 1.0)):
        if value is not None and not (math.isfinite(value) and 0 < value <= most):
            raise InputError("", [Problem(name, "a positive number" + (" at most 1 (a fraction of each mean's "
                                                                        "size: 0.001 is 0.1%)" if most == 1 else ""),
                                          value)])
    if args.max_paths is not None and not auto:
        raise InputError("", [Problem("--max-paths", "--target-se or --target-rel beside it (the limit of an "
                                      "auto-stop run)", args.max_paths)])
    if auto and args.paths is not None and args.max_paths is not None and args.paths > args.max_paths:
        raise InputError("", [Problem("--paths", f"a first batch no larger than --max-paths {args.max_paths:,}",
                                      args.paths)])
    paths = (args.max_paths or 10_000_000) if auto else scenario.simulation.paths if args.paths is None \
        else args.paths
    rows = max(paths, 1)
    out, folder = _output(args, estimated_bytes(compiled, scenario, rows))
    check_fits(compiled, scenario, rows, str(out))  # every check of the workbook before any path runs
    bar = _progress_bar(paths)

    def progress(done: int) -> None:  # after each chunk
        interrupts.check()  # a signal whose exception was dropped on the way stops the run here
        if bar:
            bar.update(done)

    try:
        targets = {"target_se": args.target_se, "target_rel": args.target_rel, "max_paths": args.max_paths} \
            if auto else {}
        result = simulate(scenario, paths=args.paths if auto else paths, seed=args.seed, threads=args.threads,
                          progress=progress, keep_paths=args.keep_paths, baseline=args.baseline,
                          uncertain=uncertain, **targets)
    finally:
        if bar:
            bar.close()
    interrupts.check()
    _make_folder(folder)
    written = result.to_excel(out)  # before printing: a closed pipe must not cost the workbook
    lines = _report(scenario, result, args.view) + ["", f"workbook: {printable(str(written))}"]
    if not _say(sys.stdout, "\n".join(lines)):  # a full disk, a closed pipe or no stdout: the work is done
        if sys.stdout is not None:
            _silence(sys.stdout.fileno() if _has_fileno(sys.stdout) else 1)
        _say(sys.stderr, f"note: the summary could not be printed (standard output is closed or full); the "
                         f"workbook is complete: {printable(str(written))}")
    return EXIT_OK


def _written(scenario, analysis, out: Path, folder: Path | None) -> int:
    """An analysis's end: its workbook written (the default folder made first), then its account printed."""
    interrupts.check()
    _make_folder(folder)
    written = analysis.to_excel(out)
    _say(sys.stdout, "\n".join([scenario.name, *analysis.lines(), "", f"workbook: {printable(str(written))}"]))
    return EXIT_OK


def _make_folder(folder: Path | None) -> None:
    """The default folder is ours to create, once there is a workbook to put in it."""
    if folder is None:
        return
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(str(folder), f"cannot be created ({exc.strerror or exc}); expected a writable "
                                      "working folder (or give --out)") from None


def common_statistic_help() -> str:
    return ("mean (mean PV, the default), diff (mean of PV minus the baseline structure's, path by path), p<q> (a "
            "percentile, e.g. p5) or cvar<q> (minus the mean of the worst q%% of paths)")


def _sensitivity(args: argparse.Namespace) -> int:
    from valuation.analysis import common
    from valuation.analysis.sensitivity import sensitivity
    from valuation.engine.compile import compile_scenario
    from valuation.scenario import load_scenario

    scenario = load_scenario(args.file)
    common.statistic("", args.statistic, "--statistic")  # every check before any path runs
    keys = common.ranged_inputs("", scenario, args.inputs)
    if args.baseline is not None:
        common.name_argument("", "--baseline", args.baseline, scenario.structure_names(), "a structure")
    if args.points < 2:
        raise InputError("", [Problem("--points", "a whole number >= 2 (both ends of each range)", args.points)])
    uncertain = scenario.simulation.uncertain if args.uncertain is None else args.uncertain
    compile_scenario(scenario, uncertain=uncertain)
    paths = scenario.simulation.paths if args.paths is None else args.paths
    if paths < 2 * common.BATCHES:
        raise InputError("", [Problem("--paths", f"a whole number >= {2 * common.BATCHES} (standard errors come "
                                      f"from {common.BATCHES} batches of paths)", paths)])
    out, folder = _output(args, 200_000 + 2_000 * len(keys) * len(scenario.structures) * len(scenario.parties),
                          "-sensitivity")
    result = _counted(lambda progress: sensitivity(
        scenario, keys, paths=paths, seed=args.seed, statistic=args.statistic, points=args.points,
        uncertain=uncertain, baseline=args.baseline, threads=args.threads, progress=progress),
        1 + len(keys) * args.points)
    return _written(scenario, result, out, folder)


def _break_even(args: argparse.Namespace) -> int:
    from valuation.analysis import common
    from valuation.analysis.break_even import break_even
    from valuation.scenario import load_scenario

    scenario = load_scenario(args.file)
    names = scenario.structure_names()  # every check before any path runs, named as on the command line
    common.name_argument("", "--structure", args.structure, names, "a structure")
    common.name_argument("", "--party", args.party, scenario.party_names(), "a party")
    if args.versus is not None:
        common.name_argument("", "--versus", args.versus, names, "a structure")
        if args.versus == args.structure:
            raise InputError("", [Problem("--versus", f"a structure other than --structure {args.structure!r} (the "
                                          "gap against itself is zero everywhere)", args.versus)])
    common.statistic("", args.statistic, "--statistic")
    common.number_at("", scenario, "--vary", args.vary)
    if args.between is not None:
        common.search_between("", scenario, args.vary, 0.0, list(args.between))
    if not math.isfinite(args.target):
        raise InputError("", [Problem("--target", "a finite number (USD bn)", args.target)])
    out, folder = _output(args, 80_000, "-break-even")
    result = _counted(lambda progress: break_even(
        scenario, args.vary, args.structure, args.party, args.versus, statistic=args.statistic, target=args.target,
        paths=args.paths, seed=args.seed, between=args.between, uncertain=args.uncertain, threads=args.threads,
        progress=progress))
    return _written(scenario, result, out, folder)


def _negotiate(args: argparse.Namespace) -> int:
    from valuation.analysis import common
    from valuation.analysis.negotiate import negotiate
    from valuation.scenario import load_scenario

    scenario = load_scenario(args.file)
    names = scenario.structure_names()  # every check before any path runs, named as on the command line
    common.name_argument("", "--structure", args.structure, names, "a structure")
    for party in args.parties or []:
        common.name_argument("", "--parties", party, scenario.party_names(), "a party")
    if args.parties is not None and (len(args.parties) < 2 or len(set(args.parties)) != len(args.parties)):
        raise InputError("", [Problem("--parties", "two or more different parties", args.parties)])
    if args.walk_away is None and args.structure == scenario.baseline:
        raise InputError("", [Problem("--walk-away", f"a walk-away structure: the default, the baseline "
                                      f"{args.structure!r}, is the structure negotiated", has_value=False)])
    walk = args.walk_away if args.walk_away is not None else scenario.baseline
    common.name_argument("", "--walk-away", walk, names, "a structure")
    if walk == args.structure:
        raise InputError("", [Problem("--walk-away", f"a structure other than --structure {args.structure!r} (a "
                                      "gain over itself is zero whatever the term)", walk)])
    n_parties = len(args.parties) if args.parties is not None else 2
    if args.weights is not None and (len(args.weights) != n_parties or
                                     not all(math.isfinite(w) and w > 0 for w in args.weights)):
        raise InputError("", [Problem("--weights", f"{n_parties} positive numbers, one per party",
                                      args.weights)])
    if not 1 <= len(args.vary) <= 2 or len(set(args.vary)) != len(args.vary):
        raise InputError("", [Problem("--vary", "one key path, or two different ones (a grid)", args.vary)])
    for key in args.vary:
        common.number_at("", scenario, "--vary", key)
    if args.between is not None and len(args.vary) != 1:
        raise InputError("", [Problem("--between", "one term (with two, each term's own range is used)",
                                      list(args.between))])
    if args.between is not None:
        common.search_between("", scenario, args.vary[0], 0.0, list(args.between))
    common.statistic("", args.statistic, "--statistic")
    if args.points < 3:
        raise InputError("", [Problem("--points", "a whole number >= 3", args.points)])
    out, folder = _output(args, 100_000 + 2_000 * args.points ** len(args.vary), "-negotiation")
    result = _counted(lambda progress: negotiate(
        scenario, args.vary if len(args.vary) > 1 else args.vary[0], args.structure, parties=args.parties,
        walk_away=walk, statistic=args.statistic, weights=args.weights, points=args.points, between=args.between,
        paths=args.paths, seed=args.seed, uncertain=args.uncertain, threads=args.threads, progress=progress))
    return _written(scenario, result, out, folder)


def _attribution(args: argparse.Namespace) -> int:
    from valuation import simulate
    from valuation.analysis.attribution import attribution
    from valuation.engine.compile import compile_scenario
    from valuation.scenario import load_scenario

    scenario = load_scenario(args.file)
    uncertain = scenario.simulation.uncertain if args.uncertain is None else args.uncertain
    compile_scenario(scenario, uncertain=uncertain)  # every check before any path runs
    paths = scenario.simulation.paths if args.paths is None else args.paths
    if paths < 800:
        raise InputError("", [Problem("--paths", "a whole number >= 800 (the bootstrap's resamples and at least 8 "
                                      "bins of 100 paths)", paths)])
    if args.bins is not None and not 2 <= args.bins <= paths // 10:
        raise InputError("", [Problem("--bins", f"a whole number from 2 to {paths // 10} (at least 10 paths a bin)",
                                      args.bins)])
    out, folder = _output(args, 200_000 + 50_000 * len(scenario.structures) * len(scenario.parties), "-attribution")
    bar = _progress_bar(paths)

    def progress(done: int) -> None:
        interrupts.check()
        if bar:
            bar.update(done)

    try:
        result = simulate(scenario, paths=paths, seed=args.seed, threads=args.threads, progress=progress,
                          keep_paths=True, uncertain=uncertain)
    finally:
        if bar:
            bar.close()
    interrupts.check()
    analysis = attribution(result, bins=args.bins)
    return _written(scenario, analysis, out, folder)


def _compare(args: argparse.Namespace) -> int:
    from valuation.analysis import common
    from valuation.analysis.compare import compare
    from valuation.engine.compile import compile_scenario
    from valuation.scenario import load_scenario

    scenario = load_scenario(args.file)
    names = [v.name for v in scenario.variants]
    if not names:
        raise InputError(args.file, [Problem("variants", "at least one [[variants]] entry (a name and the inputs it "
                                             "changes) to compare", has_value=False)])
    for name in args.variants or []:
        common.name_argument("", "--variants", name, names, "a variant")
    scenario.check_variants(args.variants or names)
    common.statistic("", args.statistic, "--statistic")
    uncertain = scenario.simulation.uncertain if args.uncertain is None else args.uncertain
    for name in args.variants or names:  # every variant compiles before any path runs
        compile_scenario(scenario.variant(name), uncertain=uncertain)
    chosen = args.variants or names
    out, folder = _output(args, 100_000 + 2_000 * len(chosen) * len(scenario.structures) * len(scenario.parties),
                          "-scenarios")
    result = _counted(lambda progress: compare(
        scenario, chosen, paths=args.paths, seed=args.seed, statistic=args.statistic, uncertain=uncertain,
        threads=args.threads, progress=progress), 1 + len(chosen))
    return _written(scenario, result, out, folder)


def _calibrate(args: argparse.Namespace) -> int:
    from valuation.calibrate import calibrate, check_output, write_scenario
    from valuation.scenario import load_scenario

    scenario = load_scenario(args.file)
    out = Path(args.out) if args.out is not None else None
    if out is not None:  # every check of the output before any path runs
        check_output(out, never=Path(args.file))
    between = tuple(args.between) if args.between is not None else None
    if between is not None and not (math.isfinite(between[0]) and math.isfinite(between[1]) and
                                    between[0] < between[1]):
        raise InputError("", [Problem("--between", "two finite numbers, the lower first", list(between))])
    result = calibrate(scenario, args.vary, args.mark, paths=args.paths, seed=args.seed, between=between)
    lines = [scenario.name, *result.lines()]
    if out is not None:
        header = (f"{scenario.name}: calibrated by `valuation calibrate` from {args.file}\n{args.vary} = "
                  f"{result.value:.10g} (SE {result.se:.3g}) so that the model's company value meets mark "
                  f"{args.mark!r}\n({result.paths:,} paths, seed {result.seed}); comments of the original are not "
                  "kept, every source is")
        written = write_scenario(result.scenario, out, header, never=Path(args.file))
        lines.append(f"scenario: {printable(str(written))}")
    _say(sys.stdout, "\n".join(lines))
    return EXIT_OK


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
        return True
    except (OSError, ValueError, AttributeError):
        return False


VIEW_TITLES = {"party": "Party view: each party's own discount rates and own-value streams (what each side believes)",
               "market": "Market view: each flow at the rate of its risk class, transfers only (fair value)"}


def company_lines(result) -> str:
    """The model's company value beside the market marks, for the console."""
    table = result.company_value()
    model = table.loc["model"]
    rows = [f"Company value (100% of the equity at the valuation date, at {table.attrs['rate']:.1%}): "
            f"{model['value']:,.1f} USD bn (SE {model['se']:.1f})"]
    for name, row in table.drop(index="model").iterrows():
        rows.append(f"  mark {name} ({row['date']}): {row['value']:,.1f} USD bn; model / mark "
                    f"{row['model_to_mark']:.2f}")
    return "\n".join(rows)


def uncertain_lines(result) -> str:
    """The uncertain inputs' draws and the correlations achieved, for the console."""
    rows = ["Uncertain inputs (drawn once per path):"]
    for key, row in result.inputs().iterrows():
        rows.append(f"  {key}: {row['dist']} {row['low']:g} to {row['high']:g} ({row['meaning']}); draws mean "
                    f"{row['mean']:.4g}, SD {row['sd']:.3g}")
    table = result.correlations()
    if len(table):
        repaired = " (the nearest valid matrix: the scenario's could not hold)" if table.attrs["repaired"] else ""
        rows.append(f"Rank correlations, target / used{repaired} / achieved (SE):")
        for (a, b), row in table.iterrows():
            rows.append(f"  {a} ~ {b}: {row['target']:+.3f} / {row['used']:+.3f} / {row['achieved']:+.3f} "
                        f"({row['se']:.3f})")
    return "\n".join(rows)


def _report(scenario, result, view: str | None = None) -> list[str]:
    """The console summary: the run, the table(s) of each view, the company value, notes about fits."""
    import pandas as pd

    from valuation.report import format_summary

    summary = result.summary()
    mode = "" if result.kept_paths else " (streaming: percentiles within 0.05%)"
    if result.uncertain:
        mode += f", {len(result.compiled.plan.inputs)} uncertain inputs drawn per path"
    lines = [scenario.name,
             f"{result.paths:,} paths{mode}, seed {result.seed}, {result.run_seconds:.2f} s on {result.threads} "
             f"threads (compile {result.compile_seconds:.1f} s); PV in USD bn at "
             f"{scenario.simulation.valuation_date}; baseline {summary.attrs['baseline']}"]
    if result.stop is not None:
        stop, worst = result.stop, result.stop["worst"]
        wanted = " or ".join(x for x in (f"SE <= {stop['target_se']:g}" if stop["target_se"] else "",
                                         f"SE <= {stop['target_rel']:g} x |mean|" if stop["target_rel"] else "") if x)
        lines.append(f"auto-stop ({wanted} on {len(stop['outputs'])} means): "
                     + (f"met after {stop['paths']:,} paths in {stop['batches']} batches" if stop["met"] else
                        f"NOT met: stopped at the limit of {stop['max_paths']:,} paths")
                     + f"; furthest from its target: {worst['structure']} / {worst['party']}, SE {worst['se']:.4g} "
                       f"against {worst['target']:.4g}")
    view = view or ("both" if "market" in result.views else "party")
    shown = ["party", "market"] if view == "both" else [view]
    for v in shown:
        lines += ["", VIEW_TITLES[v]]
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            lines.append(format_summary(result.summary(view=v)))
    t0 = scenario.simulation.valuation_date
    later = [st for st in scenario.structures if st.agreed is not None and st.agreed > t0]
    for st in later:
        lines += [f"note: {st.name} was agreed on {st.agreed}, after the valuation date: valued as if known then"]
    if "market" in result.views:
        lines += ["", company_lines(result)]
    if result.uncertain:
        lines += ["", uncertain_lines(result)]
    for key, fit in result.fits.items():
        if fit.residual > 1e-6:
            lines += ["", f"note: {key} fitted as {fit.distribution}; it misses the given points by up to "
                          f"{fit.residual:.3f} in probability"]
    return lines


def _counted(analysis, runs: int = 0):
    """Run ``analysis(progress)`` under a bar over its runs (``runs``: how many, 0 where a solve does not know);
    a signal stops it between runs."""
    bar = _runs_bar(runs)

    def progress(done: int, total: int) -> None:
        interrupts.check()
        if bar is not None:
            bar.update(1)

    try:
        return analysis(progress)
    finally:
        if bar is not None:
            bar.close()


def _runs_bar(runs: int):
    """A bar over the runs of an analysis (``runs``: how many, 0 where a solve does not know)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=runs or None, unit=" runs", delay=1.0, file=sys.stderr, leave=False, disable=None)


def _progress_bar(paths: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=paths, unit=" paths", unit_scale=True, delay=1.0, file=sys.stderr, leave=False,
                disable=None)


if __name__ == "__main__":
    sys.exit(main())
