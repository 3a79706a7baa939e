"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a compressed model fine-tuned against its parent's
temperature-softened outputs as well as the labels.

    loss = (1 - alpha) * task_loss(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 keeps the soft term's gradients on the scale of the hard term's whatever the temperature. A
multi-label set has no softmax over classes: each class is its own yes/no, so the soft term is the binary
cross-entropy of sigmoid(student / T) against sigmoid(teacher / T), also times T^2 (its minimum is not zero
but the teacher's entropy, a constant that moves no gradient).

The teacher sees exactly the student's input (after augmentation and mixup), in eval mode, without gradients.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DistillConfig

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, student logits, target)


def soft_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float, multilabel: bool) -> torch.Tensor:
    """T^2 x the divergence of the student's softened outputs from the teacher's, averaged over the batch
    (and over classes for multi-label sets, as BCEWithLogitsLoss averages)."""
    t = temperature
    if multilabel:
        return F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * t * t
    log_p_student = F.log_softmax(student / t, dim=1)
    log_p_teacher = F.log_softmax(teacher / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, task_loss: Callable,
                 alpha: float, temperature: float, multilabel: bool = False) -> torch.Tensor:
    """(1 - alpha) task_loss(student, target) + alpha T^2 soft_term (see the module docstring)."""
    hard = task_loss(student, target)
    if alpha == 0:
        return hard
    return (1 - alpha) * hard + alpha * soft_term(student, teacher.detach(), temperature, multilabel)


def frozen(teacher: nn.Module) -> nn.Module:
    """The teacher in eval mode (no dropout, BatchNorm's running statistics) with no parameter trained."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def objective(task_loss: Callable, teacher: Optional[nn.Module], cfg: Optional[DistillConfig],
              multilabel: bool, autocast: Callable[[], ContextManager] = nullcontext) -> Objective:
    """The training loss as a function of (input, student logits, target): the task loss alone, or with
    distillation from `teacher` when `cfg.enabled` (the teacher is frozen here; its forward pass runs under
    `autocast()`, the student's mixed precision, as it is no cheaper than the student's)."""
    if teacher is None or cfg is None or not cfg.enabled:
        return lambda x, logits, target: task_loss(logits, target)
    teacher = frozen(teacher)

    def loss(x: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast():
            teacher_logits = teacher(x).float()  # (B, C), the same (augmented, mixed) input as the student's
        return distill_loss(logits, teacher_logits, target, task_loss, cfg.alpha, cfg.temperature, multilabel)

    return loss
