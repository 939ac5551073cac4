"""Networks: stacked per-task layers, multi-head layers, backbones, frozen stacked teachers."""

from tdmt.modules.backbones import BACKBONES, SACBackbone, act_as, make_sac_backbone
from tdmt.modules.stacked import StackedLinear, StackedMLP, apply_per_task
from tdmt.modules.td3 import make_student_actor, make_student_critic, make_teacher_actor, make_teacher_critic
from tdmt.modules.teachers import StackedTeachers

__all__ = [
    "BACKBONES", "SACBackbone", "act_as", "make_sac_backbone",
    "StackedLinear", "StackedMLP", "apply_per_task",
    "StackedTeachers", "make_student_actor", "make_student_critic", "make_teacher_actor", "make_teacher_critic"]
