"""Networks: stacked per-task layers, multi-head layers, backbones, frozen stacked teachers."""

from tdmt.modules.backbones import BACKBONES, SACBackbone, act_as, make_sac_backbone
from tdmt.modules.stacked import StackedLinear, StackedMLP, apply_per_task

__all__ = [
    "BACKBONES", "SACBackbone", "act_as", "make_sac_backbone",
    "StackedLinear", "StackedMLP", "apply_per_task"]
