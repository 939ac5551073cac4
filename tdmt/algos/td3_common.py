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
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torchrl.objectives import SoftUpdate, TD3Loss, ValueEstimators

from tdmt.algos.run import TrainingRun
from tdmt.config import BaseConfig
from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import MultiTaskEnv, PadSpaces, Suite, action_masks
from tdmt.eval import evaluate
from tdmt.objectives import TeacherDistillTD3Loss
from tdmt.optim import PCGrad
from tdmt.report import markdown_table, plot_curves, write_text

PRECISIONS = ("float32", "bfloat16")
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

    RANGES: ClassVar[dict[str, str]] = {"hidden": "non-empty sizes >= 1"}


def autocast(precision: str):
    """bf16 autocast on CPU (DESIGN §7: 1.3–1.9× on avx512_bf16) or a no-op for float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid; valid: {list(PRECISIONS)}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where it exists (float32 on CPU or CUDA): one kernel for all parameters instead
    of a Python loop over them, which K updates per epoch would pay K times."""
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


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
    updates: int = 0
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # the latest critic and actor losses, as tensors
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
        self.actor_optim = _adam(list(self.loss.actor_network_params.values(True, True)), self.lr)
        self.critic_optim = _adam(list(self.loss.qvalue_network_params.values(True, True)), self.lr)
        if self.pcgrad:
            self.actor_optim, self.critic_optim = PCGrad(self.actor_optim), PCGrad(self.critic_optim)
        self.stats = {}

    # ------------------------------------------------------------------ updates
    def update(self, batch: TensorDictBase, actor_every: int | None = None, soft_update: bool = True) -> None:
        """One update round on a ``[K, N]`` batch (row k: task k): K per-task updates, or one batched update.

        The actor steps (each followed by a soft target update unless ``soft_update=False``) in every
        ``actor_every``-th round (default: the policy delay d).
        """
        every = self.policy_delay if actor_every is None else actor_every
        actor_round = (self.updates + 1) % every == 0
        if self.schedule == "per_task":
            self._per_task_round(batch, actor_round, soft_update)
        else:
            self._batched_update(batch, actor_round, soft_update)
        self.updates += 1

    def update_task(self, batch: TensorDictBase, task: int, actor_every: int | None = None,
                    soft_update: bool = True) -> None:
        """One update on transitions of task ``task`` only (the "w/o HER" ablation's stream of updates)."""
        every = self.policy_delay if actor_every is None else actor_every
        with autocast(self.precision):
            loss_q, _ = self.loss.value_loss(batch, task=task)
        self._step(self.critic_optim, loss_q)
        self.stats["loss_qvalue"] = loss_q.detach()
        self.updates += 1
        if self.updates % every == 0:
            with autocast(self.precision):
                loss_pi, _ = self.loss.actor_loss(batch, task=task)
            self._step(self.actor_optim, loss_pi)
            self.stats["loss_actor"] = loss_pi.detach()
            if soft_update:
                self.soft_update()

    def _per_task_round(self, batch: TensorDictBase, actor_round: bool, soft_update: bool) -> None:
        loss = self.loss
        targets_fixed = not (actor_round and soft_update and loss.mode == "online")
        with autocast(self.precision):
            targets = loss.value_target(batch, task="rows") if targets_fixed else None
        q_losses, pi_losses = [], []
        for k, rows in enumerate(batch.unbind(0)):
            with autocast(self.precision):
                loss_q, _ = loss.value_loss(rows, task=k, target=None if targets is None else targets[:, k])
            self._step(self.critic_optim, loss_q)
            q_losses.append(loss_q.detach())
            if actor_round:
                with autocast(self.precision):
                    loss_pi, _ = loss.actor_loss(rows, task=k)
                self._step(self.actor_optim, loss_pi)
                pi_losses.append(loss_pi.detach())
                if soft_update:
                    self.soft_update()
        self.stats["loss_qvalue"] = torch.stack(q_losses).mean()
        if pi_losses:
            self.stats["loss_actor"] = torch.stack(pi_losses).mean()

    def _batched_update(self, batch: TensorDictBase, actor_round: bool, soft_update: bool) -> None:
        rows = {"task": "rows"} if isinstance(self.loss, TeacherDistillTD3Loss) else {}
        with autocast(self.precision):
            loss_q, _ = self.loss.value_loss(batch, **rows)
        loss_q = self.reduce(loss_q) if self.reduce else loss_q
        self._step(self.critic_optim, loss_q)
        self.stats["loss_qvalue"] = loss_q.detach().sum()
        if actor_round:
            with autocast(self.precision):
                loss_pi, _ = self.loss.actor_loss(batch, **rows)
            loss_pi = self.reduce(loss_pi) if self.reduce else loss_pi
            self._step(self.actor_optim, loss_pi)
            self.stats["loss_actor"] = loss_pi.detach().sum()
            if soft_update:
                self.soft_update()

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
        self.loss.load_state_dict(state["loss"], strict=False)
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.updates = state["updates"]


def due(step: int, every: int) -> bool:
    """Whether a periodic action (``*_every`` key; 0: never) falls on ``step``."""
    return every > 0 and step % every == 0


def make_value_estimator(loss: TD3Loss, gamma: float) -> None:
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)


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
    """N transitions of ``task`` drawn uniformly (with replacement) from its ring."""
    data = buffer.task_data(task)
    return data[torch.randint(data.shape[0], (n,))]


class OnlineCollector:
    """Steps the multi-task env with exploration and stores every transition in its task's ring (KTM-DRL §3.2's
    hierarchical replay D'_k); :meth:`sample` draws ``[K, N]``."""

    def __init__(self, env: MultiTaskEnv, capacity_per_task: int, batch_size_per_task: int):
        self.env = env
        self.num_tasks = env.suite.num_tasks
        self.buffer = PerTaskReplayBuffer(self.num_tasks, capacity_per_task, batch_size_per_task)
        self.episode_return = torch.zeros(self.num_tasks)
        self.td: TensorDictBase | None = None

    def step(self, actor: TensorDictModule, sigma: float, random: bool = False) -> list[float]:
        """One env step of every task; returns the returns of the episodes that just ended."""
        if self.td is None:
            self.td = self.env.reset()
        td = explore(actor, self.td, self.env.action_masks, sigma, random)
        td, self.td = self.env.step_and_maybe_reset(td)
        td = td.select(*STORED_KEYS, strict=False)
        done = td.get(("next", "done")).reshape(self.num_tasks)
        self.episode_return += td.get(("next", "reward")).reshape(self.num_tasks)
        self.buffer.extend(td)
        ended = self.episode_return[done].tolist() if bool(done.any()) else []
        self.episode_return[done] = 0.0
        return ended

    def sample(self) -> TensorDictBase:
        return self.buffer.sample()

    def ready(self, min_per_task: int) -> bool:
        return self.buffer.min_transitions() >= min_per_task


class EpisodeTurns:
    """KTM-DRL Table 3 "w/o HER" (the training of Rusu et al.): one task for a whole episode, then the next.

    Online (:meth:`step`): only the active task's env steps — each turn starts at an episode start and lasts until
    that episode ends (termination or time limit), so no env step is thrown away; its transitions go to the task's
    own ring and the update after each env step draws N transitions of that task only. Offline
    (:meth:`next_offline_task`): the updates draw from one teacher's buffer D_k for as many updates as an episode
    of task k has steps (its time limit), then from the next. A resumed run restarts the active task's episode.
    """

    def __init__(self, suite: Suite, seed: int, capacity_per_task: int, batch_size_per_task: int):
        self.suite, self.seed, self.batch_size = suite, seed, batch_size_per_task
        self.num_tasks = suite.num_tasks
        self.masks = action_masks(suite.act_dims, suite.act_max)
        self.onehot = torch.eye(self.num_tasks)
        self.buffer = PerTaskReplayBuffer(self.num_tasks, capacity_per_task, batch_size_per_task)
        self.envs = [PadSpaces(task.make(seed=seed + k), suite.obs_max, suite.act_max)
                     for k, task in enumerate(suite.tasks)]
        self._reset_seeds = [seed + k for k in range(self.num_tasks)]  # the first reset of each env is seeded
        self.active_task = 0  # online: the task whose episode runs
        self.offline_task, self.offline_position = 0, 0  # offline: the task of the turn, updates done in it
        self.obs: torch.Tensor | None = None

    def _row(self, observation: np.ndarray | torch.Tensor, task: int) -> dict[str, torch.Tensor]:
        return {"observation": torch.as_tensor(observation, dtype=torch.float32).reshape(1, -1),
                "task_id": torch.tensor([task]), "task_onehot": self.onehot[task: task + 1]}

    def step(self, actor: TensorDictModule, sigma: float) -> int:
        """One env step of the active task (stored in its ring); returns that task."""
        k = self.active_task
        env = self.envs[k]
        if self.obs is None:
            obs, _ = env.reset(seed=self._reset_seeds[k])
            self._reset_seeds[k] = None
            self.obs = torch.as_tensor(obs)
        td = TensorDict(self._row(self.obs, k), batch_size=[1])
        explore(actor, td, self.masks, sigma)
        obs, reward, terminated, truncated, _ = env.step(td.get("action")[0].numpy())
        done = bool(terminated or truncated)
        td.set("next", TensorDict({**self._row(obs, k), "reward": torch.tensor([[reward]], dtype=torch.float32),
                                   "done": torch.tensor([[done]]), "terminated": torch.tensor([[bool(terminated)]])},
                                  batch_size=[1]))
        self.buffer.extend(td)
        if done:
            self.active_task, self.obs = (k + 1) % self.num_tasks, None
        else:
            self.obs = torch.as_tensor(obs)
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


def max_average(rows: Sequence[dict], task_names: Sequence[str], stage: str | None = None) -> list[float]:
    """Per task, the max over evaluations of the mean return ("max average reward", KTM-DRL Tables 1–2)."""
    rows = [r for r in rows if stage is None or r.get("stage") == stage]
    out = []
    for name in task_names:
        values = [float(r[f"eval/{name}/return"]) for r in rows if r.get(f"eval/{name}/return") not in (None, "")]
        out.append(max(values) if values else float("nan"))
    return out


def teacher_returns(teachers_dir: str | Path, task_names: Sequence[str]) -> list[float] | None:
    """The teachers' ("Ideal") max average rewards saved by ``train_teachers``; ``None`` when unavailable."""
    out = []
    for name in task_names:
        path = Path(teachers_dir) / name / "eval.json"
        if not path.exists():
            return None
        out.append(float(json.loads(path.read_text())["max_average_return"]))
    return out


def write_results(run: TrainingRun, title: str, suite: Suite, method_rows: dict[str, list[float]],
                  ideal: list[float] | None, curve_label: str, extra: str = "") -> dict[str, Any]:
    """``results.md`` (Tables 1–2 and Table 3 layouts) and ``curves.png`` (Figures 2–3) in the run folder."""
    names = suite.task_names
    header = ["method", *names, "average"]

    def avg(values: list[float]) -> float:
        return sum(values) / len(values)

    rows = []
    if ideal is not None:
        rows.append(["Ideal (teachers)", *ideal, avg(ideal)])
    rows += [[label, *vals, avg(vals)] for label, vals in method_rows.items()]
    text = f"# {title}\n\nMax average reward per task (max over evaluations of the mean return; Tables 1–2 layout)\n\n"
    text += markdown_table(header, rows)
    summary: dict[str, Any] = {"max_average_reward": {k: dict(zip(names, v)) for k, v in method_rows.items()}}
    if ideal is not None:
        ratio_rows = []
        for label, vals in method_rows.items():
            ratios = [v / t if t > 0 else float("nan") for v, t in zip(vals, ideal)]
            valid = [r for r in ratios if r == r]
            ratio_rows.append([label, *ratios, avg(valid) if valid else float("nan")])
            summary.setdefault("ratio_to_teachers", {})[label] = dict(zip(names, ratios))
        text += ("\nPerformance ratio to the teachers (max average reward / teacher's; Table 3 layout; nan where "
                 "the teacher's return is not positive, the average is over the other tasks)\n\n"
                 + markdown_table(header, ratio_rows))
    text += extra
    write_text(run.dir / "results.md", text)
    plot_curves({curve_label: [run.evals.rows()]}, names, run.dir / "curves.png", title=title,
                references=None if ideal is None else {"Ideal (teachers)": ideal})
    return summary
