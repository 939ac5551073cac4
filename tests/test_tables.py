"""One number, one computation: a finished run's score reads the same in its own ``results.md``, in ``tdmt report``
and in the ``tdmt report --paper`` cell, all computed by :mod:`tdmt.tables` from its ``eval.csv``.

Synthetic finished runs (config.yaml, eval.csv, summary.json) whose evaluation history is known; the recipes' own
results writers write their ``results.md``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tdmt import tables
from tdmt.aggregate import report
from tdmt.algos import ctpg, get_recipe, ktm_drl
from tdmt.algos.run import TrainingRun
from tdmt.config import apply_overrides
from tdmt.envs import get_suite
from tdmt.paper_report import paper_report


def _finished(folder: Path, recipe: str, suite: str, overrides: dict, evals: list[tuple[str, float]]
              ) -> tuple[TrainingRun, object]:
    """A finished run of ``recipe``: one eval.csv row per ``(stage, level)``, task k's return ``level × (k + 1)``
    with an episodes' std of 1.5."""
    cfg = apply_overrides(get_recipe(recipe).Config(), {"suite": suite, "seed": 0, "run_dir": str(folder),
                                                        **overrides})
    run = TrainingRun(folder, cfg)
    for i, (stage, level) in enumerate(evals):
        run.evals.log(1000 * (i + 1), stage=stage, **{
            key: value for k, t in enumerate(get_suite(suite).task_names)
            for key, value in ((f"eval/{t}/return", level * (k + 1)), (f"eval/{t}/return_std", 1.5))})
    (folder / "summary.json").write_text(json.dumps({"recipe": recipe}))
    return run, cfg


def _md_cell(text: str, table: str, row: str, column: str) -> str:
    """The cell at ``row`` × ``column`` of the Markdown table under the heading that starts with ``### table``."""
    lines = [x for x in text.split(f"### {table}", 1)[1].split("\n\n")[1].splitlines()]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    line = next(x for x in lines[2:] if x.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")][header.index(column)]


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def _paper_cell(folder: Path, table: str, row: str, column: str) -> float:
    _, path = paper_report([folder], table, folder / "paper")
    return float(next(r for r in _csv(path) if (r["row"], r["column"]) == (row, column))["ours_mean"])


def test_ktm_max_average_return_and_ratio_are_one_number_everywhere(tmp_path):
    """Hopper (task 1, returns 2 × level): the teachers' max average return is 2 × 250 = 500; KTM-DRL's max over its
    offline (levels 50, 300) and online (400, 200) evaluations is 800 (not the last, 400; the offline stage's is
    600); its ratio to the Ideal 1.6."""
    runs = tmp_path / "runs"
    teachers, _ = _finished(runs / "teachers", "train_teachers", "mujoco-mt6", {},
                            [("teachers", 100.0), ("teachers", 250.0)])
    suite = get_suite("mujoco-mt6")
    tdir = runs / "teachers" / "teachers"  # where train_teachers saves the teachers
    run, cfg = _finished(runs / "ktm", "ktm_drl", "mujoco-mt6", {"teachers_dir": str(tdir)},
                         [("offline", 50.0), ("offline", 300.0), ("online", 400.0), ("online", 200.0)])
    summary = ktm_drl.report(run, cfg, suite, tdir)
    results = (runs / "ktm" / "results.md").read_text()
    report(runs, tmp_path / "report")
    swept = (tmp_path / "report" / "report.md").read_text()
    sweep_csv = {(r["task"], r["method"]): r for r in _csv(tmp_path / "report" / "mujoco-mt6_max_return.csv")}
    ratio_csv = {r["method"]: r for r in _csv(tmp_path / "report" / "mujoco-mt6_ratio.csv")}

    assert summary["max_average_reward"]["KTM-DRL"]["Hopper"] == 800.0
    assert float(sweep_csv[("Hopper", "KTM-DRL")]["mean"]) == 800.0
    assert _paper_cell(runs, "ktm-table2", "Hopper", "KTM-DRL (ours)") == 800.0
    shown = _md_cell(results, "max average return", "Hopper", "KTM-DRL")
    assert shown == _md_cell(swept, "max average return", "Hopper", "KTM-DRL") == "800.0"
    assert _md_cell(results, "max average return", "Hopper", "Ideal") == "500.0"
    for table in ("max average return", "final return"):  # every cell of the run's columns, as the sweep shows it
        assert [_md_cell(results, table, t, m) for t in suite.task_names for m in ("Ideal", "KTM-DRL")] == [
            _md_cell(swept, table, t, m) for t in suite.task_names for m in ("Ideal", "KTM-DRL")]
    assert _md_cell(results, "max average return", "Hopper", "KTM-DRL after the offline stage") == "600.0"

    assert summary["ratio_to_teachers"]["KTM-DRL"]["Hopper"] == pytest.approx(1.6)
    assert float(ratio_csv["KTM-DRL"]["Hopper"]) == pytest.approx(1.6)
    assert _paper_cell(runs, "ktm-table3", "Hopper", "KTM-DRL (ours)") == pytest.approx(1.6)
    assert _md_cell(results, "performance ratio", "KTM-DRL", "Hopper") == "1.60"
    assert _md_cell(swept, "performance ratio", "KTM-DRL", "Hopper") == "1.60"


def test_ctpg_final_return_is_one_number_everywhere(tmp_path):
    """CTPG Table 1 reads the final evaluation (not the best): task k's final return is 2000 × (k + 1); the cell is
    their mean over the 5 tasks, 6000 (×1e3: 6.00)."""
    runs = tmp_path / "runs"
    run, cfg = _finished(runs / "ctpg", "ctpg", "halfcheetah-mt5", {}, [("", 3000.0), ("", 2000.0)])
    suite = get_suite("halfcheetah-mt5")
    ctpg._write_results(run, cfg, suite, {"steps": 2000, "wall_time_s": 60.0})
    results = (runs / "ctpg" / "results.md").read_text()
    report(runs, tmp_path / "report")
    swept = (tmp_path / "report" / "report.md").read_text()
    final_csv = {r["task"]: float(r["mean"]) for r in _csv(tmp_path / "report" / "halfcheetah-mt5_final_return.csv")}

    second = suite.task_names[1]
    assert final_csv[second] == 4000.0
    assert _md_cell(results, "final return", second, "MTSAC w/ CTPG") == "4000.0 ± 1.5"  # one run: ± its episodes
    assert _md_cell(swept, "final return", second, "MTSAC w/ CTPG") == "4000.0 ± 1.5"
    assert _paper_cell(runs, "ctpg-table1", "HalfCheetah MT5 | w/ CTPG", "MTSAC") == 6000.0
    assert sum(final_csv.values()) / len(final_csv) == 6000.0
    ctpg_row = next(x for x in results.splitlines() if x.startswith("|  | w/ CTPG |"))
    assert ctpg_row.split("|")[3].strip() == "6.00"  # the MTSAC cell, ×1e3 as the paper prints it
    assert tables.mean_score(run.evals.rows(), suite.task_names, "final_return") == 6000.0
