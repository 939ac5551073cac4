from tdmt.objectives.guide_sac import GuideDiscreteSACLoss
from tdmt.objectives.kl_gaussian import KLGaussianDistillLoss, kl_diag_gaussian
from tdmt.objectives.multitask_sac import MultiTaskSACLoss
from tdmt.objectives.teacher_distill_td3 import TeacherDistillTD3Loss

__all__ = [
    "GuideDiscreteSACLoss", "KLGaussianDistillLoss", "kl_diag_gaussian", "MultiTaskSACLoss", "TeacherDistillTD3Loss"]
