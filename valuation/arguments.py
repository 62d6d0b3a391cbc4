"""Arguments of the Python API, checked once at the door.

Each public function converts its arguments here before doing anything else: counts become Python ints
(numpy's ``int32`` would overflow a byte estimate; ``np.int8(100)`` is a fine count), paths become
:class:`~pathlib.Path`, and anything of the wrong kind raises :class:`ArgumentTypeError` -- an
:class:`~valuation.errors.InputError` (the CLI's exit 2, the same one-line message) that is also a
``TypeError`` -- naming the function, the argument, the value and what is accepted, instead of an
exception from deep inside pathlib, numpy or the engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from valuation.errors import InputError, Problem


class ArgumentTypeError(InputError, TypeError):
    """An argument of the wrong kind (an ``InputError`` and a ``TypeError``)."""


def _fail(where: str, name: str, expected: str, value: Any, kind: type[InputError] = ArgumentTypeError):
    """A wrong kind names the function (``simulate(): scenario = 123: ...``); a value out of range reads as on
    the command line (``paths = 0: ...``)."""
    return kind(where if kind is ArgumentTypeError else "", [Problem(name, expected, value)])


def count(where: str, name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """A whole number (Python or numpy integer, not a bool or a float) within bounds, as a Python int."""
    upper = f" and <= {maximum}" if maximum is not None else ""
    expected = f"a whole number >= {minimum}{upper}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _fail(where, name, expected, value)
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        raise _fail(where, name, expected, number, InputError)
    return number


def path(where: str, name: str, value: Any, what: str) -> Path:
    """A file path given as text or an ``os.PathLike``."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        try:
            result = Path(value)
        except TypeError:  # an os.PathLike whose __fspath__ gives bytes
            result = None
        if result is not None and str(result) not in ("", "."):
            if "\x00" in str(result):
                raise _fail(where, name, f"{what} without a NUL character", value, InputError)
            return result
    raise _fail(where, name, f"{what} (text or an os.PathLike)", value)


def optional_callable(where: str, name: str, value: Any, expected: str) -> Callable | None:
    if value is None or callable(value):
        return value
    raise _fail(where, name, expected, value)


def optional_flag(where: str, name: str, value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise _fail(where, name, "True, False or None", value)


def optional_name(where: str, name: str, value: Any, names: list[str], what: str) -> str | None:
    """One of ``names`` (or None)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(where, name, f"{what} name (text), one of {names}", value)
    if value not in names:
        raise _fail(where, name, f"one of {names}", value, InputError)
    return value
