"""The seams the analysis, precision and cluster work rest on: one accumulator that merges, draws keyed by
name, ``Scenario.with_values``, one catalogue of statistics, the clause registry, and a layout without cycles.
"""

from __future__ import annotations

import ast
import copy
import re
import typing
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import valuation as dv
from conftest import BASE_CASE, ROOT, base_case_dict
from models import rng
from valuation.errors import InputError
from valuation.report.console import format_summary
from valuation.scenario import scenario_from_dict
from valuation.scenario.clauses import CLAUSE_TYPES, PARAMS, REGISTRY
from valuation.stats.catalogue import SUMMARY


@pytest.fixture(scope="module")
def base():
    return dv.load_scenario(BASE_CASE)


# ---------------------------------------------------------------- one accumulator that merges


def _same(a: dv.SimulationResult, b: dv.SimulationResult) -> None:
    """Two results equal bit for bit in everything they report."""
    pd.testing.assert_frame_equal(a.summary(), b.summary(), check_exact=True)
    pd.testing.assert_frame_equal(a.versus(), b.versus(), check_exact=True)
    for p in range(len(a.parties)):
        ta, tb = a.party_tables(p), b.party_tables(p)
        assert ta.stats == tb.stats
        for x, y in ((ta.edges, tb.edges), (ta.freq, tb.freq), (ta.percentiles, tb.percentiles)):
            np.testing.assert_array_equal(x, y)
    da, db = a.driver_stats(), b.driver_stats()
    for name in ("p_declared", "p_verified", "p_met"):
        np.testing.assert_array_equal(getattr(da, name), getattr(db, name))
    assert (da.lag_median, da.lag_p90, da.p_never_verified) == (db.lag_median, db.lag_p90, db.p_never_verified)
    np.testing.assert_array_equal(a.cash_flows, b.cash_flows)
    np.testing.assert_array_equal(a.revenue_sample, b.revenue_sample)
    (ha, pa), (hb, pb) = a.head(), b.head()
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    np.testing.assert_array_equal(pa, pb)
    if a.kept_paths:
        np.testing.assert_array_equal(a.pvs, b.pvs)
        pd.testing.assert_frame_equal(a.drivers, b.drivers, check_exact=True)
    assert (a.first_path, a.paths) == (b.first_path, b.paths)


SPLITS = {2: [3_000, 2_500], 3: [1_000, 2_048, 2_452], 7: [1, 1_023, 1_024, 500, 1_500, 300, 152]}


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "streaming"])
@pytest.mark.parametrize("parts", sorted(SPLITS), ids=lambda n: f"{n}_ranges")
def test_merged_ranges_equal_one_run_bit_for_bit(base, keep, parts):
    """Ranges of uneven sizes, most of them starting and ending inside a block of 1,024 paths, merged in any
    order, give the run over their union: summary, versus, distributions, drivers, flows, head."""
    sizes = SPLITS[parts]
    whole = dv.simulate(base, paths=sum(sizes), seed=9, keep_paths=keep, chunk_size=1_500)
    pieces, first = [], 0
    for i, n in enumerate(sizes):
        pieces.append(dv.simulate(base, paths=n, seed=9, keep_paths=keep, first_path=first,
                                  chunk_size=[700, 65_536, 2_048][i % 3], threads=1 + i % 2))
        first += n
    _same(dv.merge(pieces[::-1]), whole)  # the order given does not matter


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "streaming"])
def test_a_range_starting_mid_block(base, keep):
    """A run of paths 1,500 .. 4,999 (starting inside a block) equals that range split anywhere, and its paths
    are the same paths as in a run from 0."""
    whole = dv.simulate(base, paths=3_500, seed=4, keep_paths=keep, first_path=1_500)
    split = dv.merge([dv.simulate(base, paths=n, seed=4, keep_paths=keep, first_path=f)
                      for f, n in ((1_500, 700), (2_200, 2_000), (4_200, 800))])
    _same(split, whole)
    if keep:
        from_zero = dv.simulate(base, paths=5_000, seed=4, keep_paths=True)
        np.testing.assert_array_equal(whole.pvs, from_zero.pvs[1_500:])
        assert list(whole.drivers.index[:2]) == [1_500, 1_501]


def test_merge_refuses_what_is_not_one_run(base):
    a = dv.simulate(base, paths=500, seed=1)
    with pytest.raises(InputError, match="adjacent path ranges, but paths 0..499 are followed by 600"):
        dv.merge([a, dv.simulate(base, paths=500, seed=1, first_path=600)])
    with pytest.raises(InputError, match="the same seed in each"):
        dv.merge([a, dv.simulate(base, paths=500, seed=2, first_path=500)])
    with pytest.raises(InputError, match="the same keep_paths in each"):
        dv.merge([a, dv.simulate(base, paths=500, seed=1, first_path=500, keep_paths=False)])
    with pytest.raises(dv.ArgumentTypeError, match=r"merge\(\): results = .*: expected a non-empty list"):
        dv.merge(a)
    with pytest.raises(InputError, match="the same scenario in each"):
        dv.merge([a, dv.simulate(base.with_values({"revenue.volatility": 0.3}), paths=500, seed=1, first_path=500)])
    s1 = dv.simulate(base, paths=500, seed=1, keep_paths=False)
    with pytest.raises(InputError, match="the same baseline in each"):
        dv.merge([s1, dv.simulate(base, paths=500, seed=1, first_path=500, keep_paths=False,
                                  baseline="oct_2025_recap")])
    spawned = np.random.SeedSequence(5, spawn_key=(1,))  # the same entropy, other numbers
    with pytest.raises(InputError, match="the same seed in each"):
        dv.merge([dv.simulate(base, paths=500, seed=np.random.SeedSequence(5)),
                  dv.simulate(base, paths=500, seed=spawned, first_path=500)])


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "streaming"])
def test_merges_of_merges_and_paths_far_out(base, keep):
    """Merging is associative, and path numbers near 2**62 (a 64-bit counter) merge as well as small ones."""
    far = 2**62 - 3_000
    whole = dv.simulate(base, paths=3_000, seed=3, keep_paths=keep, first_path=far)
    a, b, c = (dv.simulate(base, paths=n, seed=3, keep_paths=keep, first_path=far + f)
               for f, n in ((0, 700), (700, 1), (701, 2_299)))
    _same(dv.merge([dv.merge([a, b]), c]), whole)
    _same(dv.merge([a, dv.merge([b, c])]), whole)


def test_streaming_means_no_longer_move_with_the_chunk_size(base):
    """They moved by about 1e-14 with chunk_size although the README said "bit for bit"."""
    runs = [dv.simulate(base, paths=9_000, seed=5, keep_paths=False, chunk_size=c, threads=t)
            for c, t in ((1_024, 2), (100_000, 1), (3_000, 2))]
    for other in runs[1:]:
        _same(runs[0], other)


# ---------------------------------------------------------------- draws keyed by name


def _with_event_first(d: dict) -> dict:
    d = copy.deepcopy(d)
    d["events"] = {"antitrust": {"family": "exponential", "rate": 0.3}, **d["events"]}
    return d


def _pvs(d: dict, seed: int = 3) -> dv.SimulationResult:
    return dv.simulate(scenario_from_dict(d), paths=3_000, seed=seed)


@pytest.mark.parametrize("change", ["insert_first", "remove_unused", "reorder", "rename_structure"])
def test_a_source_added_removed_or_moved_leaves_the_others_numbers(change):
    """Draw 3 + e followed the order of [events]: adding an event first changed every deadline's numbers."""
    d = base_case_dict()
    before = _pvs(d)
    if change == "insert_first":
        after = _pvs(_with_event_first(d))
    elif change == "remove_unused":
        d2 = _with_event_first(d)
        before = _pvs(d2)
        after = _pvs(d)  # antitrust removed again
    elif change == "reorder":
        d2 = copy.deepcopy(d)
        d2["events"] = dict(reversed(list(d2["events"].items())))
        after = _pvs(d2)
    else:  # a structure is not a random source: its name moves no number
        d2 = copy.deepcopy(d)
        d2["structures"][2]["name"] = "recap_2025"
        after = _pvs(d2)
    np.testing.assert_array_equal(after.pvs, before.pvs)
    for name in ("agi_declared", "agi_verified", "recapitalisation", "ipo"):
        np.testing.assert_array_equal(after.drivers[name].to_numpy(), before.drivers[name].to_numpy())


def test_a_deadline_completion_keeps_its_numbers_when_events_come_and_go():
    """A deadline with a completion time of its own (``deadline:<name>``): an event inserted before it, or the
    deadlines reordered, leave its completion times and everything they decide as they were."""
    d = base_case_dict()
    d["deadlines"][0] = {k: v for k, v in d["deadlines"][0].items() if k != "events"}
    d["deadlines"][0]["completion"] = {"family": "lognormal", "median": 1.5, "sigma": 0.5, "start": date(2025, 9, 1)}
    before = _pvs(d)
    moved = _with_event_first(d)
    moved["deadlines"] = moved["deadlines"][::-1]
    after = _pvs(moved)
    name = f"deadline:{d['deadlines'][0]['name']}"
    np.testing.assert_array_equal(after.drivers[name].to_numpy(), before.drivers[name].to_numpy())
    np.testing.assert_array_equal(after.pvs, before.pvs)


def test_a_new_event_has_numbers_of_its_own():
    after = _pvs(_with_event_first(base_case_dict()))
    times = {name: after.drivers[name].to_numpy() for name in ("antitrust", "ipo", "recapitalisation")}
    assert np.corrcoef(np.minimum(times["antitrust"], 99), np.minimum(times["ipo"], 99))[0, 1] < 0.1


def test_named_counters_depend_on_the_name_only():
    assert rng.named_counter("event:ipo") == rng.named_counter("event:ipo")
    assert rng.named_counter("event:ipo") != rng.named_counter("deadline:ipo")
    stream, draw = rng.named_counter("event:ipo")
    assert stream & rng.STREAM_NAMED and stream not in (rng.STREAM_DRIVERS, rng.STREAM_SHOCKS, rng.STREAM_JUMPS)
    assert 0 <= draw < 2**32


# ---------------------------------------------------------------- with_values


def test_with_values_changes_each_kind_of_key(base):
    changed = base.with_values({
        "revenue.volatility": 0.3,  # a number
        "simulation.horizon": date(2041, 12, 31),  # a date
        "structures[1].clauses[0].interpolation": "linear",  # a choice
        "structures[0].clauses[0].end[1]": date(2031, 12, 31),  # an element of a list
        "structures[3].clauses[0].cap": 30.0,  # a field of a nested clause
        "parties.microsoft.discount_rate": {"value": 0.1, "source": "a sensitivity"},
    })
    assert changed.revenue.volatility == 0.3 and changed.simulation.horizon == date(2041, 12, 31)
    assert changed.structures[1].clauses[0].interpolation == "linear"
    assert changed.structures[0].clauses[0].end[1] == date(2031, 12, 31)
    assert changed.structures[3].clauses[0].cap == 30.0
    assert changed.sources["parties.microsoft.discount_rate"] == "a sensitivity"
    assert "revenue.volatility" not in changed.sources and "revenue.volatility" in base.sources
    assert base.revenue.volatility == 0.2 and changed.changed_since_loaded and not base.changed_since_loaded
    assert changed.value_at("structures[3].clauses[0].cap") == 30.0


@pytest.mark.parametrize(("changes", "message"), [
    ({"revenue.volatility": -1.0}, r"revenue.volatility = -1.0: expected a number >= 0.0"),
    ({"revenue.volatilty": 0.3}, r"revenue.volatilty: unknown key \(did you mean 'volatility'\?\)"),
    ({"simulation.steps_per_year": 0}, r"simulation.steps_per_year = 0: expected a number >= 1"),
    ({"revenue.exit_multiple": "eight"}, r"revenue.exit_multiple = 'eight': expected a number"),
    ({"structures[9].name": "x"}, r"structures\[9\].name: expected a list position from 0 to 3: structures has 4"),
    ({"revenue.volatility.x": 1.0}, r"revenue.volatility.x: expected a key that exists: revenue.volatility holds a "
                                    "value"),
    ({"structures[0.clauses": 1.0}, r"structures\[0.clauses: expected a key path such as"),
    ({"structures[1].clauses[0].interpolation": "cubic"}, r"interpolation = 'cubic': expected one of 'step' or "
                                                           "'linear'"),
    ({"simulation.horizon": "2040"}, r"simulation.horizon = '2040': expected a date such as 2030-12-31"),
    ({"parties.microsfot.discount_rate": 0.07}, r"parties.microsfot.discount_rate: expected one of the scenario's "
                                                r"parties, .*\(did you mean 'microsoft'\?\): with_values changes"),
    ({"events.ipoo.sigma": 0.5}, r"events.ipoo.sigma: expected one of the scenario's events, .*did you mean 'ipo'"),
])
def test_with_values_refuses_as_a_file_would(base, changes, message):
    with pytest.raises(InputError, match=message):
        base.with_values(changes)


def test_with_values_keeps_common_random_numbers(base):
    """A changed cap changes the structure that has it and nothing else, path by path."""
    before = dv.simulate(base, paths=4_000, seed=2)
    after = dv.simulate(base.with_values({"structures[3].clauses[0].cap": 20.0}), paths=4_000, seed=2)
    s = before.structures.index(base.structures[3].name)
    for other in range(len(before.structures)):
        if other != s:
            np.testing.assert_array_equal(after.pvs[:, other], before.pvs[:, other])
    assert not np.array_equal(after.pvs[:, s], before.pvs[:, s])
    pd.testing.assert_frame_equal(after.drivers, before.drivers, check_exact=True)


def test_a_scenario_is_hashable_like_the_frozen_value_it_is(base):
    assert hash(base) == hash(base.checked()) and len({base, base.checked()}) == 1


def test_a_scenario_cannot_change_in_place(base):
    with pytest.raises(TypeError, match="with_values"):
        base.parties["microsoft"] = base.parties["openai"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        base.structures.append(base.structures[0])  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="frozen"):
        base.revenue.volatility = 0.3  # type: ignore[misc]


def test_the_assumptions_round_trip_goes_through_with_values(base, tmp_path, monkeypatch):
    import openpyxl

    from valuation.scenario import schema

    path = dv.simulate(base, paths=200).to_excel(tmp_path / "a.xlsx")
    wb = openpyxl.load_workbook(path)
    ws = wb["Assumptions"]
    row = next(r for r in range(2, ws.max_row + 1) if ws.cell(r, 1).value == "structures[0].clauses[0].base_fraction")
    assert ws.cell(row, 5).value == "default"
    ws.cell(row, 2).value = 0.9
    wb.save(tmp_path / "b.xlsx")
    calls = []
    real = schema.Scenario.with_values
    monkeypatch.setattr(schema.Scenario, "with_values", lambda self, changes: calls.append(changes) or
                        real(self, changes))
    edited = dv.load_scenario(tmp_path / "b.xlsx")
    assert calls == [{"structures[0].clauses[0].base_fraction": 0.9}]
    assert edited.structures[0].clauses[0].base_fraction == 0.9


# ---------------------------------------------------------------- the catalogue of statistics


def test_every_summary_statistic_is_in_the_console_and_the_workbook(base, tmp_path):
    import openpyxl

    result = dv.simulate(base, paths=500)
    summary = result.summary()
    assert [s.key for s in SUMMARY] == list(summary.columns)
    console = format_summary(summary).splitlines()[0]
    wb = openpyxl.load_workbook(result.to_excel(tmp_path / "c.xlsx"))
    headers = [c.value for c in wb["Summary"][4]]
    for statistic in SUMMARY:
        assert statistic.short in console, statistic.key
        assert statistic.short in headers, statistic.key
    ws = wb["Summary"]
    compared = len(result.parties) + 1  # the second structure's first party: compared with the baseline
    cells = {h: ws.cell(4 + compared, j + 1).value for j, h in enumerate(headers)}
    row = summary.iloc[compared - 1]
    assert row["p_better"] == row["p_better"] and row["diff_se"] > 0  # a real comparison, not the baseline's
    for statistic in SUMMARY:
        assert cells[statistic.short] == pytest.approx(float(row[statistic.key]), rel=1e-15), statistic.key
    assert ws.cell(5, headers.index(SUMMARY[0].short) + 1).number_format == SUMMARY[0].excel


def test_the_95_percent_multiplier_is_one_constant():
    literal = re.compile(r"(?<![\d.])1\.96(?![\d])")
    for path in (ROOT / "valuation").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for i, line in enumerate(text.splitlines(), start=1):
            if literal.search(line) and "Z95 = 1.96" not in line:
                raise AssertionError(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")


# ---------------------------------------------------------------- the clause registry


def test_the_registry_is_the_one_list_of_clause_kinds():
    from valuation.engine.tables import ClauseTables
    from valuation.scenario import docs
    from valuation.scenario.clauses import Clause

    union, _ = typing.get_args(Clause)  # Annotated[Union[...], Field(discriminator="type")]
    assert set(typing.get_args(union)) == {k.model for k in REGISTRY} and len(REGISTRY) == 5
    assert [k.name for k in REGISTRY] == list(CLAUSE_TYPES)
    assert sorted(k.code for k in REGISTRY) == list(range(len(REGISTRY)))
    titles = [title for title, _, _ in docs.SECTIONS]
    for kind in REGISTRY:
        assert f"clause: {kind.name}" in titles
        assert kind.model.model_fields["type"].annotation.__args__ == (kind.name,)
    assert set(PARAMS) <= set(ClauseTables._fields)


def test_each_kind_fills_only_named_parameters(base):
    from valuation.engine.compile import _Grid, time_grid

    t = time_grid(base.horizon_years, 4)
    grid = _Grid(base, t)
    seen = set()
    for clause in [c for st in base.structures for c in st.clauses] + list(base.common_clauses):
        from valuation.scenario.clauses import kind_of

        values = kind_of(clause).fill(clause, grid)
        assert set(values) <= set(PARAMS), (clause.type, set(values) - set(PARAMS))
        seen.add(clause.type)
    assert seen == set(CLAUSE_TYPES)  # the base case has every kind


# ---------------------------------------------------------------- the package layout


def _imports(path: Path) -> set[str]:
    """Every module of the project a file imports, at the top or inside a function (not for type checkers only:
    ``if TYPE_CHECKING:`` runs nothing)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in ("valuation", "models")}


def _modules() -> dict[str, set[str]]:
    graph = {}
    for path in [*(ROOT / "valuation").rglob("*.py"), *(ROOT / "models").rglob("*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _imports(path)
    names = set(graph)
    return {m: {d for d in deps if d in names and d != m} for m, deps in graph.items()}


def test_there_are_no_import_cycles():
    """scenario <-> assumptions and results <-> report were cycles; imports inside functions count too."""
    graph = _modules()
    graph = {m: {d for d in deps if not m.startswith(d + ".") and m not in ("valuation",)} for m, deps in
             graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(d):], d]))
            if d not in state:
                visit(d, [*trail, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state and m != "valuation":
            visit(m, [m])


def test_the_report_and_the_core_import_nothing_of_the_command_line():
    graph = _modules()
    for m, deps in graph.items():
        if m.startswith(("valuation.report", "valuation.scenario", "valuation.engine", "valuation.stats")) or \
                m in ("valuation.results", "valuation.api"):
            assert "valuation.cli" not in deps, m


def test_the_dead_code_is_gone():
    from models import revenue
    from valuation.engine import kernel, tables

    for module, name in ((rng, "normal_pair"), (revenue, "log_revenue_step"), (revenue, "growth_step"),
                         (kernel, "_pattern")):
        assert not hasattr(module, name), name
    for field in ("st_requires", "st_fallback", "rates"):
        assert field not in tables.Compiled.__dataclass_fields__
    assert "slow" not in (ROOT / "pyproject.toml").read_text()


# ---------------------------------------------------------------- the public surface


def test_the_public_surface():
    for name in ("load_scenario", "simulate", "merge", "Scenario", "SimulationResult", "InputError", "PathsNotKept",
                 "ArgumentTypeError"):
        assert name in dv.__all__ and getattr(dv, name) is not None
    assert (ROOT / "valuation" / "py.typed").exists()


def test_a_seed_sequence_is_a_seed(base):
    ss = np.random.SeedSequence(12345)
    a = dv.simulate(base, paths=500, seed=ss)
    b = dv.simulate(base, paths=500, seed=np.random.SeedSequence(12345))
    np.testing.assert_array_equal(a.pvs, b.pvs)
    np.testing.assert_array_equal(a.pvs, dv.simulate(base, paths=500, seed=12345).pvs)  # the same entropy
    spawned = dv.simulate(base, paths=500, seed=ss.spawn(1)[0])
    assert a.seed is None and a.entropy == 12345 and not np.array_equal(spawned.pvs, a.pvs)
    listed = dv.simulate(base, paths=500, seed=np.random.SeedSequence([1, 2]))  # entropy a list: it crashed
    assert listed.entropy == [1, 2] and listed.seed is None


def test_to_xarray_labels_every_dimension(base):
    xr = pytest.importorskip("xarray")
    result = dv.simulate(base, paths=300, first_path=10)
    ds = result.to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert ds["pv"].dims == ("path", "structure", "party")
    assert list(ds["structure"].values) == result.structures and ds["path"].values[0] == 10
    np.testing.assert_array_equal(ds["pv"].sel(structure="oct_2025_recap", party="microsoft").values,
                                  result.pv("oct_2025_recap", "microsoft"))
    assert ds["expected_flow"].dims == ("structure", "party", "discount_class", "slot")
    assert ds["date"].dims == ("slot",) and float(ds["years"][-1]) == result.slot_time[-1]
    np.testing.assert_array_equal(ds["agi_declared"].values, result.drivers["agi_declared"].to_numpy())
    streamed = dv.simulate(base, paths=2_000, keep_paths=False).to_xarray()
    assert streamed["head_pv"].sizes["head_path"] == 1_000 and streamed.attrs["paths_kept"] == 0


def test_every_package_is_installed():
    """An installed copy (not an editable one) holds only the packages pyproject lists: a new subpackage left
    out works from the source tree and fails on a clean install (as valuation.analysis once did)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("valuation", "models")
             for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}  # (some have no __init__.py)
    assert found == listed
