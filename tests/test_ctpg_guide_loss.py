"""GuideDiscreteSACLoss: with H=1 it equals TorchRL's DiscreteSACLoss per task; n-step / comparable targets by hand."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import ProbabilisticActor
from torchrl.objectives import DiscreteSACLoss, SoftUpdate, ValueEstimators

from tdmt.objectives import GuideDiscreteSACLoss
from tdmt.objectives.guide_sac import make_guide_networks

K, N, OBS, GAMMA = 3, 7, 5, 0.9


class HeadOf(nn.Module):
    """Task k's head of a multi-head net, on a flat [N, obs] batch (for the single-task DiscreteSACLoss)."""

    def __init__(self, net: nn.Module, k: int):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, obs: torch.Tensor) -> torch.Tensor:  # one row of task k: the per-row head path
        return self.net(obs.unsqueeze(0), torch.full((1, obs.shape[0]), self.k))[0]


def _batch(steps: int = 1) -> TensorDict:
    g = torch.Generator().manual_seed(1)
    return TensorDict({
        "observation": torch.randn(K, N, OBS, generator=g),
        "task_id": torch.arange(K)[:, None].expand(K, N).clone(),
        "action": torch.randint(0, K, (K, N), generator=g),
        "num_steps": torch.full((K, N), steps),
        "next": {"observation": torch.randn(K, N, OBS, generator=g),
                 "reward": torch.randn(K, N, 1, generator=g),
                 "done": torch.rand(K, N, 1, generator=g) < 0.3,
                 "terminated": torch.rand(K, N, 1, generator=g) < 0.3},
    }, batch_size=[K, N])


def _guide_loss(alpha_init: float = 0.7) -> GuideDiscreteSACLoss:
    torch.manual_seed(0)
    actor, q, qc = make_guide_networks(K, OBS, hidden=(16, 16))
    loss = GuideDiscreteSACLoss(actor, q, qc, num_tasks=K, alpha_init=alpha_init)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    with torch.no_grad():  # distinct per-task temperatures and distinct target critics
        loss.log_alpha.copy_(torch.tensor([-0.5, 0.1, 0.4]))
        for p in loss.target_qvalue_network_params.values(True, True):
            p.add_(0.05 * torch.randn_like(p))
    return loss


def _reference(guide: GuideDiscreteSACLoss, k: int) -> DiscreteSACLoss:
    """TorchRL's DiscreteSACLoss on task k's heads, with guide's parameters and task k's temperature."""
    actor = ProbabilisticActor(
        TensorDictModule(HeadOf(guide.actor_network.module, k), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"], out_keys=["action"], distribution_class=torch.distributions.Categorical)
    qvalue = TensorDictModule(HeadOf(guide.qvalue_network.module, k), in_keys=["observation"],
                              out_keys=["action_value"])
    ref = DiscreteSACLoss(actor, qvalue, action_space="categorical", num_actions=K, loss_function="l2",
                          alpha_init=math.exp(float(guide.log_alpha[k])))
    ref.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    for mine, theirs in ((guide.actor_network_params, ref.actor_network_params),
                         (guide.qvalue_network_params, ref.qvalue_network_params),
                         (guide.target_qvalue_network_params, ref.target_qvalue_network_params)):
        a, b = mine.flatten_keys(), theirs.flatten_keys()
        for key in a.keys():
            suffix = "net." + key.removeprefix("module.")
            (match,) = [bk for bk in b.keys() if bk.endswith(suffix)]
            b.get(match).data.copy_(a.get(key).data)
    return ref


def test_h1_equals_torchrl_discrete_sac_per_task():
    guide = _guide_loss()
    td = _batch(steps=1)
    for k in range(K):
        active = torch.zeros(K, N, dtype=torch.bool)
        active[k] = True
        out = guide(td.clone().set("active", active))
        ref = _reference(guide, k)
        ref_out = ref(td[k].clone())
        for name in ("loss_qvalue", "loss_actor", "loss_alpha"):
            torch.testing.assert_close(out[name], ref_out[name], rtol=1e-5, atol=1e-6, msg=f"{name} task {k}")
        assert float(out["loss_qvalue"]) > 0
    assert torch.allclose(guide.target_entropy, torch.tensor(0.98 * math.log(K)))


def test_n_step_and_comparable_targets_by_hand():
    guide = _guide_loss()
    td = _batch(steps=4)
    td["own_entropy_bonus"] = torch.rand(K, N)
    y, y_comp = guide._targets(td)
    with torch.no_grad():
        nxt = td["next"].clone().set("task_id", td["task_id"])
        probs = torch.softmax(guide._logits(nxt), -1)
        alpha = guide.log_alpha.exp().view(K, 1, 1)
        nets = guide.target_qvalue_network_params.unbind(0)
        cnets = guide.target_comp_qvalue_network_params.unbind(0)
        q = torch.stack([_apply(guide.qvalue_network, p, nxt) for p in nets]).min(0)[0]
        qc = torch.stack([_apply(guide.comp_qvalue_network, p, nxt) for p in cnets]).min(0)[0]
        not_term = 1 - nxt["terminated"].squeeze(-1).float()
        r = nxt["reward"].squeeze(-1)
        y_hand = r + GAMMA**4 * not_term * (probs * (q - alpha * torch.log(probs))).sum(-1)
        yc_hand = r + td["own_entropy_bonus"] + GAMMA**4 * not_term * (probs * qc).sum(-1)
    torch.testing.assert_close(y, y_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_comp, yc_hand, rtol=1e-5, atol=1e-5)


def _apply(module: TensorDictModule, params, td) -> torch.Tensor:
    with params.to_module(module):
        inp = TensorDict({"observation": td["observation"], "task_id": torch.arange(K)[:, None].expand(K, N)}, [K, N])
        return module(inp).get(module.out_keys[0])


def test_inactive_tasks_get_no_gradient_and_soft_update_runs():
    guide = _guide_loss()
    td = _batch(steps=10)
    active = torch.tensor([True, False, True])[:, None].expand(K, N)
    out = guide(td.set("active", active))
    (out["loss_qvalue"] + out["loss_comp_qvalue"] + out["loss_actor"] + out["loss_alpha"]).backward()
    head_grads = {name: p.grad for name, p in guide.named_parameters() if "heads.weight" in name}
    assert head_grads and all(g is not None for g in head_grads.values())
    for name, g in head_grads.items():
        per_task = g.movedim(-3, 0)  # [K, (nets,) in, out]
        assert per_task[1].abs().max() == 0, name
        assert per_task[0].abs().max() > 0 and per_task[2].abs().max() > 0, name
    assert guide.log_alpha.grad[1] == 0 and guide.log_alpha.grad[0] != 0
    SoftUpdate(guide, tau=0.5).step()


def test_rejects_bad_layout_and_loss_function():
    actor, q, qc = make_guide_networks(K, OBS, hidden=(8,))
    with pytest.raises(ValueError, match="loss_function='huber' is not valid; valid: \\['l2', 'l1', 'smooth_l1'\\]"):
        GuideDiscreteSACLoss(actor, q, qc, num_tasks=K, loss_function="huber")
    with pytest.raises(ValueError, match="GuideDiscreteSACLoss num_tasks=1 is out of range; valid: >= 2"):
        GuideDiscreteSACLoss(actor, q, qc, num_tasks=1)
    with pytest.raises(ValueError, match="target_entropy_weight=1.5 is out of range; valid: \\(0, 1\\]"):
        GuideDiscreteSACLoss(actor, q, qc, num_tasks=K, target_entropy_weight=1.5)
    with pytest.raises(ValueError, match="alpha_loss='alfa' is not valid; valid: \\['alpha', 'log_alpha'\\]"):
        GuideDiscreteSACLoss(actor, q, qc, num_tasks=K, alpha_loss="alfa")
    guide = GuideDiscreteSACLoss(actor, q, qc, num_tasks=K)
    mixed = _batch()
    mixed["task_id"][0, 0] = 1
    with pytest.raises(RuntimeError, match="one task per row"):  # a device-side assertion: raised at once on CPU
        guide(mixed)


def test_subset_of_task_rows_equals_masked_full_batch():
    guide = _guide_loss()
    td = _batch(steps=3)
    masked = guide(td.clone().set("active", torch.tensor([True, False, True])[:, None].expand(K, N)))
    subset = guide(td[torch.tensor([0, 2])].clone())
    for name in ("loss_qvalue", "loss_comp_qvalue", "loss_actor", "loss_alpha"):
        torch.testing.assert_close(subset[name], masked[name], rtol=1e-5, atol=1e-6, msg=name)


def test_guide_temperature_loss_forms():
    """``log_alpha`` (TorchRL): ``-log α (Σ p log p + H̄)``; ``alpha`` (the public CTPG code): ``α (H(p) - H̄)``:
    same sign, the second's gradient in log α is α times the first's."""
    grads = {}
    for form in ("log_alpha", "alpha"):
        torch.manual_seed(0)
        actor, q, qc = make_guide_networks(K, OBS, hidden=(8,))
        guide = GuideDiscreteSACLoss(actor, q, qc, num_tasks=K, alpha_init=0.5, alpha_loss=form)
        out = guide(_batch())
        out["loss_alpha"].backward()
        grads[form] = guide.log_alpha.grad.clone()
        logits = guide._logits(_batch())
        entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1).mean(-1)  # [K]
        gap = (entropy - 0.98 * math.log(K)).detach()
        torch.testing.assert_close(grads[form], (0.5 if form == "alpha" else 1.0) * gap / K)
    torch.testing.assert_close(grads["alpha"], 0.5 * grads["log_alpha"])
