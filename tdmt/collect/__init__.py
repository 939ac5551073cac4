"""Rollout logic that is not a plain policy: CTPG guided behaviour and the QMP baseline (DESIGN §6)."""

from tdmt.collect.guide import (
    ControlPolicies,
    GuidedBehaviour,
    HindsightScores,
    guide_block,
    hindsight_relabel,
    hindsight_scores,
    masked_guide_sample,
    own_entropy_bonus,
    policy_filter_mask,
    qmp_choice,
    state_value,
)
from tdmt.collect.returns import EpisodeReturns

__all__ = [
    "ControlPolicies", "EpisodeReturns", "GuidedBehaviour", "HindsightScores", "guide_block", "hindsight_relabel",
    "hindsight_scores",
    "masked_guide_sample", "own_entropy_bonus", "policy_filter_mask", "qmp_choice", "state_value",
]
