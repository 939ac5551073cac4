"""Vanilla multi-task A2C with a multi-head actor and critic (Arora et al. §3.1.2, §3.1.4, §4.3.1; DESIGN §5).

Every head i is trained with A2C on its own task E_i. With ``t_max``-step rollouts of E envs per task the n-step
advantage (Eq. 3) is

    A(s_t, a_t) = Σ_{j<k} γ^j r_{t+j} + γ^k V(s_{t+k}) − V(s_t),   k = t_max − t (bootstrapped at the rollout end),

(TorchRL's ``TD1`` estimator on the rollout) and the loss is TorchRL's ``A2CLoss``:
``−log π(a|s) A − c_H H[π(·|s)] + c_V (V(s) − R)²`` with c_H = 0.01, c_V = 0.5, RMSprop (lr 7e-4), gradient
norm clipped at 0.5. Actor 2×64 and critic 3×64 hidden layers (tanh), shared by all tasks, one output head per
task (:mod:`tdmt.modules.multihead`).

Task schedule (``update``):

* ``"cycle"`` (paper): tasks are cycled; task i's rollout updates head i and the shared layers, then task i+1's…,
  so every head gets the same number of frames. The K rollouts are collected together in one batched env step
  (the trunk then changes between the K updates, so later tasks' data is up to K−1 updates stale, as in A3C).
  An update on task i leaves the other heads' parameters *and* their RMSprop statistics untouched, as if each
  head were a separate layer.
* ``"joint"``: one update on the mean of all tasks' losses (faster; same frames per head).

``architecture="independent"`` makes the hidden layers per-task too: K separate single-task A2C agents trained as
one batched model — the paper's "Scratch" baseline and its A2C teachers for distillation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import A2CLoss, ValueEstimators

from tdmt.algos.run import TrainingRun
from tdmt.envs import MultiTaskEnv, make_env
from tdmt.eval import EvalResult, evaluate
from tdmt.modules.multihead import MultiHeadMLP, actor_net, make_gaussian_actor, make_value_critic
from tdmt.progress import tqdm
from tdmt.report import markdown_table, plot_curves, write_text

MODEL_FILE = "model.pt"


@dataclass
class Config:
    """Multi-head A2C (paper defaults: 1M frames per head on the six HalfCheetah variants)."""

    suite: str = "halfcheetah-arora6"
    tasks: tuple[str, ...] = ()  # a subset of the suite's tasks (task ids follow this order); empty: all
    seed: int = 0
    run_dir: str = ""
    architecture: Literal["multihead", "independent"] = "multihead"
    update: Literal["cycle", "joint"] = "cycle"
    frames_per_task: int = 1_000_000
    num_envs_per_task: int = 16
    t_max: int = 5
    gamma: float = 0.99
    lr: float = 7e-4
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 1e-5
    entropy_coeff: float = 0.01
    value_coeff: float = 0.5
    max_grad_norm: float = 0.5
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64, 64)
    eval_every: int = 100_000  # frames per task between evaluations (0: only at the end)
    eval_episodes: int = 20
    log_every: int = 10_000  # frames per task between metrics rows
    checkpoint_every: int = 100_000  # frames per task between checkpoints (0: none)
    threads: int = 1

    def validate(self) -> None:
        for name in ("frames_per_task", "num_envs_per_task", "t_max", "eval_episodes", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.actor_hidden or not self.critic_hidden:
            raise ValueError("actor_hidden and critic_hidden need at least one layer")

    @property
    def label(self) -> str:
        return "Vanilla multi-task" if self.architecture == "multihead" else "Scratch"


def default_run_dir(recipe: str, suite: str, seed: int, run_dir: str) -> str:
    return run_dir or f"runs/{recipe}/{suite}/seed{seed}"


def step_keeping_other_rows(optim: torch.optim.Optimizer, stacked: Sequence[torch.Tensor], task: int) -> None:
    """Optimizer step after an update on task ``task`` alone, as if each task's rows were a separate layer.

    Rows ≠ ``task`` of the ``[K, ...]`` parameters in ``stacked`` have zero gradient; a stacked optimizer would
    still decay their statistics (RMSprop's ``square_avg``) or move them by momentum (Adam). Those rows and their
    per-element optimizer state are restored after the step.
    """
    saved = []
    with torch.no_grad():
        for p in stacked:
            others = torch.arange(p.shape[0], device=p.device) != task
            tensors = [p] + [v for v in optim.state.get(p, {}).values() if torch.is_tensor(v) and v.shape == p.shape]
            saved += [(t, others, t[others].clone()) for t in tensors]
        optim.step()
        for tensor, others, rows in saved:
            tensor[others] = rows


class A2CAgent:
    """Multi-head (or K independent) Gaussian actor + value critic trained with TorchRL's ``A2CLoss``."""

    def __init__(self, num_tasks: int, obs_dim: int, act_dim: int, cfg: Config, action_spec=None):
        shared = cfg.architecture == "multihead"
        self.actor = make_gaussian_actor(num_tasks, obs_dim, act_dim, cfg.actor_hidden, shared, action_spec=action_spec)
        self.critic = make_value_critic(num_tasks, obs_dim, cfg.critic_hidden, shared)
        self.loss = A2CLoss(self.actor, self.critic, entropy_coeff=cfg.entropy_coeff, critic_coeff=cfg.value_coeff,
                            loss_critic_type="l2")
        self.loss.make_value_estimator(ValueEstimators.TD1, gamma=cfg.gamma)
        self.max_grad_norm = cfg.max_grad_norm
        self.optim = torch.optim.RMSprop(self.loss.parameters(), lr=cfg.lr, alpha=cfg.rmsprop_alpha,
                                         eps=cfg.rmsprop_eps)
        self.nets: list[MultiHeadMLP] = [actor_net(self.actor), self.critic.module]
        self.num_tasks = num_tasks

    def train_only_heads(self) -> None:
        """Freeze everything but the last layer of actor and critic (the fine-tuning baseline, paper §4.2)."""
        for net in self.nets:
            for p in net.trunk.parameters():
                p.requires_grad_(False)

    def update(self, batch: TensorDictBase, task: int | None = None) -> dict[str, float]:
        """One A2C step on a ``[..., T]`` rollout (time last): of task ``task`` alone, or of every task."""
        losses = self.loss(batch)
        total = losses["loss_objective"] + losses["loss_entropy"] + losses["loss_critic"]
        self.optim.zero_grad(set_to_none=True)
        total.backward()
        params = [p for group in self.optim.param_groups for p in group["params"] if p.requires_grad]
        grad_norm = nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if task is None:
            self.optim.step()
        else:
            step_keeping_other_rows(self.optim, [p for net in self.nets for p in net.stacked_parameters()], task)
        return {"loss_objective": losses["loss_objective"].item(), "loss_critic": losses["loss_critic"].item(),
                "entropy": losses["entropy"].item(), "grad_norm": grad_norm.item()}

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(), "optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict, optimizer: bool = True) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        if optimizer:
            self.optim.load_state_dict(state["optim"])


class Rollouts:
    """Steps a multi-task env ``t_max`` steps at a time, carrying the state across calls; tracks episode returns."""

    def __init__(self, env: MultiTaskEnv):
        self.env = env
        self.td = env.reset()
        self.episode_return = torch.zeros(env.batch_size)
        self.finished: list[list[float]] = [[] for _ in range(env.suite.num_tasks)]

    @torch.no_grad()
    def collect(self, policy: Callable[[TensorDictBase], TensorDictBase], t_max: int) -> TensorDictBase:
        """A ``[*env.batch_size, t_max]`` rollout of ``policy`` (sampling actions)."""
        steps = []
        with set_exploration_type(ExplorationType.RANDOM):
            for _ in range(t_max):
                td, self.td = self.env.step_and_maybe_reset(policy(self.td))
                steps.append(td)
                self._track(td)
        return torch.stack(steps, -1).contiguous()

    def _track(self, td: TensorDictBase) -> None:
        self.episode_return += td.get(("next", "reward")).squeeze(-1)
        done = td.get(("next", "done")).squeeze(-1)
        if done.any():
            task_ids = td.get("task_id")[done].tolist()
            for k, ret in zip(task_ids, self.episode_return[done].tolist()):
                self.finished[k].append(ret)
            self.episode_return[done] = 0.0

    def pop_returns(self, task_names: Sequence[str], prefix: str = "train") -> dict[str, float]:
        """Mean return of the episodes finished since the last call, per task (tasks with none are left out)."""
        row = {f"{prefix}/{name}/return": sum(r) / len(r) for name, r in zip(task_names, self.finished) if r}
        self.finished = [[] for _ in self.finished]
        return row


def eval_row(results: Sequence[EvalResult]) -> dict[str, float]:
    row: dict[str, float] = {}
    for res in results:
        row.update({k: v for k, v in res.as_row().items() if not k.endswith("mean_return")})
    returns = [r for res in results for r in res.return_mean]
    row["eval/mean_return"] = sum(returns) / len(returns)
    return row


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(before, after]``."""
    return every > 0 and after // every > before // every


def train_a2c(agent: A2CAgent, env: MultiTaskEnv, run: TrainingRun, cfg: Config, eval_envs: Sequence[MultiTaskEnv],
              desc: str) -> list[EvalResult]:
    """The A2C loop: rollouts, per-task (or joint) updates, logs, evals, checkpoints; returns the final evals."""
    frames = first = run.resume(lambda s: agent.load_state_dict(s["agent"]))
    rollouts = Rollouts(env)
    per_iter = cfg.t_max * cfg.num_envs_per_task
    task_names = env.suite.task_names
    get_state = lambda: {"agent": agent.state_dict()}  # noqa: E731
    stats: dict[str, float] = {}
    start = time.time()
    with run.guard(get_state) as guard, tqdm(total=cfg.frames_per_task, initial=frames, desc=desc) as bar:
        while frames < cfg.frames_per_task:
            batch = rollouts.collect(agent.actor, cfg.t_max)
            if cfg.update == "cycle":
                for k in range(env.suite.num_tasks):
                    stats = agent.update(batch[k], task=k)
            else:
                stats = agent.update(batch)
            before, frames = frames, frames + per_iter
            bar.update(per_iter)
            if crossed(before, frames, cfg.log_every):
                run.metrics.log(frames, **stats, **rollouts.pop_returns(task_names),
                                fps=(frames - first) * env.suite.num_tasks / max(time.time() - start, 1e-9))
            if crossed(before, frames, cfg.eval_every) and frames < cfg.frames_per_task:
                run.evals.log(frames, **eval_row([evaluate(e, agent.actor) for e in eval_envs]))
            if crossed(before, frames, cfg.checkpoint_every):
                run.save(frames, get_state)
            guard.check(frames)
    results = [evaluate(e, agent.actor) for e in eval_envs]
    run.evals.log(frames, **eval_row(results))
    return results


def make_agent(cfg: Config, env: MultiTaskEnv) -> A2CAgent:
    suite = env.suite
    return A2CAgent(suite.num_tasks, suite.obs_max, suite.act_max, cfg, env.action_spec)


def format_cell(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def table2(task_names: Sequence[str], columns: dict[str, tuple[EvalResult, str]]) -> str:
    """Paper Table 2 layout: one row per task, columns Scratch / Distillation / Vanilla multi-task.

    ``columns`` maps a column label to ``(result, budget text)``; columns this run did not compute show "—".
    """
    labels = ["Scratch", "Distillation multi-task", "Vanilla multi-task"]
    labels += [label for label in columns if label not in labels]
    header = ["Environment"] + [f"{label} ({columns[label][1]})" if label in columns else label for label in labels]
    rows = []
    for k, name in enumerate(task_names):
        row = [name]
        for label in labels:
            res = columns.get(label, (None, ""))[0]
            row.append(format_cell(res.return_mean[k], res.return_std[k]) if res is not None else "—")
        rows.append(row)
    return markdown_table(header, rows)


def frames_text(frames: int) -> str:
    return f"{frames / 1e6:g}M frames" if frames >= 100_000 else f"{frames:,} frames"


def write_report(run: TrainingRun, title: str, table: str, task_names: Sequence[str], notes: str = "") -> None:
    """``results.md`` (title, table, notes) and ``curves.png`` (eval returns over frames per task)."""
    write_text(run.dir / "results.md", f"# {title}\n\nMean ± std of the return over evaluation episodes (deterministic "
                                       f"policy).\n\n{table}\n{notes}")
    plot_curves({title: [run.evals.rows()]}, task_names, run.dir / "curves.png", title=title)


def run(cfg: Config) -> dict:
    """Train multi-head (or independent) A2C on ``cfg.suite``; writes the run folder and returns the summary."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg = dataclasses.replace(cfg, run_dir=default_run_dir("a2c_multitask", cfg.suite, cfg.seed, cfg.run_dir))
    training = TrainingRun(cfg.run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    tasks = list(cfg.tasks) or None
    env = make_env(cfg.suite, seed=cfg.seed, num_envs_per_task=cfg.num_envs_per_task, task_onehot=False, tasks=tasks)
    eval_env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes, task_onehot=False,
                        tasks=tasks)
    agent = make_agent(cfg, env)
    start = time.time()
    (result,) = train_a2c(agent, env, training, cfg, [eval_env], desc=f"a2c {cfg.architecture}")
    torch.save(agent.state_dict(), training.dir / MODEL_FILE)
    table = table2(result.task_names, {cfg.label: (result, f"{frames_text(cfg.frames_per_task)} per task")})
    write_report(training, f"A2C {cfg.label} — {cfg.suite}", table, result.task_names)
    summary = {"recipe": "a2c_multitask", "suite": cfg.suite, "seed": cfg.seed, "frames_per_task": cfg.frames_per_task,
               "wall_s": time.time() - start, **eval_row([result])}
    training.finish(summary)
    env.close()
    eval_env.close()
    return summary
