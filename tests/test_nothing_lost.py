"""Nothing lost: an interrupted run, a full disk or a failed write leave no partial workbook and no earlier
workbook changed.

Real signals go to a real ``valuation run`` process; a full disk is a real tiny filesystem where the machine
allows mounting one (root in a container usually does), and a test double of ``Workbook.save`` everywhere.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openpyxl
import pytest

from conftest import BASE_CASE, mounted_tmpfs
from valuation import interrupts
from valuation.cli import main
from valuation.report import xlsx

PRECIOUS = b"an earlier workbook the user wants to keep\n"


def _existing(folder: Path, name: str = "report.xlsx") -> Path:
    path = folder / name
    path.write_bytes(PRECIOUS)
    return path


def _untouched(path: Path) -> None:
    assert path.read_bytes() == PRECIOUS
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert not leftovers, leftovers  # no temporary or partial files beside it


def _command() -> list[str]:
    exe = Path(sys.executable).with_name("valuation")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "valuation.cli"]


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see the run start")
@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated")], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_stops_cleanly(tmp_path, sig, code, word):
    """A billion paths, interrupted once the simulation's threads are running: a message, the exit code, no
    traceback, the earlier workbook byte for byte."""
    out = _existing(tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "2"}
    proc = subprocess.Popen([*_command(), "run", str(BASE_CASE), "--paths", "1_000_000_000", "--stream",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240  # a cold numba cache compiles for about 30 s
        while _threads(proc.pid) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # numba's worker threads start with the first chunk of paths
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)
        started = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        stopped = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert f"{word}: nothing was written" in err and "Traceback" not in err, err
    assert stopped < 30  # it stops within a chunk, not at the end of a billion paths
    _untouched(out)


def _signal_inside_a_c_callback(sig: int) -> None:
    """What a signal during numba's first compile meets: Python code called back from C (numba's object
    cache), where the handler's exception is printed as "Exception ignored" and dropped."""

    @ctypes.CFUNCTYPE(None)
    def callback():
        os.kill(os.getpid(), sig)
        for _ in range(10_000):  # the handler runs between these bytecodes, inside the callback
            pass

    callback()
    assert interrupts.received() == sig  # the signal arrived, and its exception did not reach us


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("after", ["fails", "goes_on", "finishes"])
def test_a_signal_whose_exception_is_dropped_still_stops_cleanly(tmp_path, monkeypatch, capsys, sig, after):
    """Found in a clean-clone CI run: SIGTERM while numba compiled a function (cold cache) was dropped in a
    callback and numba then failed ('no compiled object yet'): exit 1 and a traceback.  Whatever comes next
    -- a failure, more chunks, or the end of the run -- the run stops as interrupted and writes nothing."""
    import valuation

    out = _existing(tmp_path)
    real_simulate = valuation.simulate

    def simulate(*args, **kwargs):
        _signal_inside_a_c_callback(sig)
        if after == "fails":
            raise RuntimeError("no compiled object yet for <Library '_fold_pvs'>")
        if after == "goes_on":
            kwargs["progress"](100)  # the next chunk
            raise AssertionError("the run went on after the signal")
        return real_simulate(*args, **kwargs)

    monkeypatch.setattr(valuation, "simulate", simulate)
    code, word = (143, "terminated") if sig == signal.SIGTERM else (130, "interrupted")
    assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(out)]) == code
    err = capsys.readouterr().err
    assert f"{word}: nothing was written" in err, err
    assert "Traceback" not in err and "Exception ignored" not in err and "unexpected" not in err, err
    _untouched(out)
    assert interrupts.received() is None  # forgotten once the command is over
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


@pytest.mark.parametrize(("exc", "code", "words"), [
    (KeyboardInterrupt(), 130, ["interrupted: nothing was written"]),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 2, ["report.xlsx", "No space left on device",
                                                             "earlier file is unchanged"]),
    (OSError(errno.EIO, os.strerror(errno.EIO)), 2, ["report.xlsx", "Input/output error"]),
], ids=["interrupt_while_writing", "disk_full", "io_error"])
def test_a_failure_while_writing_keeps_the_earlier_workbook(tmp_path, monkeypatch, capsys, exc, code, words):
    out = _existing(tmp_path)

    def half_then_fail(fd, data):  # half the bytes reach the disk, then the failure
        os.write(fd, bytes(data)[: len(data) // 2])
        raise exc

    monkeypatch.setattr(xlsx, "_write_all", half_then_fail)
    assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(out)]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(word in err for word in words), err
    _untouched(out)


def test_an_interrupt_while_zipping_keeps_the_earlier_workbook(tmp_path, monkeypatch, capsys):
    out = _existing(tmp_path)

    def save(self, filename):
        filename.write(b"PK\x03\x04 half a workbook")
        raise KeyboardInterrupt

    monkeypatch.setattr(openpyxl.Workbook, "save", save)
    assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(out)]) == 130
    assert "interrupted: nothing was written" in capsys.readouterr().err
    _untouched(out)


def test_a_failed_rename_keeps_the_earlier_workbook(tmp_path, monkeypatch, capsys):
    out = _existing(tmp_path)

    def replace(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "replace", replace)
    assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(out)]) == 2
    assert "cannot be written" in capsys.readouterr().err
    _untouched(out)


def test_an_interrupt_after_saving_says_the_workbook_is_complete(tmp_path, monkeypatch, capsys):
    out = tmp_path / "report.xlsx"

    def summary(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("valuation.report.format_summary", summary)
    assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"the workbook {out} was already complete" in err, err
    assert openpyxl.load_workbook(out, read_only=True).sheetnames[0]  # a whole, readable workbook


def _kill_self(sig: int) -> None:
    os.kill(os.getpid(), sig)
    for _ in range(10_000):  # Python runs the handler between bytecodes: here, not later
        pass


def test_a_signal_during_the_rename_says_the_workbook_is_complete(tmp_path, monkeypatch, capsys):
    """The rename and the note that the workbook is complete are one step for a signal: never 'nothing was
    written' about a file that was just replaced (found in review)."""
    out = _existing(tmp_path)
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        _kill_self(signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: the workbook {out} was already complete" in err and "Traceback" not in err, err
    assert openpyxl.load_workbook(out, read_only=True).sheetnames[0] == "Read me"  # the new, whole workbook
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.parametrize("step", ["probe", "linked", "named"])
def test_a_signal_as_a_temporary_file_is_made_leaves_nothing(tmp_path, monkeypatch, capsys, step):
    """A signal just after a temporary file gets its name (the folder's write probe; the workbook's, linked from
    an unnamed file, or made named where the file system has no unnamed files) still removes it: it waits until
    the name is remembered to clean up."""
    out = _existing(tmp_path)
    if step == "linked" and not xlsx.links_unnamed(tmp_path):
        pytest.skip("this file system does not link unnamed files (O_TMPFILE): the workbook is named when made")
    if step != "linked":
        monkeypatch.setattr(xlsx, "links_unnamed", lambda folder: False)
        monkeypatch.delattr(os, "O_TMPFILE")  # the probe too is a named file then
    if step == "probe":
        real_create = xlsx._create

        def create(folder, prefix, end, *args):
            made = real_create(folder, prefix, end, *args)
            if end == ".probe":
                _kill_self(signal.SIGTERM)
            return made

        monkeypatch.setattr(xlsx, "_create", create)
    elif step == "linked":
        real_link = os.link

        def link(*args, **kwargs):
            real_link(*args, **kwargs)
            _kill_self(signal.SIGTERM)

        monkeypatch.setattr(os, "link", link)
    else:
        real_create = xlsx._create

        def create(folder, prefix, end, *args):
            made = real_create(folder, prefix, end, *args)
            if end == ".tmp":
                _kill_self(signal.SIGTERM)
            return made

        monkeypatch.setattr(xlsx, "_create", create)
    assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(out)]) == 143
    err = capsys.readouterr().err
    assert "terminated: nothing was written" in err and "Traceback" not in err, err
    _untouched(out)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc as a folder no one can write in")
def test_the_default_folder_in_a_working_folder_no_one_can_write_in(monkeypatch, capsys):
    """Without --out the workbook goes to reports/ in the working folder: where that folder cannot be made,
    a message before any path runs (it was a FileNotFoundError traceback; found in review)."""
    monkeypatch.chdir("/proc")
    assert main(["run", str(BASE_CASE), "--paths", "100"]) == 2
    err = capsys.readouterr().err
    assert "reports/base_case.xlsx: the folder 'reports' cannot be created in '/proc'" in err, err
    assert "Traceback" not in err


def test_a_real_full_disk(tiny_filesystem, capsys):
    out = _existing(tiny_filesystem)
    filler = tiny_filesystem / "filler"  # leave less room than a workbook needs
    with open(filler, "wb") as fh:
        fh.write(b"\0" * (40 * 1024))
    assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err, err
    filler.unlink()
    _untouched(out)


def test_the_room_check_counts_long_text_and_lets_a_workbook_that_fits(tmp_path, capsys):
    """The estimate ignored text: 76 sources of 30,000 characters made a 2 MB workbook that a 1 MB disk took only
    after the whole run had been spent.  And an estimate too generous refused the base case with room to spare."""
    text = BASE_CASE.read_text(encoding="utf-8")
    words = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(30_000))  # text that does not zip to nothing
    long = text.replace('source = "Assumption', f'source = "{words}', 76)
    scenario = tmp_path / "long.toml"
    scenario.write_text(long, encoding="utf-8")
    with mounted_tmpfs(tmp_path / "small", "1m") as small:
        out = _existing(small)
        started = time.monotonic()
        assert main(["run", str(scenario), "--paths", "200", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "has no room for the workbook: it needs about" in err and "No space left on device" in err, err
        assert time.monotonic() - started < 30  # refused before the run, not after it
        _untouched(out)
    with mounted_tmpfs(tmp_path / "room", "600k") as room:
        assert main(["run", str(BASE_CASE), "--paths", "200", "--out", str(room / "base.xlsx")]) == 0
        assert (room / "base.xlsx").stat().st_size > 100_000


def test_a_signal_the_caller_ignores_stays_ignored(monkeypatch):
    """A background job of a script (or one under nohup) starts with SIGINT ignored: Ctrl-C in the terminal
    is not for it, and the command keeps it that way."""
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_IGN if sig == signal.SIGINT else None)
    installed = []
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.append(sig))
    with interrupts.handled():
        pass
    assert signal.SIGINT not in installed and signal.SIGTERM in installed
