"""MultiTaskSACLoss: rescaling weights, mask-out, masked log-prob and target entropy, TD target, TorchRL plumbing."""

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.modules import TanhNormal
from torchrl.objectives import SoftUpdate, ValueEstimators

from tdmt.envs import action_masks
from tdmt.modules import make_sac_backbone
from tdmt.objectives import MultiTaskSACLoss
from tdmt.objectives.multitask_sac import extreme_task_mask, loss_rescaling_weights, masked_tanh_normal_log_prob

K, N, OBS, ACT_DIMS, ACT = 3, 8, 5, (2, 4, 3), 4


def make_loss(gamma: float = 0.99, **kwargs) -> MultiTaskSACLoss:
    torch.manual_seed(0)
    bb = make_sac_backbone("mtsac", num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(16, 16))
    loss = MultiTaskSACLoss(bb.actor, bb.qvalue, action_mask=action_masks(ACT_DIMS, ACT), **kwargs)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
    return loss


def make_batch(terminated: bool = False, reward: torch.Tensor | None = None) -> TensorDict:
    g = torch.Generator().manual_seed(1)
    tid = torch.arange(K)[:, None].expand(K, N)
    mask = action_masks(ACT_DIMS, ACT)[tid]
    reward = torch.randn(K, N, 1, generator=g) if reward is None else reward
    flags = torch.full((K, N, 1), terminated)
    return TensorDict({
        "observation": torch.randn(K, N, OBS, generator=g), "task_id": tid,
        "action": (torch.rand(K, N, ACT, generator=g) * 2 - 1) * mask,
        "next": {"observation": torch.randn(K, N, OBS, generator=g), "task_id": tid, "reward": reward,
                 "done": flags.clone(), "terminated": flags.clone()}}, [K, N])


def test_rescaling_weights_hand_computed_and_sum_to_k():
    # softmax(-log [1, 2, 4]) = (1, 1/2, 1/4) / 1.75  ->  w = 3 * (4, 2, 1) / 7
    w = loss_rescaling_weights(torch.log(torch.tensor([1.0, 2.0, 4.0])))
    torch.testing.assert_close(w, torch.tensor([12 / 7, 6 / 7, 3 / 7]))
    assert w.sum().item() == pytest.approx(3.0)
    loss = make_loss()
    with torch.no_grad():
        loss.log_alpha.copy_(torch.log(torch.tensor([1.0, 2.0, 4.0])))
    out = loss(make_batch())
    torch.testing.assert_close(out["task_weight"], torch.tensor([12 / 7, 6 / 7, 3 / 7]))
    w10 = loss_rescaling_weights(torch.randn(10))
    assert w10.sum().item() == pytest.approx(10.0, rel=1e-6)


def test_extreme_task_mask_drops_exactly_extreme_tasks():
    losses = torch.tensor([10.0, 5000.0, -4000.0, 2999.0])
    assert extreme_task_mask(losses, 100_000, 3000.0, 100_000).tolist() == [True, False, False, True]
    assert extreme_task_mask(losses, 99_999, 3000.0, 100_000).tolist() == [True] * 4
    two = torch.tensor([[1.0, 1.0, 4000.0], [1.0, 3500.0, 1.0]])  # critic and actor: either extreme drops the task
    assert extreme_task_mask(two, 10, 3000.0, 0).tolist() == [True, False, False]


def test_loss_mask_out_zeroes_only_the_extreme_task():
    reward = torch.zeros(K, N, 1)
    reward[1] = 1e4  # task 1's critic loss is ~1e8
    batch = make_batch(reward=reward)
    ref = make_loss(mask_out_threshold=math.inf, loss_rescaling=False)
    masked = make_loss(mask_out_threshold=3000.0, mask_out_start=100, loss_rescaling=False)
    masked.set_env_steps(100)
    torch.manual_seed(5)
    out_ref = ref(batch.clone())
    torch.manual_seed(5)
    out = masked(batch.clone())
    assert out["task_kept"].tolist() == [1.0, 0.0, 1.0]
    assert out_ref["loss_qvalue"][1] > 1e6
    assert out["loss_qvalue"][1] == 0 and out["loss_actor"][1] == 0
    for key in ("loss_qvalue", "loss_actor"):
        torch.testing.assert_close(out[key][[0, 2]], out_ref[key][[0, 2]])
    masked.set_env_steps(99)  # before the start step nothing is dropped
    torch.manual_seed(5)
    assert masked(batch.clone())["task_kept"].tolist() == [1.0, 1.0, 1.0]


def test_log_prob_ignores_padded_dims_and_target_entropy():
    loss = make_loss()
    assert loss.target_entropy.tolist() == [-2.0, -4.0, -3.0]
    batch = make_batch()
    action = batch["action"].clone()
    lp = loss.log_prob(batch, action)
    changed = action.clone()
    changed[0, :, 2:] = 0.7  # task 0 has 2 real dims: dims 2, 3 are padding
    changed[2, :, 3] = -0.3
    torch.testing.assert_close(loss.log_prob(batch, changed), lp)
    changed[0, :, 1] = 0.5  # a real dim does count
    assert not torch.allclose(loss.log_prob(batch, changed)[0], lp[0])
    # the padded dims of the distribution do not count either, and the real ones equal the 1-d formula
    loc, scale, u = torch.tensor([0.3, -2.0]), torch.tensor([0.5, 3.0]), torch.tensor([0.2, 1.5])
    mask = torch.tensor([1.0, 0.0])
    dist_a, dist_b = TanhNormal(loc, scale), TanhNormal(torch.tensor([0.3, 5.0]), torch.tensor([0.5, 0.1]))
    a = torch.tanh(u)
    expected = torch.distributions.Normal(0.3, 0.5).log_prob(u[0]) - torch.log(1 - torch.tanh(u[0]) ** 2)
    torch.testing.assert_close(masked_tanh_normal_log_prob(dist_a, u, a, mask), expected)
    torch.testing.assert_close(masked_tanh_normal_log_prob(dist_b, u, a, mask), expected)


def test_sampled_actions_are_masked_and_policy_j_on_rows_of_task_i():
    loss = make_loss()
    batch = make_batch()
    action, lp = loss.sample_log_prob(batch, policy_task_id=1)
    assert action.shape == (K, N, ACT) and lp.shape == (K, N)
    assert (action[0, :, 2:] == 0).all() and (action[2, :, 3] == 0).all()  # masked by the row's own task
    # log pi_1 on task-1 rows equals the default (own policy) log-prob there, and differs on other rows
    torch.testing.assert_close(loss.log_prob(batch, action, policy_task_id=1)[1],
                               loss.log_prob(batch, action)[1])
    assert not torch.allclose(loss.log_prob(batch, action, policy_task_id=1)[0], loss.log_prob(batch, action)[0])


@pytest.mark.parametrize("backbone", ["mtsac", "mhsac", "sm", "paco"])
def test_candidate_log_probs_equal_log_prob_of_each_policy(backbone):
    torch.manual_seed(0)
    bb = make_sac_backbone(backbone, num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(16, 16))
    loss = MultiTaskSACLoss(bb.actor, bb.qvalue, action_mask=action_masks(ACT_DIMS, ACT))
    rows = make_batch().reshape(-1)[torch.randperm(K * N, generator=torch.Generator().manual_seed(2))]
    action = rows["action"].clamp(-0.95, 0.95)
    table, own_sample = loss.candidate_log_probs(rows, action)
    assert table.shape == (K, K * N) and own_sample.shape == (K * N,)
    for j in range(K):
        torch.testing.assert_close(table[j], loss.log_prob(rows, action, policy_task_id=j))
    assert not torch.allclose(table[0], table[1])
    # the own-policy sample is drawn like sample_log_prob's: same seed, same draw
    torch.manual_seed(5)
    _, own_sample = loss.candidate_log_probs(rows, action)
    torch.manual_seed(5)
    torch.testing.assert_close(own_sample, loss.sample_log_prob(rows)[1])


def test_terminal_target_is_the_reward_and_per_task_reduction():
    batch = make_batch(terminated=True)
    loss = make_loss(loss_rescaling=False)
    out = loss(batch.clone())
    q = loss.q_values(batch)  # [2, K, N]
    reward = batch["next", "reward"].squeeze(-1)
    expected = ((q - reward) ** 2).sum(0).mean(-1)
    torch.testing.assert_close(out["loss_qvalue"], expected)
    # the same transitions in a flat, shuffled layout give the same per-task losses (routing by task_id)
    perm = torch.randperm(K * N, generator=torch.Generator().manual_seed(0))
    flat = batch.reshape(-1)[perm]
    torch.testing.assert_close(loss(flat)["loss_qvalue"], expected)


def test_alpha_loss_per_task_and_reductions():
    loss = make_loss()
    batch = make_batch()
    torch.manual_seed(3)
    out = loss(batch.clone())
    torch.manual_seed(3)
    _, log_prob = loss.sample_log_prob(batch.get("next"))  # same draws as the critic target...
    _, log_prob = loss.sample_log_prob(batch)  # ...then the actor's draws
    expected = -loss.log_alpha.detach() * (log_prob.mean(-1) + loss.target_entropy)
    torch.testing.assert_close(out["loss_alpha"].detach(), expected)
    torch.testing.assert_close(out["entropy"], -log_prob.mean(-1))
    mean_loss = make_loss(reduction="mean")
    torch.manual_seed(3)
    assert mean_loss(batch.clone())["loss_alpha"].detach().item() == pytest.approx(expected.mean().item(), rel=1e-5)


def test_soft_update_set_keys_and_bad_input():
    loss = make_loss()
    updater = SoftUpdate(loss, tau=0.1)
    key = next(iter(loss.qvalue_network_params.keys(True, True)))
    with torch.no_grad():
        loss.qvalue_network_params.get(key).add_(1.0)
    before_target = loss.target_qvalue_network_params.get(key).clone()
    param = loss.qvalue_network_params.get(key).detach().clone()
    updater.step()
    torch.testing.assert_close(loss.target_qvalue_network_params.get(key), 0.9 * before_target + 0.1 * param)

    batch = make_batch()
    torch.manual_seed(2)
    ref = loss(batch.clone())
    renamed = batch.clone()
    renamed.rename_key_(("next", "reward"), ("next", "r"))
    loss.set_keys(reward="r")
    torch.manual_seed(2)
    torch.testing.assert_close(loss(renamed)["loss_qvalue"], ref["loss_qvalue"])

    bb = make_sac_backbone("mtsac", num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(8,))
    with pytest.raises(ValueError, match="reduction=.avg. is not valid; valid: \\[.none., .mean., .sum.\\]"):
        MultiTaskSACLoss(bb.actor, bb.qvalue, action_mask=action_masks(ACT_DIMS, ACT), reduction="avg")
    with pytest.raises(ValueError, match="expected 1 or K=3"):
        MultiTaskSACLoss(bb.actor, bb.qvalue, action_mask=action_masks(ACT_DIMS, ACT), target_entropy=[1.0, 2.0])


def test_soft_td_target_uses_target_critics_and_each_tasks_alpha():
    """``y = r + γ (min_j Q'_j(s', ã') - α_i log π(ã'|s'))`` with ``α_i`` the row's own temperature."""
    gamma = 0.9
    loss = make_loss(gamma=gamma, loss_rescaling=False)
    with torch.no_grad():
        loss.log_alpha.copy_(torch.log(torch.tensor([0.5, 1.0, 2.0])))
        for p in loss.target_qvalue_network_params.values(True, True):
            p.mul_(0.5)  # targets differ from the online critics
    batch = make_batch()
    torch.manual_seed(4)
    next_action, next_log_prob = loss.sample_log_prob(batch["next"])
    next_q = loss.q_values(batch["next"], next_action, target=True)
    alpha = torch.tensor([0.5, 1.0, 2.0])[:, None]
    y = batch["next", "reward"].squeeze(-1) + gamma * (next_q - alpha * next_log_prob).min(0).values
    expected = ((loss.q_values(batch) - y) ** 2).sum(0).mean(-1)
    torch.manual_seed(4)
    torch.testing.assert_close(loss(batch.clone())["loss_qvalue"], expected)


def test_next_task_id_defaults_to_the_rows_task():
    loss = make_loss()
    batch = make_batch()
    torch.manual_seed(6)
    ref = loss(batch.clone())["loss_qvalue"]
    without = batch.clone()
    del without["next", "task_id"]
    torch.manual_seed(6)
    torch.testing.assert_close(loss(without)["loss_qvalue"], ref)


def _convex_coefficients(rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``c`` with ``c @ rows == target`` (least squares), to check that a reset row is a mix of the kept rows."""
    return torch.linalg.lstsq(rows.T, target.unsqueeze(-1)).solution.squeeze(-1)


def test_paco_reset_mixes_the_kept_tasks_weights_into_the_masked_task():
    """PaCo (Sun et al. 2022; the public CTPG code's ``reset_weight_by_task_mask``): a masked-out task's
    composition weights become a random convex mix of the kept tasks' (one draw for actor, critics and targets)."""
    torch.manual_seed(0)
    bb = make_sac_backbone("paco", num_tasks=K, obs_dim=OBS, act_dim=ACT, hidden=(16,), param_sets=4)
    loss = MultiTaskSACLoss(bb.actor, bb.qvalue, action_mask=action_masks(ACT_DIMS, ACT))
    sources = (loss.actor_network_params, loss.qvalue_network_params, loss.target_qvalue_network_params)
    keys = [(params, key) for params in sources for key in params.keys(True, True) if key[-1] == "task_weights"]
    assert len(keys) == 3  # actor, twin critics [2, K, P], their targets
    before = [params.get(key).detach().clone() for params, key in keys]
    loss.reset_extreme_compositions(torch.ones(K))
    for (params, key), old in zip(keys, before):
        torch.testing.assert_close(params.get(key), old)  # nothing masked: nothing changes
    loss.reset_extreme_compositions(torch.tensor([1.0, 0.0, 1.0]), generator=torch.Generator().manual_seed(3))
    coefficients = []
    for (params, key), old in zip(keys, before):
        new = params.get(key).detach()
        torch.testing.assert_close(new[..., [0, 2], :], old[..., [0, 2], :])  # kept tasks untouched
        for w_old, w_new in zip(old.reshape(-1, K, 4), new.reshape(-1, K, 4)):
            c = _convex_coefficients(w_old[[0, 2]], w_new[1])
            torch.testing.assert_close(c @ w_old[[0, 2]], w_new[1])
            assert (c >= 0).all() and c.sum().item() == pytest.approx(1.0, abs=1e-5)
            coefficients.append(c)
    for c in coefficients[1:]:
        torch.testing.assert_close(c, coefficients[0], rtol=1e-4, atol=1e-4)
    g = torch.Generator().manual_seed(3)  # the draw, by hand: uniform on the kept tasks, L1-normalised
    draw = torch.rand(K, K, generator=g)[1, [0, 2]]
    torch.testing.assert_close(coefficients[0], draw / draw.sum(), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(keys[0][0].get(keys[0][1])[1], before[0][1])


def test_mask_out_decided_by_the_critic_loss_alone_by_default():
    """The public CTPG code masks on the critic loss and reuses that mask for the actor; ``critic_or_actor`` lets an
    extreme actor loss drop the task too. Task 1's α is huge, so its actor loss (α log π) is extreme; with γ = 0 its
    critic target is the reward alone, so its critic loss is not."""
    batch = make_batch()
    for mask_out_on, kept in (("critic", [1.0, 1.0, 1.0]), ("critic_or_actor", [1.0, 0.0, 1.0])):
        loss = make_loss(gamma=0.0, mask_out_threshold=3000.0, mask_out_start=0, mask_out_on=mask_out_on,
                         loss_rescaling=False, alpha_max=1e9)
        with torch.no_grad():
            loss.log_alpha[1] = math.log(1e6)
        torch.manual_seed(5)
        out = loss(batch.clone())
        assert out["task_kept"].tolist() == kept, mask_out_on
    assert abs(out["loss_actor"][1].item()) == 0 and abs(make_loss()(batch.clone())["loss_actor"][1].item()) > 0


def test_alpha_loss_forms_and_the_alpha_cap():
    """``alpha``: ``L = α (-log π - H̄)`` (public CTPG code), gradient in log α = α·(−log π − H̄); ``log_alpha``:
    ``-log α (log π + H̄)``, gradient −(log π + H̄). Same sign, so the same fixed point."""
    batch = make_batch()
    grads = {}
    for form in ("alpha", "log_alpha"):
        loss = make_loss(alpha_loss=form, alpha_init=0.5)
        torch.manual_seed(3)
        out = loss(batch.clone())
        out["loss_alpha"].sum().backward()
        grads[form] = loss.log_alpha.grad.clone()
        gap = -out["entropy"] + loss.target_entropy  # per-task mean of log π + H̄
        expected = 0.5 * -gap if form == "alpha" else -gap
        torch.testing.assert_close(grads[form], expected)
    torch.testing.assert_close(grads["alpha"], 0.5 * grads["log_alpha"])
    capped = make_loss(alpha_max=1.0)
    with torch.no_grad():
        capped.log_alpha.copy_(torch.log(torch.tensor([0.5, 2.0, 8.0])))
    capped.cap_alpha_()
    torch.testing.assert_close(capped.alpha, torch.tensor([0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="alpha_loss='exp' is not valid; valid: \\['alpha', 'log_alpha'\\]"):
        make_loss(alpha_loss="exp")
    with pytest.raises(ValueError, match="MultiTaskSACLoss mask_out_threshold=0 is out of range; valid: > 0"):
        make_loss(mask_out_threshold=0)
    with pytest.raises(ValueError, match="MultiTaskSACLoss alpha_max=0.5 is out of range; valid: >= alpha_init=1.0"):
        make_loss(alpha_max=0.5)
