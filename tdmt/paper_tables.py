"""The papers' results tables as data: ``paper_tables.yaml`` read into typed, checked objects.

``list_tables()`` names the tables (``ktm-table1``, ``arora-table2``, ``ctpg-table1``, ...); ``load_table(id)``
returns a :class:`PaperTable`: the caption, metric, unit and protocol (budget, episodes, seeds), the row and column
keys as the paper prints them, every cell (:class:`Cell`: mean, ± std where printed, N/A or garbled), and for any
(row, column) the tdmt run that reproduces it (:class:`Target`: suite, task, recipe, config overrides, budget).
See docs/paper-tables.md.

    >>> t = load_table("ktm-table1")
    >>> t.cell("HCSmallTorso", "KTM-DRL (ours)").mean
    10348.0
    >>> t.target("HCSmallTorso", "G-Surgery [24]").overrides
    {'pcgrad': True, 'update_schedule': 'batched'}
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DATA_FILE = Path(__file__).with_name("paper_tables.yaml")

_TARGET_KEYS = {"suite", "task", "recipe", "overrides", "env_steps_per_task", "needs", "metric", "unit", "scale",
                "eval_at_frames", "note"}


@dataclass(frozen=True)
class Cell:
    """One printed number: ``mean`` (None when N/A or unreadable), ``std`` where the paper prints ``± std``."""

    mean: float | None
    std: float | None = None
    na: str | None = None  # why the paper prints N/A here
    garbled: str | None = None  # why the text extraction cannot be read here

    @property
    def available(self) -> bool:
        return self.mean is not None


@dataclass(frozen=True)
class Target:
    """What tdmt runs for one cell: the table's defaults, then the row's mapping, then the column's."""

    suite: str | None = None
    task: str | None = None
    recipe: str | None = None  # a tdmt.algos.RECIPES name; None: no tdmt recipe for this method
    overrides: dict[str, Any] = field(default_factory=dict)  # keys of the recipe's Config
    env_steps_per_task: int | None = None  # the paper's budget (not an override: budget keys differ by recipe)
    needs: tuple[str, ...] = ()  # recipes whose runs must exist first
    metric: str = ""
    unit: str = ""
    scale: float = 1.0  # multiply a cell by this for the raw metric (CTPG prints HalfCheetah returns ×1e3)
    eval_at_frames: int | None = None  # the point of the run the cell reports, where not the end
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Protocol:
    budget: str  # the paper's words
    env_steps_per_task: int | dict[str, int] | None  # one number, or per suite
    eval_episodes: int | None
    seeds: int | None  # None: not stated
    evaluation: str
    reported: str


@dataclass(frozen=True)
class PaperTable:
    id: str
    paper: str  # key of ``papers`` in the data file
    paper_title: str
    paper_text: str  # file name under shared/papers/
    caption: str | None  # None where the extraction lost it (``caption_garbled`` says so)
    caption_garbled: str | None
    source: str  # where in the text file
    metric: str
    unit: str
    scale: float
    higher_is_better: bool
    protocol: Protocol
    row_axis: str
    rows: tuple[str, ...]
    column_axis: str
    columns: tuple[str, ...]
    row_map: dict[str, dict[str, Any]]
    column_map: dict[str, dict[str, Any]]
    cells: dict[tuple[str, str], Cell]
    defaults: dict[str, Any]  # table-level mapping (suite)
    reference: Target | None  # the denominator of a ratio metric
    checks: tuple[str, ...]  # the paper's prose claims these numbers were checked against
    notes: tuple[str, ...]

    def _check_key(self, row: str, column: str) -> None:
        if row not in self.rows:
            raise ValueError(f"{self.id}: unknown row {row!r}; valid: {list(self.rows)}")
        if column not in self.columns:
            raise ValueError(f"{self.id}: unknown column {column!r}; valid: {list(self.columns)}")

    def cell(self, row: str, column: str) -> Cell:
        self._check_key(row, column)
        return self.cells[(row, column)]

    def value(self, row: str, column: str) -> float | None:
        """The cell's mean in the raw metric (``mean × scale``), None when not printed."""
        cell, target = self.cell(row, column), self.target(row, column)
        return None if cell.mean is None else cell.mean * target.scale

    def target(self, row: str, column: str) -> Target:
        self._check_key(row, column)
        return _merge(self, [self.defaults, self.row_map[row], self.column_map[column]])

    def items(self) -> Iterator[tuple[str, str, Cell]]:
        """(row, column, cell) in the paper's order, row by row."""
        for row in self.rows:
            for column in self.columns:
                yield row, column, self.cells[(row, column)]


def _merge(table: PaperTable, parts: list[Mapping[str, Any]]) -> Target:
    values: dict[str, Any] = {"metric": table.metric, "unit": table.unit, "scale": table.scale}
    overrides: dict[str, Any] = {}
    needs: list[str] = []
    notes: list[str] = []
    for part in parts:
        for key, value in part.items():
            if key == "overrides":
                for k, v in (value or {}).items():
                    if k in overrides and overrides[k] != v:
                        raise ValueError(f"{table.id}: override {k!r} set to both {overrides[k]!r} and {v!r}")
                    overrides[k] = v
            elif key == "needs":
                needs += [n for n in value if n not in needs]
            elif key == "note":
                notes.append(value)
            else:
                values[key] = value
    values["scale"] = float(values["scale"])
    if values.get("env_steps_per_task") is None:  # the protocol's budget: one number, or one per suite
        budget = table.protocol.env_steps_per_task
        values["env_steps_per_task"] = budget.get(values.get("suite")) if isinstance(budget, dict) else budget
    return Target(overrides=overrides, needs=tuple(needs), notes=tuple(notes), **values)


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{DATA_FILE.name}: {where}: {message}")


def _cell(where: str, raw: Any) -> Cell:
    if isinstance(raw, bool):
        raise _fail(where, f"cell {raw!r} is not a number")
    if isinstance(raw, (int, float)):
        return Cell(float(raw))
    if isinstance(raw, dict):
        unknown = set(raw) - {"mean", "std", "na", "garbled"}
        if unknown:
            raise _fail(where, f"cell has unknown keys {sorted(unknown)}")
        mean, std = raw.get("mean"), raw.get("std")
        if "na" in raw or "garbled" in raw:
            if mean is not None:
                raise _fail(where, "an N/A or garbled cell has mean null")
            return Cell(None, None, na=raw.get("na"), garbled=raw.get("garbled"))
        if not isinstance(mean, (int, float)) or (std is not None and not isinstance(std, (int, float))):
            raise _fail(where, f"cell {raw!r} needs a numeric mean (and std)")
        return Cell(float(mean), None if std is None else float(std))
    raise _fail(where, f"cell {raw!r} is not a number, {{mean, std}}, {{na}} or {{garbled}}")


def _axis(table_id: str, raw: dict[str, Any], name: str) -> tuple[str, tuple[str, ...], dict[str, dict[str, Any]]]:
    where = f"{table_id}.{name}"
    keys = tuple(raw[name]["keys"])
    mapping = raw[name]["map"]
    if len(set(keys)) != len(keys):
        raise _fail(where, "repeated keys")
    if set(mapping) != set(keys):
        raise _fail(where, f"map keys {sorted(mapping)} differ from keys {sorted(keys)}")
    for key, entry in mapping.items():
        unknown = set(entry) - _TARGET_KEYS
        if unknown:
            raise _fail(f"{where}[{key!r}]", f"unknown mapping keys {sorted(unknown)}; valid: {sorted(_TARGET_KEYS)}")
    return raw[name]["axis"], keys, mapping


def _table(raw: dict[str, Any], papers: dict[str, Any]) -> PaperTable:
    tid = raw["id"]
    row_axis, rows, row_map = _axis(tid, raw, "rows")
    column_axis, columns, column_map = _axis(tid, raw, "columns")
    if set(raw["cells"]) != set(rows):
        raise _fail(f"{tid}.cells", f"row keys {sorted(raw['cells'])} differ from rows {sorted(rows)}")
    cells: dict[tuple[str, str], Cell] = {}
    for row in rows:
        values = raw["cells"][row]
        if len(values) != len(columns):
            raise _fail(f"{tid}.cells[{row!r}]", f"{len(values)} values for {len(columns)} columns")
        for column, value in zip(columns, values):
            cells[(row, column)] = _cell(f"{tid}.cells[{row!r}][{column!r}]", value)
    if raw["paper"] not in papers:
        raise _fail(tid, f"unknown paper {raw['paper']!r}; valid: {sorted(papers)}")
    paper = papers[raw["paper"]]
    proto = raw["protocol"]
    table = PaperTable(
        id=tid, paper=raw["paper"], paper_title=paper["title"], paper_text=paper["text"],
        caption=raw.get("caption"), caption_garbled=raw.get("caption_garbled"), source=raw["source"],
        metric=raw["metric"], unit=raw["unit"], scale=float(raw.get("scale", 1)),
        higher_is_better=bool(raw.get("higher_is_better", True)),
        protocol=Protocol(budget=proto["budget"], env_steps_per_task=proto.get("env_steps_per_task"),
                          eval_episodes=proto.get("eval_episodes"), seeds=proto.get("seeds"),
                          evaluation=proto["evaluation"], reported=proto["reported"]),
        row_axis=row_axis, rows=rows, column_axis=column_axis, columns=columns, row_map=row_map,
        column_map=column_map, cells=cells, defaults={"suite": raw["suite"]} if raw.get("suite") else {},
        reference=None, checks=tuple(raw.get("checks", ())), notes=tuple(raw.get("notes", ())),
    )
    if raw.get("reference"):
        object.__setattr__(table, "reference", _merge(table, [table.defaults, raw["reference"]]))
    return table


@functools.cache
def _data() -> dict[str, Any]:
    return yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))


@functools.cache
def _tables() -> dict[str, PaperTable]:
    data = _data()
    tables: dict[str, PaperTable] = {}
    for raw in data["tables"]:
        if raw["id"] in tables:
            raise _fail(raw["id"], "repeated table id")
        try:
            tables[raw["id"]] = _table(raw, data["papers"])
        except KeyError as e:
            raise _fail(raw.get("id", "?"), f"missing field {e}") from None
    return tables


def list_tables() -> list[str]:
    """The table ids in the data file, in its order."""
    return list(_tables())


def load_table(table_id: str) -> PaperTable:
    tables = _tables()
    if table_id not in tables:
        raise ValueError(f"unknown paper table {table_id!r}; valid: {list(tables)}")
    return tables[table_id]


def not_transcribed() -> list[dict[str, str]]:
    """The figures and numbers the data file deliberately leaves out, with why."""
    return list(_data().get("not_transcribed", []))
