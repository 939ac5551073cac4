"""TeacherDistillTD3Loss (KTM-DRL Eq. 1–5) on tiny linear networks against hand-computed numbers.

Setup (K=2, obs_max=2, act_max=2; task 0 native obs 2 / act 2, task 1 native obs 1 / act 1), no task one-hot:
* student actor: W=0, b=atanh(0.5) → π(ŝ) = [0.5, 0.5] for every state (padded dim included);
* student critics: Q1 = s0 + a0 + a1, Q2 = s1 + 2 a0 + 1 (targets equal);
* teachers (native): Q^0_1 = s0 + s1 + a0 + a1, Q^0_2 = 2 a0; Q^1_1 = 3 s0 + a0, Q^1_2 = s0 - a0 + 1;
* data: task 0 s=[1, 2], a=[0.2, -0.4], s'=[0, 1], r=1, terminal; task 1 s=[2, 0], a=[0.6, 0.9] (0.9 is garbage
  in the padded dim: g^1 must zero it), s'=[1, 0], r=-1, not terminal.
"""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate, ValueEstimators

from tdmt.algos.td3_common import TD3Learner
from tdmt.envs import action_masks
from tdmt.modules.td3 import make_student_actor, make_student_critic
from tdmt.modules.teachers import StackedTeachers
from tdmt.objectives import TeacherDistillTD3Loss

MASKS = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


def lin(w: list[float], b: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor(w).view(-1, 1), torch.tensor([b]))]


def tiny_teachers() -> StackedTeachers:
    zero_actor = [(torch.zeros(2, 2), torch.zeros(2))]
    t0 = {"obs_dim": 2, "act_dim": 2, "actor": zero_actor, "critic1": lin([1, 1, 1, 1]), "critic2": lin([0, 0, 2, 0])}
    t1 = {"obs_dim": 1, "act_dim": 1, "actor": [(torch.zeros(1, 1), torch.zeros(1))],
          "critic1": lin([3, 1]), "critic2": lin([1, -1], 1.0)}
    return StackedTeachers([t0, t1], obs_max=2, act_max=2)


def set_params(params, weight: torch.Tensor, bias: torch.Tensor) -> None:
    params["module", "0", "weight"].data.copy_(weight)
    params["module", "0", "bias"].data.copy_(bias)


def tiny_loss(mode: str, alpha: float = 1.0, beta: float = 1.0, policy_noise: float = 0.0,
              reduction: str | None = None, gamma: float = 0.9) -> TeacherDistillTD3Loss:
    actor = make_student_actor(2, 2, 2, hidden=(), use_onehot=False)
    critic = make_student_critic(2, 2, 2, hidden=(), use_onehot=False)
    loss = TeacherDistillTD3Loss(actor, critic, tiny_teachers(), action_masks=MASKS, mode=mode, alpha=alpha,
                                 beta=beta, policy_noise=policy_noise, reduction=reduction)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
    for params in (loss.actor_network_params, loss.target_actor_network_params):
        set_params(params, torch.zeros(2, 2), torch.full((2,), math.atanh(0.5)))
    q_w = torch.tensor([[[1.0, 0, 1, 1]], [[0, 1, 2, 0]]])
    q_b = torch.tensor([[0.0], [1.0]])
    for params in (loss.qvalue_network_params, loss.target_qvalue_network_params):
        set_params(params, q_w, q_b)
    return loss


def tiny_batch() -> TensorDict:
    """[K=2, N=1]: row k is task k."""
    return TensorDict({
        "observation": torch.tensor([[[1.0, 2.0]], [[2.0, 0.0]]]),
        "action": torch.tensor([[[0.2, -0.4]], [[0.6, 0.9]]]),
        "task_id": torch.tensor([[0], [1]]),
        "next": {
            "observation": torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]]),
            "task_id": torch.tensor([[0], [1]]),
            "reward": torch.tensor([[[1.0]], [[-1.0]]]),
            "done": torch.tensor([[[True]], [[False]]]),
            "terminated": torch.tensor([[[True]], [[False]]]),
        },
    }, batch_size=[2, 1])


def test_eq1_offline_critic_regresses_on_teacher_q_values():
    # task 0: (2.8 - 0.8)² + (0.4 - 3.4)² = 13; task 1 (â = [0.6, 0]): (6.6 - 2.6)² + (2.4 - 2.2)² = 16.04
    per_sample, meta = tiny_loss("offline", reduction="none").value_loss(tiny_batch())
    torch.testing.assert_close(per_sample, torch.tensor([[13.0], [16.04]]))
    torch.testing.assert_close(meta["target_value"], torch.tensor([[[2.8], [6.6]], [[0.4], [2.4]]]))
    loss, _ = tiny_loss("offline").value_loss(tiny_batch())
    torch.testing.assert_close(loss, torch.tensor(14.52))


def test_eq2_offline_actor_gradient_flows_only_through_frozen_teacher_critic():
    loss = tiny_loss("offline")
    value, _ = loss.actor_loss(tiny_batch())
    # π = [0.5, 0.5]; task 0: -Q^0_1 = -(1 + 2 + 0.5 + 0.5) = -4; task 1: f^1(π) = [0.5]: -(6 + 0.5) = -6.5
    torch.testing.assert_close(value, torch.tensor(-5.25))
    value.backward()
    # dL/db = -1/2 Σ_k (dQ^k_1/da ⊙ m_k) tanh'(·) with tanh' = 1 - 0.5² = 0.75 → -0.375 · ([1, 1] + [1, 0])
    torch.testing.assert_close(loss.actor_network_params["module", "0", "bias"].grad, torch.tensor([-0.75, -0.375]))
    # dL/dW[o, i] = -0.375 Σ_k dQ^k_1/da_o m_k[o] s_k[i]: row 0 = -0.375 ([1, 2] + [2, 0]), row 1 = -0.375 [1, 2]
    torch.testing.assert_close(loss.actor_network_params["module", "0", "weight"].grad,
                               torch.tensor([[-1.125, -0.75], [-0.375, -0.75]]))
    for name, p in loss.named_parameters():
        if not name.startswith("actor_network_params"):
            assert p.grad is None, f"{name} received a gradient from the offline actor loss"
    assert all(not b.requires_grad for b in loss.teachers.buffers())


def test_eq3_eq4_online_critic_target_with_mask_and_termination():
    per_sample, meta = tiny_loss("online", reduction="none").value_loss(tiny_batch())
    # task 0 terminal: y = 1; task 1: π'(s') = [0.5, 0.5] → g^1 → [0.5, 0]: Q'1 = 1.5, Q'2 = 2 → y = -1 + 0.9·1.5
    torch.testing.assert_close(meta["target_value"][0], torch.tensor([[1.0], [0.35]]))
    # task 0: (1 - 0.8)² + (1 - 3.4)² = 5.8; task 1: (0.35 - 2.6)² + (0.35 - 2.2)² = 8.485
    torch.testing.assert_close(per_sample, torch.tensor([[5.8], [8.485]]))


def test_eq3_target_noise_is_clipped_gaussian():
    loss = tiny_loss("online", policy_noise=0.2)
    for params in (loss.target_actor_network_params,):
        set_params(params, torch.zeros(2, 2), torch.zeros(2))  # π' = 0
    for params in (loss.target_qvalue_network_params,):  # Q'1 = a0, Q'2 = a0 + 100 → y = r + γ ε_0
        set_params(params, torch.tensor([[[0.0, 0, 1, 0]], [[0, 0, 1, 0]]]), torch.tensor([[0.0], [100.0]]))
    n = 20_000
    batch = tiny_batch()[:1].expand(1, n).clone()
    batch["next", "done"] = torch.zeros(1, n, 1, dtype=torch.bool)
    batch["next", "terminated"] = torch.zeros(1, n, 1, dtype=torch.bool)
    torch.manual_seed(0)
    _, meta = loss.value_loss(batch)
    eps = (meta["target_value"][0].flatten() - 1.0) / 0.9
    assert eps.min() >= -0.5 - 1e-5 and eps.max() <= 0.5 + 1e-5
    assert abs(eps.mean().item()) < 0.01  # centred (the reference code's uniform rand has mean 0.05)
    assert 0.18 < eps.std().item() < 0.2  # σ=0.2 Gaussian clipped at 2.5σ: std 0.197
    assert 0.005 < (eps.abs() > 0.499).float().mean().item() < 0.025  # ≈1.2% of the mass sits on the clip


@pytest.mark.parametrize(("alpha", "beta", "expected"), [(1.0, 1.0, -7.5), (0.5, 2.0, -7.125), (0.0, 1.0, -2.25),
                                                         (1.0, 0.0, -5.25)])
def test_eq5_online_actor_weights_teacher_and_student_critic(alpha, beta, expected):
    # task 0: -(α·4 + β·2); task 1: -(α·6.5 + β·2.5), Q1(ŝ, g^1(π)) = 2 + 0.5 + 0
    value, _ = tiny_loss("online", alpha=alpha, beta=beta).actor_loss(tiny_batch())
    torch.testing.assert_close(value, torch.tensor(expected))


def test_stacked_and_flat_batches_give_the_same_losses():
    torch.manual_seed(0)
    actor = make_student_actor(3, 2, 3, hidden=(16,))
    critic = make_student_critic(3, 2, 3, hidden=(16,))
    teachers = _random_teachers([3, 2, 3], [2, 1, 1], obs_max=3, act_max=2)
    loss = TeacherDistillTD3Loss(actor, critic, teachers, action_masks=action_masks_for([2, 1, 1], 2))
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.99)
    batch = random_batch(3, 5, 3, 2)
    shuffled = batch.reshape(-1)[torch.randperm(15)]
    for mode in ("offline", "online"):
        loss.mode = mode
        torch.manual_seed(1)
        stacked = loss(batch.clone())
        perm = torch.randperm(15)
        flat_in = batch.reshape(-1)[perm]
        torch.manual_seed(1)
        flat = loss(batch.reshape(-1).clone())
        torch.testing.assert_close(flat["loss_actor"], stacked["loss_actor"])
        torch.testing.assert_close(flat["loss_qvalue"], stacked["loss_qvalue"])
        if mode == "offline":  # no noise: any order of rows gives the same losses
            torch.testing.assert_close(loss(flat_in)["loss_qvalue"], stacked["loss_qvalue"])
            torch.testing.assert_close(loss(shuffled)["loss_actor"], stacked["loss_actor"])


def test_teachers_get_no_gradients_and_stay_bit_identical():
    torch.manual_seed(0)
    actor = make_student_actor(3, 2, 3, hidden=(16,))
    critic = make_student_critic(3, 2, 3, hidden=(16,))
    teachers = _random_teachers([3, 2, 3], [2, 1, 1], obs_max=3, act_max=2)
    before = {k: v.clone() for k, v in teachers.state_dict().items()}
    loss = TeacherDistillTD3Loss(actor, critic, teachers, action_masks=action_masks_for([2, 1, 1], 2),
                                 mode="offline")
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.99)
    params = dict(loss.named_parameters())
    assert not any("teacher" in name for name in params)
    assert not any(p is b for p in params.values() for b in teachers.buffers())
    assert not any(name.startswith("target_") or ".target_" in name for name, _ in teachers.named_buffers())
    learner = TD3Learner(loss, lr=1e-2, tau=0.5)
    assert isinstance(learner.target_updater, SoftUpdate)
    actor_before = loss.actor_network_params.clone()
    for step in range(6):
        loss.mode = "offline" if step < 3 else "online"
        learner.update(random_batch(3, 4, 3, 2), actor_every=1 if step < 3 else 2)
    for k, v in teachers.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher tensor {k} changed"
    assert not torch.equal(actor_before["module", "0", "weight"], loss.actor_network_params["module", "0", "weight"])


def test_padded_action_dims_never_reach_teacher_or_student_critic():
    torch.manual_seed(0)
    act_dims = [2, 1, 1]
    actor = make_student_actor(3, 2, 3, hidden=(16,))
    critic = make_student_critic(3, 2, 3, hidden=(16,))
    teachers = _random_teachers([3, 2, 3], act_dims, obs_max=3, act_max=2)
    seen = []
    teachers.critic.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    loss = TeacherDistillTD3Loss(actor, critic, teachers, action_masks=action_masks_for(act_dims, 2), mode="online")
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.99)
    batch = random_batch(3, 4, 3, 2)
    batch["action"][..., 1] = 0.7  # garbage in padded dims of tasks 1 and 2
    out = loss(batch.clone())
    loss.mode = "offline"
    loss(batch.clone())
    loss(batch.reshape(-1).clone())
    assert len(seen) == 5  # online actor (q1); offline actor (q1) + critic (q); the same on the flat batch
    for x in seen[:3]:  # stacked path: [S, N, obs_max + act_max] with stacks in task order (blocks of K)
        rows = x.reshape(-1, 3, *x.shape[1:])
        assert torch.all(rows[:, 1:, :, 4] == 0) and torch.all(rows[:, 1:, :, 3] != 0)
    for x in seen[3:]:  # flat path: every stack gets all 12 rows; rows 4.. belong to the 1-dim-action tasks
        assert torch.all(x[:, 4:, 4] == 0) and torch.all(x[:, :4, 4] != 0)
    # the student critic saw g^k(a): the online loss equals the loss on explicitly masked actions
    masked = batch.clone()
    masked["action"] = masked["action"] * action_masks_for(act_dims, 2)[:, None]
    loss.mode = "online"
    torch.manual_seed(3)
    ref = loss(masked)
    torch.manual_seed(3)
    again = loss(batch.clone())
    torch.testing.assert_close(again["loss_qvalue"], ref["loss_qvalue"])
    assert out["loss_qvalue"].isfinite()
    # and the student actor's own padded output is not zero: the mask, not the actor, removes it
    assert actor(batch.select("observation", "task_onehot"))["action"][1:, :, 1].abs().min() > 0


def test_invalid_configuration_names_valid_choices():
    actor = make_student_actor(2, 2, 2, hidden=(), use_onehot=False)
    critic = make_student_critic(2, 2, 2, hidden=(), use_onehot=False)
    with pytest.raises(ValueError, match="valid: \\['offline', 'online'\\]"):
        TeacherDistillTD3Loss(actor, critic, tiny_teachers(), action_masks=MASKS, mode="distill")
    with pytest.raises(ValueError, match="needs teachers"):
        TeacherDistillTD3Loss(actor, critic, None, action_masks=MASKS, mode="online", alpha=1.0)
    loss = TeacherDistillTD3Loss(actor, critic, tiny_teachers(), action_masks=MASKS)
    loss.set_keys(task_id="task", observation="obs")
    batch = tiny_batch().rename_key_("task_id", "task").rename_key_("observation", "obs")
    batch["observation"] = batch["obs"]
    assert loss.actor_loss(batch)[0].isfinite()


# ---------------------------------------------------------------------- helpers shared with other KTM tests
def action_masks_for(act_dims: list[int], act_max: int) -> torch.Tensor:
    return action_masks(act_dims, act_max)


def _random_teachers(obs_dims: list[int], act_dims: list[int], obs_max: int, act_max: int,
                     hidden: int = 8) -> StackedTeachers:
    def mlp(i: int, o: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.randn(i, hidden), torch.randn(hidden)), (torch.randn(hidden, o), torch.randn(o))]

    teachers = [{"obs_dim": o, "act_dim": a, "actor": mlp(o, a), "critic1": mlp(o + a, 1), "critic2": mlp(o + a, 1)}
                for o, a in zip(obs_dims, act_dims)]
    return StackedTeachers(teachers, obs_max, act_max)


def random_batch(K: int, N: int, obs_max: int, act_max: int) -> TensorDict:
    task_id = torch.arange(K)[:, None].expand(K, N)
    onehot = torch.nn.functional.one_hot(task_id, K).float()
    return TensorDict({
        "observation": torch.randn(K, N, obs_max), "action": torch.rand(K, N, act_max) * 2 - 1,
        "task_id": task_id, "task_onehot": onehot,
        "next": {"observation": torch.randn(K, N, obs_max), "task_id": task_id, "task_onehot": onehot,
                 "reward": torch.randn(K, N, 1), "done": torch.zeros(K, N, 1, dtype=torch.bool),
                 "terminated": torch.zeros(K, N, 1, dtype=torch.bool)},
    }, batch_size=[K, N])


def test_hard_update_copies_student_into_targets_between_stages():
    loss = tiny_loss("offline")
    learner = TD3Learner(loss, lr=1e-3, tau=0.005)
    with torch.no_grad():
        for p in (*loss.actor_network_params.values(True, True), *loss.qvalue_network_params.values(True, True)):
            p.add_(1.0)
    assert not torch.equal(loss.target_actor_network_params["module", "0", "bias"],
                           loss.actor_network_params["module", "0", "bias"])
    learner.hard_update_targets()
    for online, target in ((loss.actor_network_params, loss.target_actor_network_params),
                           (loss.qvalue_network_params, loss.target_qvalue_network_params)):
        for key, value in online.items(True, True):
            assert torch.equal(target[key], value.data), key
