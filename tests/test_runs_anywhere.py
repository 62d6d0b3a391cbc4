"""Runs wherever it is installed: a read-only install run by a user with no home, numba settings in the
environment, and standard streams that are full, closed or cannot encode the output.

The first test is real, not mocked: the interpreter and its packages, as root installed them, are linked
(hard links: the same files, still root's) into a folder the unprivileged user ``nobody`` can reach, and the
command runs as ``nobody`` with ``HOME=/nonexistent``.  The package's own folders are then not writable for
it, nor is any home: numba used to refuse to compile ("no locator available").
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import openpyxl
import pytest

from conftest import BASE_CASE

NOTE = "note: numba cannot cache compiled code"
SMALL_COMPILE = ("import numpy as np; from models.rng import uniform_pair; "
                 "print(uniform_pair(np.zeros(2, np.uint32), 0, 0, 0))")  # compiles Philox alone: seconds, not 30


def _command() -> list[str]:
    exe = Path(sys.executable).with_name("valuation")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "valuation.cli"]


def _link_tree(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst`` as hard links (a real copy across file systems), modes and owners kept."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, symlinks=True, copy_function=link)


@pytest.fixture(scope="module")
def nobody_install():
    """(python command, environment, folders) to run this install as ``nobody`` with no home."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    if sys.prefix != sys.base_prefix:
        pytest.skip("runs from a virtual environment: the test copies a plain interpreter installation")
    root = Path(tempfile.mkdtemp(prefix="valuation-readonly-"))
    try:
        root.chmod(0o755)
        prefix = Path(sys.base_prefix)
        _link_tree(prefix, root / "python")
        python = root / "python" / Path(os.path.realpath(sys.executable)).relative_to(prefix)
        libdir = sysconfig.get_config_var("LIBDIR") or str(prefix / "lib")
        home = root / "work"
        tmp = root / "tmp"
        for folder in (home, tmp):
            folder.mkdir()
            os.chown(folder, user.pw_uid, user.pw_gid)
        shutil.copy(BASE_CASE, home / "base_case.toml")
        env = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp), "LANG": "C.UTF-8",
               "LD_LIBRARY_PATH": str(root / "python" / Path(libdir).relative_to(prefix)),
               "NUMBA_NUM_THREADS": "2", "PYTHONDONTWRITEBYTECODE": "1"}
        as_nobody = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "env", "-i",
                     *[f"{k}={v}" for k, v in env.items()], str(python), "-m", "valuation.cli"]
        yield as_nobody, home, tmp, user
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_as(command: list[str], cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_premise_nothing_of_the_install_is_writable_for_the_user(nobody_install):
    command, home, _, _ = nobody_install
    probe = [*command[:command.index("-m")], "-c",
             "import os, models, valuation; print(all(not os.access(os.path.dirname(m.__file__), os.W_OK) "
             "for m in (models, valuation)), os.access('/nonexistent', os.W_OK))"]
    done = subprocess.run(probe, cwd=home, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stderr


def test_a_read_only_install_without_a_home_validates_and_runs(nobody_install):
    """It exited 1 with numba's 'cannot cache function '_mulhilo': no locator available'.  Now the cache moves
    to a private temporary folder, said once on stderr, and the next run reuses it."""
    command, home, tmp, user = nobody_install
    done = _run_as(command, home, "validate", "base_case.toml")
    assert done.returncode == 0, done.stderr
    assert "valid: 4 structures" in done.stdout and "Traceback" not in done.stderr
    assert NOTE not in done.stderr  # validating compiles nothing: it is not slower, so nothing to say

    first = _run_as(command, home, "run", "base_case.toml", "--paths", "2000", "--out", "out.xlsx")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(NOTE) == 1 and "Traceback" not in first.stderr, first.stderr
    cache = tmp / f"agi-deal-valuation-{user.pw_uid}"
    assert f"caching it in {cache / 'numba'} instead" in first.stderr
    info = cache.stat()
    assert info.st_uid == user.pw_uid and stat.S_IMODE(info.st_mode) == 0o700  # private: numba loads pickles
    assert any(cache.rglob("*.nbi"))
    assert openpyxl.load_workbook(home / "out.xlsx", read_only=True).sheetnames[0] == "Read me"

    again = _run_as(command, home, "run", "base_case.toml", "--paths", "2000", "--out", "again.xlsx")
    assert again.returncode == 0, again.stderr
    assert NOTE not in again.stderr  # served from the moved cache: nothing compiles, nothing to say


def test_a_cache_folder_someone_else_made_is_never_used(nobody_install):
    """numba loads its cache files with pickle: a folder of the expected name made by another user (here root,
    in a temporary folder everyone may write) could serve code to run.  It is left alone, the code compiles
    uncached, and the note says so."""
    command, home, _, user = nobody_install
    shared = home.parent / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    planted = shared / f"agi-deal-valuation-{user.pw_uid}"
    planted.mkdir(mode=0o777)  # root's, writable by all
    python = [f"TMPDIR={shared}" if part.startswith("TMPDIR=") else part for part in command[:command.index("-m")]]
    done = subprocess.run([*python, "-c", SMALL_COMPILE], cwd=home, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(NOTE) == 1 and "every run compiles the kernel" in done.stderr, done.stderr
    assert done.stdout.startswith("(0.") and not any(planted.iterdir())


def test_a_user_with_no_home_at_all_caches_privately(nobody_install):
    """An arbitrary uid with no passwd entry and no HOME (a container run with --user): numba made a folder named
    "~" in the working folder and cached there, silently."""
    command, home, tmp, user = nobody_install
    folder = tmp.parent / "nameless"
    folder.mkdir()
    folder.chmod(0o777)  # its own working and temporary folder (a fresh cache: the note is due)
    nameless = [("--reuid=54321" if part.startswith("--reuid=") else "--regid=54321" if part.startswith("--regid=")
                 else f"TMPDIR={folder}" if part.startswith("TMPDIR=") else part)
                for part in command[:command.index("-m")] if not part.startswith("HOME=")]
    done = subprocess.run([*nameless, "-c", SMALL_COMPILE], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (folder / "~").exists() and "there is no home folder" in done.stderr, done.stderr
    assert done.stderr.count(NOTE) == 1


def test_an_unusable_numba_cache_dir_is_said_every_time(nobody_install):
    """The user's own NUMBA_CACHE_DIR that cannot be used was replaced without a word once the moved cache was
    warm: the setting is theirs, so it is said whenever it is overridden."""
    command, home, _, _ = nobody_install
    python = [*command[:command.index("env") + 2], "NUMBA_CACHE_DIR=/nonexistent/cache",
              *command[command.index("env") + 2:command.index("-m")]]
    for _ in range(2):
        done = subprocess.run([*python, "-c", SMALL_COMPILE], cwd=home, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "note: NUMBA_CACHE_DIR=/nonexistent/cache cannot be used" in done.stderr, done.stderr


@pytest.mark.parametrize(("value", "variable"), [("0", "NUMBA_NUM_THREADS"), ("abc", "NUMBA_NUM_THREADS"),
                                                 ("1.5", "NUMBA_NUM_THREADS"), ("100000", "NUMBA_NUM_THREADS"),
                                                 ("bogus", "NUMBA_THREADING_LAYER"),
                                                 ("bogus", "NUMBA_THREADING_LAYER_PRIORITY"), ("fast", "NUMBA_OPT")])
def test_numba_settings_that_would_fail_are_bad_input(tmp_path, value, variable):
    """A fresh process, as a user meets it: numba reads these when it is imported (a warning with a parser's
    traceback for 'abc') or when its threads start (a ValueError traceback for 0)."""
    env = {**os.environ, variable: value, "PYTHONWARNINGS": "default"}
    done = subprocess.run([*_command(), "run", str(BASE_CASE), "--paths", "100", "--out", str(tmp_path / "x.xlsx")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"error: environment: {variable} = '{value}': expected" in done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr
    assert not (tmp_path / "x.xlsx").exists()


def test_an_unloadable_threading_layer_is_bad_input(tmp_path):
    """TBB is not a dependency: asking for it gave 'No threading layer could be loaded' from the first loop."""
    pytest.importorskip("numba")
    try:
        import tbb  # noqa: F401

        pytest.skip("TBB is installed here")
    except ImportError:
        pass
    env = {**os.environ, "NUMBA_THREADING_LAYER": "tbb"}
    done = subprocess.run([*_command(), "run", str(BASE_CASE), "--paths", "100", "--out", str(tmp_path / "x.xlsx")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "NUMBA_THREADING_LAYER = 'tbb': expected a threading layer that loads here" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- standard streams


def _run_with(tmp_path: Path, *, stdout=None, env=None, preexec=None) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out.xlsx"
    done = subprocess.run([*_command(), "run", str(BASE_CASE), "--paths", "200", "--out", str(out)],
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, **(env or {})}, preexec_fn=preexec, timeout=300)
    return done, out


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_stdout_does_not_fail_a_finished_run(tmp_path):
    with open("/dev/full", "w") as full:
        done, out = _run_with(tmp_path, stdout=full)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert f"the workbook is complete: {out}" in done.stderr
    assert openpyxl.load_workbook(out, read_only=True).sheetnames[0] == "Read me"


@pytest.mark.parametrize("closed", [(1,), (1, 2)], ids=["stdout", "stdout_and_stderr"])
def test_closed_standard_streams_do_not_fail_a_run(tmp_path, closed):
    """``valuation run ... >&-``: Python starts with no sys.stdout; the workbook must not take the free
    descriptor 1 either (anything printed would land in it)."""

    def close():
        for fd in closed:
            os.close(fd)

    done, out = _run_with(tmp_path, stdout=subprocess.DEVNULL, preexec=close)
    assert done.returncode == 0, done.stderr
    if 2 not in closed:
        assert "Traceback" not in done.stderr and f"the workbook is complete: {out}" in done.stderr
    assert openpyxl.load_workbook(out, read_only=True).sheetnames[0] == "Read me"  # a whole, uncorrupted workbook


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_a_console_that_cannot_encode_the_names(tmp_path, encoding):
    """The base case's name has an en dash: PYTHONIOENCODING=latin-1 gave a UnicodeEncodeError traceback after
    the workbook was written."""
    done, out = _run_with(tmp_path, env={"PYTHONIOENCODING": encoding})
    assert done.returncode == 0, done.stderr
    assert "Microsoft\\u2013OpenAI" in done.stdout and "Traceback" not in done.stderr
    assert out.exists()


def test_a_full_cache_folder_does_not_fail_the_compile(tiny_filesystem):
    """numba's cache on a full disk failed the compile itself (OSError: No space left on device, exit 1)."""
    (tiny_filesystem / "filler").write_bytes(b"\0" * (60 * 1024))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tiny_filesystem)}
    done = subprocess.run([sys.executable, "-c", SMALL_COMPILE], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "note: numba could not save compiled code" in done.stderr and "No space left on device" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout.startswith("(0.")
