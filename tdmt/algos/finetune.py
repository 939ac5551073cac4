"""Fine-tuning baseline and catastrophic forgetting (Arora et al. §4.2, Table 1; DESIGN §5).

1. Train an A2C actor-critic (2×64 / 3×64, the ``a2c_multitask`` hyper-parameters) from scratch on task E1.
2. Copy it and fine-tune only the last layer of the actor and of the critic on task E2 (the hidden layers are
   frozen; a fresh RMSprop).
3. Evaluate on both tasks along the way: E2 measures transfer, E1 measures forgetting.

``results.md`` follows the paper's Table 1: one row for the policy trained on E1 and one row per evaluation
during fine-tuning (``E1 → E2`` after so many frames), each with the mean ± std return on E1 and on E2.
Swap ``source_task``/``target_task`` for the ``E2 → E1`` rows.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from tdmt.algos import a2c_multitask
from tdmt.algos.a2c_multitask import MODEL_FILE, A2CAgent, default_run_dir, format_cell, make_agent, train_a2c
from tdmt.algos.run import TrainingRun
from tdmt.envs import MultiTaskEnv, get_suite, make_env
from tdmt.report import markdown_table, plot_curves, write_text


@dataclass
class Config:
    """Fine-tuning E1 → E2 (paper: HalfCheetahSmallFoot → HalfCheetahSmallLeg, 5M + 5M frames)."""

    suite: str = "halfcheetah-arora6"
    source_task: str = "HalfCheetahSmallFoot"
    target_task: str = "HalfCheetahSmallLeg"
    seed: int = 0
    run_dir: str = ""
    source_frames: int = 5_000_000
    target_frames: int = 5_000_000
    num_envs_per_task: int = 16
    t_max: int = 5
    gamma: float = 0.99
    lr: float = 7e-4
    entropy_coeff: float = 0.01
    value_coeff: float = 0.5
    max_grad_norm: float = 0.5
    eval_every: int = 1_000_000  # frames between evaluations on both tasks (the paper reports 1M and 5M)
    eval_episodes: int = 20
    log_every: int = 10_000
    checkpoint_every: int = 100_000
    threads: int = 1

    def validate(self) -> None:
        if self.source_task == self.target_task:
            raise ValueError(f"source_task and target_task must differ, both are {self.source_task!r}")
        for name in ("source_frames", "target_frames", "num_envs_per_task", "t_max", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def phase(self, task: str, frames: int, run_dir: str) -> a2c_multitask.Config:
        """The A2C configuration of one phase (single task ``task``, ``frames`` frames)."""
        return a2c_multitask.Config(
            suite=self.suite, tasks=(task,), seed=self.seed, run_dir=run_dir, frames_per_task=frames,
            num_envs_per_task=self.num_envs_per_task, t_max=self.t_max, gamma=self.gamma, lr=self.lr,
            entropy_coeff=self.entropy_coeff, value_coeff=self.value_coeff, max_grad_norm=self.max_grad_norm,
            eval_every=self.eval_every, eval_episodes=self.eval_episodes, log_every=self.log_every,
            checkpoint_every=self.checkpoint_every, threads=self.threads)


def _train_phase(cfg: Config, task: str, frames: int, run_dir: str, eval_envs: list[MultiTaskEnv],
                 init: dict | None) -> tuple[A2CAgent, list[dict]]:
    """Train on ``task`` alone (heads only when ``init`` is given), evaluating on every env of ``eval_envs``;
    a finished phase is loaded instead. Returns the agent and the phase's eval rows."""
    phase = cfg.phase(task, frames, run_dir)
    run = TrainingRun(run_dir, phase, checkpoint_every=cfg.checkpoint_every)
    env = make_env(cfg.suite, seed=cfg.seed, num_envs_per_task=cfg.num_envs_per_task, task_onehot=False,
                   tasks=[task])
    agent = make_agent(phase, env)
    if run.done:
        agent.load_state_dict(torch.load(run.dir / MODEL_FILE))
    else:
        if init is not None:
            agent.load_state_dict(init, optimizer=False)
            agent.train_only_heads()
        train_a2c(agent, env, run, phase, eval_envs, desc=f"a2c on {task}")
        torch.save(agent.state_dict(), run.dir / MODEL_FILE)
        run.finish({"task": task, "frames": frames})
    env.close()
    return agent, run.evals.rows()


def run(cfg: Config) -> dict:
    """Train on E1, fine-tune the last layers on E2, evaluate on both; returns the summary."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg = dataclasses.replace(cfg, run_dir=default_run_dir("finetune", cfg.suite, cfg.seed, cfg.run_dir))
    for task in (cfg.source_task, cfg.target_task):
        get_suite(cfg.suite).task(task)  # raises with the valid names
    training = TrainingRun(cfg.run_dir, cfg)
    start = time.time()
    tasks = [cfg.source_task, cfg.target_task]
    eval_envs = [make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes, task_onehot=False,
                          tasks=[t]) for t in tasks]
    source, source_rows = _train_phase(cfg, cfg.source_task, cfg.source_frames, f"{cfg.run_dir}/source",
                                       eval_envs, None)
    _, target_rows = _train_phase(cfg, cfg.target_task, cfg.target_frames, f"{cfg.run_dir}/target",
                                  eval_envs, source.state_dict())
    write_text(training.dir / "results.md", _results_md(cfg, source_rows, target_rows))
    shifted = [{**r, "step": float(r["step"]) + cfg.source_frames} for r in target_rows]
    plot_curves({f"{cfg.source_task} → {cfg.target_task}": [source_rows + shifted]}, tasks,
                training.dir / "curves.png", title=f"trained on {cfg.source_task}, then last layers on "
                                                   f"{cfg.target_task} (from step {cfg.source_frames:,})")
    summary = {"recipe": "finetune", "suite": cfg.suite, "seed": cfg.seed, "wall_s": time.time() - start,
               **{f"source/{t}/return": float(source_rows[-1][f"eval/{t}/return"]) for t in tasks},
               **{f"finetuned/{t}/return": float(target_rows[-1][f"eval/{t}/return"]) for t in tasks}}
    training.finish(summary)
    for env in eval_envs:
        env.close()
    return summary


def _results_md(cfg: Config, source_rows: list[dict], target_rows: list[dict]) -> str:
    e1, e2 = cfg.source_task, cfg.target_task

    def cells(row: dict) -> list[str]:
        return [format_cell(float(row[f"eval/{t}/return"]), float(row[f"eval/{t}/return_std"])) for t in (e1, e2)]

    rows = [["Scratch on E1", f"{cfg.source_frames:,}", *cells(source_rows[-1])]]
    rows += [["E1 → E2", f"{int(float(r['step'])):,}", *cells(r)] for r in target_rows]
    table = markdown_table(["Training", "Frames", f"E1 = {e1}", f"E2 = {e2}"], rows)
    return (f"# Fine-tuning {e1} → {e2} — {cfg.suite}\n\nMean ± std of the return over {cfg.eval_episodes} "
            f"evaluation episodes (deterministic policy). Paper Table 1 layout: E1 after fine-tuning measures "
            f"forgetting; E2 in the first row is zero-shot transfer.\n\n{table}")
