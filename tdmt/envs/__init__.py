"""Multi-task env suites, padding, and TorchRL transforms (DESIGN §2–3)."""

from tdmt.envs.multitask import MultiTaskEnv, make_env, make_task_env
from tdmt.envs.padding import PadSpaces, action_masks, observation_masks
from tdmt.envs.suites import Suite, TaskSpec, get_suite, list_suites
from tdmt.envs.transforms import PadAction, PadObservation, TaskIdTransform
from tdmt.envs.variants import register_all

register_all()

__all__ = [
    "MultiTaskEnv", "PadAction", "PadObservation", "PadSpaces", "Suite", "TaskIdTransform", "TaskSpec",
    "action_masks", "get_suite", "list_suites", "make_env", "make_task_env", "observation_masks", "register_all",
]
