"""Aggregate a finished sweep into the papers' tables and figures (``tdmt report runs/<sweep>``).

For every finished run (``summary.json`` present) the per-task scores are read from its ``eval.csv`` by
:mod:`tdmt.tables`, the code that writes every run's own ``results.md`` and the ``--paper`` comparison:

* ``max average return`` = max over evaluation points of the mean episode return (KTM-DRL Tables 1–2),
* ``final return`` = the last evaluation point, and on Meta-World the final ``success`` rate (CTPG Table 1).

Per suite the report holds, as Markdown (``report.md``) and CSV (:func:`tdmt.tables.report_tables`):

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

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tdmt import runs as runs_mod
from tdmt import tables
from tdmt.algos.run import SUMMARY
from tdmt.envs import get_suite
from tdmt.logger import CSVLog
from tdmt.report import plot_curves, write_text
from tdmt.tables import IDEAL

TEACHER_RECIPE = "train_teachers"


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


def _per_method(runs: list[RunResult], labels: dict[tuple[str, str], str]) -> dict[str, list[RunResult]]:
    """Runs grouped by label, the Ideal (teachers) first."""
    grouped: dict[str, list[RunResult]] = defaultdict(list)
    for r in runs:
        grouped[labels[(r.recipe, r.variant)]].append(r)
    return dict(sorted(grouped.items(), key=lambda kv: (kv[0] != IDEAL, kv[0])))


def _suite_section(suite: str, runs: list[RunResult], labels: dict, out: Path) -> tuple[str, list[Path]]:
    """The suite's tables (:func:`tdmt.tables.report_tables`, as every run's ``results.md``), their CSVs and the
    learning curves."""
    tasks = get_suite(suite).task_names
    success = get_suite(suite).success_metric
    methods = _per_method(runs, labels)
    columns = {m: [r.rows for r in rs] for m, rs in methods.items()}
    text = f"## {suite}\n\nSeeds per method: " + ", ".join(f"{m} {len(r)}" for m, r in methods.items()) + "\n\n"
    text += tables.CELLS_NOTE
    written = []
    for table in tables.report_tables(columns, tasks, success):
        text += table.markdown() + "\n"
        written.append(out / f"{suite}_{table.stem}.csv")
        write_text(written[-1], table.csv())
    pngs = [plot_curves(columns, tasks, out / f"{suite}_curves.png", title=f"{suite}: return, mean ± std across seeds")]
    if success:
        pngs.append(plot_curves(columns, tasks, out / f"{suite}_success_curves.png", metric="success",
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
