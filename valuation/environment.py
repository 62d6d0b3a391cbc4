"""The environment a run depends on, checked at the door: numba's settings in environment variables.

numba reads ``NUMBA_*`` variables when it is imported and when it starts its threads; a value it cannot
use shows up much later as a warning with a parser's traceback (``NUMBA_NUM_THREADS=abc``: silently the
default) or as a ``ValueError`` from inside the first parallel loop (``NUMBA_NUM_THREADS=0``,
``NUMBA_THREADING_LAYER=tbb`` without TBB).  :func:`check` turns each into one
:class:`~valuation.errors.InputError` naming the variable, its value and what was expected, before any
path runs; the command line calls it before numba is imported.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

from valuation.errors import InputError, Problem

WHERE = "environment"
THREADING_LAYERS = ("default", "safe", "forksafe", "threadsafe", "workqueue", "omp", "tbb")
PRIORITY_LAYERS = ("tbb", "omp", "workqueue")
MAX_THREADS = 1024  # numba starts one thread each: tens of thousands crash the process (a segfault, no message)
_UNPARSED = re.compile(r"Environment variable '(NUMBA_[A-Z0-9_]+)' is defined but its associated value '(.*)' "
                       r"could not be parsed", re.S)


def check() -> None:
    """Raise :class:`InputError` for a numba setting in the environment that would fail (or be ignored)."""
    problems = _settings(os.environ)
    if problems:
        raise InputError(WHERE, problems)
    problems = _numba_parse_failures()
    if problems:
        raise InputError(WHERE, problems)
    problem = _threading_layer()
    if problem is not None:
        raise InputError(WHERE, [problem])


def _settings(env) -> list[Problem]:
    """Our own reading of the variables whose bad values numba does not reject by itself."""
    problems = []
    threads = env.get("NUMBA_NUM_THREADS")
    if threads is not None:
        try:
            ok = 1 <= int(threads.strip()) <= MAX_THREADS
        except ValueError:
            ok = False
        if not ok:
            problems.append(Problem("NUMBA_NUM_THREADS", f"a whole number from 1 to {MAX_THREADS} (the most threads "
                                    f"numba may use; this machine has {os.cpu_count() or 1} cores), or the variable "
                                    "unset (all cores)", threads))
    layer = env.get("NUMBA_THREADING_LAYER")
    if layer is not None and layer.strip().lower() not in THREADING_LAYERS:
        problems.append(Problem("NUMBA_THREADING_LAYER", f"one of {', '.join(THREADING_LAYERS)}, or the variable "
                                "unset", layer))
    priority = env.get("NUMBA_THREADING_LAYER_PRIORITY")
    if priority is not None:
        names = priority.split()
        if sorted(names) != sorted(PRIORITY_LAYERS):
            problems.append(Problem("NUMBA_THREADING_LAYER_PRIORITY", f"the three layers {' '.join(PRIORITY_LAYERS)} "
                                    "in the order to try them, separated by spaces, or the variable unset", priority))
    return problems


def _numba_parse_failures() -> list[Problem]:
    """Import numba (once) and turn its warnings about unparsable ``NUMBA_*`` values into problems."""
    if "numba" in sys.modules:
        return []  # imported already: numba has said it, and used its defaults
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import numba  # noqa: F401
    problems = []
    for w in caught:
        m = _UNPARSED.search(str(w.message))
        if m:
            problems.append(Problem(m[1], "a value numba can read (see numba's documentation of environment "
                                    "variables), or the variable unset", m[2]))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)  # not ours to keep back
    return problems


def _threading_layer() -> Problem | None:
    """Start numba's threads now, so a threading layer that cannot load is reported here."""
    from numba.np.ufunc import parallel

    try:
        parallel._launch_threads()
    except ValueError as exc:  # numba's way to say the requested layer is unavailable
        variable = next((v for v in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY") if v in os.environ),
                        "NUMBA_THREADING_LAYER")
        why = " ".join(str(exc).split())
        return Problem(variable, f"a threading layer that loads here ({why}); 'workqueue' always does, or leave "
                       "the variable unset", os.environ.get(variable, "default"))
    return None
