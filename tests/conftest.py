"""Shared fixtures: small scenarios as dicts, built the way a TOML file would parse."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import tomllib
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Runs with 1 and 2 threads must agree bitwise (tests/test_properties.py, tests/test_invariants.py): on a
# one-CPU runner numba would default to 1 thread and those checks would compare 1 with 1.  Set before numba
# is imported (test modules import it after this file).
try:
    _cpus = len(os.sched_getaffinity(0))
except AttributeError:  # not on Linux
    _cpus = os.cpu_count() or 1
if _cpus < 2:
    os.environ.setdefault("NUMBA_NUM_THREADS", "2")

# A test runner started in the background without job control (`nohup`, `cmd &` in a script) starts with SIGINT
# ignored, and every child inherits that: the signal tests (tests/test_nothing_lost.py) need the usual handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Hypothesis profiles (HYPOTHESIS_PROFILE): "default" keeps a local `pytest` quick, "ci" is what the README's
# test command and .ci/run use (bounded: a few minutes in all), "long" is for a night.  Tests that need a
# different count for the same profile read PROFILE.
for _name, _examples in (("default", 150), ("ci", 1_000), ("long", 5_000)):
    settings.register_profile(_name, max_examples=_examples, deadline=None, derandomize=_name == "ci",
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.load_profile(PROFILE)

ROOT = Path(__file__).resolve().parents[1]
BASE_CASE = ROOT / "inputs" / "base_case.toml"


def base_case_dict() -> dict:
    with BASE_CASE.open("rb") as fh:
        return tomllib.load(fh)


def minimal_dict(**revenue) -> dict:
    """Two parties, one structure with one revenue share, constant-hazard AGI."""
    return {
        "name": "minimal",
        "simulation": {"valuation_date": date(2025, 1, 1), "horizon": date(2035, 1, 1), "steps_per_year": 4,
                       "paths": 1000, "seed": 1},
        "parties": {"payer": {"discount_rate": 0.10}, "payee": {"discount_rate": 0.05}},
        "agi": {
            "declaration": {"family": "exponential", "rate": 0.15},
            "verification_lag": {"family": "fixed", "after": 1.0},
        },
        "revenue": {
            "initial": 10.0, "initial_growth": 0.3, "long_run_growth": 0.3, "mean_reversion": 0.0,
            "volatility": 0.0, "exit_multiple": 5.0, "margin": 0.2, **revenue,
        },
        "structures": [
            {"name": "share", "clauses": [
                {"type": "revenue_share", "payer": "payer", "payee": "payee", "rate": 0.2, "end": "agi_declared"},
            ]},
        ],
    }


@pytest.fixture
def base_dict() -> dict:
    return copy.deepcopy(base_case_dict())


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: str):
    """A real file system of ``size`` (tmpfs) at ``folder``; skips the test where mounting is not allowed."""
    folder.mkdir(exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a tiny filesystem here (needs root in a container that allows it)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 64 KiB tmpfs: a real full disk (a workbook needs more). Skipped where mounting is not allowed."""
    with mounted_tmpfs(tmp_path / "tiny", "64k") as mount:
        yield mount


def pytest_configure(config):
    """Compile (or load) the kernel once before the test processes start (``pytest -n 2``, pytest-xdist): the
    workers then load it from numba's cache instead of all compiling it at once into one cache folder (numba
    issue #4807). A fixed and an uncertain run cover the kernel and the draws' compiled helpers."""
    if hasattr(config, "workerinput") or getattr(config.option, "numprocesses", None) in (None, 0):
        return
    import valuation

    valuation.simulate(BASE_CASE, paths=64, seed=1)
    valuation.simulate(BASE_CASE, paths=64, seed=1, uncertain=True)


SLOW_FIRST = ("test_a_read_only_install_without_a_home_validates_and_runs", "test_a_long_daily_grid_recalculates_whole",
              "test_a_file_name_is_escaped_wherever_it_is_shown", "test_edited_assumptions",
              "test_properties_of_random_scenarios")


def pytest_collection_modifyitems(config, items):
    """The slowest tests first, so that with two test processes neither is left with one at the end."""
    items.sort(key=lambda item: 0 if item.originalname in SLOW_FIRST else 1)
