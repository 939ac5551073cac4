"""KL-Gaussian distillation loss (Arora et al. §3.1.3): closed form, directions, frozen teachers, per-head updates."""

import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Independent, Normal, kl_divergence

from tdmt.envs import action_masks
from tdmt.modules.multihead import actor_log_std, actor_net, make_gaussian_actor
from tdmt.objectives import KLGaussianDistillLoss, kl_diag_gaussian

K, N, OBS, ACT = 3, 7, 4, 2


def _gaussians(seed: int, shape=(5, 6, 3)):
    g = torch.Generator().manual_seed(seed)
    mu_p, mu_q = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    std_p, std_q = torch.rand(shape, generator=g) * 2 + 0.05, torch.rand(shape, generator=g) * 2 + 0.05
    return mu_p, std_p, mu_q, std_q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_diag_gaussian_equals_torch_kl_both_directions(seed):
    mu_p, std_p, mu_q, std_q = _gaussians(seed)
    p, q = Independent(Normal(mu_p, std_p), 1), Independent(Normal(mu_q, std_q), 1)
    torch.testing.assert_close(kl_diag_gaussian(mu_p, std_p, mu_q, std_q), kl_divergence(p, q))
    torch.testing.assert_close(kl_diag_gaussian(mu_q, std_q, mu_p, std_p), kl_divergence(q, p))
    # asymmetric, non-negative, zero on identical distributions
    assert not torch.allclose(kl_divergence(p, q), kl_divergence(q, p))
    assert (kl_diag_gaussian(mu_p, std_p, mu_q, std_q) > 0).all()
    torch.testing.assert_close(kl_diag_gaussian(mu_p, std_p, mu_p, std_p), torch.zeros(5, 6))


def _data(task_ids: torch.Tensor) -> TensorDict:
    g = torch.Generator().manual_seed(3)
    return TensorDict(observation=torch.randn(*task_ids.shape, OBS, generator=g), task_id=task_ids,
                      batch_size=task_ids.shape)


def _task_major() -> torch.Tensor:
    return torch.arange(K).view(K, 1).expand(K, N).contiguous()


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    return make_gaussian_actor(K, OBS, ACT), make_gaussian_actor(K, OBS, ACT, shared_trunk=False)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_loss_value_is_the_mean_kl_in_the_chosen_direction(direction):
    student, teacher = _pair()
    data = _data(_task_major())
    loss = KLGaussianDistillLoss(student, teacher, direction=direction, reduction="none")
    per_row = loss(data)["loss_kl"]
    s, t = student(data.clone()), teacher(data.clone())
    ps, pt = Independent(Normal(s["loc"], s["scale"]), 1), Independent(Normal(t["loc"], t["scale"]), 1)
    expected = kl_divergence(pt, ps) if direction == "forward" else kl_divergence(ps, pt)
    assert per_row.shape == (K, N)
    torch.testing.assert_close(per_row, expected)
    mean = KLGaussianDistillLoss(student, teacher, direction=direction)(data)["loss_kl"]
    torch.testing.assert_close(mean, expected.mean())


def test_teachers_are_frozen_and_not_loss_parameters():
    student, teacher = _pair()
    loss = KLGaussianDistillLoss(student, teacher)
    assert {id(p) for p in loss.parameters()} == {id(p) for p in student.parameters()}
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in loss.parameters()}
    before_teacher = [p.detach().clone() for p in teacher.parameters()]
    before_student = [p.detach().clone() for p in student.parameters()]
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    out = loss(_data(_task_major()))
    out["loss_kl"].backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before_teacher, teacher.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_student, student.parameters()))
    assert loss(_data(_task_major()))["loss_kl"] < out["loss_kl"]  # the step reduced the KL


@pytest.mark.parametrize("task", [0, 2])
def test_only_head_k_moves_on_task_k_data_with_frozen_trunk(task):
    student, teacher = _pair()
    net = actor_net(student)
    for p in net.trunk.parameters():
        p.requires_grad_(False)
    trunk_before = [p.clone() for p in net.trunk.parameters()]
    head_before = net.head.weight.detach().clone(), net.head.bias.detach().clone()
    loss = KLGaussianDistillLoss(student, teacher)
    opt = torch.optim.Adam([p for p in loss.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss(_data(torch.full((N,), task)))["loss_kl"].backward()
        opt.step()
    others = [k for k in range(K) if k != task]
    for after, before in zip((net.head.weight, net.head.bias), head_before):
        assert torch.equal(after[others], before[others])
        assert (after[task] - before[task]).abs().max() > 1e-3
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, net.trunk.parameters()))


def test_teacher_targets_read_from_data_and_missing_targets_error():
    student, teacher = _pair()
    data = _data(_task_major())
    t = teacher(data.clone())
    with_targets = data.clone().set(("teacher", "loc"), t["loc"]).set(("teacher", "scale"), t["scale"])
    no_teacher = KLGaussianDistillLoss(student)
    computed = KLGaussianDistillLoss(student, teacher)(data)["loss_kl"]
    torch.testing.assert_close(no_teacher(with_targets)["loss_kl"], computed)
    with pytest.raises(KeyError, match="teacher"):
        no_teacher(data)


def test_set_keys_reads_other_target_keys():
    student, teacher = _pair()
    data = _data(_task_major())
    t = teacher(data.clone())
    loss = KLGaussianDistillLoss(student)
    loss.set_keys(teacher_loc="mu_T", teacher_scale="sigma_T")
    renamed = data.clone().set("mu_T", t["loc"]).set("sigma_T", t["scale"])
    torch.testing.assert_close(loss(renamed)["loss_kl"], KLGaussianDistillLoss(student, teacher)(data)["loss_kl"])


def test_action_mask_ignores_padded_dims():
    student, teacher = _pair()
    data = _data(_task_major())
    s, t = student(data.clone()), teacher(data.clone())
    mask = action_masks([1, 2, 1], 2)
    loss = KLGaussianDistillLoss(student, action_mask=mask, reduction="none")
    shifted = t["loc"].clone()
    shifted[0, :, 1] += 5.0  # task 0 has one real action dim: its padded dim must not count
    kl = loss(data.clone().set(("teacher", "loc"), shifted).set(("teacher", "scale"), t["scale"]))["loss_kl"]
    expected = kl_diag_gaussian(t["loc"][..., :1], t["scale"][..., :1], s["loc"][..., :1], s["scale"][..., :1])
    torch.testing.assert_close(kl[0], expected[0])
    torch.testing.assert_close(kl[2], expected[2])
    full = kl_diag_gaussian(t["loc"][1], t["scale"][1], s["loc"][1], s["scale"][1])
    torch.testing.assert_close(kl[1], full)


def test_bad_arguments_name_the_valid_choices():
    student, teacher = _pair()
    with pytest.raises(ValueError, match=r"direction='sideways'.*\['forward', 'reverse'\]"):
        KLGaussianDistillLoss(student, teacher, direction="sideways")
    with pytest.raises(ValueError, match=r"reduction='max'.*'mean'"):
        KLGaussianDistillLoss(student, teacher, reduction="max")


def test_kl_reaches_each_heads_state_independent_sigma():
    """The paper's student has one learned σ per head: the forward KL's gradient on log σ_S is exactly
    ``1 − σ_T² / σ_S²`` per dim (mean over rows), so each head is pulled towards its own teacher's σ."""
    torch.manual_seed(0)
    student = make_gaussian_actor(K, OBS, ACT)
    data = _data(_task_major())
    sigma_t = torch.tensor([0.3, 0.6, 1.5])
    teacher = student(data.clone())
    targets = data.clone().set(("teacher", "loc"), teacher["loc"].detach())
    targets.set(("teacher", "scale"), sigma_t.view(K, 1, 1).expand(K, N, ACT))
    KLGaussianDistillLoss(student)(targets)["loss_kl"].backward()
    log_std = actor_log_std(student)
    expected = (1 - sigma_t.pow(2)).view(K, 1).expand(K, ACT) / (K * N) * N  # σ_S = 1: mean over K·N rows
    torch.testing.assert_close(log_std.grad, expected)
