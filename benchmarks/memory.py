"""Peak resident memory of the papers' largest settings for a few hundred steps, each in a fresh process:
CTPG on Meta-World MT50 and MT10 at the paper's settings (1e7 / 1e6 transitions in total, 5×400 networks,
batch 128·K, guide replay, the evaluation env of the Table 1 protocol) and KTM-DRL's online stage on mujoco-mt6
with 1e6 transitions per task. The reference is the machine's memory (goal: each under 16 GiB of a 24 GiB node);
the replay's full size at capacity is printed next to it, so what "touched only as it fills" saves is visible.

    python benchmarks/memory.py [cases=ctpg-mt50,ctpg-mt10,ktm-mt6] [steps=300]

Budgets are cut (``steps`` env steps per task, a short exploration, one final evaluation of 10 episodes per task
on the same number of env instances as the paper's protocol), every other setting is the recipe's default.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CASES = ("ctpg-mt50", "ctpg-mt10", "ktm-mt6")


def _random_teachers(folder: Path, suite_name: str, hidden: int = 400) -> None:
    """Untrained native-size teachers (2×400): the online stage needs their networks, not their skill."""
    from tdmt.envs import get_suite
    from tdmt.modules.teachers import save_teacher

    def mlp(sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.randn(i, o) * 0.05, torch.zeros(o)) for i, o in zip(sizes[:-1], sizes[1:])]

    suite = get_suite(suite_name)
    for task, obs, act in zip(suite.task_names, suite.obs_dims, suite.act_dims):
        critic = [obs + act, hidden, hidden, 1]
        save_teacher({"obs_dim": obs, "act_dim": act, "actor": mlp([obs, hidden, hidden, act]),
                      "critic1": mlp(critic), "critic2": mlp(critic)}, folder / task)


def run_case(case: str, steps: int) -> dict:
    """Train ``case`` in this process and return its peak RSS (GiB), wall time and replay size at capacity."""
    from tdmt.algos import get_recipe

    torch.set_num_threads(1)
    run_dir = tempfile.mkdtemp(prefix=f"tdmt-memory-{case}-")
    common = {"run_dir": run_dir, "progress": False, "checkpoint_every": 0}
    if case.startswith("ctpg"):
        suite = {"ctpg-mt50": "metaworld-mt50", "ctpg-mt10": "metaworld-mt10"}[case]
        recipe = "ctpg"
        values = {**common, "suite": suite, "total_steps": steps, "exploration_steps": steps - 50,
                  "eval_every": 0, "eval_episodes": 10, "final_eval_episodes": 10, "filter_start": 0}
    else:
        recipe = "ktm_drl"
        teachers = Path(run_dir) / "teachers"
        _random_teachers(teachers, "mujoco-mt6")
        values = {**common, "suite": "mujoco-mt6", "teachers_dir": str(teachers), "offline_steps": 0,
                  "online_steps": steps, "learning_starts": steps - 50, "eval_every": 0, "eval_episodes": 10,
                  "buffer_size_per_task": 1_000_000}
    module = get_recipe(recipe)
    from tdmt.config import apply_overrides

    cfg = apply_overrides(module.Config(), values)
    start = time.perf_counter()
    module.run(cfg)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"case": case, "peak_gib": peak, "seconds": elapsed}


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    if "child" in args:
        print(json.dumps(run_case(args["child"], int(args.get("steps", 300)))))
        return
    cases = args.get("cases", ",".join(CASES)).split(",")
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise SystemExit(f"memory.py: unknown cases {bad}; valid: {list(CASES)}")
    total = 24.0
    print(f"{'case':<10} {'peak RSS':>10} {'of 24 GiB':>10} {'wall':>8}")
    for case in cases:
        out = subprocess.run([sys.executable, __file__, f"child={case}", f"steps={args.get('steps', 300)}"],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{case:<10} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{case:<10} {result['peak_gib']:>8.2f} GiB {result['peak_gib'] / total:>9.0%} "
              f"{result['seconds']:>7.0f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
