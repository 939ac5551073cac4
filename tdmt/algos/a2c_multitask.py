"""Vanilla multi-task A2C with a multi-head actor and critic (Arora et al. §3.1.2, §3.1.4, §4.3.1; DESIGN §5).

Every head i is trained with A2C on its own task E_i. With ``t_max``-step rollouts of E envs per task the n-step
advantage (Eq. 3) is

    A(s_t, a_t) = Σ_{j<k} γ^j r_{t+j} + γ^k V(s_{t+k}) − V(s_t),   k = t_max − t (bootstrapped at the rollout end),

(what TorchRL's ``TD1`` estimator computes on the rollout; :func:`n_step_return` here) and the loss is TorchRL's
``A2CLoss``:
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

Device (``device=``, DESIGN §9): networks, observation statistics, loss, RMSprop state, rollouts and episode-return
sums live on the training device; the MuJoCo envs step on the CPU and their batched output crosses once per step.
Between logging intervals an update and an env step make no host read (counters stay tensors; the n-step return and
the per-head optimiser step use masks, not branches on values); logged values are read once per interval.
``precision="bfloat16"`` autocasts the losses on the device's type; ``compile``/``cudagraphs`` wrap the update
(:func:`tdmt.device.speed_wrap`; checked against eager in ``tests/test_device_arora.py``). ``model.pt`` holds
CPU tensors and every checkpoint is read with ``map_location="cpu"``: a GPU run's files load on any machine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from tensordict import TensorDictBase
from torch import nn
from torch.utils._pytree import tree_map
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import A2CLoss

from tdmt import tables
from tdmt.algos.run import TrainingRun
from tdmt.collect.returns import EpisodeReturns
from tdmt.config import BaseConfig
from tdmt.device import autocast, speed_wrap
from tdmt.envs import MultiTaskEnv, TaskObservationNorm, get_suite, make_env
from tdmt.envs.normalize import normalized
from tdmt.eval import EvalResult, evaluate
from tdmt.modules.multihead import (
    MultiHeadMLP,
    actor_log_std,
    actor_net,
    actor_stacked_parameters,
    make_gaussian_actor,
    make_value_critic,
    task_layout,
)
from tdmt.progress import tqdm
from tdmt.report import plot_curves, write_text

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


def step_keeping_other_rows(optim: torch.optim.Optimizer, stacked: Sequence[torch.Tensor],
                            task: int | torch.Tensor) -> None:
    """Optimizer step after an update on task ``task`` alone, as if each task's rows were a separate layer.

    Rows ≠ ``task`` of the ``[K, ...]`` parameters in ``stacked`` have zero gradient; a stacked optimizer would
    still decay their statistics (RMSprop's ``square_avg``) or move them by momentum (Adam). Those rows and their
    per-element optimizer state are restored after the step (a mask over rows, ``task`` may be a device tensor:
    no host read).
    """
    saved = []
    with torch.no_grad():
        for p in stacked:
            others = (torch.arange(p.shape[0], device=p.device) != task).view(-1, *[1] * (p.dim() - 1))
            tensors = [p] + [v for v in optim.state.get(p, {}).values() if torch.is_tensor(v) and v.shape == p.shape]
            saved += [(t, others, t.clone()) for t in tensors]
        optim.step()
        for tensor, others, before in saved:
            tensor.copy_(torch.where(others, before, tensor))


def set_capturable(optim: torch.optim.Optimizer, capturable: bool) -> None:
    """This run's ``capturable`` (CUDA graphs need it), not the run that saved a loaded optimizer state: its step
    counters then live on the parameters' device (capturable) or the host."""
    for group in optim.param_groups:
        group["capturable"] = capturable
        for p in group["params"]:
            state = optim.state.get(p, {})
            if "step" in state:
                state["step"] = state["step"].to(p.device if capturable else "cpu")


def n_step_return(reward: torch.Tensor, next_value: torch.Tensor, done: torch.Tensor, terminated: torch.Tensor,
                  gamma: float) -> torch.Tensor:
    """The n-step return of Eq. 3 on ``[..., T, 1]`` rollout tensors (time at dim −2), what TorchRL's ``TD1``
    estimator gives, without its host reads:

        G_t = r_t + γ (1 − terminated_t) · (V(s_{t+1}) if done_t or t = T−1 else G_{t+1}).
    """
    ret = next_value[..., -1, :]  # G_T: the bootstrap at the rollout's end
    out = []
    for t in reversed(range(reward.shape[-2])):  # the rollout's t_max steps (not tasks)
        ret = reward[..., t, :] + gamma * (~terminated[..., t, :]) * torch.where(done[..., t, :],
                                                                                 next_value[..., t, :], ret)
        out.append(ret)
    return torch.stack(out[::-1], -2)


def read_scalars(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-dim tensors as floats, in one host read (at a logging interval, not per update)."""
    if not values:
        return {}
    return dict(zip(values, torch.stack([v.float() for v in values.values()]).tolist()))


def cpu_copy(state: dict) -> dict:
    """``state`` with every tensor copied to the host: a ``model.pt`` that loads on any machine."""
    return tree_map(lambda v: v.detach().cpu() if isinstance(v, torch.Tensor) else v, state)


FINETUNE_LAYERS = ("public_code", "heads")


class A2CAgent:
    """Multi-head (or K independent) Gaussian actor + value critic trained with TorchRL's ``A2CLoss``, and the
    per-task observation statistics (``obs_norm``) its networks read through."""

    def __init__(self, num_tasks: int, obs_dim: int, act_dims: Sequence[int], cfg: Config, action_spec=None):
        shared = cfg.architecture == "multihead"
        act_max = max(act_dims)
        self.device = torch.device(cfg.device)
        self.actor = make_gaussian_actor(num_tasks, obs_dim, act_max, cfg.actor_hidden, shared,
                                         action_spec=action_spec, distribution=cfg.policy,
                                         act_dims=act_dims).to(self.device)
        self.critic = make_value_critic(num_tasks, obs_dim, cfg.critic_hidden, shared,
                                        shared_layers=cfg.critic_shared_layers if shared else 0).to(self.device)
        self.obs_norm = (TaskObservationNorm(num_tasks, obs_dim, cfg.obs_clip, device=self.device) if cfg.obs_norm
                         else None)
        # the advantage and value target are computed here (n_step_return): the loss never runs its estimator
        self.loss = A2CLoss(self.actor, self.critic, entropy_coeff=cfg.entropy_coeff, critic_coeff=cfg.value_coeff,
                            loss_critic_type="l2").to(self.device)  # its coefficient buffers too
        self.gamma, self.max_grad_norm, self.precision = cfg.gamma, cfg.max_grad_norm, cfg.precision
        self.cfg = cfg
        self.nets: list[MultiHeadMLP] = [actor_net(self.actor), self.critic.module]
        self.stacked = actor_stacked_parameters(self.actor) + self.critic.module.stacked_parameters()
        self.num_tasks = num_tasks
        self.task_index = torch.arange(num_tasks, device=self.device)
        self.stat_names = ["loss_objective", "loss_critic", "entropy", "grad_norm"]
        self.stat_names += ["sigma"] if actor_log_std(self.actor) is not None else []
        self.set_optimizer(list(self.loss.parameters()))

    def set_optimizer(self, params: list[nn.Parameter]) -> None:
        """A fresh RMSprop over ``params`` (capturable for CUDA graphs), and the update functions wrapped with the
        run's speed options (one per schedule branch: a Python branch never sits inside a compiled function)."""
        cfg = self.cfg
        self.optim = torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps,
                                         capturable=cfg.cudagraphs)
        wrap = dict(compile=cfg.compile, cudagraphs=cfg.cudagraphs, device=self.device)
        self._update_task = speed_wrap(self._step_task, **wrap)
        self._update_all = speed_wrap(self._step_all, **wrap)

    def wrap(self, env: EnvBase, evaluation: bool = False) -> EnvBase:
        """``env`` seen through the agent's observation normalisation (frozen statistics if ``evaluation``)."""
        if self.obs_norm is None:
            return env
        return normalized(env, self.obs_norm.frozen() if evaluation else self.obs_norm)

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

    def update(self, batch: TensorDictBase, task: int | None = None) -> dict[str, torch.Tensor]:
        """One A2C step on a ``[..., T]`` rollout (time last): of task ``task`` alone (``batch[task]``), or of every
        task (the ``[K, E, T]`` rollout); returns the step's statistics as 0-dim tensors (no host read)."""
        if task is None:
            with task_layout("task_major"):
                stats = self._update_all(batch)
        else:
            with task_layout("one_task"):
                stats = self._update_task(batch, self.task_index[task])
        return dict(zip(self.stat_names, stats.unbind()))

    def _step_task(self, batch: TensorDictBase, task: torch.Tensor) -> torch.Tensor:
        grad_norm, stats = self._backward(batch)
        step_keeping_other_rows(self.optim, self.stacked, task)
        return self._stats(grad_norm, stats)

    def _step_all(self, batch: TensorDictBase) -> torch.Tensor:
        grad_norm, stats = self._backward(batch)
        self.optim.step()
        return self._stats(grad_norm, stats)

    def _backward(self, batch: TensorDictBase) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Eq. 3's advantage with the critic before the step, then the A2C loss's gradient, clipped; returns the
        gradient norm and the loss terms."""
        critic = self.critic.module
        nxt = batch.get("next")
        with torch.no_grad():
            value = critic(batch.get("observation"), batch.get("task_id"))
            target = n_step_return(nxt.get("reward"), critic(nxt.get("observation"), nxt.get("task_id")),
                                   nxt.get("done"), nxt.get("terminated"), self.gamma)
        batch = batch.copy().set("value_target", target).set("advantage", target - value)
        with autocast(self.device, self.precision):
            losses = self.loss(batch)
            total = losses.get("loss_objective") + losses.get("loss_entropy") + losses.get("loss_critic")
        self.optim.zero_grad(set_to_none=True)
        total.backward()
        params = [p for group in self.optim.param_groups for p in group["params"] if p.requires_grad]
        grad_norm = nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        return grad_norm, [losses.get("loss_objective"), losses.get("loss_critic"), losses.get("entropy")]

    def _stats(self, grad_norm: torch.Tensor, losses: list[torch.Tensor]) -> torch.Tensor:
        log_std = actor_log_std(self.actor)
        sigma = [] if log_std is None else [log_std.detach().exp().mean()]
        return torch.stack([t.detach().float() for t in [*losses, grad_norm, *sigma]])

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
            set_capturable(self.optim, self.cfg.cudagraphs)


class Rollouts:
    """Steps a multi-task env ``t_max`` steps at a time, carrying the state across calls; tracks episode returns.

    The env's batch is task-major (``[K]`` or ``[K, E]``): the policy runs under ``task_layout("task_major")``, and
    finished episodes' returns are summed per task on the env's device (:class:`~tdmt.collect.EpisodeReturns`),
    read once by :meth:`pop_returns` at a logging interval."""

    def __init__(self, env: MultiTaskEnv):
        self.env = env
        self.td = env.reset()
        K = env.suite.num_tasks
        self.returns = EpisodeReturns(K, env.device, envs_per_task=env.batch_size.numel() // K)

    @torch.no_grad()
    def collect(self, policy: Callable[[TensorDictBase], TensorDictBase], t_max: int) -> TensorDictBase:
        """A ``[*env.batch_size, t_max]`` rollout of ``policy`` (sampling actions)."""
        steps = []
        with set_exploration_type(ExplorationType.RANDOM), task_layout("task_major"):
            for _ in range(t_max):
                td, self.td = self.env.step_and_maybe_reset(policy(self.td))
                steps.append(td)
                self.returns.add(td.get(("next", "reward")), td.get(("next", "done")))
        return torch.stack(steps, -1).contiguous()

    def pop_returns(self, task_names: Sequence[str], prefix: str = "train") -> dict[str, float]:
        """Mean return of the episodes finished since the last call, per task (tasks with none are left out)."""
        return {f"{prefix}/{task_names[k]}/return": mean for k, mean in self.returns.pop().items()}


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
    stats: dict[str, torch.Tensor] = {}
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
                run.metrics.log(frames, **read_scalars(stats), **rollouts.pop_returns(task_names),
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
    observations of ``make_env(cfg.suite, tasks=cfg.tasks or None)`` (see :func:`raw_observation_policy`), on the
    CPU whatever device trained it."""
    suite = get_suite(cfg.suite).subset(list(cfg.tasks) or None)
    agent = A2CAgent(suite.num_tasks, suite.obs_max, suite.act_dims,
                     dataclasses.replace(cfg, device="cpu", compile=False, cudagraphs=False))
    agent.load_state_dict(torch.load(model_path, map_location="cpu"), optimizer=False)
    return raw_observation_policy(agent.actor, agent.obs_norm)


def make_agent(cfg: Config, env: MultiTaskEnv) -> A2CAgent:
    suite = env.suite
    return A2CAgent(suite.num_tasks, suite.obs_max, suite.act_dims, cfg, env.action_spec)


def frames_text(frames: int) -> str:
    return f"{frames / 1e6:g}M frames" if frames >= 100_000 else f"{frames:,} frames"


def write_report(run: TrainingRun, title: str, columns: dict[str, tables.Column], task_names: Sequence[str],
                 notes: str = "") -> None:
    """``results.md``, the report of this run (:func:`tdmt.tables.report_markdown`, as ``tdmt report``: its final
    return is Arora Table 2's cell, mean ± std over the evaluation episodes) with ``notes``, and ``curves.png``
    (eval returns over frames per task). ``columns`` maps a label (with its budget) to eval rows."""
    write_text(run.dir / "results.md", f"# {title}\n\nDeterministic policy; Arora et al. Table 2 reads the final "
                                       "return.\n\n" + tables.report_markdown(columns, task_names, False) + notes)
    plot_curves({title: [run.evals.rows()]}, task_names, run.dir / "curves.png", title=title)


def run(cfg: Config) -> dict:
    """Train multi-head (or independent) A2C on ``cfg.suite``; writes the run folder and returns the summary."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    training = TrainingRun(cfg.resolved_run_dir(), cfg, checkpoint_every=cfg.checkpoint_every)
    tasks = list(cfg.tasks) or None
    env = make_env(cfg.suite, seed=cfg.seed, num_envs_per_task=cfg.num_envs_per_task, task_onehot=False, tasks=tasks,
                   device=cfg.device)
    eval_env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes, task_onehot=False,
                        tasks=tasks, device=cfg.device)
    agent = make_agent(cfg, env)
    start = time.time()
    (result,) = train_a2c(agent, env, training, cfg, [eval_env], desc=f"a2c {cfg.architecture}")
    torch.save(cpu_copy(agent.state_dict()), training.dir / MODEL_FILE)
    write_report(training, f"A2C {cfg.label} — {cfg.suite}",
                 {f"{cfg.label} ({frames_text(cfg.total_steps)} per task)": [training.evals.rows()]}, result.task_names)
    summary = {"recipe": "a2c_multitask", "suite": cfg.suite, "seed": cfg.seed, "total_steps": cfg.total_steps,
               "wall_s": time.time() - start, **eval_row([result])}
    training.finish(summary)
    env.close()
    eval_env.close()
    return summary
