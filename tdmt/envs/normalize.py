"""Observation normalisation with running statistics per task (Arora et al.'s public code; DESIGN §5).

The authors' code (jasonkrone/elen6885-final-project, ``running_stat.ObsNorm`` in ``model.MLPPolicy``) normalises
every observation with running statistics of all observations seen so far, and clips the result at 5:

    count₀ = 0.01, Σx₀ = 0, Σx²₀ = 0.01;   μ = Σx / count,  σ = sqrt(clamp(Σx²/count − μ², 0.01, 1e9)),
    ŝ = clip((s − μ) / σ, −5, 5).

:class:`TaskObservationNorm` is that as a TorchRL transform (the ``ObservationNorm``/``VecNorm`` family) on a
multi-task env: one set of statistics per task (``[K, obs]``, selected by each row's ``task_id``; tasks of a
suite differ in dynamics and sizes, so their observations differ in scale), updated batched over tasks with
``index_add_`` (no loop over tasks). The statistics are buffers: ``state_dict()`` is what checkpoints and
``model.pt`` hold. The public code updates them once per rollout with the rollout's observations; here they are
updated with every step's observations (the same data, a few steps earlier; TorchRL's ``VecNorm`` does the same).
Reset observations are normalised but not counted (the next step counts the states it leaves from).
Padded observation dims are always 0: their variance clamps at 0.01 and they stay 0.

:meth:`TaskObservationNorm.frozen` gives a transform for evaluation envs that shares the same statistics
(in-place updates are seen) and never updates them. :func:`normalized` puts either on a multi-task env.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Composite
from torchrl.envs import EnvBase, TransformedEnv
from torchrl.envs.transforms import ObservationTransform

COUNT_PRIOR, SQUARE_PRIOR, VAR_RANGE = 1e-2, 1e-2, (1e-2, 1e9)


class TaskObservationNorm(ObservationTransform):
    """``ŝ = clip((s − μ_k) / σ_k, −clip, clip)`` with running per-task statistics (see the module doc).

    Args:
        num_tasks, obs_dim: the statistics' shape ``[K, obs_dim]`` (task k's row normalises rows with
            ``task_id == k``).
        clip: the bound on normalised values (5 in the public code).
        in_keys: the observation keys to normalise; ``task_id_key`` selects the statistics.
        device: where the statistics live (the training device: the env's step output is already there, and the
            update is batched over rows with ``index_add_``, no host read).
    """

    def __init__(self, num_tasks: int, obs_dim: int, clip: float = 5.0, in_keys: tuple[str, ...] = ("observation",),
                 task_id_key: str = "task_id", device: torch.device | str = "cpu"):
        if clip <= 0:
            raise ValueError(f"obs_clip={clip} is out of range; valid: > 0")
        super().__init__(in_keys=list(in_keys), out_keys=list(in_keys))
        self.clip, self.task_id_key, self.frozen_stats = clip, task_id_key, False
        stats = {"dtype": torch.float64, "device": device}
        self.register_buffer("count", torch.full((num_tasks,), COUNT_PRIOR, **stats))
        self.register_buffer("sum", torch.zeros(num_tasks, obs_dim, **stats))
        self.register_buffer("sum_sq", torch.full((num_tasks, obs_dim), SQUARE_PRIOR, **stats))

    def loc_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, σ)``, each ``[K, obs_dim]`` float32."""
        mean = self.sum / self.count[:, None]
        var = (self.sum_sq / self.count[:, None] - mean.pow(2)).clamp(*VAR_RANGE)
        return mean.float(), var.sqrt().float()

    @torch.no_grad()
    def update(self, obs: torch.Tensor, task_id: torch.Tensor) -> None:
        """Add ``obs`` (``[*B, obs_dim]``) to the statistics of each row's task (in place)."""
        flat, ids = obs.reshape(-1, obs.shape[-1]).double(), task_id.reshape(-1)
        self.count.index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))
        self.sum.index_add_(0, ids, flat)
        self.sum_sq.index_add_(0, ids, flat.pow(2))

    def normalize(self, obs: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        mean, std = self.loc_scale()
        return ((obs - mean[task_id]) / std[task_id]).clamp(-self.clip, self.clip)

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        task_id = next_tensordict.get(self.task_id_key)
        if not self.frozen_stats:
            for key in self.in_keys:
                self.update(next_tensordict.get(key), task_id)
        for key in self.in_keys:
            next_tensordict.set(key, self.normalize(next_tensordict.get(key), task_id))
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        task_id = tensordict_reset.get(self.task_id_key)
        for key in self.in_keys:
            tensordict_reset.set(key, self.normalize(tensordict_reset.get(key), task_id))
        return tensordict_reset

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        for key in self.in_keys:
            spec = observation_spec[key]
            observation_spec[key] = Bounded(-self.clip, self.clip, spec.shape, dtype=spec.dtype, device=spec.device)
        return observation_spec

    def frozen(self) -> TaskObservationNorm:
        """A transform that reads these statistics (shared tensors) and never updates them: for evaluation."""
        num_tasks, obs_dim = self.sum.shape
        out = TaskObservationNorm(num_tasks, obs_dim, self.clip, tuple(self.in_keys), self.task_id_key,
                                  self.sum.device)
        out.count, out.sum, out.sum_sq = self.count, self.sum, self.sum_sq
        out.frozen_stats = True
        return out


class _NormalizedEnv(TransformedEnv):
    """A multi-task env seen through a :class:`TaskObservationNorm` whose resets, like
    :meth:`MultiTaskEnv.maybe_reset <tdmt.envs.MultiTaskEnv.maybe_reset>`'s, follow the base env's host copy of the
    last step's done flags: the base env resets its done rows, and only those rows' fresh observations are
    normalised here (TorchRL's ``maybe_reset`` would read the flags on the device: a host–device sync per env step
    on a GPU)."""

    def maybe_reset(self, tensordict: TensorDictBase) -> TensorDictBase:
        done = getattr(self.base_env, "last_done", None)  # MultiTaskEnv's gymnasium done flags (numpy), or None
        if done is None:
            return super().maybe_reset(tensordict)
        if not done.any():
            return tensordict
        rows = torch.from_numpy(done).view(self.batch_size).to(self.device, non_blocking=True)
        tensordict = self.base_env.maybe_reset(tensordict)  # raw observations in the done rows
        norm: TaskObservationNorm = self.transform
        task_id = tensordict.get(norm.task_id_key)
        for key in norm.in_keys:
            obs = tensordict.get(key)
            tensordict.set(key, torch.where(rows.unsqueeze(-1), norm.normalize(obs, task_id), obs))
        return tensordict


def normalized(env: EnvBase, norm: TaskObservationNorm) -> TransformedEnv:
    """``env`` seen through ``norm`` (training statistics, or :meth:`TaskObservationNorm.frozen` ones)."""
    return _NormalizedEnv(env, norm)
