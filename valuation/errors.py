"""The project's own input error: one message naming file, key, value and expectation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

# What must not reach a terminal or a workbook as it is: C0 and C1 controls, DEL, lone surrogates (the bytes of
# a file name that are not UTF-8), U+FFFE/U+FFFF.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on, or a workbook cannot hold, written as an escape
    (``\\x1b``, ``\\udcff``): file names and arguments are shown, never obeyed."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii")
                            if not 0xD800 <= ord(m.group()) <= 0xDFFF else f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True)
class Problem:
    """One mistake in an input: where it is, what was found, what was expected."""

    key: str
    expected: str
    value: object = None
    has_value: bool = True

    def render(self) -> str:
        key = self.key if len(self.key) <= 240 else self.key[:237] + "..."  # a pasted key can be any length
        if not self.has_value:
            return f"{key}: {self.expected}" if key else self.expected
        return f"{key or '(top level)'} = {_show(self.value)}: expected {self.expected}"


def _show(value: object) -> str:
    text = value.isoformat() if isinstance(value, date) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class InputError(Exception):
    """Bad input from a user: scenario file, workbook or command-line argument.

    The CLI turns it into exit code 2 and prints :meth:`message` without a
    traceback; the Python API lets it propagate with the same message.
    """

    def __init__(self, source: str, problems: Sequence[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(key="", expected=problems, has_value=False)]
        self.source = str(source)
        self.problems = list(problems)
        super().__init__(self.message())

    def message(self) -> str:
        lines = [printable(p.render()) for p in self.problems]
        where = f"{printable(self.source)}: " if self.source else ""
        if len(lines) == 1:
            return f"{where}{lines[0]}"
        shown = "\n".join(f"  - {line}" for line in lines[:12])
        more = f"\n  ... and {len(lines) - 12} more" if len(lines) > 12 else ""
        return f"{where}{len(lines)} problems\n{shown}{more}"
