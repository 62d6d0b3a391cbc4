"""Ctrl-C and SIGTERM for the command line: a clean stop, even when the signal lands somewhere awkward.

A Python signal handler raises its exception wherever the interpreter happens to be.  Inside a C callback
(numba compiling a function calls back into Python to cache it) that exception is printed as "Exception
ignored" and dropped: the run would go on, or fail later with an unrelated error.  So each signal is also
recorded: :func:`check` (called between chunks and before the workbook is written) raises it again, an
unexpected failure after a signal is reported as the interruption it is, and the dropped exception is not
printed.  Steps that must not be cut in two (a temporary file created and named, a rename and the note that
the workbook is complete) run inside :func:`deferred`.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_received: list[int] = []
_deferring = [0]  # > 0 inside deferred(): the handler records a signal and leaves raising to the block's end
_completed: list[Path | None] = [None]  # the last file whose rename has happened (inside handled())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C: the same clean stop."""


def exception_for(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def received() -> int | None:
    """The first signal received inside :func:`handled`, if any (signals are the main thread's only)."""
    return _received[0] if _received and _main_thread() else None


def check() -> None:
    """Raise the interruption again if a signal arrived (its first exception may have been dropped)."""
    if received() is not None:
        raise exception_for(_received[0])


def _handler(signum: int, frame) -> None:
    _received.append(signum)
    if not _deferring[0]:
        raise exception_for(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """A step a signal must not cut in two (creating a file and remembering its name, a rename and noting
    it): a signal arriving inside is raised when the block ends.  Only where :func:`handled` is active;
    elsewhere Python's own Ctrl-C applies."""
    before = len(_received)
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    if len(_received) > before and _main_thread():
        raise exception_for(_received[before])


def completed(path: Path) -> None:
    """Note that ``path`` is complete on disk (called inside :func:`deferred` with the rename)."""
    if _main_thread():
        _completed[0] = path


def last_completed() -> Path | None:
    """The last file completed inside :func:`handled`, if any."""
    return _completed[0] if _main_thread() else None


def _unraisable(previous):
    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received:
            return  # our own interruption, dropped in a callback: recorded, and raised again by check()
        previous(unraisable)

    return hook


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM recorded and raised as :class:`KeyboardInterrupt` / :class:`Terminated`, unless
    the caller ignores them (and only on the main thread: elsewhere signals cannot be handled)."""
    if not _main_thread():
        yield
        return
    _received.clear()
    _completed[0] = None
    # a signal the caller ignores stays ignored (a background job of a script, nohup)
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = hook
        _received.clear()
        _completed[0] = None
