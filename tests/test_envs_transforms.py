import pytest
import torch
from torchrl.envs import GymEnv, TransformedEnv
from torchrl.envs.transforms import Compose
from torchrl.envs.utils import check_env_specs

from tdmt.envs import PadAction, PadObservation, TaskIdTransform, action_masks


def _padded_pendulum(task_id=1, num_tasks=3):
    return TransformedEnv(GymEnv("Pendulum-v1"), Compose(TaskIdTransform(task_id, num_tasks), PadObservation(5),
                                                         PadAction(4)))


def test_transforms_specs_and_values():
    env = _padded_pendulum()
    check_env_specs(env)
    assert env.observation_spec["observation"].shape == (5,)
    assert env.action_spec.shape == (4,)
    low, high = env.action_spec.space.low, env.action_spec.space.high
    assert low.tolist() == [-2, -1, -1, -1] and high.tolist() == [2, 1, 1, 1]  # native bounds kept on real dims
    td = env.rand_step(env.reset())
    assert td["task_id"] == 1 and td["task_onehot"].tolist() == [0, 1, 0]
    assert torch.all(td["next", "observation"][3:] == 0) and torch.any(td["next", "observation"][:3] != 0)


def test_pad_action_hands_env_the_slice():
    """Padded dims are dropped: the same real dims with different padding give the same transition."""
    results = []
    for pad_value in (0.0, 0.9):
        env = _padded_pendulum()
        env.set_seed(0)
        td = env.reset()
        td["action"] = torch.tensor([0.5, pad_value, pad_value, pad_value])
        results.append(env.step(td)["next", "observation"])
    torch.testing.assert_close(results[0], results[1])


def test_pad_action_wrong_width():
    env = _padded_pendulum()
    td = env.reset()
    td["action"] = torch.zeros(3)
    with pytest.raises(ValueError, match="expected act_max=4"):
        env.step(td)


def test_task_id_transform_range_check():
    with pytest.raises(ValueError, match=r"task_id=3 out of range \[0, 3\)"):
        TaskIdTransform(3, 3)


def test_action_masks():
    assert action_masks([2, 1, 3]).tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="act_max=2"):
        action_masks([3], 2)
