"""Per-task parameters stacked along a leading task dim ``K`` and applied with one ``baddbmm`` (DESIGN §2).

``StackedLinear`` is the building block of per-task heads (MHSAC, multi-head A2C) and of K teachers trained or
evaluated as one batched model. Inputs are ``[K, N, in]`` (row k goes through stack k); a flat batch ``[B, in]``
with a ``task_id`` of shape ``[B]`` is also accepted (every stack is applied and row b keeps stack
``task_id[b]``'s output: K× the arithmetic, so the ``[K, N]`` layout is the fast path).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def check_size(name: str, value: int) -> None:
    """One-line ``ValueError`` unless ``value`` is an int >= 1 (a count or a layer width)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; valid: an int >= 1")


def check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    """``hidden`` as a tuple of layer widths, each an int >= 1 (may be empty: a linear map)."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden={hidden!r} is not valid; valid: a list of layer widths, each an int >= 1")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden={list(hidden)!r} is not valid; valid: a list of layer widths, each an int >= 1")
    return tuple(hidden)


class StackedLinear(nn.Module):
    """K independent linear maps: ``y[k] = x[k] @ W[k] + b[k]`` with ``W`` of shape ``[K, in, out]``.

    Each stack is initialised as ``nn.Linear`` would be (uniform ±1/sqrt(in)).
    """

    def __init__(self, num_stacks: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        for name, value in (("num_stacks", num_stacks), ("in_features", in_features), ("out_features", out_features)):
            check_size(name, value)
        self.num_stacks, self.in_features, self.out_features = num_stacks, in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(num_stacks, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_stacks, 1, out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[K, N, in]`` (or ``[K, in]``) → ``[K, N, out]`` (or ``[K, out]``)."""
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(1)
        if x.shape[0] != self.num_stacks:
            raise ValueError(f"leading dim {x.shape[0]} != number of stacks {self.num_stacks}")
        lead = x.shape[1:-1]
        x3 = x.reshape(self.num_stacks, -1, self.in_features)
        y = torch.bmm(x3, self.weight) if self.bias is None else torch.baddbmm(self.bias, x3, self.weight)
        y = y.reshape(self.num_stacks, *lead, self.out_features)
        return y.squeeze(1) if squeeze else y

    def extra_repr(self) -> str:
        return f"num_stacks={self.num_stacks}, in={self.in_features}, out={self.out_features}"


class StackedMLP(nn.Module):
    """K independent MLPs ``in → hidden… → out`` evaluated together; ``[K, N, in] → [K, N, out]``."""

    def __init__(self, num_stacks: int, in_features: int, out_features: int,
                 hidden: Sequence[int] = (400, 400), activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        sizes = [in_features, *check_hidden(hidden), out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(StackedLinear(num_stacks, a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
        self.net = nn.Sequential(*layers)
        self.num_stacks, self.in_features, self.out_features = num_stacks, in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def apply_per_task(module: nn.Module, x: torch.Tensor, task_id: torch.Tensor | None, num_tasks: int) -> torch.Tensor:
    """Apply a stacked ``module`` to ``[K, N, ...]`` data, or to a flat ``[B, ...]`` batch labelled by ``task_id``.

    The flat path broadcasts ``x`` to every stack and keeps row b of stack ``task_id[b]``; the ids are range-checked
    where they live, without waiting for the device (on the CPU it raises at once).
    """
    if task_id is None:
        return module(x)
    if task_id.shape != x.shape[:-1] or x.dim() != 2:
        raise ValueError(f"flat input needs x [B, F] and task_id [B]; got {tuple(x.shape)} and {tuple(task_id.shape)}")
    torch._assert_async(((task_id >= 0) & (task_id < num_tasks)).all(), f"task_id out of range [0, {num_tasks})")
    out = module(x.unsqueeze(0).expand(num_tasks, *x.shape))
    return out[task_id, torch.arange(x.shape[0], device=x.device)]
