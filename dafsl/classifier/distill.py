"""Knowledge distillation for the classifier: one registry, one contract (as mdistiller).

A method is a small class in :data:`DISTILLERS`. Its ``forward_train(image, target,
**batch)`` returns ``(student_logits, {"loss_ce": ..., "loss_kd": ..., ...})``; the
trainer sums the dict and logs each term by name, knowing nothing about the method.
Later methods plug in by adding a class: self-distillation (seed 000) is ``hinton``
with a teacher of the student's own architecture; teacher-assistant chains (seed 004)
are successive runs whose teacher is the previous student's checkpoint, and the
ensemble variant is :class:`TeacherEnsemble`; a method that needs several distorted
views of each image (DDGSD, seed 002) sets ``views = 2`` and receives them as
``batch["views"]`` (V, B, 3, H, W) from the data pipeline.

Hinton KD convention (seed 003)
-------------------------------
    L = (1 - alpha) * CE(y, z_s) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

* KL is summed over classes and averaged over the batch ("batchmean", as in
  torchdistill, mdistiller and RepDistiller; ``F.kl_div(..., reduction="batchmean")``),
  so the soft term is on the per-sample scale of the cross-entropy.
* The soft term is multiplied by T^2 so its gradients keep their size as T changes
  (the soft targets' gradients scale as 1/T^2).
* ``loss_ce`` is logged already weighted by (1 - alpha) and ``loss_kd`` by alpha, so
  the logged terms add up to the optimised loss. Inference uses T = 1 (plain logits).
* The teacher is in ``eval()`` and runs under ``torch.no_grad()``; its parameters never
  require grad, so it cannot be updated even by mistake.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dafsl.errors import DafslError


def hinton_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 · KL(softmax(z_t/T) || softmax(z_s/T)), batchmean. Logits (B, C); returns a scalar."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    p_teacher = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * t * t


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Put ``teacher`` in eval mode with no parameter requiring grad."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class TeacherEnsemble(nn.Module):
    """Several teachers as one: the mean of their logits (B, C).

    Averaging logits rather than probabilities keeps the temperature a property of the
    distillation loss, not of the teacher; it is the log of the normalised geometric mean
    of the members' distributions at any T.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise DafslError("classifier.teacher.checkpoints: an ensemble needs at least one checkpoint")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


class Distiller:
    """Base method: the student alone, trained with (class-weighted) cross-entropy."""

    views: int = 1  # augmented views of each image the data must provide
    needs_teacher: bool = False
    # the label term's loss (logits, target) -> scalar when set (classifier.imbalance:
    # logit-adjusted or balanced-softmax cross-entropy); else the class-weighted CE
    criterion: nn.Module | None = None

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 class_weight: Tensor | None = None, **params):
        if params:
            raise DafslError(f"classifier.distill: unexpected parameters {sorted(params)} for "
                             f"{type(self).__name__}")
        if self.needs_teacher and teacher is None:
            raise DafslError(f"classifier.distill: {type(self).__name__} needs a teacher")
        self.student = student
        self.teacher = freeze_teacher(teacher) if teacher is not None else None
        self.class_weight = class_weight

    def cross_entropy(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.criterion is not None:
            return self.criterion(logits, target)
        return F.cross_entropy(logits, target, weight=self.class_weight)

    @torch.no_grad()
    def teacher_logits(self, image: Tensor) -> Tensor:
        """Teacher logits (B, C) in eval mode, without building a graph."""
        self.teacher.eval()  # the trainer's model.train() calls never reach the teacher
        return self.teacher(image)

    def forward_train(self, image: Tensor, target: Tensor, **batch) -> tuple[Tensor, dict[str, Tensor]]:
        """image (B, 3, H, W), target (B,) int64 → (student logits (B, C), named losses)."""
        logits = self.student(image)
        return logits, {"loss_ce": self.cross_entropy(logits, target)}

    def forward_test(self, image: Tensor) -> Tensor:
        return self.student(image)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad]


class HintonKD(Distiller):
    """Hinton et al. 2015 (seed 003); see the module docstring for the convention."""

    needs_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 class_weight: Tensor | None = None, temperature: float = 4.0, alpha: float = 0.5):
        super().__init__(student, teacher, class_weight)
        if not temperature > 0:
            raise DafslError(f"classifier.kd.temperature must be > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise DafslError(f"classifier.kd.alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha = float(temperature), float(alpha)

    def forward_train(self, image: Tensor, target: Tensor, **batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(image)
        soft = hinton_kd_loss(logits, self.teacher_logits(image), self.temperature)
        return logits, {"loss_ce": (1.0 - self.alpha) * self.cross_entropy(logits, target),
                        "loss_kd": self.alpha * soft}


DISTILLERS: dict[str, type[Distiller]] = {"none": Distiller, "hinton": HintonKD}


def build_distiller(name: str, student: nn.Module, teacher: nn.Module | None = None,
                    class_weight: Tensor | None = None, **params) -> Distiller:
    """Instantiate the registered method ``name`` (``classifier.distill``)."""
    if name not in DISTILLERS:
        raise DafslError(f"classifier.distill: unknown method '{name}' "
                         f"(registered: {', '.join(DISTILLERS)})")
    return DISTILLERS[name](student, teacher, class_weight, **params)
