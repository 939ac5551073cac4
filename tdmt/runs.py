"""Finding and using run folders, whoever launched them (a recipe by hand, a sweep element, the Python API).

A run folder holds ``config.yaml`` (the resolved config), ``metrics.csv``, ``eval.csv``, ``checkpoints/``,
``state.json`` (running / stopped / failed / done, written by :class:`~tdmt.algos.run.TrainingRun`), ``job.json``
for sweep elements, and ``summary.json`` once done. This module reads them back:

* :func:`find_runs` — every run folder under a folder, with its recipe, suite, variant (the keys that differ from
  the recipe's defaults), seed, steps done / budget, status and best score (``tdmt runs``);
* :func:`load_policy` — the policy of a run's newest checkpoint, rebuilt from the recipe's own classes
  (``tdmt eval``);
* :func:`evaluate_run` — its evaluation table (and one MP4 per task) next to the run's results.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tdmt.algos import RECIPES, get_recipe
from tdmt.algos.run import CONFIG, STATE, SUMMARY
from tdmt.config import apply_overrides
from tdmt.launch import JOB_FILE, MANIFEST, _pid_alive, read_manifest, statuses_of
from tdmt.logger import CSVLog
from tdmt.report import markdown_table, method_name, write_text

STATUSES = ("done", "running", "stopped", "failed", "pending")
# Keys that never name a variant (where/how a run runs and reports, and what the table shows in its own columns).
_NOT_VARIANT = {"suite", "seed", "run_dir", "device", "threads", "num_threads", "logger", "log_every",
                "checkpoint_every", "progress", "eval_every", "eval_episodes", "final_eval_episodes", "teachers_dir",
                "teacher_path"}


@dataclass
class RunInfo:
    """One run folder as ``tdmt runs`` shows it."""

    dir: Path
    recipe: str
    suite: str
    seed: int | None
    variant: str  # "key=value,..." of the identity keys that differ from the recipe's defaults; "default" if none
    step: int  # steps done (the newest logged or checkpointed step; the budget when done)
    budget: int | None  # the step budget (sum of the recipe's BUDGET_KEYS)
    status: str  # one of STATUSES
    best: float | None  # best evaluation: max over evaluations of the mean return (or mean success on Meta-World)
    best_metric: str = "return"
    detail: str = ""  # why a run failed, who runs it
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def method(self) -> str:
        """The paper's name of the method (:func:`tdmt.report.method_name`)."""
        return method_name(self.recipe, self.config)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((folder / CONFIG).read_text())
    except (FileNotFoundError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_folders(root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(run folders, sweep folders) under ``root`` (``root`` itself may be either). A run folder holds
    ``config.yaml``, ``state.json``, ``summary.json`` or a sweep's ``job.json``; what a run keeps inside its own
    folder (teachers, phases, checkpoints) is part of it, not a run. A sweep folder holds the launcher's manifest."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}")
    runs, sweeps = [], []
    for folder, dirs, files in os.walk(root):
        if MANIFEST in files:
            sweeps.append(Path(folder))
        if {CONFIG, STATE, JOB_FILE, SUMMARY} & set(files):
            runs.append(Path(folder))
            dirs.clear()  # what a run keeps inside its folder is part of it (and checkpoints hold many files)
    return sorted(runs), sorted(sweeps)


def _recipe_of(folder: Path, config: dict[str, Any], summary: dict[str, Any], job: dict[str, Any]) -> str:
    """The recipe that wrote ``folder``: its summary, its sweep job, its default folder layout
    (``runs/<recipe>/<suite>/...``), or the one recipe whose config keys are exactly those of ``config.yaml``."""
    if summary.get("recipe") in RECIPES:
        return summary["recipe"]
    element = str(job.get("element") or "")
    if element.count("/") == 3:  # <recipe>/<suite>/<variant>/seed<k>: the recipe may be a dotted module path
        return element.split("/")[0]
    for parent in folder.parents:
        if parent.name in RECIPES:
            return parent.name
    if config:
        matches = [name for name in RECIPES
                   if {f.name for f in dataclasses.fields(get_recipe(name).Config)} == set(config)]
        if len(matches) == 1:
            return matches[0]
    return "?"


def config_of(recipe: str, config: dict[str, Any]) -> Any:
    """The recipe's ``Config`` with the saved values (not validated: listing never refuses an old run)."""
    cls = get_recipe(recipe).Config
    known = {f.name for f in dataclasses.fields(cls)}
    return apply_overrides(cls(), {k: v for k, v in config.items() if k in known}, validate=False)


def variant_of(recipe: str, config: dict[str, Any]) -> str:
    """``key=value,...`` of the keys that name the run and differ from the recipe's defaults ("default" if none)."""
    try:
        cls = get_recipe(recipe).Config
    except ValueError:  # "?" or a recipe module that is not importable here
        return "?"
    defaults = dataclasses.asdict(cls())
    budgets = set(getattr(cls, "BUDGET_KEYS", ()))
    own = set(vars(cls).get("__annotations__", {}))  # the recipe's own keys (ablation switches) before shared ones
    changed = []
    for key, value in sorted(config.items(), key=lambda kv: kv[0] not in own):
        default = defaults.get(key)
        default = list(default) if isinstance(default, tuple) else default
        if key in _NOT_VARIANT or key in budgets or key not in defaults or value == default:
            continue
        shown = "x".join(map(str, value)) if isinstance(value, list) else value
        changed.append(f"{key}={shown}")
    return ",".join(changed) or "default"


# Recipes whose step counter runs over several budgets (KTM-DRL: offline updates, then online steps).
_STEP_BUDGETS = {"ktm_drl": ("offline_steps", "online_steps")}


def budget_of(recipe: str, config: dict[str, Any]) -> int | None:
    """The run's step budget, in the unit of its logged ``step``: the sum of its recipe's step budgets."""
    try:
        keys = _STEP_BUDGETS.get(recipe) or getattr(get_recipe(recipe).Config, "BUDGET_KEYS", ())
    except ValueError:
        keys = ()
    keys = [k for k in keys if k in config] or [k for k in ("total_steps", "steps", "frames_per_task") if k in config]
    values = [config[k] for k in keys if isinstance(config[k], int)]
    return sum(values) if values else None


def _last_step(path: Path) -> int:
    """The ``step`` (first column) of a CSV log's last row, read from its tail (a log can be large)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines[1:] if len(lines) > 1 else []):
        try:
            return int(float(line.split(",", 1)[0]))
        except ValueError:
            continue
    return 0


def status_of(folder: Path, state: dict[str, Any], job: dict[str, Any]) -> tuple[str, str]:
    """(status, detail): done when ``summary.json`` is there; else ``state.json`` (a "running" process of this
    host that no longer exists failed), else the sweep's ``job.json``; a folder with neither is pending (nothing
    trained yet) or stopped (it has checkpoints or logs)."""
    if (folder / SUMMARY).exists():
        return "done", ""
    info = state or {k: v for k, v in job.items() if k in ("state", "pid", "host", "error")}
    where = f"PID {info.get('pid')} on {info.get('host')}" if info.get("pid") else ""
    kind = info.get("state")
    if kind in ("running", "requeued"):
        if info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid")):
            return "failed", f"process {info.get('pid')} died"
        return ("running", where) if kind == "running" else ("pending", "requeued")
    if kind == "failed":
        return "failed", str(info.get("error", ""))[:120]
    if kind in ("stopped", "done"):  # "done" without a summary: the summary was lost; it must run again
        return "stopped", ""
    trained = (folder / "checkpoints").is_dir() or (folder / "eval.csv").exists()
    return ("stopped", "") if trained else ("pending", "")


def best_score(rows: list[dict[str, str]], success: bool) -> float | None:
    """Max over evaluations of the mean success rate (Meta-World) or of the mean return."""
    column = "eval/mean_success" if success else "eval/mean_return"
    values = []
    for row in rows:
        try:
            values.append(float(row[column]))
        except (KeyError, TypeError, ValueError):
            continue
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else None


def read_run(folder: str | os.PathLike) -> RunInfo:
    """What ``tdmt runs`` shows of one run folder."""
    from tdmt.envs import get_suite, list_suites

    folder = Path(folder)
    config, summary = _read_config(folder), _read_json(folder / SUMMARY)
    state, job = _read_json(folder / STATE), _read_json(folder / JOB_FILE)
    recipe = _recipe_of(folder, config, summary, job)
    suite = str(config.get("suite") or summary.get("suite") or "?")
    if suite == "?":  # a folder without config (an old run): the default layouts name the suite
        suite = next((p.name for p in folder.parents if p.name in list_suites()), "?")
    seed = config.get("seed", summary.get("seed"))
    try:
        success = get_suite(suite).success_metric
    except ValueError:
        success = False
    status, detail = status_of(folder, state, job)
    budget = budget_of(recipe, config)
    step = max(_last_step(folder / "eval.csv"), _last_step(folder / "metrics.csv"), int(state.get("step") or 0))
    if status == "done" and budget is not None:
        step = budget
    return RunInfo(folder, recipe, suite, seed if isinstance(seed, int) else None, variant_of(recipe, config), step,
                   budget, status, best_score(CSVLog(folder / "eval.csv").rows(), success),
                   "success" if success else "return", detail, config)


def find_runs(root: str | os.PathLike) -> list[RunInfo]:
    """Every run under ``root``, sorted by recipe, suite, variant, seed: hand-launched runs from their folders,
    sweep elements with the launcher's status (:func:`tdmt.launch.statuses_of`: SLURM states, not yet submitted
    elements), those not started yet included as "pending"."""
    folders, sweeps = run_folders(root)
    runs, covered = [], set()
    for sweep in sweeps:
        entries = read_manifest(sweep).get("elements", [])
        for entry, status in zip(entries, statuses_of(entries)):
            folder = Path(entry["run_dir"])
            covered.add(folder.resolve())
            info = read_run(folder) if folder.is_dir() else RunInfo(
                folder, entry["recipe"], entry["suite"], entry["seed"], entry["variant"], 0, None, "pending", None)
            info.status, info.detail = status.state, status.detail
            runs.append(info)
    runs += [read_run(folder) for folder in folders if folder.resolve() not in covered]
    return sorted(runs, key=lambda r: (r.recipe, r.suite, r.variant, r.seed if r.seed is not None else -1,
                                       str(r.dir)))


def format_runs(runs: list[RunInfo], root: str | os.PathLike = ".") -> str:
    """The ``tdmt runs`` table, one line per run, and a count per status."""
    header = ["recipe", "suite", "variant", "seed", "steps", "status", "best", "folder"]
    lines = [header]
    for r in runs:
        steps = f"{r.step}/{r.budget}" if r.budget is not None else str(r.step)
        best = "-" if r.best is None else (f"{r.best:.2f} success" if r.best_metric == "success" else f"{r.best:.1f}")
        status = f"{r.status} ({r.detail})" if r.detail else r.status
        try:
            where = str(r.dir.relative_to(root))
        except ValueError:
            where = str(r.dir)
        variant = r.variant if len(r.variant) <= 60 else r.variant[:59] + "…"
        lines.append([r.recipe, r.suite, variant, "-" if r.seed is None else str(r.seed), steps, status,
                      best, where])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1] for line in lines)
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in STATUSES if any(r.status == s for r in runs))
    return f"{text}\n{len(runs)} runs: {counts}" if runs else "no runs"


# ------------------------------------------------------------------------------------------------- tdmt eval
def _newest_state(folder: Path) -> tuple[int, dict[str, Any]]:
    from tdmt.checkpoint import CheckpointManager

    found = CheckpointManager(folder).load_latest(None)
    if found is None:
        raise FileNotFoundError(f"run {folder} has no checkpoint to evaluate (checkpoint_every=0 and never stopped)")
    step, state = found
    return step, state["train"]


def _actor_from_loss(actor: Any, loss_state: dict[str, Any]) -> Any:
    """Load an actor from a TorchRL ``LossModule`` state dict (its ``actor_network_params.*`` entries)."""
    prefix = "actor_network_params."
    actor.load_state_dict({k[len(prefix):]: v for k, v in loss_state.items() if k.startswith(prefix)})
    return actor


def load_policy(folder: str | os.PathLike) -> tuple[Any, int, Callable]:
    """(config, step, policy) of the run in ``folder``: the recipe's own networks with the weights of its newest
    checkpoint (a finished train_teachers run: its final teachers, ``teachers/<task>/teacher.pt``). Supported: the
    TD3 family (train_teachers, ktm_drl, td3_mt), SAC (sac_mt, ctpg's control policies), and the final ``model.pt``
    of a2c_multitask and distill_kl (through their own ``load_model_policy``)."""
    from tdmt.envs import get_suite

    folder = Path(folder)
    config = _read_config(folder)
    if not config:
        raise FileNotFoundError(f"{folder} is not a run folder (no readable {CONFIG})")
    recipe = _recipe_of(folder, config, _read_json(folder / SUMMARY), _read_json(folder / JOB_FILE))
    supported = ("train_teachers", "ktm_drl", "td3_mt", "sac_mt", "ctpg", "a2c_multitask", "distill_kl")
    if recipe not in supported:
        raise ValueError(f"tdmt eval of a {recipe} run is not supported yet; valid recipes: {list(supported)}")
    cfg = config_of(recipe, config)
    suite = get_suite(cfg.suite)
    if recipe in ("a2c_multitask", "distill_kl"):  # their final model.pt and the recipe's own loader
        if not (folder / "model.pt").exists():
            raise FileNotFoundError(f"run {folder} has no model.pt yet: tdmt eval reads a finished {recipe} run")
        return cfg, budget_of(recipe, config) or 0, get_recipe(recipe).load_model_policy(cfg, str(folder / "model.pt"))
    if recipe == "train_teachers" and (folder / SUMMARY).exists():  # the final teachers, saved per task
        from tensordict.nn import TensorDictModule

        from tdmt.modules.teachers import StackedTeachers

        teachers = StackedTeachers.load(folder / "teachers", suite.task_names, suite.obs_max, suite.act_max)
        return cfg, budget_of(recipe, config) or 0, TensorDictModule(teachers, ["observation", "task_id"], ["action"])
    step, state = _newest_state(folder)
    if recipe in ("ktm_drl", "td3_mt"):
        from tdmt.modules.td3 import make_student_actor

        actor = make_student_actor(suite.obs_max, suite.act_max, suite.num_tasks, cfg.hidden, cfg.use_onehot)
        policy = _actor_from_loss(actor, state["learner"]["loss"] if "learner" in state else state["loss"])
    elif recipe == "train_teachers":
        from tdmt.modules.td3 import make_teacher_actor

        actor = make_teacher_actor(suite.num_tasks, suite.obs_max, suite.act_max, cfg.hidden)
        policy = _actor_from_loss(actor, state["loss"])
    else:
        from tdmt.algos.sac_mt import MultiTaskSAC

        sac = MultiTaskSAC(dataclasses.replace(cfg, device="cpu"), suite)
        sac.load_state_dict(state["sac"] if recipe == "ctpg" else state)
        policy = sac.act
    return cfg, step, policy


# A lit sphere in front of the default camera: a working GL back-end draws non-black pixels.
_RENDER_PROBE = """import sys, mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos="0 0 3"/><geom size=".5"/></worldbody></mujoco>')
d = mujoco.MjData(m)
mujoco.mj_forward(m, d)
r = mujoco.Renderer(m, 32, 32)
r.update_scene(d)
sys.exit(0 if r.render().max() > 0 else 3)
"""


def rendering_available() -> str:
    """"" when MuJoCo can render offscreen here, else why not. ``MUJOCO_GL`` picks the back-end: egl (the default
    set here when unset: headless, a GPU's or Mesa's) or osmesa. Probed in a subprocess: a failing GL back-end
    cannot be swapped in a process that imported it."""
    import subprocess
    import sys

    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

    try:
        probe = subprocess.run([sys.executable, "-c", _RENDER_PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "MuJoCo offscreen rendering did not start within 120 s"
    if probe.returncode == 0:
        return ""
    if probe.returncode == 3:
        return f"MuJoCo offscreen rendering with MUJOCO_GL={os.environ['MUJOCO_GL']} draws black frames"
    errors = [line for line in probe.stderr.splitlines() if "Error" in line and not line.startswith(" ")]
    return (f"MuJoCo offscreen rendering is unavailable with MUJOCO_GL={os.environ.get('MUJOCO_GL', '(unset)')} "
            f"({errors[-1].strip()[:100] if errors else 'exit ' + str(probe.returncode)}); valid: MUJOCO_GL=egl "
            "(libEGL) or MUJOCO_GL=osmesa (libOSMesa)")


class _TaskFrames:
    """A ``rollout`` callback that records each task's first env until its first episode ends.

    Frames come from Gymnasium's own MuJoCo renderer (``MujocoEnv.render``, with each task's camera settings; Meta-World
    envs are ``MujocoEnv`` too): the training envs are made without ``render_mode``, which is switched to
    ``"rgb_array"`` on the one env per task that is filmed."""

    def __init__(self, env: Any):
        per_task = env.num_envs_per_task
        self.envs = [env._vec.envs[k * per_task].unwrapped for k in range(env.suite.num_tasks)]
        # tasks that are not MuJoCo envs (Pendulum) are not filmed
        self.filmed = [hasattr(e, "mujoco_renderer") for e in self.envs]
        for e, filmed in zip(self.envs, self.filmed):
            if filmed:
                e.render_mode = "rgb_array"
        self.frames: list[list[Any]] = [[] for _ in self.envs]
        self.ended = [not filmed for filmed in self.filmed]
        self.per_task = per_task

    def __call__(self, _env: Any, td: Any) -> None:
        """Called by ``rollout`` after each step (and auto-reset) of the batch."""
        done = td.get(("next", "done")).reshape(len(self.envs), self.per_task, -1)[:, 0, 0].tolist()
        for k, env in enumerate(self.envs):
            self.ended[k] = self.ended[k] or bool(done[k])  # a done row is already reset: its frame is the next one's
            if not self.ended[k]:
                self.frames[k].append(env.render())


def evaluate_run(folder: str | os.PathLike, episodes: int = 10, video: bool = False, fps: int = 30) -> list[Path]:
    """Evaluate the newest checkpoint of the run in ``folder`` (``episodes`` deterministic episodes per task, the
    recipes' evaluation seeds) and write ``evaluation.md`` and ``evaluation.csv`` next to its results; with
    ``video``, one MP4 per task in ``videos/`` (the first episode). Returns the written paths."""
    import imageio.v2 as imageio

    from tdmt.algos.td3_common import EVAL_SEED
    from tdmt.envs import make_env
    from tdmt.eval import evaluate

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} is not valid; valid: an integer >= 1")
    folder = Path(folder)
    if video and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ValueError("video=true writes MP4 with imageio-ffmpeg, not installed: pip install imageio-ffmpeg")
    if video and (why := rendering_available()):
        raise ValueError(f"video=true: {why}")
    cfg, step, policy = load_policy(folder)
    recipe = _recipe_of(folder, _read_config(folder), _read_json(folder / SUMMARY), _read_json(folder / JOB_FILE))
    env = make_env(cfg.suite, seed=EVAL_SEED + cfg.seed, num_envs_per_task=episodes,
                   tasks=list(getattr(cfg, "tasks", ())) or None)  # a2c_multitask may train on a subset
    try:
        frames = _TaskFrames(env) if video else None
        result = evaluate(env, policy, callback=frames)
    finally:
        env.close()
    header = ["task", "return (mean ± std)"] + (["success rate"] if result.success_rate is not None else [])
    rows = [[t, f"{m:.1f} ± {s:.1f}"] + ([f"{result.success_rate[k]:.2f}"] if result.success_rate else [])
            for k, (t, m, s) in enumerate(zip(result.task_names, result.return_mean, result.return_std))]
    plural = "s" if episodes > 1 else ""
    text = (f"# Evaluation of {folder.name}\n\n{method_name(recipe, cfg)} on {cfg.suite}, seed {cfg.seed}, "
            f"checkpoint of step {step}: {episodes} deterministic episode{plural} per task.\n\n"
            + markdown_table(header, rows)
            + f"\nMean return over tasks: {sum(result.return_mean) / len(result.return_mean):.1f}\n")
    written = [folder / "evaluation.md", folder / "evaluation.csv"]
    write_text(written[0], text)
    csv_rows = ["task,return_mean,return_std,success_rate"]
    csv_rows += [f"{t},{m},{s},{'' if result.success_rate is None else result.success_rate[k]}"
                 for k, (t, m, s) in enumerate(zip(result.task_names, result.return_mean, result.return_std))]
    write_text(written[1], "\n".join(csv_rows) + "\n")
    if frames is not None:
        (folder / "videos").mkdir(exist_ok=True)
        for name, task_frames, filmed in zip(result.task_names, frames.frames, frames.filmed):
            if not filmed:
                print(f"[tdmt] no video of {name}: not a MuJoCo task", flush=True)
                continue
            path = folder / "videos" / f"{name}.mp4"
            imageio.mimwrite(path, task_frames, fps=fps, macro_block_size=1)
            written.append(path)
    return written
