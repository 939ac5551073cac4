import gymnasium as gym
import numpy as np
import pytest

import tdmt  # noqa: F401  (registers the gymnasium ids)
from tdmt.envs import get_suite, list_suites

EXPECTED = {
    # suite: (K, obs_max, act_max)
    "halfcheetah-mt5": (5, 17, 6),
    "halfcheetah-mt8": (8, 17, 6),
    "halfcheetah-arora6": (6, 17, 6),
    "mujoco-mt6": (6, 105, 8),
    "metaworld-mt10": (10, 39, 4),
    "metaworld-mt50": (50, 39, 4),
    "pendulum-mt3": (3, 3, 1),
    "control-mt2": (2, 10, 2),
}


def test_list_suites_is_the_documented_set():
    assert list_suites() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_padded_sizes_per_suite(name):
    suite = get_suite(name)
    assert (suite.num_tasks, suite.obs_max, suite.act_max) == EXPECTED[name]
    assert len(suite.task_names) == len(set(suite.task_names)) == suite.num_tasks


def test_mujoco_mt6_native_sizes_match_gymnasium():
    suite = get_suite("mujoco-mt6")
    assert suite.obs_dims == [105, 11, 17, 17, 4, 9]
    assert suite.act_dims == [8, 3, 6, 6, 1, 1]
    for task in suite.tasks:
        env = task.make()
        assert env.observation_space.shape == (task.obs_dim,)
        assert env.action_space.shape == (task.act_dim,)
        assert env.spec.max_episode_steps == task.max_episode_steps


def test_suite_task_names():
    assert get_suite("halfcheetah-mt5").task_names == [
        "HalfCheetahGravityHalf", "HalfCheetahGravityThreeQuarters", "HalfCheetahGravityNormal",
        "HalfCheetahGravityOneAndQuarter", "HalfCheetahGravityOneAndHalf"]
    assert get_suite("halfcheetah-arora6").task_names == [
        "HalfCheetahSmallFoot", "HalfCheetahBigFoot", "HalfCheetahSmallLeg", "HalfCheetahSmallThigh",
        "HalfCheetahSmallTorso", "HalfCheetahBigTorso"]
    assert get_suite("metaworld-mt10").task_names[:3] == ["reach-v3", "push-v3", "pick-place-v3"]


def test_unknown_suite_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown suite 'nope'.*halfcheetah-mt8"):
        get_suite("nope")


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown task 'Ant'.*HalfCheetahBigTorso"):
        get_suite("halfcheetah-mt8").subset(["Ant"])


def test_gymnasium_make_registered_variant():
    env = gym.make("tdmt/HalfCheetahBigTorso-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (17,)
    assert env.spec.max_episode_steps == 1000
    env.step(np.zeros(6, np.float32))
