"""Performance harness of the hot loop: ``python -m benchmarks [--quick]`` (see README.md here)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE_CASE = ROOT / "inputs" / "base_case.toml"
