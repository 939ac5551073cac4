"""``tdmt report --paper``: the paper's values and ours land in the right cells (synthetic finished runs whose
evaluation history is known, so every number below is computed by hand)."""

from __future__ import annotations

import csv
import json

import pytest

from tdmt.algos import get_recipe
from tdmt.config import apply_overrides, save_yaml
from tdmt.envs import get_suite
from tdmt.paper_report import paper_report
from tdmt.paper_tables import load_table

TASKS = get_suite("mujoco-mt6").task_names


def _run(root, recipe: str, name: str, seed: int, overrides: dict, returns: list[dict[str, float]]):
    """A finished run folder: config.yaml, summary.json, and one eval.csv row per evaluation."""
    folder = root / recipe / "mujoco-mt6" / f"{name}-seed{seed}"
    folder.mkdir(parents=True)
    cfg = apply_overrides(get_recipe(recipe).Config(), {"suite": "mujoco-mt6", "seed": seed, **overrides})
    save_yaml(cfg, folder / "config.yaml")
    (folder / "summary.json").write_text(json.dumps({"recipe": recipe}))
    with (folder / "eval.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["step", *(f"eval/{t}/return" for t in TASKS)])
        writer.writeheader()
        for i, row in enumerate(returns):
            writer.writerow({"step": 1000 * (i + 1), **{f"eval/{t}/return": row[t] for t in TASKS}})


def test_ktm_table3_cells_hold_the_ratio_to_the_ideal_runs(tmp_path):
    ideal = {t: 100.0 * (i + 1) for i, t in enumerate(TASKS)}  # Ant 100, Hopper 200, ...
    ideal["Ant"] = -5.0  # not positive: its ratio is nan, never a ratio of two negative returns
    for seed in (0, 1):
        _run(tmp_path, "train_teachers", "t", seed, {}, [{t: v / 2 for t, v in ideal.items()}, ideal])
    # KTM-DRL: max over its evaluations = 0.9 x Ideal (seed 0) and 1.1 x Ideal (seed 1): mean 1.0, std 0.1
    for seed, factor in ((0, 0.9), (1, 1.1)):
        _run(tmp_path, "ktm_drl", "full", seed, {}, [{t: factor * v for t, v in ideal.items()},
                                                     {t: 0.5 * v for t, v in ideal.items()}])
    _run(tmp_path, "ktm_drl", "alpha0", 0, {"alpha": 0.0}, [{t: 0.25 * v for t, v in ideal.items()}])
    md, table_csv = paper_report([tmp_path], "ktm-table3", tmp_path / "out")
    cells = {(r["row"], r["column"]): r for r in csv.DictReader(table_csv.open())}
    table = load_table("ktm-table3")
    ktm, no_teacher = "KTM-DRL (ours)", next(c for c in table.columns if "teacher" in c.lower() and "w/o" in c)
    hopper = cells[("Hopper", ktm)]
    assert float(hopper["paper"]) == pytest.approx(table.value("Hopper", ktm))
    assert (float(hopper["ours_mean"]), float(hopper["ours_std"]), int(hopper["n"])) == pytest.approx((1.0, 0.1, 2))
    assert float(hopper["ratio"]) == pytest.approx(1.0 / table.value("Hopper", ktm))
    assert float(cells[("Hopper", no_teacher)]["ours_mean"]) == pytest.approx(0.25)  # alpha=0 only here
    assert int(cells[("Hopper", no_teacher)]["n"]) == 1
    assert cells[("Ant", ktm)]["note"].startswith("no score (Ideal return not positive")  # never a ratio of two <0
    assert cells[("Hopper", "w/o Offline")]["note"] == "no run"
    text = md.read_text()
    assert "Reduced budget" not in text or "smoke run" in text
    assert f"| Hopper | {table.value('Hopper', ktm):.4f} / 1.0000 ± 0.1000 (n=2) /" in text
