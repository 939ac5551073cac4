"""Multi-head A2C on padded suites (issue 11, Arora et al.): the policy's log-probability and entropy count only each
task's real action dims, on ``mujoco-mt6``'s sizes (actions 8 / 3 / 6 / 6 / 1 / 1 padded to 8)."""

import math

import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Normal
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import A2CLoss

from tdmt.envs import get_suite
from tdmt.modules.multihead import actor_log_std, make_gaussian_actor, make_value_critic

SUITE = get_suite("mujoco-mt6")
K, N, OBS, ACT, DIMS = SUITE.num_tasks, 5, SUITE.obs_max, SUITE.act_max, SUITE.act_dims


def _data(seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    task_id = torch.arange(K).view(K, 1).expand(K, N).contiguous()
    return TensorDict(observation=torch.randn(K, N, OBS, generator=g), task_id=task_id, batch_size=[K, N])


def _actor(distribution: str):
    torch.manual_seed(0)
    actor = make_gaussian_actor(K, OBS, ACT, distribution=distribution, act_dims=DIMS)
    log_std = actor_log_std(actor)
    if log_std is not None:  # different σ per task and dim, so that a wrong dim count changes the numbers
        with torch.no_grad():
            log_std.copy_(torch.linspace(-1.0, 0.5, K * ACT).view(K, ACT))
    return actor


@pytest.mark.parametrize("distribution", ["gaussian", "tanh_normal"])
def test_log_prob_counts_only_each_tasks_real_action_dims(distribution):
    actor = _actor(distribution)
    with set_exploration_type(ExplorationType.RANDOM):
        td = actor(_data())
    dist = actor.get_dist(td)
    log_prob = dist.log_prob(td["action"])
    for k, dim in enumerate(DIMS):
        loc, scale, action = td["loc"][k, :, :dim], td["scale"][k, :, :dim], td["action"][k, :, :dim]
        if distribution == "gaussian":
            expected = Normal(loc, scale).log_prob(action).sum(-1)
        else:  # change of variables through tanh, on the real dims only
            u = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6))
            expected = (Normal(loc, scale).log_prob(u) - torch.log1p(-action.pow(2))).sum(-1)
        torch.testing.assert_close(log_prob[k], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(td["action_log_prob"], log_prob)
    # the padded dims' values do not matter: shift them, the log-probability is unchanged
    shifted = td["action"] + 0.5 * (1 - td["action_dim_mask"])
    torch.testing.assert_close(dist.log_prob(shifted.clamp(-0.99, 0.99) if distribution == "tanh_normal" else shifted),
                               dist.log_prob(td["action"].clamp(-0.99, 0.99) if distribution == "tanh_normal"
                                             else td["action"]))


def test_gaussian_entropy_is_exact_on_the_real_dims_and_drives_only_their_log_std():
    actor = _actor("gaussian")
    td = actor(_data())
    entropy = actor.get_dist(td).entropy()
    log_std = actor_log_std(actor)
    expected = torch.stack([(0.5 + 0.5 * math.log(2 * math.pi) + log_std[k, :dim]).sum() for k, dim in
                            enumerate(DIMS)])
    torch.testing.assert_close(entropy, expected[:, None].expand(K, N))
    # Ant (8 dims) vs InvertedPendulum (1 dim): an entropy over all 8 padded dims would be far larger
    assert entropy[4, 0].item() == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi) + log_std[4, 0].item(), abs=1e-5)
    entropy.sum().backward()
    mask = torch.tensor([[float(d < dim) for d in range(ACT)] for dim in DIMS])
    torch.testing.assert_close(log_std.grad, mask * N)  # ∂H/∂log σ_d = 1 on real dims, 0 on padded ones


def test_a2c_loss_on_padded_tasks_leaves_padded_log_std_untouched():
    actor = _actor("gaussian")
    critic = make_value_critic(K, OBS, shared_layers=1)
    with set_exploration_type(ExplorationType.RANDOM):
        td = actor(_data())
    td.set(("next", "reward"), torch.randn(K, N, 1)).set(("next", "observation"), torch.randn(K, N, OBS))
    td.set(("next", "task_id"), td["task_id"])
    for key in ("done", "terminated"):
        td.set(("next", key), torch.zeros(K, N, 1, dtype=torch.bool))
    loss = A2CLoss(actor, critic, entropy_coeff=0.01)
    out = loss(td.detach())
    (out["loss_objective"] + out["loss_entropy"]).backward()
    grad = loss.actor_network_params["module", "0", "module", "1", "module", "log_std"].grad
    mask = torch.tensor([[float(d < dim) for d in range(ACT)] for dim in DIMS])
    assert (grad[mask == 0] == 0).all() and (grad[mask == 1] != 0).all()
