"""Fine-tuning baseline and catastrophic forgetting (Arora et al. §4.2, Table 1; DESIGN §5).

1. Train an A2C actor-critic (the ``a2c_multitask`` networks and hyper-parameters, one task) from scratch on task
   E1 for ``source_frames`` frames.
2. Copy it (weights and observation statistics) and fine-tune on task E2 for ``target_frames`` frames, with a fresh
   RMSprop over the fine-tuned layers only. ``finetune_layers="public_code"`` (default) trains what the authors'
   code trains (``main.py --finetune``, ``keep_layers``): the actor's last hidden layer, its mean layer and log-std,
   and the critic's value head; ``"heads"`` trains only the output layers of actor and critic (the paper's text:
   "fine-tuning the last layer of the actor and critic networks"). The observation statistics keep updating on
   E2, as in the public code (they are buffers of the network there).
3. Evaluate the fine-tuned network on both tasks at every ``eval_every`` frames: E2 measures transfer; E1, the same
   network (its current weights and statistics) run on E1, measures forgetting — the paper's Table 1 E1 column.
4. ``scratch_target``: also train a policy from scratch on E2 for ``source_frames`` frames: the "Scratch" row's E2
   cell (Table 1's Scratch row holds one policy trained from scratch on each environment).

``results.md`` follows Table 1: the Scratch row (E1: the E1 policy on E1; E2: the E2 policy on E2), then one
``E1 → E2`` row per evaluation during fine-tuning. Swap ``source_task``/``target_task`` for the ``E2 → E1`` rows.

``device``, ``precision``, ``compile`` and ``cudagraphs`` reach every phase (``a2c_multitask``'s device handling);
each phase's ``model.pt`` holds CPU tensors and is read back with ``map_location="cpu"``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from tdmt import tables
from tdmt.algos import a2c_multitask
from tdmt.algos.a2c_multitask import MODEL_FILE, A2CAgent, cpu_copy, make_agent, train_a2c
from tdmt.algos.run import TrainingRun
from tdmt.config import BaseConfig
from tdmt.envs import MultiTaskEnv, get_suite, make_env
from tdmt.report import markdown_table, plot_curves, write_text


@dataclass
class Config(BaseConfig):
    """Fine-tuning E1 → E2, Arora et al. Table 1 (paper: HalfCheetahSmallFoot → HalfCheetahSmallLeg, 5M + 5M)."""

    suite: str = "halfcheetah-arora6"  # the task suite (``tdmt.envs.list_suites()``)
    source_task: str = "HalfCheetahSmallFoot"  # E1: trained from scratch
    target_task: str = "HalfCheetahSmallLeg"  # E2: fine-tuned on
    source_frames: int = 5_000_000  # frames of training on E1 (and of the scratch policy on E2) (paper: 5M)
    target_frames: int = 5_000_000  # frames of fine-tuning on E2 (paper: 5M)
    finetune_layers: Literal["public_code", "heads"] = "public_code"  # actor's last hidden + outputs, or outputs
    scratch_target: bool = True  # also train from scratch on E2: the Scratch row's E2 cell
    policy: Literal["gaussian", "tanh_normal"] = "gaussian"  # paper: unsquashed, state-independent σ; or TanhNormal
    obs_norm: bool = True  # running mean/std normalisation of observations (public code)
    num_envs_per_task: int = 16  # parallel envs
    t_max: int = 5  # rollout length of the n-step advantage
    gamma: float = 0.99  # discount
    lr: float = 7e-4  # RMSprop learning rate
    entropy_coeff: float = 0.01  # entropy bonus coefficient
    value_coeff: float = 0.5  # value loss coefficient
    max_grad_norm: float = 0.5  # gradient norm clip
    eval_every: int = 1_000_000  # frames between evaluations on both tasks (the paper reports 1M and 5M)
    eval_episodes: int = 20  # evaluation episodes per task (paper: 20 rollouts)
    log_every: int = 10_000  # frames between metrics rows
    checkpoint_every: int = 100_000  # frames between checkpoints (0: only when stopped)

    BUDGET_KEYS: ClassVar[tuple[str, ...]] = ()  # a finished phase is reloaded, not extended: budgets name the run

    def validate(self) -> None:
        super().validate()
        suite = get_suite(self.suite)
        for task in (self.source_task, self.target_task):
            suite.task(task)  # raises with the valid names
        if self.source_task == self.target_task:
            raise ValueError(f"target_task={self.target_task!r} is not valid: source_task and target_task must "
                             "differ")

    def phase(self, task: str, frames: int, run_dir: str) -> a2c_multitask.Config:
        """The A2C configuration of one phase (single task ``task``, ``frames`` frames)."""
        return a2c_multitask.Config(
            suite=self.suite, tasks=(task,), seed=self.seed, run_dir=run_dir, total_steps=frames,
            policy=self.policy, obs_norm=self.obs_norm, num_envs_per_task=self.num_envs_per_task, t_max=self.t_max,
            gamma=self.gamma, lr=self.lr, entropy_coeff=self.entropy_coeff, value_coeff=self.value_coeff,
            max_grad_norm=self.max_grad_norm, eval_every=self.eval_every, eval_episodes=self.eval_episodes,
            log_every=self.log_every, checkpoint_every=self.checkpoint_every, threads=self.threads,
            logger=self.logger, progress=self.progress, device=self.device, precision=self.precision,
            compile=self.compile, cudagraphs=self.cudagraphs)


def _train_phase(cfg: Config, task: str, frames: int, run_dir: str, eval_envs: list[MultiTaskEnv],
                 init: dict | None) -> tuple[A2CAgent, list[dict]]:
    """Train on ``task`` alone (only the fine-tuned layers when ``init`` is given), evaluating on every env of
    ``eval_envs``; a finished phase is loaded instead. Returns the agent and the phase's eval rows."""
    phase = cfg.phase(task, frames, run_dir)
    run = TrainingRun(run_dir, phase, checkpoint_every=cfg.checkpoint_every)
    env = make_env(cfg.suite, seed=cfg.seed, num_envs_per_task=cfg.num_envs_per_task, task_onehot=False,
                   tasks=[task], device=cfg.device)
    agent = make_agent(phase, env)
    if run.done:
        agent.load_state_dict(torch.load(run.dir / MODEL_FILE, map_location="cpu"))
    else:
        if init is not None:
            agent.load_state_dict(init, optimizer=False)
            agent.freeze_for_finetuning(cfg.finetune_layers)
            agent.set_optimizer([p for p in agent.loss.parameters() if p.requires_grad])
        train_a2c(agent, env, run, phase, eval_envs, desc=f"a2c on {task}")
        torch.save(cpu_copy(agent.state_dict()), run.dir / MODEL_FILE)
        run.finish({"task": task, "frames": frames})
    env.close()
    return agent, run.evals.rows()


def run(cfg: Config) -> dict:
    """Train on E1 (and from scratch on E2), fine-tune on E2, evaluate on both; returns the summary."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = cfg.resolved_run_dir()
    training = TrainingRun(run_dir, cfg)
    start = time.time()
    tasks = [cfg.source_task, cfg.target_task]
    eval_envs = [make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes, task_onehot=False,
                          tasks=[t], device=cfg.device) for t in tasks]
    source, source_rows = _train_phase(cfg, cfg.source_task, cfg.source_frames, f"{run_dir}/source",
                                       eval_envs, None)
    _, target_rows = _train_phase(cfg, cfg.target_task, cfg.target_frames, f"{run_dir}/target",
                                  eval_envs, source.state_dict())
    scratch_rows = (_train_phase(cfg, cfg.target_task, cfg.source_frames, f"{run_dir}/scratch_target",
                                 eval_envs[1:], None)[1] if cfg.scratch_target else [])
    write_text(training.dir / "results.md", _results_md(cfg, source_rows, target_rows, scratch_rows))
    shifted = [{**r, "step": float(r["step"]) + cfg.source_frames} for r in target_rows]
    plot_curves({f"{cfg.source_task} → {cfg.target_task}": [source_rows + shifted]}, tasks,
                training.dir / "curves.png", title=f"trained on {cfg.source_task}, then fine-tuned on "
                                                   f"{cfg.target_task} (from step {cfg.source_frames:,})")
    summary = {"recipe": "finetune", "suite": cfg.suite, "seed": cfg.seed, "wall_s": time.time() - start,
               **{f"source/{t}/return": float(source_rows[-1][f"eval/{t}/return"]) for t in tasks},
               **{f"finetuned/{t}/return": float(target_rows[-1][f"eval/{t}/return"]) for t in tasks}}
    if scratch_rows:
        summary[f"scratch/{cfg.target_task}/return"] = float(scratch_rows[-1][f"eval/{cfg.target_task}/return"])
    training.finish(summary)
    for env in eval_envs:
        env.close()
    return summary


def _results_md(cfg: Config, source_rows: list[dict], target_rows: list[dict], scratch_rows: list[dict]) -> str:
    """Arora Table 1's cells (:func:`tdmt.tables.task_score` ``mean_return``, as ``tdmt report --paper
    arora-table1``): each evaluation's mean ± std of the return over its episodes."""
    e1, e2 = cfg.source_task, cfg.target_task

    def cell(row: dict, task: str) -> str:
        return tables.cell(tables.Stat.of([tables.task_score([row], task, "mean_return")]),
                           tables.episode_std([row], task, "mean_return"))

    scratch_e2 = cell(scratch_rows[-1], e2) if scratch_rows else "—"
    rows = [["Scratch", f"{cfg.source_frames:,}", cell(source_rows[-1], e1), scratch_e2]]
    rows += [["E1 → E2", f"{int(float(r['step'])):,}", cell(r, e1), cell(r, e2)] for r in target_rows]
    table = markdown_table(["Training", "Frames", f"E1 = {e1}", f"E2 = {e2}"], rows)
    return (f"# Fine-tuning {e1} → {e2} — {cfg.suite}\n\nMean ± std of the return over {cfg.eval_episodes} "
            f"evaluation episodes (deterministic policy). Paper Table 1 layout: the Scratch row holds a policy "
            f"trained from scratch on each task ({cfg.source_frames:,} frames), evaluated on its own task; the "
            f"E1 → E2 rows evaluate the network fine-tuned on E2 ({cfg.finetune_layers} layers) on both tasks: "
            f"its E1 column measures forgetting.\n\n{table}")
