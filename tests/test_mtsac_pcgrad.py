"""PCGrad: hand-computed projections, the optimizer wrapper, and use with MultiTaskSACLoss."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import ValueEstimators

from tdmt.envs import action_masks
from tdmt.modules import make_sac_backbone
from tdmt.objectives import MultiTaskSACLoss
from tdmt.optim import PCGrad, project_conflicting


def test_two_conflicting_gradients_hand_computed():
    # g1 = (1, 0), g2 = (-1, 1): g1.g2 = -1 < 0
    # g1' = g1 - (-1 / |g2|^2) g2 = (0.5, 0.5); g2' = g2 - (-1 / |g1|^2) g1 = (0, 1); sum = (0.5, 1.5)
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    for seed in range(4):  # the order does not matter for two tasks
        projected = project_conflicting(grads, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    torch.testing.assert_close(projected.sum(0), torch.tensor([0.5, 1.5]))


def test_three_conflicting_tasks_project_onto_the_other_tasks_only_hand_computed():
    """g1 = (1, 0), g2 = (-1, 1/2), g3 = (-1, -1/2): task 1 conflicts with both others. Hand-computed (Alg. 1):

    * task 1, order (2, 3): g1' = g1 + (1/1.25) g2 = (0.2, 0.4); g1'.g3 = -0.4 -> g1'' = g1' + (0.4/1.25) g3
      = (-0.12, 0.24). Order (3, 2): (-0.12, -0.24). Both now conflict with g1 itself (g1''.g1 = -0.12): projecting
      onto g1 too (task i in its own order, the old bug) would give (0, ±0.24).
    * task 2 (g2.g3 = 0.75 > 0), order (1, 3): g2' = g2 + g1 = (0, 0.5); g2'.g3 = -0.25 -> (-0.2, 0.4).
      Order (3, 1): (0, 0.5). Task 3 by symmetry: (-0.2, -0.4) or (0, -0.5).
    """
    grads = torch.tensor([[1.0, 0.0], [-1.0, 0.5], [-1.0, -0.5]])
    expected = [{(-0.12, 0.24), (-0.12, -0.24)}, {(-0.2, 0.4), (0.0, 0.5)}, {(-0.2, -0.4), (0.0, -0.5)}]
    seen: list[set] = [set(), set(), set()]
    for seed in range(20):
        projected = project_conflicting(grads, torch.Generator().manual_seed(seed))
        for i in range(3):
            row = tuple(round(v, 4) + 0.0 for v in projected[i].tolist())
            assert row in expected[i], (seed, i, row)
            seen[i].add(row)
    assert seen == expected  # both orders of the two other tasks occur: the order is random per task
    with pytest.raises(ValueError, match="grads must be \\[K, P\\] with K >= 1, got shape \\(3,\\)"):
        project_conflicting(torch.ones(3))


def test_non_conflicting_and_zero_gradients_are_unchanged():
    grads = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 0.0, 0.0]])  # pairwise dots >= 0
    torch.testing.assert_close(project_conflicting(grads), grads)
    # a projected gradient no longer conflicts with the one it was projected on
    g = torch.tensor([[2.0, 1.0], [-1.0, 0.2]])
    p = project_conflicting(g)
    assert (p[0] @ g[1]).item() == pytest.approx(0.0, abs=1e-6)
    assert (p[1] @ g[0]).item() == pytest.approx(0.0, abs=1e-6)


def test_wrapper_writes_the_projected_sum_and_steps():
    theta = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    opt = PCGrad(torch.optim.SGD([theta], lr=1.0))
    opt.zero_grad()
    opt.backward(g @ theta)  # losses_k = g_k . theta  ->  grad_k = g_k
    torch.testing.assert_close(theta.grad, torch.tensor([0.5, 1.5]))
    opt.step()
    torch.testing.assert_close(theta.detach(), torch.tensor([2.5, -3.5]))
    mean_opt = PCGrad(torch.optim.SGD([theta], lr=1.0), reduction="mean")
    mean_opt.zero_grad()
    mean_opt.backward(g @ theta)
    torch.testing.assert_close(theta.grad, torch.tensor([0.25, 0.75]))
    with pytest.raises(ValueError, match="\\[K\\] vector of per-task losses"):
        mean_opt.backward((g @ theta).sum())
    with pytest.raises(ValueError, match="valid: \\['sum', 'mean'\\]"):
        PCGrad(torch.optim.SGD([theta], lr=1.0), reduction="max")


def test_pcgrad_with_multitask_sac_losses_matches_manual_per_task_grads():
    torch.manual_seed(0)
    K, N = 3, 4
    bb = make_sac_backbone("mhsac", num_tasks=K, obs_dim=3, act_dim=2, hidden=(8,))
    loss = MultiTaskSACLoss(bb.actor, bb.qvalue, action_mask=action_masks([2, 1, 2], 2))
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
    tid = torch.arange(K)[:, None].expand(K, N)
    flags = torch.zeros(K, N, 1, dtype=torch.bool)
    td = TensorDict({"observation": torch.randn(K, N, 3), "task_id": tid, "action": torch.rand(K, N, 2),
                     "next": {"observation": torch.randn(K, N, 3), "task_id": tid, "reward": torch.randn(K, N, 1),
                              "done": flags, "terminated": flags}}, [K, N])
    params = list(loss.qvalue_network_params.values(True, True))
    opt = PCGrad(torch.optim.SGD(params, lr=0.1))
    losses = loss(td)["loss_qvalue"]
    manual = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(losses[k], params, retain_graph=True)])
                          for k in range(K)])
    batched = opt.per_task_grads(losses, retain_graph=True)
    torch.testing.assert_close(batched, manual)
    opt.zero_grad()
    gen_state = torch.Generator().manual_seed(7)
    opt.generator = gen_state
    opt.backward(losses)
    expected = project_conflicting(manual, torch.Generator().manual_seed(7)).sum(0)
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in params]), expected)
