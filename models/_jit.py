"""The one jit policy of the project, and where its compiled code is cached.

Every compiled function goes through :func:`jit` (serial helpers, inlined into
callers by LLVM) or :func:`pjit` (the parallel path loops).  ``cache=True``
keeps start-up at a fraction of a second once the on-disk cache is warm;
``error_model="numpy"`` makes division by zero give inf/nan instead of raising,
as numpy would, and lets LLVM vectorise the arithmetic; ``fastmath`` stays off
so results are bit-for-bit reproducible across machines and thread counts.

**Where the cache goes.**  numba caches beside the source (``__pycache__``) or
in the user's cache folder (``~/.cache/numba``); an install that is read-only
for its user, run with no writable home (a locked-down server, a container
user, a Dask worker), has neither, and numba then refuses to compile at all
("no locator available").  The first function that meets this moves the cache
to a private folder of this user's in the temporary directory
(``<tmp>/agi-deal-valuation-<uid>/numba``, mode 0700, used only if this user
owns it), and failing that compiles without a cache.  Either is said once on
stderr, when numba first compiles (so not on a run the moved cache serves).
Cache files are pickles that numba loads, so a folder someone else could write
is never used.  A cache that cannot be written (a full disk, a quota) makes
numba fail the compile; here the compiled code is used all the same and the
failure is said once.
"""

from __future__ import annotations

import math
import os
import stat
import sys
import tempfile
import types

import numba
import numpy as np
from numba.core import event
from numba.misc.appdirs import AppDirs

_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True}
_NO_LOCATOR = "no locator available"
_fallback: dict[str, object] = {}  # once decided: "dir" (the folder, or None: uncached), "note"


def jit(func=None, **overrides):
    """Compile a serial helper with the project's policy."""
    options = {**_OPTIONS, **overrides}
    if func is None:
        return lambda f: _njit(f, options)
    return _njit(func, options)


def pjit(func=None, **overrides):
    """Compile a parallel kernel (``prange`` over paths) with the project's policy."""
    options = {**_OPTIONS, "parallel": True, **overrides}
    if func is None:
        return lambda f: _njit(f, options)
    return _njit(func, options)


def _njit(func, options: dict):
    """``numba.njit(**options)(func)``, with the cache moved (or dropped) where numba finds no place for it, and
    a cache that cannot be written (a full disk) no reason to fail the compile."""
    return _tolerant(_compiled(func, options))


def _compiled(func, options: dict):
    if options.get("cache") and "dir" not in _fallback and not os.path.isabs(os.path.expanduser("~")):
        # no home at all (an arbitrary uid with no passwd entry, HOME unset): numba would cache in "./~/.cache"
        folder = _fallback_folder(func)
        if folder is not None:
            numba.config.CACHE_DIR = folder
    if options.get("cache") and _fallback.get("dir", "") is None:
        return numba.njit(**{**options, "cache": False})(func)
    try:
        return numba.njit(**options)(func)
    except RuntimeError as exc:  # raised while the decorator sets up the cache, before anything compiles
        if not options.get("cache") or _NO_LOCATOR not in str(exc):
            raise
    folder = _fallback_folder(func)
    if folder is not None:
        numba.config.CACHE_DIR = folder  # numba's first locator: every function from here on caches there
        try:
            return numba.njit(**options)(func)
        except RuntimeError as exc:
            if _NO_LOCATOR not in str(exc):
                raise
        _fallback["dir"] = None
        _fallback["note"].folder = None
    return numba.njit(**{**options, "cache": False})(func)


def _tolerant(dispatcher):
    """Saving to the cache is an optimisation: an ``OSError`` there (a full disk, a quota) is said once and the
    compiled code is used all the same (numba would fail the compile; its own writes are atomic)."""
    cache = getattr(dispatcher, "_cache", None)
    save = getattr(cache, "save_overload", None)
    if save is None:
        return dispatcher

    def save_overload(sig, data):
        try:
            save(sig, data)
        except OSError as exc:
            if not _fallback.get("save_noted"):
                _fallback["save_noted"] = True
                _say(f"note: numba could not save compiled code in {getattr(cache, 'cache_path', 'its cache')} "
                     f"({exc.strerror or exc}); this run goes on, the next one compiles again\n")

    cache.save_overload = save_overload
    return dispatcher


def _say(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # no stderr, or a closed or full one: the note can go
        pass


def _fallback_folder(func) -> str | None:
    """The private temporary cache folder (decided once), or None to compile uncached."""
    if "dir" not in _fallback:
        _fallback["dir"] = _private_temp_folder()
        _fallback["note"] = _CompileNote(func, _fallback["dir"])
        event.register("numba:compile", _fallback["note"])
        asked = os.environ.get("NUMBA_CACHE_DIR")
        if asked:  # the user's own setting did not hold: say so now, not only when something compiles
            where = _fallback["dir"] or "no cache at all"
            _say(f"note: NUMBA_CACHE_DIR={asked} cannot be used (not a folder this user can write); using {where} "
                 "instead\n")
    return _fallback["dir"]  # type: ignore[return-value]


def _private_temp_folder() -> str | None:
    """``<tmp>/agi-deal-valuation-<uid>/numba`` if it is this user's own and writable, else None."""
    try:
        uid = os.geteuid()
        root = os.path.join(tempfile.gettempdir(), f"agi-deal-valuation-{uid}")
        for path in (root, os.path.join(root, "numba")):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o022:
                return None  # someone else's, a link, or writable by others: never load pickles from it
        folder = os.path.join(root, "numba")
        tempfile.TemporaryFile(dir=folder).close()  # writable (the test numba makes)
        return folder
    except (OSError, AttributeError):  # no usable temporary folder (or no uids on this system)
        return None


class _CompileNote(event.Listener):
    """Says once, on stderr, why numba compiles: the cache had to move, or there is none."""

    def __init__(self, func, folder: str | None):
        here = os.path.join(os.path.dirname(os.path.abspath(func.__code__.co_filename)), "__pycache__")
        user = AppDirs(appname="numba", appauthor=False).user_cache_dir
        if not os.path.isabs(user):
            user = f"{user}: there is no home folder"
        self.places = f"beside the installed package ({here}) or in the user cache folder ({user})"
        self.folder = folder
        self.said = False

    def on_start(self, event) -> None:
        if self.said:
            return
        self.said = True
        if self.folder is not None:
            text = (f"note: numba cannot cache compiled code {self.places}; caching it in {self.folder} instead: "
                    "this run compiles the kernel (about 30 s), later runs reuse it\n")
        else:
            text = (f"note: numba cannot cache compiled code {self.places} or in a private temporary folder; "
                    "every run compiles the kernel (about 30 s). Set NUMBA_CACHE_DIR to a writable folder to "
                    "cache it\n")
        _say(text)

    def on_end(self, event) -> None:
        pass


def python_version(func, _done: dict | None = None):
    """A jitted function's own Python code, calling the Python code of the jitted functions it calls (by name, or
    as an attribute of a module): the same arithmetic without compiling anything, for a one-off computation
    where a compile would cost seconds (a scenario's own fitted table, at validation).  Scalar IEEE arithmetic
    and the C library's functions, as in the compiled code."""
    done = {} if _done is None else _done
    if func in done:
        return done[func]
    py = func.py_func
    names = dict(py.__globals__)
    clone = types.FunctionType(py.__code__, names, py.__name__, py.__defaults__, py.__closure__)
    done[func] = clone
    for name in py.__code__.co_names:
        value = names.get(name)
        if isinstance(value, numba.core.dispatcher.Dispatcher):
            names[name] = python_version(value, done)
        elif isinstance(value, types.ModuleType) and value not in (math, np):
            names[name] = _PythonModule(value, done)
    return clone


class _PythonModule:
    """A module whose jitted functions are read as their :func:`python_version`."""

    def __init__(self, module: types.ModuleType, done: dict) -> None:
        self._module, self._done = module, done

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        if isinstance(value, numba.core.dispatcher.Dispatcher):
            return python_version(value, self._done)
        return value
