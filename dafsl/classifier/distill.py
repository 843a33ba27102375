"""Knowledge distillation for the classifier: one registry, one contract (as mdistiller).

A method is a small ``nn.Module`` class in :data:`DISTILLERS`. Its ``forward_train(image,
target, **batch)`` returns ``(student_logits, {"loss_ce": ..., "loss_kd": ..., ...})``; the
trainer sums the dict and logs each term by name, knowing nothing about the method. The
student, the frozen teachers and any weights of the method itself are submodules: they
move with ``.to(device)``, the method's own weights are optimised
(:meth:`Distiller.trainable_parameters`) and checkpointed with the student
(:meth:`Distiller.own_state_dict`).

Registered: ``none``; ``hinton`` (seed 003, one teacher, or an ensemble of checkpoints as
:class:`TeacherEnsemble`); ``ddgsd`` (seed 002: self-distillation between two distorted
views, ``views = 2``, the views arrive as ``batch["views"]`` (2, B, 3, H, W)); and the
teacher-assistant chains of seed 004, which receive every larger model of
``classifier.distill_chain`` as ``teacher`` (large to small; :mod:`dafsl.classifier.chain`):
``takd`` (the nearest larger one), ``dgkd`` (the mean of the Hinton terms of all of them,
optional random teacher dropping), ``ensemble`` (one Hinton term against their mean logits).
Self-distillation with a teacher of the student's own architecture (seed 000) is ``hinton``
with ``teacher.backbone`` = the student's.

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


class Distiller(nn.Module):
    """Base method: the student alone, trained with (class-weighted) cross-entropy.

    An ``nn.Module``: the student, the frozen teachers (``teachers``, a ModuleList) and any
    weights of the method itself move with ``.to(device)``; :meth:`trainable_parameters`
    (the student's and the method's own) is what the optimiser gets, and
    :meth:`own_state_dict` (the method's own weights and buffers, neither the student's nor
    the teachers') is checkpointed with the student. ``train()`` never reaches the teachers.
    """

    views: int = 1  # augmented views of each image the data must provide
    needs_teacher: bool = False
    chain: bool = False  # teachers come from classifier.distill_chain (all larger models)

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None = None,
                 class_weight: Tensor | None = None, **params):
        if params:
            raise DafslError(f"classifier.distill: unexpected parameters {sorted(params)} for "
                             f"{type(self).__name__}")
        super().__init__()
        teachers = _as_list(teacher)
        if self.needs_teacher and not teachers:
            raise DafslError(f"classifier.distill: {type(self).__name__} needs a teacher"
                             + (" (classifier.distill_chain)" if self.chain else ""))
        self.student = student
        self.teachers = nn.ModuleList([freeze_teacher(t) for t in teachers])
        self.register_buffer("class_weight", class_weight, persistent=False)
        # the label term's loss (logits, target) -> scalar when set (classifier.imbalance:
        # logit-adjusted or balanced-softmax cross-entropy); else the class-weighted CE
        self.criterion: nn.Module | None = None

    @property
    def teacher(self) -> nn.Module | None:
        """The first (for one-teacher methods: the only) teacher, or None."""
        return self.teachers[0] if len(self.teachers) else None

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        for t in self.teachers:
            t.eval()
        return self

    def cross_entropy(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.criterion is not None:
            return self.criterion(logits, target)
        return F.cross_entropy(logits, target, weight=self.class_weight)

    @torch.no_grad()
    def teacher_logits(self, image: Tensor, index: int = 0) -> Tensor:
        """Logits (B, C) of teacher ``index`` in eval mode, without building a graph."""
        teacher = self.teachers[index]
        teacher.eval()  # the trainer's model.train() calls never reach the teacher
        return teacher(image)

    def forward_train(self, image: Tensor, target: Tensor, **batch) -> tuple[Tensor, dict[str, Tensor]]:
        """image (B, 3, H, W), target (B,) int64 → (student logits (B, C), named losses)."""
        logits = self.student(image)
        return logits, {"loss_ce": self.cross_entropy(logits, target)}

    def forward(self, image: Tensor) -> Tensor:
        return self.forward_test(image)

    def forward_test(self, image: Tensor) -> Tensor:
        return self.student(image)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's trainable parameters and the method's own (never a teacher's)."""
        return [p for name, p in self.named_parameters()
                if p.requires_grad and not name.startswith("teachers.")]

    def own_state_dict(self) -> dict[str, Tensor]:
        """The method's own weights and buffers (empty for hinton): checkpointed with the student."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(("student.", "teachers.", "criterion."))}

    def load_own_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.own_state_dict()) - set(state)
        unexpected = set(state) - set(self.own_state_dict())
        if missing or unexpected:
            raise DafslError(f"classifier.distill: checkpoint of {type(self).__name__} lacks "
                             f"{sorted(missing)[:3]} / has unexpected {sorted(unexpected)[:3]}")
        self.load_state_dict(state, strict=False)


class HintonKD(Distiller):
    """Hinton et al. 2015 (seed 003); see the module docstring for the convention."""

    needs_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None = None,
                 class_weight: Tensor | None = None, temperature: float = 4.0, alpha: float = 0.5):
        super().__init__(student, teacher, class_weight)
        if not temperature > 0:
            raise DafslError(f"classifier.kd.temperature must be > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise DafslError(f"classifier.kd.alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha = float(temperature), float(alpha)

    def soft_loss(self, logits: Tensor, image: Tensor) -> Tensor:
        """The (unweighted) distillation term; one teacher here."""
        return hinton_kd_loss(logits, self.teacher_logits(image), self.temperature)

    def forward_train(self, image: Tensor, target: Tensor, **batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(image)
        soft = self.soft_loss(logits, image)
        return logits, {"loss_ce": (1.0 - self.alpha) * self.cross_entropy(logits, target),
                        "loss_kd": self.alpha * soft}


def features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Pooled features (B, D) before the head and logits (B, C), in one forward pass, for a
    timm-style model (``forward_features``, ``forward_head(pre_logits=True)``,
    ``get_classifier``; :mod:`dafsl.classifier.plain_cnn` follows the same interface)."""
    if not all(hasattr(model, a) for a in ("forward_features", "forward_head", "get_classifier")):
        raise DafslError(f"classifier.distill: {type(model).__name__} exposes no features "
                         f"(needs forward_features/forward_head/get_classifier)")
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    return feats, model.get_classifier()(feats)


def ddgsd_terms(feat_a: Tensor, feat_b: Tensor, logits_a: Tensor, logits_b: Tensor,
                ce_a: Tensor, ce_b: Tensor, w_mmd: float, w_kl: float, w_ce: float) -> dict[str, Tensor]:
    """DDGSD's five weighted terms (seed 002): MMD = || mean_i h(x_ai) - mean_i h(x_bi) ||^2
    on the pooled features (B, D); KL(p_a || p_b) and KL(p_b || p_a), summed over classes,
    averaged over the batch, with gradients through both posteriors; a cross-entropy per view."""
    mmd = (feat_a.mean(dim=0) - feat_b.mean(dim=0)).pow(2).sum()
    log_a, log_b = F.log_softmax(logits_a, dim=1), F.log_softmax(logits_b, dim=1)
    # F.kl_div(log q, log p, log_target=True) = sum p (log p - log q) = KL(p || q)
    kl_ab = F.kl_div(log_b, log_a, reduction="batchmean", log_target=True)
    kl_ba = F.kl_div(log_a, log_b, reduction="batchmean", log_target=True)
    return {"loss_mmd": w_mmd * mmd, "loss_kl_ab": w_kl * kl_ab, "loss_kl_ba": w_kl * kl_ba,
            "loss_ce_a": w_ce * ce_a, "loss_ce_b": w_ce * ce_b}


class DDGSD(Distiller):
    """Data-distortion guided self-distillation (Xu & Liu, AAAI 2019; seed 002).

    One network sees two distorted views of each image (``batch["views"]`` (2, B, 3, H, W),
    made by the data pipeline with :attr:`distortion`, an albumentations pipeline built from
    ``classifier.distill_params.ddgsd.distortion``, on top of the stage's own augmentation).
    Both views go through the student in one batch (BatchNorm statistics are those of the
    2B images); the loss is the sum of :func:`ddgsd_terms`, each term logged by name. The
    logits returned (and the train accuracy) are view a's; inference is the plain student.
    """

    views = 2

    def __init__(self, student: nn.Module, teacher=None, class_weight: Tensor | None = None,
                 w_mmd: float = 1.0, w_kl: float = 1.0, w_ce: float = 1.0,
                 distortion: Sequence[dict] | None = None):
        from dafsl.classifier.distortion import DEFAULT_DISTORTION, build_distortion

        super().__init__(student, None, class_weight)
        for key, w in (("w_mmd", w_mmd), ("w_kl", w_kl), ("w_ce", w_ce)):
            if not w >= 0:
                raise DafslError(f"classifier.distill_params.ddgsd.{key} must be >= 0, got {w}")
        self.w_mmd, self.w_kl, self.w_ce = float(w_mmd), float(w_kl), float(w_ce)
        self.distortion = build_distortion(DEFAULT_DISTORTION if distortion is None else distortion)

    def forward_train(self, image: Tensor, target: Tensor, **batch) -> tuple[Tensor, dict[str, Tensor]]:
        views = batch.get("views")
        if views is None or len(views) != 2:
            raise DafslError("classifier.distill ddgsd: the batch needs two views (views = 2)")
        n = views.shape[1]
        feats, logits = features_and_logits(self.student, views.flatten(0, 1))
        terms = ddgsd_terms(feats[:n], feats[n:], logits[:n], logits[n:],
                            self.cross_entropy(logits[:n], target), self.cross_entropy(logits[n:], target),
                            self.w_mmd, self.w_kl, self.w_ce)
        return logits[:n], terms


class TAKD(HintonKD):
    """Teacher-assistant KD (Mirzadeh et al. 2020; seed 004): each model of
    ``classifier.distill_chain`` learns from the next larger one only, with Hinton's loss.
    ``teacher`` is the list of all larger models, large to small; the last one is used."""

    chain = True

    def __init__(self, student: nn.Module, teacher=None, class_weight: Tensor | None = None,
                 temperature: float = 4.0, alpha: float = 0.5):
        teachers = _as_list(teacher)
        super().__init__(student, teachers[-1:], class_weight, temperature, alpha)


class DGKD(HintonKD):
    """Densely guided KD (Son et al., ICCV 2021; seed 004): each model learns from every
    larger one; the soft term is the MEAN of the Hinton terms against each teacher, so
    ``alpha`` keeps its meaning. ``drop_prob``: while training, each teacher is left out
    of a step with this probability (at least one stays; the original's stochastic
    teacher dropping); evaluation-mode calls use all teachers."""

    chain = True

    def __init__(self, student: nn.Module, teacher=None, class_weight: Tensor | None = None,
                 temperature: float = 4.0, alpha: float = 0.5, drop_prob: float = 0.0):
        super().__init__(student, _as_list(teacher), class_weight, temperature, alpha)
        if not 0 <= drop_prob < 1:
            raise DafslError(f"classifier.distill_params.dgkd.drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)

    def kept_teachers(self) -> list[int]:
        n = len(self.teachers)
        if not (self.training and self.drop_prob > 0 and n > 1):
            return list(range(n))
        keep = torch.rand(n) >= self.drop_prob  # the global RNG: checkpointed every epoch
        if not keep.any():
            keep[torch.randint(n, ())] = True
        return keep.nonzero().flatten().tolist()

    def soft_loss(self, logits: Tensor, image: Tensor) -> Tensor:
        return torch.stack([hinton_kd_loss(logits, self.teacher_logits(image, i), self.temperature)
                            for i in self.kept_teachers()]).mean()


class EnsembleKD(HintonKD):
    """Ensemble pseudo-teacher (seed 004): the mean of all larger models' logits
    (:class:`TeacherEnsemble`) is one teacher, with one Hinton term."""

    chain = True

    def __init__(self, student: nn.Module, teacher=None, class_weight: Tensor | None = None,
                 temperature: float = 4.0, alpha: float = 0.5):
        teachers = _as_list(teacher)
        super().__init__(student, TeacherEnsemble(teachers) if teachers else None, class_weight,
                         temperature, alpha)


def _as_list(teacher) -> list[nn.Module]:
    if teacher is None:
        return []
    return list(teacher) if isinstance(teacher, (list, tuple, nn.ModuleList)) else [teacher]


DISTILLERS: dict[str, type[Distiller]] = {"none": Distiller, "hinton": HintonKD, "ddgsd": DDGSD,
                                          "takd": TAKD, "dgkd": DGKD, "ensemble": EnsembleKD}


def build_distiller(name: str, student: nn.Module, teacher: nn.Module | None = None,
                    class_weight: Tensor | None = None, **params) -> Distiller:
    """Instantiate the registered method ``name`` (``classifier.distill``)."""
    if name not in DISTILLERS:
        raise DafslError(f"classifier.distill: unknown method '{name}' "
                         f"(registered: {', '.join(DISTILLERS)})")
    return DISTILLERS[name](student, teacher, class_weight, **params)
