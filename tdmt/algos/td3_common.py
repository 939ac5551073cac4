"""What the TD3-family recipes share (teachers, KTM-DRL, TD3-MT): the config, the learner and its update schedules,
exploration, the online collectors (per-task replay, or one task for a whole episode), evaluation rows and the
results report.

An *epoch* (the step unit of every budget, log and evaluation: env steps per task) is Algorithm 1's ``decision
epoch``: one env step in each of the K tasks and the updates on N transitions of each task. How the updates run is
``update_schedule``:

* ``per_task`` (the paper's Algorithm 1 and its public code, the default): K sequential updates, update k on the N
  transitions of task k with its own optimiser steps; the actor every d-th update of a task (all tasks update once
  per epoch, so every d-th epoch, each task's actor step followed by its own soft target update). The K
  mini-batches come from one ``[K, N]`` draw. When the target networks cannot change within the epoch (offline, and
  online epochs without an actor step) the K critic targets are computed in one batched pass first.
* ``batched`` (a tdmt option): ONE update on the mean of the ``[K, N]`` batch — the same per-task terms, K× fewer
  gradient steps per epoch (a different method; ``benchmarks/ktm_step.py`` compares the speeds).

Logged losses stay tensors until a metrics row is written (no host synchronisation per update).

Devices (DESIGN §9): networks, teachers, losses, optimiser states, targets, masks and exploration noise live on
``device``; the replay on ``replay_device`` (default: the same); the envs step on the host and hand their batch over
on ``device`` once per step. Between logging intervals neither an update nor an env step waits for the device (tested
with :class:`tdmt.device.HostSyncCounter` in ``tests/test_device_td3.py``). ``compile=`` / ``cudagraphs=`` wrap one
update function per branch (:meth:`TD3Learner._function`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torchrl.objectives import SoftUpdate, TD3Loss, ValueEstimators

from tdmt import tables
from tdmt.algos.run import TrainingRun
from tdmt.collect.returns import EpisodeReturns
from tdmt.config import BaseConfig
from tdmt.data import PerTaskReplayBuffer
from tdmt.device import autocast, resolve_device, speed_wrap
from tdmt.envs import MultiTaskEnv, PadSpaces, Suite, TorchActions, action_masks
from tdmt.eval import evaluate
from tdmt.logger import CSVLog
from tdmt.objectives import TeacherDistillTD3Loss
from tdmt.optim import PCGrad
from tdmt.report import plot_curves, write_text

SCHEDULES = ("per_task", "batched")
EVAL_SEED = 10_000  # evaluation envs use seed EVAL_SEED + run seed


@dataclass
class TD3Config(BaseConfig):
    """The settings every TD3-family recipe shares; defaults follow KTM-DRL §4 / TD3 (Fujimoto et al. 2018):
    2×400 ReLU, Adam 3e-4, batch 256 per task, 1e6 transitions per task, γ 0.99, τ 0.005, policy delay 2,
    target noise N(0, 0.2²) clipped at 0.5, exploration N(0, 0.1²), evaluation every 5k steps (10 episodes)."""

    hidden: tuple[int, ...] = (400, 400)  # hidden layer widths of every actor and critic (KTM-DRL §3.4: 2x400)
    lr: float = 3e-4  # Adam learning rate of the actor and the critics
    batch_size_per_task: int = 256  # N: transitions of each task per update
    buffer_size_per_task: int = 1_000_000  # replay ring of each task
    gamma: float = 0.99  # discount
    tau: float = 0.005  # soft target update rate
    policy_delay: int = 2  # d: an actor step (and soft target update) every d critic steps of a task
    policy_noise: float = 0.2  # σ of the target-policy smoothing noise (Eq. 3; Gaussian)
    noise_clip: float = 0.5  # c: the smoothing noise is clipped to [-c, c]
    expl_noise: float = 0.1  # σ of the Gaussian exploration noise
    replay_device: str = ""  # where the replay rings live; empty: the training device (a sample never crosses the bus)
    storage: Literal["memory", "memmap"] = "memory"  # replay: RAM, or memory-mapped files in the run folder (CPU)

    RANGES: ClassVar[dict[str, str]] = {"hidden": "non-empty sizes >= 1"}

    def validate(self) -> None:
        super().validate()
        replay = self.resolved_replay_device()
        if self.storage == "memmap" and replay.type != "cpu":
            raise ValueError(f"storage='memmap' with replay_device={str(replay)!r} is not valid; valid: "
                             "replay_device=cpu (memory-mapped files live in host memory), or storage=memory")

    def resolved_replay_device(self) -> torch.device:
        """``replay_device``, or the training device when it is empty (refused in one line when not visible)."""
        if not self.replay_device:
            return resolve_device(self.device)
        try:
            return resolve_device(self.replay_device)
        except ValueError as e:
            raise ValueError(f"replay_{e}") from None

    def replay_options(self, run_dir: str | Path) -> dict[str, Any]:
        """Where the per-task replay D'_k lives (:class:`OnlineCollector`, :class:`EpisodeTurns` keywords): on
        :meth:`resolved_replay_device`, memory-mapped files under ``<run_dir>/replay-storage`` with
        ``storage=memmap``."""
        return {"replay_device": self.resolved_replay_device(), "storage": self.storage,
                "scratch_dir": Path(run_dir) / "replay-storage"}


def _adam(params: list[torch.Tensor], lr: float, capturable: bool = False) -> torch.optim.Adam:
    """Adam with the fused kernel where it exists (float32 on CPU or CUDA): one kernel for all parameters instead
    of a Python loop over them, which K updates per epoch would pay K times. ``capturable``: step counters on the
    device, as CUDA-graph capture needs."""
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None, capturable=capturable)


@dataclass
class TD3Learner:
    """A TD3-style loss with its two Adam optimisers, soft target updates and update counter.

    ``schedule`` (see the module docstring): ``"per_task"`` runs K sequential per-task updates per :meth:`update`
    (needs a :class:`~tdmt.objectives.TeacherDistillTD3Loss`), ``"batched"`` one update on the whole batch.
    ``reduce`` turns ``reduction="none"`` losses into the scalar to minimise (batched only; default: the loss is a
    scalar); with ``pcgrad=True`` (G-Surgery, Yu et al. 2020) it must give the ``[K]`` per-task losses instead.
    ``updates`` counts the update rounds (:meth:`update`: one per task each) and single updates
    (:meth:`update_task`); the actor steps when it reaches a multiple of the policy delay.
    """

    loss: TD3Loss
    lr: float
    tau: float
    policy_delay: int = 2
    precision: str = "float32"
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    pcgrad: bool = False
    schedule: str = "batched"
    compile: bool = False  # torch.compile each update function (tdmt.device.speed_wrap; tested against eager)
    cudagraphs: bool = False  # capture each update function as a CUDA graph (CUDA only; tested against eager)
    updates: int = 0
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # the latest critic and actor losses, as tensors
    device: torch.device = field(init=False)  # where the loss's parameters live (the training device)
    actor_optim: torch.optim.Optimizer = field(init=False)
    critic_optim: torch.optim.Optimizer = field(init=False)
    target_updater: SoftUpdate = field(init=False)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not valid; valid: {list(SCHEDULES)}")
        if self.schedule == "per_task" and (self.pcgrad or self.reduce is not None
                                            or not isinstance(self.loss, TeacherDistillTD3Loss)):
            raise ValueError("schedule='per_task' is not valid with pcgrad, reduce= or a loss other than "
                             "TeacherDistillTD3Loss; valid: schedule='batched'")
        self.device = next(iter(self.loss.actor_network_params.values(True, True))).device
        if self.cudagraphs and (self.device.type != "cuda" or self.pcgrad):
            raise ValueError(f"cudagraphs=True with a loss on {self.device} and pcgrad={self.pcgrad} is not valid; "
                             "valid: a loss on CUDA without pcgrad (PCGrad draws its projection order on the host)")
        if self.compile and self.pcgrad:
            raise ValueError("compile=True with pcgrad=True is not valid; valid: compile=False (PCGrad's batched "
                             "per-task backward fails in compiled graphs: torch 2.13, 'Tensor that doesn't have "
                             "storage')")
        self._wrapped: dict[tuple, Callable[[TensorDictBase], tuple[torch.Tensor, ...]]] = {}
        self.reset_optimizers()
        self.target_updater = SoftUpdate(self.loss, tau=self.tau)  # registers the targets with TorchRL
        loss = self.loss
        self._sources = [*loss.actor_network_params.values(True, True), *loss.qvalue_network_params.values(True, True)]
        self._targets = [*loss.target_actor_network_params.values(True, True),
                         *loss.target_qvalue_network_params.values(True, True)]

    @torch.no_grad()
    def soft_update(self) -> None:
        """``θ' ← τ θ + (1 - τ) θ'`` for every target (what ``target_updater.step()`` computes, in one foreach
        kernel instead of TensorDict plumbing that costs ~1 ms a call: the per-task schedule makes K a round)."""
        torch._foreach_lerp_(self._targets, self._sources, self.tau)

    def reset_optimizers(self) -> None:
        """Fresh Adam states (KTM-DRL's public code starts the online stage with new optimisers)."""
        self.actor_optim = _adam(list(self.loss.actor_network_params.values(True, True)), self.lr, self.cudagraphs)
        self.critic_optim = _adam(list(self.loss.qvalue_network_params.values(True, True)), self.lr, self.cudagraphs)
        if self.pcgrad:
            self.actor_optim, self.critic_optim = PCGrad(self.actor_optim), PCGrad(self.critic_optim)
        self.stats = {}
        self._wrapped.clear()  # compiled or captured updates hold the old optimisers' state

    # ------------------------------------------------------------------ updates
    def update(self, batch: TensorDictBase, actor_every: int | None = None, soft_update: bool = True) -> None:
        """One update round on a ``[K, N]`` batch (row k: task k): K per-task updates, or one batched update.

        The actor steps (each followed by a soft target update unless ``soft_update=False``) in every
        ``actor_every``-th round (default: the policy delay d).
        """
        every = self.policy_delay if actor_every is None else actor_every
        actor = (self.updates + 1) % every == 0
        self._keep(self._function("round" if self.schedule == "per_task" else "batched", actor, soft_update)(batch))
        self.updates += 1

    def update_task(self, batch: TensorDictBase, task: int, actor_every: int | None = None,
                    soft_update: bool = True) -> None:
        """One update on transitions of task ``task`` only (the "w/o HER" ablation's stream of updates)."""
        every = self.policy_delay if actor_every is None else actor_every
        self.updates += 1
        self._keep(self._function("task", self.updates % every == 0, soft_update, task)(batch))

    def _function(self, kind: str, actor: bool, soft_update: bool, task: int | None = None
                  ) -> Callable[[TensorDictBase], tuple[torch.Tensor, ...]]:
        """The update function of one branch (``kind``, loss mode, actor step or not, ...): the Python decisions
        are taken here, outside what ``compile=`` traces and ``cudagraphs=`` captures (one function per branch)."""
        key = (kind, getattr(self.loss, "mode", None), actor, soft_update, task)  # TorchRL's TD3Loss has no mode
        fn = self._wrapped.get(key)
        if fn is None:
            body = {"round": self._per_task_round, "batched": self._batched_update, "task": self._task_update}[kind]
            fn = partial(body, actor=actor, soft_update=soft_update, **({} if task is None else {"task": task}))
            if self.compile or self.cudagraphs:
                fn = speed_wrap(fn, compile=self.compile, cudagraphs=self.cudagraphs, device=self.device)
            self._wrapped[key] = fn
        return fn

    def _keep(self, losses: tuple[torch.Tensor, ...]) -> None:
        """Keep the critic (and actor) loss of the latest update as tensors (read at logging intervals)."""
        self.stats["loss_qvalue"] = losses[0]
        if len(losses) > 1:
            self.stats["loss_actor"] = losses[1]

    def _autocast(self):
        return autocast(self.device, self.precision)

    def _task_update(self, batch: TensorDictBase, actor: bool, soft_update: bool, task: int
                     ) -> tuple[torch.Tensor, ...]:
        with self._autocast():
            loss_q, _ = self.loss.value_loss(batch, task=task)
        self._step(self.critic_optim, loss_q)
        if not actor:
            return (loss_q.detach(),)
        with self._autocast():
            loss_pi, _ = self.loss.actor_loss(batch, task=task)
        self._step(self.actor_optim, loss_pi)
        if soft_update:
            self.soft_update()
        return loss_q.detach(), loss_pi.detach()

    def _per_task_round(self, batch: TensorDictBase, actor: bool, soft_update: bool) -> tuple[torch.Tensor, ...]:
        loss = self.loss
        targets_fixed = not (actor and soft_update and loss.mode == "online")
        with self._autocast():
            targets = loss.value_target(batch, task="rows") if targets_fixed else None
        q_losses, pi_losses = [], []
        for k, rows in enumerate(batch.unbind(0)):  # Algorithm 1: K sequential updates (not a loop to vectorise)
            with self._autocast():
                loss_q, _ = loss.value_loss(rows, task=k, target=None if targets is None else targets[:, k])
            self._step(self.critic_optim, loss_q)
            q_losses.append(loss_q.detach())
            if actor:
                with self._autocast():
                    loss_pi, _ = loss.actor_loss(rows, task=k)
                self._step(self.actor_optim, loss_pi)
                pi_losses.append(loss_pi.detach())
                if soft_update:
                    self.soft_update()
        q = torch.stack(q_losses).mean()
        return (q, torch.stack(pi_losses).mean()) if actor else (q,)

    def _batched_update(self, batch: TensorDictBase, actor: bool, soft_update: bool) -> tuple[torch.Tensor, ...]:
        rows = {"task": "rows"} if isinstance(self.loss, TeacherDistillTD3Loss) else {}
        with self._autocast():
            loss_q, _ = self.loss.value_loss(batch, **rows)
        loss_q = self.reduce(loss_q) if self.reduce else loss_q
        self._step(self.critic_optim, loss_q)
        if not actor:
            return (loss_q.detach().sum(),)
        with self._autocast():
            loss_pi, _ = self.loss.actor_loss(batch, **rows)
        loss_pi = self.reduce(loss_pi) if self.reduce else loss_pi
        self._step(self.actor_optim, loss_pi)
        if soft_update:
            self.soft_update()
        return loss_q.detach().sum(), loss_pi.detach().sum()

    def _step(self, optim: torch.optim.Optimizer | PCGrad, loss: torch.Tensor) -> None:
        """Minimise ``loss`` (a scalar; with PCGrad, the ``[K]`` vector of per-task losses)."""
        optim.zero_grad(set_to_none=True)
        if self.pcgrad:
            optim.backward(loss.float())
        else:
            loss.float().backward()
        optim.step()

    def read_stats(self) -> dict[str, float]:
        """The latest critic and actor losses as floats (synchronises: call at logging intervals only)."""
        return {name: float(value) for name, value in self.stats.items()}

    def hard_update_targets(self) -> None:
        """Copy the online weights into the targets (Algorithm 1, between the offline and online stages)."""
        self.loss.target_actor_network_params.data.copy_(self.loss.actor_network_params.data)
        self.loss.target_qvalue_network_params.data.copy_(self.loss.qvalue_network_params.data)

    def state_dict(self) -> dict[str, Any]:
        learn = {k: v for k, v in self.loss.state_dict().items() if not k.startswith("teachers.")}
        return {"loss": learn, "actor_optim": self.actor_optim.state_dict(),
                "critic_optim": self.critic_optim.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (read on the CPU, ``map_location="cpu"``): values are copied into the
        learner's tensors on its device, and the optimiser states moved to their parameters' device."""
        self.loss.load_state_dict(state["loss"], strict=False)
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.updates = state["updates"]
        self._wrapped.clear()  # the optimisers' state tensors were replaced


def due(step: int, every: int) -> bool:
    """Whether a periodic action (``*_every`` key; 0: never) falls on ``step``."""
    return every > 0 and step % every == 0


def log_metrics(run: TrainingRun, step: int, learner: TD3Learner, collector: OnlineCollector | None, suite: Suite,
                **extra: Any) -> None:
    """One ``metrics.csv`` row (when there is something to log): the latest losses and, per task, the mean return
    of the training episodes ended since the previous row — the loop's only device reads between evaluations."""
    returns = collector.read_returns() if collector is not None else {}
    values = {**learner.read_stats(), **{f"train/{suite.task_names[k]}/episode_return": r for k, r in returns.items()}}
    if values:
        run.metrics.log(step, **extra, **values)


def make_value_estimator(loss: TD3Loss, gamma: float) -> None:
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)


def build_learner(loss: TD3Loss, cfg: TD3Config, **options: Any) -> TD3Learner:
    """``loss`` with its TD(0) estimator (γ = ``cfg.gamma``), moved whole (networks, targets, teachers, masks,
    bounds, γ) to the training device, in a :class:`TD3Learner` with the config's learning rate, τ, policy delay,
    precision and speed options; ``options``: the learner's other arguments (``schedule``, ``reduce``, ...)."""
    make_value_estimator(loss, cfg.gamma)
    loss.to(resolve_device(cfg.device))
    return TD3Learner(loss, cfg.lr, cfg.tau, cfg.policy_delay, cfg.precision, compile=cfg.compile,
                      cudagraphs=cfg.cudagraphs, **options)


@torch.no_grad()
def explore(actor: TensorDictModule, td: TensorDictBase, masks: torch.Tensor, sigma: float,
            random: bool = False) -> TensorDictBase:
    """``a = g^k(clip(π(ŝ) + N(0, σ²), -1, 1))`` (or uniform random when ``random``); padded dims are 0."""
    if random:
        action = torch.rand(*td.shape, masks.shape[-1], device=masks.device) * 2 - 1
    else:
        action = actor(td.select(*actor.in_keys)).get("action")
        action = (action + sigma * torch.randn_like(action)).clamp(-1.0, 1.0)
    td.set("action", action * masks[td.get("task_id")])
    return td


STORED_KEYS = ("observation", "task_id", "task_onehot", "action", ("next", "observation"), ("next", "task_id"),
               ("next", "task_onehot"), ("next", "reward"), ("next", "done"), ("next", "terminated"))


def sample_task(buffer: PerTaskReplayBuffer, task: int, n: int) -> TensorDictBase:
    """N transitions of ``task`` drawn uniformly (with replacement) from its ring; once every ring holds data, without
    reading the device (before that, the first turns of "w/o HER", it reads the task's fill level)."""
    if buffer.has_at_least(1):
        return buffer.sample(n, tasks=torch.arange(task, task + 1, device=buffer.device))[0]
    data = buffer.task_data(task)
    return data[torch.randint(data.shape[0], (n,), device=data.device)]


class OnlineCollector:
    """Steps the multi-task env with exploration and stores every transition in its task's ring (KTM-DRL §3.2's
    hierarchical replay D'_k); :meth:`sample` draws ``[K, N]``.

    The env steps on the host and hands its batch over on its ``device`` (the training device: ``make_env(device=)``);
    the exploration noise, the episode-return accumulators and (by default) the replay live there too, and
    :meth:`step` waits for nothing but the env itself: the returns of finished episodes are summed per task on the
    device and read once per logging interval (:meth:`read_returns`).
    """

    def __init__(self, env: MultiTaskEnv, capacity_per_task: int, batch_size_per_task: int, *,
                 replay_device: str | torch.device | None = None, storage: str = "memory",
                 scratch_dir: str | Path | None = None):
        self.env = env
        self.num_tasks = env.suite.num_tasks
        self.buffer = PerTaskReplayBuffer(self.num_tasks, capacity_per_task, batch_size_per_task, storage=storage,
                                          scratch_dir=scratch_dir, device=replay_device or env.device)
        self.returns = EpisodeReturns(self.num_tasks, env.device)
        self.td: TensorDictBase | None = None

    def step(self, actor: TensorDictModule, sigma: float, random: bool = False) -> None:
        """One env step of every task (the returns of the episodes it ends are kept for :meth:`read_returns`)."""
        if self.td is None:
            self.td = self.env.reset()
        td = explore(actor, self.td, self.env.action_masks, sigma, random)
        td, self.td = self.env.step_and_maybe_reset(td)
        td = td.select(*STORED_KEYS, strict=False)
        self.returns.add(td.get(("next", "reward")), td.get(("next", "done")))
        self.buffer.extend(td)

    def read_returns(self) -> dict[int, float]:
        """``{task: mean return}`` of the episodes that ended since the last call (tasks without one are left out);
        reads the device: call at logging intervals only."""
        return self.returns.pop()

    def sample(self) -> TensorDictBase:
        return self.buffer.sample()

    def ready(self, min_per_task: int) -> bool:
        return self.buffer.has_at_least(min_per_task)


class EpisodeTurns:
    """KTM-DRL Table 3 "w/o HER" (the training of Rusu et al.): one task for a whole episode, then the next.

    Online (:meth:`step`): only the active task's env steps — each turn starts at an episode start and lasts until
    that episode ends (termination or time limit), so no env step is thrown away; its transitions go to the task's
    own ring and the update after each env step draws N transitions of that task only. Offline
    (:meth:`next_offline_task`): the updates draw from one teacher's buffer D_k for as many updates as an episode
    of task k has steps (its time limit), then from the next. A resumed run restarts the active task's episode.

    The envs step on the host; observations, actions and the replay live on ``device`` (the replay on
    ``replay_device`` when given), and the env step's output crosses to it once.
    """

    def __init__(self, suite: Suite, seed: int, capacity_per_task: int, batch_size_per_task: int, *,
                 device: str | torch.device = "cpu", replay_device: str | torch.device | None = None,
                 storage: str = "memory", scratch_dir: str | Path | None = None):
        self.suite, self.seed, self.batch_size = suite, seed, batch_size_per_task
        self.num_tasks = suite.num_tasks
        self.device = torch.device(device)
        self.masks = action_masks(suite.act_dims, suite.act_max).to(self.device)
        self.onehot = torch.eye(self.num_tasks, device=self.device)
        self.task_ids = torch.arange(self.num_tasks, device=self.device)
        self.buffer = PerTaskReplayBuffer(self.num_tasks, capacity_per_task, batch_size_per_task, storage=storage,
                                          scratch_dir=scratch_dir, device=replay_device or self.device)
        self.envs = [TorchActions(PadSpaces(task.make(seed=seed + k), suite.obs_max, suite.act_max))
                     for k, task in enumerate(suite.tasks)]
        self._reset_seeds = [seed + k for k in range(self.num_tasks)]  # the first reset of each env is seeded
        self.active_task = 0  # online: the task whose episode runs
        self.offline_task, self.offline_position = 0, 0  # offline: the task of the turn, updates done in it
        self.obs: torch.Tensor | None = None  # the active task's observation [1, obs_max], on ``device``

    def _row(self, observation: torch.Tensor, task: int) -> dict[str, torch.Tensor]:
        return {"observation": observation, "task_id": self.task_ids[task: task + 1],
                "task_onehot": self.onehot[task: task + 1]}

    def step(self, actor: TensorDictModule, sigma: float) -> int:
        """One env step of the active task (stored in its ring); returns that task."""
        k = self.active_task
        env = self.envs[k]
        if self.obs is None:
            obs, _ = env.reset(seed=self._reset_seeds[k])
            self._reset_seeds[k] = None
            self.obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(1, -1)
        td = TensorDict(self._row(self.obs, k), batch_size=[1])
        explore(actor, td, self.masks, sigma)
        obs, reward, terminated, truncated, _ = env.step(td.get("action")[0])
        done = bool(terminated or truncated)
        host = TensorDict({"observation": torch.as_tensor(obs, dtype=torch.float32, device="cpu").reshape(1, -1),
                           "reward": torch.full((1, 1), reward, dtype=torch.float32, device="cpu"),
                           "done": torch.full((1, 1), done, device="cpu"),
                           "terminated": torch.full((1, 1), bool(terminated), device="cpu")}, batch_size=[1])
        nxt = host.to(self.device, non_blocking=True)  # the step's output crosses to the device once
        td.set("next", nxt.update(self._row(nxt.get("observation"), k)))
        self.buffer.extend(td)
        if done:
            self.active_task, self.obs = (k + 1) % self.num_tasks, None
        else:
            self.obs = nxt.get("observation")
        return k

    def sample(self, task: int) -> TensorDictBase:
        """N transitions of ``task`` (the task just stepped) from its own ring."""
        return sample_task(self.buffer, task, self.batch_size)

    def next_offline_task(self) -> int:
        """The task of the next offline update (turns of one episode length each)."""
        k = self.offline_task
        self.offline_position += 1
        if self.offline_position >= self.suite.tasks[k].max_episode_steps:
            self.offline_task, self.offline_position = (k + 1) % self.num_tasks, 0
        return k

    def state_dict(self) -> dict[str, int]:
        return {"active_task": self.active_task, "offline_task": self.offline_task,
                "offline_position": self.offline_position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.active_task, self.offline_task = state["active_task"], state["offline_task"]
        self.offline_position = state["offline_position"]

    def close(self) -> None:
        for env in self.envs:
            env.close()


def eval_row(env: MultiTaskEnv, policy: Callable[[TensorDictBase], TensorDictBase], stage: str, seed: int
             ) -> dict[str, Any]:
    """Evaluate (one deterministic episode per row of ``env``) and return the ``eval.csv`` row.

    The env is re-seeded with ``seed`` first: every evaluation starts from the same initial states, so
    evaluations are comparable across steps and a resumed run evaluates exactly as an uninterrupted one.
    """
    t0 = time.perf_counter()
    env.set_seed(seed)
    result = evaluate(env, policy)
    return {"stage": stage, **result.as_row(), "eval_seconds": round(time.perf_counter() - t0, 2)}


def teacher_rows(teachers_dir: str | Path) -> list[dict[str, str]] | None:
    """The eval.csv rows of the ``train_teachers`` run whose ``teachers/`` folder is ``teachers_dir``: the Ideal
    column, read from the file ``tdmt report`` reads; ``None`` when that run's eval.csv is not there."""
    path = Path(teachers_dir).parent / "eval.csv"
    return CSVLog(path).rows() if path.exists() else None


def write_results(run: TrainingRun, title: str, suite: Suite, methods: dict[str, Sequence[dict]],
                  ideal: Sequence[dict] | None, curve_label: str, extra: str = "") -> dict[str, Any]:
    """``results.md``, the report of this run (:func:`tdmt.tables.report_markdown`: Tables 1–2 layout, the final
    evaluation and, with the teachers' evaluation rows ``ideal``, the Table 3 ratio layout), and ``curves.png``
    (Figures 2–3). ``methods`` maps a column label to eval rows; returns the summary's per-task scores."""
    names = suite.task_names
    columns = {**({tables.IDEAL: [ideal]} if ideal else {}), **{label: [rows] for label, rows in methods.items()}}
    write_text(run.dir / "results.md", f"# {title}\n\n"
               + tables.report_markdown(columns, names, suite.success_metric) + extra)
    summary: dict[str, Any] = {"max_average_reward": {k: tables.task_scores(v, names) for k, v in methods.items()}}
    references = None
    if ideal:
        base = tables.ideal_scores([ideal], names)
        references = {tables.IDEAL: list(base.values())}
        summary["ratio_to_teachers"] = {label: {t: tables.ratio(v, base[t]) for t, v in scores.items()}
                                        for label, scores in summary["max_average_reward"].items()}
    plot_curves({curve_label: [run.evals.rows()]}, names, run.dir / "curves.png", title=title, references=references)
    return summary
