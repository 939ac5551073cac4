"""Zero padding and slice/mask for tasks of different sizes (KTM-DRL §3.3–3.4, DESIGN §2).

* ``pad(s)``: zeros appended to ``obs_max``; ``pad(a)``: zeros appended to ``act_max``.
* ``f^k(â) = â[:act_k]`` (slice): what the env and the teacher receive.
* ``g^k(â) = â ⊙ m_k``, ``m_k = [1]*act_k + [0]*(act_max-act_k)`` (mask): what the student critic receives.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch


def action_masks(act_dims: Sequence[int], act_max: int | None = None) -> torch.Tensor:
    """``m`` of shape ``[K, act_max]`` with ``m[k, d] = 1`` for the real dims of task k (``d < act_dims[k]``)."""
    act_max = max(act_dims) if act_max is None else act_max
    if max(act_dims) > act_max:
        raise ValueError(f"act_max={act_max} is smaller than the largest action dim {max(act_dims)}")
    return (torch.arange(act_max) < torch.as_tensor(act_dims)[:, None]).float()


def observation_masks(obs_dims: Sequence[int], obs_max: int | None = None) -> torch.Tensor:
    """``[K, obs_max]`` mask of each task's real observation dims."""
    return action_masks(obs_dims, obs_max)


class PadSpaces(gym.Wrapper):
    """Gymnasium-level padding, so that tasks of different sizes share one ``SyncVectorEnv``.

    Observations are cast to float32 and zero-padded to ``obs_max``; the action space is ``[-1, 1]^act_max``
    and the env executes ``f^k``: the first ``act_k`` dims, rescaled affinely to the task's native bounds.
    Written by hand because gymnasium's vector envs need identical sub-env spaces and TorchRL transforms
    would act after batching (one TensorDict per sub-env step is the slow path measured in DESIGN §3).
    """

    def __init__(self, env: gym.Env, obs_max: int, act_max: int):
        super().__init__(env)
        self.obs_dim = int(np.prod(env.observation_space.shape))
        self.act_dim = int(np.prod(env.action_space.shape))
        if self.obs_dim > obs_max or self.act_dim > act_max:
            raise ValueError(f"task sizes (obs {self.obs_dim}, act {self.act_dim}) exceed padding "
                             f"(obs_max {obs_max}, act_max {act_max})")
        self.obs_max, self.act_max = obs_max, act_max
        low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
        self._scale, self._shift = (high - low) / 2.0, (high + low) / 2.0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_max,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_max,), np.float32)

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        out = np.zeros(self.obs_max, np.float32)
        out[: self.obs_dim] = obs.reshape(-1)
        return out

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._pad(obs), info

    def step(self, action: np.ndarray):
        native = np.clip(np.asarray(action[: self.act_dim], np.float64), -1.0, 1.0) * self._scale + self._shift
        obs, reward, terminated, truncated, info = self.env.step(native.astype(self.env.action_space.dtype))
        return self._pad(obs), float(reward), terminated, truncated, info


class TorchActions(gym.ActionWrapper):
    """Takes the action as a torch tensor on any device and hands the env a NumPy array: an env step's one
    device→host transfer happens inside the env's ``step`` (where a host-sync count leaves it out)."""

    def action(self, action: torch.Tensor | np.ndarray) -> np.ndarray:
        return action.detach().cpu().numpy() if isinstance(action, torch.Tensor) else action
