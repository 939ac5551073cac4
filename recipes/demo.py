"""``make demo``: the whole KTM-DRL pipeline on a real suite at a small budget (≤ 15 minutes on 2 CPU cores).

teachers (K TD3 agents as one batched model) → offline transfer → online learning → evaluation → report, on
``halfcheetah-mt5`` (HalfCheetah under 5 gravities) with the budgets of ``recipes/configs/teachers_demo.yaml``
and ``recipes/configs/ktm_drl_demo.yaml``. Writes ``<out>/results.md`` and ``<out>/curves.png`` (teachers and
student curves), plus each stage's own run folder; a finished stage is skipped when the demo is run again.

``python recipes/demo.py [out=runs/demo] [suite=halfcheetah-mt5] [threads=2]``. The full-scale paper run is
``python recipes/train_teachers.py suite=halfcheetah-mt8`` then
``python recipes/ktm_drl.py config=recipes/configs/ktm_drl.yaml suite=halfcheetah-mt8``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tdmt.algos import ktm_drl, teachers
from tdmt.algos.run import TrainingRun
from tdmt.config import parse_args
from tdmt.envs import get_suite
from tdmt.errors import cli_errors
from tdmt.report import plot_curves, write_text

CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    suite: str = "halfcheetah-mt5"
    seed: int = 0
    threads: int = int(os.environ.get("OMP_NUM_THREADS", "2"))


def stage(name: str, run_dir: Path, fn) -> float:
    """Run one stage unless its run folder already holds a finished run; returns its wall time."""
    if (run_dir / "summary.json").exists():
        print(f"[demo] {name}: already done in {run_dir}", flush=True)
        return 0.0
    print(f"[demo] {name} -> {run_dir}", flush=True)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    demo = parse_args(DemoConfig, argv)
    out = Path(demo.out)
    common = [f"suite={demo.suite}", f"seed={demo.seed}", f"threads={demo.threads}"]
    t_cfg = parse_args(teachers.Config, [f"config={CONFIGS / 'teachers_demo.yaml'}", *common,
                                         f"run_dir={out / 'teachers'}"])
    k_cfg = parse_args(ktm_drl.Config, [f"config={CONFIGS / 'ktm_drl_demo.yaml'}", *common,
                                        f"run_dir={out / 'ktm_drl'}",
                                        f"teachers_dir={teachers.teachers_dir(out / 'teachers')}"])
    t0 = time.perf_counter()
    t_teach = stage("teachers", out / "teachers", lambda: teachers.run(t_cfg))
    t_ktm = stage("KTM-DRL (offline + online)", out / "ktm_drl", lambda: ktm_drl.run(k_cfg))
    suite = get_suite(demo.suite)
    plot_curves({"Ideal": [TrainingRun(out / "teachers").evals.rows()],
                 "KTM-DRL": [TrainingRun(out / "ktm_drl").evals.rows()]}, suite.task_names, out / "curves.png",
                title=f"KTM-DRL demo — {demo.suite}")
    text = (out / "ktm_drl" / "results.md").read_text()
    text += (f"\nDemo budget: teachers {t_cfg.total_steps} steps ({t_cfg.start_steps} random), "
             f"hidden {list(t_cfg.hidden)}; "
             f"student offline {k_cfg.offline_steps} + online {k_cfg.online_steps} steps, hidden "
             f"{list(k_cfg.hidden)}, batch {k_cfg.batch_size_per_task} per task. Wall time: teachers {t_teach:.0f} s, "
             f"KTM-DRL {t_ktm:.0f} s ({demo.threads} threads).\n")
    write_text(out / "results.md", text)
    print(text)
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s. Results: {out / 'results.md'}, curves: "
          f"{out / 'curves.png'}; per-stage runs: {out / 'teachers'}, {out / 'ktm_drl'}", flush=True)


if __name__ == "__main__":
    with cli_errors("demo"):
        main(sys.argv[1:])
