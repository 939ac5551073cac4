"""Stacked frozen teachers: native sizes ↔ padded stacks are exact, save/load, flat vs stacked paths."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from tdmt.envs import action_masks
from tdmt.modules.td3 import make_teacher_actor, make_teacher_critic, stacked_layers
from tdmt.modules.teachers import StackedTeachers, load_teacher, native_teacher, save_teacher

OBS_DIMS, ACT_DIMS, OBS_MAX, ACT_MAX = [5, 3, 4], [2, 1, 3], 5, 3


def native_forward(layers, x: torch.Tensor, tanh: bool = False) -> torch.Tensor:
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = torch.relu(x)
    return torch.tanh(x) if tanh else x


def random_native(obs: int, act: int, hidden: int = 6) -> dict:
    def mlp(i, o):
        return [(torch.randn(i, hidden), torch.randn(hidden)), (torch.randn(hidden, hidden), torch.randn(hidden)),
                (torch.randn(hidden, o), torch.randn(o))]

    return {"obs_dim": obs, "act_dim": act, "actor": mlp(obs, act), "critic1": mlp(obs + act, 1),
            "critic2": mlp(obs + act, 1)}


def padded_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    obs = torch.randn(len(OBS_DIMS), n, OBS_MAX) * action_masks(OBS_DIMS, OBS_MAX)[:, None]
    act = torch.rand(len(ACT_DIMS), n, ACT_MAX) * 2 - 1
    return obs, act


def test_padded_stack_equals_native_teachers():
    torch.manual_seed(0)
    natives = [random_native(o, a) for o, a in zip(OBS_DIMS, ACT_DIMS)]
    teachers = StackedTeachers(natives, OBS_MAX, ACT_MAX)
    obs, act = padded_inputs(7)
    masked = act * action_masks(ACT_DIMS, ACT_MAX)[:, None]
    q = teachers.q(obs, masked)
    pi = teachers.policy(obs)
    assert q.shape == (2, 3, 7) and pi.shape == (3, 7, ACT_MAX)
    for k, t in enumerate(natives):
        s, a = obs[k, :, : t["obs_dim"]], act[k, :, : t["act_dim"]]  # f^k: the native slice
        torch.testing.assert_close(q[0, k], native_forward(t["critic1"], torch.cat([s, a], -1)).squeeze(-1))
        torch.testing.assert_close(q[1, k], native_forward(t["critic2"], torch.cat([s, a], -1)).squeeze(-1))
        torch.testing.assert_close(teachers.q1(obs, masked)[k], q[0, k])
        torch.testing.assert_close(pi[k, :, : t["act_dim"]], native_forward(t["actor"], s, tanh=True))
        assert torch.all(pi[k, :, t["act_dim"]:] == 0)


def test_flat_path_matches_stacked_path():
    torch.manual_seed(1)
    teachers = StackedTeachers([random_native(o, a) for o, a in zip(OBS_DIMS, ACT_DIMS)], OBS_MAX, ACT_MAX)
    obs, act = padded_inputs(4)
    task_id = torch.arange(3)[:, None].expand(3, 4)
    perm = torch.randperm(12)
    flat = teachers.q(obs.reshape(12, -1)[perm], act.reshape(12, -1)[perm], task_id.reshape(-1)[perm])
    torch.testing.assert_close(flat, teachers.q(obs, act).reshape(2, 12)[:, perm])
    torch.testing.assert_close(teachers.policy(obs.reshape(12, -1)[perm], task_id.reshape(-1)[perm]),
                               teachers.policy(obs).reshape(12, -1)[perm])
    with pytest.raises(ValueError, match="stacked input of shape \\(2, 4, 8\\) is not valid"):
        teachers.q(obs[:2], act[:2])


def test_trained_stack_exports_to_native_and_reloads_exactly(tmp_path):
    torch.manual_seed(2)
    masks = action_masks(ACT_DIMS, ACT_MAX)
    actor = make_teacher_actor(3, OBS_MAX, ACT_MAX, (8, 8))
    critics = [make_teacher_critic(3, OBS_MAX, ACT_MAX, masks, (8, 8)) for _ in range(2)]
    layers = [stacked_layers(m) for m in (actor, *critics)]
    names = ["a", "b", "c"]
    for k in range(3):
        per_task = [[(w[k], b[k, 0]) for w, b in net] for net in layers]
        native = native_teacher(*per_task, OBS_DIMS[k], ACT_DIMS[k], OBS_MAX, ACT_MAX)
        assert native["actor"][0][0].shape == (OBS_DIMS[k], 8)
        assert native["critic1"][0][0].shape == (OBS_DIMS[k] + ACT_DIMS[k], 8)
        assert native["actor"][-1][0].shape == (8, ACT_DIMS[k])
        save_teacher(native, tmp_path / names[k])
    assert load_teacher(tmp_path / "a")["obs_dim"] == 5
    teachers = StackedTeachers.load(tmp_path, names, OBS_MAX, ACT_MAX)
    obs, act = padded_inputs(6)
    td = TensorDict(observation=obs, action=act, batch_size=[3, 6])
    with torch.no_grad():
        for j, critic in enumerate(critics):  # the trainable critic masks internally: same values
            torch.testing.assert_close(teachers.q(obs, act * masks[:, None])[j],
                                       critic(td.clone())["state_action_value"].squeeze(-1))
        torch.testing.assert_close(teachers.policy(obs), actor(td.clone())["action"] * masks[:, None])
    assert list(teachers.parameters()) == []
    with pytest.raises(FileNotFoundError, match="no teacher at"):
        load_teacher(tmp_path / "missing")


def test_teachers_with_different_hidden_sizes_cannot_stack():
    with pytest.raises(ValueError, match="share hidden sizes"):
        StackedTeachers([random_native(3, 1, hidden=6), random_native(3, 1, hidden=7)], 3, 1)
