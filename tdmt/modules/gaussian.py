"""Diagonal Gaussian policies whose log-probability and entropy count only each task's real action dims.

On a padded suite task k acts with the first ``act_k`` of ``act_max`` dims (DESIGN §2, slice and mask); the
padded dims never reach the env, so they must not enter the policy-gradient log-probability or the entropy bonus.
Both distributions take ``mask`` (``[*B, act_max]``, 1 on real dims; ``None``: every dim is real) and compute

    log π(a|s) = Σ_d m_d log p_d(a_d | s),    H[π(·|s)] = Σ_d m_d H[p_d(·|s)].

* :class:`MaskedNormal` — Arora et al.'s policy as their public code runs it (jasonkrone/elen6885-final-project,
  ``distributions.DiagGaussian``): an unsquashed Gaussian N(μ, σ²); the env clips the executed action to its
  bounds. Its entropy is exact, ``H = Σ_d m_d (½ + ½ log 2π + log σ_d)`` (the public code's entropy line,
  ``0.5 + log 2π + log π(a|s)``, is not the entropy of a Gaussian: not copied).
* :class:`MaskedTanhNormal` — tdmt's earlier policy (TorchRL ``TanhNormal`` in [-1, 1]); no closed-form entropy:
  TorchRL's ``A2CLoss`` estimates it from ``rsample_and_log_prob``, masked here too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import distributions as D
from torchrl.modules import TanhNormal


def _masked_sum(per_dim: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return per_dim.sum(-1) if mask is None else (per_dim * mask).sum(-1)


class MaskedNormal(D.Independent):
    """``N(loc, diag scale²)`` over the last dim, log-probability and entropy summed over the real dims only."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor | None = None):
        # no argument checks: each is a host read of a device tensor (``scale > 0`` ...) on every forward
        super().__init__(D.Normal(loc, scale, validate_args=False), 1, validate_args=False)
        self.mask = mask

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return _masked_sum(self.base_dist.log_prob(value), self.mask)

    def entropy(self) -> torch.Tensor:
        """Exact: ``Σ_d m_d (½ + ½ log 2π + log σ_d)``."""
        per_dim = 0.5 + 0.5 * math.log(2 * math.pi) + self.base_dist.scale.log()
        return _masked_sum(per_dim.expand(self.base_dist.loc.shape), self.mask)

    @property
    def mode(self) -> torch.Tensor:
        return self.base_dist.loc

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.base_dist.loc


class MaskedTanhNormal(TanhNormal):
    """TorchRL's ``TanhNormal`` in [-1, 1] with the log-probability summed over the real dims only.

    Per dim, with ``u = atanh(a)``: ``log p_d(a_d) = log N(u_d; μ_d, σ_d) − log(1 − tanh²u_d)``, and
    ``log(1 − tanh²u) = 2 (log 2 − u − softplus(−2u))`` (the numerically stable form).
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor | None = None):
        super().__init__(loc, scale, low=-1.0, high=1.0)
        self.mask = mask

    def _log_prob_of_preimage(self, u: torch.Tensor) -> torch.Tensor:
        per_dim = self.base_dist.base_dist.log_prob(u) - 2 * (math.log(2.0) - u - F.softplus(-2 * u))
        return _masked_sum(per_dim, self.mask)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(value.dtype).eps
        return self._log_prob_of_preimage(torch.atanh(value.clamp(-1 + eps, 1 - eps)))

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple[int, ...] = ()
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample scored on its own pre-tanh value (what TorchRL's MC entropy uses)."""
        u = self.base_dist.rsample(torch.Size(sample_shape))
        return torch.tanh(u), self._log_prob_of_preimage(u)
