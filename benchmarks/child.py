"""One measured run in a fresh process: ``python -m benchmarks.child PATHS [--mode M] [--workbook FILE]``.

Prints one JSON line: simulation seconds (compile excluded), workbook seconds, whether paths were kept and the
process's peak resident memory (``VmHWM``: unlike ``ru_maxrss``, it does not inherit the parent's peak
across fork and exec), so each path count is measured on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import valuation
from benchmarks import BASE_CASE


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux ``/proc/self/status``), in MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("paths", type=int)
    parser.add_argument("--mode", choices=["auto", "keep", "stream"], default="auto")
    parser.add_argument("--workbook", help="also write the workbook here and time it")
    args = parser.parse_args(argv)
    keep = {"auto": None, "keep": True, "stream": False}[args.mode]
    start = time.perf_counter()
    result = valuation.simulate(BASE_CASE, paths=args.paths, keep_paths=keep)
    total = time.perf_counter() - start
    record = {"paths": args.paths, "mode": args.mode, "kept_paths": result.kept_paths,
              "simulate_seconds": result.run_seconds, "compile_seconds": result.compile_seconds,
              "simulate_call_seconds": total}
    if args.workbook:
        start = time.perf_counter()
        result.to_excel(args.workbook)
        record["workbook_seconds"] = time.perf_counter() - start
    record["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
