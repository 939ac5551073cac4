"""TorchRL transforms that turn any single-task TorchRL env into a member of a multi-task batch.

TorchRL ships no padding or task-id transform (DESIGN §7), so these are written here, with correct specs:

* :class:`TaskIdTransform` adds ``task_id`` (int64) and optionally ``task_onehot`` (float32 ``[K]``).
* :class:`PadObservation` zero-pads observations to ``obs_max`` (``pad(s)``).
* :class:`PadAction` exposes a ``[-1, 1]``-padded action of width ``act_max`` and hands the env the first
  ``act_k`` dims (``f^k``, the slice), so the inverse of padding is slicing.

:class:`tdmt.envs.MultiTaskEnv` does the same work inside one vectorised env (the fast path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, TensorSpec, Unbounded
from torchrl.envs.transforms import ObservationTransform, Transform


class TaskIdTransform(Transform):
    """Writes the constant ``task_id`` (and ``task_onehot`` over ``num_tasks``) into every reset and step."""

    def __init__(self, task_id: int, num_tasks: int, onehot: bool = True):
        if not 0 <= task_id < num_tasks:
            raise ValueError(f"task_id={task_id} out of range [0, {num_tasks})")
        out_keys = ["task_id", "task_onehot"] if onehot else ["task_id"]
        super().__init__(in_keys=[], out_keys=out_keys)
        self.task_id, self.num_tasks, self.onehot = task_id, num_tasks, onehot

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        shape, device = next_tensordict.batch_size, next_tensordict.device
        task_id = torch.full(shape, self.task_id, dtype=torch.int64, device=device)
        next_tensordict.set("task_id", task_id)
        if self.onehot:
            next_tensordict.set("task_onehot", F.one_hot(task_id, self.num_tasks).float())
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        shape, device = observation_spec.shape, observation_spec.device
        observation_spec["task_id"] = Categorical(self.num_tasks, shape, dtype=torch.int64, device=device)
        if self.onehot:
            observation_spec["task_onehot"] = Bounded(0.0, 1.0, (*shape, self.num_tasks), device=device)
        return observation_spec


class PadObservation(ObservationTransform):
    """``pad(s)``: zeros appended to the last dim of ``in_keys`` up to ``obs_max``."""

    def __init__(self, obs_max: int, in_keys: tuple[str, ...] = ("observation",)):
        super().__init__(in_keys=list(in_keys), out_keys=list(in_keys))
        self.obs_max = obs_max

    def _apply_transform(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.shape[-1] > self.obs_max:
            raise ValueError(f"observation width {obs.shape[-1]} exceeds obs_max={self.obs_max}")
        return F.pad(obs, (0, self.obs_max - obs.shape[-1]))

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        for key in self.in_keys:
            spec = observation_spec[key]
            observation_spec[key] = Unbounded((*spec.shape[:-1], self.obs_max), dtype=spec.dtype,
                                              device=spec.device)
        return observation_spec


class PadAction(Transform):
    """Padded action of width ``act_max`` outside, the env's own ``act_k`` dims inside (``f^k``, the slice).

    The padded dims of the outer ``Bounded`` spec are ``[-1, 1]``; the real dims keep the env's bounds.
    """

    def __init__(self, act_max: int, in_key: str = "action"):
        super().__init__(in_keys=[], out_keys=[], in_keys_inv=[in_key], out_keys_inv=[in_key])
        self.act_max = act_max

    def _inv_apply_transform(self, action: torch.Tensor) -> torch.Tensor:
        if action.shape[-1] != self.act_max:
            raise ValueError(f"action has width {action.shape[-1]}, expected act_max={self.act_max}")
        return action[..., : self._act_dim]

    @property
    def _act_dim(self) -> int:
        return self.parent.base_env.full_action_spec[self.in_keys_inv[0]].shape[-1]

    def transform_action_spec(self, action_spec: TensorSpec) -> TensorSpec:
        if isinstance(action_spec, Composite):
            key = self.in_keys_inv[0]
            action_spec[key] = self.transform_action_spec(action_spec[key])
            return action_spec
        act_dim = action_spec.shape[-1]
        if act_dim > self.act_max:
            raise ValueError(f"action width {act_dim} exceeds act_max={self.act_max}")
        pad = (*action_spec.shape[:-1], self.act_max - act_dim)
        low = torch.cat([action_spec.space.low, -torch.ones(pad, device=action_spec.device)], -1)
        high = torch.cat([action_spec.space.high, torch.ones(pad, device=action_spec.device)], -1)
        return Bounded(low, high, (*action_spec.shape[:-1], self.act_max), dtype=action_spec.dtype,
                       device=action_spec.device)
