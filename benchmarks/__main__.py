"""``python -m benchmarks [--quick]``: the hot loop measured side by side in one run.

Writes ``benchmarks/RESULTS.md`` and ``benchmarks/results.json``.  Figures are medians of repeated runs,
throughput in path-steps per second (paths x time steps), compile time excluded and reported apart.
Ratios are taken within this one run, because these machines are shared and noisy.  Throughput is
measured in this process; scaling, memory, export, start-up and end-to-end runs each in a fresh process
(``benchmarks.child``), so each peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numba
import numpy as np

import valuation
from benchmarks import BASE_CASE, HERE, ROOT
from benchmarks.floor import run_floor
from benchmarks.numpy_reference import simulate_means
from benchmarks.quantlib_gbm import available as quantlib_available
from benchmarks.quantlib_gbm import quantlib_gbm
from models.rng import key_from_seed
from valuation.engine.compile import compile_scenario
from valuation.engine.run import simulate_arrays

AGREE_SE = 4.0  # the numpy reference's means must be within this many standard errors of the kernel's


def median_time(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def every_input_uncertain(scenario):
    """The base case with a distribution on every input that can take one: its own where it has one, a PERT
    over its range where it has a range but no distribution, else a PERT over +-20% of the value (inside the
    allowed range); an elicited point's probability over at most 45% of the gap to its neighbours (they stay in
    order on every path); dates (a table's start) and discount rates as they are."""
    from valuation.scenario.assumptions import assumption_rows
    from valuation.scenario.ranges import bounds, takes_distribution

    rows = {row["key"]: row["value"] for row in assumption_rows(scenario)}
    changes = {}
    for key, value in rows.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        own = scenario.ranges.get(key)
        if (own is not None and own.dist is not None) or takes_distribution(scenario, key) is not None \
                or key.endswith((".start", ".from")):
            continue
        lo, hi, open_lo, open_hi = bounds(scenario, key)
        width = 0.2 * abs(value) if value else 0.01
        low, high = value - width, value + width
        if ".points[" in key:  # between its neighbours' values (and 0 and 1)
            prefix, j = key.split(".points[")[0], int(key.split(".points[")[1].split("]")[0])
            below = rows.get(f"{prefix}.points[{j - 1}].p", 0.0)
            above = rows.get(f"{prefix}.points[{j + 1}].p", 1.0 - rows.get(f"{prefix}.never", 0.0))
            low, high = max(low, value - 0.45 * (value - below)), min(high, value + 0.45 * (above - value))
        elif own is not None:
            low, high = own.low, own.high
        if lo is not None:
            low = max(low, lo + (1e-9 if open_lo else 0.0))
        if hi is not None:
            high = min(high, hi - (1e-9 if open_hi else 0.0))
        if key == "revenue.initial" and scenario.revenue.market_size is not None:
            high = min(high, 0.5 * min(scenario.ranges["revenue.market_size"].low, scenario.revenue.market_size))
        changes[key] = {"value": value, "low": low, "high": high, "dist": "pert"}
    return scenario.with_values(changes)


def full_model(paths: int, threads: int, repeats: int) -> dict:
    compiled = compile_scenario(valuation.load_scenario(BASE_CASE))
    key, _ = key_from_seed(1)
    simulate_arrays(compiled, key, 2_048, threads=threads)  # compiled or loaded: not timed
    seconds = median_time(lambda: simulate_arrays(compiled, key, paths, threads=threads), repeats)
    steps = compiled.n_steps
    return {"paths": paths, "steps": steps, "threads": threads, "seconds": seconds,
            "path_steps_per_s": paths * steps / seconds}


def uncertain_side_by_side(paths: int, threads: int, repeats: int) -> dict:
    """Every listed input uncertain against the fixed run, the two run in turn (``repeats`` pairs): the ratio
    is the median of the pairs' ratios, so a drift in the machine's speed during the run falls on both."""
    scenario = valuation.load_scenario(BASE_CASE)
    fixed = compile_scenario(scenario)
    uncertain = compile_scenario(every_input_uncertain(scenario), uncertain=True)
    key, _ = key_from_seed(1)
    for compiled in (fixed, uncertain):
        simulate_arrays(compiled, key, 2_048, threads=threads)  # compiled or loaded: not timed
    pairs = []
    for _ in range(repeats):
        pair = []
        for compiled in (fixed, uncertain):
            start = time.perf_counter()
            simulate_arrays(compiled, key, paths, threads=threads)
            pair.append(time.perf_counter() - start)
        pairs.append(pair)
    seconds = statistics.median(p[1] for p in pairs)
    steps = uncertain.n_steps
    return {"paths": paths, "steps": steps, "threads": threads, "seconds": seconds,
            "path_steps_per_s": paths * steps / seconds, "uncertain_inputs": len(uncertain.plan.inputs),
            "fixed_seconds": statistics.median(p[0] for p in pairs), "pairs": len(pairs),
            "paired_ratio": statistics.median(p[0] / p[1] for p in pairs)}


def floor(paths: int, steps: int, threads: int, repeats: int) -> dict:
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        run_floor(1_024, steps)
        seconds = median_time(lambda: run_floor(paths, steps), repeats)
    finally:
        numba.set_num_threads(previous)
    return {"paths": paths, "steps": steps, "threads": threads, "seconds": seconds,
            "path_steps_per_s": paths * steps / seconds}


def numpy_reference(paths: int, repeats: int) -> dict:
    """The vectorised numpy model: throughput, and its mean PVs against the kernel's (same paths count)."""
    scenario = valuation.load_scenario(BASE_CASE)
    compiled = compile_scenario(scenario)
    seconds = median_time(lambda: simulate_means(compiled, paths, seed=2), repeats)
    mean, se = simulate_means(compiled, paths, seed=3)
    kernel = valuation.simulate(scenario, paths=paths, seed=4).summary()
    k_mean = kernel["mean"].to_numpy().reshape(mean.shape)
    k_se = kernel["se"].to_numpy().reshape(mean.shape)
    se_diff = np.sqrt(se**2 + k_se**2)
    z = np.where(se_diff > 0, np.abs(mean - k_mean) / np.where(se_diff > 0, se_diff, 1.0),
                 np.where(np.isclose(mean, k_mean, rtol=1e-9, atol=1e-12), 0.0, np.inf))
    return {"paths": paths, "steps": compiled.n_steps, "threads": 1, "seconds": seconds,
            "path_steps_per_s": paths * compiled.n_steps / seconds, "max_z": float(z.max()),
            "agrees": bool(z.max() <= AGREE_SE)}


def quantlib(paths: int, steps: int, repeats: int) -> dict:
    if not quantlib_available():
        return {"skipped": "QuantLib is not installed (pip install '.[bench]')"}
    return {"threads": 1, **quantlib_gbm(paths, steps, repeats)}


def child(paths: int, mode: str = "auto", workbook: bool = False) -> dict:
    """One run in a fresh process (warm numba cache): seconds, workbook seconds, peak memory."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "benchmarks.child", str(paths), "--mode", mode]
        if workbook:
            cmd += ["--workbook", str(Path(out) / "b.xlsx")]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.splitlines()[-1])


def start_up(paths: int) -> dict:
    """Time to a first result in a fresh process: with an empty numba cache (cold), then with it (warm)."""
    code = (f"import time; t = time.perf_counter(); import valuation; "
            f"valuation.simulate({str(BASE_CASE)!r}, paths={paths}); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1])
        warm = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1])
    return {"paths": paths, "cold_seconds": cold, "warm_seconds": warm}


def end_to_end(paths: int) -> dict:
    """Wall time of ``valuation run inputs/base_case.toml`` (simulation and workbook), warm cache."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "valuation.cli", "run", str(BASE_CASE), "--paths", str(paths),
               "--out", str(Path(out) / "b.xlsx")]
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        return {"paths": paths, "seconds": time.perf_counter() - start}


def machine() -> dict:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(terse=True), "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "package": valuation.__version__,
    }


def analysis(paths: int) -> dict:
    """Wall time of the analysis commands on the base case (in this process, warm): the tornado over every input
    with a range (both ends: 1 + 2 x inputs runs), the same with a five-point spider, and a break-even solve (the
    exit multiple at which Microsoft's mean PV under the October 2025 terms is 300 bn)."""
    scenario = valuation.load_scenario(BASE_CASE)
    valuation.simulate(scenario, paths=2_000, seed=1, uncertain=False)  # compiled before the clock starts
    out = {"paths": paths, "inputs": len(scenario.ranges)}
    for name, points in (("tornado", 2), ("tornado_spider", 5)):
        start = time.perf_counter()
        sens = valuation.sensitivity(scenario, paths=paths, seed=1, points=points, uncertain=False)
        out[name] = {"seconds": time.perf_counter() - start, "runs": sens.runs}
    start = time.perf_counter()
    be = valuation.break_even(scenario, "revenue.exit_multiple", "oct_2025_recap", "microsoft", target=300.0,
                              paths=paths, seed=1, uncertain=False)
    out["break_even"] = {"seconds": time.perf_counter() - start, "runs": be.evaluations, "found": be.found,
                         "value": be.value, "se": be.se}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a sub-minute run with fewer paths")
    parser.add_argument("--out", default=str(HERE), help="folder for RESULTS.md and results.json")
    parser.add_argument("--render", metavar="JSON", help="only write RESULTS.md again from a results.json")
    parser.add_argument("--only-analysis", action="store_true",
                        help="measure only the analysis rows and add them to the results.json in --out")
    args = parser.parse_args(argv)
    if args.only_analysis:
        path = Path(args.out) / "results.json"
        results = json.loads(path.read_text(encoding="utf-8"))
        results["runs"]["analysis"] = analysis(20_000 if args.quick else 100_000)
        results["runs"]["analysis"]["date"] = machine()["date"]
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (Path(args.out) / "RESULTS.md").write_text(render(results), encoding="utf-8")
        return 0
    if args.render:
        results = json.loads(Path(args.render).read_text(encoding="utf-8"))
        results["ratios"] = ratios(results["runs"], results["machine"]["numba_threads"])
        results["targets"] = targets(results["runs"], results["ratios"])
        (Path(args.out) / "RESULTS.md").write_text(render(results), encoding="utf-8")
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        return 0
    paths, repeats = (20_000, 3) if args.quick else (200_000, 5)
    all_threads = numba.config.NUMBA_NUM_THREADS
    results = {"machine": machine(), "quick": args.quick, "runs": {}}
    runs = results["runs"]
    runs["full_1"] = full_model(paths, 1, repeats)
    runs["full_all"] = full_model(paths, all_threads, repeats)
    runs["uncertain_all"] = uncertain_side_by_side(paths, all_threads, 3 * repeats)
    steps = runs["full_1"]["steps"]
    runs["floor_1"] = floor(paths, steps, 1, repeats)
    runs["floor_all"] = floor(paths, steps, all_threads, repeats)
    runs["numpy"] = numpy_reference(paths, max(1, repeats - 2))
    runs["quantlib"] = quantlib(paths, steps, repeats)
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000, 10_000_000)
    runs["scaling"] = [child(n, workbook=n >= 1_000_000) for n in sizes]
    if not args.quick:
        runs["streaming_100m"] = child(100_000_000, mode="stream", workbook=True)
    runs["start_up"] = start_up(1_000)
    runs["end_to_end"] = end_to_end(20_000 if args.quick else 100_000)
    runs["analysis"] = analysis(20_000 if args.quick else 100_000)
    results["ratios"] = ratios(runs, all_threads)
    results["targets"] = targets(runs, results["ratios"])
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "RESULTS.md").write_text(render(results), encoding="utf-8")
    print(render(results))
    return 0


def ratios(runs: dict, all_threads: int) -> dict:
    rate = {name: r["path_steps_per_s"] for name, r in runs.items() if isinstance(r, dict) and "path_steps_per_s" in r}
    speed_up = rate["full_all"] / rate["full_1"]
    out = {
        "full_over_floor_1_thread": rate["full_1"] / rate["floor_1"],
        "full_over_floor_all_threads": rate["full_all"] / rate["floor_all"],
        "speed_up_1_to_all_threads": speed_up,
        "parallel_efficiency": speed_up / all_threads,
        "floor_speed_up_1_to_all_threads": rate["floor_all"] / rate["floor_1"],
        "full_over_numpy_1_thread": rate["full_1"] / rate["numpy"],
        "full_over_numpy_all_threads": rate["full_all"] / rate["numpy"],
    }
    if "uncertain_all" in rate:  # the fixed and uncertain runs side by side (pairs), else the two rows
        out["uncertain_over_fixed_all_threads"] = runs["uncertain_all"].get(
            "paired_ratio", rate["uncertain_all"] / rate["full_all"])
    if "quantlib" in rate:
        out["full_over_quantlib_1_thread"] = rate["full_1"] / rate["quantlib"]
        out["full_over_quantlib_all_threads"] = rate["full_all"] / rate["quantlib"]
    return out


TARGETS = [  # (key, label, target, higher is better)
    ("full_over_numpy_all_threads", "full model, all threads / numpy reference", 4.0, True),
    ("full_over_numpy_1_thread", "full model, 1 thread / numpy reference", 2.0, True),
    ("full_over_quantlib_all_threads", "full model, all threads / QuantLib (per path-step)", 10.0, True),
    ("full_over_floor_all_threads", "full model / floor, all threads", 0.35, True),
    ("full_over_floor_1_thread", "full model / floor, 1 thread", 0.35, True),
    ("speed_up_1_to_all_threads", "speed-up, 1 to all threads", 1.8, True),
    ("uncertain_over_fixed_all_threads", "every listed input uncertain / fixed inputs, all threads (at most 25% "
     "slower)", 0.8, True),
    ("end_to_end_10m_seconds", "10M paths, simulate + workbook, warm (s)", 30.0, False),
    ("peak_rss_10m_mb", "10M paths, peak memory (MB)", 1536.0, False),
    ("peak_rss_100m_stream_mb", "100M paths streaming, peak memory (MB)", 500.0, False),
]


def targets(runs: dict, ratios: dict) -> list[dict]:
    measured = dict(ratios)
    for r in runs["scaling"]:
        if r["paths"] == 10_000_000:
            measured["end_to_end_10m_seconds"] = r["simulate_call_seconds"] + r["workbook_seconds"]
            measured["peak_rss_10m_mb"] = r["peak_rss_mb"]
    if "streaming_100m" in runs:
        measured["peak_rss_100m_stream_mb"] = runs["streaming_100m"]["peak_rss_mb"]
    rows = []
    for key, label, target, higher in TARGETS:
        if key not in measured:
            continue
        value = measured[key]
        met = value >= target if higher else value <= target
        short = (target / value - 1 if higher else value / target - 1) if not met else 0.0
        rows.append({"key": key, "label": label, "target": target, "higher_is_better": higher, "value": value,
                     "met": met, "short_by": short})
    return rows


WHY = {  # shown when a target is missed: what the gap is made of
    "full_over_quantlib_all_threads": (
        "QuantLib's step is a bare GBM step (one normal, one exp); ours is the whole base case per step (three "
        "normals, a Poisson jump count, the exact integrated mean-reverting growth, AGI uplift and deadline haircuts, "
        "the market size's saturation (an asinh), 46 clauses over 4 structures and 5 parties booked into PVs of "
        "both views, clause sums and expected flows). 10x QuantLib per path-step would need the full model at or "
        "above the floor's own speed: the floor itself ran at {floor_over_quantlib:.1f}x QuantLib in this run."),
    "full_over_floor_all_threads": (
        "the floor draws one normal per step (and one exp); the model draws three normals and a jump uniform, takes "
        "an exp and an asinh (the market size), and then evaluates every clause of every structure on the step, in "
        "both views, with each clause's PV sums for value by clause."),
    "full_over_floor_1_thread": (
        "as above, at one thread."),
    "speed_up_1_to_all_threads": (
        "the two cores of this shared machine are not both ours all the time: the floor, which shares nothing "
        "between threads, sped up by only the 'floor speed up' above in this same run; in quiet runs both reach "
        "1.9-2.0x."),
    "full_over_numpy_all_threads": (
        "the numpy reference is written the way a good quant would: clauses whose windows are fixed dates become "
        "one weight vector per chunk (a matrix product instead of a walk through the steps), and numpy's ziggurat "
        "normals cost less than our inverse-CDF normals (kept because one uniform per normal, keyed by path and "
        "step, is what makes every run reproducible bit for bit on any thread count). At all threads the ratio "
        "also carries the machine's thread scaling in this run (see the floor's speed-up)."),
    "uncertain_over_fixed_all_threads": (
        "every input of the world drawn per path (34 here, the AGI declaration's three elicited probabilities "
        "among them) costs in three places, measured apart on 200,000 paths at one thread: the pass that draws "
        "them (a Philox call, a normal score and a quantile per input and path, input by input in blocks) about 7% "
        "of a fixed run; each path's least-squares refit of the declaration's lognormal (1,024 paths side by side "
        "in SIMD, one or two Newton steps from a polished start) about 4-5%; each path's own growth coefficients, "
        "jump-count tails, margins, haircuts and timing tables in the kernel about 8%. The draw and the fit are "
        "arithmetic a path cannot skip (its own counter-based draw per input, a fit to its own points); the ratio "
        "moves by a few hundredths from run to run on this shared machine."),
    "full_over_numpy_1_thread": (
        "as above; at one thread the kernel is about 2x the numpy reference, on either side of the target from run "
        "to run."),
}


def render(results: dict) -> str:
    m, runs, ratios = results["machine"], results["runs"], results["ratios"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks{' --quick' if results['quick'] else ''}` on {m['date']}: "
        f"{m['platform']}, {m['cores']} cores ({m['numba_threads']} numba threads), Python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}, package {m['package']}. Medians of repeated runs, "
        "compile time excluded; all figures from this one run.",
        "",
        "## Throughput",
        "",
        "| what | threads | paths x steps | seconds | path-steps/s |",
        "|---|---|---|---|---|",
    ]
    labels = (("full_1", "full model (base case, all structures)"),
              ("full_all", "full model (base case, all structures)"),
              ("uncertain_all", "full model, every listed input uncertain ({n} drawn per path; in turn with the fixed "
                                "model)"),
              ("floor_1", "floor: Philox + inverse-CDF normal + log-normal step"),
              ("floor_all", "floor: Philox + inverse-CDF normal + log-normal step"),
              ("numpy", "numpy reference (`numpy_reference.py`, numpy.random.Generator)"),
              ("quantlib", "QuantLib MCEuropeanEngine, GBM, same steps per path"))
    for name, label in labels:
        if name not in runs:
            continue
        r = runs[name]
        label = label.format(n=r.get("uncertain_inputs", 0))
        if "skipped" in r:
            lines.append(f"| {label} | | | | skipped: {r['skipped']} |")
            continue
        lines.append(f"| {label} | {r['threads']} | {r['paths']:,} x {r['steps']} | {r['seconds']:.3f} | "
                     f"{r['path_steps_per_s']:,.0f} |")
    npy = runs["numpy"]
    lines += [
        "",
        f"The numpy reference computes the same model: its mean PVs are within {npy['max_z']:.2f} standard errors "
        f"of the kernel's at the worst of the 20 structure x party cells ({'agrees' if npy['agrees'] else 'DISAGREES'}"
        f"; the harness requires <= {AGREE_SE:g}).",
        "",
        "| ratio | value |",
        "|---|---|",
    ]
    for key, value in ratios.items():
        shown = f"{value:.0%}" if key == "parallel_efficiency" else f"{value:.2f}"
        lines.append(f"| {key.replace('_', ' ')} | {shown} |")
    lines += ["", "## Scaling, memory and export (each in a fresh process, warm numba cache)", "",
              "| paths | kept paths | simulate (s) | per path (us) | workbook (s) | peak memory (MB) |",
              "|---|---|---|---|---|---|"]
    scaling = list(runs["scaling"]) + ([runs["streaming_100m"]] if "streaming_100m" in runs else [])
    for r in scaling:
        wb = f"{r['workbook_seconds']:.1f}" if "workbook_seconds" in r else ""
        lines.append(f"| {r['paths']:,} | {'yes' if r['kept_paths'] else 'no (streaming)'} | "
                     f"{r['simulate_seconds']:.2f} | {1e6 * r['simulate_seconds'] / r['paths']:.2f} | {wb} | "
                     f"{r['peak_rss_mb']:,.0f} |")
    lines += ["", "## Targets (2-core machine)", "", "| target | wanted | measured | |", "|---|---|---|---|"]
    for t in results["targets"]:
        want = f"{'>=' if t['higher_is_better'] else '<='} {t['target']:g}"
        status = "met" if t["met"] else f"missed by {t['short_by']:.0%}"
        lines.append(f"| {t['label']} | {want} | {t['value']:,.2f} | {status} |")
    missed = [t for t in results["targets"] if not t["met"] and t["key"] in WHY]
    if missed:
        lines += ["", "Why the missed targets are missed:", ""]
        numbers = {"floor_over_quantlib": runs["floor_all"]["path_steps_per_s"]
                   / runs["quantlib"].get("path_steps_per_s", float("nan"))}
        lines += [f"- {t['label']}: {WHY[t['key']].format(**numbers)}" for t in missed]
    lines += [
        "",
        f"Start-up, {runs['start_up']['paths']:,} paths in a fresh process: cold (empty numba cache) "
        f"{runs['start_up']['cold_seconds']:.1f} s, warm {runs['start_up']['warm_seconds']:.1f} s. "
        f"`valuation run inputs/base_case.toml --paths {runs['end_to_end']['paths']:,}` end to end (warm): "
        f"{runs['end_to_end']['seconds']:.1f} s.",
        "",
    ]
    if "analysis" in runs:
        a = runs["analysis"]
        when = f" (measured on {a['date']} with `--only-analysis`)" if "date" in a else ""
        lines += ["## Analysis on the base case (wall time, all threads, warm)" + when, "",
                  "| what | paths per run | runs | seconds | seconds per run |", "|---|---|---|---|---|"]
        for key, label in (("tornado", f"tornado over every input with a range ({a['inputs']})"),
                           ("tornado_spider", "tornado and a five-point spider"),
                           ("break_even", "break-even solve (exit multiple for Microsoft's 300 bn, Oct 2025 "
                                          "terms), with its confirmation")):
            r = a[key]
            lines.append(f"| {label} | {a['paths']:,} | {r['runs']} | {r['seconds']:.1f} | "
                         f"{r['seconds'] / r['runs']:.2f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
