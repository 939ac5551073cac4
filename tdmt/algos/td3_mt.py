"""Recipe ``td3_mt``: the TD3-MT baseline of KTM-DRL Tables 1–2 — one TD3 agent (padded inputs) trained on all tasks
with per-task replay and the action mask ``g^k`` (as the paper ran it, §4), no teachers.

It is :class:`~tdmt.objectives.TeacherDistillTD3Loss` in ``mode="online"`` with ``alpha=0`` (Eq. 3–5 without
the teacher term), with KTM-DRL's schedule: per epoch one env step per task, then ``update_schedule=per_task``
(default: K sequential per-task updates) or ``batched`` (one update on the ``[K, N]`` batch).

``pcgrad=true`` gives the G-Surgery baseline: PCGrad (Yu et al. 2020) on the K per-task critic and actor losses
(:class:`tdmt.optim.PCGrad`). PCGrad projects each task's gradient onto the others' *within one update*, so it
needs all K task gradients at once: G-Surgery is one batched update per epoch (``update_schedule=batched``); with
``per_task`` each update sees one task and there is nothing to project, so that combination is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tdmt.algos.run import TrainingRun
from tdmt.algos.td3_common import (
    EVAL_SEED,
    OnlineCollector,
    TD3Config,
    TD3Learner,
    build_learner,
    due,
    eval_row,
    log_metrics,
    write_results,
)
from tdmt.envs import Suite, get_suite, make_env
from tdmt.modules.td3 import make_student_actor, make_student_critic
from tdmt.objectives import TeacherDistillTD3Loss
from tdmt.progress import tqdm
from tdmt.report import method_name

RECIPE = "td3_mt"


@dataclass
class Config(TD3Config):
    """TD3-MT / G-Surgery; defaults follow KTM-DRL §4 (1M steps, 2×400, batch 256 per task, lr 3e-4, per-task
    updates, padded state input) and TD3's 25k random steps."""

    total_steps: int = 1_000_000  # epochs: one env step per task each
    start_steps: int = 25_000  # epochs of uniform random actions before the first update (TD3)
    pcgrad: bool = False  # G-Surgery: PCGrad on the K per-task losses (needs update_schedule=batched)
    use_onehot: bool = False  # append the task one-hot to the input (tdmt option; KTM-DRL: padded state only)
    update_schedule: Literal["per_task", "batched"] = "per_task"  # per_task: K updates per epoch (Algorithm 1)

    def validate(self) -> None:
        super().validate()
        if self.pcgrad and self.update_schedule != "batched":
            raise ValueError(f"update_schedule={self.update_schedule!r} with pcgrad=true is not valid; valid: "
                             "batched (PCGrad projects the K task gradients of one update onto each other)")
        if self.pcgrad and self.cudagraphs:
            raise ValueError("cudagraphs=true with pcgrad=true is not valid; valid: cudagraphs=false (PCGrad draws "
                             "its projection order on the host, which a captured graph would replay unchanged)")
        if self.pcgrad and self.compile:
            raise ValueError("compile=true with pcgrad=true is not valid; valid: compile=false (PCGrad's batched "
                             "per-task backward fails in compiled graphs with torch 2.13)")

    @property
    def label(self) -> str:
        """The method's name in the results tables (KTM-DRL Tables 1–2: "TD3-MT", "G-Surgery")."""
        return method_name(RECIPE, self)


def per_task_mean(loss: torch.Tensor) -> torch.Tensor:
    """``[K, N]`` per-sample losses → ``[K]`` per-task losses (what PCGrad projects)."""
    return loss.mean(-1)


def build_agent(cfg: Config, suite: Suite, masks: torch.Tensor) -> TD3Learner:
    """One TD3 agent for every task (padded inputs; Eq. 3–5 with ``alpha=0``), with PCGrad on the K per-task losses
    for G-Surgery, on the training device."""
    K = suite.num_tasks
    actor = make_student_actor(suite.obs_max, suite.act_max, K, cfg.hidden, cfg.use_onehot)
    critic = make_student_critic(suite.obs_max, suite.act_max, K, cfg.hidden, cfg.use_onehot)
    loss = TeacherDistillTD3Loss(actor, critic, None, action_masks=masks, mode="online", alpha=0.0,
                                 policy_noise=cfg.policy_noise, noise_clip=cfg.noise_clip,
                                 reduction="none" if cfg.pcgrad else "mean")
    return build_learner(loss, cfg, reduce=per_task_mean if cfg.pcgrad else None, pcgrad=cfg.pcgrad,
                         schedule=cfg.update_schedule)


def run(cfg: Config) -> dict:
    """Train TD3-MT (or G-Surgery) on ``cfg.suite``; writes the standard run files and returns the summary."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    suite = get_suite(cfg.suite)
    env = make_env(cfg.suite, seed=cfg.seed, device=cfg.device)  # envs step on the host, hand over on the device
    eval_env = make_env(cfg.suite, seed=EVAL_SEED + cfg.seed, num_envs_per_task=cfg.eval_episodes, device=cfg.device)
    learner = build_agent(cfg, suite, env.action_masks)
    actor = learner.loss.actor_network
    run_dir = cfg.resolved_run_dir()
    collector = OnlineCollector(env, cfg.buffer_size_per_task, cfg.batch_size_per_task, **cfg.replay_options(run_dir))
    trun = TrainingRun(run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    buffers = {"replay": collector.buffer}
    start = trun.resume(learner.load_state_dict, buffers)
    with trun.guard(learner.state_dict, buffers) as guard:
        for t in tqdm(range(start, cfg.total_steps), initial=start, total=cfg.total_steps, desc=cfg.label,
                      disable=not cfg.progress):
            collector.step(actor, cfg.expl_noise, random=t < cfg.start_steps)
            if t >= cfg.start_steps:
                learner.update(collector.sample())
            done = t + 1
            if due(done, cfg.log_every):
                log_metrics(trun, done, learner, collector, suite)
            if due(done, cfg.eval_every) or done == cfg.total_steps:
                trun.evals.log(done, **eval_row(eval_env, actor, "online", EVAL_SEED + cfg.seed))
            trun.maybe_checkpoint(done, learner.state_dict, buffers)
            guard.check(done)
    summary = write_results(trun, f"{cfg.label} — {cfg.suite}, seed {cfg.seed}", suite,
                            {cfg.label: trun.evals.rows()}, None, cfg.label)
    trun.finish(summary)
    env.close()
    eval_env.close()
    return summary
