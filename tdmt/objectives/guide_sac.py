"""CTPG guide policy loss: discrete SAC over the K control policies, one head per task (He et al. 2024, §4.1–4.2).

For task i (row i of a ``[K, N]`` batch of guide transitions ``(s, j, R, s', n, terminated)``), with guide actor
``π^g_i(j|s) = softmax(logits_i(s))``, twin guide critics ``Q^g_{i,1..2}``, targets ``Q^g'``, and per-task guide
temperature ``α^g_i``:

* critic (Eq. 5–6, discrete SAC of Christodoulou 2019):
  ``y = R + γ^n (1 - terminated) Σ_j π^g_i(j|s') [min_m Q^g'_{i,m}(s', j) - α^g_i log π^g_i(j|s')]``,
  ``L_Q = Σ_m ℓ(Q^g_{i,m}(s, j), y)``;
* comparable critic (Eq. 13): ``y_c = R + B + γ^n (1 - terminated) Σ_j π^g_i(j|s') min_m Q^c'_{i,m}(s', j)`` with
  ``B = Σ_{k<n} γ^k (-α_i log π_i(ã_k|s_{t+k}))`` the entropy of task i's own control policy along the block
  (computed by :func:`tdmt.collect.own_entropy_bonus`, stored under ``own_entropy_bonus``); no guide entropy;
* actor (Eq. 18): ``L_π = Σ_j π^g_i(j|s) [α^g_i log π^g_i(j|s) - min_m Q^g_{i,m}(s, j)]`` (critic detached);
* temperature: ``L_α = -log α^g_i (Σ_j π^g_i(j|s) log π^g_i(j|s) + H̄)``, ``H̄ = 0.98 log K`` (``alpha_loss="log_alpha"``,
  TorchRL's form), or ``L_α = α^g_i (H(π^g_i(·|s)) - H̄)`` (``"alpha"``, the public CTPG code's ``guide_sac.py``).

Batches are ``[T, N]`` with one task per row (``task_id`` picks the head and α^g; in the trainer the rows hold the
tasks not blocked by the guide-block gate, weighted by ``active``).

With ``n = 1`` these are exactly TorchRL's ``DiscreteSACLoss`` terms (same target, ``log(p)`` with the same 1e-8
floor, same ``ℓ``), applied per task (checked in ``tests/test_ctpg_guide_loss.py``). ``active`` weighs the rows: every
loss is ``Σ active·ℓ / Σ active``; a bool mask (false: a task blocked by the guide-block gate, which contributes
nothing) or nonnegative float weights (the trainer's fixed-shape batch gives each unblocked task the same total).

Networks (:func:`make_guide_networks`): a shared trunk on ``observation`` with one ``StackedLinear`` head per task,
applied to rows of one task each (CTPG App. F.3: "multi-head (1 head / task)").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.utils import _vmap_func, distance_loss

from tdmt.modules import StackedLinear

__all__ = ["GuideDiscreteSACLoss", "MultiHeadMLP", "make_guide_networks"]


class MultiHeadMLP(nn.Module):
    """Shared ReLU trunk ``in → hidden…`` and K heads ``hidden[-1] → out``: ``[T, ..., in] → [T, ..., out]``.

    Leading row t goes through head ``task_id[t, ...]`` (one task per leading row, as in ``[K, N]`` replay samples,
    ``[K, E]`` env batches, or any subset of their rows); the full ``[K, ...]`` layout uses the heads as stacked.
    """

    def __init__(self, num_tasks: int, in_features: int, out_features: int, hidden: Sequence[int] = (400, 400)):
        super().__init__()
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.heads = StackedLinear(num_tasks, sizes[-1], out_features)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        # the heads of the rows' tasks, gathered (no host read of task_id: the same kernel for every layout)
        rows = task_id.reshape(h.shape[0], -1)[:, 0]
        h3 = h.reshape(h.shape[0], -1, h.shape[-1])
        y = torch.baddbmm(self.heads.bias[rows], h3, self.heads.weight[rows])
        return y.reshape(*h.shape[:-1], -1)


def make_guide_networks(num_tasks: int, obs_dim: int, hidden: Sequence[int] = (400, 400)
                        ) -> tuple[TensorDictModule, TensorDictModule, TensorDictModule]:
    """Guide actor (``observation, task_id → logits``), guide critic (``→ action_value``), comparable critic
    (``→ comp_action_value``); each a :class:`MultiHeadMLP` with K outputs (one per candidate policy)."""
    def net() -> MultiHeadMLP:
        return MultiHeadMLP(num_tasks, obs_dim, num_tasks, hidden)

    keys = ["observation", "task_id"]
    return (TensorDictModule(net(), in_keys=keys, out_keys=["logits"]),
            TensorDictModule(net(), in_keys=keys, out_keys=["action_value"]),
            TensorDictModule(net(), in_keys=keys, out_keys=["comp_action_value"]))


class GuideDiscreteSACLoss(LossModule):
    """Guide critic, comparable guide critic, guide actor and guide temperature losses (see the module docstring).

    Args:
        actor_network: ``observation → logits`` ``[K, N, K]``.
        qvalue_network: ``observation → action_value``; duplicated ``num_qvalue_nets`` times, with targets.
        comp_qvalue_network: ``observation → comp_action_value``; duplicated, with targets.
        num_tasks: K (number of tasks = number of candidate policies).
        alpha_init: initial guide temperature (all tasks).
        target_entropy_weight: ``H̄ = weight · log K`` (0.98, as TorchRL's ``DiscreteSACLoss``).
        loss_function: ``"l2"`` (default), ``"l1"`` or ``"smooth_l1"``.
        alpha_loss: ``"log_alpha"`` (TorchRL) or ``"alpha"`` (the public CTPG code): the temperature loss form.

    Input ``[T, N]`` keys (row t holds one task: a ``[K, N]`` replay sample or a subset of its rows):
    ``observation``, ``task_id``, ``action`` (int64 j), ``num_steps`` (n, optional: 1), ``own_entropy_bonus``
    (optional: 0), ``active`` (bool or float weights, optional: all 1), ``("next", observation|reward|terminated)``.
    The discount is set by ``make_value_estimator(ValueEstimators.TD0, gamma=...)`` (default 0.99), raised to the
    power ``n``.
    """

    @dataclass
    class _AcceptedKeys:
        """Keys of the input TensorDict (changeable with :meth:`set_keys`)."""

        action: NestedKey = "action"
        logits: NestedKey = "logits"
        action_value: NestedKey = "action_value"
        comp_action_value: NestedKey = "comp_action_value"
        reward: NestedKey = "reward"
        terminated: NestedKey = "terminated"
        num_steps: NestedKey = "num_steps"
        entropy_bonus: NestedKey = "own_entropy_bonus"
        active: NestedKey = "active"
        task_id: NestedKey = "task_id"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    default_value_estimator = ValueEstimators.TD0
    out_keys = ["loss_qvalue", "loss_comp_qvalue", "loss_actor", "loss_alpha", "guide_alpha", "guide_entropy"]

    actor_network: TensorDictModule
    qvalue_network: TensorDictModule
    comp_qvalue_network: TensorDictModule
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    comp_qvalue_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    target_comp_qvalue_network_params: TensorDictParams

    def __init__(self, actor_network: TensorDictModule, qvalue_network: TensorDictModule,
                 comp_qvalue_network: TensorDictModule, *, num_tasks: int, num_qvalue_nets: int = 2,
                 alpha_init: float = 1.0, target_entropy_weight: float = 0.98, loss_function: str = "l2",
                 alpha_loss: str = "log_alpha"):
        super().__init__()
        for name, value, ok, valid in (
                ("num_tasks", num_tasks, num_tasks >= 2, ">= 2 (the guide chooses among K policies)"),
                ("num_qvalue_nets", num_qvalue_nets, num_qvalue_nets >= 1, ">= 1"),
                ("alpha_init", alpha_init, alpha_init > 0, "> 0"),
                ("target_entropy_weight", target_entropy_weight, 0 < target_entropy_weight <= 1, "(0, 1]")):
            if not ok:
                raise ValueError(f"GuideDiscreteSACLoss {name}={value!r} is out of range; valid: {valid}")
        for name, value, valid in (("loss_function", loss_function, ("l2", "l1", "smooth_l1")),
                                   ("alpha_loss", alpha_loss, ("alpha", "log_alpha"))):
            if value not in valid:
                raise ValueError(f"GuideDiscreteSACLoss {name}={value!r} is not valid; valid: {list(valid)}")
        self.alpha_loss_form = alpha_loss
        self.num_tasks, self.num_qvalue_nets, self.loss_function = num_tasks, num_qvalue_nets, loss_function
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(qvalue_network, "qvalue_network", num_qvalue_nets, create_target_params=True)
        self.convert_to_functional(comp_qvalue_network, "comp_qvalue_network", num_qvalue_nets,
                                   create_target_params=True)
        self.log_alpha = nn.Parameter(torch.full((num_tasks,), math.log(alpha_init)))
        self.register_buffer("target_entropy", torch.tensor(target_entropy_weight * math.log(num_tasks)))
        self.register_buffer("gamma", torch.tensor(0.99))
        self._vmap_q = _vmap_func(self.qvalue_network, (None, 0))
        self._vmap_qc = _vmap_func(self.comp_qvalue_network, (None, 0))

    # ------------------------------------------------------------------ TorchRL plumbing
    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams) -> GuideDiscreteSACLoss:
        """Only TD0 (n-step through ``num_steps``) is meaningful here; ``gamma`` sets the per-step discount."""
        if value_type not in (None, ValueEstimators.TD0):
            raise ValueError(f"GuideDiscreteSACLoss supports value_type TD0 only, got {value_type}")
        if "gamma" in hyperparams:
            self.gamma.fill_(float(hyperparams["gamma"]))
        return self

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self) -> list[NestedKey]:
        k = self.tensor_keys
        return ["observation", k.task_id, k.action, k.num_steps, k.entropy_bonus, k.active, ("next", "observation"),
                ("next", k.reward), ("next", k.terminated)]

    # ------------------------------------------------------------------ pieces
    def _net_input(self, td: TensorDictBase) -> TensorDictBase:
        return td.select("observation", self.tensor_keys.task_id).clone(False)

    def _logits(self, td: TensorDictBase) -> torch.Tensor:
        with self.actor_network_params.to_module(self.actor_network):
            return self.actor_network(self._net_input(td)).get(self.tensor_keys.logits)

    @torch.no_grad()
    def guide_logits(self, td: TensorDictBase) -> torch.Tensor:
        """Guide actor logits ``[T, ..., K]`` on ``observation``/``task_id`` rows (for acting)."""
        return self._logits(td)

    @torch.no_grad()
    def comparable_q(self, td: TensorDictBase) -> torch.Tensor:
        """``min_m Q^c_{i,m}(s, ·)`` ``[T, ..., K]`` (current comparable critics; for the policy-filter gate)."""
        return self._q(self._vmap_qc, td, self.comp_qvalue_network_params, self.tensor_keys.comp_action_value).min(0)[0]

    def _q(self, vmap_fn, td: TensorDictBase, params, key: NestedKey) -> torch.Tensor:
        return vmap_fn(self._net_input(td), params).get(key)

    def _reduce(self, loss: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        w = active.to(loss.dtype)
        return (loss * w).sum() / w.sum().clamp_min(1.0)

    @torch.no_grad()
    def _targets(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.tensor_keys
        nxt = td.get("next").clone(False).set(k.task_id, td.get(k.task_id))
        probs = torch.softmax(self._logits(nxt), -1)
        log_p = torch.log(torch.where(probs == 0, torch.full_like(probs, 1e-8), probs))
        alpha = self.log_alpha.detach().exp()[td.get(k.task_id)].unsqueeze(-1)
        min_q = self._q(self._vmap_q, nxt, self.target_qvalue_network_params, k.action_value).min(0)[0]
        min_qc = self._q(self._vmap_qc, nxt, self.target_comp_qvalue_network_params, k.comp_action_value).min(0)[0]
        v_next = (probs * (min_q - alpha * log_p)).sum(-1)
        vc_next = (probs * min_qc).sum(-1)
        reward = nxt.get(k.reward).squeeze(-1)
        steps = td.get(k.num_steps, None)
        discount = self.gamma ** (torch.ones_like(reward) if steps is None else steps.to(reward.dtype))
        not_term = 1.0 - nxt.get(k.terminated).squeeze(-1).to(reward.dtype)
        bonus = td.get(k.entropy_bonus, None)
        bonus = torch.zeros_like(reward) if bonus is None else bonus.to(reward.dtype)
        return reward + discount * not_term * v_next, reward + bonus + discount * not_term * vc_next

    def _chosen(self, values: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        index = action.long().unsqueeze(0).unsqueeze(-1).expand(values.shape[0], *action.shape, 1)
        return values.gather(-1, index).squeeze(-1)

    # ------------------------------------------------------------------ loss
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        k = self.tensor_keys
        task_id = tensordict.get(k.task_id)
        if tensordict.batch_dims != 2:
            raise ValueError(f"guide batch must be [T, N] with one task per row (a [K, N] replay sample or a subset "
                             f"of its rows); got batch size {tuple(tensordict.shape)}")
        # checked where the ids live, without waiting for the device (on the CPU it raises at once)
        torch._assert_async((task_id == task_id[:, :1]).all(), "guide batch must hold one task per row")
        active = tensordict.get(k.active, None)
        if active is None:
            active = torch.ones(tensordict.shape, dtype=torch.bool, device=task_id.device)
        active = active.reshape(tensordict.shape)
        action = tensordict.get(k.action).reshape(tensordict.shape)
        y, y_comp = self._targets(tensordict)

        q = self._q(self._vmap_q, tensordict, self.qvalue_network_params, k.action_value)
        qc = self._q(self._vmap_qc, tensordict, self.comp_qvalue_network_params, k.comp_action_value)
        chosen, chosen_c = self._chosen(q, action), self._chosen(qc, action)
        loss_q = distance_loss(chosen, y.expand_as(chosen), loss_function=self.loss_function).sum(0)
        loss_qc = distance_loss(chosen_c, y_comp.expand_as(chosen_c), loss_function=self.loss_function).sum(0)

        logits = self._logits(tensordict)
        log_p = torch.log_softmax(logits, -1)
        probs = log_p.exp()
        min_q = q.detach().min(0)[0]  # the critic pass above, detached (TorchRL recomputes it: same values)
        alpha = self.log_alpha.detach().exp()[task_id].unsqueeze(-1)
        loss_actor = (probs * (alpha * log_p - min_q)).sum(-1)
        neg_entropy = (probs * log_p).sum(-1).detach()
        log_alpha = self.log_alpha[task_id]
        loss_alpha = -(log_alpha.exp() if self.alpha_loss_form == "alpha" else log_alpha) * (
            neg_entropy + self.target_entropy)

        return TensorDict({
            "loss_qvalue": self._reduce(loss_q, active),
            "loss_comp_qvalue": self._reduce(loss_qc, active),
            "loss_actor": self._reduce(loss_actor, active),
            "loss_alpha": self._reduce(loss_alpha, active),
            "guide_alpha": self.log_alpha.detach().exp(),
            "guide_entropy": self._reduce(-neg_entropy, active),
        }, batch_size=[])
