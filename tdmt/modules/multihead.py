"""Multi-head networks of Arora et al. (DESIGN §5): shared hidden layers, one output head per task.

``MultiHeadMLP`` is an MLP whose hidden layers are shared by every task (``shared_trunk=True``, the multi-task
student / vanilla multi-task network) or stacked per task (``shared_trunk=False``: K independent networks, the
single-task "Scratch" baselines and the teachers, trained together as one batched model). The output layer is
always a :class:`~tdmt.modules.StackedLinear` with one head per task.

Rows are routed to their task's parameters without a Python loop over tasks, by one of three paths picked from
``task_id``:

* task-major ``[K, ...]`` data (row k is task k, the per-task replay layout): one ``baddbmm`` per stacked layer;
* a batch of one task i (an A2C rollout of task i): the stacked layers use ``weight[i]`` only, so the gradient
  reaches head i alone;
* mixed rows: each row gathers its task's weights (``weight[task_id]``) and one batched matrix product applies them.

``make_gaussian_actor`` and ``make_value_critic`` wrap these into TorchRL modules (``ProbabilisticActor`` with a
``TanhNormal`` whose pre-squash ``loc``/``scale`` are kept in the TensorDict, and ``ValueOperator``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator

from tdmt.modules.stacked import StackedLinear


def _route(task_id: torch.Tensor, num_tasks: int) -> str | int:
    """``"stacked"`` for task-major ``[K, ...]`` ids, ``i`` when every id is i, else ``"gather"``."""
    if task_id.numel() == 0:
        raise ValueError("empty task_id batch")
    if torch._C._functorch.is_batchedtensor(task_id):  # inside vmap: no data-dependent branch
        return "gather"
    low, high = int(task_id.min()), int(task_id.max())
    if low < 0 or high >= num_tasks:
        raise ValueError(f"task_id out of range [0, {num_tasks}): min {low}, max {high}")
    if low == high:
        return low
    if task_id.dim() >= 1 and task_id.shape[0] == num_tasks:
        major = torch.arange(num_tasks, device=task_id.device).view(num_tasks, *([1] * (task_id.dim() - 1)))
        if bool((task_id == major).all()):
            return "stacked"
    return "gather"


def _per_task_linear(layer: StackedLinear, h: torch.Tensor, task_id: torch.Tensor, route: str | int) -> torch.Tensor:
    """Apply ``layer`` to ``h`` (``[*B, in]``) where row b uses stack ``task_id[b]``, following ``route``."""
    if route == "stacked":
        return layer(h)
    if isinstance(route, int):
        return torch.addmm(layer.bias[route], h.reshape(-1, layer.in_features), layer.weight[route]).reshape(
            *h.shape[:-1], layer.out_features)
    flat, ids = h.reshape(-1, 1, layer.in_features), task_id.reshape(-1)
    out = torch.baddbmm(layer.bias[ids], flat, layer.weight[ids])
    return out.reshape(*h.shape[:-1], layer.out_features)


class MultiHeadMLP(nn.Module):
    """``in → hidden… → out`` with one output head per task; hidden layers shared or stacked per task.

    ``forward(x, task_id)``: ``x`` is ``[*B, in]``, ``task_id`` (int64) has shape ``B`` (or broadcasts to it);
    returns ``[*B, out]`` where row b went through head ``task_id[b]`` (and trunk ``task_id[b]`` if not shared).
    """

    def __init__(self, num_tasks: int, in_features: int, out_features: int, hidden: Sequence[int] = (64, 64),
                 activation: type[nn.Module] = nn.Tanh, shared_trunk: bool = True):
        super().__init__()
        if num_tasks < 1 or not hidden:
            raise ValueError(f"need num_tasks >= 1 and at least one hidden layer; got {num_tasks}, {list(hidden)}")
        self.num_tasks, self.in_features, self.out_features = num_tasks, in_features, out_features
        self.shared_trunk = shared_trunk
        sizes = [in_features, *hidden]
        self.trunk = nn.ModuleList(
            nn.Linear(a, b) if shared_trunk else StackedLinear(num_tasks, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation()
        self.head = StackedLinear(num_tasks, hidden[-1], out_features)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        task_id = task_id.reshape(task_id.shape[: x.dim() - 1]) if task_id.dim() == x.dim() else task_id
        task_id = task_id.expand(x.shape[:-1])
        route = _route(task_id, self.num_tasks)
        h = x
        for layer in self.trunk:
            h = layer(h) if isinstance(layer, nn.Linear) else _per_task_linear(layer, h, task_id, route)
            h = self.activation(h)
        return _per_task_linear(self.head, h, task_id, route)

    def head_parameters(self) -> list[nn.Parameter]:
        """The last layer (the per-task heads): what the fine-tuning baseline trains."""
        return list(self.head.parameters())

    def stacked_parameters(self) -> list[nn.Parameter]:
        """Parameters with a leading task dim (row k belongs to task k only)."""
        params = list(self.head.parameters())
        if not self.shared_trunk:
            params += [p for layer in self.trunk for p in layer.parameters()]
        return params


def make_gaussian_actor(num_tasks: int, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64),
                        shared_trunk: bool = True, activation: type[nn.Module] = nn.Tanh,
                        action_spec: Bounded | None = None) -> ProbabilisticActor:
    """Multi-head Gaussian policy: ``(observation, task_id) → loc, scale → TanhNormal`` action in [-1, 1].

    The head outputs the mean and a pre-activation of the standard deviation per action dim (Arora et al. §3.1.2:
    "the output layer of our policy network consists of a real-valued mean and the log variance"); the scale is
    ``biased_softplus_1.0`` of it (TorchRL's default: smooth, positive, 1 at zero). ``loc``/``scale`` stay in the
    TensorDict, pre-squash: that is what :class:`~tdmt.objectives.KLGaussianDistillLoss` compares.
    """
    net = MultiHeadMLP(num_tasks, obs_dim, 2 * act_dim, hidden, activation, shared_trunk)
    module = TensorDictSequential(
        TensorDictModule(net, in_keys=["observation", "task_id"], out_keys=["param"]),
        TensorDictModule(NormalParamExtractor(), in_keys=["param"], out_keys=["loc", "scale"]),
    )
    return ProbabilisticActor(module, in_keys=["loc", "scale"], out_keys=["action"], spec=action_spec,
                              distribution_class=TanhNormal, distribution_kwargs={"low": -1.0, "high": 1.0},
                              return_log_prob=True)


def make_value_critic(num_tasks: int, obs_dim: int, hidden: Sequence[int] = (64, 64, 64), shared_trunk: bool = True,
                      activation: type[nn.Module] = nn.Tanh) -> ValueOperator:
    """Multi-head state-value critic ``(observation, task_id) → state_value`` (one value head per task)."""
    net = MultiHeadMLP(num_tasks, obs_dim, 1, hidden, activation, shared_trunk)
    return ValueOperator(net, in_keys=["observation", "task_id"])


def actor_net(actor: ProbabilisticActor) -> MultiHeadMLP:
    """The :class:`MultiHeadMLP` inside an actor built by :func:`make_gaussian_actor`."""
    return actor.module[0].module[0].module
