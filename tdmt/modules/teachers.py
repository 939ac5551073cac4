"""Frozen K-task teachers (KTM-DRL §3.1): ``Q^k_1``, ``Q^k_2`` and ``π^k`` of every task in one call on ``[K, N]``.

Each teacher is saved at its task's native sizes (``obs_k``, ``act_k``). Loading pads it to the suite's
``obs_max``/``act_max`` with zeros: zero input rows for padded observation/action dims and zero output columns
for padded action dims, so on padded inputs the stacked teacher computes exactly what the native one does, and
``π^k`` outputs 0 (``tanh(0)``) on padded action dims. Heterogeneous teachers then stack (DESIGN §2).

Weights are registered as buffers: they never receive gradients, are not in ``parameters()`` (so a loss's
optimiser and ``SoftUpdate`` ignore them) and travel with ``state_dict``/``.to()``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_map

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # (weight [in, out], bias [out]) per layer, native sizes
TEACHER_FILE = "teacher.pt"


class FrozenStackedMLP(nn.Module):
    """S stacked ReLU MLPs from fixed weights ``[S, in, out]`` / biases ``[S, 1, out]`` (buffers)."""

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], tanh_out: bool = False):
        super().__init__()
        self.num_layers, self.tanh_out = len(weights), tanh_out
        for i, (w, b) in enumerate(zip(weights, biases)):
            self.register_buffer(f"w{i}", w.detach().float().clone())
            self.register_buffer(f"b{i}", b.detach().float().clone())

    def forward(self, x: torch.Tensor, stacks: slice = slice(None)) -> torch.Tensor:
        """``x``: ``[S', M, in]`` with ``S'`` the number of stacks selected by ``stacks``."""
        for i in range(self.num_layers):
            x = torch.baddbmm(getattr(self, f"b{i}")[stacks], x, getattr(self, f"w{i}")[stacks])
            if i < self.num_layers - 1:
                x = torch.relu(x)
        return torch.tanh(x) if self.tanh_out else x


def _pad_rows(w: torch.Tensor, blocks: Sequence[tuple[int, int, int]], rows: int) -> torch.Tensor:
    """Place row blocks ``(src_start, dst_start, length)`` of ``w`` into a zero matrix with ``rows`` rows."""
    out = w.new_zeros(rows, w.shape[1])
    for src, dst, n in blocks:
        out[dst: dst + n] = w[src: src + n]
    return out


def pad_teacher(teacher: dict, obs_max: int, act_max: int) -> tuple[Layers, Layers, Layers]:
    """Native teacher → (actor, critic1, critic2) layers at padded sizes (zero rows/columns)."""
    obs_k, act_k = teacher["obs_dim"], teacher["act_dim"]
    for name, value in (("obs_max", obs_max), ("act_max", act_max)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not valid; valid: an int >= 1")
    if obs_k > obs_max or act_k > act_max:
        raise ValueError(f"teacher sizes (obs {obs_k}, act {act_k}) exceed the padding (obs_max={obs_max}, "
                         f"act_max={act_max}); valid: obs_max >= {obs_k}, act_max >= {act_k}")
    actor = [(w.clone(), b.clone()) for w, b in teacher["actor"]]
    actor[0] = (_pad_rows(actor[0][0], [(0, 0, obs_k)], obs_max), actor[0][1])
    w_last, b_last = actor[-1]
    actor[-1] = (torch.cat([w_last, w_last.new_zeros(w_last.shape[0], act_max - act_k)], 1),
                 torch.cat([b_last, b_last.new_zeros(act_max - act_k)]))
    critics = []
    for name in ("critic1", "critic2"):
        layers = [(w.clone(), b.clone()) for w, b in teacher[name]]
        layers[0] = (_pad_rows(layers[0][0], [(0, 0, obs_k), (obs_k, obs_max, act_k)], obs_max + act_max),
                     layers[0][1])
        critics.append(layers)
    return actor, critics[0], critics[1]


def native_teacher(actor: Layers, critic1: Layers, critic2: Layers, obs_dim: int, act_dim: int,
                   obs_max: int, act_max: int) -> dict:
    """Padded single-task layers → the native-size teacher (inverse of :func:`pad_teacher` on real dims)."""
    actor = [(w.clone(), b.clone()) for w, b in actor]
    actor[0] = (actor[0][0][:obs_dim], actor[0][1])
    actor[-1] = (actor[-1][0][:, :act_dim], actor[-1][1][:act_dim])
    out = {"obs_dim": obs_dim, "act_dim": act_dim, "actor": actor}
    for name, layers in (("critic1", critic1), ("critic2", critic2)):
        layers = [(w.clone(), b.clone()) for w, b in layers]
        w0 = layers[0][0]
        layers[0] = (torch.cat([w0[:obs_dim], w0[obs_max: obs_max + act_dim]]), layers[0][1])
        out[name] = layers
    return out


def save_teacher(teacher: dict, folder: str | os.PathLike) -> Path:
    """Write one native-size teacher to ``folder/teacher.pt`` (atomically), as compact host tensors whatever device
    trained it: the file loads on a CPU-only machine and holds no view of the K stacked teachers' storage."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (TEACHER_FILE + ".tmp")
    host = tree_map(lambda x: x.detach().to("cpu", copy=True) if isinstance(x, torch.Tensor) else x, teacher)
    torch.save(host, tmp)
    os.replace(tmp, folder / TEACHER_FILE)
    return folder / TEACHER_FILE


def load_teacher(folder: str | os.PathLike) -> dict:
    """The teacher saved in ``folder``, on the CPU (``map_location="cpu"``: a file written from a GPU loads
    anywhere; :class:`StackedTeachers` then moves with its loss to the training device)."""
    path = Path(folder) / TEACHER_FILE
    if not path.exists():
        raise FileNotFoundError(f"no teacher at {path} (train teachers with recipes/train_teachers.py)")
    return torch.load(path, map_location="cpu", weights_only=True)


class StackedTeachers(nn.Module):
    """K frozen TD3 teachers evaluated together.

    ``q(s, a)`` → ``[2, *B]`` (``Q^k_1``, ``Q^k_2``), ``q1(s, a)`` → ``[*B]``, ``policy(s)`` → ``[*B, act_max]``.
    Inputs are ``[K, N, ...]`` (row k = task k; the fast path), any shape with ``task_id=k`` (an int: every row
    is task k, only teacher k runs — a per-task update), or any shape with a ``task_id`` tensor of the same batch
    shape (every teacher is applied, each row keeps its task's output: K× the arithmetic).
    """

    def __init__(self, teachers: Sequence[dict], obs_max: int, act_max: int):
        super().__init__()
        if not teachers:
            raise ValueError("teachers=[] is not valid; valid: one teacher per task (at least one)")
        padded = [pad_teacher(t, obs_max, act_max) for t in teachers]
        shapes = {tuple(w.shape for w, _ in layers) for p in padded for layers in p[1:]}
        if len({tuple(w.shape for w, _ in p[0]) for p in padded}) != 1 or len(shapes) != 1:
            raise ValueError("teachers must share hidden sizes to be stacked; got "
                             f"{[[w.shape[1] for w, _ in t['actor'][:-1]] for t in teachers]}")
        self.num_tasks, self.obs_max, self.act_max = len(teachers), obs_max, act_max
        self.obs_dims = [t["obs_dim"] for t in teachers]
        self.act_dims = [t["act_dim"] for t in teachers]
        self.actor = FrozenStackedMLP(*self._stack([p[0] for p in padded]), tanh_out=True)
        # Critic stacks 0..K-1 are Q^k_1, stacks K..2K-1 are Q^k_2.
        self.critic = FrozenStackedMLP(*self._stack([p[1] for p in padded] + [p[2] for p in padded]))

    @staticmethod
    def _stack(nets: Sequence[Layers]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n_layers = len(nets[0])
        weights = [torch.stack([net[i][0] for net in nets]) for i in range(n_layers)]
        biases = [torch.stack([net[i][1] for net in nets]).unsqueeze(1) for i in range(n_layers)]
        return weights, biases

    @classmethod
    def load(cls, folder: str | os.PathLike, task_names: Sequence[str], obs_max: int, act_max: int
             ) -> StackedTeachers:
        """Load ``folder/<task>/teacher.pt`` for each task, in the given (task id) order."""
        return cls([load_teacher(Path(folder) / name) for name in task_names], obs_max, act_max)

    # ------------------------------------------------------------------ evaluation
    def _run(self, net: FrozenStackedMLP, x: torch.Tensor, task_id: torch.Tensor | int | None, copies: int
               ) -> torch.Tensor:
        """Run the first ``copies`` blocks of K stacks of ``net`` (critic: block 0 = Q^k_1, block 1 = Q^k_2);
        returns ``[copies, *B, out]``."""
        k = self.num_tasks
        if task_id is None:
            if x.dim() < 2 or x.shape[0] != k:
                raise ValueError(f"stacked input of shape {tuple(x.shape)} is not valid; valid: [K={k}, ...], or pass "
                                 "task_id")
            lead = x.shape[:-1]
            x3 = x.reshape(1, k, -1, x.shape[-1]).expand(copies, -1, -1, -1).reshape(copies * k, -1, x.shape[-1])
            return net(x3, slice(0, copies * k)).reshape(copies, *lead, -1)
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            # One task for every row (a per-task update): only teacher k's stacks run.
            if not 0 <= task_id < k:
                raise ValueError(f"task_id={task_id} is out of range; valid: 0 <= task_id < {k}")
            lead, flat = x.shape[:-1], x.reshape(1, -1, x.shape[-1])
            return net(flat.expand(copies, -1, -1), slice(task_id, copies * k, k)).reshape(copies, *lead, -1)
        if not isinstance(task_id, torch.Tensor) or task_id.shape != x.shape[:-1]:
            shape = tuple(task_id.shape) if isinstance(task_id, torch.Tensor) else repr(task_id)
            raise ValueError(f"task_id of shape {shape} is not valid; valid: an int, or a tensor of the batch shape "
                             f"{tuple(x.shape[:-1])}")
        lead, flat, tid = x.shape[:-1], x.reshape(-1, x.shape[-1]), task_id.reshape(-1)
        out = net(flat.expand(copies * k, -1, -1), slice(0, copies * k)).reshape(copies, k, flat.shape[0], -1)
        rows = torch.arange(flat.shape[0], device=x.device)
        return out[:, tid, rows].reshape(copies, *lead, -1)

    def _check_inputs(self, observation: torch.Tensor, action: torch.Tensor | None = None) -> None:
        if observation.shape[-1] != self.obs_max or (action is not None and action.shape[-1] != self.act_max):
            got = f"observation width {observation.shape[-1]}" + (
                f", action width {action.shape[-1]}" if action is not None else "")
            raise ValueError(f"{got} is not valid; valid: the padded sizes obs_max={self.obs_max}, "
                             f"act_max={self.act_max}")

    def q(self, observation: torch.Tensor, action: torch.Tensor, task_id: torch.Tensor | int | None = None
          ) -> torch.Tensor:
        """``[Q^k_1(s, a), Q^k_2(s, a)]`` → ``[2, *B]`` (``a`` padded; padded dims meet zero weights).

        ``task_id``: ``None`` for ``[K, ...]`` inputs (row k is task k), an int when every row is that task, or
        a tensor of the batch shape giving each row's task.
        """
        self._check_inputs(observation, action)
        x = torch.cat([observation, action], -1)
        return self._run(self.critic, x, task_id, 2).squeeze(-1)

    def q1(self, observation: torch.Tensor, action: torch.Tensor, task_id: torch.Tensor | int | None = None
           ) -> torch.Tensor:
        """``Q^k_1(s, a)`` → ``[*B]`` (only the first critic of each teacher is computed)."""
        self._check_inputs(observation, action)
        x = torch.cat([observation, action], -1)
        return self._run(self.critic, x, task_id, 1)[0].squeeze(-1)

    def policy(self, observation: torch.Tensor, task_id: torch.Tensor | int | None = None) -> torch.Tensor:
        """``π^k(s)`` → ``[*B, act_max]``, exactly 0 on task k's padded action dims."""
        self._check_inputs(observation)
        return self._run(self.actor, observation, task_id, 1)[0]

    def forward(self, observation: torch.Tensor, task_id: torch.Tensor | int | None = None) -> torch.Tensor:
        return self.policy(observation, task_id)
