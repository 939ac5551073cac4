"""Per-task observation normalisation (Arora et al.'s public code, ``running_stat.ObsNorm``) as a TorchRL transform."""

import torch
from torchrl.envs import TransformedEnv

from tdmt.envs import TaskObservationNorm, make_env

K, OBS = 3, 11


def test_statistics_follow_the_public_codes_formula_per_task_and_clip_at_5():
    norm = TaskObservationNorm(K, 2)
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 10.0, 100.0])  # three tasks with observations of very different scales
    obs = torch.randn(K, 50, 2, generator=g) * scales[:, None, None] + 3.0
    task_id = torch.arange(K)[:, None].expand(K, 50)
    norm.update(obs, task_id)
    mean, std = norm.loc_scale()
    count = 50 + 1e-2  # the public code's priors: count 0.01, Σx² 0.01
    expected_mean = obs.double().sum(1) / count
    expected_var = ((obs.double().pow(2).sum(1) + 1e-2) / count - expected_mean.pow(2)).clamp(1e-2, 1e9)
    torch.testing.assert_close(mean, expected_mean.float())
    torch.testing.assert_close(std, expected_var.sqrt().float())
    assert std[2, 0] > 50 * std[0, 0]  # one set of statistics per task
    out = norm.normalize(obs, task_id)
    torch.testing.assert_close(out, ((obs - mean[:, None]) / std[:, None]).clamp(-5, 5))
    assert out.abs().max() <= 5.0
    far = norm.normalize(torch.full((K, 1, 2), 1e6), torch.arange(K)[:, None])
    assert torch.equal(far, torch.full((K, 1, 2), 5.0))


def test_transform_updates_in_training_is_frozen_in_evaluation_and_round_trips_a_state_dict():
    train = TransformedEnv(make_env("mujoco-mt6", tasks=["InvertedPendulum", "Hopper", "InvertedDoublePendulum"],
                                    num_envs_per_task=2, task_onehot=False), TaskObservationNorm(K, OBS))
    norm = train.transform
    td = train.rollout(10, break_when_any_done=False)
    torch.testing.assert_close(norm.count, torch.full((K,), 20.01, dtype=torch.float64))  # steps only, per task
    # padded observation dims (InvertedPendulum: 4 real of 11) stay exactly 0
    assert torch.equal(td["next", "observation"][0, ..., 4:], torch.zeros(2, 10, OBS - 4))
    assert td["next", "observation"].abs().max() <= 5.0
    assert train.observation_spec["observation"].space.high.max() == 5.0
    evaluation = TransformedEnv(make_env("mujoco-mt6", tasks=["InvertedPendulum", "Hopper", "InvertedDoublePendulum"],
                                         num_envs_per_task=2, task_onehot=False, seed=1), norm.frozen())
    before = norm.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    evaluation.rollout(10, break_when_any_done=False)
    assert all(torch.equal(before[k], norm.state_dict()[k]) for k in before)  # evaluation never updates them
    train.rollout(3, break_when_any_done=False)
    assert torch.equal(evaluation.transform.count, norm.count)  # ... but sees the training env's updates
    restored = TaskObservationNorm(K, OBS)
    restored.load_state_dict(norm.state_dict())
    x, ids = torch.randn(K, 4, OBS), torch.arange(K)[:, None].expand(K, 4)
    torch.testing.assert_close(restored.normalize(x, ids), norm.normalize(x, ids))
    train.close()
    evaluation.close()
