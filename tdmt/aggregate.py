"""Aggregate a finished sweep into the papers' tables and figures (``tdmt report runs/<sweep>``).

For every finished run (``summary.json`` present) the per-task score is read from its ``eval.csv``:

* ``max average return`` = max over evaluation points of the mean episode return (KTM-DRL Tables 1–2),
* ``final return`` = the last evaluation point, and on Meta-World the final ``success`` rate (CTPG Table 1).

Per suite the report holds, as Markdown (``report.md``) and CSV:

* **Table 1/2 layout** (``<suite>_max_return.csv``): one row per task, one column per method, cells
  ``mean ± std`` across seeds, with an "Ideal" column for the single-task teachers when their runs exist;
* **Table 3 layout** (``<suite>_ratio.csv``, only with teachers): one row per method, one column per task plus
  the average, the performance ratio ``max average return(method) / max average return(Ideal)``, averaged over
  the method's seeds (the teachers' score is their mean over seeds);
* **learning curves** (``<suite>_curves.png``): per task, the mean over seeds with a shaded ± std band
  (KTM-DRL Figures 2–3), drawn by :func:`tdmt.report.plot_curves`.

Any folder of runs works (a sweep, ``runs/`` of hand-launched recipes, a mix): every finished run under it is found
by :func:`tdmt.runs.find_runs`. A method is labelled by its paper name (:func:`tdmt.report.method_name`), with its
variant (the config keys that differ from the recipe's defaults) when runs of one method differ otherwise. Teacher
runs are those of the ``train_teachers`` recipe ("Ideal"), in the folder itself or in the folder given by
``teachers=``.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tdmt import runs as runs_mod
from tdmt.algos.run import SUMMARY
from tdmt.envs import get_suite
from tdmt.logger import CSVLog
from tdmt.report import markdown_table, method_name, plot_curves, write_text

TEACHER_RECIPE = "train_teachers"
IDEAL = method_name(TEACHER_RECIPE, {})


@dataclass
class RunResult:
    """One finished run: where it sits in the grid and its evaluation rows."""

    recipe: str
    suite: str
    variant: str
    seed: int
    rows: list[dict[str, str]] = field(repr=False)
    method: str = ""  # the paper's name of the method (tdmt.report.method_name)

    dir: Path = Path()  # the run folder

    def scores(self, task: str, metric: str = "return") -> np.ndarray:
        column = f"eval/{task}/{metric}"
        return np.asarray([float(r[column]) for r in self.rows if r.get(column) not in (None, "")])


def find_runs(folder: str | os.PathLike) -> list[RunResult]:
    """Finished runs (``summary.json`` present) anywhere under ``folder``, whoever launched them."""
    return [RunResult(r.recipe, r.suite, r.variant, r.seed if r.seed is not None else 0,
                      CSVLog(r.dir / "eval.csv").rows(), r.method, r.dir)
            for r in runs_mod.find_runs(folder) if r.status == "done"]


def _labels(runs: list[RunResult]) -> dict[tuple[str, str], str]:
    """Legend and table label of each (recipe, variant): the method's name, and the variant too where one name
    covers several variants."""
    variants = defaultdict(set)
    for r in runs:
        variants[r.method].add((r.recipe, r.variant))
    return {(r.recipe, r.variant): r.method if len(variants[r.method]) == 1 else f"{r.method} ({r.variant})"
            for r in runs}


def _stat(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=float)
    return (float(arr.mean()), float(arr.std()), len(arr)) if len(arr) else (float("nan"), float("nan"), 0)


def _cell(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "n/a"
    digits = 2 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _per_method(runs: list[RunResult], labels: dict[tuple[str, str], str]) -> dict[str, list[RunResult]]:
    """Runs grouped by label, the Ideal (teachers) first."""
    grouped: dict[str, list[RunResult]] = defaultdict(list)
    for r in runs:
        grouped[labels[(r.recipe, r.variant)]].append(r)
    return dict(sorted(grouped.items(), key=lambda kv: (kv[0] != IDEAL, kv[0])))


def score_table(methods: dict[str, list[RunResult]], tasks: list[str], reduce: str, metric: str = "return"
                ) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{method: {task: (mean, std, seeds)}}`` of each run's ``max`` or ``last`` evaluation score."""
    pick = {"max": np.max, "last": lambda a: a[-1]}[reduce]
    table = {}
    for label, runs in methods.items():
        table[label] = {t: _stat([float(pick(s)) for r in runs if len(s := r.scores(t, metric))]) for t in tasks}
    return table


def ratio_table(methods: dict[str, list[RunResult]], tasks: list[str]) -> dict[str, dict[str, float]]:
    """Performance ratio (KTM-DRL Table 3): each run's max average return over the Ideal's, mean over seeds; nan
    where the Ideal's return is not positive (a ratio of two negative returns inverts: 1.4 would mean worse), the
    average is over the other tasks (as the recipes' ``results.md``)."""
    ideal = {t: _stat([float(s.max()) for r in methods[IDEAL] if len(s := r.scores(t))])[0] for t in tasks}
    table = {}
    for label, runs in methods.items():
        if label == IDEAL:
            continue
        row = {t: float(np.mean([s.max() / ideal[t] for r in runs if len(s := r.scores(t))] or [np.nan]))
               if ideal[t] > 0 else float("nan") for t in tasks}
        valid = [v for v in row.values() if not np.isnan(v)]
        row["average"] = float(np.mean(valid)) if valid else float("nan")
        table[label] = row
    return table


def _suite_section(suite: str, runs: list[RunResult], labels: dict, out: Path) -> tuple[str, list[Path]]:
    tasks = get_suite(suite).task_names
    methods = _per_method(runs, labels)
    written = []
    text = f"## {suite}\n\nSeeds per method: " + ", ".join(f"{m} {len(r)}" for m, r in methods.items()) + "\n\n"
    tables = [("max average return", "max", "return", "max_return"),
              ("final return", "last", "return", "final_return")]
    if get_suite(suite).success_metric:
        tables.append(("final success rate", "last", "success", "final_success"))
    for title, reduce, metric, stem in tables:
        scores = score_table(methods, tasks, reduce, metric)
        header = ["task", *scores]
        rows = [[t, *(_cell(*scores[m][t]) for m in scores)] for t in tasks]
        text += f"### {title} (mean ± std across seeds)\n\n" + markdown_table(header, rows) + "\n"
        csv_rows = [[t, m, *scores[m][t]] for t in tasks for m in scores]
        path = out / f"{suite}_{stem}.csv"
        write_text(path, _csv(["task", "method", "mean", "std", "seeds"], csv_rows))
        written.append(path)
    if IDEAL in methods and len(methods) > 1:
        ratios = ratio_table(methods, tasks)
        header = ["method", *tasks, "average"]
        rows = [[m, *(f"{r[c]:.4f}" for c in (*tasks, "average"))] for m, r in ratios.items()]
        text += ("### performance ratio to Ideal (KTM-DRL Table 3 layout; nan where the Ideal's return is not "
                 "positive, the average is over the other tasks)\n\n" + markdown_table(header, rows) + "\n")
        path = out / f"{suite}_ratio.csv"
        write_text(path, _csv(header, [[m, *(r[c] for c in (*tasks, "average"))] for m, r in ratios.items()]))
        written.append(path)
    curves = {m: [r.rows for r in rs] for m, rs in methods.items()}
    pngs = [plot_curves(curves, tasks, out / f"{suite}_curves.png", title=f"{suite}: return, mean ± std across seeds")]
    if get_suite(suite).success_metric:
        pngs.append(plot_curves(curves, tasks, out / f"{suite}_success_curves.png", metric="success",
                                title=f"{suite}: success rate, mean ± std across seeds"))
    text += "".join(f"![learning curves]({png.name})\n\n" for png in pngs)
    return text, [*written, *pngs]


def report(sweep_dir: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
           teachers: str | os.PathLike | None = None) -> list[Path]:
    """Write ``report.md``, the CSV tables and the curve PNGs of the finished runs under ``sweep_dir`` (a sweep, any
    folder of runs, or several folders: a run is counted once); returns the written paths. The output goes to
    ``out_dir``, by default ``<folder>/report`` (with several folders: ``./report``)."""
    folders = [Path(sweep_dir)] if isinstance(sweep_dir, (str, os.PathLike)) else [Path(f) for f in sweep_dir]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing or not folders:
        raise FileNotFoundError(f"no folder {', '.join(missing) or '(none given)'}")
    runs = list({r.dir.resolve(): r for folder in folders for r in find_runs(folder)}.values())
    if teachers:
        runs += [r for r in find_runs(teachers) if r.recipe == TEACHER_RECIPE and r.dir.resolve() not in
                 {x.dir.resolve() for x in runs}]
    where = " ".join(str(f) for f in folders)
    if not runs:
        raise FileNotFoundError(f"no finished run (a run folder with {SUMMARY}) under {where}; "
                                f"`tdmt runs {where}` lists its runs")
    out = Path(out_dir) if out_dir else (folders[0] / "report" if len(folders) == 1 else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    labels = _labels(runs)
    text = f"# Report of {', '.join(f.name for f in folders)}\n\n{len(runs)} finished runs.\n\n"
    written = []
    for suite in sorted({r.suite for r in runs}):
        section, paths = _suite_section(suite, [r for r in runs if r.suite == suite], labels, out)
        text += section
        written += paths
    write_text(out / "report.md", text)
    return [out / "report.md", *written]
