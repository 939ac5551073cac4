"""CTPG guided behaviour (He et al., NeurIPS 2024, §4, Alg. 3) and the QMP baseline (Zhang et al. 2023).

Pure functions (shapes with any leading batch dims ``...``):

* :func:`hindsight_relabel` — Eq. 9: ``j* = argmax_j Σ_{k<H} valid_k · log π_j(a_{t+k} | s_{t+k})``.
* :func:`policy_filter_mask` — Eq. 11: ``m_j = 1[Q^g_comp(s, j) ≥ V_i(s)]``.
* :func:`guide_block` — Eq. 14: task i is blocked (no guidance) while ``log α_i > mean_j log α_j``.
* :func:`masked_guide_sample` — Eq. 12: ``j ~ softmax(logits)`` with masked-out logits set to ``-inf``; the own
  policy when every entry is masked. (The public CTPG code samples from the unmasked logits; this does not.)
* :func:`qmp_choice` — QMP: ``j* = argmax_j min Q_i(s, a_j)``, ``a_j ~ π_j(·|s)``; returns ``j*`` and the winning
  proposal ``a_j*`` itself (the action QMP executes).

Stateful piece: :class:`GuidedBehaviour` keeps, for every env row, the behaviour policy ``j`` chosen at the last
block start and the running guide transition. A new choice is taken only when a block starts: every ``H`` steps and
at each episode start (a ``done`` ends the running block). Each finished block emits one guide transition
``(s_t, j, R = Σ_{k<n} γ^k r_{t+k}, s_{t+n}, done, terminated, n, the H (s, a) pairs, valid)`` with ``n ≤ H``
(``n < H`` only when the episode ended inside the block). Nothing here reads the device (DESIGN §9): rows are
selected with masks, and :meth:`GuidedBehaviour.record` returns every row with an ``ended`` mask (a fixed shape)
for :meth:`PerTaskReplayBuffer.extend_where <tdmt.data.PerTaskReplayBuffer.extend_where>` to store.

Control policies are reached through :class:`ControlPolicies` ("act as task j" = evaluate the shared control
network with task j's conditioning on any row); ``tdmt.algos.ctpg`` adapts the SAC backbones to it.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from tensordict import TensorDict, TensorDictBase

__all__ = [
    "ControlPolicies", "GuidedBehaviour", "HindsightScores", "guide_block", "hindsight_relabel",
    "hindsight_scores", "masked_guide_sample", "own_entropy_bonus", "policy_filter_mask", "qmp_choice",
    "state_value",
]


class ControlPolicies(Protocol):
    """The K control policies ``π_j`` and task critics ``Q_i`` as functions of rows with any batch shape ``[*b]``.

    ``own`` is each row's task (whose real action dims count and whose critic judges); ``policy`` selects whose
    control policy acts on the row (it may differ from ``own``). Rows laid out ``[K, ...]`` with ``policy[k] == k``
    let stacked backbones take their fast path.
    """

    num_tasks: int

    def sample(self, observation: torch.Tensor, own: torch.Tensor, policy: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``a ~ π_policy(·|s)`` and ``log π_policy(a|s)`` over ``own``'s action dims: ``[*b, A]``, ``[*b]``."""

    def candidate_log_probs(self, observation: torch.Tensor, action: torch.Tensor, own: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log π_j(a|s)`` of every policy j for given actions (``own``'s dims count), ``[K, *b]``, and
        ``log π_own(ã|s)`` of a fresh sample ``ã ~ π_own(·|s)``, ``[*b]``: from one evaluation of the K policies."""

    def min_q(self, observation: torch.Tensor, action: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """``min(Q_own,1, Q_own,2)(s, a)``, ``[*b]``."""

    def log_alpha(self) -> torch.Tensor:
        """Per-task SAC temperatures ``log α``, ``[K]``."""


# ---------------------------------------------------------------------------------------------- pure functions
def hindsight_relabel(log_probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Hindsight off-policy correction (CTPG Eq. 9): the policy most likely to have produced the stored actions.

    Args:
        log_probs: ``[..., K, H]``, ``log_probs[..., j, k] = log π_j(a_{t+k} | s_{t+k})``.
        valid: ``[..., H]`` bool, false after the first done of the block.

    Returns:
        ``[...]`` int64: ``argmax_j Σ_k valid_k · log_probs[..., j, k]``.
    """
    if log_probs.shape[:-2] + log_probs.shape[-1:] != valid.shape:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} must be [..., K, H] with valid [..., H]; "
                         f"got valid {tuple(valid.shape)}")
    zero = torch.zeros((), dtype=log_probs.dtype, device=log_probs.device)
    score = torch.where(valid.unsqueeze(-2), log_probs, zero).sum(-1)
    return score.argmax(-1)


def policy_filter_mask(q_comp: torch.Tensor, v_own: torch.Tensor) -> torch.Tensor:
    """Policy-filter gate (CTPG Eq. 11): ``m[..., j] = Q^g_comp(s, j) ≥ V_i(s)``; q_comp [..., K], v_own [...]."""
    return q_comp >= v_own.unsqueeze(-1)


def guide_block(log_alpha: torch.Tensor) -> torch.Tensor:
    """Guide-block gate (CTPG Eq. 14): true for tasks whose ``log α_i`` exceeds the mean over tasks (last dim)."""
    return log_alpha > log_alpha.mean(-1, keepdim=True)


def masked_guide_sample(logits: torch.Tensor, mask: torch.Tensor, own: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``j ~ softmax(logits with ~mask → -inf)`` (CTPG Eq. 12); rows with an all-false mask get ``own``.

    Args:
        logits: ``[B, K]`` guide logits; mask: ``[B, K]`` bool; own: ``[B]`` the row's own task id.
    """
    any_allowed = mask.any(-1)
    masked = logits.masked_fill(~mask, float("-inf"))
    masked = torch.where(any_allowed.unsqueeze(-1), masked, torch.zeros_like(logits))
    probs = torch.softmax(masked, -1)
    # torch.multinomial's one-sample path (argmax of p / Exp(1), the same draws) without its host-side check of p
    draw = (probs / torch.empty_like(probs).exponential_(1, generator=generator)).argmax(-1)
    return torch.where(any_allowed, draw, own)


@torch.no_grad()
def state_value(policies: ControlPolicies, observation: torch.Tensor, task: torch.Tensor, samples: int = 5
                ) -> torch.Tensor:
    """Monte-Carlo SAC state value (CTPG §4.2, App. E.4): ``V_i(s) = mean_M [min Q_i(s,a) - α_i log π_i(a|s)]``."""
    obs = observation.unsqueeze(0).expand(samples, *observation.shape)
    tid = task.unsqueeze(0).expand(samples, *task.shape)
    action, log_prob = policies.sample(obs, tid, tid)
    alpha = policies.log_alpha().exp()[tid]
    return (policies.min_q(obs, action, tid) - alpha * log_prob).mean(0)


@torch.no_grad()
def qmp_choice(policies: ControlPolicies, observation: torch.Tensor, own: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """QMP (Zhang et al. 2023): each ``π_j`` proposes ``a_j ~ π_j(·|s)``; ``j* = argmax_j min Q_i(s, a_j)``.

    Returns ``j*`` ``[*b]`` and the winning proposal ``a_j*`` ``[*b, A]`` (masked to the row's own task dims): QMP
    executes that very action, not a fresh sample of ``π_j*``.
    """
    K = policies.num_tasks
    obs = observation.unsqueeze(0).expand(K, *observation.shape)
    own_k = own.unsqueeze(0).expand(K, *own.shape)
    proposer = torch.arange(K, device=own.device).view(K, *([1] * own.dim())).expand_as(own_k)
    action, _ = policies.sample(obs, own_k, proposer)
    best = policies.min_q(obs, action, own_k).argmax(0)
    index = best.view(1, *best.shape, 1).expand(1, *action.shape[1:])
    return best, action.gather(0, index).squeeze(0)


# Rows scored per call of the K policies in the hindsight relabel. The relabel is K·H·N actor rows per guide update
# (64k rows × 5×400 on MT10); in one call its 400-wide activations (~100 MB) overflow the CPU caches, blocks of ~2k
# rows run ~1.4× faster (measured on the 2-core CI box). Results do not depend on the block size.
HINDSIGHT_BLOCK_ROWS = 2048


class HindsightScores(NamedTuple):
    """The H stored steps of guide transitions scored by the control policies (:func:`hindsight_scores`)."""

    log_probs: torch.Tensor
    """``[..., K, H]``: ``log π_j(a_{t+k}|s_{t+k})`` for every candidate j (input of :func:`hindsight_relabel`)."""
    own_sample_log_prob: torch.Tensor
    """``[..., H]``: ``log π_i(ã_k|s_{t+k})``, ``ã_k ~ π_i`` fresh, i the row's task (for :func:`own_entropy_bonus`)."""


@torch.no_grad()
def hindsight_scores(policies: ControlPolicies, seq_observation: torch.Tensor, seq_action: torch.Tensor,
                     own: torch.Tensor) -> HindsightScores:
    """Score the stored steps with every control policy, in blocks of ``HINDSIGHT_BLOCK_ROWS`` on the CPU.

    Args:
        seq_observation: ``[..., H, obs]``; seq_action: ``[..., H, act]``; own: ``[...]`` the rows' task.
    """
    K, H = policies.num_tasks, seq_observation.shape[-2]
    obs = seq_observation.reshape(-1, seq_observation.shape[-1])
    act = seq_action.reshape(-1, seq_action.shape[-1])
    own_r = own.unsqueeze(-1).expand(*own.shape, H).reshape(-1)
    step = max(1, HINDSIGHT_BLOCK_ROWS // K) if obs.device.type == "cpu" else max(1, obs.shape[0])
    blocks = [policies.candidate_log_probs(obs[i:i + step], act[i:i + step], own_r[i:i + step])
              for i in range(0, obs.shape[0], step)]
    log_probs = torch.cat([b[0] for b in blocks], dim=1).view(K, *own.shape, H).movedim(0, -2)
    return HindsightScores(log_probs, torch.cat([b[1] for b in blocks]).view(*own.shape, H))


@torch.no_grad()
def own_entropy_bonus(policies: ControlPolicies, seq_observation: torch.Tensor, valid: torch.Tensor,
                      task: torch.Tensor, gamma: float, own_log_prob: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy part of the comparable guide target (CTPG Eq. 13): ``Σ_{k<H} γ^k valid_k (-α_i log π_i(ã_k|s_{t+k}))``.

    ``ã_k`` is a fresh sample of task i's own policy; ``own_log_prob`` (``[..., H]``) passes the log-probs already
    drawn by :func:`hindsight_scores`, otherwise they are sampled here. Shapes: ``seq_observation [..., H, obs]``,
    ``valid [..., H]``, ``task [...]`` → ``[...]``.
    """
    H = seq_observation.shape[-2]
    tid = task.unsqueeze(-1).expand(*task.shape, H)
    if own_log_prob is None:
        _, own_log_prob = policies.sample(seq_observation, tid, tid)
    alpha = policies.log_alpha().exp()[tid]
    discount = gamma ** torch.arange(H, dtype=seq_observation.dtype, device=seq_observation.device)
    return ((-alpha * own_log_prob) * discount * valid.to(seq_observation.dtype)).sum(-1)


# ---------------------------------------------------------------------------------------------- behaviour state
class GuidedBehaviour:
    """Block timing and guide-transition assembly for ``B`` env rows (flattened env batch).

    Usage per env step: ``choice = gb.choose(observation, chooser)`` (draws a new ``j`` for rows starting a block,
    keeps the others), act with ``π_choice``, step the env, then ``gb.record(...)`` which returns the guide
    transitions of the blocks that just ended (or ``None``).

    Args:
        own_task: ``[B]`` each row's task id.
        obs_dim, act_dim: widths of the (padded) observation / action.
        horizon: guide step H.
        gamma: discount used in ``R = Σ γ^k r_{t+k}``.
    """

    def __init__(self, own_task: torch.Tensor, obs_dim: int, act_dim: int, horizon: int, gamma: float,
                 skip_idle_draws: bool | None = None):
        if horizon < 1:
            raise ValueError(f"guide step H must be >= 1, got {horizon}")
        B, dev = own_task.shape[0], own_task.device
        # On a CPU device "does a block start now?" is free to ask, and the draw (guide logits, both gates) runs
        # only at steps where one does. On CUDA asking would make the host wait every step: the draw runs every step
        # and the starting rows take its result (a mask).
        self.skip_idle_draws = dev.type == "cpu" if skip_idle_draws is None else skip_idle_draws
        self.own_task, self.horizon, self.gamma = own_task.clone(), horizon, gamma
        self.choice = own_task.clone()
        self.t = torch.zeros(B, dtype=torch.long, device=dev)
        self.start_obs = torch.zeros(B, obs_dim, device=dev)
        self.ret = torch.zeros(B, device=dev)
        self.seq_obs = torch.zeros(B, horizon, obs_dim, device=dev)
        self.seq_act = torch.zeros(B, horizon, act_dim, device=dev)

    @property
    def block_start(self) -> torch.Tensor:
        """``[B]`` bool: rows whose next step starts a block (a new behaviour policy is drawn)."""
        return self.t == 0

    def choose(self, observation: torch.Tensor, chooser) -> torch.Tensor:
        """Behaviour task per row. ``chooser(observation, own_task) -> j`` (all rows, so stacked guide heads keep
        their ``[K, ...]`` layout) is called and only the rows starting a block take its ``j`` (with
        ``skip_idle_draws``, it is called only when some row starts one)."""
        start = self.block_start
        if self.skip_idle_draws and not start.any():
            return self.choice
        drawn = chooser(observation, self.own_task).to(self.choice.dtype)
        self.choice = torch.where(start, drawn, self.choice)
        self.start_obs = torch.where(start.unsqueeze(-1), observation, self.start_obs)
        return self.choice

    def record(self, observation: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
               next_observation: torch.Tensor, done: torch.Tensor, terminated: torch.Tensor
               ) -> tuple[TensorDictBase, torch.Tensor]:
        """Add one env step (flat ``[B]`` rows; ``reward/done/terminated`` of shape ``[B]``).

        Returns the guide transition of every row as it stands (``[B]``) and ``ended`` ``[B]``: the rows whose block
        ended at this step, the only ones to store. A fixed shape, so the caller never reads how many ended.
        """
        rows = torch.arange(self.t.shape[0], device=self.t.device)
        k = self.t
        self.seq_obs[rows, k] = observation
        self.seq_act[rows, k] = action
        self.ret += (self.gamma ** k.to(reward.dtype)) * reward
        n = k + 1
        ended = (n >= self.horizon) | done
        valid = torch.arange(self.horizon, device=n.device).unsqueeze(0) < n.unsqueeze(1)
        out = TensorDict({
            "observation": self.start_obs.clone(),
            "task_id": self.own_task.clone(),
            "action": self.choice.clone(),
            "num_steps": n,
            "seq_observation": self.seq_obs * valid.unsqueeze(-1),
            "seq_action": self.seq_act * valid.unsqueeze(-1),
            "seq_valid": valid,
            "next": {
                "observation": next_observation.clone(),
                "reward": self.ret.clone().unsqueeze(-1),
                "done": done.clone().unsqueeze(-1),
                "terminated": terminated.clone().unsqueeze(-1),
            },
        }, batch_size=[n.shape[0]])
        self.t = torch.where(ended, torch.zeros_like(n), n)
        self.ret = torch.where(ended, torch.zeros_like(self.ret), self.ret)
        return out, ended

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"choice": self.choice, "t": self.t, "start_obs": self.start_obs, "ret": self.ret,
                "seq_obs": self.seq_obs, "seq_act": self.seq_act}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)


# ---------------------------------------------------------------------------------------------- guide replay
