"""Losses of weight-shared training: inplace / teacher distillation with temperature.

The max net trains on the labels with label smoothing (``F.cross_entropy(..., label_smoothing=0.1)``);
the other SubNets learn the max net's (or a frozen teacher's) detached soft predictions:
``T² · CE(softmax(z_teacher / T), log_softmax(z_student / T))`` — DεpS's ``inplace_distillation`` loss,
equal to the KL divergence up to the teacher's (constant) entropy.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["distillation_loss", "soft_targets"]


def soft_targets(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Detached ``softmax(logits / T)``: the targets the other SubNets distill from."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.softmax(logits.detach().float() / temperature, dim=-1)


def distillation_loss(student_logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """``T² · mean_i CE(targets_i, softmax(student_i / T))`` with soft ``targets`` from :func:`soft_targets`.

    The ``T²`` keeps gradient magnitudes comparable across temperatures (Hinton et al.).

    Example::

        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0]])
        >>> round(float(distillation_loss(z, soft_targets(z))), 4)   # = entropy of softmax([2, 0])
        0.3653
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.cross_entropy(student_logits.float() / temperature, targets) * (temperature * temperature)
