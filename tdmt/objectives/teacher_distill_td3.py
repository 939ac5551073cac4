"""KTM-DRL's teacher-distill TD3 loss (Xu et al., NeurIPS 2020, §3.1–3.4; DESIGN §4), as a TorchRL ``LossModule``.

Student: actor π, critics Q1, Q2 (TorchRL's ``num_qvalue_nets=2``) and their targets π', Q1', Q2'. Teacher k:
frozen π^k, Q^k_1, Q^k_2 (:class:`tdmt.modules.StackedTeachers`). For a transition of task k with padded state ŝ,
padded action â, ``f^k`` (slice: what the teacher sees) and ``g^k(â) = â ⊙ m_k`` (mask: what the student critic
sees):

* offline (``mode="offline"``), data from the teacher's own buffer D_k:

  - Eq. 1, critic: ``L = mean[(Q^k_1(s, a) - Q1(ŝ, â))² + (Q^k_2(s, a) - Q2(ŝ, â))²]``
  - Eq. 2, actor:  ``L = -mean Q^k_1(s, f^k(π(ŝ)))`` — the gradient flows through the frozen teacher critic into π.

* online (``mode="online"``), data from the student's own buffer D'_k:

  - Eq. 3, target: ``y = r + γ(1-d) min_j Q'_j(ŝ', g^k(clip(π'(ŝ') + ε, -1, 1)))``, ``ε = clip(N(0, σ²), -c, c)``
    (Gaussian, σ=0.2, c=0.5 — not the reference code's uniform noise); ``d`` is termination (a time-limit
    truncation bootstraps), γ the TD(0) value estimator's.
  - Eq. 4, critic: ``L = mean[(y - Q1(ŝ, â))² + (y - Q2(ŝ, â))²]``
  - Eq. 5, actor:  ``L = -α mean Q^k_1(s, f^k(π(ŝ))) - β mean Q1(ŝ, g^k(π(ŝ)))``

Teachers receive padded inputs with ``m_k`` applied: their zero weight rows on padded dims make this exactly
``f^k`` (see :mod:`tdmt.modules.teachers`). ``actor_loss`` and ``value_loss`` are callable separately (policy
delay d=2).

Which task a row belongs to (``task=`` of every method):

* ``None`` (default): each row's ``task_id``. A ``[K, N]`` batch whose row k is task k runs each teacher once on
  its own rows (checked); any other shape runs every teacher on every row and keeps each row's own value.
* ``"rows"``: the batch is ``[K, ...]`` and row k is task k, trusted (the per-task replay buffer's samples).
* an int k: every row is task k — one per-task update of Algorithm 1 (only teacher k runs, no ``task_id`` read).

All three give the same losses. With ``reduction="none"`` losses keep the batch shape (``[K, N]``: per-task losses
for free).

The networks are called on plain tensors (the TensorDictModule's inner module with the functional parameters in
its slots) rather than through TensorDicts and ``vmap``: Algorithm 1's K sequential per-task updates make the
per-call overhead count (``benchmarks/ktm_step.py``). A module that is not a plain ``TensorDictModule`` (one out
key) takes the TensorDict path instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase, dispatch
from tensordict.utils import NestedKey
from torchrl.data.tensor_specs import TensorSpec
from torchrl.objectives import TD3Loss, ValueEstimators

from tdmt.modules.teachers import StackedTeachers

MODES = ("offline", "online")
REDUCTIONS = ("mean", "sum", "none")
Task = int | Literal["rows"] | None


class _Net:
    """Calls a TensorDictModule with a parameter TensorDict on plain tensors (see the module docstring).

    Fast path (a plain ``TensorDictModule`` with one out key): the given parameter tensors are put in the inner
    module's parameter slots for the call and the module's own put back after — what ``torch.func.functional_call``
    does, without its per-call bookkeeping (measured ~0.3 ms a call; Algorithm 1's per-task updates make ~5K calls
    per epoch). Other modules take the TensorDict path (``to_module``).
    """

    def __init__(self, module: TensorDictModuleBase, params: TensorDictBase):
        self.module = module
        self.in_keys, self.out_key = list(module.in_keys), module.out_keys[0]
        keys = list(params.keys(True, True))
        self.fast = (type(module) is TensorDictModule and len(module.out_keys) == 1
                     and all(isinstance(k, tuple) and k[0] == "module" for k in keys))
        self.slots: list[tuple[dict, str]] = []
        if self.fast:
            for key in keys:
                owner = module.module.get_submodule(".".join(key[1:-1]))
                table = owner._parameters if key[-1] in owner._parameters else owner._buffers
                if key[-1] not in table:
                    self.fast = False
                    break
                self.slots.append((table, key[-1]))

    def __call__(self, params: TensorDictBase | list[torch.Tensor], inputs: dict[NestedKey, torch.Tensor],
                 batch_size: torch.Size) -> torch.Tensor:
        """``params``: a parameter TensorDict, or (fast path) its leaves in ``keys(True, True)`` order."""
        if self.fast:
            values = params if isinstance(params, list) else list(params.values(True, True))
            own = [table[name] for table, name in self.slots]
            for (table, name), value in zip(self.slots, values):
                table[name] = value
            try:
                return self.module.module(*(inputs[k] for k in self.in_keys))
            finally:
                for (table, name), value in zip(self.slots, own):
                    table[name] = value
        if isinstance(params, list):
            raise TypeError("the TensorDict path needs a parameter TensorDict")
        td = TensorDict({k: inputs[k] for k in self.in_keys}, batch_size=batch_size)
        with params.to_module(self.module):
            return self.module(td).get(self.out_key)


class TeacherDistillTD3Loss(TD3Loss):
    """Teacher-distill TD3 (KTM-DRL Eq. 1–5; see the module docstring for the equations).

    Args:
        actor_network: student actor, writes ``action`` (in [-1, 1], padded to ``act_max``).
        qvalue_network: student critic, reads ``action`` and writes ``state_action_value``; two copies are made.
        teachers: frozen stacked teachers, or ``None`` for plain multi-task TD3 (``mode="online"``, ``alpha=0``).
        action_masks: ``[K, act_max]`` masks ``m_k`` of 0/1 (:func:`tdmt.envs.action_masks`).
        mode: ``"offline"`` (Eq. 1–2) or ``"online"`` (Eq. 3–5); may be changed between stages.
        alpha, beta: weights (>= 0) of the teacher and student-critic terms of Eq. 5.
        action_spec / bounds: action bounds for the target-policy clipping (default ``(-1, 1)``).
        policy_noise, noise_clip: σ and c of Eq. 3 (>= 0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
    """

    @dataclass
    class _AcceptedKeys(TD3Loss._AcceptedKeys):
        """TD3's keys plus ``observation`` (what the teacher reads) and ``task_id`` (selects f^k, g^k, teacher k)."""

        observation: NestedKey = "observation"
        task_id: NestedKey = "task_id"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    out_keys = ["loss_actor", "loss_qvalue", "pred_value", "target_value", "teacher_value", "state_action_value_actor"]

    def __init__(self, actor_network: TensorDictModule, qvalue_network: TensorDictModule,
                 teachers: StackedTeachers | None, *, action_masks: torch.Tensor,
                 mode: Literal["offline", "online"] = "online", alpha: float = 1.0, beta: float = 1.0,
                 action_spec: TensorSpec | None = None, bounds: tuple[float, float] | None = None,
                 policy_noise: float = 0.2, noise_clip: float = 0.5, reduction: str | None = None):
        _check_args(action_masks, teachers, policy_noise, noise_clip, reduction)
        if action_spec is None and bounds is None:
            bounds = (-1.0, 1.0)
        super().__init__(actor_network, qvalue_network, action_spec=action_spec, bounds=bounds, num_qvalue_nets=2,
                         policy_noise=policy_noise, noise_clip=noise_clip, loss_function="l2",
                         reduction=reduction)
        self.teachers = teachers
        self.register_buffer("action_masks", action_masks.float())
        self.num_tasks = action_masks.shape[0]
        self.mode, self.alpha, self.beta = mode, alpha, beta
        self._actor = _Net(self.actor_network, self.actor_network_params)
        self._critic = _Net(self.qvalue_network, self.qvalue_network_params)
        self._check_config()

    # ------------------------------------------------------------------ configuration
    def _check_config(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not valid; valid: {list(MODES)}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name}={value!r} is not valid; valid: a number >= 0")
        if self.teachers is None and (self.mode == "offline" or self.alpha > 0):
            raise ValueError(f"mode={self.mode!r} with alpha={self.alpha} needs teachers; only mode='online' "
                             "with alpha=0 (plain multi-task TD3) runs without them")

    def _set_in_keys(self):
        super()._set_in_keys()
        self._in_keys = sorted({*self._in_keys, self.tensor_keys.task_id, self.tensor_keys.observation}, key=str)

    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams):
        """TD(0) only: Eq. 3 is a one-step target (``gamma=`` sets γ)."""
        if value_type not in (None, ValueEstimators.TD0):
            raise ValueError(f"value_type={value_type!r} is not valid; valid: [ValueEstimators.TD0] (Eq. 3 is a "
                             "one-step target)")
        return super().make_value_estimator(value_type, **hyperparams)

    # ------------------------------------------------------------------ task plumbing
    def _task_id(self, tensordict: TensorDictBase) -> torch.Tensor:
        task_id = tensordict.get(self.tensor_keys.task_id)
        if task_id.shape != tensordict.shape:
            task_id = task_id.reshape(tensordict.shape)
        return task_id.long()

    def _teacher_rows(self, tensordict: TensorDictBase, task_id: torch.Tensor) -> torch.Tensor | None:
        """``None`` when row k of a ``[K, N]`` batch is task k (stacked fast path), else ``task_id``."""
        if tensordict.batch_dims == 2 and tensordict.shape[0] == self.num_tasks:
            rows = torch.arange(self.num_tasks, device=task_id.device)[:, None]
            if bool((task_id == rows).all()):
                return None
        return task_id

    def _tasks(self, tensordict: TensorDictBase, task: Task) -> tuple[torch.Tensor, torch.Tensor | int | None]:
        """``(m, teacher)``: the masks ``m_k`` broadcastable to the batch's actions, and what selects each row's
        teacher (``None``: ``[K, ...]`` rows, an int: one task, a tensor: each row's task)."""
        if task is None:
            task_id = self._task_id(tensordict)
            return self.action_masks[task_id], self._teacher_rows(tensordict, task_id)
        if isinstance(task, str):
            if task != "rows" or tensordict.batch_dims < 1 or tensordict.shape[0] != self.num_tasks:
                raise ValueError(f"task={task!r} with batch shape {tuple(tensordict.shape)} is not valid; valid: "
                                 f"None, an int in [0, {self.num_tasks}), or 'rows' for a [K={self.num_tasks}, ...] "
                                 "batch")
            masks = self.action_masks.view(self.num_tasks, *([1] * (tensordict.batch_dims - 1)), -1)
            return masks, None
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < self.num_tasks:
            raise ValueError(f"task={task!r} is out of range; valid: None, an int in [0, {self.num_tasks}), or 'rows'")
        return self.action_masks[task], task

    def _inputs(self, tensordict: TensorDictBase, keys: list[NestedKey], next_state: bool = False
                ) -> dict[NestedKey, torch.Tensor]:
        """The tensors of ``keys`` (but the action), read at ``("next", key)`` for the next state."""
        def where(key: NestedKey) -> NestedKey:
            if not next_state:
                return key
            return ("next", *key) if isinstance(key, tuple) else ("next", key)

        return {k: tensordict.get(where(k)) for k in keys if k != self.tensor_keys.action}

    def _leaves(self, name: str) -> list[torch.Tensor]:
        """The parameter tensors of ``name`` (e.g. ``"qvalue_network_params"``) in ``keys(True, True)`` order,
        cached (TorchRL's ``_apply`` erases ``_cache*`` attributes when ``.to()`` replaces the tensors)."""
        key = f"_cache_leaves_{name}"
        leaves = self.__dict__.get(key)
        if leaves is None:
            leaves = self.__dict__[key] = list(getattr(self, name).values(True, True))
        return leaves

    def _call(self, net: _Net, params_name: str, inputs: dict, shape: torch.Size, index: int | None = None,
              detach: bool = False) -> torch.Tensor:
        """``net`` with the parameters ``params_name`` (copy ``index`` of stacked ones; detached: no gradient to
        them)."""
        if net.fast:
            values = self._leaves(params_name)
            if index is not None:
                values = [v[index] for v in values]
            return net([v.detach() for v in values] if detach else values, inputs, shape)
        params = getattr(self, params_name)
        params = params[index] if index is not None else params
        return net(params.detach() if detach else params, inputs, shape)

    def _q_pair(self, params_name: str, inputs: dict, action: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """``[Q1, Q2]`` (or their targets: ``params_name="target_qvalue_network_params"``) → ``[2, *B]``."""
        inputs = {**inputs, self.tensor_keys.action: action}
        return torch.stack([self._call(self._critic, params_name, inputs, shape, j) for j in range(2)]).squeeze(-1)

    def _q1_detached(self, inputs: dict, action: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """``Q1(ŝ, a)`` with the critic's parameters detached: only the action carries gradient (to π)."""
        inputs = {**inputs, self.tensor_keys.action: action}
        return self._call(self._critic, "qvalue_network_params", inputs, shape, 0, detach=True).squeeze(-1)

    # ------------------------------------------------------------------ losses
    def actor_loss(self, tensordict: TensorDictBase, task: Task = None) -> tuple[torch.Tensor, dict]:
        """Eq. 2 (offline) or Eq. 5 (online); only π receives gradients."""
        self._check_config()
        weights = self._maybe_get_priority_weight(tensordict)
        masks, teacher = self._tasks(tensordict, task)
        inputs = self._inputs(tensordict, self._actor.in_keys)
        action = self._call(self._actor, "actor_network_params", inputs, tensordict.shape) * masks
        loss = torch.zeros(tensordict.shape, device=action.device, dtype=action.dtype)
        metadata = {}
        alpha = 1.0 if self.mode == "offline" else self.alpha
        if alpha > 0:
            teacher_q = self.teachers.q1(tensordict.get(self.tensor_keys.observation), action, teacher)
            loss = loss - alpha * teacher_q
            metadata["teacher_value"] = teacher_q.detach()
        if self.mode == "online" and self.beta > 0:
            student_q = self._q1_detached(self._inputs(tensordict, self._critic.in_keys), action, tensordict.shape)
            loss = loss - self.beta * student_q
            metadata["state_action_value_actor"] = student_q.detach()
        return self._reduce_loss(loss, tensordict=tensordict, weights=weights), metadata

    @torch.no_grad()
    def value_target(self, tensordict: TensorDictBase, task: Task = None) -> torch.Tensor:
        """The critics' regression targets ``[2, *B]``: ``[Q^k_1(s, a), Q^k_2(s, a)]`` (Eq. 1) offline, ``y`` of
        Eq. 3 (the same for both critics) online."""
        masks, teacher = self._tasks(tensordict, task)
        action = tensordict.get(self.tensor_keys.action) * masks
        if self.mode == "offline":
            return self.teachers.q(tensordict.get(self.tensor_keys.observation), action, teacher)
        next_inputs = self._inputs(tensordict, self._actor.in_keys, next_state=True)
        next_action = self._call(self._actor, "target_actor_network_params", next_inputs, tensordict.shape)
        noise = (torch.randn_like(next_action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
        next_action = (next_action + noise).clamp(self.min_action, self.max_action) * masks
        next_q = self._q_pair("target_qvalue_network_params",
                              self._inputs(tensordict, self._critic.in_keys, next_state=True), next_action,
                              tensordict.shape).min(0)[0]
        reward = tensordict.get(("next", self.tensor_keys.reward)).reshape(tensordict.shape)
        terminated = tensordict.get(("next", self.tensor_keys.terminated)).reshape(tensordict.shape)
        y = reward + self.value_estimator.gamma * (~terminated.bool()).to(next_q.dtype) * next_q
        return y.expand(2, *tensordict.shape)

    def value_loss(self, tensordict: TensorDictBase, task: Task = None, target: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict]:
        """Eq. 1 (offline: regress on the teacher's Q-values) or Eq. 3–4 (online: clipped double-Q TD target).

        ``target``: the ``[2, *B]`` output of :meth:`value_target` when computed beforehand (K per-task updates
        whose target networks do not change in between share one batched target pass).
        """
        self._check_config()
        weights = self._maybe_get_priority_weight(tensordict)
        if target is None:
            target = self.value_target(tensordict, task)
        masks, _ = self._tasks(tensordict, task)
        action = tensordict.get(self.tensor_keys.action) * masks
        current = self._q_pair("qvalue_network_params", self._inputs(tensordict, self._critic.in_keys), action,
                               tensordict.shape)
        td_error = (current - target).pow(2)
        loss = self._reduce_loss(td_error.sum(0), tensordict=tensordict, weights=weights)
        metadata = {"td_error": td_error.detach(), "pred_value": current.detach(), "target_value": target.detach()}
        return loss, metadata

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Both losses: ``loss_actor`` and ``loss_qvalue`` (+ diagnostics); writes ``td_error`` as priority."""
        loss_actor, meta_actor = self.actor_loss(tensordict)
        loss_qvalue, meta_value = self.value_loss(tensordict)
        tensordict.set(self.tensor_keys.priority, meta_value.pop("td_error").max(0)[0])
        return TensorDict(loss_actor=loss_actor, loss_qvalue=loss_qvalue, **meta_actor, **meta_value)


def _check_args(action_masks: torch.Tensor, teachers: StackedTeachers | None, policy_noise: float,
                noise_clip: float, reduction: str | None) -> None:
    """One-line errors for the constructor's arguments (the bad value and the valid range)."""
    if not isinstance(action_masks, torch.Tensor) or action_masks.dim() != 2 or 0 in action_masks.shape:
        shape = tuple(action_masks.shape) if isinstance(action_masks, torch.Tensor) else type(action_masks).__name__
        raise ValueError(f"action_masks of shape {shape} is not valid; valid: a [K, act_max] tensor of 0/1 "
                         "(tdmt.envs.action_masks)")
    if not bool(((action_masks == 0) | (action_masks == 1)).all()) or not bool((action_masks.sum(-1) >= 1).all()):
        raise ValueError(f"action_masks={action_masks.tolist()} is not valid; valid: 0/1 entries with at least one "
                         "1 per task (m_k = [1]*act_k + [0]*(act_max - act_k))")
    if teachers is not None and (teachers.num_tasks, teachers.act_max) != tuple(action_masks.shape):
        raise ValueError(f"teachers for {teachers.num_tasks} tasks with act_max={teachers.act_max} do not match "
                         f"action_masks of shape {tuple(action_masks.shape)}; valid: [{teachers.num_tasks}, "
                         f"{teachers.act_max}]")
    for name, value in (("policy_noise", policy_noise), ("noise_clip", noise_clip)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name}={value!r} is not valid; valid: a number >= 0")
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not valid; valid: {list(REDUCTIONS)}")
