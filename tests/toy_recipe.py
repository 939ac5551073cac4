"""A tiny but real recipe for launcher and checkpoint tests: deterministic-policy actor-critic (DDPG-style) on
``pendulum-mt3`` with per-task stacked networks, a :class:`PerTaskReplayBuffer` and :class:`TrainingRun`.

It follows the recipe contract (``Config`` dataclass + ``run(cfg) -> summary``), resumes from ``run_dir``, and is
deterministic given the seed. Two test-only knobs: ``crash_at_step`` raises :class:`SimulatedCrash` (like a
SIGKILL: nothing is saved past the last periodic checkpoint) and ``step_delay_s`` stretches each step so a
preemption can land mid-run on the test cluster.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import ClassVar

import torch
from tensordict import TensorDict
from tqdm import tqdm

from tdmt.algos.run import TrainingRun
from tdmt.config import parse_args
from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import get_suite, make_env
from tdmt.errors import cli_errors
from tdmt.eval import evaluate
from tdmt.modules import StackedMLP
from tdmt.report import markdown_table, plot_curves, write_text


class SimulatedCrash(RuntimeError):
    """Raised by ``crash_at_step``: the process dies without saving, as after a SIGKILL."""


@dataclasses.dataclass
class Config:
    suite: str = "pendulum-mt3"
    seed: int = 0
    run_dir: str = ""
    total_steps: int = 300
    eval_every: int = 100
    eval_episodes: int = 1
    checkpoint_every: int = 50
    hidden: int = 16
    lr: float = 1e-3
    gamma: float = 0.98
    noise: float = 0.3
    batch_size_per_task: int = 16
    capacity_per_task: int = 10_000
    crash_at_step: int = 0
    step_delay_s: float = 0.0

    # Test knobs and where it runs may change on resume; the step budget may grow (tdmt.algos.run.check_resume).
    FREE_KEYS: ClassVar[tuple[str, ...]] = ("run_dir", "checkpoint_every", "crash_at_step", "step_delay_s")
    BUDGET_KEYS: ClassVar[tuple[str, ...]] = ("total_steps",)

    def validate(self) -> None:
        if self.eval_every < 1 or self.total_steps < 1:
            raise ValueError(f"eval_every and total_steps must be >= 1, got {self.eval_every}, {self.total_steps}")
        if not self.run_dir:
            self.run_dir = f"runs/toy/{self.suite}/seed{self.seed}"


class ActorCritic(torch.nn.Module):
    """Per-task actor ``a = tanh(mu_k(s))`` and critic ``Q_k(s, a)``, stacked over the K tasks."""

    def __init__(self, num_tasks: int, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.actor = StackedMLP(num_tasks, obs_dim, act_dim, hidden=(hidden,))
        self.critic = StackedMLP(num_tasks, obs_dim + act_dim, 1, hidden=(hidden, hidden))

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` [K, N, obs] -> actions [K, N, act] in [-1, 1]."""
        return torch.tanh(self.actor(obs))

    def q(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.critic(torch.cat([obs, action], -1)).squeeze(-1)


def _update(model: ActorCritic, optim: torch.optim.Optimizer, batch: TensorDict, gamma: float) -> dict[str, float]:
    """One DDPG step on a [K, N] batch (Lillicrap et al. 2016), all tasks at once:
    ``L_Q = (Q(s,a) - r - gamma (1-d) Q(s', mu(s')))^2`` and ``L_mu = -Q(s, mu(s))``."""
    obs, action = batch["observation"], batch["action"]
    reward = batch["next", "reward"].squeeze(-1) / 10.0
    done = batch["next", "terminated"].squeeze(-1).float()
    with torch.no_grad():
        nxt = batch["next", "observation"]
        target = reward + gamma * (1 - done) * model.q(nxt, model.act(nxt))
    critic_loss = (model.q(obs, action) - target).pow(2).mean()
    actor_loss = -model.q(obs, model.act(obs)).mean()
    optim.zero_grad()
    (critic_loss + actor_loss).backward()
    optim.step()
    return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item()}


def run(cfg: Config) -> dict:
    cfg.validate()
    torch.manual_seed(cfg.seed)
    suite = get_suite(cfg.suite)
    env = make_env(cfg.suite, seed=cfg.seed, task_onehot=False)
    eval_env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes, task_onehot=False)
    k = suite.num_tasks
    model = ActorCritic(k, suite.obs_max, suite.act_max, cfg.hidden)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rb = PerTaskReplayBuffer(k, cfg.capacity_per_task, cfg.batch_size_per_task)
    counters = {"updates": 0, "env_steps": 0}
    buffers = {"replay": rb}

    def get_state() -> dict:
        return {"model": model.state_dict(), "optim": optim.state_dict(), "counters": dict(counters)}

    def load_state(state: dict) -> None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        counters.update(state["counters"])

    def policy(td):
        obs = td["observation"].reshape(k, -1, suite.obs_max)
        return td.set("action", model.act(obs).reshape(*td.batch_size, suite.act_max))

    run_ = TrainingRun(cfg.run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    start = step = run_.resume(load_state, buffers)
    td = env.reset()
    with run_.guard(get_state, buffers) as guard:
        for step in tqdm(range(start + 1, cfg.total_steps + 1), desc=f"toy {cfg.run_dir}", disable=None):
            with torch.no_grad():
                action = model.act(td["observation"][:, None])[:, 0]
                action = (action + cfg.noise * torch.randn_like(action)).clamp(-1, 1)
            transition, td = env.step_and_maybe_reset(td.set("action", action))
            rb.extend(transition)
            counters["env_steps"] += k
            if step >= 10:
                counters["updates"] += 1
                losses = _update(model, optim, rb.sample(), cfg.gamma)
                run_.metrics.log(step, **losses, updates=counters["updates"])
            if step % cfg.eval_every == 0 or step == cfg.total_steps:
                run_.evals.log(step, **evaluate(eval_env, policy).as_row(), env_steps=counters["env_steps"])
            if cfg.crash_at_step == step:
                raise SimulatedCrash(f"simulated crash at step {step}")
            run_.maybe_checkpoint(step, get_state, buffers)
            guard.check(step)
            time.sleep(cfg.step_delay_s)
    rows = run_.evals.rows()
    last = rows[-1]
    returns = {t: float(last[f"eval/{t}/return"]) for t in suite.task_names}
    write_text(run_.dir / "results.md", markdown_table(["task", "return"], [[t, r] for t, r in returns.items()]))
    plot_curves({"toy": [rows]}, suite.task_names, run_.dir / "curves.png")
    summary = {"steps": step, "env_steps": counters["env_steps"], "updates": counters["updates"],
               "final_return": returns, "resumed_from": run_.resumed_from}
    run_.finish(summary)
    env.close()
    eval_env.close()
    return summary


if __name__ == "__main__":
    with cli_errors("toy"):
        run(parse_args(Config, sys.argv[1:]))
