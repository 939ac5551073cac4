"""Recipe ``ktm_drl``: Knowledge Transfer based Multi-task DRL (Xu et al., NeurIPS 2020), Algorithm 1.

1. Offline transfer, ``offline_steps`` epochs: per epoch, foreach task k, N transitions from the teacher's own
   buffer D_k, the critic regressed on the teacher's Q-values (Eq. 1), the actor ascending the teacher critic
   Q^k_1 (Eq. 2) at every update (no policy delay offline, as in Algorithm 1).
2. Copy the student's weights into its targets; fresh Adam states (the public code's online optimisers).
3. Online learning, ``online_steps`` epochs: one env step per task with exploration N(0, 0.1²) into per-task
   replay D'_k, then foreach task k a clipped double-Q TD3 critic update (Eq. 3–4), every d=2 epochs the actor on
   ``-α Q^k_1 - β Q1`` (Eq. 5) and the soft target update τ=0.005.

``update_schedule=per_task`` (default) runs "foreach task k" as K sequential updates, each with its own optimiser
steps, as Algorithm 1 and the public code do; ``batched`` makes one update per epoch on the mean of the ``[K, N]``
batch (K× fewer gradient steps: a tdmt option). The student reads the padded state only (``use_onehot=false``, the
paper and the public code); ``use_onehot=true`` appends the task one-hot.

Evaluation every ``eval_every`` epochs (``eval_episodes`` deterministic episodes per task). Table 3 ablations are
config switches: ``offline_steps=0`` (w/o Offline), ``online_steps=0`` (w/o Online), ``alpha=0`` (online w/o
teacher), ``beta=0`` (online only teacher), ``per_task_replay=false`` (w/o HER: in both stages one task for a whole
episode, then the next — :class:`~tdmt.algos.td3_common.EpisodeTurns`). The run is resumable at any step of either
stage (the teachers' buffers are re-read from ``teachers_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import yaml

from tdmt.algos.run import SUMMARY, TrainingRun
from tdmt.algos.td3_common import (
    EVAL_SEED,
    EpisodeTurns,
    OnlineCollector,
    TD3Config,
    TD3Learner,
    build_learner,
    due,
    eval_row,
    log_metrics,
    sample_task,
    teacher_rows,
    write_results,
)
from tdmt.algos.teachers import load_replay
from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import Suite, get_suite, make_env
from tdmt.modules.td3 import make_student_actor, make_student_critic
from tdmt.modules.teachers import StackedTeachers
from tdmt.objectives import TeacherDistillTD3Loss
from tdmt.progress import tqdm
from tdmt.report import method_name

RECIPE = "ktm_drl"
RUNS_ROOT = Path("runs")


@dataclass
class Config(TD3Config):
    """KTM-DRL; defaults are the paper's (§4: 500K + 500K epochs, 2×400, batch 256 per task, lr 3e-4, α=β=1,
    per-task updates, the padded state as the student's input)."""

    teachers_dir: str = ""  # the teachers' folder; empty: that of the one finished train_teachers run of suite and seed
    offline_steps: int = 500_000  # T_off: offline epochs (Algorithm 1); 0: w/o Offline
    online_steps: int = 500_000  # T_on: online epochs, one env step per task each; 0: w/o Online
    learning_starts: int = 10_000  # online epochs before the first online update (the public code's observation steps)
    alpha: float = 1.0  # weight of the teacher term of Eq. 5 (0: online w/o teacher)
    beta: float = 1.0  # weight of the student-critic term of Eq. 5 (0: online only teacher)
    per_task_replay: bool = True  # false: w/o HER (both stages: one task for a whole episode, then the next)
    use_onehot: bool = False  # append the task one-hot to the student's input (tdmt option; the paper: padded state)
    update_schedule: Literal["per_task", "batched"] = "per_task"  # per_task: K updates per epoch (Algorithm 1)

    # The online budget may grow on resume (train further); offline_steps names the run: growing it after the online
    # stage began would put offline updates after online ones, and 0 is the w/o Offline ablation.
    BUDGET_KEYS: ClassVar[tuple[str, ...]] = ("online_steps",)
    RANGES: ClassVar[dict[str, str]] = {"alpha": ">= 0", "beta": ">= 0", "learning_starts": ">= 0"}

    def validate(self) -> None:
        super().validate()
        if self.offline_steps + self.online_steps == 0:
            raise ValueError(f"offline_steps={self.offline_steps} and online_steps={self.online_steps} are not "
                             "valid; valid: not both 0")
        if not self.per_task_replay and self.update_schedule != "per_task":
            raise ValueError(f"update_schedule={self.update_schedule!r} with per_task_replay=false is not valid; "
                             "valid: per_task (w/o HER updates on one task's transitions at a time)")

    def identity(self) -> dict[str, Any]:
        """The run-naming keys, plus whether there is an online stage (w/o Online is another method than a run
        with a smaller online budget)."""
        return {**super().identity(), "online_stage": self.online_steps > 0}

    @property
    def label(self) -> str:
        """The method's row name in the results tables (Table 3 names for the ablations: "KTM-DRL w/o Offline",
        "KTM-DRL Online w/o Teachers", ...; :func:`tdmt.report.method_name`)."""
        return method_name(RECIPE, self)

    def needs_teachers(self) -> bool:
        return self.offline_steps > 0 or (self.online_steps > 0 and self.alpha > 0)

    def resolved_teachers_dir(self, required: bool = True) -> Path | None:
        """``teachers_dir``, or the ``teachers/`` folder of the one finished ``train_teachers`` run of this suite and
        seed under ``runs/train_teachers/<suite>/`` (``None`` when not ``required`` and there is none)."""
        if self.teachers_dir:
            return Path(self.teachers_dir)
        try:
            return find_teachers(self.suite, self.seed)
        except (FileNotFoundError, ValueError):
            if required:
                raise
            return None


def find_teachers(suite: str, seed: int, root: Path = RUNS_ROOT) -> Path:
    """The teachers of the one finished ``train_teachers`` run of ``suite`` and ``seed`` under
    ``<root>/train_teachers/<suite>/`` (run folders are named by their config hash: the seed is read from each
    run's ``config.yaml``)."""
    base = root / "train_teachers" / suite
    found = []
    for run in sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []:
        try:
            cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if cfg.get("suite") == suite and cfg.get("seed") == seed and (run / SUMMARY).exists() \
                and (run / "teachers").is_dir():
            found.append(run)
    if not found:
        raise FileNotFoundError(f"no finished train_teachers run for suite={suite} seed={seed} under {base}/; train "
                                f"them with: python recipes/train_teachers.py suite={suite} seed={seed} (or pass "
                                "teachers_dir=)")
    if len(found) > 1:
        raise ValueError(f"{len(found)} finished train_teachers runs for suite={suite} seed={seed}: "
                         f"{', '.join(map(str, found))}; choose one with teachers_dir=<run>/teachers")
    return found[0] / "teachers"


def load_offline_data(teachers: Path, suite: Suite, batch_size: int, device: str | torch.device = "cpu"
                      ) -> PerTaskReplayBuffer:
    """The teachers' buffers D_1..D_K in one per-task buffer (padded to the suite's sizes) on ``device`` (the replay
    device: the offline stage's samples never cross the bus)."""
    data = [load_replay(teachers / name / "replay", k, suite.num_tasks, suite.obs_max, suite.act_max)
            for k, name in enumerate(suite.task_names)]
    buffer = PerTaskReplayBuffer(suite.num_tasks, max(d.shape[0] for d in data), batch_size, device=device)
    for d in data:
        buffer.extend(d)
    return buffer


def build_student(cfg: Config, suite: Suite, masks: torch.Tensor, teachers: StackedTeachers | None,
                  mode: str) -> TD3Learner:
    """Student actor/critic (padded inputs [+ task one-hot]), the teacher-distill loss and its optimisers, on the
    training device (with the teachers)."""
    actor = make_student_actor(suite.obs_max, suite.act_max, suite.num_tasks, cfg.hidden, cfg.use_onehot)
    critic = make_student_critic(suite.obs_max, suite.act_max, suite.num_tasks, cfg.hidden, cfg.use_onehot)
    loss = TeacherDistillTD3Loss(actor, critic, teachers, action_masks=masks, mode=mode, alpha=cfg.alpha,
                                 beta=cfg.beta, policy_noise=cfg.policy_noise, noise_clip=cfg.noise_clip)
    return build_learner(loss, cfg, schedule=cfg.update_schedule)


def run(cfg: Config) -> dict:
    """Algorithm 1 on ``cfg.suite``; writes metrics.csv, eval.csv, results.md, curves.png, summary.json."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    suite = get_suite(cfg.suite)
    K, N = suite.num_tasks, cfg.batch_size_per_task
    tdir = cfg.resolved_teachers_dir(required=cfg.needs_teachers())
    teachers = StackedTeachers.load(tdir, suite.task_names, suite.obs_max, suite.act_max) \
        if cfg.needs_teachers() else None
    replay = cfg.replay_options(cfg.resolved_run_dir())
    offline = load_offline_data(tdir, suite, N, replay["replay_device"]) if cfg.offline_steps else None
    eval_env = make_env(cfg.suite, seed=EVAL_SEED + cfg.seed, num_envs_per_task=cfg.eval_episodes, device=cfg.device)
    learner = build_student(cfg, suite, eval_env.action_masks, teachers, "offline" if cfg.offline_steps else "online")
    actor = learner.loss.actor_network
    if cfg.per_task_replay:  # the K tasks' envs step together
        env = make_env(cfg.suite, seed=cfg.seed, device=cfg.device)  # steps on the host, hands over on the device
        collector, turns = OnlineCollector(env, cfg.buffer_size_per_task, N, **replay), None
        buffers = {"online": collector.buffer}
    else:  # w/o HER: one task's env at a time
        env, collector = None, None
        turns = EpisodeTurns(suite, cfg.seed, cfg.buffer_size_per_task, N, device=cfg.device, **replay)
        buffers = {"online": turns.buffer}
    trun = TrainingRun(cfg.resolved_run_dir(), cfg, checkpoint_every=cfg.checkpoint_every)

    def get_state() -> dict:
        return {"learner": learner.state_dict(), **({"turns": turns.state_dict()} if turns else {})}

    def load_state(state: dict) -> None:
        learner.load_state_dict(state["learner"])
        if turns:
            turns.load_state_dict(state["turns"])

    start = trun.resume(load_state, buffers)
    total = cfg.offline_steps + cfg.online_steps
    with trun.guard(get_state, buffers) as guard:
        for t in tqdm(range(start, total), initial=start, total=total, desc=cfg.label, disable=not cfg.progress):
            stage = "offline" if t < cfg.offline_steps else "online"
            if stage == "offline":  # Eq. 1–2: actor at every update, targets untouched until the copy
                learner.loss.mode = "offline"
                if turns is None:
                    learner.update(offline.sample(), actor_every=1, soft_update=False)
                else:
                    for _ in range(K):
                        k = turns.next_offline_task()
                        learner.update_task(sample_task(offline, k, N), k, actor_every=1, soft_update=False)
            else:
                if t == cfg.offline_steps and cfg.offline_steps:
                    learner.hard_update_targets()  # Algorithm 1: targets ← distilled student
                    learner.reset_optimizers()  # the public code's separate online optimisers
                learner.loss.mode = "online"
                learn = t - cfg.offline_steps >= cfg.learning_starts
                if turns is None:  # Eq. 3–5: one env step per task, then foreach task k an update
                    collector.step(actor, cfg.expl_noise)
                    if learn:
                        learner.update(collector.sample())
                else:  # w/o HER: K env steps of the active task, each followed by an update on its data
                    for _ in range(K):
                        k = turns.step(actor, cfg.expl_noise)
                        if learn:
                            learner.update_task(turns.sample(k), k)
            done = t + 1
            if due(done, cfg.log_every):
                log_metrics(trun, done, learner, collector, suite, stage=stage)
            if due(done, cfg.eval_every) or done in (cfg.offline_steps, total):
                trun.evals.log(done, **eval_row(eval_env, actor, stage, EVAL_SEED + cfg.seed))
            trun.maybe_checkpoint(done, get_state, buffers)
            guard.check(done)
    summary = report(trun, cfg, suite, tdir)
    trun.finish(summary)
    for closable in (env, eval_env, turns):
        if closable is not None:
            closable.close()
    return summary


def report(trun: TrainingRun, cfg: Config, suite: Suite, tdir: Path | None) -> dict:
    """results.md columns: the teachers (Ideal), the method (all evaluations) and, with both stages, the student
    after offline (the offline stage's evaluations)."""
    rows = trun.evals.rows()
    methods = {cfg.label: rows}
    if cfg.offline_steps and cfg.online_steps:
        methods["KTM-DRL after the offline stage"] = [r for r in rows if r.get("stage") == "offline"]
    ideal = teacher_rows(tdir) if tdir else None
    summary = write_results(trun, f"{cfg.label} — {cfg.suite}, seed {cfg.seed}", suite, methods, ideal, cfg.label,
                            extra=f"\nBudget: offline {cfg.offline_steps} + online {cfg.online_steps} epochs "
                                  f"({cfg.update_schedule} updates); {cfg.eval_episodes} evaluation episodes per "
                                  f"task every {cfg.eval_every} epochs; teachers from `{tdir}`.\n")
    summary.update(label=cfg.label, offline_steps=cfg.offline_steps, online_steps=cfg.online_steps)
    return summary
