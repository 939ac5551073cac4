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

Picking the path from ``task_id``'s values reads them on the host (a host–device sync per forward on a GPU). A
caller that knows its data's layout says so with :func:`task_layout` (``"task_major"``: the env's ``[K, E]`` batch,
the per-task replay's ``[K, N]``; ``"one_task"``: one task's rollout) and the forward makes no sync: the one-task
path then reads the task from the first row on the device (``index_select``).

``make_gaussian_actor`` and ``make_value_critic`` wrap these into TorchRL modules (``ProbabilisticActor`` and
``ValueOperator``). The actor's default is the paper's Gaussian as its public code builds it
(jasonkrone/elen6885-final-project, ``model.MLPPolicy``): an unsquashed mean head, one learned state-independent
log-std per action dim and task (σ = 1 at start), weights initialised with unit-norm rows (``weights_init_mlp``)
and the mean layer scaled ×0.01. ``distribution="tanh_normal"`` is tdmt's earlier policy (``TanhNormal`` with a
state-dependent σ). On padded suites (``act_dims``) both count only each task's real action dims in the
log-probability and entropy (:mod:`tdmt.modules.gaussian`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, ValueOperator

from tdmt.modules.gaussian import MaskedNormal, MaskedTanhNormal
from tdmt.modules.stacked import StackedLinear

DISTRIBUTIONS = ("gaussian", "tanh_normal")
LAYOUTS = ("task_major", "one_task")
_layout: list[str] = []  # the innermost :func:`task_layout` in force (empty: read the layout from the values)


@contextlib.contextmanager
def task_layout(layout: Literal["task_major", "one_task"]) -> Iterator[None]:
    """Within the block, every :class:`MultiHeadMLP` forward takes its data's layout as given instead of reading
    ``task_id`` on the host: ``"task_major"`` (row k of the leading ``[K, ...]`` dim is task k) or ``"one_task"``
    (every row has the first row's task). Not checked: a wrong layout routes rows through the wrong heads."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not valid; valid: {list(LAYOUTS)}")
    _layout.append(layout)
    try:
        yield
    finally:
        _layout.pop()


def _route(task_id: torch.Tensor, num_tasks: int) -> str | int | torch.Tensor:
    """``"stacked"`` for task-major ``[K, ...]`` ids, ``i`` when every id is i, else ``"gather"``; under
    :func:`task_layout`, ``"stacked"`` or the first row's task as a ``[1]`` tensor, without reading the values."""
    if task_id.numel() == 0:
        raise ValueError("empty task_id batch")
    if _layout:
        return "stacked" if _layout[-1] == "task_major" else task_id.reshape(-1)[:1]
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


def _per_task_linear(layer: StackedLinear, h: torch.Tensor, task_id: torch.Tensor,
                     route: str | int | torch.Tensor) -> torch.Tensor:
    """Apply ``layer`` to ``h`` (``[*B, in]``) where row b uses stack ``task_id[b]``, following ``route``."""
    if isinstance(route, torch.Tensor):  # one task, given on the device: no host read of its index
        weight, bias = layer.weight.index_select(0, route)[0], layer.bias.index_select(0, route)[0]
        return torch.addmm(bias, h.reshape(-1, layer.in_features), weight).reshape(*h.shape[:-1], layer.out_features)
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
    ``shared_layers`` (default: every hidden layer if ``shared_trunk`` else none) shares only the first so many
    hidden layers; the rest are stacked per task (Arora et al. §3.1.4: the value network shares one).
    """

    def __init__(self, num_tasks: int, in_features: int, out_features: int, hidden: Sequence[int] = (64, 64),
                 activation: type[nn.Module] = nn.Tanh, shared_trunk: bool = True, shared_layers: int | None = None):
        super().__init__()
        if num_tasks < 1 or not hidden:
            raise ValueError(f"need num_tasks >= 1 and at least one hidden layer; got {num_tasks}, {list(hidden)}")
        shared = (len(hidden) if shared_trunk else 0) if shared_layers is None else shared_layers
        if not 0 <= shared <= len(hidden):
            raise ValueError(f"shared_layers={shared_layers} is out of range; valid: 0..{len(hidden)} (hidden layers)")
        self.num_tasks, self.in_features, self.out_features = num_tasks, in_features, out_features
        self.shared_trunk = shared == len(hidden)
        sizes = [in_features, *hidden]
        self.trunk = nn.ModuleList(
            nn.Linear(a, b) if i < shared else StackedLinear(num_tasks, a, b)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
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
        params += [p for layer in self.trunk if isinstance(layer, StackedLinear) for p in layer.parameters()]
        return params

    @torch.no_grad()
    def normc_init_(self, head_gain: float = 1.0) -> MultiHeadMLP:
        """The public code's ``weights_init_mlp``: each unit's incoming weights drawn N(0, 1) and scaled to unit
        norm, biases 0; the head's weights then ×``head_gain`` (0.01 for the Gaussian mean layer)."""
        for layer in [*self.trunk, self.head]:
            weight = layer.weight.normal_()
            in_dim = -1 if isinstance(layer, nn.Linear) else -2  # nn.Linear: [out, in]; StackedLinear: [K, in, out]
            weight /= weight.pow(2).sum(in_dim, keepdim=True).sqrt()
            layer.bias.zero_()
        self.head.weight.mul_(head_gain)
        return self


class TaskLogStd(nn.Module):
    """One learned, state-independent log-std per task and action dim (``[K, act]``, 0 at start: σ = 1);
    ``forward(loc, task_id)`` returns each row's ``σ = exp(log_std[task_id])`` broadcast to ``loc``."""

    def __init__(self, num_tasks: int, act_dim: int):
        super().__init__()
        self.log_std = nn.Parameter(torch.zeros(num_tasks, act_dim))

    def forward(self, loc: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        task_id = task_id.reshape(loc.shape[:-1]) if task_id.dim() == loc.dim() else task_id
        return self.log_std[task_id].exp().expand_as(loc)


class TaskRows(nn.Module):
    """``table[task_id]``: a per-task constant (e.g. the ``[K, act_max]`` action-dim mask) for every row."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, task_id: torch.Tensor) -> torch.Tensor:
        return self.table[task_id]


def make_gaussian_actor(num_tasks: int, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64),
                        shared_trunk: bool = True, activation: type[nn.Module] = nn.Tanh,
                        action_spec: Bounded | None = None, distribution: str = "gaussian",
                        act_dims: Sequence[int] | None = None) -> ProbabilisticActor:
    """Multi-head Gaussian policy ``(observation, task_id) → loc, scale → action`` (Arora et al. §3.1.2, §3.1.4).

    ``distribution="gaussian"`` (the paper's, as its public code builds it): the head outputs the mean μ; σ is
    one learned log-std per task and action dim, independent of the state (:class:`TaskLogStd`, σ = 1 at start);
    the action is an unsquashed sample of N(μ, σ²) (the env clips it to [-1, 1]), deterministic action μ; exact
    entropy. Weights: the public code's unit-norm init, the mean layer ×0.01 (:meth:`MultiHeadMLP.normc_init_`).
    ``"tanh_normal"`` (tdmt's earlier policy): the head outputs μ and a pre-activation of a state-dependent σ
    (``biased_softplus_1.0``: 1 at zero), the action is ``tanh`` of the sample (TorchRL ``TanhNormal``).
    Either way ``loc``/``scale`` (pre-squash) stay in the TensorDict: what
    :class:`~tdmt.objectives.KLGaussianDistillLoss` compares. ``act_dims`` (each task's real action dims) writes
    the ``[*B, act_dim]`` mask ``action_dim_mask`` so that log-probabilities and entropies skip padded dims.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution={distribution!r} is not valid; valid: {list(DISTRIBUTIONS)}")
    in_keys = {"loc": "loc", "scale": "scale"}
    if distribution == "gaussian":
        net = MultiHeadMLP(num_tasks, obs_dim, act_dim, hidden, activation, shared_trunk).normc_init_(head_gain=0.01)
        modules = [TensorDictModule(net, in_keys=["observation", "task_id"], out_keys=["loc"]),
                   TensorDictModule(TaskLogStd(num_tasks, act_dim), in_keys=["loc", "task_id"], out_keys=["scale"])]
        distribution_class = MaskedNormal
    else:
        net = MultiHeadMLP(num_tasks, obs_dim, 2 * act_dim, hidden, activation, shared_trunk)
        modules = [TensorDictModule(net, in_keys=["observation", "task_id"], out_keys=["param"]),
                   TensorDictModule(NormalParamExtractor(), in_keys=["param"], out_keys=["loc", "scale"])]
        distribution_class = MaskedTanhNormal
    if act_dims is not None:
        masks = (torch.arange(act_dim) < torch.as_tensor(list(act_dims))[:, None]).float()
        modules.append(TensorDictModule(TaskRows(masks), in_keys=["task_id"], out_keys=["action_dim_mask"]))
        in_keys["mask"] = "action_dim_mask"
    return ProbabilisticActor(TensorDictSequential(*modules), in_keys=in_keys, out_keys=["action"], spec=action_spec,
                              distribution_class=distribution_class, return_log_prob=True)


def make_value_critic(num_tasks: int, obs_dim: int, hidden: Sequence[int] = (64, 64), shared_trunk: bool = True,
                      activation: type[nn.Module] = nn.Tanh, shared_layers: int | None = None) -> ValueOperator:
    """Multi-head state-value critic ``(observation, task_id) → state_value`` (one value head per task).

    The paper's critic (§4.1; the public code's ``v_fc1..v_fc3``) is 3 FC layers, two 64-unit hidden layers and the
    value head; in vanilla multi-task (§3.1.4) "the value network consists of one shared hidden layer and n output
    heads": ``shared_layers=1``. Unit-norm init as in the public code.
    """
    net = MultiHeadMLP(num_tasks, obs_dim, 1, hidden, activation, shared_trunk, shared_layers).normc_init_()
    return ValueOperator(net, in_keys=["observation", "task_id"])


def actor_net(actor: ProbabilisticActor) -> MultiHeadMLP:
    """The :class:`MultiHeadMLP` inside an actor built by :func:`make_gaussian_actor`."""
    return actor.module[0].module[0].module


def actor_log_std(actor: ProbabilisticActor) -> nn.Parameter | None:
    """The ``[K, act]`` state-independent log-std of a ``distribution="gaussian"`` actor (``None`` otherwise)."""
    second = actor.module[0].module[1].module
    return second.log_std if isinstance(second, TaskLogStd) else None


def actor_stacked_parameters(actor: ProbabilisticActor) -> list[nn.Parameter]:
    """The actor's parameters with a leading task dim: the heads (and stacked hidden layers) and the log-std."""
    log_std = actor_log_std(actor)
    return actor_net(actor).stacked_parameters() + ([log_std] if log_std is not None else [])
