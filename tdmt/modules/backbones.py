"""Multi-task SAC backbones of CTPG §5 / App. F.3: MTSAC, MHSAC, Soft Modularization, PaCo (PCGrad uses MTSAC nets).

API summary
-----------
``make_sac_backbone(name, num_tasks=K, obs_dim=obs_max, act_dim=act_max, hidden=(400, 400), **options)`` returns
``SACBackbone(actor, qvalue)``:

* ``actor``: a TorchRL ``ProbabilisticActor`` (``TanhNormal`` on ``[-1, 1]^act_dim``) reading ``observation``
  ``[*batch, obs_dim]`` and ``task_id`` ``[*batch]`` (int64), writing ``loc``, ``scale`` and ``action``.
* ``qvalue``: a ``TensorDictModule`` reading ``observation``, ``action``, ``task_id`` and writing
  ``state_action_value`` ``[*batch, 1]``; ``MultiTaskSACLoss`` makes the twin critics from it.

**Acting as task j.** Every network takes the task from ``task_id`` only (``task_onehot`` is not read: MTSAC and
SM derive the one-hot from ``task_id``), so π_j or Q_j is applied to any rows — e.g. states of task i — by
overwriting ``task_id``: ``act_as(td, j)`` (``j`` an int or a tensor of per-row ids). Rows never interact: row r's
output depends only on row r's inputs. Any batch shape works; inside :func:`rows_are_tasks` (the caller's promise
that row k of a ``[K, ...]`` batch holds task k: replay samples ``[K, N]``, env batches ``[K]``/``[K, E]``) the
per-task parameters take the one-``baddbmm`` fast path; otherwise all K heads (MHSAC) or the P parameter sets
(PaCo) are evaluated and each row picks its own. No forward reads ``task_id`` on the host (DESIGN §9).

**Every task on the same rows.** ``net.all_tasks(x)`` returns ``[K, *batch, out]`` with ``[j] == net(x, j)``: what
CTPG's hindsight relabel needs (all K control policies scored on the same stored steps). Each net computes its
task-independent part once: MTSAC the observation half of the first layer, MHSAC the whole trunk (K heads on one
trunk output), SM the state representation; PaCo takes its ``[K, ...]`` row-layout path.

Backbones (``name``):

* ``mtsac`` (and ``pcgrad``, which is MTSAC nets trained with ``tdmt.optim.PCGrad``): MLP on
  ``[observation, one_hot(task_id)]``.
* ``mhsac``: shared MLP trunk on ``observation``, one linear head per task (``StackedLinear``).
* ``sm`` (Soft Modularization, Yang et al. 2020): state representation ``F(s)`` (MLP ``hidden``), task embedding
  ``H(z)``; routing features ``g = ReLU(W(F(s) ⊙ H(z)))`` (``routing_size``; ``routing_input="state_and_task"``,
  the public CTPG code's ``cond_obs=True``; ``"task"`` routes on ``H(z)`` alone); routing logits
  ``p^1 = W_d^1 g``, ``p^{l+1} = W_d^{l+1} (ReLU(W_u^l softmax(p^l)) ⊙ g)``; base network of ``num_layers`` ×
  ``num_modules`` modules (``module_size``), module i of layer l+1 reads ``Σ_j softmax_j(p^l)_{ij} ReLU(o^l_j)``,
  the output layer reads the routed mix of the last layer's modules.
* ``paco`` (Sun et al. 2022): every layer has a parameter set ``Φ = [φ_1..φ_P]`` (``param_sets`` = 3) and task τ
  uses ``θ_τ = Σ_p w_{τ,p} φ_p`` with one composition vector ``w_τ`` per task for the whole network.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import Tensor, nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal
from torchrl.modules.distributions.continuous import SafeTanhTransform

from tdmt.modules.stacked import StackedLinear

BACKBONES = ("mtsac", "mhsac", "pcgrad", "sm", "paco")
SM_ROUTING_INPUTS = ("state_and_task", "task")


def act_as(td: TensorDictBase, task_id: int | Tensor) -> TensorDictBase:
    """A shallow copy of ``td`` whose ``task_id`` is ``task_id`` (broadcast to the rows): run π_j / Q_j on it."""
    out = td.clone(False)
    tid = td.get("task_id")
    out.set("task_id", torch.as_tensor(task_id, device=tid.device, dtype=tid.dtype).expand_as(tid).clone())
    return out


_ROWS_ARE_TASKS = [False]  # set by :func:`rows_are_tasks`; a plain global so that torch.compile guards on it


@contextlib.contextmanager
def rows_are_tasks() -> Iterator[None]:
    """Inside, the caller promises that every ``[K, ...]`` ``task_id`` the backbones see holds task k in row k (a
    ``PerTaskReplayBuffer.sample()``, a ``[K]``/``[K, E]`` env batch): MHSAC and PaCo then take the per-task fast
    path (one ``baddbmm``) without reading ``task_id`` — reading it would make a CUDA stream wait for the host on
    every forward (DESIGN §9). Outside, every layout takes the general path (same values, row by row)."""
    previous = _ROWS_ARE_TASKS[0]
    _ROWS_ARE_TASKS[0] = True
    try:
        yield
    finally:
        _ROWS_ARE_TASKS[0] = previous


def is_row_layout(task_id: Tensor, num_tasks: int) -> bool:
    """Whether to take the per-task fast path: inside :func:`rows_are_tasks`, for ``[K, ...]`` ids (from the shape
    only: no host read)."""
    return _ROWS_ARE_TASKS[0] and task_id.dim() > 0 and task_id.shape[0] == num_tasks


def one_hot(task_id: Tensor, num_tasks: int, dtype: torch.dtype) -> Tensor:
    """``one_hot(task_id)`` by comparison with ``arange(K)``: ``nn.functional.one_hot`` reads the largest id on the
    host first (a sync on CUDA)."""
    return (task_id.unsqueeze(-1) == torch.arange(num_tasks, device=task_id.device)).to(dtype)


class UnitTanhNormal(TanhNormal):
    """TorchRL's ``TanhNormal`` on ``[-1, 1]`` (``upscale=5``, ``tanh_loc=False``, safe tanh), built without host reads.

    TorchRL's constructor checks ``high > low`` and ``high != 1`` with ``bool(tensor)`` on every call (two host
    syncs per actor forward on CUDA); with the bounds fixed to ``[-1, 1]`` both answers are known, so they are set
    here and the rest (``update``, sampling, log-probs) is TorchRL's own.
    """

    def __init__(self, loc: Tensor, scale: Tensor, event_dims: int | None = None):
        self.non_trivial_max = self.non_trivial_min = False
        self.tanh_loc, self.upscale = False, 5.0
        self._event_dims = min(1, loc.ndim) if event_dims is None else event_dims
        self.device = loc.device
        self.low = torch.full((), -1.0, device=loc.device)
        self.high = torch.full((), 1.0, device=loc.device)
        self._t = SafeTanhTransform()
        self.update(loc, scale)


def task_grid(num_tasks: int, lead: torch.Size, device: torch.device) -> Tensor:
    """``[K, *lead]`` int64 task ids whose slice ``[j]`` is all ``j``."""
    return torch.arange(num_tasks, device=device).view(num_tasks, *([1] * len(lead))).expand(num_tasks, *lead)


def mlp(in_features: int, hidden: Sequence[int], out_features: int | None = None) -> nn.Sequential:
    """``Linear-ReLU`` for each hidden size, then a final ``Linear`` to ``out_features`` if given."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(in_features, size), nn.ReLU()]
        in_features = size
    if out_features is not None:
        layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


class OneHotMLP(nn.Module):
    """MTSAC network: ``MLP([x, one_hot(task_id)])``."""

    def __init__(self, num_tasks: int, in_features: int, out_features: int, hidden: Sequence[int]):
        super().__init__()
        self.num_tasks, self.in_features = num_tasks, in_features
        self.net = mlp(in_features + num_tasks, hidden, out_features)

    def forward(self, x: Tensor, task_id: Tensor) -> Tensor:
        return self.net(torch.cat([x, one_hot(task_id, self.num_tasks, x.dtype)], -1))

    def all_tasks(self, x: Tensor) -> Tensor:
        """``[K, *batch, out]``: ``W[x, e_j] + b = (W_x x + b) + W_e[:, j]``, so the ``x`` half is computed once."""
        first = self.net[0]
        w_x, w_task = first.weight.split([self.in_features, self.num_tasks], dim=1)
        shared = nn.functional.linear(x.reshape(-1, self.in_features), w_x, first.bias)  # [R, hidden]
        h = (shared.unsqueeze(0) + w_task.T.contiguous().unsqueeze(1)).flatten(0, 1)  # [K·R, hidden]: 2-D GEMMs
        for layer in self.net[1:]:
            # in-place ReLU: no autograd here (inference), and a fresh K·R-row buffer per layer costs page faults
            h = h.relu_() if isinstance(layer, nn.ReLU) and not torch.is_grad_enabled() else layer(h)
        return h.view(self.num_tasks, *x.shape[:-1], -1)


class MultiHeadMLP(nn.Module):
    """MHSAC network: shared trunk ``MLP(x)`` then head ``task_id`` (heads stacked in one ``StackedLinear``)."""

    def __init__(self, num_tasks: int, in_features: int, out_features: int, hidden: Sequence[int]):
        super().__init__()
        if not hidden:
            raise ValueError("MHSAC hidden=() is not valid; valid: one or more sizes >= 1 (the shared trunk)")
        self.num_tasks = num_tasks
        self.trunk = mlp(in_features, hidden)
        self.heads = StackedLinear(num_tasks, hidden[-1], out_features)

    def forward(self, x: Tensor, task_id: Tensor) -> Tensor:
        h = self.trunk(x)
        if is_row_layout(task_id, self.num_tasks):
            return self.heads(h)
        # every head on every row (the heads are small next to the trunk), then row r keeps head task_id[r]
        every = self.heads(h.reshape(1, -1, h.shape[-1]).expand(self.num_tasks, -1, -1))  # [K, R, out]
        index = task_id.reshape(1, -1, 1).expand(1, every.shape[1], every.shape[2])
        return every.gather(0, index).reshape(*h.shape[:-1], -1)

    def all_tasks(self, x: Tensor) -> Tensor:
        """``[K, *batch, out]``: the trunk once, then every head on its output (one ``baddbmm``)."""
        h = self.trunk(x)
        flat = h.reshape(1, -1, h.shape[-1]).expand(self.num_tasks, -1, -1)
        return self.heads(flat).reshape(self.num_tasks, *h.shape[:-1], -1)


class SoftModularNet(nn.Module):
    """Soft Modularization (Yang et al. 2020): a routing network mixes ``num_layers × num_modules`` modules per row.

    All modules of a layer are one stacked weight ``[n, M, M]`` applied with one ``einsum``; no loop over tasks.
    """

    def __init__(self, num_tasks: int, in_features: int, out_features: int, hidden: Sequence[int], *,
                 num_layers: int = 4, num_modules: int = 4, module_size: int = 64, routing_size: int = 128,
                 routing_input: str = "state_and_task"):
        super().__init__()
        if not hidden:
            raise ValueError("Soft Modularization hidden=() is not valid; valid: one or more sizes >= 1 (the state "
                             "representation)")
        for name, value, low in (("num_layers", num_layers, 2), ("num_modules", num_modules, 1),
                                 ("module_size", module_size, 1), ("routing_size", routing_size, 1)):
            if value < low:
                raise ValueError(f"Soft Modularization {name}={value} is out of range; valid: >= {low}")
        if routing_input not in SM_ROUTING_INPUTS:
            raise ValueError(f"Soft Modularization routing_input={routing_input!r} is not valid; valid: "
                             f"{list(SM_ROUTING_INPUTS)}")
        self.routing_on_state = routing_input == "state_and_task"
        n, M, D = num_modules, module_size, hidden[-1]
        self.num_tasks, self.num_layers, self.num_modules = num_tasks, num_layers, num_modules
        self.state_repr = mlp(in_features, hidden)
        self.task_repr = nn.Embedding(num_tasks, D)
        self.routing_in = nn.Linear(D, routing_size)
        # num_layers - 1 routing matrices between module layers, then a routing vector to the output.
        self.route_down = nn.ModuleList([nn.Linear(routing_size, n * n) for _ in range(num_layers - 1)]
                                        + [nn.Linear(routing_size, n)])
        self.route_up = nn.ModuleList([nn.Linear(n * n, routing_size) for _ in range(num_layers - 1)])
        self.first = nn.Linear(D, n * M)
        bound = 1.0 / math.sqrt(M)
        self.module_weight = nn.Parameter(torch.empty(num_layers - 1, n, M, M).uniform_(-bound, bound))
        self.module_bias = nn.Parameter(torch.empty(num_layers - 1, n, M).uniform_(-bound, bound))
        self.out = nn.Linear(M, out_features)

    def routing(self, state: Tensor, task_id: Tensor) -> list[Tensor]:
        """Per-row routing probabilities: ``num_layers - 1`` tensors ``[*batch, n, n]`` then ``[*batch, n]``."""
        n = self.num_modules
        task = self.task_repr(task_id)
        g = torch.relu(self.routing_in(state * task if self.routing_on_state else task.expand_as(state)))
        probs: list[Tensor] = []
        logits = self.route_down[0](g)
        for layer in range(1, self.num_layers):
            p = torch.softmax(logits.unflatten(-1, (n, n)), -1)
            probs.append(p)
            logits = self.route_down[layer](torch.relu(self.route_up[layer - 1](p.flatten(-2))) * g)
        probs.append(torch.softmax(logits, -1))
        return probs

    def forward(self, x: Tensor, task_id: Tensor) -> Tensor:
        return self._routed(self.state_repr(x), task_id)

    def all_tasks(self, x: Tensor) -> Tensor:
        """``[K, *batch, out]``: the state representation ``F(s)`` once, routing and modules per task."""
        state = self.state_repr(x)
        grid = task_grid(self.num_tasks, state.shape[:-1], state.device)
        return self._routed(state.unsqueeze(0).expand(self.num_tasks, *state.shape), grid)

    def _routed(self, state: Tensor, task_id: Tensor) -> Tensor:
        probs = self.routing(state, task_id)
        out = self.first(state).unflatten(-1, (self.num_modules, -1))  # [*batch, n, M]
        for layer in range(self.num_layers - 1):
            mixed = probs[layer] @ torch.relu(out)  # module i reads Σ_j p_ij ReLU(o_j)
            out = torch.einsum("...nm,nmo->...no", mixed, self.module_weight[layer]) + self.module_bias[layer]
        final = (probs[-1].unsqueeze(-1) * torch.relu(out)).sum(-2)
        return self.out(final)


class PaCoMLP(nn.Module):
    """PaCo (Sun et al. 2022): layer l of task τ uses ``W_l = Σ_p w_{τ,p} φ_{l,p}`` (and the same mix of biases).

    ``w`` is ``[K, P]``, initialised with unit-norm nonnegative rows so composed weights keep the ``nn.Linear``
    scale. Row layout: weights composed per task then one ``baddbmm``; otherwise each row mixes the P outputs.
    """

    def __init__(self, num_tasks: int, in_features: int, out_features: int, hidden: Sequence[int], *,
                 param_sets: int = 3):
        super().__init__()
        if param_sets < 1:
            raise ValueError(f"PaCo param_sets={param_sets} is out of range; valid: >= 1")
        self.num_tasks, self.param_sets = num_tasks, param_sets
        sizes = [in_features, *hidden, out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(param_sets, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(param_sets, b).uniform_(-bound, bound)))
        w = torch.rand(num_tasks, param_sets)
        self.task_weights = nn.Parameter(w / w.norm(dim=-1, keepdim=True))

    def forward(self, x: Tensor, task_id: Tensor) -> Tensor:
        return self._forward(x, task_id, is_row_layout(task_id, self.num_tasks))

    def _forward(self, x: Tensor, task_id: Tensor, row_layout: bool) -> Tensor:
        lead = x.shape[:-1]
        if row_layout:
            h = x.reshape(self.num_tasks, -1, x.shape[-1])
        else:
            h, mix = x.reshape(-1, x.shape[-1]), self.task_weights[task_id.reshape(-1)]
        last = len(self.weights) - 1
        for i, (phi, bias) in enumerate(zip(self.weights, self.biases)):
            if row_layout:
                weight = torch.einsum("kp,pio->kio", self.task_weights, phi)
                h = torch.baddbmm((self.task_weights @ bias).unsqueeze(1), h, weight)
            else:
                h = torch.einsum("bp,bpo->bo", mix, torch.einsum("bi,pio->bpo", h, phi) + bias)
            if i < last:
                h = torch.relu(h)
        return h.reshape(*lead, -1)

    def all_tasks(self, x: Tensor) -> Tensor:
        """``[K, *batch, out]`` through the ``[K, ...]`` row-layout path (weights composed once per task)."""
        grid = task_grid(self.num_tasks, x.shape[:-1], x.device)
        return self._forward(x.unsqueeze(0).expand(self.num_tasks, *x.shape), grid, row_layout=True)


_NETS = {"mtsac": OneHotMLP, "pcgrad": OneHotMLP, "mhsac": MultiHeadMLP, "sm": SoftModularNet, "paco": PaCoMLP}
_OPTIONS = {"sm": ("num_layers", "num_modules", "module_size", "routing_size", "routing_input"),
            "paco": ("param_sets",)}


class _ActorNet(nn.Module):
    """``(observation, task_id) → (loc, scale)`` through a task-conditioned net with ``2·act_dim`` outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.extract = net, NormalParamExtractor()

    def forward(self, observation: Tensor, task_id: Tensor) -> tuple[Tensor, Tensor]:
        return self.extract(self.net(observation, task_id))

    def all_tasks(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """``loc``, ``scale`` of every task's policy on the same rows: ``[K, *batch, act_dim]`` each."""
        return self.extract(self.net.all_tasks(observation))


class _CriticNet(nn.Module):
    """``(observation, action, task_id) → Q`` through a task-conditioned net on ``[observation, action]``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, observation: Tensor, action: Tensor, task_id: Tensor) -> Tensor:
        return self.net(torch.cat([observation, action], -1), task_id)


class SACBackbone(NamedTuple):
    actor: ProbabilisticActor
    qvalue: TensorDictModule


def make_sac_backbone(name: str, *, num_tasks: int, obs_dim: int, act_dim: int,
                      hidden: Sequence[int] = (400, 400), **options) -> SACBackbone:
    """Actor and critic of backbone ``name`` (one of ``BACKBONES``) for padded sizes ``obs_dim``/``act_dim``.

    ``options``: ``sm`` takes ``num_layers`` (4), ``num_modules`` (4), ``module_size`` (64), ``routing_size``
    (128), ``routing_input`` (``"state_and_task"``), with ``hidden`` its state representation; ``paco`` takes
    ``param_sets`` (3).
    """
    if name not in _NETS:
        raise ValueError(f"backbone={name!r} is not valid; valid: {list(BACKBONES)}")
    for key, value in (("num_tasks", num_tasks), ("obs_dim", obs_dim), ("act_dim", act_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"make_sac_backbone {key}={value!r} is out of range; valid: an int >= 1")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"make_sac_backbone hidden={list(hidden)!r} is not valid; valid: sizes >= 1")
    allowed = _OPTIONS.get(name, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"backbone {name!r} does not take options {unknown}; valid: {list(allowed)}")
    cls = _NETS[name]
    actor_net = _ActorNet(cls(num_tasks, obs_dim, 2 * act_dim, tuple(hidden), **options))
    critic_net = _CriticNet(cls(num_tasks, obs_dim + act_dim, 1, tuple(hidden), **options))
    module = TensorDictModule(actor_net, in_keys=["observation", "task_id"], out_keys=["loc", "scale"])
    actor = ProbabilisticActor(module, in_keys=["loc", "scale"], out_keys=["action"],
                               spec=Bounded(-1.0, 1.0, (act_dim,)), distribution_class=UnitTanhNormal)
    qvalue = TensorDictModule(critic_net, in_keys=["observation", "action", "task_id"],
                              out_keys=["state_action_value"])
    return SACBackbone(actor, qvalue)
