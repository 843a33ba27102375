"""Self-distillation for few-shot learners (seed 000, eq. 1):
``L = L_label + alpha * L_dist`` with ``L_dist = KL(teacher || student)`` on the query
predictions of an episode. The teacher is a network of the same architecture trained
first with ``L_label`` alone; the student starts from scratch; the teacher is frozen,
in eval mode and under ``no_grad`` while the student trains.

The seed gives alpha per method (Siamese 0.1, Matching and Prototypical 0.05) and no
temperature. ``temperature`` T softens both distributions, ``softmax(logits / T)``;
the default 1 is the seed's setting. We do NOT multiply by T^2 (Hinton et al.'s
gradient-scale correction): the seed has no temperature and no such factor, and at
T = 1 the two agree. ``label_weight = 0`` is the seed's distillation-only ablation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: the seed's alpha per method (section 3)
SEED_ALPHA = {"siamese": 0.1, "matching": 0.05, "protonet": 0.05}


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(p_t || p_s) = sum_c p_t,c (log p_t,c - log p_s,c)``, averaged over the Q queries,
    with ``p = softmax(logits / T)``. Shapes (Q, way)."""
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


@torch.no_grad()
def teacher_logits(teacher, support: Tensor, support_labels: Tensor, query: Tensor) -> Tensor:
    """The frozen teacher's query logits for one episode of images: eval mode (BatchNorm
    uses and keeps its running statistics), no gradient. (The episodic trainer does the
    same on features it computes once, :meth:`EpisodicTrainer.teacher_logits`.)"""
    teacher.eval()
    teacher.process_support_set(support, support_labels)
    return teacher(query)


def freeze(teacher) -> None:
    """No parameter of ``teacher`` is trained; eval mode."""
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
