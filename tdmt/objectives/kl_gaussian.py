"""KL-Gaussian policy distillation (Arora et al. §3.1.3, §3.1.4; DESIGN §5).

K frozen Gaussian teachers are distilled into a multi-head Gaussian student: on states s of task k, head k of the
student is pulled towards teacher k by the closed-form KL divergence between diagonal Gaussians,

    KL(p‖q) = Σ_d [ log σ_q,d/σ_p,d + (σ_p,d² + (μ_p,d − μ_q,d)²) / (2 σ_q,d²) − 1/2 ].

``direction="forward"`` uses KL(T‖S) (teacher first; what the paper names and its public code computes),
``"reverse"`` uses KL(S‖T) (what the paper's printed Eq. 4 expands to). Both are read on the *pre-squash*
``loc``/``scale``: for ``TanhNormal`` actors (SAC teachers, the tdmt actors) the tanh is a bijection, and KL is
invariant under a bijection applied to both distributions, so this is also the exact KL between the squashed
action distributions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

DIRECTIONS = ("forward", "reverse")


def kl_diag_gaussian(mu_p: torch.Tensor, std_p: torch.Tensor, mu_q: torch.Tensor, std_q: torch.Tensor) -> torch.Tensor:
    """KL(N(μ_p, diag σ_p²) ‖ N(μ_q, diag σ_q²)), summed over the last dim (closed form, see the module doc)."""
    var_p, var_q = std_p.pow(2), std_q.pow(2)
    per_dim = torch.log(std_q / std_p) + (var_p + (mu_p - mu_q).pow(2)) / (2 * var_q) - 0.5
    return per_dim.sum(-1)


class KLGaussianDistillLoss(LossModule):
    """Distil K frozen Gaussian teachers into a multi-head Gaussian student (one head per task).

    Args:
        student_network: module reading the data (e.g. ``observation``, ``task_id``) and writing the student's
            pre-squash ``loc``/``scale`` (a :func:`~tdmt.modules.multihead.make_gaussian_actor` actor or its
            parameter part). Its parameters are the loss's parameters.
        teacher_network: module writing the teachers' ``loc``/``scale`` for each row's task (e.g. K stacked
            per-task actors). Frozen: its parameters are held as buffers (a detached view), never in
            ``loss.parameters()``, and it runs under ``no_grad``. ``None``: the data must carry the teacher's
            Gaussian under ``teacher_loc``/``teacher_scale`` (the paper's dataset targets Y = (μ_T, Σ_T)).
        direction: ``"forward"`` = KL(teacher‖student) (default), ``"reverse"`` = KL(student‖teacher).
        action_mask: optional ``[K, act_max]`` mask (:func:`tdmt.envs.action_masks`): padded action dims of task k
            are left out of its KL.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``loss_kl`` keeps the data's batch shape, e.g.
            ``[K, N]`` per-task losses).

    Returns a TensorDict with ``loss_kl``.
    """

    @dataclass
    class _AcceptedKeys:
        """Keys read by the loss (change with :meth:`set_keys`).

        Attributes:
            loc, scale: where the student (and the teacher, on its own copy of the data) write their pre-squash
                Gaussian parameters.
            teacher_loc, teacher_scale: where the teacher's Gaussian is read from (if present in the data) or
                written to after running ``teacher_network``.
            task_id: the task of each row (for ``action_mask``).
        """

        loc: NestedKey = "loc"
        scale: NestedKey = "scale"
        teacher_loc: NestedKey = ("teacher", "loc")
        teacher_scale: NestedKey = ("teacher", "scale")
        task_id: NestedKey = "task_id"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    student_network: TensorDictModule
    student_network_params: TensorDictParams
    target_student_network_params: TensorDictParams

    def __init__(self, student_network: TensorDictModule, teacher_network: TensorDictModule | None = None, *,
                 direction: Literal["forward", "reverse"] = "forward", action_mask: torch.Tensor | None = None,
                 reduction: Literal["mean", "sum", "none"] = "mean"):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction={direction!r} is not valid; valid: {list(DIRECTIONS)}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction={reduction!r} is not valid; valid: ['mean', 'sum', 'none']")
        super().__init__()
        self.direction, self.reduction = direction, reduction
        self.convert_to_functional(student_network, "student_network")
        self.teacher_network_params = None
        if teacher_network is not None:
            frozen = TensorDict.from_module(teacher_network, as_module=True).detach()
            self.teacher_network_params = TensorDictParams(frozen, no_convert=True)
            self.__dict__["teacher_network"] = teacher_network
        self.register_buffer("action_mask", None if action_mask is None else action_mask.float())

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        """No value estimator: nothing to forward."""

    @torch.no_grad()
    def teacher_gaussian(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """The teachers' ``(loc, scale)`` for every row: read from the data, else computed by the frozen teacher."""
        keys = self.tensor_keys
        if keys.teacher_loc in tensordict.keys(True) and keys.teacher_scale in tensordict.keys(True):
            return tensordict.get(keys.teacher_loc), tensordict.get(keys.teacher_scale)
        if self.teacher_network_params is None:
            raise KeyError(f"no teacher_network and no {keys.teacher_loc!r}/{keys.teacher_scale!r} in the data")
        td = tensordict.select(*self.teacher_network.in_keys, strict=True).copy()
        with self.teacher_network_params.to_module(self.teacher_network):
            td = self.teacher_network(td)
        loc, scale = td.get(keys.loc), td.get(keys.scale)
        tensordict.set(keys.teacher_loc, loc)
        tensordict.set(keys.teacher_scale, scale)
        return loc, scale

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        tensordict = tensordict.copy()
        mu_t, std_t = self.teacher_gaussian(tensordict)
        td = tensordict.select(*self.student_network.in_keys, strict=True).copy()
        with self.student_network_params.to_module(self.student_network):
            td = self.student_network(td)
        mu_s, std_s = td.get(self.tensor_keys.loc), td.get(self.tensor_keys.scale)
        if self.direction == "forward":
            per_dim_args = (mu_t, std_t, mu_s, std_s)
        else:
            per_dim_args = (mu_s, std_s, mu_t, std_t)
        kl = self._masked_kl(tensordict, *per_dim_args)
        return TensorDict({"loss_kl": self._reduce(kl)}, batch_size=[])

    def _masked_kl(self, tensordict: TensorDictBase, mu_p, std_p, mu_q, std_q) -> torch.Tensor:
        if self.action_mask is None:
            return kl_diag_gaussian(mu_p, std_p, mu_q, std_q)
        mask = self.action_mask[tensordict.get(self.tensor_keys.task_id)]
        # padded dims contribute 0: compare each distribution with itself there
        return kl_diag_gaussian(mu_p * mask, torch.where(mask > 0, std_p, std_q), mu_q * mask, std_q)

    def _reduce(self, kl: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return kl.mean()
        if self.reduction == "sum":
            return kl.sum()
        return kl
