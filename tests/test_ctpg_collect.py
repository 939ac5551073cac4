"""CTPG pure functions and the guided behaviour's block timing / transition assembly, on synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from tdmt.collect import (
    GuidedBehaviour,
    guide_block,
    hindsight_relabel,
    hindsight_scores,
    masked_guide_sample,
    own_entropy_bonus,
    policy_filter_mask,
    qmp_choice,
    state_value,
)


class GaussianPolicies:
    """Stand-in control policies: π_j(·|s) = N(μ_j, σ²) per action dim, critic Q_i(s, a) = -|a - c_i|²."""

    def __init__(self, means: torch.Tensor, sigma: float = 0.3, targets: torch.Tensor | None = None):
        self.means, self.sigma = means, sigma  # [K, A]
        self.num_tasks = means.shape[0]
        self.targets = means if targets is None else targets
        self._log_alpha = torch.log(torch.linspace(0.1, 0.3, self.num_tasks))

    def _dist(self, task: torch.Tensor) -> Normal:
        return Normal(self.means[task], self.sigma)

    def sample(self, observation, own, policy):
        d = self._dist(policy)
        a = d.sample()
        return a, d.log_prob(a).sum(-1)

    def candidate_log_probs(self, observation, action, own):
        every = Normal(self.means.view(-1, *([1] * (action.dim() - 1)), self.means.shape[-1]), self.sigma)
        return every.log_prob(action).sum(-1), self.sample(observation, own, own)[1]

    def min_q(self, observation, action, own):
        return -((action - self.targets[own]) ** 2).sum(-1)

    def log_alpha(self):
        return self._log_alpha


def test_hindsight_relabel_recovers_generating_policy():
    torch.manual_seed(0)
    K, A, H, B = 5, 3, 10, 400
    policies = GaussianPolicies(torch.randn(K, A), sigma=0.5)
    true_j = torch.randint(0, K, (B,))
    n = torch.randint(1, H + 1, (B,))
    valid = torch.arange(H)[None] < n[:, None]
    obs = torch.randn(B, H, 4)
    actions = policies.sample(None, None, true_j.repeat_interleave(H))[0].view(B, H, A)
    # after the first done the stored actions are garbage: they must not matter
    actions = torch.where(valid[..., None], actions, torch.full_like(actions, 50.0))
    scores = hindsight_scores(policies, obs, actions, torch.zeros(B, dtype=torch.long))
    table = scores.log_probs
    assert table.shape == (B, K, H) and scores.own_sample_log_prob.shape == (B, H)
    torch.testing.assert_close(table[3, 2, 4], policies.candidate_log_probs(None, actions[3, 4], None)[0][2])
    relabel = hindsight_relabel(table, valid)
    accuracy = (relabel == true_j).float().mean()
    assert accuracy > 0.95, accuracy
    # hand-made table: invalid steps favour task 0, valid ones task 2
    lp = torch.zeros(1, 3, 4)
    lp[0, 2, :2] = 1.0
    lp[0, 0, 2:] = 100.0
    assert hindsight_relabel(lp, torch.tensor([[True, True, False, False]])).item() == 2
    with pytest.raises(ValueError, match="valid"):
        hindsight_relabel(torch.zeros(2, 3, 4), torch.ones(2, 5, dtype=torch.bool))


def test_filter_mask_and_guide_block():
    q = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    v = torch.tensor([2.0, 6.0])
    assert policy_filter_mask(q, v).tolist() == [[False, True, True], [False, False, False]]
    assert guide_block(torch.tensor([-2.0, 0.0, 1.0, -1.0])).tolist() == [False, True, True, False]
    assert guide_block(torch.zeros(3)).tolist() == [False, False, False]


def test_masked_sampling_never_picks_masked_and_falls_back_to_own():
    g = torch.Generator().manual_seed(0)
    B, K = 2000, 6
    logits = torch.randn(B, K, generator=g) * 3
    mask = torch.rand(B, K, generator=g) < 0.4
    mask[:200] = False  # all masked
    own = torch.randint(0, K, (B,), generator=g)
    j = masked_guide_sample(logits, mask, own, generator=g)
    some = mask.any(-1)
    assert some[200:].sum() > 1500
    assert mask[some].gather(1, j[some, None]).all()
    assert torch.equal(j[~some], own[~some]) and (~some).sum() >= 200
    # among allowed entries, frequencies follow the renormalised softmax
    n = 20000
    one = masked_guide_sample(torch.tensor([[0.0, math.log(3.0), 5.0]]).expand(n, 3),
                              torch.tensor([[True, True, False]]).expand(n, 3), torch.zeros(n, dtype=torch.long),
                              generator=g)
    assert (one == 2).sum() == 0
    assert abs((one == 1).float().mean().item() - 0.75) < 0.02


def test_state_value_and_qmp_choice():
    torch.manual_seed(0)
    means = torch.tensor([[0.0], [1.0], [-2.0]])
    policies = GaussianPolicies(means, sigma=1e-3, targets=torch.tensor([[1.0], [-2.0], [0.0]]))
    obs = torch.zeros(3, 2)
    own = torch.tensor([0, 1, 2])
    # task i's critic peaks at target_i; the proposing policy whose mean hits it wins
    assert qmp_choice(policies, obs, own)[0].tolist() == [1, 2, 0]
    v = state_value(policies, obs, own, samples=5)
    alpha = policies.log_alpha().exp()
    entropy = Normal(0.0, 1e-3).entropy()
    expected = torch.tensor([-1.0, -9.0, -4.0]) + alpha * entropy
    torch.testing.assert_close(v, expected, rtol=0, atol=0.35)  # M=5 samples of -α log π: noise ≈ 0.1


def test_own_entropy_bonus_discounts_valid_steps():
    policies = GaussianPolicies(torch.zeros(2, 1), sigma=0.5)
    valid = torch.tensor([[True, True, False], [True, True, True]])
    bonus = own_entropy_bonus(policies, torch.zeros(2, 3, 1), valid, torch.tensor([0, 1]), gamma=0.5)
    # E[-log N(a; 0, σ)] = entropy, sampling noise is large for one sample: compare against the exact log-probs
    assert bonus.shape == (2,)
    torch.manual_seed(3)
    b1 = own_entropy_bonus(policies, torch.zeros(2000, 3, 1), valid[1:].expand(2000, 3), torch.ones(2000).long(), 0.5)
    entropy = float(Normal(0.0, 0.5).entropy())
    assert abs(b1.mean().item() - float(policies.log_alpha().exp()[1]) * entropy * 1.75) < 0.01
    # log-probs already drawn by the hindsight pass are used as given: -α Σ γ^k valid_k log π
    given = torch.tensor([[-1.0, -2.0, -4.0], [-1.0, -2.0, -4.0]])
    alpha = policies.log_alpha().exp()
    expected = torch.stack([alpha[0] * (1 + 0.5 * 2), alpha[1] * (1 + 0.5 * 2 + 0.25 * 4)])
    torch.testing.assert_close(own_entropy_bonus(policies, torch.zeros(2, 3, 1), valid, torch.tensor([0, 1]), 0.5,
                                                 own_log_prob=given), expected)


def _drive(gb: GuidedBehaviour, steps: int, done_at: dict[int, list[int]], chooser):
    """Run the block logic for ``steps`` env steps; rows in ``done_at[t]`` end their episode at step t."""
    B = gb.own_task.shape[0]
    choices, emitted = [], []
    for t in range(steps):
        obs = torch.full((B, 2), float(t))
        choices.append(gb.choose(obs, chooser).clone())
        done = torch.zeros(B, dtype=torch.bool)
        done[done_at.get(t, [])] = True
        never = torch.zeros(B, dtype=torch.bool)
        out, ended = gb.record(obs, torch.full((B, 1), float(t)), torch.ones(B), obs + 1, done, never)
        assert out.shape == (B,)  # every row, every step: a fixed shape
        if ended.any():
            emitted.append((t, out[ended]))
    return torch.stack(choices), emitted


@pytest.mark.parametrize("skip_idle_draws", [True, False])  # False: the CUDA path, a draw at every step (masked)
def test_behaviour_changes_only_at_block_starts_and_emits_transitions(skip_idle_draws):
    H, B = 4, 3
    gb = GuidedBehaviour(torch.tensor([0, 1, 2]), obs_dim=2, act_dim=1, horizon=H, gamma=0.5,
                         skip_idle_draws=skip_idle_draws)
    counter = iter(range(10_000))

    def chooser(obs, own):  # a new value at every call: any change of choice reveals a call
        return torch.tensor([next(counter) % 97 for _ in range(own.shape[0])])

    choices, emitted = _drive(gb, 14, {5: [1]}, chooser)
    starts = {0: [0, 4, 8, 12], 1: [0, 4, 6, 10], 2: [0, 4, 8, 12]}  # row 1: episode ends at t=5 → restarts at 6
    for row, s in starts.items():
        changes = [t for t in range(1, 14) if choices[t, row] != choices[t - 1, row]]
        assert changes == s[1:], (row, changes)
    # transitions: row 1's short block (t=4,5) has n=2, R = 1 + 0.5, actions = t, valid mask [1,1,0,0]
    short = [(t, out[out["task_id"] == 1]) for t, out in emitted if t == 5][0][1]
    assert short["num_steps"].item() == 2
    assert short["next", "reward"].item() == pytest.approx(1.5)
    assert short["seq_valid"][0].tolist() == [True, True, False, False]
    assert short["seq_action"][0, :, 0].tolist() == [4.0, 5.0, 0.0, 0.0]
    assert short["next", "observation"][0].tolist() == [6.0, 6.0]
    assert short["observation"][0].tolist() == [4.0, 4.0]
    assert short["action"].item() == choices[4, 1].item()
    full = [out for t, out in emitted if t == 3][0]
    assert full["num_steps"].tolist() == [H] * B
    assert full["next", "reward"][:, 0].tolist() == [pytest.approx(1 + 0.5 + 0.25 + 0.125)] * B


def test_qmp_executes_the_winning_proposal_itself():
    """QMP (Zhang et al. 2023) executes ``a_j*``, the proposal that won ``argmax_j min Q_i(s, a_j)`` — not a fresh
    sample of ``π_j*``. Wide policies (σ = 1) make a fresh sample differ from the proposal."""
    torch.manual_seed(0)
    policies = GaussianPolicies(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]]), sigma=1.0,
                                targets=torch.tensor([[0.5, 0.5], [-1.0, 1.5], [1.0, -1.0]]))
    proposals = []
    real_sample = policies.sample

    def recording_sample(observation, own, policy):
        out = real_sample(observation, own, policy)
        proposals.append(out[0])
        return out

    policies.sample = recording_sample
    obs, own = torch.zeros(6, 2), torch.tensor([0, 0, 1, 1, 2, 2])
    choice, action = qmp_choice(policies, obs, own)
    (proposed,) = proposals  # [K, B, A]: one proposal of every policy for every row
    scores = -((proposed - policies.targets[own]) ** 2).sum(-1)  # task i's critic on every proposal, by hand
    assert torch.equal(choice, scores.argmax(0))
    torch.testing.assert_close(action, proposed[choice, torch.arange(6)])
    assert action.shape == (6, 2) and len(set(choice.tolist())) > 1
