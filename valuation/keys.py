"""Key paths: how one input of a scenario is named, in error messages, on the Assumptions sheet and in code.

A key path is a dotted path of table keys and list indices, ``structures[0].clauses[2].tiers[1].until``.
A key that is not a plain identifier (a party named ``"MS Corp"``) is written in brackets as a JSON
string, ``parties["MS Corp"].discount_rate``, so that every key path reads back to the same keys.
"""

from __future__ import annotations

import json
import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]|^([A-Za-z_][A-Za-z0-9_]*)')


def join(prefix: str, part: str | int) -> str:
    """``prefix`` extended by a table key or a list index."""
    if isinstance(part, int):
        return f"{prefix}[{part}]"
    if _IDENT.fullmatch(part):
        return f"{prefix}.{part}" if prefix else part
    return f"{prefix}[{json.dumps(part)}]"


def parse(key: str) -> list[str | int]:
    """The table keys and list indices of a key path; ``ValueError`` if it is not one."""
    out: list[str | int] = []
    pos = 0
    while pos < len(key):
        m = _TOKEN.match(key, pos)
        if not m or m.end() == pos:
            raise ValueError(key)
        name, index, quoted, first = m.groups()
        out.append(int(index) if index is not None else json.loads(quoted) if quoted is not None else name or first)
        pos = m.end()
    if not out:
        raise ValueError(key)
    return out


def build(parts: list[str | int]) -> str:
    """The key path of a list of table keys and list indices (``parse``'s inverse)."""
    key = ""
    for part in parts:
        key = join(key, part)
    return key
