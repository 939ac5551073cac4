"""tdmt: multi-task continuous-control RL on TorchRL/TensorDict (KTM-DRL, Arora et al., CTPG).

Importing tdmt registers every task as a gymnasium id ``tdmt/<TaskName>-v0``.
"""

from tdmt import envs  # noqa: F401  (registers the gymnasium ids)

__version__ = "0.1.0"

