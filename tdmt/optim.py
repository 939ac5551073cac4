"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning") as a wrapper around any torch optimizer.

API summary
-----------
``opt = PCGrad(torch.optim.Adam(params, lr=...))``; each update: ``opt.zero_grad(); opt.backward(losses);
opt.step()`` with ``losses`` a ``[K]`` vector of per-task losses (e.g. ``MultiTaskSACLoss(...)["loss_qvalue"]``
or a KTM-DRL TD3 loss reduced per task — the "G-Surgery" baseline). ``project_conflicting(grads)`` is the pure
projection on a ``[K, P]`` matrix of flattened per-task gradients.

Algorithm (Yu et al. 2020, Alg. 1): for each task i, starting from ``g_i^PC = g_i``, for each *other* task
``j ≠ i`` in a random order, if ``g_i^PC · g_j < 0`` then ``g_i^PC ← g_i^PC - (g_i^PC · g_j) / ‖g_j‖² · g_j``
(with i itself in the order, a twice-projected gradient can conflict with its own ``g_i`` and be projected again);
the update direction is ``Σ_i g_i^PC`` (``reduction="sum"``, the paper) or its mean. The K per-task gradients come
from one batched backward (``autograd.grad(..., is_grads_batched=True)``); the projection runs K - 1 vectorised
steps over all i at once (every task i draws its own order of the others).

Used by ``sac_mt``/``ctpg`` with ``backbone=pcgrad`` (CTPG App. F.3 Table 6, "Adam w/ PCGrad").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

PCGRAD_REDUCTIONS = ("sum", "mean")


def project_conflicting(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``[K, P]`` per-task gradients → ``[K, P]`` projected gradients ``g_i^PC`` (Yu et al. 2020, Alg. 1).

    Task i is projected onto the *other* tasks' gradients only (``j ≠ i``), each task in its own random order.
    """
    if grads.dim() != 2 or grads.shape[0] < 1:
        raise ValueError(f"grads must be [K, P] with K >= 1, got shape {tuple(grads.shape)}")
    K = grads.shape[0]
    # drawn where the generator lives, else on the gradients' device (no copy from the host inside an update)
    keys = torch.rand(K, K, generator=generator, device=grads.device if generator is None else generator.device)
    keys.fill_diagonal_(2.0)  # i sorts last in its own row and is never used: K - 1 projections per task
    order = torch.argsort(keys, dim=1)[:, : K - 1].to(grads.device)
    sq_norm = (grads * grads).sum(-1).clamp_min(torch.finfo(grads.dtype).tiny)
    projected = grads.clone()
    for step in range(K - 1):
        j = order[:, step]
        other = grads[j]
        dot = (projected * other).sum(-1)
        projected = projected - (dot.clamp(max=0.0) / sq_norm[j]).unsqueeze(-1) * other
    return projected


class PCGrad:
    """Optimizer wrapper: ``backward(losses)`` writes the PCGrad direction into ``.grad``; ``step`` is the inner one.

    Args:
        optimizer: the inner optimizer (its parameters are the ones PCGrad differentiates).
        reduction: ``"sum"`` (Yu et al.) or ``"mean"`` of the projected per-task gradients.
        generator: random generator for the projection order (for reproducibility).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, reduction: str = "sum",
                 generator: torch.Generator | None = None):
        if reduction not in PCGRAD_REDUCTIONS:
            raise ValueError(f"PCGrad reduction={reduction!r} is not valid; valid: {list(PCGRAD_REDUCTIONS)}")
        self.optimizer, self.reduction, self.generator = optimizer, reduction, generator

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def _params(self) -> list[Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.requires_grad]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def per_task_grads(self, losses: Tensor, retain_graph: bool = False) -> Tensor:
        """``[K, P]`` flattened gradients of each ``losses[k]`` w.r.t. the optimizer's parameters."""
        if losses.dim() != 1:
            raise ValueError(f"losses must be a [K] vector of per-task losses, got shape {tuple(losses.shape)}")
        params = self._params()
        eye = torch.eye(losses.shape[0], dtype=losses.dtype, device=losses.device)
        grads = torch.autograd.grad(losses, params, grad_outputs=eye, is_grads_batched=True,
                                    retain_graph=retain_graph, allow_unused=True)
        return torch.cat([(torch.zeros(losses.shape[0], p.numel(), dtype=p.dtype, device=p.device) if g is None
                           else g.reshape(losses.shape[0], -1)) for g, p in zip(grads, params)], dim=1)

    def backward(self, losses: Tensor, retain_graph: bool = False) -> None:
        """Accumulate the PCGrad direction of the ``[K]`` per-task ``losses`` into the parameters' ``.grad``."""
        projected = project_conflicting(self.per_task_grads(losses, retain_graph), self.generator)
        direction = projected.sum(0) if self.reduction == "sum" else projected.mean(0)
        offset = 0
        for p in self._params():
            g = direction[offset: offset + p.numel()].view_as(p)
            offset += p.numel()
            p.grad = g.clone() if p.grad is None else p.grad + g

    def step(self, closure: Callable[[], float] | None = None):
        return self.optimizer.step(closure)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
