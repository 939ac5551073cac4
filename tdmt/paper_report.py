"""Our runs side by side with a paper's table (``tdmt report RUNS --paper ktm-table1``).

For every cell of the table (:mod:`tdmt.paper_tables`) the runs that compute it are found among the finished runs
under the given folders (:func:`tdmt.runs.find_runs`): same recipe and suite, and the table's method switches
(every config key that some cell of the table sets for that recipe) as the cell sets them, and not at a value that
marks another cell (so runs with scaled-down budgets still find their cells). Each run gives one score
from its ``eval.csv``, in the paper's metric, computed by :mod:`tdmt.tables` (as its ``results.md`` and
``tdmt report``):

* ``max_average_reward`` — max over evaluations of the task's mean return (KTM-DRL Tables 1–2);
* ``performance_ratio`` — that, over the Ideal teachers' (mean over their seeds; nan where it is not positive);
* ``final_return`` / ``success_rate`` — the final evaluation's mean over tasks (CTPG Table 1: return, success %);
* ``mean_return`` — the evaluation at the point the paper reads (Arora), or the last one.

The cell shows the paper's value, ours as mean ± std over seeds (n), and ours / paper. The header states the
budget that was actually run against the paper's, so a reduced-budget table is never taken for a reproduction.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from tdmt import runs as runs_mod
from tdmt import tables
from tdmt.algos import get_recipe
from tdmt.envs import get_suite
from tdmt.logger import CSVLog
from tdmt.paper_tables import PaperTable, Target, load_table
from tdmt.report import markdown_table, write_text

TEACHERS = "train_teachers"
PATH_KEYS = ("teachers_dir", "teacher_path")  # where a run reads its inputs: not a method switch


def _switches(table: PaperTable) -> dict[str, dict[str, list]]:
    """Per recipe, the config keys the table's cells set and the values they set them to: what tells its methods
    apart (e.g. ``ktm_drl``: ``alpha`` 0.0 for "Online w/o Teacher", ``offline_steps`` 0 for "w/o Offline")."""
    keys: dict[str, dict[str, list]] = {}
    for row, column, _ in table.items():
        target = table.target(row, column)
        if target.recipe:
            for key, value in target.overrides.items():
                if key not in PATH_KEYS:
                    values = keys.setdefault(target.recipe, {}).setdefault(key, [])
                    if value not in values:
                        values.append(value)
    return keys


def _matches(run: runs_mod.RunInfo, target: Target, switches: dict[str, list]) -> bool:
    """Same recipe and suite; every switch the cell sets equal, and no switch at a value that marks another cell
    (so a run whose budgets were scaled down still matches the cell that keeps the default)."""
    if run.recipe != target.recipe or run.suite != target.suite:
        return False
    defaults = runs_mod.config_of(run.recipe, {})
    for key, values in switches.items():
        value = run.config.get(key, getattr(defaults, key, None))
        if key in target.overrides:
            if value != target.overrides[key]:
                return False
        elif value in values:
            return False
    return True


def _tasks(target: Target) -> list[str]:
    return [target.task] if target.task else list(get_suite(target.suite).task_names)


def _finetune_rows(run: runs_mod.RunInfo, target: Target) -> tuple[list[dict[str, str]], float | None]:
    """The phase of a ``finetune`` run that a cell reads, and the fraction of that phase it is read at."""
    cfg = run.config
    if target.overrides.get("scratch_target"):  # Scratch row: each task's policy trained from scratch
        phase = "source" if target.task == cfg.get("source_task") else "scratch_target"
        return CSVLog(run.dir / phase / "eval.csv").rows(), None
    return CSVLog(run.dir / "target" / "eval.csv").rows(), _fraction(target)


def _fraction(target: Target) -> float | None:
    """The fraction of the run a cell reads (Arora: 1M of 5M frames); None: its end."""
    return target.eval_at_frames / target.env_steps_per_task if target.eval_at_frames else None


def run_score(run: runs_mod.RunInfo, target: Target) -> float:
    """One run's score for ``target`` in the paper's metric (:func:`tdmt.tables.mean_score`; nan when its
    ``eval.csv`` lacks it)."""
    if run.recipe == "finetune":
        rows, fraction = _finetune_rows(run, target)
    else:
        rows, fraction = CSVLog(run.dir / "eval.csv").rows(), _fraction(target)
    return tables.mean_score(rows, _tasks(target), target.metric, fraction)


def _budget(run: runs_mod.RunInfo) -> int | None:
    """A run's training budget per task (fine-tuning: its first phase's frames, as the paper's 5M)."""
    budget = runs_mod.budget_of(run.recipe, run.config)
    return budget if budget is not None else run.config.get("source_frames")


def _budget_run(runs: Sequence[runs_mod.RunInfo]) -> str:
    budgets = sorted({b for r in runs if (b := _budget(r)) is not None})
    return ", ".join(f"{b:,}" for b in budgets) or "unknown"


def paper_report(folders: Sequence[str | os.PathLike], table_id: str, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``paper-<id>.md`` and ``paper-<id>.csv`` into ``out_dir``; returns their paths."""
    table = load_table(table_id)
    runs = [r for folder in folders for r in runs_mod.find_runs(folder) if r.status == "done"]
    switches = _switches(table)
    for recipe in switches:
        get_recipe(recipe)  # the mapping names real recipes
    reference = table.reference
    ideal: dict[str, float] = {}
    if reference is not None:
        for task in get_suite(reference.suite).task_names:
            one = dataclasses.replace(reference, task=task, metric="max_average_reward")
            ideal[task] = tables.Stat.of([run_score(r, one) for r in runs if _matches(r, one, {})]).mean
    csv_rows, md_rows, used = [], [], []
    for row in table.rows:
        md_row = [row]
        for column in table.columns:
            target, paper = table.target(row, column), table.value(row, column)
            if target.recipe is None:
                md_row.append(f"{_paper_cell(table, row, column)} / no tdmt recipe")
                csv_rows.append([row, column, paper, "", "", 0, "", "no tdmt recipe"])
                continue
            matched = [r for r in runs if _matches(r, target, switches.get(target.recipe, {}))]
            used += matched
            scores = [run_score(r, target) for r in matched]
            if target.metric == "performance_ratio":
                scores = [tables.ratio(s, ideal.get(target.task, math.nan)) for s in scores]
            ours = tables.Stat.of(scores)
            if not ours.n:
                note = "no run" if not matched else "no score (Ideal return not positive, or not evaluated)"
                md_row.append(f"{_paper_cell(table, row, column)} / {note}")
                csv_rows.append([row, column, paper, "", "", 0, "", note])
                continue
            ratio = ours.mean / paper if paper not in (None, 0) else math.nan
            digits = _digits(paper if paper is not None else ours.mean)
            md_row.append(f"{_paper_cell(table, row, column)} / {ours.mean:.{digits}f} ± {ours.std:.{digits}f} "
                          f"(n={ours.n}) / {ratio:.2f}")
            csv_rows.append([row, column, paper, ours.mean, ours.std, ours.n, ratio, ""])
        md_rows.append(md_row)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paper_budget = table.protocol.env_steps_per_task
    header = (f"# {table.caption or table.id} — paper vs tdmt\n\n"
              f"{table.paper_title}. Metric: {table.metric} ({table.unit}). Each cell: the paper's value / ours, "
              f"mean ± std over seeds (n) / ours ÷ paper.\n\n"
              f"* Paper protocol: {table.protocol.budget}; {table.protocol.evaluation}; seeds: "
              f"{table.protocol.seeds or 'not stated'}.\n"
              f"* Budget run here (env steps per task, per recipe's step budget): {_budget_run(used)}; the paper's: "
              f"{paper_budget}.\n")
    if _reduced(used, paper_budget):
        header += "* **Reduced budget: this table is a smoke run of the pipeline, not a reproduction.**\n"
    md = header + "\n" + markdown_table([table.row_axis, *table.columns], md_rows)
    md_path, csv_path = out / f"paper-{table.id}.md", out / f"paper-{table.id}.csv"
    write_text(md_path, md)
    buf = io.StringIO()
    csv.writer(buf).writerows([["row", "column", "paper", "ours_mean", "ours_std", "n", "ratio", "note"],
                               *csv_rows])
    write_text(csv_path, buf.getvalue())
    return [md_path, csv_path]


def _reduced(runs: Sequence[runs_mod.RunInfo], paper_budget: int | dict | None) -> bool:
    budgets = [b for r in runs if (b := _budget(r)) is not None]
    wanted = min(paper_budget.values()) if isinstance(paper_budget, dict) else paper_budget
    return bool(budgets and wanted and min(budgets) < wanted / 2)


def _digits(value: float) -> int:
    """Decimals to show: 4 for ratios and rates below 2, 1 for returns."""
    return 4 if abs(value) < 2 else 1


def _paper_cell(table: PaperTable, row: str, column: str) -> str:
    """The paper's value in its raw metric, with its ± std where printed ("n/a" where it printed none)."""
    cell, value = table.cell(row, column), table.value(row, column)
    if value is None:
        return "n/a"
    digits = _digits(value)
    std = getattr(cell, "std", None)
    scale = value / cell.mean if cell.mean else 1.0
    return f"{value:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if std is not None else "")
