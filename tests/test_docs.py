"""The README's promises: its Python quick start runs, its reference matches the schema; code is lint-clean."""

import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from valuation import load_scenario
from valuation.scenario.assumptions import assumption_rows
from valuation.scenario.docs import reference

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_python_quick_start_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"## Python quick start\s+```python\n(.*?)```", README, re.S).group(1)
    shutil.copytree(ROOT / "inputs", tmp_path / "inputs")
    (tmp_path / "reports").mkdir()
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert "beats the 2019/2023 terms" in capsys.readouterr().out
    assert (tmp_path / "reports" / "quick_start.xlsx").exists()


def test_readme_has_the_two_setup_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_command = "pip install '.[test]' && HYPOTHESIS_PROFILE=ci pytest"
    assert blocks[:2] == ["pip install . && valuation run inputs/base_case.toml\n", test_command + "\n"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.rstrip().endswith(test_command)  # exactly the README's command, last


def test_readme_reference_matches_the_schema():
    section = README.split("<!-- reference:start -->\n")[1].split("<!-- reference:end -->")[0]
    assert section == reference(), "run `python -m valuation.scenario.docs --update README.md`"


@pytest.mark.parametrize("path", sorted((ROOT / "inputs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_validate_and_source_every_number(path):
    scenario = load_scenario(path)
    given = [r for r in assumption_rows(scenario) if r["given"] == "given"
             and isinstance(r["value"], (int, float)) and not isinstance(r["value"], bool)
             and not r["key"].startswith("simulation.")]
    missing = [r["key"] for r in given if not (r["source"] or r["table_source"])]
    assert not missing, f"numbers without a source: {missing}"


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "valuation", "models", "tests", "benchmarks"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "valuation.cli", "validate", str(ROOT / "inputs" / "base_case.toml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
