"""``make gpu-check``: what a machine with one CUDA GPU shows of tdmt in under 8 minutes, written to
``gpu-report.md`` (and printed).

1. **tests** — the suite's CUDA-marked tests (``pytest -m cuda``: eager vs compiled vs CUDA-graph updates, ...).
2. **recipes** — every recipe on ``device=cuda`` for a short run to its first evaluation (``pendulum-mt3``, tiny
   budgets), each in its own run folder under a temporary directory; ``ktm_drl`` uses the teachers just trained.
3. **updates** — at the papers' sizes, updates/s of the KTM-DRL online step (K=8, 2×400, 256 per task), the SAC-MT
   update and the CTPG step (MT10, 5×400, 128 per task): eager vs ``compile`` vs ``cudagraphs``, float32 vs
   bfloat16, one process per combination (``benchmarks/{ktm_step,sac_mt_update,ctpg_step}.py --json``), each
   against eager float32 of the same benchmark.
4. **loop** — ``ktm_drl``'s full-loop env steps/s on ``halfcheetah-mt8`` and the share of wall time its evaluations
   take (``benchmarks/ktm_loop.py``; goal < 10 %), with the hours that implies for the papers' budgets next to the
   papers' own wall-clock.

Every step runs in its own process with its own time budget (a step that finishes early leaves its unused time to
the next ones), so one slow step cannot eat the rest; the budgets add up to under 8 minutes. A step that fails or
runs out of time is reported as such (its output is in ``<out>/gpu-check-logs/``) and the others still run; the exit
status is 1 when one did not pass.

``--dry-run``: every step planned and run on the CPU at tiny sizes (``device=cpu``, one repeat), two at a time — the
test suite runs it, so that this script cannot rot. CUDA graphs need CUDA: those steps are listed, not run. The
compile steps run with ``TORCH_COMPILE_DISABLE=1`` (their flags' path): compiling the updates takes minutes on two CPU
cores, and ``tests/test_device_*.py`` check compiled updates against eager.

    python benchmarks/gpu_check.py                 # on a GPU machine (make gpu-check)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOTAL_BUDGET_S = 470  # all steps' budgets together (the issue: under 8 minutes in all)
REPORT = "gpu-report.md"
SPEEDS = {"eager": [], "cudagraphs": ["--cudagraphs"], "compile": ["--compile"]}  # compile last: the time left over
SPEED_NAMES = ("eager", "compile", "cudagraphs", "compile+cudagraphs")  # the report's column order
PRECISIONS = ("float32", "bfloat16")

# The cheapest valid run of each recipe to its first evaluation (pendulum-mt3: 200-step episodes).
SMALL = {"suite": "pendulum-mt3", "progress": "false", "checkpoint_every": 0}
TD3_SMALL = {"hidden": "[64,64]", "batch_size_per_task": 64, "buffer_size_per_task": 1000, "eval_episodes": 2}
SAC_SMALL = {"hidden": "[64,64]", "batch_size_per_task": 32, "buffer_size_per_task": 1000, "exploration_steps": 50,
             "total_steps": 200, "eval_every": 200, "eval_episodes": 2, "final_eval_episodes": 2}
A2C_SMALL = {"num_envs_per_task": 2, "eval_episodes": 2, "log_every": 50}
RECIPES: dict[str, dict[str, Any]] = {
    "train_teachers": {**TD3_SMALL, "total_steps": 300, "start_steps": 100, "eval_every": 300},
    "ktm_drl": {**TD3_SMALL, "offline_steps": 100, "online_steps": 200, "learning_starts": 50, "eval_every": 300},
    "td3_mt": {**TD3_SMALL, "total_steps": 300, "start_steps": 100, "eval_every": 300},
    "sac_mt": SAC_SMALL,
    "ctpg": {**SAC_SMALL, "guide_hidden": "[64,64]", "filter_start": 0},
    "a2c_multitask": {**A2C_SMALL, "total_steps": 200, "eval_every": 200},
    "distill_kl": {**A2C_SMALL, "teacher_total_steps": 100, "teacher_envs_per_task": 2, "total_steps": 100,
                   "eval_every": 100},
    "finetune": {**A2C_SMALL, "source_task": "PendulumGravityLow", "target_task": "PendulumGravityHigh",
                 "source_frames": 100, "target_frames": 100, "eval_every": 100},
}
RECIPE_BUDGET_S = {"train_teachers": 16, "ktm_drl": 16, "ctpg": 14, "distill_kl": 14, "finetune": 14}  # others: 12


@dataclass
class Bench:
    """An update benchmark (``--device``, ``--precision``, ``--compile``, ``--cudagraphs``, ``--repeats``, ``--json``):
    its options at the papers' sizes and at tiny ones, and the budget of one process by speed option. A process
    times both precisions (``--precision float32 bfloat16``), or one when ``one_precision`` is set; ``--compile`` and
    ``--cudagraphs`` add their variants to eager, the reference measured in the same process."""

    title: str
    script: str
    paper: list[str]
    tiny: list[str]
    budget_s: dict[str, float]
    one_precision: bool = False


BENCHES = [
    Bench("KTM-DRL online step (K=8, 2×400, 256 per task)", "ktm_step.py",
          ["--tasks", "8", "--hidden", "400", "--batch", "256", "--stages", "online"],
          ["--tasks", "2", "--hidden", "16", "--batch", "8", "--epochs", "2", "--stages", "online"],
          {"eager": 12, "cudagraphs": 18, "compile": 30}),
    Bench("SAC-MT update (MT10, 5×400, 128 per task)", "sac_mt_update.py",
          ["--suites", "metaworld-mt10", "--backbones", "mtsac"], ["--suites", "pendulum-mt3", "--backbones", "mtsac"],
          {"eager": 12, "cudagraphs": 18, "compile": 30}),
    Bench("CTPG step (MT10, 5×400, 128 per task)", "ctpg_step.py",
          ["--suites", "metaworld-mt10", "--backbones", "mtsac"], ["--suites", "pendulum-mt3", "--backbones", "mtsac"],
          {"eager": 12, "cudagraphs": 18, "compile": 30}),
]
LOOP_PAPER = ["--suite", "halfcheetah-mt8", "--steps", "300", "--eval-episodes", "10"]
LOOP_TINY = ["--suite", "pendulum-mt3", "--hidden", "16", "--batch", "8", "--buffer", "1000", "--steps", "20",
             "--warmup", "2", "--learning-starts", "10", "--eval-episodes", "1", "--teacher-steps", "50"]
PAPERS = [  # (paper, budget, steps, the benchmark whose rate it takes, a word of its row's name, its wall-clock)
    ("KTM-DRL", "1M epochs (500K offline + 500K online), halfcheetah-mt8", 1_000_000, "loop", "", "12 h on a P100"),
    ("CTPG (MTSAC base)", "1.5M steps per task, MT10", 1_500_000, "sac_mt_update.py", "mtsac", "16 h on an RTX 3090"),
    ("CTPG", "1.5M steps per task, MT10", 1_500_000, "ctpg_step.py", "ctpg", "20 h on an RTX 3090"),
]


@dataclass
class Step:
    """One process of the check, with its budget; ``result`` is filled in when it has run."""

    section: str
    name: str
    command: list[str]
    budget_s: float
    json: Path | None = None
    run_dir: Path | None = None
    skip: str = ""  # why the step is planned but not run
    env: dict[str, str] = field(default_factory=dict)  # added to the process's environment
    note: str = ""  # shown with its status
    needs: str = ""  # a step that must have passed first
    status: str = "not run"
    wall_s: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def plan(dry_run: bool, work: Path) -> list[Step]:
    """Every step of the check, in order (run folders and JSON files under ``work``)."""
    py = sys.executable
    device = "cpu" if dry_run else "cuda"
    steps = [Step("tests", "pytest -m cuda", [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda",
                                              str(ROOT / "tests")], 120)]  # CUDA-graph (and compiled) updates vs eager
    for name, overrides in RECIPES.items():
        run_dir = work / "runs" / name
        extra = {"teachers_dir": work / "runs" / "train_teachers" / "teachers"} if name == "ktm_drl" else {}
        args = [f"{k}={v}" for k, v in {**SMALL, **overrides, **extra, "device": device, "run_dir": run_dir}.items()]
        steps.append(Step("recipes", name, [py, str(ROOT / "recipes" / f"{name}.py"), *args],
                          RECIPE_BUDGET_S.get(name, 12), run_dir=run_dir, needs="train_teachers" if extra else ""))
    for speed in SPEEDS:
        for bench in BENCHES:
            for precisions in ([[p] for p in PRECISIONS] if bench.one_precision else [list(PRECISIONS)]):
                name = " ".join([bench.script, speed, *precisions[:len(precisions) == 1]])
                out = work / (name.replace(" ", "-") + ".json")
                args = [*(bench.tiny if dry_run else bench.paper), "--device", device, "--precision", *precisions,
                        *SPEEDS[speed], "--repeats", "1" if dry_run else "3", "--json", str(out)]
                skip = "CUDA graphs need CUDA: not run in the dry run" if dry_run and speed == "cudagraphs" else ""
                steps.append(Step("updates", name, [py, str(ROOT / "benchmarks" / bench.script), *args],
                                  bench.budget_s[speed] / len(PRECISIONS) * len(precisions), json=out, skip=skip))
                if dry_run and speed == "compile":  # minutes per update on 2 CPU cores: the flag's path only here
                    steps[-1].env = {"TORCH_COMPILE_DISABLE": "1"}
                    steps[-1].note = "dry run: TORCH_COMPILE_DISABLE=1, the flag's path without compiling"
    loop_json = work / "ktm_loop.json"
    steps.append(Step("loop", "ktm_loop.py", [py, str(ROOT / "benchmarks" / "ktm_loop.py"), "--device", device,
                                              *(LOOP_TINY if dry_run else LOOP_PAPER), "--json", str(loop_json)],
                      60, json=loop_json))
    if dry_run:  # tiny sizes on a CPU: generous budgets, the test's own timeout bounds the whole
        for step in steps:
            step.budget_s = 300
    return steps


def run_step(step: Step, timeout_s: float, env: dict[str, str], logs: Path) -> None:
    """Run ``step`` in its own process group (killed as a whole past ``timeout_s``); fill in its result."""
    log = logs / (re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{step.section}-{step.name}") + ".log")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        out.write("$ " + " ".join(step.command) + "\n")
        out.flush()
        proc = subprocess.Popen(step.command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    step.wall_s = time.perf_counter() - t0
    text = log.read_text()
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
    if rc is None:
        step.status, step.detail = "timed out", f"after {timeout_s:.0f} s (log: {log.name})"
    elif rc not in (0, 5) or (rc == 5 and step.section != "tests"):  # pytest: 5 = no test selected
        step.status, step.detail = "failed", f"rc {rc}: {last[:160]} (log: {log.name})"
    else:
        step.status = "ok"
        try:
            READERS[step.section](step, text)
        except (OSError, ValueError, KeyError, IndexError) as e:
            step.status, step.detail = "failed", f"no result: {type(e).__name__}: {e} (log: {log.name})"


def read_pytest(step: Step, text: str) -> None:
    counts = {kind: 0 for kind in ("passed", "failed", "skipped", "error")}
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected)", line)]
    for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary[-1] if summary else ""):
        counts[kind.rstrip("s") if kind.startswith("error") else kind] += int(n)
    reasons = sorted(set(re.findall(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", text, re.M)))
    step.rows = [counts]
    step.detail = "; ".join(f"skipped: {r}" for r in reasons)


def read_recipe(step: Step, text: str) -> None:
    """The first evaluation written in the run folder (a recipe with stages writes one folder per stage)."""
    evals = sorted(step.run_dir.rglob("eval.csv"), key=lambda p: p.stat().st_mtime)
    if not evals:
        raise ValueError(f"no eval.csv under {step.run_dir}")
    with open(evals[0], newline="") as f:
        row = next(csv.DictReader(f))
    returns = [float(v) for k, v in row.items() if k.endswith("/return") and v not in (None, "")]
    mean = float(row["eval/mean_return"]) if row.get("eval/mean_return") else sum(returns) / len(returns)
    step.rows = [{"step": int(row["step"]), "mean_return": mean, "where": str(evals[0].relative_to(step.run_dir))}]


def read_json(step: Step, text: str) -> None:
    rows = json.loads(step.json.read_text())["rows"]
    if not rows or not all(isinstance(r.get("per_s"), (int, float)) and r["per_s"] > 0 for r in rows):
        raise ValueError(f"{step.json.name}: rows without a positive per_s: {rows}")
    step.rows = rows


PAPER_REFERENCE = ("float32", "eager")  # every update rate is compared with this, measured in the same process
READERS: dict[str, Callable[[Step, str], None]] = {"tests": read_pytest, "recipes": read_recipe,
                                                   "updates": read_json, "loop": read_json}


def run_all(steps: list[Step], logs: Path, dry_run: bool) -> float:
    """Run the steps; returns the wall time.

    On the GPU one at a time, in order (timings must not overlap), a step that ends early leaving its unused budget
    to the next ones; in the dry run two at a time (the CPU's two cores: its numbers only show that a step runs).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the rehearsal runs on the CPU even on a GPU machine
    t0 = time.perf_counter()
    done = {step.name: threading.Event() for step in steps}
    spare = [0.0]

    def one(step: Step) -> None:
        try:
            needed = next((s for s in steps if s.name == step.needs), None)
            if needed is not None:
                done[needed.name].wait()
            if step.skip:
                step.status = "planned"
            elif needed is not None and not needed.ok:
                step.status, step.detail = "not run", f"needs {needed.name}, which did not pass"
            else:
                budget = step.budget_s + (0.0 if dry_run else spare[0])
                print(f"[gpu-check] {step.section}: {step.name} (budget {budget:.0f} s)", flush=True)
                run_step(step, budget, {**env, **step.env}, logs)
                print(f"[gpu-check]   {step.name}: {step.status} in {step.wall_s:.1f} s {step.detail}", flush=True)
            spare[0] = max(0.0, spare[0] + step.budget_s - step.wall_s)
        finally:
            done[step.name].set()

    with ThreadPoolExecutor(max_workers=2 if dry_run else 1) as pool:
        list(pool.map(one, steps))
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- the report
def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _status(step: Step) -> str:
    return "; ".join(x for x in (f"{step.status}: {step.detail}" if step.detail else step.status, step.note) if x)


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def classify(row: dict[str, Any]) -> tuple[str, str, str]:
    """``(what, precision, speed)`` of a benchmark's JSON row: its ``precision`` and ``speed`` keys where it has them,
    else the words of its ``variant`` (``"a2c compile bfloat16"``: ``("a2c", "bfloat16", "compile")``)."""
    words = str(row["variant"]).split()
    precision = row.get("precision") or next((w for w in words if w in PRECISIONS), "float32")
    speed = row.get("speed") or next((w for w in words if w in SPEED_NAMES), "eager")
    what = " ".join(w for w in words if w not in PRECISIONS and w not in SPEED_NAMES) or "update"
    return what, precision, speed


def update_rates(steps: list[Step]) -> dict[tuple[str, str], dict[tuple[str, str], tuple[float, float | None]]]:
    """``{(script, what): {(precision, speed): (per_s, ratio)}}`` of the update benchmarks that passed; the ratio is
    to eager float32 of the same ``what`` measured in the same process (where that process has none, in the first
    that has). A cell measured by several processes keeps its first measure (the eager processes run first)."""
    rates: dict[tuple[str, str], dict[tuple[str, str], tuple[float, float | None]]] = {}
    for step in steps:
        if step.section != "updates" or not step.ok:
            continue
        script = step.name.split()[0]
        rows = [(*classify(row), float(row["per_s"])) for row in step.rows]
        reference = {what: per_s for what, precision, speed, per_s in rows if (precision, speed) == PAPER_REFERENCE}
        for what, precision, speed, per_s in rows:
            ratio = per_s / reference[what] if what in reference else None
            rates.setdefault((script, what), {}).setdefault((precision, speed), (per_s, ratio))
    for cells in rates.values():
        if PAPER_REFERENCE in cells:
            reference = cells[PAPER_REFERENCE][0]
            cells.update({c: (per_s, per_s / reference) for c, (per_s, ratio) in cells.items() if ratio is None})
    return rates


def report(steps: list[Step], wall_s: float, dry_run: bool, device_name: str) -> str:
    import torch

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "dry run: CPU, tiny sizes — the numbers only show that every step runs" if dry_run else \
        "one GPU, the papers' sizes"
    lines = ["# tdmt GPU check", "",
             f"{now} · GPU: **{device_name}** · torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}) · "
             f"commit {_commit()} · {mode} · {wall_s:.0f} s in all"
             + ("" if dry_run else f" (budget {TOTAL_BUDGET_S} s)"), ""]
    by = {s: [st for st in steps if st.section == s] for s in READERS}

    lines += ["## 1. CUDA-marked tests (`pytest -m cuda`)", ""]
    lines += _table(["step", "passed", "failed", "skipped", "errors", "wall (s)", "status"], [
        [s.name, *([s.rows[0][k] for k in ("passed", "failed", "skipped", "error")] if s.rows else ["–"] * 4),
         f"{s.wall_s:.1f}", _status(s)] for s in by["tests"]]) + [""]

    lines += [f"## 2. Every recipe on `device={'cpu' if dry_run else 'cuda'}` to its first evaluation "
              "(pendulum-mt3, tiny budgets)", ""]
    lines += _table(["recipe", "first evaluation at step", "mean return", "wall (s)", "status"], [
        [f"`{s.name}`", *(([s.rows[0]["step"], f"{s.rows[0]['mean_return']:.1f}"]) if s.rows else ["–", "–"]),
         f"{s.wall_s:.1f}", _status(s)] for s in by["recipes"]]) + [""]

    lines += ["## 3. Updates/s at the papers' sizes" + (" (dry run: tiny sizes)" if dry_run else ""), "",
              "Each cell: updates/s and, in brackets, the ratio to eager float32 of the same row, measured in the same "
              "process where it has one (medians of the benchmark's repeats).", ""]
    rates = update_rates(steps)
    seen = {c for cells in rates.values() for c in cells}
    combos = [(p, s) for p in PRECISIONS for s in SPEED_NAMES if s != "compile+cudagraphs" or (p, s) in seen]
    titles = {b.script: b.title for b in BENCHES}
    rows = []
    for (script, what), cells in rates.items():
        rows.append([titles[script], what] + [
            _rate(cells[c][0]) + (f" ({cells[c][1]:.2f}×)" if cells[c][1] is not None else "") if c in cells else "–"
            for c in combos])
    lines += _table(["step", "what", *(f"{p} {s}" for p, s in combos)], rows) + [""]
    lines += _table(["process", "wall (s)", "budget (s)", "status"], [
        [s.name, f"{s.wall_s:.1f}", f"{s.budget_s:.0f}", _status(s)] for s in by["updates"]]) + [""]

    lines += _loop_section(by["loop"], rates, dry_run)
    lines += ["## Every step", ""]
    lines += _table(["section", "step", "status", "wall (s)", "budget (s)"], [
        [s.section, s.name, s.status, f"{s.wall_s:.1f}", f"{s.budget_s:.0f}"] for s in steps])
    return "\n".join(lines) + "\n"


def _loop_section(loop: list[Step], rates: dict, dry_run: bool) -> list[str]:
    lines = ["## 4. Full loop: `ktm_drl` env steps/s and the time spent in evaluation", ""]
    row = loop[0].rows[0] if loop and loop[0].ok else None
    if row is None:
        return lines + [f"Not measured: {_status(loop[0]) if loop else 'not planned'}.", ""]
    share = row["eval_share"]
    verdict = "under the 10 % goal" if share < 0.10 else \
        "**above the 10 % goal**: evaluate less often or with fewer episodes (eval_every, eval_episodes)"
    episodes = f"{row['eval_episodes']} episode{'s' * (row['eval_episodes'] != 1)}"
    lines += _table(["suite", "device", "env steps/s (training)", f"one evaluation ({episodes} × K tasks, CPU envs)",
                     f"share at one every {row['eval_every']:,} epochs", "env steps/s with evaluations"],
                    [[row["variant"].split()[-1], row["device"], _rate(row["per_s"]), f"{row['eval_s']:.1f} s",
                      f"{100 * share:.1f} % ({verdict})", _rate(row["per_s_with_eval"])]]) + [""]
    lines += ["Implied wall-clock for the papers' budgets" + (" (dry run: tiny sizes, not comparable)" if dry_run
                                                             else "") + ":", ""]
    rows = []
    for paper, budget, n, source, word, theirs in PAPERS:
        if source == "loop":
            rows.append([paper, budget, f"{n / row['per_s_with_eval'] / 3600:.1f} h (every epoch at the online loop's "
                         "rate with evaluations: an upper bound, offline epochs step no env)", theirs])
            continue
        mine = [(what, cells) for (script, what), cells in rates.items() if script == source]
        cells = next((c for what, c in mine if word in what.lower()), mine[0][1] if mine else {})
        if PAPER_REFERENCE not in cells:
            rows.append([paper, budget, "not measured", theirs])
            continue
        fastest = max(cells, key=lambda c: cells[c][0])
        rows.append([paper, budget, f"{n / cells[PAPER_REFERENCE][0] / 3600:.1f} h eager float32, "
                     f"{n / cells[fastest][0] / 3600:.1f} h {' '.join(fastest)} (updates only: a lower bound)", theirs])
    return lines + _table(["paper", "budget", "implied here", "the paper's wall-clock"], rows) + [""]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (a rehearsal)")
    parser.add_argument("--out", type=Path, default=ROOT, help=f"folder of {REPORT} and gpu-check-logs/")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        build = "" if torch.version.cuda else ", a CPU-only build: install a CUDA build of torch in .venv"
        print(f"gpu_check: no CUDA device is visible here (torch {torch.__version__}{build}); run it on a machine "
              "with a GPU, or with --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    device_name = f"none (dry run on the CPU: {platform.processor() or platform.machine()})" if args.dry_run else \
        torch.cuda.get_device_name(0)
    logs = args.out / "gpu-check-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tdmt-gpu-check-") as work:
        steps = plan(args.dry_run, Path(work))
        wall = run_all(steps, logs, args.dry_run)
    text = report(steps, wall, args.dry_run, device_name)
    (args.out / REPORT).write_text(text)
    print(text)
    print(f"[gpu-check] report: {args.out / REPORT}, logs: {logs}")
    return 0 if all(s.ok or s.status == "planned" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
