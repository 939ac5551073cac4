"""KTM-DRL's update schedule (Algorithm 1: foreach task k one update per epoch, in both stages).

* ``update_schedule=per_task`` reproduces the public code's loop (xuzhiyuan1528/KTM-DRL ``train_mt``, written
  here in plain PyTorch on heterogeneous tasks) update for update: same weights after offline and online epochs.
* ``batched`` makes one update per epoch (K× fewer optimiser steps).
* the K teachers' one batched update IS K independent single-task TD3 updates (why teachers have no schedule key).
* no host synchronisation inside an update (CPU run of the GPU rule, DESIGN §9); soft update = TorchRL's.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tensordict import TensorDict
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torchrl.objectives import TD3Loss, ValueEstimators

from tdmt.algos import ktm_drl, td3_mt
from tdmt.algos.td3_common import TD3Learner
from tdmt.algos.teachers import sum_over_tasks
from tdmt.config import parse_args
from tdmt.envs import action_masks
from tdmt.modules.td3 import make_student_actor, make_student_critic, make_teacher_actor, make_teacher_critic
from tdmt.modules.teachers import StackedTeachers
from tdmt.objectives import TeacherDistillTD3Loss

OBS, ACT = [3, 2, 4], [1, 2, 1]  # heterogeneous: padding, slice and mask all matter
K, OBS_MAX, ACT_MAX, H, N = 3, 4, 2, 8, 5
MASKS = action_masks(ACT, ACT_MAX)


def native_teachers() -> list[dict]:
    def mlp(i, o):
        return [(torch.randn(i, H) * 0.5, torch.randn(H) * 0.1), (torch.randn(H, o) * 0.5, torch.randn(o) * 0.1)]

    return [{"obs_dim": o, "act_dim": a, "actor": mlp(o, a), "critic1": mlp(o + a, 1), "critic2": mlp(o + a, 1)}
            for o, a in zip(OBS, ACT)]


def batch() -> TensorDict:
    task_id = torch.arange(K)[:, None].expand(K, N)
    obs_mask = action_masks(OBS, OBS_MAX)[:, None]
    return TensorDict({
        "observation": torch.randn(K, N, OBS_MAX) * obs_mask, "action": (torch.rand(K, N, ACT_MAX) * 2 - 1) *
        MASKS[:, None], "task_id": task_id,
        "next": {"observation": torch.randn(K, N, OBS_MAX) * obs_mask, "task_id": task_id,
                 "reward": torch.randn(K, N, 1), "done": torch.rand(K, N, 1) < 0.2},
    }, batch_size=[K, N])


def with_terminated(td: TensorDict) -> TensorDict:
    td["next", "terminated"] = td["next", "done"].clone()
    return td


def tdmt_learner(teachers: list[dict], schedule: str = "per_task") -> TD3Learner:
    actor = make_student_actor(OBS_MAX, ACT_MAX, K, (H,))
    critic = make_student_critic(OBS_MAX, ACT_MAX, K, (H,))
    loss = TeacherDistillTD3Loss(actor, critic, StackedTeachers(teachers, OBS_MAX, ACT_MAX), action_masks=MASKS,
                                 mode="offline", policy_noise=0.0)  # no smoothing noise: both sides deterministic
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.99)
    return TD3Learner(loss, lr=1e-2, tau=0.05, policy_delay=2, schedule=schedule)


class PublicCode:
    """``TD3MT.train_mt`` of the public code on explicit weights copied from a tdmt student (smoothing noise off)."""

    def __init__(self, learner: TD3Learner, teachers: list[dict]):
        loss = learner.loss
        actor = loss.actor_network_params["module"]
        critic = loss.qvalue_network_params["module"]
        self.actor = [torch.nn.Parameter(actor[i, p].detach().clone()) for i in ("0", "2") for p in ("weight", "bias")]
        self.critic = [torch.nn.Parameter(critic[i, p][j].detach().clone())
                       for j in range(2) for i in ("0", "2") for p in ("weight", "bias")]
        self.actor_t = [p.detach().clone() for p in self.actor]
        self.critic_t = [p.detach().clone() for p in self.critic]
        self.teachers = teachers
        self.opt = {(stage, net): torch.optim.Adam(params, lr=1e-2) for stage in ("offline", "online")
                    for net, params in (("actor", self.actor), ("critic", self.critic))}
        self.total_it = [0] * K

    @staticmethod
    def mlp(w, x, tanh=False):
        h = F.linear(torch.relu(F.linear(x, w[0], w[1])), w[2], w[3])
        return torch.tanh(h) if tanh else h

    def q(self, w, s, a):
        sa = torch.cat([s, a], 1)
        return self.mlp(w[:4], sa), self.mlp(w[4:], sa)

    def teacher_q(self, k, s, a, which="critic1"):
        x = torch.cat([s, a], 1)
        (w0, b0), (w1, b1) = self.teachers[k][which]
        return torch.relu(x @ w0 + b0) @ w1 + b1

    def pad(self, a):
        return torch.cat([a, torch.zeros(a.shape[0], ACT_MAX - a.shape[1])], 1)

    def train_mt(self, k: int, b: TensorDict, offline: bool) -> None:
        self.total_it[k] += 1
        stage = "offline" if offline else "online"
        s, a_pad = b["observation"], b["action"]
        s_k, a_k = s[:, :OBS[k]], a_pad[:, :ACT[k]]
        with torch.no_grad():
            if offline:
                y1, y2 = self.teacher_q(k, s_k, a_k), self.teacher_q(k, s_k, a_k, "critic2")
            else:
                next_a = self.pad(self.mlp(self.actor_t, b["next", "observation"], tanh=True).clamp(-1, 1)[:, :ACT[k]])
                t1, t2 = self.q(self.critic_t, b["next", "observation"], next_a)
                y1 = y2 = b["next", "reward"] + (1 - b["next", "terminated"].float()) * 0.99 * torch.min(t1, t2)
        q1, q2 = self.q(self.critic, s, a_pad)
        opt = self.opt[stage, "critic"]
        opt.zero_grad()
        (F.mse_loss(q1, y1) + F.mse_loss(q2, y2)).backward()
        opt.step()
        if offline or self.total_it[k] % 2 == 0:
            act = self.mlp(self.actor, s, tanh=True)[:, :ACT[k]]
            loss = -self.teacher_q(k, s_k, act)
            if not offline:
                loss = loss - self.q(self.critic, s, self.pad(act))[0]
            opt = self.opt[stage, "actor"]
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            if not offline:  # (the public code also soft-updates offline; the targets are overwritten at the copy)
                with torch.no_grad():
                    for p, t in zip(self.actor + self.critic, self.actor_t + self.critic_t):
                        t.copy_(0.05 * p + 0.95 * t)

    def hard_copy(self):
        self.actor_t = [p.detach().clone() for p in self.actor]
        self.critic_t = [p.detach().clone() for p in self.critic]


def assert_same_student(learner: TD3Learner, ref: PublicCode) -> None:
    actor = learner.loss.actor_network_params["module"]
    critic = learner.loss.qvalue_network_params["module"]
    ours = [actor[i, p] for i in ("0", "2") for p in ("weight", "bias")]
    ours += [critic[i, p][j] for j in range(2) for i in ("0", "2") for p in ("weight", "bias")]
    for mine, theirs in zip(ours, ref.actor + ref.critic):
        torch.testing.assert_close(mine.detach(), theirs.detach(), rtol=1e-4, atol=1e-5)


def test_per_task_schedule_reproduces_the_public_codes_loop_in_both_stages():
    torch.manual_seed(0)
    teachers = native_teachers()
    learner = tdmt_learner(teachers)
    ref = PublicCode(learner, teachers)
    data = [with_terminated(batch()) for _ in range(7)]
    for epoch in range(3):  # offline: foreach task k, critic (Eq. 1) + actor (Eq. 2)
        learner.update(data[epoch], actor_every=1, soft_update=False)
        for k in range(K):
            ref.train_mt(k, data[epoch][k], offline=True)
        assert_same_student(learner, ref)
    learner.hard_update_targets()
    learner.reset_optimizers()
    ref.hard_copy()
    learner.loss.mode = "online"
    for epoch in range(3, 7):  # online: critic each update; actor + soft update at every 2nd update of a task
        learner.update(data[epoch])
        for k in range(K):
            ref.train_mt(k, data[epoch][k], offline=False)
        assert_same_student(learner, ref)
    assert learner.critic_optim.state_dict()["state"][0]["step"] == 4 * K  # K critic steps per epoch
    assert learner.actor_optim.state_dict()["state"][0]["step"] == 2 * K  # every 2nd epoch, K actor steps


def test_batched_schedule_is_one_update_per_epoch():
    torch.manual_seed(0)
    learner = tdmt_learner(native_teachers(), schedule="batched")
    learner.loss.mode = "online"
    for _ in range(4):
        learner.update(with_terminated(batch()))
    assert learner.critic_optim.state_dict()["state"][0]["step"] == 4
    assert learner.actor_optim.state_dict()["state"][0]["step"] == 2


def test_precomputed_targets_equal_per_task_targets():
    torch.manual_seed(0)
    loss = tdmt_learner(native_teachers()).loss
    data = with_terminated(batch())
    for mode in ("offline", "online"):
        loss.mode = mode
        rows = loss.value_target(data, task="rows")
        for k in range(K):
            torch.testing.assert_close(rows[:, k], loss.value_target(data[k], task=k))
            torch.testing.assert_close(rows[:, k], loss.value_target(data)[:, k])


def test_teachers_batched_update_is_k_independent_td3_updates():
    """Disjoint parameters + elementwise Adam: one update of the K stacked teachers (the recipe's loss:
    TeacherDistillTD3Loss with alpha=0) = K single-task updates of TorchRL's own TD3Loss."""
    torch.manual_seed(0)

    def learner(k: int, torchrl: bool) -> TD3Learner:
        masks = MASKS if k == K else MASKS[1:2]
        actor = make_teacher_actor(k, OBS_MAX, ACT_MAX, (H,))
        critic = make_teacher_critic(k, OBS_MAX, ACT_MAX, masks, (H,))
        if torchrl:
            loss = TD3Loss(actor, critic, bounds=(-1.0, 1.0), num_qvalue_nets=2, policy_noise=0.0, noise_clip=0.5,
                           loss_function="l2", reduction="none")
        else:
            loss = TeacherDistillTD3Loss(actor, critic, None, action_masks=masks, mode="online", alpha=0.0,
                                         policy_noise=0.0, reduction="none")
        loss.make_value_estimator(ValueEstimators.TD0, gamma=0.99)
        return TD3Learner(loss, lr=1e-2, tau=0.05, reduce=sum_over_tasks)

    stacked, single = learner(K, torchrl=False), learner(1, torchrl=True)  # single: task 1 alone
    for name in ("actor_network_params", "qvalue_network_params", "target_actor_network_params",
                 "target_qvalue_network_params"):
        getattr(single.loss, name).data.copy_(_task_slice(getattr(stacked.loss, name).data, 1))
    for _ in range(4):
        data = with_terminated(batch())
        stacked.update(data)
        single.update(data[1:2])
    for name in ("actor_network_params", "qvalue_network_params", "target_qvalue_network_params"):
        torch.testing.assert_close(_task_slice(getattr(stacked.loss, name).data, 1),
                                   getattr(single.loss, name).data.to_tensordict(), rtol=1e-5, atol=1e-6)


def _task_slice(params, k: int):
    """Task k's slice of stacked teacher parameters (``[.., K, in, out]`` weights, ``[.., K, 1, out]`` biases,
    ``[.., K, act_max]`` action masks)."""
    def take(name: tuple, x: torch.Tensor) -> torch.Tensor:
        dim = x.dim() - (2 if name[-1] == "action_masks" else 3)  # the task dim
        return x.narrow(dim, k, 1)

    return params.named_apply(take, nested_keys=True).to_tensordict()


class SyncCounter(TorchDispatchMode):
    """Counts host synchronisations (``.item()``, ``bool(t)``, ``.tolist()`` dispatch ``_local_scalar_dense``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("schedule", ["per_task", "batched"])
def test_updates_never_synchronise_with_the_host(schedule):
    torch.manual_seed(0)
    learner = tdmt_learner(native_teachers(), schedule)
    data = with_terminated(batch())
    learner.update(data, actor_every=1, soft_update=False)
    with SyncCounter() as counter:
        learner.update(data, actor_every=1, soft_update=False)  # offline epoch
        learner.loss.mode = "online"
        for _ in range(2):  # online epochs with and without the actor step
            learner.update(data)
        learner.update_task(data[1], 1)
    assert counter.count == 0
    assert set(learner.read_stats()) == {"loss_qvalue", "loss_actor"}


def test_soft_update_matches_torchrl_soft_update():
    torch.manual_seed(0)
    a, b = tdmt_learner(native_teachers()), tdmt_learner(native_teachers())
    for name in ("actor_network_params", "qvalue_network_params", "target_actor_network_params",
                 "target_qvalue_network_params"):
        getattr(b.loss, name).data.copy_(getattr(a.loss, name).data)
    with torch.no_grad():
        for learner in (a, b):
            learner.loss.actor_network_params.data.add_(1.0)
            learner.loss.qvalue_network_params.data.mul_(2.0)
    a.soft_update()
    b.target_updater.step()
    for name in ("target_actor_network_params", "target_qvalue_network_params"):
        for key, value in getattr(a.loss, name).items(True, True):
            torch.testing.assert_close(value, getattr(b.loss, name)[key])


def test_schedule_config_rules():
    assert ktm_drl.Config().update_schedule == "per_task" and td3_mt.Config().update_schedule == "per_task"
    assert not ktm_drl.Config().use_onehot and not td3_mt.Config().use_onehot
    with pytest.raises(ValueError, match="update_schedule='per_task' with pcgrad=true is not valid; valid: batched"):
        parse_args(td3_mt.Config, ["pcgrad=true"])
    assert parse_args(td3_mt.Config, ["pcgrad=true", "update_schedule=batched"]).label.startswith("G-Surgery")
    with pytest.raises(ValueError, match="update_schedule='batched' with per_task_replay=false is not valid"):
        parse_args(ktm_drl.Config, ["per_task_replay=false", "update_schedule=batched"])
    with pytest.raises(ValueError, match="update_schedule='fast' is not a valid choice"):
        parse_args(ktm_drl.Config, ["update_schedule=fast"])
    with pytest.raises(ValueError, match="schedule='per_task' is not valid with pcgrad"):
        TD3Learner(copy.deepcopy(tdmt_learner(native_teachers()).loss), 1e-3, 0.005, pcgrad=True,
                   schedule="per_task")
