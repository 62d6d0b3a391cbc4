"""The one jit policy of the project.

Every compiled function goes through :func:`jit` (serial helpers, inlined into
callers by LLVM) or :func:`pjit` (the parallel path loops).  ``cache=True``
keeps start-up at a fraction of a second once the on-disk cache is warm;
``error_model="numpy"`` makes division by zero give inf/nan instead of raising,
as numpy would, and lets LLVM vectorise the arithmetic; ``fastmath`` stays off
so results are bit-for-bit reproducible across machines and thread counts.
"""

from __future__ import annotations

import numba

_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True}


def jit(func=None, **overrides):
    """Compile a serial helper with the project's policy."""
    options = {**_OPTIONS, **overrides}
    if func is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(func)


def pjit(func=None, **overrides):
    """Compile a parallel kernel (``prange`` over paths) with the project's policy."""
    options = {**_OPTIONS, "parallel": True, **overrides}
    if func is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(func)
