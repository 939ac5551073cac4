"""One place makes the results tables: every recipe's ``results.md``, ``tdmt report RUNS`` (:mod:`tdmt.aggregate`)
and ``tdmt report RUNS --paper ID`` (:mod:`tdmt.paper_report`) score runs with the functions below, reading the
same ``eval.csv`` rows, so a run's number is computed once, one way, wherever it is shown.

A run's evaluation history is its ``eval.csv`` rows: ``step`` and ``eval/<task>/<field>`` (``return``,
``return_std`` over the evaluation episodes, ``success`` on Meta-World). The papers' metrics of one run and task
(:func:`task_score`):

* ``max_average_reward`` — max over evaluations of the mean return (KTM-DRL Tables 1–2);
* ``performance_ratio`` — that over the Ideal teachers' (KTM-DRL Table 3; :func:`ratio`);
* ``final_return`` / ``success_rate`` — the last evaluation's mean return / success rate (CTPG Table 1);
* ``mean_return`` — the evaluation at a fraction of the run (Arora Table 1: 1M of 5M frames), else the last one
  (Arora Table 2);

and Arora's normalised score (:func:`normalised`). Across runs (seeds) a cell is mean ± std; a column of one run
shows its value, ± the std over its evaluation episodes where the table reads one evaluation (as Arora's tables).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tdmt.report import markdown_table, method_name

METRICS = ("max_average_reward", "performance_ratio", "final_return", "success_rate", "mean_return")
IDEAL = method_name("train_teachers", {})  # the single-task teachers' column ("Ideal", KTM-DRL Tables 1–3)

Rows = Sequence[Mapping[str, object]]  # one run's eval.csv rows
Column = Sequence[Rows]  # one method: the eval rows of each of its runs (seeds)


def series(rows: Rows, task: str, field: str = "return") -> np.ndarray:
    """The logged values of ``eval/<task>/<field>``, in step order (empty cells skipped)."""
    column = f"eval/{task}/{field}"
    return np.asarray([float(r[column]) for r in rows if r.get(column) not in (None, "")], dtype=float)


def at_fraction(rows: Rows, fraction: float | None) -> Rows:
    """The evaluation at ``fraction`` of the run (the last one at or before it; ``None``: the last), as one row."""
    if not rows:
        return []
    if fraction is None:
        return rows[-1:]
    last = float(rows[-1]["step"])
    before = [r for r in rows if float(r["step"]) <= fraction * last + 1e-9]
    return (before or rows[:1])[-1:]


def _reads_max(metric: str) -> bool:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {list(METRICS)}")
    return metric in ("max_average_reward", "performance_ratio")


def task_score(rows: Rows, task: str, metric: str = "max_average_reward", fraction: float | None = None) -> float:
    """One run's score of ``task`` in ``metric`` (nan when ``rows`` lack it); ``performance_ratio`` gives the
    numerator (divide by the Ideal's with :func:`ratio`), ``success_rate`` a fraction in [0, 1]."""
    if _reads_max(metric):
        values = series(rows, task)
        return float(values.max()) if len(values) else math.nan
    values = series(at_fraction(rows, fraction), task, "success" if metric == "success_rate" else "return")
    return float(values[-1]) if len(values) else math.nan


def episode_std(rows: Rows, task: str, metric: str, fraction: float | None = None) -> float:
    """The std over evaluation episodes behind a one-evaluation return score (nan for max or success scores)."""
    if _reads_max(metric) or metric == "success_rate":
        return math.nan
    values = series(at_fraction(rows, fraction), task, "return_std")
    return float(values[-1]) if len(values) else math.nan


def task_scores(rows: Rows, tasks: Sequence[str], metric: str = "max_average_reward") -> dict[str, float]:
    """``{task: task_score}`` of one run."""
    return {t: task_score(rows, t, metric) for t in tasks}


def mean_score(rows: Rows, tasks: Sequence[str], metric: str, fraction: float | None = None) -> float:
    """A paper cell's score of one run: the mean over ``tasks`` (nan if one is missing); success rates in %."""
    values = [task_score(rows, t, metric, fraction) for t in tasks]
    mean = float(np.mean(values)) if values else math.nan
    return 100.0 * mean if metric == "success_rate" else mean


def ratio(score: float, ideal: float) -> float:
    """Performance ratio (KTM-DRL Table 3): nan where the Ideal's return is not positive (a ratio of two negative
    returns inverts: -140 / -100 = 1.4 would read as better)."""
    return score / ideal if ideal > 0 else math.nan


def normalised(score: float, teacher: float, random: float) -> float:
    """Arora et al.'s normalised score ``(R − R_random) / (R_teacher − R_random)``: 1 = the teacher, 0 = random."""
    return (score - random) / (teacher - random) if teacher != random else math.nan


def ideal_scores(ideal: Column, tasks: Sequence[str]) -> dict[str, float]:
    """The Ideal's max average return per task: the mean over its runs (seeds)."""
    return {t: Stat.of([task_score(rows, t) for rows in ideal]).mean for t in tasks}


@dataclass(frozen=True)
class Stat:
    """Mean, std and count of the valid (not nan) values of a cell."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
        return cls(float(arr.mean()), float(arr.std()), len(arr)) if len(arr) else cls(math.nan, math.nan, 0)


def cell(stat: Stat, spread: float = math.nan) -> str:
    """``mean ± std`` across runs; one run: its value, ± ``spread`` (its episodes' std) when known; "n/a" if none.
    2 decimals below 10 in magnitude, else 1."""
    if stat.n == 0:
        return "n/a"
    digits = 2 if abs(stat.mean) < 10 else 1
    std = stat.std if stat.n > 1 else spread
    return f"{stat.mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


@dataclass(frozen=True)
class Table:
    """One table of a report: its Markdown cells and the numbers behind them (the CSV)."""

    title: str
    stem: str  # the CSV's name in a report folder: <suite>_<stem>.csv
    header: list[str]
    cells: list[list[str]]
    csv_header: list[str]
    records: list[list[object]]

    def markdown(self) -> str:
        return f"### {self.title}\n\n" + markdown_table(self.header, self.cells)

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(self.csv_header)
        writer.writerows(self.records)
        return buf.getvalue()


def score_table(columns: Mapping[str, Column], tasks: Sequence[str], metric: str, title: str, stem: str) -> Table:
    """Tables 1–2 layout: one row per task, one column per method, each cell the method's runs' ``metric``."""
    cells, records = [], []
    for t in tasks:
        line = [t]
        for label, runs in columns.items():
            stat = Stat.of([task_score(rows, t, metric) for rows in runs])
            spread = episode_std(runs[0], t, metric) if len(runs) == 1 else math.nan
            line.append(cell(stat, spread))
            records.append([t, label, stat.mean, stat.std, stat.n])
        cells.append(line)
    return Table(title, stem, ["task", *columns], cells, ["task", "method", "mean", "std", "seeds"], records)


def ratio_table(columns: Mapping[str, Column], tasks: Sequence[str], ideal: str = IDEAL) -> Table:
    """Table 3 layout: one row per method (not the Ideal), one column per task and the average over the tasks with
    a ratio; a cell is each run's :func:`ratio` to the Ideal's mean over its runs, mean over runs."""
    base = ideal_scores(columns[ideal], tasks)
    cells, records = [], []
    for label, runs in columns.items():
        if label == ideal:
            continue
        stats = [Stat.of([ratio(task_score(rows, t), base[t]) for rows in runs]) for t in tasks]
        average = Stat.of([s.mean for s in stats])
        cells.append([label, *(cell(s) for s in stats), cell(Stat(average.mean, math.nan, min(average.n, 1)))])
        records.append([label, *(s.mean for s in stats), average.mean])
    return Table(f"performance ratio to {ideal} (KTM-DRL Table 3 layout; n/a where the {ideal}'s return is not "
                 "positive, the average is over the other tasks)", "ratio", ["method", *tasks, "average"], cells,
                 ["method", *tasks, "average"], records)


def report_tables(columns: Mapping[str, Column], tasks: Sequence[str], success: bool, ideal: str = IDEAL
                  ) -> list[Table]:
    """The tables of a report on one suite (a sweep's, or one run's ``results.md``): max average return, final
    return, final success rate (suites with one), and the ratio to the Ideal when its runs and another's are here."""
    tables = [score_table(columns, tasks, "max_average_reward", "max average return (KTM-DRL Tables 1–2)",
                          "max_return"),
              score_table(columns, tasks, "final_return", "final return (the last evaluation: CTPG Table 1, Arora "
                          "Table 2)", "final_return")]
    if success:
        tables.append(score_table(columns, tasks, "success_rate", "final success rate (CTPG Table 1)",
                                  "final_success"))
    if ideal in columns and len(columns) > 1:
        tables.append(ratio_table(columns, tasks, ideal))
    return tables


CELLS_NOTE = ("Cells: mean ± std across runs (seeds); a column of one run shows its value, ± the std over its "
              "evaluation episodes where the table reads one evaluation.\n\n")


def report_markdown(columns: Mapping[str, Column], tasks: Sequence[str], success: bool, ideal: str = IDEAL) -> str:
    """:func:`report_tables` as Markdown, after the note on what a cell holds."""
    return CELLS_NOTE + "\n".join(t.markdown() for t in report_tables(columns, tasks, success, ideal))
