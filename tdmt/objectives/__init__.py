from tdmt.objectives.multitask_sac import MultiTaskSACLoss

__all__ = ["MultiTaskSACLoss"]
