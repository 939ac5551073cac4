"""Networks: stacked per-task layers, multi-head layers, backbones, frozen stacked teachers."""

from tdmt.modules.stacked import StackedLinear, StackedMLP, apply_per_task

__all__ = ["StackedLinear", "StackedMLP", "apply_per_task"]
