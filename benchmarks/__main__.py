"""``python -m benchmarks [--quick]``: the hot loop measured side by side in one process.

Writes ``benchmarks/RESULTS.md`` and ``benchmarks/results.json``.  Figures are medians of repeated runs,
throughput in path-steps per second (paths x time steps), compile time excluded and reported apart.
Ratios are taken within this one run, because these machines are shared and noisy.
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
from benchmarks.floor import run_floor
from models.rng import key_from_seed
from valuation import engine
from valuation.compile import compile_scenario

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE_CASE = ROOT / "inputs" / "base_case.toml"


def median_time(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def full_model(paths: int, threads: int, repeats: int) -> dict:
    compiled = compile_scenario(valuation.load_scenario(BASE_CASE))
    key, _ = key_from_seed(1)
    engine.simulate_arrays(compiled, key, 2_048, threads=threads)  # compiled or loaded: not timed
    seconds = median_time(lambda: engine.simulate_arrays(compiled, key, paths, threads=threads), repeats)
    steps = compiled.n_steps
    return {"paths": paths, "steps": steps, "threads": threads, "seconds": seconds,
            "path_steps_per_s": paths * steps / seconds}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a sub-minute run with fewer paths")
    parser.add_argument("--out", default=str(HERE), help="folder for RESULTS.md and results.json")
    args = parser.parse_args(argv)
    paths, repeats = (20_000, 3) if args.quick else (200_000, 5)
    all_threads = numba.config.NUMBA_NUM_THREADS
    results = {"machine": machine(), "quick": args.quick, "runs": {}}
    runs = results["runs"]
    runs["full_1"] = full_model(paths, 1, repeats)
    runs["full_all"] = full_model(paths, all_threads, repeats)
    steps = runs["full_1"]["steps"]
    runs["floor_1"] = floor(paths, steps, 1, repeats)
    runs["floor_all"] = floor(paths, steps, all_threads, repeats)
    runs["start_up"] = start_up(1_000)
    runs["end_to_end"] = end_to_end(20_000 if args.quick else 100_000)
    speed_up = runs["full_all"]["path_steps_per_s"] / runs["full_1"]["path_steps_per_s"]
    results["ratios"] = {
        "full_over_floor_1_thread": runs["full_1"]["path_steps_per_s"] / runs["floor_1"]["path_steps_per_s"],
        "full_over_floor_all_threads": runs["full_all"]["path_steps_per_s"] / runs["floor_all"]["path_steps_per_s"],
        "speed_up_1_to_all_threads": speed_up,
        "parallel_efficiency": speed_up / all_threads,
    }
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "RESULTS.md").write_text(render(results), encoding="utf-8")
    print(render(results))
    return 0


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
        "| what | threads | paths x steps | seconds | path-steps/s |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("full_1", "full model (base case, all structures)"),
                        ("full_all", "full model (base case, all structures)"),
                        ("floor_1", "floor: Philox + inverse-CDF normal + log-normal step"),
                        ("floor_all", "floor: Philox + inverse-CDF normal + log-normal step")):
        r = runs[name]
        lines.append(f"| {label} | {r['threads']} | {r['paths']:,} x {r['steps']} | {r['seconds']:.3f} | "
                     f"{r['path_steps_per_s']:,.0f} |")
    lines += [
        "",
        "| ratio | value |",
        "|---|---|",
        f"| full / floor, 1 thread | {ratios['full_over_floor_1_thread']:.3f} |",
        f"| full / floor, all threads | {ratios['full_over_floor_all_threads']:.3f} |",
        f"| speed-up, 1 to all threads | {ratios['speed_up_1_to_all_threads']:.2f}x |",
        f"| parallel efficiency | {ratios['parallel_efficiency']:.0%} |",
        "",
        f"Start-up, {runs['start_up']['paths']:,} paths in a fresh process: cold (empty numba cache) "
        f"{runs['start_up']['cold_seconds']:.1f} s, warm {runs['start_up']['warm_seconds']:.1f} s. "
        f"`valuation run inputs/base_case.toml --paths {runs['end_to_end']['paths']:,}` end to end (warm): "
        f"{runs['end_to_end']['seconds']:.1f} s.",
        "",
        "Not yet measured (issue 4 continues): the numpy reference, QuantLib, scaling to 10^7 paths and peak "
        "memory, workbook export at 1M and 10M paths, and the streaming mode.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
