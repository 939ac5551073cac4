"""TD3 networks for KTM-DRL (DESIGN §4): the multi-task student and K teachers trained as one stacked model.

* Student: one actor ``π(ŝ[, onehot]) → â`` (tanh, padded to ``act_max``) and one critic ``Q(ŝ[, onehot], â)``
  shared by every task; inputs are padded observations, as in the paper and its public code (``use_onehot=True``
  appends the task one-hot: a tdmt option).
  :class:`tdmt.objectives.TeacherDistillTD3Loss` makes the two critics Q1, Q2 from it (TorchRL's
  ``num_qvalue_nets=2``).
* Teachers: K independent TD3 agents stored as :class:`~tdmt.modules.StackedMLP` (parameters ``[K, ...]``) and
  applied to ``[K, N, ...]`` data in one ``baddbmm`` per layer. They take padded inputs; the critic masks the
  action with ``m_k`` (``g^k``) itself, so padded action dims never reach it whatever noise was added, and the
  padded input rows of both nets multiply zeros — slicing them away gives the native-size nets exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import MLP

from tdmt.modules.stacked import StackedLinear, StackedMLP, check_hidden, check_size


class TanhMLP(MLP):
    """TorchRL ``MLP`` (inputs concatenated on the last dim) followed by ``tanh``: actions in [-1, 1]."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(*inputs))


def student_in_keys(use_onehot: bool) -> list[str]:
    return ["observation", "task_onehot"] if use_onehot else ["observation"]


def _check_student(obs_dim: int, act_dim: int, num_tasks: int, hidden: Sequence[int]) -> list[int]:
    for name, value in (("obs_dim", obs_dim), ("act_dim", act_dim), ("num_tasks", num_tasks)):
        check_size(name, value)
    return list(check_hidden(hidden))


def make_student_actor(obs_dim: int, act_dim: int, num_tasks: int, hidden: Sequence[int] = (400, 400),
                       use_onehot: bool = False) -> TensorDictModule:
    """``π``: ``observation`` (+ ``task_onehot``) → ``action`` in [-1, 1]^act_max."""
    hidden = _check_student(obs_dim, act_dim, num_tasks, hidden)
    in_features = obs_dim + (num_tasks if use_onehot else 0)
    net = TanhMLP(in_features=in_features, out_features=act_dim, num_cells=list(hidden), activation_class=nn.ReLU)
    return TensorDictModule(net, in_keys=student_in_keys(use_onehot), out_keys=["action"])


def make_student_critic(obs_dim: int, act_dim: int, num_tasks: int, hidden: Sequence[int] = (400, 400),
                        use_onehot: bool = False) -> TensorDictModule:
    """``Q``: ``observation`` (+ ``task_onehot``), ``action`` → ``state_action_value``."""
    hidden = _check_student(obs_dim, act_dim, num_tasks, hidden)
    in_features = obs_dim + act_dim + (num_tasks if use_onehot else 0)
    net = MLP(in_features=in_features, out_features=1, num_cells=list(hidden), activation_class=nn.ReLU)
    return TensorDictModule(net, in_keys=[*student_in_keys(use_onehot), "action"], out_keys=["state_action_value"])


def _check_teacher(num_tasks: int, obs_max: int, act_max: int) -> None:
    for name, value in (("num_tasks", num_tasks), ("obs_max", obs_max), ("act_max", act_max)):
        check_size(name, value)


class StackedActor(nn.Module):
    """K actors: ``[K, N, obs_max] → tanh(MLP_k) → [K, N, act_max]``."""

    def __init__(self, num_tasks: int, obs_max: int, act_max: int, hidden: Sequence[int] = (400, 400)):
        super().__init__()
        _check_teacher(num_tasks, obs_max, act_max)
        self.mlp = StackedMLP(num_tasks, obs_max, act_max, hidden=check_hidden(hidden))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mlp(observation))


class StackedCritic(nn.Module):
    """K critics ``Q_k(s, g^k(a))``: the action is masked with ``m_k`` inside, before the first layer."""

    def __init__(self, num_tasks: int, obs_max: int, act_max: int, action_masks: torch.Tensor,
                 hidden: Sequence[int] = (400, 400)):
        super().__init__()
        _check_teacher(num_tasks, obs_max, act_max)
        if not isinstance(action_masks, torch.Tensor) or action_masks.shape != (num_tasks, act_max):
            shape = tuple(action_masks.shape) if isinstance(action_masks, torch.Tensor) else type(action_masks).__name__
            raise ValueError(f"action_masks of shape {shape} is not valid; valid: a [{num_tasks}, {act_max}] tensor "
                             "(num_tasks, act_max)")
        self.mlp = StackedMLP(num_tasks, obs_max + act_max, 1, hidden=check_hidden(hidden))
        self.register_buffer("action_masks", action_masks.float())

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        k, a = self.action_masks.shape
        mask = self.action_masks.view(k, *([1] * (action.dim() - 2)), a)
        return self.mlp(torch.cat([observation, action * mask], -1))


def make_teacher_actor(num_tasks: int, obs_max: int, act_max: int,
                       hidden: Sequence[int] = (400, 400)) -> TensorDictModule:
    """K trainable teacher actors as one module on ``[K, N]`` TensorDicts."""
    return TensorDictModule(StackedActor(num_tasks, obs_max, act_max, hidden), in_keys=["observation"],
                            out_keys=["action"])


def make_teacher_critic(num_tasks: int, obs_max: int, act_max: int, action_masks: torch.Tensor,
                        hidden: Sequence[int] = (400, 400)) -> TensorDictModule:
    """K trainable teacher critics as one module on ``[K, N]`` TensorDicts."""
    return TensorDictModule(StackedCritic(num_tasks, obs_max, act_max, action_masks, hidden),
                            in_keys=["observation", "action"], out_keys=["state_action_value"])


def stacked_layers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight [K, in, out], bias [K, 1, out])`` of every :class:`StackedLinear` in ``module``, in order."""
    return [(m.weight.detach(), m.bias.detach()) for m in module.modules() if isinstance(m, StackedLinear)]
