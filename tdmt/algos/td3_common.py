"""What the TD3-family recipes share (teachers, KTM-DRL, TD3-MT): the student, one batched update, exploration,
the online stage (per-task replay or episodic task switching), evaluation rows and the results report.

One "multi-task step" = one env step in each of the K tasks (one batched env) + one update on a ``[K, N]`` batch
(N transitions of every task). The public reference code runs K sequential per-task updates instead; a batched
update computes the same per-task terms in one pass (see ``benchmarks/ktm_step.py``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.objectives import SoftUpdate, TD3Loss, ValueEstimators

from tdmt.algos.run import TrainingRun
from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import MultiTaskEnv, Suite, get_suite
from tdmt.eval import evaluate
from tdmt.optim import PCGrad
from tdmt.report import markdown_table, plot_curves, write_text

PRECISIONS = ("float32", "bfloat16")
EVAL_SEED = 10_000  # evaluation envs use seed EVAL_SEED + run seed


@dataclass
class TD3Config:
    """The settings every TD3-family recipe shares; defaults follow KTM-DRL §4 / TD3 (Fujimoto et al. 2018):
    2×400 ReLU, Adam 3e-4, batch 256 per task, 1e6 transitions per task, γ 0.99, τ 0.005, policy delay 2,
    target noise N(0, 0.2²) clipped at 0.5, exploration N(0, 0.1²), evaluation every 5k steps (10 episodes)."""

    suite: str = "halfcheetah-mt8"
    seed: int = 0
    run_dir: str = ""
    hidden: tuple[int, ...] = (400, 400)
    lr: float = 3e-4
    batch_size: int = 256
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    tau: float = 0.005
    policy_delay: int = 2
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    expl_noise: float = 0.1
    eval_every: int = 5000
    eval_episodes: int = 10
    checkpoint_every: int = 50_000
    threads: int = 1
    precision: Literal["float32", "bfloat16"] = "float32"
    progress: bool = True

    def validate(self) -> None:
        get_suite(self.suite)
        for name in ("batch_size", "buffer_size", "eval_every", "eval_episodes", "policy_delay", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def default_run_dir(recipe: str, suite: str, seed: int) -> str:
    return f"runs/{recipe}/{suite}/seed{seed}"


def autocast(precision: str):
    """bf16 autocast on CPU (DESIGN §7: 1.3–1.9× on avx512_bf16) or a no-op for float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid; valid: {list(PRECISIONS)}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


@dataclass
class TD3Learner:
    """A TD3-style loss with its two Adam optimisers, soft target updates and update counter.

    ``reduce`` turns ``reduction="none"`` losses into the scalar to minimise (default: the loss is a scalar);
    with ``pcgrad=True`` (G-Surgery, Yu et al. 2020) it must give the ``[K]`` per-task losses instead.
    """

    loss: TD3Loss
    lr: float
    tau: float
    policy_delay: int = 2
    precision: str = "float32"
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    pcgrad: bool = False
    updates: int = 0
    actor_optim: torch.optim.Optimizer = field(init=False)
    critic_optim: torch.optim.Optimizer = field(init=False)
    target_updater: SoftUpdate = field(init=False)

    def __post_init__(self):
        self.actor_optim = torch.optim.Adam(list(self.loss.actor_network_params.values(True, True)), lr=self.lr)
        self.critic_optim = torch.optim.Adam(list(self.loss.qvalue_network_params.values(True, True)), lr=self.lr)
        if self.pcgrad:
            self.actor_optim, self.critic_optim = PCGrad(self.actor_optim), PCGrad(self.critic_optim)
        self.target_updater = SoftUpdate(self.loss, tau=self.tau)

    def update(self, batch: TensorDictBase, actor_every: int | None = None, soft_update: bool = True
               ) -> dict[str, float]:
        """One critic step; an actor step (+ soft target update) every ``actor_every`` (default d) updates."""
        every = self.policy_delay if actor_every is None else actor_every
        with autocast(self.precision):
            loss_q, _ = self.loss.value_loss(batch)
        loss_q = self.reduce(loss_q) if self.reduce else loss_q
        self._step(self.critic_optim, loss_q)
        out = {"loss_qvalue": loss_q.sum().item()}
        self.updates += 1
        if self.updates % every == 0:
            with autocast(self.precision):
                loss_pi, _ = self.loss.actor_loss(batch)
            loss_pi = self.reduce(loss_pi) if self.reduce else loss_pi
            self._step(self.actor_optim, loss_pi)
            out["loss_actor"] = loss_pi.sum().item()
            if soft_update:
                self.target_updater.step()
        return out

    def _step(self, optim: torch.optim.Optimizer | PCGrad, loss: torch.Tensor) -> None:
        """Minimise ``loss`` (a scalar; with PCGrad, the ``[K]`` vector of per-task losses)."""
        optim.zero_grad(set_to_none=True)
        if self.pcgrad:
            optim.backward(loss.float())
        else:
            loss.float().backward()
        optim.step()

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


def make_value_estimator(loss: TD3Loss, gamma: float) -> None:
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)


@torch.no_grad()
def explore(actor: TensorDictModule, td: TensorDictBase, masks: torch.Tensor, sigma: float,
            random: bool = False) -> TensorDictBase:
    """``a = g^k(clip(π(ŝ) + N(0, σ²), -1, 1))`` (or uniform random when ``random``); padded dims are 0."""
    if random:
        action = torch.rand(*td.shape, masks.shape[-1]) * 2 - 1
    else:
        action = actor(td.select(*actor.in_keys)).get("action")
        action = (action + sigma * torch.randn_like(action)).clamp(-1.0, 1.0)
    td.set("action", action * masks[td.get("task_id")])
    return td


class SharedReplayBuffer(TensorDictReplayBuffer):
    """One FIFO buffer for all tasks (the "w/o per-task replay" ablation); saving works while it is empty."""

    def __init__(self, capacity: int, batch_size: int):
        super().__init__(storage=LazyTensorStorage(capacity), batch_size=batch_size)

    def dumps(self, path: str | Path) -> None:
        if len(self):
            super().dumps(path)
        else:
            Path(path).mkdir(parents=True, exist_ok=True)

    def loads(self, path: str | Path) -> None:
        if (Path(path) / "storage").exists():
            super().loads(path)


class OnlineCollector:
    """Steps the multi-task env with exploration and stores transitions.

    ``per_task_replay=True``: every task steps and every transition goes to its task's ring (KTM-DRL §3.2).
    ``False`` (Table 3 "w/o per-task replay"): one task for a whole episode, then the next; only that task's
    transitions are stored, in one shared FIFO buffer sampled uniformly (flat batches with ``task_id``).
    """

    STORED_KEYS = ("observation", "task_id", "task_onehot", "action", ("next", "observation"), ("next", "task_id"),
                   ("next", "task_onehot"), ("next", "reward"), ("next", "done"), ("next", "terminated"))

    def __init__(self, env: MultiTaskEnv, capacity_per_task: int, batch_size_per_task: int,
                 per_task_replay: bool = True):
        self.env, self.per_task_replay = env, per_task_replay
        self.num_tasks = env.suite.num_tasks
        self.batch_size_per_task = batch_size_per_task
        if per_task_replay:
            self.buffer = PerTaskReplayBuffer(self.num_tasks, capacity_per_task, batch_size_per_task)
        else:
            self.buffer = SharedReplayBuffer(self.num_tasks * capacity_per_task, self.num_tasks * batch_size_per_task)
        self.active_task = 0
        self.episode_return = torch.zeros(self.num_tasks)
        self.td: TensorDictBase | None = None

    def step(self, actor: TensorDictModule, sigma: float, random: bool = False) -> list[float]:
        """One env step of every task; returns the returns of the episodes that just ended (of stored tasks)."""
        if self.td is None:
            self.td = self.env.reset()
        td = explore(actor, self.td, self.env.action_masks, sigma, random)
        td, self.td = self.env.step_and_maybe_reset(td)
        td = td.select(*self.STORED_KEYS, strict=False)
        done = td.get(("next", "done")).reshape(self.num_tasks)
        self.episode_return += td.get(("next", "reward")).reshape(self.num_tasks)
        ended = []
        if self.per_task_replay:
            self.buffer.extend(td)
            ended = self.episode_return[done].tolist()
        else:
            self.buffer.extend(td[self.active_task: self.active_task + 1])
            if bool(done[self.active_task]):
                ended = [float(self.episode_return[self.active_task])]
                self.active_task = (self.active_task + 1) % self.num_tasks
        self.episode_return[done] = 0.0
        return ended

    def sample(self) -> TensorDictBase:
        return self.buffer.sample()

    def ready(self, min_per_task: int) -> bool:
        if self.per_task_replay:
            return self.buffer.min_transitions() >= min_per_task
        return len(self.buffer) >= min_per_task


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
    plot_curves({curve_label: [run.evals.rows()]}, names, run.dir / "curves.png", title=title)
    return summary
