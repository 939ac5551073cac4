"""Per-task replay buffers and teacher datasets."""

from tdmt.data.replay import PerTaskReplayBuffer

__all__ = ["PerTaskReplayBuffer"]
