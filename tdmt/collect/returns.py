"""Training-episode returns per task, kept on the device while the env steps and read at logging intervals."""

from __future__ import annotations

import torch


class EpisodeReturns:
    """Training-episode returns per task, summed on the device as the env steps (no host read: a mask, not a
    branch, at episode ends) and read by :meth:`pop` at logging intervals."""

    def __init__(self, num_tasks: int, device: torch.device, envs_per_task: int = 1):
        self.running = torch.zeros(num_tasks, envs_per_task, device=device)  # of the episodes under way
        self.total = torch.zeros(num_tasks, device=device)  # of the episodes finished since the last pop
        self.count = torch.zeros(num_tasks, device=device)

    def add(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        """One env step: ``reward``/``done`` of shape ``[K, ...]`` (row k: task k)."""
        ended = done.reshape(self.running.shape).to(self.running.dtype)
        running = self.running + reward.reshape(self.running.shape)
        self.total += (running * ended).sum(-1)
        self.count += ended.sum(-1)
        self.running = running * (1 - ended)

    def pop(self) -> dict[int, float]:
        """Mean return per task of the episodes finished since the last call (tasks with none are left out); reads
        the device once."""
        total, count = torch.stack([self.total, self.count]).tolist()
        self.total.zero_()
        self.count.zero_()
        return {k: t / c for k, (t, c) in enumerate(zip(total, count)) if c > 0}
