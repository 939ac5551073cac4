import gymnasium as gym
import numpy as np
import pytest
import torch
from torchrl.envs.utils import check_env_specs

from tdmt.envs import PadSpaces, action_masks, make_env, make_task_env


def test_mujoco_mt6_padding_and_keys():
    env = make_env("mujoco-mt6", seed=0)
    check_env_specs(env)
    td = env.rand_step(env.reset())
    obs = td["next", "observation"]
    assert obs.shape == (6, 105) and obs.dtype == torch.float32
    for k, dim in enumerate(env.suite.obs_dims):
        assert torch.all(obs[k, dim:] == 0), f"task {k}: padded observation dims are not zero"
        assert torch.any(obs[k, :dim] != 0)
    assert td["task_id"].tolist() == list(range(6))
    assert torch.equal(td["task_onehot"], torch.eye(6))
    assert env.action_spec.shape == (6, 8)
    assert torch.all(env.action_spec.space.low == -1) and torch.all(env.action_spec.space.high == 1)


def test_env_executes_only_first_act_k_dims():
    """Changing the padded action dims of a task never changes what that task's env does."""
    env_a, env_b = make_env("mujoco-mt6", seed=3), make_env("mujoco-mt6", seed=3)
    td_a, td_b = env_a.reset(), env_b.reset()
    masks = action_masks(env_a.suite.act_dims)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        action = torch.rand(6, 8, generator=gen) * 2 - 1
        noise = torch.rand(6, 8, generator=gen) * 2 - 1
        td_a["action"] = action * masks
        td_b["action"] = action * masks + noise * (1 - masks)
        (out_a, td_a), (out_b, td_b) = env_a.step_and_maybe_reset(td_a), env_b.step_and_maybe_reset(td_b)
        torch.testing.assert_close(out_a["next", "observation"], out_b["next", "observation"])
        torch.testing.assert_close(out_a["next", "reward"], out_b["next", "reward"])


class _Recorder(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float64)
    action_space = gym.spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 10.0]), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        return np.ones(2), {}

    def step(self, action):
        self.last = action
        return np.ones(2), 0.0, False, False, {}


def test_pad_spaces_slices_and_rescales_to_native_bounds():
    env = PadSpaces(_Recorder(), obs_max=5, act_max=4)
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and obs.tolist() == [1, 1, 0, 0, 0]
    env.step(np.array([1.0, -1.0, 0.7, -0.3], np.float32))
    np.testing.assert_allclose(env.unwrapped.last, [2.0, 0.0])
    env.step(np.array([0.0, 0.0, 0.0, 0.0], np.float32))
    np.testing.assert_allclose(env.unwrapped.last, [0.0, 5.0])


def test_batch_k_by_e_and_seeded_rollouts_are_reproducible():
    env = make_env("pendulum-mt3", seed=7, num_envs_per_task=2)
    assert env.batch_size == (3, 2)
    check_env_specs(env)
    assert env.reset()["task_id"].tolist() == [[0, 0], [1, 1], [2, 2]]

    def rollout(seed):
        env = make_env("pendulum-mt3", seed=seed, num_envs_per_task=2)
        torch.manual_seed(0)
        return env.rollout(30)

    a, b, c = rollout(7), rollout(7), rollout(8)
    torch.testing.assert_close(a["next", "observation"], b["next", "observation"])
    assert not torch.allclose(a["observation"][..., 0, :], c["observation"][..., 0, :])


def test_partial_reset_resets_only_done_rows():
    env = make_env("pendulum-mt3", seed=0)
    td = env.reset()
    for _ in range(3):
        td = env.rand_step(td)["next"]
    before = td["observation"].clone()
    td.set("_reset", torch.tensor([[True], [False], [False]]))
    after = env.reset(td)["observation"]
    torch.testing.assert_close(after[1:], before[1:])
    assert not torch.allclose(after[0], before[0])


def test_time_limit_truncation_is_not_termination():
    env = make_env("pendulum-mt3", seed=0)
    r = env.rollout(200, break_when_any_done=False)
    assert r["next", "truncated"][:, -1].all() and not r["next", "terminated"].any()
    assert not r["next", "done"][:, :-1].any()


def test_tasks_subset_and_task_env():
    env = make_env("halfcheetah-mt8", tasks=["HalfCheetahSmallFoot", "HalfCheetahBigTorso"], task_onehot=False)
    assert env.batch_size == (2,) and "task_onehot" not in env.reset().keys()
    assert env.suite.task_names == ["HalfCheetahSmallFoot", "HalfCheetahBigTorso"]
    single = make_task_env("mujoco-mt6", "Hopper")
    assert single.batch_size == (1,)
    assert single.observation_spec["observation"].shape == (1, 11) and single.action_spec.shape == (1, 3)
    with pytest.raises(ValueError, match=r"unknown task 'Hoper'.*Hopper"):
        make_task_env("mujoco-mt6", "Hoper")


def test_wrong_action_width_is_a_clear_error():
    env = make_env("pendulum-mt3")
    td = env.reset()
    td["action"] = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"action has width 2, expected act_max=1"):
        env._step(td)


def test_metaworld_has_success_and_float_obs():
    env = make_env("metaworld-mt10", seed=0, tasks=["reach-v3", "push-v3"])
    check_env_specs(env)
    r = env.rollout(3)
    assert r["next", "success"].shape == (2, 3, 1) and r["next", "success"].dtype == torch.float32
    assert r["observation"].dtype == torch.float32 and r["observation"].shape[-1] == 39
