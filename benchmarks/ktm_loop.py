"""Full-loop speed of ``ktm_drl`` (online stage: one env step per task, then K per-task updates) and the share of
wall time its evaluations take, with the hours that implies for the paper's budget.

The recipe itself runs (``tdmt.algos.ktm_drl.run``) for ``learning_starts + warmup + steps`` online epochs and
evaluates once, at the end. A clock on :meth:`TrainingRun.maybe_checkpoint` (which every training loop calls once per
epoch, after its updates and evaluations) times each epoch boundary, so

    env steps/s (training) = steps / (t[first + steps] - t[first]),    first = learning_starts + warmup

excludes start-up, the epochs before learning starts, the first (warm-up) updates and the evaluation, whose time
(``eval_episodes`` episodes × K tasks, CPU envs) is the ``eval_seconds`` of ``eval.csv``. At the paper's cadence (an
evaluation every ``eval_every`` epochs; KTM-DRL: 10 episodes every 5k)

    eval share = eval_s / (eval_s + eval_every / rate)            (goal: < 10 %)

Teachers: a ``train_teachers`` run of random actions only (``start_steps = total_steps``: no update), at the
student's sizes — the online loss evaluates the teachers' critics, so their size matters, not their quality.

    python benchmarks/ktm_loop.py --device cuda                       # halfcheetah-mt8, the paper's sizes
    python benchmarks/ktm_loop.py --device cuda --json loop.json precision=bfloat16   # key=value: recipe overrides
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tdmt.algos import get_recipe
from tdmt.algos.run import TrainingRun
from tdmt.config import parse_args
from tdmt.errors import cli_errors

PAPER_STEPS = 1_000_000  # KTM-DRL §4: 500K offline + 500K online epochs


@contextlib.contextmanager
def epoch_clock() -> Iterator[dict[int, float]]:
    """``{epoch: perf_counter()}`` at each epoch boundary of the training loops run inside."""
    times: dict[int, float] = {}
    original = TrainingRun.maybe_checkpoint

    def timed(run: TrainingRun, step: int, *args: Any, **kwargs: Any) -> Any:
        times[step] = time.perf_counter()
        return original(run, step, *args, **kwargs)

    TrainingRun.maybe_checkpoint = timed
    try:
        yield times
    finally:
        TrainingRun.maybe_checkpoint = original


def run_recipe(name: str, overrides: dict[str, Any]) -> None:
    """``name``'s ``run`` on its command-line form of ``overrides`` (as ``recipes/<name>.py k=v ...`` would)."""
    module = get_recipe(name)
    args = [f"{k}={json.dumps(list(v)) if isinstance(v, (list, tuple)) else v}" for k, v in overrides.items()]
    module.run(parse_args(module.Config, args))


def last_eval_seconds(run_dir: Path) -> float:
    with open(run_dir / "eval.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["eval_seconds"])


def measure(args: argparse.Namespace, overrides: dict[str, str], work: Path) -> dict[str, Any]:
    """The loop's rate, one evaluation's time and what they imply (see the module docstring)."""
    sizes = {"suite": args.suite, "hidden": [args.hidden] * 2, "batch_size_per_task": args.batch, "seed": 0,
             "progress": "false", "checkpoint_every": 0}
    teachers = work / "teachers"
    run_recipe("train_teachers", {**sizes, "total_steps": args.teacher_steps, "start_steps": args.teacher_steps,
                                  "buffer_size_per_task": args.teacher_steps, "eval_every": 0, "eval_episodes": 1,
                                  "run_dir": teachers})
    first = args.learning_starts + args.warmup
    last = first + args.steps
    with epoch_clock() as times:
        run_recipe("ktm_drl", {**sizes, "teachers_dir": teachers / "teachers", "offline_steps": 0,
                               "online_steps": last + 1, "learning_starts": args.learning_starts, "eval_every": 0,
                               "eval_episodes": args.eval_episodes, "buffer_size_per_task": args.buffer,
                               "device": args.device, "run_dir": work / "ktm_drl", **overrides})
    rate = args.steps / (times[last] - times[first])
    eval_s = last_eval_seconds(work / "ktm_drl")
    interval_s = args.eval_every / rate
    with_eval = args.eval_every / (interval_s + eval_s)
    return {"variant": f"ktm_drl loop {args.suite}", "per_s": rate, "unit": "env steps/s", "device": args.device,
            "steps": args.steps, "eval_s": eval_s, "eval_episodes": args.eval_episodes, "eval_every": args.eval_every,
            "eval_share": eval_s / (interval_s + eval_s), "per_s_with_eval": with_eval,
            "paper_steps": PAPER_STEPS, "paper_hours": PAPER_STEPS / with_eval / 3600, "overrides": overrides}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="the student's device (cpu, cuda, cuda:N)")
    parser.add_argument("--suite", default="halfcheetah-mt8")
    parser.add_argument("--hidden", type=int, default=400, help="hidden width, two layers (paper: 2x400)")
    parser.add_argument("--batch", type=int, default=256, help="transitions per task and update (paper: 256)")
    parser.add_argument("--buffer", type=int, default=1_000_000, help="replay capacity per task (paper: 1e6)")
    parser.add_argument("--steps", type=int, default=400, help="timed online epochs")
    parser.add_argument("--warmup", type=int, default=20, help="online epochs with updates before the timing")
    parser.add_argument("--learning-starts", type=int, default=256, help="epochs before the first update")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per task per evaluation (paper: 10)")
    parser.add_argument("--eval-every", type=int, default=5000, help="the paper's evaluation cadence, in epochs")
    parser.add_argument("--teacher-steps", type=int, default=300, help="random-action steps of the teachers' run")
    parser.add_argument("--json", type=Path, help='write {"rows": [...]} here')
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unknown arguments {bad}; valid: the options above and ktm_drl key=value overrides")
    overrides = dict(a.split("=", 1) for a in rest)
    with tempfile.TemporaryDirectory(prefix="tdmt-ktm-loop-") as work:
        row = measure(args, overrides, Path(work))
    print(f"ktm_drl online loop on {args.suite} ({args.device}, {args.steps} timed epochs): "
          f"{row['per_s']:.1f} env steps/s; one evaluation ({args.eval_episodes} episodes x K tasks) "
          f"{row['eval_s']:.1f} s = {100 * row['eval_share']:.1f}% of the wall time at one every {args.eval_every} "
          f"epochs (goal < 10%); {row['per_s_with_eval']:.1f} steps/s with it: {row['paper_hours']:.1f} h for "
          f"{PAPER_STEPS:,} epochs")
    if args.json:
        args.json.write_text(json.dumps({"rows": [row]}, indent=1))


if __name__ == "__main__":
    with cli_errors("ktm_loop"):
        main()
