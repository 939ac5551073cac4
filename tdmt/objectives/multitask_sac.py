"""Multi-task SAC (CTPG §3 Eq. 2–4 and App. F.2; DESIGN §6) as a TorchRL ``LossModule``.

API summary
-----------
``MultiTaskSACLoss(actor, qvalue, action_mask=M)`` with ``M = tdmt.envs.action_masks(act_dims, act_max)`` ``[K, A]``:

* ``loss(td)`` on a replay batch (any batch shape, usually ``[K, N]``; rows are routed to their task by ``task_id``)
  returns a TensorDict with ``loss_actor``, ``loss_qvalue``, ``loss_alpha`` (per task ``[K]`` with
  ``reduction="none"``, the default), and detached diagnostics ``alpha``, ``entropy``, ``task_weight``,
  ``task_kept`` (``[K]``). ``loss_actor``/``loss_qvalue`` already carry the rescaling weight ``w_i`` and the
  mask-out, so ``loss_x.mean()`` is the paper's total loss and the ``[K]`` vector is what ``tdmt.optim.PCGrad``
  takes. Call ``loss.set_env_steps(step)`` so the mask-out knows when it starts.
* Works with ``SoftUpdate(loss, tau=...)``, ``loss.make_value_estimator(ValueEstimators.TD0, gamma=...)`` and
  ``loss.set_keys(...)`` (keys: action, task_id, value, state_action_value, reward, done, terminated, priority).
* For callers that need the pieces (CTPG guide, QMP): ``loss.alpha`` (``[K]``), ``loss.sample_log_prob(td,
  policy_task_id=j)`` (a ~ π_j(·|s) and log π_j(a|s) on any rows), ``loss.log_prob(td, action, policy_task_id=j)``,
  ``loss.q_values(td)`` (``[num_q, *batch]``, current critics) and ``loss.min_q(td)``.

Equations (task i = the row's ``task_id``; ``m_i`` its action mask; ``ã ~ π(·|s)`` a TanhNormal sample):

* ``log π(ã|s) = Σ_d m_i[d] (log N(u_d; μ_d, σ_d) - log(1 - tanh(u_d)²))``: padded dims count for nothing
  (DESIGN §2); the critic always receives ``g^i(a) = a ⊙ m_i``.
* critic: ``y = r + γ (1 - terminated) [min_j Q'_j(s', g^i(ã')) - α_i log π(ã'|s')]``,
  ``L_Q,i = mean_n Σ_j (Q_j(s, a) - y)²`` (Eq. 3).
* actor: ``L_π,i = mean_n [α_i log π(ã|s) - min_j Q_j(s, g^i(ã))]`` (Eq. 2).
* temperature (Eq. 4, one ``log α`` per task, ``H̄_i = -act_i``), in one of two forms with the same fixed point
  (``alpha_loss``): ``"log_alpha"`` ``L_α,i = -mean_n log α_i (log π(ã|s) + H̄_i)`` (Haarnoja et al., TorchRL) or
  ``"alpha"`` ``L_α,i = mean_n α_i (-log π(ã|s) - H̄_i)`` (the public CTPG code, ``mtrl/agent/sac.py``: its gradient
  in ``log α`` is the first's times α). ``alpha_max`` caps α after each step (:meth:`cap_alpha_`; 1.0 in the public
  code).
* loss rescaling (Yang et al. 2020, CTPG Eq. 21): ``w = K · softmax(-log α)`` (detached), applied to L_Q and L_π.
* mask-out of extreme tasks (CTPG App. F.2, PaCo): once ``env_steps ≥ mask_out_start``, a task whose loss magnitude
  exceeds ``mask_out_threshold`` is dropped from L_Q and L_π (its temperature loss stays: it is per task and shares
  nothing). ``mask_out_on="critic"`` (the public CTPG code, ``mask_extreme_task``: the critic loss decides, the actor
  loss reuses its mask) or ``"critic_or_actor"`` (either loss may drop the task).
* PaCo's reset (Sun et al. 2022, public CTPG code ``reset_weight_by_task_mask``): :meth:`reset_extreme_compositions`
  sets a masked-out task's composition weights ``w_τ`` to a random convex mix of the kept tasks' ``w``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives.common import LossModule
from torchrl.objectives.utils import ValueEstimators, _vmap_func, dispatch_value_estimator, distance_loss

REDUCTIONS = ("none", "mean", "sum")
ALPHA_LOSSES = ("alpha", "log_alpha")
MASK_OUT_ON = ("critic", "critic_or_actor")
LOSS_FUNCTIONS = ("l2", "l1", "smooth_l1")


def loss_rescaling_weights(log_alpha: Tensor) -> Tensor:
    """``w_i = K · softmax(-log α)_i`` (CTPG Eq. 21): tasks with a small temperature (not yet mastered) weigh more.

    The weights sum to K and carry no gradient.
    """
    log_alpha = log_alpha.detach()
    return log_alpha.numel() * torch.softmax(-log_alpha, dim=-1)


def extreme_task_mask(task_losses: Tensor, env_steps: int | Tensor, threshold: float, start: int) -> Tensor:
    """``True`` for tasks to keep: after ``start`` env steps, a task is dropped when ``|loss| > threshold``.

    ``task_losses`` is ``[K]`` or ``[L, K]`` (several losses: a task is dropped if any of them is extreme);
    ``env_steps`` may be a tensor on the device (no host read: the start is a mask, not a branch).
    """
    extreme = task_losses.detach().abs() > threshold
    if extreme.dim() > 1:
        extreme = extreme.any(0)
    started = torch.as_tensor(env_steps, device=task_losses.device) >= start
    return ~(extreme & started)


def per_task_mean(values: Tensor, task_id: Tensor, num_tasks: int) -> Tensor:
    """Mean of ``values`` over the rows of each task (``values`` and ``task_id`` share their shape) → ``[K]``.

    Tasks absent from the batch get 0.
    """
    tid, flat = task_id.reshape(-1), values.reshape(-1)
    zeros = torch.zeros(num_tasks, dtype=values.dtype, device=values.device)
    # counts by scatter-add: torch.bincount reads the largest id on the host first (a sync on CUDA)
    counts = zeros.index_add(0, tid, torch.ones_like(flat)).clamp_min(1)
    return zeros.index_add(0, tid, flat) / counts


def masked_tanh_normal_log_prob(dist, preimage: Tensor, action: Tensor, mask: Tensor) -> Tensor:
    """``Σ_d mask_d log p_d(action_d)`` for a TanhNormal whose pre-tanh value is ``preimage``."""
    per_dim = dist.root_dist.log_prob(preimage) - dist.transforms[0].log_abs_det_jacobian(preimage, action)
    return (per_dim * mask).sum(-1)


class MultiTaskSACLoss(LossModule):
    """Multi-task SAC with one temperature per task, masked log-probs, rescaling and mask-out (module docstring).

    Args:
        actor_network: a ``ProbabilisticActor`` with a ``TanhNormal`` distribution reading ``observation`` and
            ``task_id`` (see ``tdmt.modules.backbones``).
        qvalue_network: a ``TensorDictModule`` writing ``state_action_value``; expanded to ``num_qvalue_nets``
            independently initialised copies (twin critics).
        action_mask: ``[K, act_max]`` float mask, 1 on each task's real action dims.
        num_qvalue_nets: number of critics (2: twin Q).
        loss_function: critic distance (``"l2"``, ``"l1"``, ``"smooth_l1"``).
        alpha_init: initial temperature of every task.
        target_entropy: ``"auto"`` (``-act_i`` per task), one float for all tasks, or K floats.
        mask_out_threshold, mask_out_start: the extreme-task mask-out (3000 and 100k env steps in CTPG/PaCo);
            ``mask_out_threshold=math.inf`` turns it off.
        mask_out_on: ``"critic"`` (the public CTPG code) or ``"critic_or_actor"``: which losses decide the mask-out.
        alpha_loss: ``"log_alpha"`` (TorchRL's form) or ``"alpha"`` (the public CTPG code's); module docstring.
        alpha_max: cap on every α (``math.inf``: none), applied by :meth:`cap_alpha_` after the optimizer step.
        loss_rescaling: apply ``w = K · softmax(-log α)``; ``False`` gives ``w = 1``.
        delay_qvalue: keep target critics (updated by ``SoftUpdate``).
        reduction: ``"none"`` → per-task losses ``[K]``; ``"mean"``/``"sum"`` over tasks.
    """

    @dataclass
    class _AcceptedKeys:
        """Keys settable with ``set_keys``: the action, the task id that routes rows to tasks and masks, the
        critic output, the value written for the estimator, the priority, and reward/done/terminated."""

        action: NestedKey = "action"
        task_id: NestedKey = "task_id"
        value: NestedKey = "state_value"
        state_action_value: NestedKey = "state_action_value"
        priority: NestedKey = "td_error"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    default_value_estimator = ValueEstimators.TD0

    actor_network: ProbabilisticTensorDictSequential
    qvalue_network: TensorDictModule
    actor_network_params: TensorDictBase
    qvalue_network_params: TensorDictBase
    target_actor_network_params: TensorDictBase
    target_qvalue_network_params: TensorDictBase

    def __init__(self, actor_network: ProbabilisticTensorDictSequential, qvalue_network: TensorDictModule, *,
                 action_mask: Tensor, num_qvalue_nets: int = 2, loss_function: str = "l2", alpha_init: float = 1.0,
                 target_entropy: str | float | Sequence[float] = "auto", mask_out_threshold: float = 3000.0,
                 mask_out_start: int = 100_000, mask_out_on: str = "critic", loss_rescaling: bool = True,
                 alpha_loss: str = "log_alpha", alpha_max: float = math.inf, delay_qvalue: bool = True,
                 reduction: str = "none") -> None:
        for name, value, valid in (("reduction", reduction, REDUCTIONS), ("mask_out_on", mask_out_on, MASK_OUT_ON),
                                   ("alpha_loss", alpha_loss, ALPHA_LOSSES),
                                   ("loss_function", loss_function, LOSS_FUNCTIONS)):
            if value not in valid:
                raise ValueError(f"MultiTaskSACLoss {name}={value!r} is not valid; valid: {list(valid)}")
        if action_mask.dim() != 2 or action_mask.shape[0] < 1:
            raise ValueError(f"MultiTaskSACLoss action_mask must be [K, act_max] with K >= 1, got shape "
                             f"{tuple(action_mask.shape)}")
        for name, value, ok, valid in (("alpha_init", alpha_init, alpha_init > 0, "> 0"),
                                       ("alpha_max", alpha_max, alpha_max >= alpha_init, f">= alpha_init={alpha_init}"),
                                       ("num_qvalue_nets", num_qvalue_nets, num_qvalue_nets >= 1, ">= 1"),
                                       ("mask_out_threshold", mask_out_threshold, mask_out_threshold > 0, "> 0"),
                                       ("mask_out_start", mask_out_start, mask_out_start >= 0, ">= 0")):
            if not ok or value != value:
                raise ValueError(f"MultiTaskSACLoss {name}={value!r} is out of range; valid: {valid}")
        super().__init__()
        self._in_keys = None
        self.num_tasks = action_mask.shape[0]
        self.num_qvalue_nets = num_qvalue_nets
        self.loss_function, self.reduction, self.loss_rescaling = loss_function, reduction, loss_rescaling
        self.mask_out_threshold, self.mask_out_start = float(mask_out_threshold), int(mask_out_start)
        self.mask_out_on, self.alpha_loss_form, self.alpha_max = mask_out_on, alpha_loss, float(alpha_max)
        self.delay_qvalue = delay_qvalue
        self.convert_to_functional(actor_network, "actor_network", create_target_params=False)
        self.convert_to_functional(qvalue_network, "qvalue_network", num_qvalue_nets,
                                   create_target_params=delay_qvalue,
                                   compare_against=list(actor_network.parameters()))
        device = action_mask.device
        self.register_buffer("action_mask", action_mask.float())
        self.register_buffer("target_entropy", self._make_target_entropy(target_entropy, action_mask))
        self.log_alpha = nn.Parameter(torch.full((self.num_tasks,), math.log(alpha_init), device=device))
        self.register_buffer("env_steps", torch.zeros((), dtype=torch.long, device=device))
        self._vmap_qnetworkN0 = _vmap_func(self.qvalue_network, (None, 0), randomness=self.vmap_randomness)

    def _make_target_entropy(self, target_entropy: str | float | Sequence[float], mask: Tensor) -> Tensor:
        if isinstance(target_entropy, str):
            if target_entropy != "auto":
                raise ValueError(f"target_entropy={target_entropy!r}: use 'auto', a float or {self.num_tasks} floats")
            return -mask.sum(-1).float()
        value = torch.as_tensor(target_entropy, dtype=torch.float32, device=mask.device)
        if value.numel() not in (1, self.num_tasks):
            raise ValueError(f"target_entropy has {value.numel()} values; expected 1 or K={self.num_tasks}")
        return value.expand(self.num_tasks).clone()

    # ------------------------------------------------------------------ TorchRL plumbing
    def _forward_value_estimator_keys(self, **kwargs) -> None:
        if self._value_estimator is not None:
            self._value_estimator.set_keys(value=self.tensor_keys.value, reward=self.tensor_keys.reward,
                                           done=self.tensor_keys.done, terminated=self.tensor_keys.terminated)
        self._in_keys = None

    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams):
        """``TD0`` (default), ``TD1`` or ``TDLambda`` on the soft state value; pass ``gamma=``."""
        value_type, hp = self._prepare_value_estimator_kwargs(value_type, **hyperparams)
        if value_type is None:
            return self
        dispatch_value_estimator(
            self, value_type, supported=(ValueEstimators.TD0, ValueEstimators.TD1, ValueEstimators.TDLambda),
            tensor_keys={"value_target": "value_target", "value": self.tensor_keys.value,
                         "reward": self.tensor_keys.reward, "done": self.tensor_keys.done,
                         "terminated": self.tensor_keys.terminated},
            value_network=None, **hp)
        return self

    @property
    def in_keys(self) -> list[NestedKey]:
        if self._in_keys is None:
            keys = {self.tensor_keys.action, self.tensor_keys.task_id, ("next", self.tensor_keys.reward),
                    ("next", self.tensor_keys.done), ("next", self.tensor_keys.terminated),
                    *self.actor_network.in_keys, *[("next", k) for k in self.actor_network.in_keys],
                    *self.qvalue_network.in_keys}
            self._in_keys = sorted(keys, key=str)
        return self._in_keys

    @property
    def out_keys(self) -> list[str]:
        return ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "task_weight", "task_kept"]

    # ------------------------------------------------------------------ pieces other algorithms reuse
    @property
    def alpha(self) -> Tensor:
        """Per-task temperatures ``α = exp(log α)``, ``[K]``, detached."""
        return self.log_alpha.detach().exp()

    def set_env_steps(self, step: int) -> None:
        """Tell the loss how many env steps were taken (the mask-out starts at ``mask_out_start``)."""
        self.env_steps.fill_(int(step))

    def _mask_for(self, td: TensorDictBase) -> Tensor:
        return self.action_mask[td.get(self.tensor_keys.task_id)]

    def _policy_dist(self, td: TensorDictBase, policy_task_id: Tensor | int | None):
        if policy_task_id is not None:
            td = td.clone(False)
            tid = td.get(self.tensor_keys.task_id)
            td.set(self.tensor_keys.task_id, torch.as_tensor(policy_task_id, device=tid.device).expand_as(tid))
        with set_exploration_type(ExplorationType.RANDOM), self.actor_network_params.to_module(self.actor_network):
            return self.actor_network.get_dist(td)

    def sample_log_prob(self, td: TensorDictBase, policy_task_id: Tensor | int | None = None
                        ) -> tuple[Tensor, Tensor]:
        """``a ~ π_j(·|s)`` (reparameterised) and ``log π_j(a|s)`` on the rows of ``td``.

        ``j`` is ``policy_task_id`` (an int or a tensor broadcastable to ``task_id``) or, by default, the row's
        own ``task_id``. The action is masked and the log-prob counts the dims of the row's own task (the env that
        executes it). Shapes: action ``[*batch, act_max]``, log-prob ``[*batch]``.
        """
        dist = self._policy_dist(td, policy_task_id)
        mask = self._mask_for(td)
        preimage = dist.root_dist.rsample()
        action = dist.transforms[0](preimage)
        return action * mask, masked_tanh_normal_log_prob(dist, preimage, action, mask)

    def log_prob(self, td: TensorDictBase, action: Tensor, policy_task_id: Tensor | int | None = None) -> Tensor:
        """``log π_j(action|s)`` counting the row's own task dims (``j`` as in :meth:`sample_log_prob`)."""
        dist = self._policy_dist(td, policy_task_id)
        mask = self._mask_for(td)
        eps = torch.finfo(action.dtype).resolution
        clipped = action.clamp(-1 + eps, 1 - eps)
        preimage = torch.atanh(clipped)
        return masked_tanh_normal_log_prob(dist, preimage, clipped, mask)

    def candidate_log_probs(self, td: TensorDictBase, action: Tensor) -> tuple[Tensor, Tensor]:
        """Stored steps scored by every policy: ``log π_j(action|s)`` for each task j (``[K, *batch]``), and
        ``log π_i(ã|s)`` of a fresh sample ``ã ~ π_i`` of the row's own task i (``[*batch]``).

        The first equals :meth:`log_prob` with ``policy_task_id=j`` for each j, the second is distributed as
        :meth:`sample_log_prob`'s (both count the row's own task dims). Both come from one call of the actor's
        ``all_tasks``, which computes each backbone's task-independent part once for all K: CTPG's hindsight
        relabel (Eq. 9) and comparable-critic entropy (Eq. 13) on the H stored steps of a guide transition.
        """
        module = self.actor_network.module[0]  # TensorDictModule(net) reading (observation, task_id)
        with self.actor_network_params.to_module(self.actor_network):
            loc, scale = module.module.all_tasks(td.get(module.in_keys[0]))
        mask = self._mask_for(td)
        eps = torch.finfo(action.dtype).resolution
        clipped = action.clamp(-1 + eps, 1 - eps)
        every = self._tanh_normal(loc, scale)
        log_probs = masked_tanh_normal_log_prob(every, torch.atanh(clipped), clipped, mask)
        own = td.get(self.tensor_keys.task_id).unsqueeze(0).unsqueeze(-1).expand(1, *loc.shape[1:])
        own_dist = self._tanh_normal(loc.gather(0, own).squeeze(0), scale.gather(0, own).squeeze(0))
        preimage = own_dist.root_dist.rsample()
        own_log_prob = masked_tanh_normal_log_prob(own_dist, preimage, own_dist.transforms[0](preimage), mask)
        return log_probs, own_log_prob

    def _tanh_normal(self, loc: Tensor, scale: Tensor):
        """The actor's own distribution (class and bounds) for given ``loc``/``scale``."""
        params = TensorDict({"loc": loc, "scale": scale}, batch_size=loc.shape[:-1])
        return self.actor_network.module[-1].get_dist(params)

    def q_values(self, td: TensorDictBase, action: Tensor | None = None, target: bool = False) -> Tensor:
        """``Q_j(s, g^i(a))`` for every critic j: ``[num_q, *batch]`` (``action`` defaults to the td's)."""
        td_q = td.select(*self.qvalue_network.in_keys, strict=False)
        if action is not None:
            td_q.set(self.tensor_keys.action, action * self._mask_for(td))
        params = self.target_qvalue_network_params if target else self.qvalue_network_params
        return self._vmap_qnetworkN0(td_q, params).get(self.tensor_keys.state_action_value).squeeze(-1)

    def min_q(self, td: TensorDictBase, action: Tensor | None = None, target: bool = False) -> Tensor:
        """``min_j Q_j(s, g^i(a))``, ``[*batch]``."""
        return self.q_values(td, action, target).min(0).values

    # ------------------------------------------------------------------ losses
    def _row_alpha(self, td: TensorDictBase) -> Tensor:
        return self.alpha[td.get(self.tensor_keys.task_id)]

    def qvalue_loss(self, td: TensorDictBase) -> tuple[Tensor, Tensor]:
        """Per-row twin-critic loss ``Σ_j (Q_j(s,a) - y)²`` ``[*batch]`` and the TD error ``max_j |Q_j - y|``."""
        next_td = td.get("next").clone(False)
        if self.tensor_keys.task_id not in next_td.keys(True):  # s' belongs to the same task as s
            next_td.set(self.tensor_keys.task_id, td.get(self.tensor_keys.task_id))
        with torch.no_grad():
            next_action, next_log_prob = self.sample_log_prob(next_td)
            next_q = self.q_values(next_td, next_action, target=self.delay_qvalue)
            next_value = (next_q - self._row_alpha(next_td) * next_log_prob).min(0).values
            target_td = td.clone(False)
            target_td.set(("next", self.tensor_keys.value), next_value.unsqueeze(-1))
            target = self.value_estimator.value_estimate(target_td).squeeze(-1)
        td_masked = td.clone(False)
        td_masked.set(self.tensor_keys.action, td.get(self.tensor_keys.action) * self._mask_for(td))
        pred = self.q_values(td_masked)
        loss = distance_loss(pred, target.expand_as(pred), loss_function=self.loss_function).sum(0)
        return loss, (pred - target).abs().max(0).values.detach()

    def actor_loss(self, td: TensorDictBase) -> tuple[Tensor, Tensor]:
        """Per-row actor loss ``α_i log π(ã|s) - min_j Q_j(s, ã)`` (critics detached) and ``log π(ã|s)``."""
        action, log_prob = self.sample_log_prob(td)
        td_q = td.select(*self.qvalue_network.in_keys, strict=False)
        td_q.set(self.tensor_keys.action, action)
        q = self._vmap_qnetworkN0(td_q, self.qvalue_network_params.detach())
        min_q = q.get(self.tensor_keys.state_action_value).squeeze(-1).min(0).values
        return self._row_alpha(td) * log_prob - min_q, log_prob.detach()

    def alpha_loss(self, log_prob: Tensor, task_id: Tensor) -> Tensor:
        """Per-row temperature loss: ``-log α_i (log π + H̄_i)`` or, with ``alpha_loss="alpha"``,
        ``α_i (-log π - H̄_i)`` (module docstring)."""
        gap = log_prob + self.target_entropy[task_id]
        if self.alpha_loss_form == "alpha":
            return -self.log_alpha[task_id].exp() * gap
        return -self.log_alpha[task_id] * gap

    @torch.no_grad()
    def cap_alpha_(self) -> None:
        """``log α ← min(log α, log alpha_max)`` (the public CTPG code's ``max_alpha``, after each α step)."""
        if self.alpha_max < math.inf:
            self.log_alpha.clamp_(max=math.log(self.alpha_max))

    @torch.no_grad()
    def reset_extreme_compositions(self, kept: Tensor, generator: torch.Generator | None = None) -> None:
        """PaCo's reset (Sun et al. 2022; public CTPG code ``reset_weight_by_task_mask``): every task with
        ``kept[τ] == 0`` gets composition weights ``w_τ ← Σ_k c_τk w_k``, ``c_τ`` uniform random on the kept tasks,
        L1-normalised (one draw for the actor, the critics and the target critics: the public code's composition
        weights are one task encoder that all of them read). With no kept task, fresh random unit-norm rows.
        Acts on every parameter named ``task_weights`` (``[..., K, P]``, the PaCo backbone); a no-op elsewhere, and
        when every task is kept. No host sync: the mix is computed for every task and selected by ``kept``.
        """
        entries = [(params, key) for params in (self.actor_network_params, self.qvalue_network_params,
                                                self.target_qvalue_network_params)
                   for key in params.keys(True, True) if key[-1] == "task_weights"]
        if not entries:
            return
        keep = kept.detach().bool()
        K = keep.shape[0]
        device = keep.device if generator is None else generator.device  # drawn where the weights live
        coeff = torch.rand(K, K, generator=generator, device=device).to(keep.device) * keep.to(torch.float32)
        coeff = coeff / coeff.sum(-1, keepdim=True).clamp_min(torch.finfo(coeff.dtype).tiny)
        sets = entries[0][0].get(entries[0][1]).shape[-1]
        fresh = torch.rand(K, sets, generator=generator, device=device).to(keep.device)
        fresh = fresh / fresh.norm(dim=-1, keepdim=True)  # unit-norm rows, as PaCoMLP initialises them
        for params, key in entries:
            weights = params.get(key)
            mixed = torch.where(keep.any(), coeff.to(weights.dtype) @ weights, fresh.to(weights.dtype))
            weights.data.copy_(torch.where(keep.unsqueeze(-1), weights, mixed))

    def _reduce(self, per_task: Tensor) -> Tensor:
        if self.reduction == "mean":
            return per_task.mean()
        if self.reduction == "sum":
            return per_task.sum()
        return per_task

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Per-task losses (see the module docstring); writes the TD error to ``tensordict[priority]``."""
        task_id = tensordict.get(self.tensor_keys.task_id)
        K = self.num_tasks
        q_rows, td_error = self.qvalue_loss(tensordict)
        actor_rows, log_prob = self.actor_loss(tensordict)
        loss_q, loss_pi = per_task_mean(q_rows, task_id, K), per_task_mean(actor_rows, task_id, K)
        loss_alpha = per_task_mean(self.alpha_loss(log_prob, task_id), task_id, K)
        weight = loss_rescaling_weights(self.log_alpha) if self.loss_rescaling else torch.ones_like(loss_q)
        deciding = loss_q if self.mask_out_on == "critic" else torch.stack([loss_q, loss_pi])
        kept = extreme_task_mask(deciding, self.env_steps, self.mask_out_threshold,
                                 self.mask_out_start).to(loss_q.dtype)
        tensordict.set(self.tensor_keys.priority, td_error)
        return TensorDict({
            "loss_actor": self._reduce(weight * kept * loss_pi),
            "loss_qvalue": self._reduce(weight * kept * loss_q),
            "loss_alpha": self._reduce(loss_alpha),
            "alpha": self.alpha,
            "entropy": -per_task_mean(log_prob, task_id, K),
            "task_weight": weight,
            "task_kept": kept,
        }, batch_size=[K] if self.reduction == "none" else [])
