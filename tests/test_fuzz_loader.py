"""Fuzzing the loader: whatever bytes it is given, it returns a validated scenario or raises InputError.

Hypothesis generates byte strings, mutations of the shipped base case (bytes changed, cut, inserted; values
replaced by awkward tokens) and edits of a report's Assumptions sheet.  Any other exception is a bug: the
CLI would print a traceback instead of a message.  What loads must also compile (or raise InputError) and
fit in the Assumptions sheet's cells.  Example counts follow the profiles in conftest.py
(``HYPOTHESIS_PROFILE=ci`` in CI, ``long`` for many more).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook

import valuation
from conftest import BASE_CASE
from valuation.engine.compile import compile_scenario
from valuation.errors import InputError
from valuation.scenario.assumptions import assumption_rows

BASE = BASE_CASE.read_bytes()
TOKENS = [b"-", b"nan", b"inf", b"-inf", b"1e400", b"1e-320", b"0", b"-1", b"\x00", b"\xff", b"[", b"]", b"{", b"}",
          b'"', b"'''", b"=", b"\n", b"#", b"true", b"9" * 30, b"1979-01-01", b"2200-02-30", b"\\u0000", b"[[x]]",
          b"\\u001b", b"\\t"]


def load_bytes(data: bytes, suffix: str = ".toml") -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            scenario = valuation.load_scenario(path)
            compile_scenario(scenario)  # what the loader accepts, the compiler takes (or explains, e.g. overflow)
        except InputError as exc:
            assert exc.message()  # a message, which names the file
            return
        assert isinstance(scenario, valuation.Scenario)
        cell = Workbook().active.cell(row=1, column=1)
        for row in assumption_rows(scenario):  # and the Assumptions sheet can hold it (openpyxl refuses what
            for value in row.values():  # a workbook cannot: a control character in a source once got through)
                cell.value = value


@given(st.binary(max_size=2_000))
def test_random_bytes(data):
    load_bytes(data)


@given(st.text(max_size=500))
def test_random_text(text):
    load_bytes(text.encode("utf-8", "surrogatepass"))


mutation = st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(["set", "cut", "insert", "value", "in_text"]),
                     st.integers(0, 255), st.integers(1, 40), st.sampled_from(TOKENS))


def mutate(data: bytes, mutations) -> bytes:
    b = bytearray(data)
    for where, op, byte, length, token in mutations:
        if not b:
            break
        pos = int(where * len(b))
        if op == "set":
            b[pos] = byte
        elif op == "cut":
            del b[pos:pos + length]
        elif op == "insert":
            b[pos:pos] = token
        elif op == "in_text":  # into the next quoted text (a name, a label, mostly a source)
            quote = b.find(b'"', pos)
            if quote >= 0:
                b[quote + 1:quote + 1] = token
        else:  # replace the value after the next '='
            eq = b.find(b"= ", pos)
            if eq >= 0:
                end = b.find(b"\n", eq)
                b[eq + 2:end if end >= 0 else len(b)] = token
    return bytes(b)


@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_base_case(mutations):
    load_bytes(mutate(BASE, mutations))


@functools.cache
def report_bytes() -> bytes:
    """A small report of the base case (made once; not a fixture, so hypothesis does not print it)."""
    with tempfile.TemporaryDirectory() as folder:
        path = valuation.simulate(BASE_CASE, paths=200, seed=1).to_excel(Path(folder) / "r.xlsx")
        return path.read_bytes()


@settings(max_examples=12)
@given(st.lists(mutation, min_size=1, max_size=3))
def test_corrupted_workbook_bytes(mutations):
    load_bytes(mutate(report_bytes(), mutations), suffix=".xlsx")


CELL_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)  # what a cell can hold
CELL_VALUES = st.one_of(st.none(), CELL_TEXT, st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(-10**20, 10**20), st.booleans(), st.sampled_from(["=1+1", "=A1", "[1, 2]", "x"]))


@settings(max_examples=12)
@given(st.lists(st.tuples(st.integers(1, 400), st.integers(1, 3), CELL_VALUES), min_size=1, max_size=3))
def test_edited_assumptions(edits):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.xlsx"
        path.write_bytes(report_bytes())
        wb = load_workbook(path)
        ws = wb["Assumptions"]
        for row, col, value in edits:
            ws.cell(row=row, column=col, value=value)
        wb.save(path)
        load_bytes(path.read_bytes(), suffix=".xlsx")


def test_malformed_key_in_an_edited_row_is_a_message():
    """Found by test_edited_assumptions: a key cell typed as '0' on a row whose 'given' is not 'given'."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.xlsx"
        path.write_bytes(report_bytes())
        wb = load_workbook(path)
        ws = wb["Assumptions"]
        row = next(r for r in range(ws.max_row, 1, -1) if ws.cell(row=r, column=5).value == "default"
                   and ws.cell(row=r, column=2).value not in (None, ""))
        ws.cell(row=row, column=1, value="0")
        wb.save(path)
        try:
            valuation.load_scenario(path)
        except InputError as exc:
            assert "'0'" in exc.message() or "0 (cell" in exc.message()
        else:
            raise AssertionError("a malformed key was accepted")
