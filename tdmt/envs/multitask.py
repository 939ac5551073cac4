"""The multi-task TorchRL env: one gymnasium ``SyncVectorEnv`` of K×E padded task envs in one TorchRL env.

Written as a small ``EnvBase`` rather than ``GymWrapper`` + transforms because the per-step TensorDict work is
what limits throughput on CPU (DESIGN §3: ``GymWrapper(SyncVectorEnv)`` ran at 0.35–0.4× raw gymnasium, below
the 0.5× goal); here one step builds one TensorDict for the whole batch, with ``task_id``/``task_onehot`` as
constant tensors instead of per-step transforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from tdmt.envs.padding import PadSpaces, action_masks
from tdmt.envs.suites import Suite, TaskSpec, get_suite


def _make_padded(task: TaskSpec, obs_max: int, act_max: int, seed: int) -> gym.Env:
    return PadSpaces(task.make(seed=seed), obs_max, act_max)


class MultiTaskEnv(EnvBase):
    """Batch size ``[K]`` (or ``[K, E]``): row k steps task k of ``suite``.

    Keys: ``observation`` (float32, zero-padded to ``obs_max``), ``task_id`` (int64), ``task_onehot``
    (float32 ``[K]``, optional), ``action`` (``Bounded`` [-1, 1], padded to ``act_max``; the env executes only
    the first ``act_k`` dims, rescaled to the task's native bounds), ``reward``, ``done``/``terminated``/
    ``truncated``, and ``success`` for suites that define it (Meta-World).
    """

    def __init__(self, suite: Suite, *, seed: int = 0, num_envs_per_task: int = 1, task_onehot: bool = True,
                 device: str | torch.device = "cpu"):
        if num_envs_per_task < 1:
            raise ValueError(f"num_envs_per_task must be >= 1, got {num_envs_per_task}")
        K, E = suite.num_tasks, num_envs_per_task
        batch = torch.Size([K] if E == 1 else [K, E])
        super().__init__(device=device, batch_size=batch)
        self.suite, self.num_envs_per_task, self.with_onehot = suite, E, task_onehot
        self._seed = seed
        self._seed_pending = True
        self._last_done: np.ndarray | None = None  # the last step's done flags, on the host (see maybe_reset)
        factories = [partial(_make_padded, t, suite.obs_max, suite.act_max, seed + k * E + e)
                     for k, t in enumerate(suite.tasks) for e in range(E)]
        self._vec = gym.vector.SyncVectorEnv(factories, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
        ids = torch.arange(K, device=self.device).view(K, *([1] * (len(batch) - 1))).expand(batch)
        self._task_id = ids.contiguous()
        self._task_onehot = torch.nn.functional.one_hot(self._task_id, K).float()
        self.action_masks = action_masks(suite.act_dims, suite.act_max).to(self.device)
        self._make_specs()

    def _make_specs(self) -> None:
        K, batch, dev = self.suite.num_tasks, self.batch_size, self.device
        obs = Composite(
            observation=Unbounded((*batch, self.suite.obs_max), dtype=torch.float32, device=dev),
            task_id=Categorical(K, batch, dtype=torch.int64, device=dev),
            shape=batch, device=dev,
        )
        if self.with_onehot:
            obs["task_onehot"] = Bounded(0.0, 1.0, (*batch, K), dtype=torch.float32, device=dev)
        if self.suite.success_metric:
            obs["success"] = Unbounded((*batch, 1), dtype=torch.float32, device=dev)
        self.observation_spec = obs
        self.action_spec = Bounded(-1.0, 1.0, (*batch, self.suite.act_max), dtype=torch.float32, device=dev)
        self.reward_spec = Unbounded((*batch, 1), dtype=torch.float32, device=dev)
        self.done_spec = Composite(
            done=Categorical(2, (*batch, 1), dtype=torch.bool, device=dev),
            terminated=Categorical(2, (*batch, 1), dtype=torch.bool, device=dev),
            truncated=Categorical(2, (*batch, 1), dtype=torch.bool, device=dev),
            shape=batch, device=dev,
        )

    def _output(self, host: dict[str, torch.Tensor]) -> TensorDict:
        """The host tensors of one reset/step moved to the env's device in one call (the step's one crossing to a
        GPU), with the constant ``task_id`` (and ``task_onehot``) already there."""
        out = TensorDict(host, batch_size=self.batch_size, device="cpu").to(self.device, non_blocking=True)
        out.set("task_id", self._task_id.clone())
        if self.with_onehot:
            out.set("task_onehot", self._task_onehot.clone())
        return out

    def _host_observation(self, obs: np.ndarray, info: dict) -> dict[str, torch.Tensor]:
        out = {"observation": torch.from_numpy(obs).view(*self.batch_size, -1)}
        if self.suite.success_metric:
            success = np.asarray(info.get("success", np.zeros(self._vec.num_envs)), dtype=np.float32)
            out["success"] = torch.from_numpy(success).view(*self.batch_size, 1)
        return out

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict.get("_reset").reshape(-1).cpu().numpy().astype(bool)
        return self._reset_rows(mask)

    def _reset_rows(self, mask: np.ndarray | None) -> TensorDict:
        """Reset the sub-envs of ``mask`` (all of them when ``None`` or none is set); every row's observation comes
        back (gymnasium keeps the others' current ones)."""
        seed = self._seed if self._seed_pending else None
        self._seed_pending = False
        self._last_done = None
        options = {"reset_mask": mask} if mask is not None and mask.any() and not mask.all() else None
        obs, info = self._vec.reset(seed=seed, options=options)
        falses = torch.zeros((*self.batch_size, 1), dtype=torch.bool, device="cpu")
        return self._output({**self._host_observation(obs, info), "done": falses, "terminated": falses.clone(),
                             "truncated": falses.clone()})

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action")
        if action.shape[-1] != self.suite.act_max:
            raise ValueError(f"action has width {action.shape[-1]}, expected act_max={self.suite.act_max} "
                             f"for suite {self.suite.name!r}")
        obs, reward, terminated, truncated, info = self._vec.step(action.reshape(-1, self.suite.act_max).cpu().numpy())
        self._last_done = terminated | truncated
        shape = (*self.batch_size, 1)
        term, trunc = torch.from_numpy(terminated).view(shape), torch.from_numpy(truncated).view(shape)
        return self._output({**self._host_observation(obs, info),
                             "reward": torch.from_numpy(reward.astype(np.float32)).view(shape),
                             "done": term | trunc, "terminated": term, "truncated": trunc})

    @property
    def last_done(self) -> np.ndarray | None:
        """The last step's done flags as the host's numpy array (``None`` right after a reset): what a wrapper reads
        to find the rows to reset without reading the device."""
        return self._last_done

    def maybe_reset(self, tensordict: TensorDictBase) -> TensorDictBase:
        """TorchRL's ``maybe_reset`` (reset the rows that are done), with the done flags read from the host's copy
        of the last step's (the gymnasium arrays) rather than from the device: on a GPU an env step then waits for
        nothing but its action, episode ends included. ``tensordict`` is the last step's next state (as
        ``step_and_maybe_reset`` and ``rollout`` pass it)."""
        done = self._last_done
        if done is None:
            return super().maybe_reset(tensordict)
        if not done.any():
            return tensordict
        fresh = self._reset_rows(done)
        reset = torch.from_numpy(done).view(self.batch_size).to(self.device, non_blocking=True)
        for key, value in fresh.items(True, True):
            rows = reset.view(*self.batch_size, *([1] * (value.dim() - len(self.batch_size))))
            tensordict.set(key, torch.where(rows, value, tensordict.get(key)))
        return tensordict

    def _set_seed(self, seed: int | None) -> None:
        self._seed = 0 if seed is None else int(seed)
        self._seed_pending = True
        self._vec.action_space.seed(self._seed)

    def close(self, *, raise_if_closed: bool = True) -> None:
        self._vec.close()
        super().close(raise_if_closed=raise_if_closed)


def make_env(suite: str, *, seed: int = 0, num_envs_per_task: int = 1, task_onehot: bool = True,
             device: str | torch.device = "cpu", tasks: Sequence[str] | None = None) -> MultiTaskEnv:
    """The multi-task TorchRL env of ``suite`` (batch size ``[K]``, or ``[K, E]`` with E envs per task).

    ``tasks=`` selects a subset by name; task ids then follow the order given.
    """
    if isinstance(num_envs_per_task, bool) or not isinstance(num_envs_per_task, int) or num_envs_per_task < 1:
        raise ValueError(f"num_envs_per_task={num_envs_per_task!r} is not valid; valid: an integer >= 1")
    return MultiTaskEnv(get_suite(suite).subset(tasks), seed=seed, num_envs_per_task=num_envs_per_task,
                        task_onehot=task_onehot, device=device)


def make_task_env(suite: str, task: str, *, seed: int = 0, device: str | torch.device = "cpu") -> MultiTaskEnv:
    """Single-task TorchRL env with the task's native sizes (for teachers): batch size ``[1]``, actions in [-1, 1].

    It is the multi-task env restricted to one task, so padding is the identity and Meta-World's ``success``
    is read the same way.
    """
    return MultiTaskEnv(get_suite(suite).subset([task]), seed=seed, task_onehot=False, device=device)
