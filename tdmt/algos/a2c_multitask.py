"""Vanilla multi-task A2C with a multi-head actor and critic (Arora et al. §3.1.2, §3.1.4, §4.3.1; DESIGN §5).

Every head i is trained with A2C on its own task E_i. With ``t_max``-step rollouts of E envs per task the n-step
advantage (Eq. 3) is

    A(s_t, a_t) = Σ_{j<k} γ^j r_{t+j} + γ^k V(s_{t+k}) − V(s_t),   k = t_max − t (bootstrapped at the rollout end),

(TorchRL's ``TD1`` estimator on the rollout) and the loss is TorchRL's ``A2CLoss``:
``−log π(a|s) A − c_H H[π(·|s)] + c_V (V(s) − R)²`` with c_H = 0.01, c_V = 0.5, RMSprop (lr 7e-4, α 0.99,
ε 1e-5), gradient norm clipped at 0.5. On padded suites log π and H count only each task's real action dims.

What the paper and its public code (jasonkrone/elen6885-final-project) run, and the defaults here:

* policy (``policy="gaussian"``): an unsquashed Gaussian, mean from the actor (2×64 tanh, hidden layers shared
  by all tasks, one mean head per task, mean layer init ×0.01), one learned state-independent log-std per task and
  action dim (σ = 1 at start), exact entropy; the env clips the executed action to [-1, 1].
  ``policy="tanh_normal"`` is tdmt's earlier policy (TanhNormal, state-dependent σ, Monte-Carlo entropy).
* critic: 3 FC layers (two 64-unit tanh hidden layers and the value head); in vanilla multi-task only the first
  hidden layer is shared (§3.1.4: "one shared hidden layer and n output heads"), ``critic_shared_layers=1``.
* observations normalised by running per-task statistics, clipped at 5 (``obs_norm``, the public code's
  ``ObsNorm``; :class:`~tdmt.envs.TaskObservationNorm`), saved with the agent, frozen in evaluation envs.

Task schedule (``update``):

* ``"cycle"`` (paper): tasks are cycled; task i's rollout updates head i and the shared layers, then task i+1's…,
  so every head gets the same number of frames. The K rollouts are collected together in one batched env step
  (the trunk then changes between the K updates, so later tasks' data is up to K−1 updates stale, as in A3C).
  An update on task i leaves the other heads' parameters *and* their RMSprop statistics untouched, as if each
  head were a separate layer.
* ``"joint"``: one update on the mean of all tasks' losses (faster; same frames per head).

``architecture="independent"`` makes every layer per-task: K separate single-task A2C agents trained as one
batched model — the paper's "Scratch" baseline and its A2C teachers for distillation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs import EnvBase, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import A2CLoss, ValueEstimators

from tdmt.algos.run import TrainingRun
from tdmt.config import BaseConfig
from tdmt.envs import MultiTaskEnv, TaskObservationNorm, get_suite, make_env
from tdmt.eval import EvalResult, evaluate
from tdmt.modules.multihead import (
    MultiHeadMLP,
    actor_log_std,
    actor_net,
    actor_stacked_parameters,
    make_gaussian_actor,
    make_value_critic,
)
from tdmt.progress import tqdm
from tdmt.report import markdown_table, plot_curves, write_text

MODEL_FILE = "model.pt"


@dataclass
class Config(BaseConfig):
    """Multi-head A2C, Arora et al. (paper defaults: 1M frames per head on the six HalfCheetah variants)."""

    suite: str = "halfcheetah-arora6"  # the task suite (``tdmt.envs.list_suites()``)
    tasks: tuple[str, ...] = ()  # a subset of the suite's tasks (task ids follow this order); empty: all
    architecture: Literal["multihead", "independent"] = "multihead"  # shared hidden layers, or K separate networks
    update: Literal["cycle", "joint"] = "cycle"  # cycle: one update per task in turn (paper); joint: one on all
    policy: Literal["gaussian", "tanh_normal"] = "gaussian"  # paper: unsquashed, state-independent σ; or TanhNormal
    obs_norm: bool = True  # running per-task mean/std normalisation of observations (public code)
    obs_clip: float = 5.0  # normalised observations are clipped to [-obs_clip, obs_clip] (public code: 5)
    total_steps: int = 1_000_000  # frames per task (paper: 1M per head)
    num_envs_per_task: int = 16  # parallel envs per task (public code: 16 processes)
    t_max: int = 5  # rollout length of the n-step advantage
    gamma: float = 0.99  # discount
    lr: float = 7e-4  # RMSprop learning rate
    rmsprop_alpha: float = 0.99  # RMSprop smoothing constant
    rmsprop_eps: float = 1e-5  # RMSprop epsilon
    entropy_coeff: float = 0.01  # entropy bonus coefficient c_H
    value_coeff: float = 0.5  # value loss coefficient c_V
    max_grad_norm: float = 0.5  # gradient norm clip
    actor_hidden: tuple[int, ...] = (64, 64)  # actor hidden layers (paper: 2×64)
    critic_hidden: tuple[int, ...] = (64, 64)  # critic hidden layers; with the value head, 3 FC layers (paper)
    critic_shared_layers: int = 1  # leading critic hidden layers shared by all tasks (paper §3.1.4: one)
    eval_every: int = 100_000  # frames per task between evaluations (0: only at the end)
    eval_episodes: int = 20  # evaluation episodes per task (paper: 20 rollouts)
    log_every: int = 10_000  # frames per task between metrics rows
    checkpoint_every: int = 100_000  # frames per task between checkpoints (0: only when stopped)

    RANGES: ClassVar[dict[str, str]] = {"obs_clip": "> 0", "critic_shared_layers": ">= 0",
                                        "actor_hidden": "non-empty sizes >= 1", "critic_hidden": "non-empty sizes >= 1"}

    def validate(self) -> None:
        super().validate()
        if self.critic_shared_layers > len(self.critic_hidden):
            raise ValueError(f"critic_shared_layers={self.critic_shared_layers} is out of range; valid: 0.."
                             f"{len(self.critic_hidden)} (the number of critic_hidden layers)")

    @property
    def label(self) -> str:
        return "Vanilla multi-task" if self.architecture == "multihead" else "Scratch"


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


FINETUNE_LAYERS = ("public_code", "heads")


class A2CAgent:
    """Multi-head (or K independent) Gaussian actor + value critic trained with TorchRL's ``A2CLoss``, and the
    per-task observation statistics (``obs_norm``) its networks read through."""

    def __init__(self, num_tasks: int, obs_dim: int, act_dims: Sequence[int], cfg: Config, action_spec=None):
        shared = cfg.architecture == "multihead"
        act_max = max(act_dims)
        self.actor = make_gaussian_actor(num_tasks, obs_dim, act_max, cfg.actor_hidden, shared,
                                         action_spec=action_spec, distribution=cfg.policy, act_dims=act_dims)
        self.critic = make_value_critic(num_tasks, obs_dim, cfg.critic_hidden, shared,
                                        shared_layers=cfg.critic_shared_layers if shared else 0)
        self.obs_norm = TaskObservationNorm(num_tasks, obs_dim, cfg.obs_clip) if cfg.obs_norm else None
        self.loss = A2CLoss(self.actor, self.critic, entropy_coeff=cfg.entropy_coeff, critic_coeff=cfg.value_coeff,
                            loss_critic_type="l2")
        self.loss.make_value_estimator(ValueEstimators.TD1, gamma=cfg.gamma)
        self.max_grad_norm = cfg.max_grad_norm
        self.optim = torch.optim.RMSprop(self.loss.parameters(), lr=cfg.lr, alpha=cfg.rmsprop_alpha,
                                         eps=cfg.rmsprop_eps)
        self.nets: list[MultiHeadMLP] = [actor_net(self.actor), self.critic.module]
        self.stacked = actor_stacked_parameters(self.actor) + self.critic.module.stacked_parameters()
        self.num_tasks = num_tasks

    def wrap(self, env: EnvBase, evaluation: bool = False) -> EnvBase:
        """``env`` seen through the agent's observation normalisation (frozen statistics if ``evaluation``)."""
        if self.obs_norm is None:
            return env
        return TransformedEnv(env, self.obs_norm.frozen() if evaluation else self.obs_norm)

    def freeze_for_finetuning(self, layers: str = "public_code") -> None:
        """Train only the fine-tuned layers (paper §4.2, Table 1); every other parameter is frozen.

        ``"public_code"`` (default): the actor's last hidden layer, its mean head and log-std, and the critic's value
        head (the authors' ``keep_layers``: ``a_fc2``, ``dist.fc_mean``, ``dist.logstd``, ``v_fc3``).
        ``"heads"``: only the output layers of actor and critic (the paper's text, "the last layer").
        """
        if layers not in FINETUNE_LAYERS:
            raise ValueError(f"finetune_layers={layers!r} is not valid; valid: {list(FINETUNE_LAYERS)}")
        actor, critic = self.nets
        for p in [*actor.trunk.parameters(), *critic.trunk.parameters()]:
            p.requires_grad_(False)
        if layers == "public_code":
            for p in actor.trunk[-1].parameters():
                p.requires_grad_(True)

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
            step_keeping_other_rows(self.optim, self.stacked, task)
        stats = {"loss_objective": losses["loss_objective"].item(), "loss_critic": losses["loss_critic"].item(),
                 "entropy": losses["entropy"].item(), "grad_norm": grad_norm.item()}
        log_std = actor_log_std(self.actor)
        if log_std is not None:
            stats["sigma"] = log_std.detach().exp().mean().item()
        return stats

    def state_dict(self) -> dict:
        state = {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(), "optim": self.optim.state_dict()}
        if self.obs_norm is not None:
            state["obs_norm"] = self.obs_norm.state_dict()
        return state

    def load_state_dict(self, state: dict, optimizer: bool = True) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        if self.obs_norm is not None:
            self.obs_norm.load_state_dict(state["obs_norm"])
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
    """The A2C loop: rollouts, per-task (or joint) updates, logs, evals, checkpoints; returns the final evals.

    ``env`` and ``eval_envs`` are plain multi-task envs: the agent's observation normalisation is applied here
    (updated by the training env, frozen in the evaluation envs)."""
    frames = first = run.resume(lambda s: agent.load_state_dict(s["agent"]))
    env, eval_envs = agent.wrap(env), [agent.wrap(e, evaluation=True) for e in eval_envs]
    rollouts = Rollouts(env)
    per_iter = cfg.t_max * cfg.num_envs_per_task
    task_names = env.suite.task_names
    get_state = lambda: {"agent": agent.state_dict()}  # noqa: E731
    stats: dict[str, float] = {}
    start = time.time()
    with run.guard(get_state) as guard, tqdm(total=cfg.total_steps, initial=frames, desc=desc,
                                                    disable=not cfg.progress) as bar:
        while frames < cfg.total_steps:
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
            if crossed(before, frames, cfg.eval_every) and frames < cfg.total_steps:
                run.evals.log(frames, **eval_row([evaluate(e, agent.actor) for e in eval_envs]))
            if crossed(before, frames, cfg.checkpoint_every):
                run.save(frames, get_state)
            guard.check(frames)
    results = [evaluate(e, agent.actor) for e in eval_envs]
    run.evals.log(frames, **eval_row(results))
    return results


def raw_observation_policy(actor: Callable[[TensorDictBase], TensorDictBase],
                           obs_norm: TaskObservationNorm | None) -> Callable[[TensorDictBase], TensorDictBase]:
    """``actor`` acting on a plain multi-task env's raw observations: they are first normalised with the frozen
    statistics the actor was trained with (``obs_norm``; ``None``: the actor reads raw observations)."""
    if obs_norm is None:
        return actor
    frozen = obs_norm.frozen()

    def act(td: TensorDictBase) -> TensorDictBase:
        return actor(td.set("observation", frozen.normalize(td.get("observation"), td.get("task_id"))))
    return act


def load_model_policy(cfg: Config, model_path: str) -> Callable[[TensorDictBase], TensorDictBase]:
    """The policy in an ``a2c_multitask`` (or ``finetune`` phase) ``model.pt`` trained with ``cfg``, acting on raw
    observations of ``make_env(cfg.suite, tasks=cfg.tasks or None)`` (see :func:`raw_observation_policy`)."""
    suite = get_suite(cfg.suite).subset(list(cfg.tasks) or None)
    agent = A2CAgent(suite.num_tasks, suite.obs_max, suite.act_dims, cfg)
    agent.load_state_dict(torch.load(model_path), optimizer=False)
    return raw_observation_policy(agent.actor, agent.obs_norm)


def make_agent(cfg: Config, env: MultiTaskEnv) -> A2CAgent:
    suite = env.suite
    return A2CAgent(suite.num_tasks, suite.obs_max, suite.act_dims, cfg, env.action_spec)


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
    training = TrainingRun(cfg.resolved_run_dir(), cfg, checkpoint_every=cfg.checkpoint_every)
    tasks = list(cfg.tasks) or None
    env = make_env(cfg.suite, seed=cfg.seed, num_envs_per_task=cfg.num_envs_per_task, task_onehot=False, tasks=tasks)
    eval_env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes, task_onehot=False,
                        tasks=tasks)
    agent = make_agent(cfg, env)
    start = time.time()
    (result,) = train_a2c(agent, env, training, cfg, [eval_env], desc=f"a2c {cfg.architecture}")
    torch.save(agent.state_dict(), training.dir / MODEL_FILE)
    table = table2(result.task_names, {cfg.label: (result, f"{frames_text(cfg.total_steps)} per task")})
    write_report(training, f"A2C {cfg.label} — {cfg.suite}", table, result.task_names)
    summary = {"recipe": "a2c_multitask", "suite": cfg.suite, "seed": cfg.seed, "total_steps": cfg.total_steps,
               "wall_s": time.time() - start, **eval_row([result])}
    training.finish(summary)
    env.close()
    eval_env.close()
    return summary
