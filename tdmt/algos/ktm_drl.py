"""Recipe ``ktm_drl``: Knowledge Transfer based Multi-task DRL (Xu et al., NeurIPS 2020), Algorithm 1.

1. Offline transfer, ``offline_steps`` updates: batches ``[K, N]`` from the teachers' own buffers D_k; critic
   regressed on the teachers' Q-values (Eq. 1), actor ascends the teacher critic Q^k_1 (Eq. 2), every step.
2. Copy the student's weights into its targets.
3. Online learning, ``online_steps`` multi-task steps: one env step per task with exploration N(0, 0.1²), per-task
   replay D'_k, clipped double-Q TD3 critic (Eq. 3–4), actor every d=2 steps on ``-α Q^k_1 - β Q1`` (Eq. 5),
   soft target updates τ=0.005 every d steps.

Evaluation every ``eval_every`` steps (``eval_episodes`` deterministic episodes per task). Table 3 ablations are
config switches: ``offline_steps=0`` (w/o Offline), ``online_steps=0`` (w/o Online), ``alpha=0`` (online w/o
teacher), ``beta=0`` (online only teacher), ``per_task_replay=false`` (one task per episode, one shared buffer).
The run is resumable at any step of either stage (the teachers' buffers are re-read from ``teachers_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tdmt.algos.run import TrainingRun
from tdmt.algos.td3_common import (
    EVAL_SEED,
    OnlineCollector,
    TD3Config,
    TD3Learner,
    default_run_dir,
    eval_row,
    make_value_estimator,
    max_average,
    teacher_returns,
    write_results,
)
from tdmt.algos.teachers import load_replay
from tdmt.algos.teachers import teachers_dir as default_teachers_dir
from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import Suite, get_suite, make_env
from tdmt.modules.td3 import make_student_actor, make_student_critic
from tdmt.modules.teachers import StackedTeachers
from tdmt.objectives import TeacherDistillTD3Loss
from tdmt.progress import tqdm

RECIPE = "ktm_drl"


@dataclass
class Config(TD3Config):
    """KTM-DRL; defaults are the paper's (§4: 500K + 500K steps, 2×400, batch 256, lr 3e-4, α=β=1)."""

    teachers_dir: str = ""  # default: the train_teachers run of the same suite and seed
    offline_steps: int = 500_000
    online_steps: int = 500_000
    learning_starts: int = 1000  # online env steps (per task) before the first online update
    alpha: float = 1.0
    beta: float = 1.0
    per_task_replay: bool = True
    use_onehot: bool = True

    def validate(self) -> None:
        super().validate()
        if self.offline_steps < 0 or self.online_steps < 0 or self.offline_steps + self.online_steps == 0:
            raise ValueError(f"offline_steps={self.offline_steps} and online_steps={self.online_steps} must be >= 0 "
                             "and not both 0")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}")

    @property
    def label(self) -> str:
        """The method's row name in the results tables (Table 3 names for the ablations)."""
        parts = []
        if self.offline_steps == 0:
            parts.append("w/o Offline")
        if self.online_steps == 0:
            parts.append("w/o Online")
        if self.online_steps and self.alpha == 0:
            parts.append("online w/o teacher (α=0)")
        if self.online_steps and self.beta == 0:
            parts.append("online only teacher (β=0)")
        if not self.per_task_replay:
            parts.append("w/o per-task replay")
        return "KTM-DRL" + (" — " + ", ".join(parts) if parts else "")

    def resolved_teachers_dir(self) -> Path:
        return Path(self.teachers_dir) if self.teachers_dir else default_teachers_dir(
            default_run_dir("train_teachers", self.suite, self.seed))


def load_offline_data(teachers: Path, suite: Suite, batch_size: int) -> PerTaskReplayBuffer:
    """The teachers' buffers D_1..D_K in one per-task buffer (padded to the suite's sizes)."""
    data = [load_replay(teachers / name / "replay", k, suite.num_tasks, suite.obs_max, suite.act_max)
            for k, name in enumerate(suite.task_names)]
    buffer = PerTaskReplayBuffer(suite.num_tasks, max(d.shape[0] for d in data), batch_size)
    for d in data:
        buffer.extend(d)
    return buffer


def build_student(cfg: Config, suite: Suite, masks: torch.Tensor, teachers: StackedTeachers | None,
                  mode: str) -> TD3Learner:
    """Student actor/critic (padded inputs + task one-hot), the teacher-distill loss and its optimisers."""
    actor = make_student_actor(suite.obs_max, suite.act_max, suite.num_tasks, cfg.hidden, cfg.use_onehot)
    critic = make_student_critic(suite.obs_max, suite.act_max, suite.num_tasks, cfg.hidden, cfg.use_onehot)
    loss = TeacherDistillTD3Loss(actor, critic, teachers, action_masks=masks, mode=mode, alpha=cfg.alpha,
                                 beta=cfg.beta, policy_noise=cfg.policy_noise, noise_clip=cfg.noise_clip)
    make_value_estimator(loss, cfg.gamma)
    return TD3Learner(loss, cfg.lr, cfg.tau, cfg.policy_delay, cfg.precision)


def run(cfg: Config) -> dict:
    """Algorithm 1 on ``cfg.suite``; writes metrics.csv, eval.csv, results.md, curves.png, summary.json."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    suite = get_suite(cfg.suite)
    run_dir = cfg.run_dir or default_run_dir(RECIPE, cfg.suite, cfg.seed)
    tdir = cfg.resolved_teachers_dir()
    env = make_env(cfg.suite, seed=cfg.seed)
    eval_env = make_env(cfg.suite, seed=EVAL_SEED + cfg.seed, num_envs_per_task=cfg.eval_episodes)
    needs_teachers = cfg.offline_steps > 0 or (cfg.online_steps > 0 and cfg.alpha > 0)
    teachers = StackedTeachers.load(tdir, suite.task_names, suite.obs_max, suite.act_max) if needs_teachers else None
    offline = load_offline_data(tdir, suite, cfg.batch_size) if cfg.offline_steps else None
    learner = build_student(cfg, suite, env.action_masks, teachers, "offline" if cfg.offline_steps else "online")
    actor = learner.loss.actor_network
    collector = OnlineCollector(env, cfg.buffer_size, cfg.batch_size, cfg.per_task_replay)
    trun = TrainingRun(run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    buffers = {"online": collector.buffer}

    def get_state() -> dict:
        return {"learner": learner.state_dict(), "active_task": collector.active_task}

    def load_state(state: dict) -> None:
        learner.load_state_dict(state["learner"])
        collector.active_task = state["active_task"]

    start = trun.resume(load_state, buffers)
    total = cfg.offline_steps + cfg.online_steps
    with trun.guard(get_state, buffers) as guard:
        for t in tqdm(range(start, total), initial=start, total=total, desc=cfg.label, disable=not cfg.progress):
            stage = "offline" if t < cfg.offline_steps else "online"
            if stage == "offline":
                learner.loss.mode = "offline"
                stats = learner.update(offline.sample(), actor_every=1, soft_update=False)
            else:
                if t == cfg.offline_steps and cfg.offline_steps:
                    learner.hard_update_targets()  # Algorithm 1: targets ← distilled student
                learner.loss.mode = "online"
                collector.step(actor, cfg.expl_noise)
                ready = t - cfg.offline_steps >= cfg.learning_starts and collector.ready(1)
                stats = learner.update(collector.sample()) if ready else {}
            done = t + 1
            if stats and done % 1000 == 0:
                trun.metrics.log(done, stage=stage, **stats)
            if done % cfg.eval_every == 0 or done in (cfg.offline_steps, total):
                trun.evals.log(done, **eval_row(eval_env, actor, stage, EVAL_SEED + cfg.seed))
            trun.maybe_checkpoint(done, get_state, buffers)
            guard.check(done)
    summary = report(trun, cfg, suite, tdir)
    trun.finish(summary)
    env.close()
    eval_env.close()
    return summary


def report(trun: TrainingRun, cfg: Config, suite: Suite, tdir: Path) -> dict:
    """results.md rows: the method (max over all evaluations) and, with both stages, the student after offline."""
    rows = trun.evals.rows()
    methods = {cfg.label: max_average(rows, suite.task_names)}
    if cfg.offline_steps and cfg.online_steps:
        methods["KTM-DRL after the offline stage"] = max_average(rows, suite.task_names, stage="offline")
    summary = write_results(trun, f"{cfg.label} — {cfg.suite}, seed {cfg.seed}", suite, methods,
                            teacher_returns(tdir, suite.task_names), cfg.label,
                            extra=f"\nBudget: offline {cfg.offline_steps} + online {cfg.online_steps} steps; "
                                  f"{cfg.eval_episodes} evaluation episodes per task every {cfg.eval_every} "
                                  f"steps; teachers from `{tdir}`.\n")
    summary.update(label=cfg.label, offline_steps=cfg.offline_steps, online_steps=cfg.online_steps)
    return summary
