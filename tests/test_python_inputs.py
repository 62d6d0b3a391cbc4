"""Inputs from Python: counts and types from numpy, arguments of the wrong kind, scenarios changed in code,
text in every form, outputs that must fit, and the provenance of what was run.

Each case was found by using the API as a quant would; each class is fixed at one place (the argument
checks of ``valuation.arguments``, the loader that every scenario passes through, the sheet-size plan).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import openpyxl
import pytest

import valuation as dv
from conftest import BASE_CASE, minimal_dict
from valuation import api
from valuation.arguments import ArgumentTypeError
from valuation.engine.compile import compile_scenario
from valuation.errors import InputError
from valuation.report.workbook import EXCEL_COLUMNS, EXCEL_ROWS, check_fits, sheet_sizes
from valuation.scenario import scenario_from_dict
from valuation.scenario.assumptions import assumption_rows

TEXT = BASE_CASE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def base():
    return dv.load_scenario(BASE_CASE)


# ---------------------------------------------------------------- counts from numpy


class _Chosen(Exception):
    pass


def _which_mode(monkeypatch, scenario, **kwargs) -> str:
    """'kept' or 'streaming': the accumulator simulate() makes, stopped before any path runs."""

    def kept(*args, **kw):
        raise _Chosen("kept")

    def streaming(*args, **kw):
        raise _Chosen("streaming")

    monkeypatch.setattr(api, "KeptPartial", kept)
    monkeypatch.setattr(api, "StreamedPartial", streaming)
    with pytest.raises(_Chosen) as chosen:
        dv.simulate(scenario, **kwargs)
    return str(chosen.value)


def test_an_int32_count_does_not_overflow_the_memory_check(base, monkeypatch):
    """np.int32(2e9) with keep_paths=True passed the memory check (the byte estimate overflowed in int32) and
    started a run needing 786 GiB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if total > 700 * 2**30:
        pytest.skip("this machine could hold 2e9 paths")
    monkeypatch.setattr(api, "KeptPartial", lambda *a, **k: pytest.fail("the run started"))
    with pytest.raises(InputError, match=r"paths = 2000000000: expected at most about"):
        dv.simulate(base, paths=np.int32(2_000_000_000), keep_paths=True)


def test_an_int32_count_beyond_the_keep_limit_streams(base, monkeypatch):
    """np.int32(30e6) kept every path (the estimate wrapped to a negative number of bytes)."""
    assert _which_mode(monkeypatch, base, paths=np.int32(30_000_000)) == "streaming"
    assert _which_mode(monkeypatch, base, paths=30_000_000) == "streaming"
    assert _which_mode(monkeypatch, base, paths=np.int16(1000)) == "kept"


def test_small_numpy_integers_are_counts_and_give_the_same_numbers(base):
    plain = dv.simulate(base, paths=100, seed=3)
    small = dv.simulate(base, paths=np.int8(100), seed=np.uint64(3), chunk_size=np.int16(64),
                        threads=np.int64(1))
    assert type(small.paths) is int and small.paths == 100 and type(small.seed) is int
    np.testing.assert_array_equal(small.pvs, plain.pvs)


@pytest.mark.parametrize(("name", "value"), [("paths", True), ("paths", 1e6), ("paths", "100"), ("seed", 1.0),
                                             ("chunk_size", "big"), ("threads", 2.0), ("seed", np.float64(3))])
def test_counts_of_the_wrong_kind(base, name, value):
    with pytest.raises(ArgumentTypeError, match=rf"^simulate\(\): {name} = .*: expected a whole number"):
        dv.simulate(base, **{"paths": 100, name: value})


# ---------------------------------------------------------------- arguments of the wrong kind


@pytest.mark.parametrize(("call", "message"), [
    (lambda sc: dv.simulate(123), r"simulate\(\): scenario = 123: expected a Scenario, or the path of a \.toml"),
    (lambda sc: dv.simulate(None), r"simulate\(\): scenario = None: expected a Scenario"),
    (lambda sc: dv.simulate(b"inputs/base_case.toml"), r"scenario = b'inputs/base_case.toml': expected"),
    (lambda sc: dv.load_scenario(None), r"load_scenario\(\): path = None: expected the path of a \.toml"),
    (lambda sc: dv.load_scenario(3.5), r"load_scenario\(\): path = 3.5: expected"),
    (lambda sc: dv.simulate(sc, paths=100, progress=5), r"simulate\(\): progress = 5: expected a function"),
    (lambda sc: dv.simulate(sc, paths=100, keep_paths="yes"), r"keep_paths = 'yes': expected True, False or None"),
    (lambda sc: dv.simulate(sc, paths=100, baseline=3), r"baseline = 3: expected a structure name \(text\)"),
])
def test_arguments_of_the_wrong_kind_get_the_projects_message(base, call, message):
    with pytest.raises(ArgumentTypeError, match=message) as caught:
        call(base)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, InputError)


def test_to_excel_and_tables_refuse_arguments_of_the_wrong_kind(base, tmp_path):
    result = dv.simulate(base, paths=200)
    with pytest.raises(ArgumentTypeError, match=r"to_excel\(\): path = 5: expected the path of an \.xlsx"):
        result.to_excel(5)
    assert result.party_tables("microsoft").stats == result.party_tables(0).stats
    with pytest.raises(KeyError, match="no party 99"):
        result.party_tables(99)
    with pytest.raises(InputError, match="baseline = 'nope': expected one of"):
        dv.simulate(base, paths=100, baseline="nope")


# ---------------------------------------------------------------- a scenario changed in Python


def test_model_copy_validates_like_a_file(base):
    """``model_copy(update=...)`` skipped validation: a negative volatility simulated silently."""
    with pytest.raises(InputError, match=r"volatility = -1.0: expected a number >= 0.0"):
        base.revenue.model_copy(update={"volatility": -1.0})
    with pytest.raises(InputError, match=r"steps_per_year = 0: expected a number >= 1"):
        base.simulation.model_copy(update={"steps_per_year": 0})
    with pytest.raises(InputError, match=r"exit_multiple = 'eight': expected a number"):
        base.revenue.model_copy(update={"exit_multiple": "eight"})
    with pytest.raises(InputError, match=r"base_case.toml \(a copy changed in Python\): simulation.baseline = "
                                         r"'nope': expected a structure name"):
        base.model_copy(update={"simulation": {**base.simulation.model_dump(), "baseline": "nope"}})
    fine = base.model_copy(update={"revenue": base.revenue.model_copy(update={"volatility": 0.3})})
    assert fine.revenue.volatility == 0.3 and fine.changed_since_loaded and not base.changed_since_loaded


def test_a_scenario_that_skipped_validation_is_checked_before_it_runs(base):
    bad_revenue = type(base.revenue).model_construct(**{**dict(base.revenue), "volatility": -1.0})
    unchecked = type(base).model_construct(**{**dict(base), "revenue": bad_revenue})
    with pytest.raises(InputError, match=r"revenue.volatility = -1.0: expected a number >= 0.0"):
        dv.simulate(unchecked, paths=100)
    steps = type(base.simulation).model_construct(**{**dict(base.simulation), "steps_per_year": 0})
    with pytest.raises(InputError, match=r"simulation.steps_per_year = 0: expected a number >= 1"):
        dv.simulate(type(base).model_construct(**{**dict(base), "simulation": steps}), paths=100)


def test_a_scenario_built_with_model_construct_is_checked_before_it_runs():
    scenario = scenario_from_dict(minimal_dict())
    doubled = type(scenario).model_construct(**{**dict(scenario), "structures": (*scenario.structures,
                                                                               scenario.structures[0])})
    with pytest.raises(InputError, match=r"structures\[1\].name = 'share': expected a name not used"):
        dv.simulate(doubled, paths=100)


# ---------------------------------------------------------------- text, whatever its form


@pytest.mark.parametrize("text", ["bad\x01", "tab\x7fdel", "c1\x9bcsi", "half \ud800 pair", "not\ufffe"])
def test_every_form_of_text_meets_the_one_check(text):
    """``label = { value = "bad\\u0001", source = "x" }`` skipped the check plain text gets, and the run failed
    after simulating (IllegalCharacterError); text from Python is checked the same way."""
    data = minimal_dict()
    data["structures"][0]["label"] = {"value": text, "source": "x"}
    with pytest.raises(InputError, match=r"structures\[0\].label = .*: expected text without control characters"):
        scenario_from_dict(data)
    data["structures"][0]["label"] = "fine"
    data["parties"]["payer"]["discount_rate"] = {"value": 0.1, "source": text}
    with pytest.raises(InputError, match=r"parties.payer.discount_rate.source = .*: expected text without"):
        scenario_from_dict(data)
    scenario = scenario_from_dict(minimal_dict())
    with pytest.raises(InputError, match=r"description = .*: expected text without control characters"):
        scenario.model_copy(update={"description": text})


def test_a_long_text_in_value_form_is_not_cut_silently():
    data = minimal_dict()
    data["description"] = {"value": "x" * 40_000, "source": "pasted"}
    with pytest.raises(InputError, match=r"description: expected text of at most 32,767 characters"):
        scenario_from_dict(data)


def test_a_byte_order_mark_is_accepted(tmp_path, base):
    """Windows editors write one; it was a syntax error."""
    with_bom = tmp_path / "bom.toml"
    with_bom.write_bytes(b"\xef\xbb\xbf" + BASE_CASE.read_bytes())
    loaded = dv.load_scenario(with_bom)
    assert loaded.model_dump() == base.model_dump() and loaded.sources == base.sources
    assert loaded.digest == hashlib.sha256(with_bom.read_bytes()).hexdigest()


def test_keys_that_are_not_identifiers_read_the_same_everywhere(tmp_path):
    """A party named "MS Corp": its source was lost on the Assumptions sheet (the loader keyed it
    ``parties.MS Corp...``, the sheet ``parties["MS Corp"]...``); errors now use the sheet's key."""
    text = TEXT.replace("[parties.microsoft]", '[parties."MS Corp"]').replace('"microsoft"', '"MS Corp"')
    path = tmp_path / "corp.toml"
    path.write_text(text, encoding="utf-8")
    rows = {r["key"]: r for r in assumption_rows(dv.load_scenario(path))}
    assert "MSFT WACC" in rows['parties["MS Corp"].discount_rate']["source"]
    path.write_text(text.replace("discount_rate = { value = 0.09", "discount_rate = { value = -2"), encoding="utf-8")
    with pytest.raises(InputError, match=r'parties\["MS Corp"\].discount_rate = -2: expected a number > -1.0'):
        dv.load_scenario(path)


def test_an_event_named_like_a_timing_family_keeps_its_name_in_messages():
    data = minimal_dict()
    data["events"] = {"fixed": {"family": "exponential", "rate": -1.0}}
    with pytest.raises(InputError, match=r"events.fixed.rate = -1.0: expected a number > 0.0"):
        scenario_from_dict(data)


# ---------------------------------------------------------------- outputs that must fit


def _shapes():
    daily = TEXT.replace("steps_per_year = 4", "steps_per_year = 365").replace("horizon = 2040-12-31",
                                                                               "horizon = 2028-12-31")
    wide = minimal_dict()
    wide["parties"] = {f"p{i}": {"discount_rate": 0.05 + 0.01 * i} for i in range(7)}
    wide["structures"] = [{"name": f"s{j}", "label": "Same label", "clauses": [
        {"type": "revenue_share", "payer": "p0", "payee": f"p{1 + j % 6}", "rate": 0.1, "discount_rate": 0.07 + j / 100}
    ]} for j in range(6)]
    return {"base": TEXT, "daily": daily, "wide": wide}


@pytest.mark.parametrize("shape", ["base", "daily", "wide"])
def test_the_sheet_sizes_known_before_the_run_are_the_sizes_written(tmp_path, shape):
    """The limits are checked before any path runs from a plan of each sheet's size; the plan must be the
    writers' truth (a long daily grid wrote past column XFD; LibreOffice dropped the data silently)."""
    spec = _shapes()[shape]
    if isinstance(spec, str):
        path = tmp_path / f"{shape}.toml"
        path.write_text(spec, encoding="utf-8")
        scenario = dv.load_scenario(path)
    else:
        scenario = scenario_from_dict(spec)
    result = dv.simulate(scenario, paths=300, seed=2)
    planned = sheet_sizes(compile_scenario(scenario), scenario, result.paths)
    wb = openpyxl.load_workbook(result.to_excel(tmp_path / "out.xlsx"))
    for ws in wb.worksheets:
        assert (ws.max_row, ws.max_column) == planned[ws.title], ws.title
        assert ws.max_row <= EXCEL_ROWS and ws.max_column <= EXCEL_COLUMNS
        for header in ws.tables.values():
            names = [c.value for c in ws[header.ref][0]]
            assert len({n.casefold() for n in names}) == len(names), (ws.title, names)  # Excel ignores case


def test_a_daily_grid_to_2224_fits_every_sheet():
    """To 2224 the run exited 1 with 'Invalid column index' after simulating; the plan now fits."""
    data = minimal_dict(initial_growth=0.02, long_run_growth=0.02)
    data["simulation"].update(steps_per_year=365, horizon=date(2224, 12, 31))
    scenario = scenario_from_dict(data)
    compiled = compile_scenario(scenario)
    assert compiled.n_steps > 72_000
    for sheet, (rows, cols) in sheet_sizes(compiled, scenario, 1000).items():
        assert rows <= EXCEL_ROWS and cols <= EXCEL_COLUMNS, sheet
    check_fits(compiled, scenario, 1000, "out.xlsx")


@pytest.mark.parametrize("length", [251, 255])
def test_long_file_names_that_fit_are_written(base, tmp_path, length):
    """A 251-character name was refused after the run: the temporary name beside it passed 255 bytes."""
    out = tmp_path / ("n" * (length - 5) + ".xlsx")
    result = dv.simulate(base, paths=100)
    assert result.to_excel(out) == out and out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_name_too_long_is_refused_before_anything_is_written(base, tmp_path):
    result = dv.simulate(base, paths=100)
    with pytest.raises(InputError, match="a file name of 261 bytes; expected at most 255"):
        result.to_excel(tmp_path / ("n" * 256 + ".xlsx"))
    assert not list(tmp_path.iterdir())


def test_stale_temporary_files_of_a_killed_run_are_removed_by_the_next_write(base, tmp_path):
    """kill -9 during the write left a 0-byte temporary file beside the target, for good."""
    from valuation.report import xlsx

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".out.xlsx.valuation-{xlsx._HOST}-{dead.pid}-0123abcd.tmp"
        probe = tmp_path / f".valuation-{xlsx._HOST}-{dead.pid}-89abcdef.probe"
        busy = tmp_path / f".out.xlsx.valuation-{xlsx._HOST}-{alive.pid}-0123abcd.tmp"
        elsewhere = tmp_path / f".out.xlsx.valuation-00000000-{dead.pid}-0123abcd.tmp"  # another host's
        mine = tmp_path / ".notes.tmp"
        for p in (stale, probe, busy, elsewhere, mine):
            p.write_bytes(b"")
        dv.simulate(base, paths=100).to_excel(tmp_path / "out.xlsx")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(["out.xlsx", busy.name, elsewhere.name, mine.name])
    finally:
        alive.kill()
        alive.wait()


def _kill_while(module: str, step: str, out: Path) -> None:
    """``valuation run`` in a real process, paused inside ``module.step`` of the save (``_write_all`` of
    ``valuation.report.xlsx``: the bytes are being written; ``os.replace``: the temporary file is complete and
    named), then killed with SIGKILL there."""
    code = (f"import {module} as where, sys, time\n"
            f"def paused(*a, **k):\n    print('paused', flush=True); time.sleep(120)\n"
            f"where.{step} = paused\n"
            "from valuation.cli import main\n"
            f"sys.exit(main(['run', {str(BASE_CASE)!r}, '--paths', '300', '--out', {str(out)!r}]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "paused"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_kill_while_the_bytes_are_written_leaves_nothing_for_long(tmp_path):
    """kill -9 while the workbook was written left a 0-byte temporary file beside the target, for good.  Where
    the file system links unnamed files (O_TMPFILE), killed there, nothing is left at all; elsewhere the
    temporary file (made only once the bytes are zipped) is removed by the next write to the folder."""
    from valuation.report.xlsx import links_unnamed

    out = tmp_path / "out.xlsx"
    out.write_bytes(b"an earlier workbook")
    _kill_while("valuation.report.xlsx", "_write_all", out)
    left = sorted(p.name for p in tmp_path.iterdir())
    if links_unnamed(tmp_path):
        assert left == ["out.xlsx"]
    else:
        assert len(left) == 2 and left[0].startswith(".out.xlsx.valuation-") and left[0].endswith(".tmp")
    assert out.read_bytes() == b"an earlier workbook"
    dv.simulate(BASE_CASE, paths=100).to_excel(tmp_path / "other.xlsx")  # the next write to the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.xlsx", "out.xlsx"]


def test_a_kill_before_the_rename_leaves_a_whole_file_the_next_write_removes(tmp_path):
    out = tmp_path / "out.xlsx"
    _kill_while("os", "replace", out)
    (left,) = list(tmp_path.iterdir())
    assert left.name.startswith(".out.xlsx.valuation-") and left.name.endswith(".tmp")
    assert openpyxl.load_workbook(io.BytesIO(left.read_bytes()), read_only=True).sheetnames[0] == "Read me"  # whole
    dv.simulate(BASE_CASE, paths=100).to_excel(out)
    assert [p.name for p in tmp_path.iterdir()] == ["out.xlsx"]


def test_temporary_files_of_older_versions_are_removed_once_stale(base, tmp_path):
    old = tmp_path / ".out.xlsx.k3j_x9q2.tmp"  # what tempfile.mkstemp named them before
    fresh = tmp_path / ".out.xlsx.a1b2c3d4.tmp"
    for p in (old, fresh):
        p.write_bytes(b"")
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    dv.simulate(base, paths=100).to_excel(tmp_path / "out.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.xlsx", fresh.name])


def test_overwriting_keeps_the_earlier_workbooks_permissions(base, tmp_path):
    out = tmp_path / "shared.xlsx"
    out.write_bytes(b"")
    out.chmod(0o664)
    old = os.umask(0o022)
    try:
        dv.simulate(base, paths=100).to_excel(out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o664


def test_a_target_that_is_not_a_regular_file_is_refused(base, tmp_path):
    """A named pipe (or a device behind a link) would have been replaced by the workbook."""
    fifo = tmp_path / "pipe.xlsx"
    os.mkfifo(fifo)
    (tmp_path / "link.xlsx").symlink_to(fifo)
    result = dv.simulate(base, paths=100)
    for target in (fifo, tmp_path / "link.xlsx"):
        with pytest.raises(InputError, match=r"exists and is not a regular file \(a named pipe\)"):
            result.to_excel(target)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


# ---------------------------------------------------------------- provenance


def test_path_numbers_beyond_53_bits_keep_every_digit_in_the_workbook(base, tmp_path):
    far = 2**62 - 7
    wb = openpyxl.load_workbook(dv.simulate(base, paths=100, first_path=far).to_excel(tmp_path / "far.xlsx"))
    ws = wb["Read me"]
    meta = {ws.cell(r, 1).value: ws.cell(r, 2).value for r in range(1, ws.max_row + 1)}
    assert meta["First path"] == str(far) and "from path 0" in meta["Re-run from the Assumptions sheet"]
    assert [wb["Paths"].cell(r, 1).value for r in (2, 3)] == [str(far), str(far + 1)]


def test_the_read_me_hashes_the_bytes_that_were_loaded(tmp_path):
    """The file edited after loading (while a run goes): the Read me recorded the hash of the edited file while
    Assumptions showed the values run."""
    path = tmp_path / "scenario.toml"
    path.write_bytes(BASE_CASE.read_bytes())
    scenario = dv.load_scenario(path)
    loaded = hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text(TEXT.replace("volatility = { value = 0.20", "volatility = { value = 0.90"), encoding="utf-8")
    result = dv.simulate(scenario, paths=200)
    ws = openpyxl.load_workbook(result.to_excel(tmp_path / "out.xlsx"))["Read me"]
    meta = {ws.cell(r, 1).value: ws.cell(r, 2).value for r in range(1, ws.max_row + 1)}
    assert meta["Scenario file SHA-256"] == loaded

    changed = scenario.model_copy(update={"revenue": scenario.revenue.model_copy(update={"volatility": 0.3})})
    ws = openpyxl.load_workbook(dv.simulate(changed, paths=200).to_excel(tmp_path / "changed.xlsx"))["Read me"]
    meta = {ws.cell(r, 1).value: ws.cell(r, 2).value for r in range(1, ws.max_row + 1)}
    assert meta["Scenario file SHA-256"].startswith(loaded) and "changed in Python after loading" in \
        meta["Scenario file SHA-256"]


def test_a_workbook_input_is_hashed_from_its_loaded_bytes_and_keeps_its_sources(tmp_path, base):
    """The workbook's scenario lost every source (73 of them) when its path and digest were set."""
    report = dv.simulate(base, paths=200).to_excel(tmp_path / "report.xlsx")
    digest = hashlib.sha256(Path(report).read_bytes()).hexdigest()
    loaded = dv.load_scenario(report)
    assert loaded.digest == digest and len(base.sources) > 50
    assert {k: v for k, v in loaded.sources.items() if k not in ("simulation.paths", "simulation.seed")} == \
        dict(base.sources)  # the run's own paths and seed are noted as coming from the run
    assert not loaded.changed_since_loaded
    changed = loaded.model_copy(update={"revenue": loaded.revenue.model_copy(update={"exit_multiple": 30.0})})
    assert changed.changed_since_loaded


def test_a_changed_value_loses_its_old_source(base):
    changed = base.model_copy(update={"revenue": base.revenue.model_copy(update={"exit_multiple": 30.0})})
    assert "revenue.exit_multiple" in base.sources and "revenue.exit_multiple" not in changed.sources
    assert changed.sources["revenue.initial"] == base.sources["revenue.initial"]


def test_model_copy_takes_numpy_numbers_and_refuses_what_is_not_a_mapping(base):
    copy = base.simulation.model_copy(update={"paths": np.int8(100), "steps_per_year": np.int64(4)})
    assert copy.paths == 100 and type(copy.paths) is int
    with pytest.raises(ArgumentTypeError, match=r"Simulation.model_copy\(\): update = \[1\]: expected a mapping"):
        base.simulation.model_copy(update=[1])
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InputError, match="nested at most 32 deep"):
        base.model_copy(update={"description": deep})


def test_a_file_name_is_escaped_wherever_it_is_shown(tmp_path):
    """A scenario file named with a control character ran the whole simulation, then failed writing the Read me
    (IllegalCharacterError); a name that is not UTF-8 made a workbook LibreOffice cut short; an escape code in a
    name went raw to the terminal."""
    name = "ctl\x01esc\x1b[2J.toml"  # a control character and an escape code
    path = tmp_path / name
    path.write_bytes(BASE_CASE.read_bytes())
    done = subprocess.run([sys.executable, "-m", "valuation.cli", "run", name, "--paths", "100", "--out",
                           "out.xlsx"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    ws = openpyxl.load_workbook(tmp_path / "out.xlsx")["Read me"]
    meta = {ws.cell(r, 1).value: ws.cell(r, 2).value for r in range(1, ws.max_row + 1)}
    assert meta["Scenario file"] == name.encode("unicode_escape").decode()
    bad = subprocess.run([sys.executable, "-m", "valuation.cli", "run", name.replace(".toml", "-x.toml")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "\x1b" not in bad.stderr and "\x01" not in bad.stderr, bad.stderr
    raw = os.fsencode(tmp_path) + b"/bad\xff.toml"
    with open(raw, "wb") as fh:
        fh.write(BASE_CASE.read_bytes())
    done = subprocess.run([sys.executable.encode(), b"-m", b"valuation.cli", b"run", raw, b"--paths", b"100",
                           b"--out", b"raw.xlsx"], cwd=tmp_path, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ws = openpyxl.load_workbook(tmp_path / "raw.xlsx")["Read me"]  # a whole, well-formed workbook
    meta = {ws.cell(r, 1).value: ws.cell(r, 2).value for r in range(1, ws.max_row + 1)}
    assert meta["Scenario file"].endswith("bad\\udcff.toml") and len(meta["Scenario file SHA-256"]) == 64


def test_simulate_warns_before_the_run_when_the_workbook_would_not_fit():
    from test_bad_input import wide_scenario  # 256 parties: more series than a chart holds

    path = Path(tempfile.mkdtemp()) / "wide.toml"
    path.write_text(wide_scenario(2, 256), encoding="utf-8")
    with pytest.warns(UserWarning, match="charts: at most 255 parties.*to_excel\\(\\) will refuse this result"):
        result = dv.simulate(path, paths=100)
    with pytest.raises(InputError, match="charts: at most 255 parties"):
        result.to_excel(path.with_suffix(".xlsx"))
