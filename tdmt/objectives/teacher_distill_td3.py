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
    (Gaussian, σ=0.2, c=0.5 — not the reference code's uniform noise)
  - Eq. 4, critic: ``L = mean[(y - Q1(ŝ, â))² + (y - Q2(ŝ, â))²]``
  - Eq. 5, actor:  ``L = -α mean Q^k_1(s, f^k(π(ŝ))) - β mean Q1(ŝ, g^k(π(ŝ)))``

Teachers receive padded inputs with ``m_k`` applied: their zero weight rows on padded dims make this exactly
``f^k`` (see :mod:`tdmt.modules.teachers`). ``actor_loss`` and ``value_loss`` are callable separately (policy
delay d=2). Batches are ``[K, N]`` (row k = task k: each teacher runs once on its own rows) or any shape carrying
``task_id`` (each teacher runs on all rows, each row keeps its task's value); both give the same losses.
With ``reduction="none"`` losses keep the batch shape (``[K, N]``: per-task losses for free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, dispatch
from tensordict.utils import NestedKey
from torchrl.data.tensor_specs import TensorSpec
from torchrl.envs.utils import step_mdp
from torchrl.objectives import TD3Loss

from tdmt.modules.teachers import StackedTeachers

MODES = ("offline", "online")


class TeacherDistillTD3Loss(TD3Loss):
    """Teacher-distill TD3 (KTM-DRL Eq. 1–5; see the module docstring for the equations).

    Args:
        actor_network: student actor, writes ``action`` (in [-1, 1], padded to ``act_max``).
        qvalue_network: student critic, reads ``action`` and writes ``state_action_value``; two copies are made.
        teachers: frozen stacked teachers, or ``None`` for plain multi-task TD3 (``mode="online"``, ``alpha=0``).
        action_masks: ``[K, act_max]`` float masks ``m_k`` (:func:`tdmt.envs.action_masks`).
        mode: ``"offline"`` (Eq. 1–2) or ``"online"`` (Eq. 3–5); may be changed between stages.
        alpha, beta: weights of the teacher and student-critic terms of Eq. 5.
        action_spec / bounds: action bounds for the target-policy clipping (default ``(-1, 1)``).
        policy_noise, noise_clip: σ and c of Eq. 3.
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
        if action_spec is None and bounds is None:
            bounds = (-1.0, 1.0)
        super().__init__(actor_network, qvalue_network, action_spec=action_spec, bounds=bounds, num_qvalue_nets=2,
                         policy_noise=policy_noise, noise_clip=noise_clip, loss_function="l2",
                         reduction=reduction)
        if action_masks.dim() != 2:
            raise ValueError(f"action_masks must be [K, act_max], got shape {tuple(action_masks.shape)}")
        if teachers is not None and teachers.num_tasks != action_masks.shape[0]:
            raise ValueError(f"{teachers.num_tasks} teachers for {action_masks.shape[0]} tasks (action_masks rows)")
        self.teachers = teachers
        self.register_buffer("action_masks", action_masks.float())
        self.num_tasks = action_masks.shape[0]
        self.mode, self.alpha, self.beta = mode, alpha, beta
        self._check_config()

    # ------------------------------------------------------------------ configuration
    def _check_config(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not valid; valid: {list(MODES)}")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}")
        if self.teachers is None and (self.mode == "offline" or self.alpha > 0):
            raise ValueError(f"mode={self.mode!r} with alpha={self.alpha} needs teachers; only mode='online' "
                             "with alpha=0 (plain multi-task TD3) runs without them")

    def _set_in_keys(self):
        super()._set_in_keys()
        self._in_keys = sorted({*self._in_keys, self.tensor_keys.task_id, self.tensor_keys.observation}, key=str)

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

    def _mask(self, action: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``g^k(a) = a ⊙ m_k`` for each row's task k."""
        return action * self.action_masks[task_id]

    def _critics(self, td: TensorDictBase, params: TensorDictBase) -> torch.Tensor:
        """``[Q1, Q2]`` (or their targets) of ``td`` → ``[2, *B]``."""
        td2 = td.select(*self.qvalue_network.in_keys, strict=False).expand(2, *td.batch_size)
        return self._vmap_qvalue_network00(td2, params).get(self.tensor_keys.state_action_value).squeeze(-1)

    # ------------------------------------------------------------------ losses
    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Eq. 2 (offline) or Eq. 5 (online); only π receives gradients."""
        self._check_config()
        weights = self._maybe_get_priority_weight(tensordict)
        task_id = self._task_id(tensordict)
        td_actor = tensordict.select(*self.actor_network.in_keys, strict=False)
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            td_actor = self.actor_network(td_actor)
        action = self._mask(td_actor.get(self.tensor_keys.action), task_id)
        loss = torch.zeros(tensordict.shape, device=action.device)
        metadata = {}
        alpha = 1.0 if self.mode == "offline" else self.alpha
        if alpha > 0:
            teacher_q = self.teachers.q1(tensordict.get(self.tensor_keys.observation), action,
                                         self._teacher_rows(tensordict, task_id))
            loss = loss - alpha * teacher_q
            metadata["teacher_value"] = teacher_q.detach()
        if self.mode == "online" and self.beta > 0:
            td_actor.set(self.tensor_keys.action, action)
            td_q = td_actor.select(*self.qvalue_network.in_keys, strict=False)
            with self._cached_detach_qvalue_network_params[0].to_module(self.qvalue_network):
                student_q = self.qvalue_network(td_q).get(self.tensor_keys.state_action_value).squeeze(-1)
            loss = loss - self.beta * student_q
            metadata["state_action_value_actor"] = student_q.detach()
        loss = self._reduce_loss(loss, tensordict=tensordict, weights=weights)
        self._clear_weakrefs(tensordict, "actor_network_params", "qvalue_network_params",
                             "target_actor_network_params", "target_qvalue_network_params")
        return loss, metadata

    def _offline_target(self, tensordict: TensorDictBase, task_id: torch.Tensor, action: torch.Tensor
                        ) -> torch.Tensor:
        """``[Q^k_1(s, a), Q^k_2(s, a)]`` on the teacher's own transitions (Eq. 1)."""
        with torch.no_grad():
            return self.teachers.q(tensordict.get(self.tensor_keys.observation), action,
                                   self._teacher_rows(tensordict, task_id))

    def _online_target(self, tensordict: TensorDictBase, task_id: torch.Tensor, action: torch.Tensor
                       ) -> torch.Tensor:
        """``y`` of Eq. 3 (through the value estimator, TD(0) by default)."""
        noise = (torch.randn_like(action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
        with torch.no_grad():
            next_td = step_mdp(tensordict).select(*self.actor_network.in_keys, strict=False)
            with self.target_actor_network_params.to_module(self.actor_network, preserve_module_state=False):
                next_td = self.actor_network(next_td)
            next_action = (next_td.get(self.tensor_keys.action) + noise).clamp(self.min_action, self.max_action)
            next_td.set(self.tensor_keys.action, self._mask(next_action, task_id))
            next_q = self._critics(next_td, self.target_qvalue_network_params).min(0)[0]
            tensordict.set(("next", self.tensor_keys.state_action_value), next_q.unsqueeze(-1))
            return self.value_estimator.value_estimate(tensordict).squeeze(-1).expand(2, *tensordict.shape)

    def value_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Eq. 1 (offline: regress on the teacher's Q-values) or Eq. 3–4 (online: clipped double-Q TD target)."""
        self._check_config()
        weights = self._maybe_get_priority_weight(tensordict)
        tensordict = tensordict.clone(False)
        task_id = self._task_id(tensordict)
        action = self._mask(tensordict.get(self.tensor_keys.action), task_id)
        tensordict.set(self.tensor_keys.action, action)
        if self.mode == "offline":
            target = self._offline_target(tensordict, task_id, action)
        else:
            target = self._online_target(tensordict, task_id, action)
        current = self._critics(tensordict, self.qvalue_network_params)
        td_error = (current - target).pow(2)
        loss = self._reduce_loss(td_error.sum(0), tensordict=tensordict, weights=weights)
        metadata = {"td_error": td_error.detach(), "pred_value": current.detach(), "target_value": target.detach()}
        self._clear_weakrefs(tensordict, "actor_network_params", "qvalue_network_params",
                             "target_actor_network_params", "target_qvalue_network_params")
        return loss, metadata

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Both losses: ``loss_actor`` and ``loss_qvalue`` (+ diagnostics); writes ``td_error`` as priority."""
        loss_actor, meta_actor = self.actor_loss(tensordict)
        loss_qvalue, meta_value = self.value_loss(tensordict)
        tensordict.set(self.tensor_keys.priority, meta_value.pop("td_error").max(0)[0])
        return TensorDict(loss_actor=loss_actor, loss_qvalue=loss_qvalue, **meta_actor, **meta_value)
