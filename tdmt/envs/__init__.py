"""Multi-task env suites, padding, and TorchRL transforms (DESIGN §2–3)."""

import warnings

from tdmt.envs.multitask import MultiTaskEnv, make_env, make_task_env
from tdmt.envs.normalize import TaskObservationNorm
from tdmt.envs.padding import PadSpaces, TorchActions, action_masks, observation_masks
from tdmt.envs.suites import Suite, TaskSpec, get_suite, list_suites
from tdmt.envs.transforms import PadAction, PadObservation, TaskIdTransform
from tdmt.envs.variants import register_all

register_all()
# Meta-World's observation space has equal bounds on padded goal dims and is exceeded by design; gymnasium's
# checker warns on every reset. The warning says nothing actionable, so it is silenced here.
warnings.filterwarnings(
    "ignore", message=".*(is not within the observation space|maximum and minimum values are equal).*")

__all__ = [
    "MultiTaskEnv", "PadAction", "PadObservation", "PadSpaces", "Suite", "TaskIdTransform", "TaskObservationNorm",
    "TaskSpec", "TorchActions",
    "action_masks", "get_suite", "list_suites", "make_env", "make_task_env", "observation_masks", "register_all",
]
