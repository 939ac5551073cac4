"""SAC backbones: shapes, row independence, 'act as task j', fast path == general path, errors."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdmt.modules import BACKBONES, act_as, make_sac_backbone
from tdmt.modules.backbones import SoftModularNet, is_row_layout, rows_are_tasks

K, N, OBS, ACT = 4, 6, 7, 3
NETWORKS = ("mtsac", "mhsac", "sm", "paco")


def batch(seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return TensorDict({"observation": torch.randn(K, N, OBS, generator=g),
                       "task_id": torch.arange(K)[:, None].expand(K, N).clone(),
                       "action": torch.rand(K, N, ACT, generator=g) * 2 - 1}, [K, N])


def outputs(name: str, td: TensorDict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    bb = make_sac_backbone(name, num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(32, 32))
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        a = bb.actor(td.select("observation", "task_id"))
    q = bb.qvalue(td.select("observation", "action", "task_id"))
    return a["loc"], a["action"], q["state_action_value"]


@pytest.mark.parametrize("name", NETWORKS)
def test_shapes_and_bounds(name):
    loc, action, q = outputs(name, batch())
    assert loc.shape == (K, N, ACT) and action.shape == (K, N, ACT) and q.shape == (K, N, 1)
    assert action.abs().max() < 1
    assert torch.isfinite(q).all()


@pytest.mark.parametrize("name", NETWORKS)
def test_task_rows_do_not_depend_on_other_rows(name):
    td = batch()
    loc, _, q = outputs(name, td)
    other = td.clone()
    other["observation"][1:] = torch.randn(K - 1, N, OBS) * 5  # change every task but task 0
    other["action"][1:] = 0.9
    other["observation"][0, 1:] += 3.0  # and the other samples of task 0
    loc2, _, q2 = outputs(name, other)
    torch.testing.assert_close(loc2[0, 0], loc[0, 0])
    torch.testing.assert_close(q2[0, 0], q[0, 0])
    assert not torch.allclose(loc2[1], loc[1])


@pytest.mark.parametrize("name", NETWORKS)
def test_general_layout_equals_row_layout(name):
    td = batch()
    with rows_are_tasks():  # the caller's promise: the per-task fast path, without reading task_id
        assert is_row_layout(td["task_id"], K)
        loc, _, q = outputs(name, td)
    assert not is_row_layout(td["task_id"], K)  # without the promise: the general path, whatever the values
    torch.testing.assert_close(outputs(name, td)[0], loc)
    perm = torch.randperm(K * N, generator=torch.Generator().manual_seed(1))
    flat = td.reshape(-1)[perm]
    loc_flat, _, q_flat = outputs(name, flat)
    torch.testing.assert_close(loc_flat, loc.reshape(-1, ACT)[perm])
    torch.testing.assert_close(q_flat, q.reshape(-1, 1)[perm])


@pytest.mark.parametrize("name", NETWORKS)
def test_act_as_task_j_on_rows_of_task_i(name):
    td = batch()
    td["observation"][2] = td["observation"][0]  # task 2 sees task 0's states
    td["action"][2] = td["action"][0]
    loc, _, q = outputs(name, td)
    as_two = act_as(td, 2)
    assert td["task_id"][0, 0] == 0  # the original is untouched
    loc_j, _, q_j = outputs(name, as_two)
    torch.testing.assert_close(loc_j[0], loc[2])  # pi_2 on task 0's rows == pi_2 on the same states
    torch.testing.assert_close(q_j[0], q[2])
    assert not torch.allclose(loc_j[0], loc[0])  # and it is not pi_0
    per_row = act_as(td, torch.tensor([1, 1, 1, 1])[:, None])
    loc_r, _, _ = outputs(name, per_row)
    torch.testing.assert_close(loc_r[1], loc[1])


@pytest.mark.parametrize("name", NETWORKS)
def test_all_tasks_equals_acting_as_each_task(name):
    torch.manual_seed(0)
    bb = make_sac_backbone(name, num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(32, 32))
    net = bb.actor.module[0].module
    obs = torch.randn(5, 2, OBS)
    loc, scale = net.all_tasks(obs)
    assert loc.shape == scale.shape == (K, 5, 2, ACT)
    for j in range(K):
        loc_j, scale_j = net(obs, torch.full((5, 2), j))
        torch.testing.assert_close(loc[j], loc_j)
        torch.testing.assert_close(scale[j], scale_j)
    assert not torch.allclose(loc[0], loc[1])


def test_sm_routing_is_a_distribution_over_modules():
    torch.manual_seed(0)
    net = SoftModularNet(K, OBS, 2, (32,), num_layers=4, num_modules=4, module_size=16, routing_size=8)
    state = net.state_repr(torch.randn(K, N, OBS))
    probs = net.routing(state, torch.arange(K)[:, None].expand(K, N))
    assert [tuple(p.shape) for p in probs] == [(K, N, 4, 4)] * 3 + [(K, N, 4)]
    for p in probs:
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    assert not torch.allclose(probs[0][0, 0], probs[0][1, 0])  # the task changes the routing


def test_env_batch_and_errors():
    bb = make_sac_backbone("mhsac", num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(8,))
    td = TensorDict({"observation": torch.randn(K, OBS), "task_id": torch.arange(K)}, [K])  # env batch [K]
    assert bb.actor(td)["action"].shape == (K, ACT)
    assert set(BACKBONES) == {"mtsac", "mhsac", "pcgrad", "sm", "paco"}
    with pytest.raises(ValueError, match="backbone='moe' is not valid; valid: \\['mtsac', 'mhsac', 'pcgrad', 'sm'"):
        make_sac_backbone("moe", num_tasks=K, obs_dim=OBS, act_dim=ACT)
    with pytest.raises(ValueError, match="does not take options \\['module_size'\\]; valid: \\['param_sets'\\]"):
        make_sac_backbone("paco", num_tasks=K, obs_dim=OBS, act_dim=ACT, module_size=3)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("num_tasks", 0, "make_sac_backbone num_tasks=0 is out of range; valid: an int >= 1"),
    ("obs_dim", -3, "make_sac_backbone obs_dim=-3 is out of range; valid: an int >= 1"),
    ("act_dim", 2.5, "make_sac_backbone act_dim=2.5 is out of range; valid: an int >= 1"),
    ("hidden", (8, 0), "make_sac_backbone hidden=\\[8, 0\\] is not valid; valid: sizes >= 1"),
])
def test_bad_sizes_are_one_line_errors(key, value, message):
    sizes = {**dict(num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(8,)), key: value}
    with pytest.raises(ValueError, match=message):
        make_sac_backbone("mtsac", **sizes)
    with pytest.raises(ValueError, match="Soft Modularization num_modules=0 is out of range; valid: >= 1"):
        make_sac_backbone("sm", num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(8,), num_modules=0)
    with pytest.raises(ValueError, match="routing_input='state' is not valid; valid: \\['state_and_task', 'task'\\]"):
        make_sac_backbone("sm", num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(8,), routing_input="state")
    with pytest.raises(ValueError, match="MHSAC hidden=\\(\\) is not valid"):
        make_sac_backbone("mhsac", num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=())


def test_sm_routing_input_state_and_task_or_task_only():
    """The public CTPG code routes on F(s) ⊙ H(z) (``cond_obs=True``): the routing changes with the state;
    ``routing_input="task"`` routes on H(z) alone: one routing per task, whatever the state."""
    torch.manual_seed(0)
    obs = torch.randn(K, N, OBS)
    tid = torch.arange(K)[:, None].expand(K, N)
    for routing_input, varies_with_state in (("state_and_task", True), ("task", False)):
        net = SoftModularNet(K, OBS, 2, (32,), num_modules=4, module_size=16, routing_size=8,
                             routing_input=routing_input)
        probs = net.routing(net.state_repr(obs), tid)[0]  # [K, N, 4, 4]
        same = torch.allclose(probs[:, 0], probs[:, 1])
        assert same != varies_with_state, routing_input
        assert not torch.allclose(probs[0, 0], probs[1, 0])  # the task changes the routing in both
