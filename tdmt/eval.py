"""Per-task evaluation: return (mean, std) and success rate over episodes, all tasks and episodes in one batch.

The evaluation env has ``num_envs_per_task = episodes``, so one rollout of the longest episode length runs
every episode of every task at once. Each row's first episode counts; steps after its first ``done`` are
ignored (the env auto-resets them inside ``rollout``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdmt.envs import MultiTaskEnv


@dataclass
class EvalResult:
    """Per-task metrics, each a list of K floats in task order."""

    task_names: list[str]
    return_mean: list[float]
    return_std: list[float]
    success_rate: list[float] | None

    def as_row(self, prefix: str = "eval") -> dict[str, float]:
        """Flat ``{eval/<task>/return: ...}`` dict for a metrics CSV row."""
        row = {}
        for k, name in enumerate(self.task_names):
            row[f"{prefix}/{name}/return"] = self.return_mean[k]
            row[f"{prefix}/{name}/return_std"] = self.return_std[k]
            if self.success_rate is not None:
                row[f"{prefix}/{name}/success"] = self.success_rate[k]
        row[f"{prefix}/mean_return"] = sum(self.return_mean) / len(self.return_mean)
        if self.success_rate is not None:
            row[f"{prefix}/mean_success"] = sum(self.success_rate) / len(self.success_rate)
        return row


def first_episode_mask(done: torch.Tensor) -> torch.Tensor:
    """``valid[..., t]`` true up to and including the first done along the time dim (the last dim)."""
    done = done.long()
    before = torch.cumsum(done, -1) - done
    return before == 0


@torch.no_grad()
def evaluate(env: MultiTaskEnv, policy: Callable[[TensorDictBase], TensorDictBase],
             exploration: ExplorationType = ExplorationType.DETERMINISTIC,
             callback: Callable[[MultiTaskEnv, TensorDictBase], None] | None = None) -> EvalResult:
    """Run one episode in every row of ``env`` (batch ``[K]`` or ``[K, E]``) with ``policy``; ``callback(env, td)``
    is TorchRL ``rollout``'s per-step hook (e.g. rendering frames).

    ``policy`` runs where ``env`` hands its batches over (``make_env(device=)``: a CUDA actor with a CUDA env); the
    figures are read to the host once, at the end."""
    steps = max(t.max_episode_steps for t in env.suite.tasks)
    with set_exploration_type(exploration):
        rollout = env.rollout(steps, policy, break_when_any_done=False, callback=callback)
    # rollout: [K, (E,) T]
    reward = rollout.get(("next", "reward")).squeeze(-1)
    valid = first_episode_mask(rollout.get(("next", "done")).squeeze(-1))
    returns = (reward * valid).sum(-1).reshape(env.suite.num_tasks, -1)
    success = None
    if env.suite.success_metric:
        hit = (rollout.get(("next", "success")).squeeze(-1) * valid).amax(-1).reshape(env.suite.num_tasks, -1)
        success = (hit > 0).float().mean(-1).tolist()
    std = returns.std(-1, unbiased=False) if returns.shape[-1] > 1 else torch.zeros_like(returns[:, 0])
    return EvalResult(env.suite.task_names, returns.mean(-1).tolist(), std.tolist(), success)


def eval_summary(rows: list[dict], task_names: list[str], success_metric: bool) -> dict:
    """Final and best evaluation figures of a run from its ``eval.csv`` rows (``EvalResult.as_row`` columns):
    ``final_mean_return``, ``max_mean_return``, ``final_return`` per task, and the success rates when defined."""
    last = rows[-1]
    mean_returns = [float(r["eval/mean_return"]) for r in rows]
    summary = {"final_mean_return": mean_returns[-1], "max_mean_return": max(mean_returns),
               "final_return": {t: float(last[f"eval/{t}/return"]) for t in task_names}}
    if success_metric:
        summary["final_mean_success"] = float(last["eval/mean_success"])
        summary["final_success"] = {t: float(last[f"eval/{t}/success"]) for t in task_names}
    return summary
