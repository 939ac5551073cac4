"""Recipe ``td3_mt``: the TD3-MT baseline of KTM-DRL Tables 1–2 — one TD3 agent (padded inputs + task one-hot)
trained on all tasks with per-task replay and the action mask ``g^k`` (as the paper ran it, §4), no teachers.

It is :class:`~tdmt.objectives.TeacherDistillTD3Loss` in ``mode="online"`` with ``alpha=0`` (Eq. 3–5 without
the teacher term). ``pcgrad=true`` gives the G-Surgery baseline: PCGrad (Yu et al. 2020) on the K per-task
critic and actor losses (:class:`tdmt.optim.PCGrad`).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    write_results,
)
from tdmt.envs import get_suite, make_env
from tdmt.modules.td3 import make_student_actor, make_student_critic
from tdmt.objectives import TeacherDistillTD3Loss
from tdmt.progress import tqdm

RECIPE = "td3_mt"


@dataclass
class Config(TD3Config):
    """TD3-MT; defaults follow KTM-DRL §4 (1M steps, 2×400, batch 256 per task, lr 3e-4) and TD3's 25k random steps."""

    steps: int = 1_000_000
    start_steps: int = 25_000
    pcgrad: bool = False
    use_onehot: bool = True

    def validate(self) -> None:
        super().validate()
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    @property
    def label(self) -> str:
        return "G-Surgery (PCGrad on TD3)" if self.pcgrad else "TD3-MT"


def per_task_mean(loss: torch.Tensor) -> torch.Tensor:
    """``[K, N]`` per-sample losses → ``[K]`` per-task losses (what PCGrad projects)."""
    return loss.mean(-1)


def run(cfg: Config) -> dict:
    """Train TD3-MT (or G-Surgery) on ``cfg.suite``; writes the standard run files and returns the summary."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    suite = get_suite(cfg.suite)
    K = suite.num_tasks
    run_dir = cfg.run_dir or default_run_dir(RECIPE, cfg.suite, cfg.seed)
    env = make_env(cfg.suite, seed=cfg.seed)
    eval_env = make_env(cfg.suite, seed=EVAL_SEED + cfg.seed, num_envs_per_task=cfg.eval_episodes)
    actor = make_student_actor(suite.obs_max, suite.act_max, K, cfg.hidden, cfg.use_onehot)
    critic = make_student_critic(suite.obs_max, suite.act_max, K, cfg.hidden, cfg.use_onehot)
    loss = TeacherDistillTD3Loss(actor, critic, None, action_masks=env.action_masks, mode="online", alpha=0.0,
                                 policy_noise=cfg.policy_noise, noise_clip=cfg.noise_clip,
                                 reduction="none" if cfg.pcgrad else "mean")
    make_value_estimator(loss, cfg.gamma)
    learner = TD3Learner(loss, cfg.lr, cfg.tau, cfg.policy_delay, cfg.precision,
                         reduce=per_task_mean if cfg.pcgrad else None, pcgrad=cfg.pcgrad)
    collector = OnlineCollector(env, cfg.buffer_size, cfg.batch_size)
    trun = TrainingRun(run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    buffers = {"replay": collector.buffer}
    start = trun.resume(learner.load_state_dict, buffers)
    with trun.guard(learner.state_dict, buffers) as guard:
        for t in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=cfg.label,
                      disable=not cfg.progress):
            collector.step(actor, cfg.expl_noise, random=t < cfg.start_steps)
            stats = learner.update(collector.sample()) if t >= cfg.start_steps else {}
            done = t + 1
            if stats and done % 1000 == 0:
                trun.metrics.log(done, **stats)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                trun.evals.log(done, **eval_row(eval_env, actor, "online", EVAL_SEED + cfg.seed))
            trun.maybe_checkpoint(done, learner.state_dict, buffers)
            guard.check(done)
    summary = write_results(trun, f"{cfg.label} — {cfg.suite}, seed {cfg.seed}", suite,
                            {cfg.label: max_average(trun.evals.rows(), suite.task_names)}, None, cfg.label)
    trun.finish(summary)
    env.close()
    eval_env.close()
    return summary
