"""Distillation: the Hinton loss against a value computed by hand, the teacher kept in
eval mode without gradients, ensembles, and the registry contract."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dafsl.classifier.data import FaceSet
from dafsl.classifier.distill import (DISTILLERS, Distiller, HintonKD, TeacherEnsemble,
                                      build_distiller, hinton_kd_loss)
from dafsl.classifier.trainer import ClassifierTrainer
from dafsl.errors import DafslError


class Fixed(nn.Module):
    """A 'network' whose logits are given: lets the loss be checked by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.logits + 0 * self.dummy


# Two samples, T = 2, alpha = 0.25.
# sample 1: student (1, 2), teacher (2, 0), label 0
#   p_t = softmax((1, 0))   = (0.731059, 0.268941)
#   p_s = softmax((.5, 1))  = (0.377541, 0.622459)
#   KL  = .731059 ln(.731059/.377541) + .268941 ln(.268941/.622459) = 0.257403
#   CE  = -ln softmax((1, 2))_0 = ln(1 + e) = 1.313262
# sample 2: student (0, 0), teacher (3, 3), label 1: KL = 0, CE = ln 2 = 0.693147
# soft = T^2 * (0.257403 + 0) / 2 (batchmean) = 0.514806
# loss_kd = alpha * soft = 0.128702 ; loss_ce = (1 - alpha) * (1.313262 + 0.693147) / 2 = 0.752403
STUDENT = [[1.0, 2.0], [0.0, 0.0]]
TEACHER = [[2.0, 0.0], [3.0, 3.0]]
TARGET = torch.tensor([0, 1])


def test_hinton_loss_matches_hand_computation():
    soft = hinton_kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature=2.0)
    assert soft.item() == pytest.approx(0.514806, abs=1e-6)
    kd = HintonKD(Fixed(STUDENT), Fixed(TEACHER), temperature=2.0, alpha=0.25)
    logits, losses = kd.forward_train(torch.zeros(2, 3, 4, 4), TARGET)
    assert set(losses) == {"loss_ce", "loss_kd"}
    assert losses["loss_kd"].item() == pytest.approx(0.128702, abs=1e-6)
    assert losses["loss_ce"].item() == pytest.approx(0.752403, abs=1e-6)
    assert torch.equal(logits, torch.tensor(STUDENT))


def test_soft_term_is_scaled_by_t_squared():
    # for nearly equal logits KL ~ ||p_t - p_s||^2 / (2 p): its T^2-scaled value tends to a
    # constant as T grows, while the unscaled KL shrinks like 1/T^2 (Hinton et al., sec. 2.1)
    s, t = torch.tensor([[0.1, -0.1]]), torch.tensor([[-0.1, 0.1]])
    scaled = [hinton_kd_loss(s, t, T).item() for T in (10.0, 20.0, 40.0)]
    assert scaled[0] == pytest.approx(scaled[2], rel=0.01)
    # T = 1: plain KL between the softmaxes
    p_t, p_s = torch.softmax(t, 1)[0], torch.softmax(s, 1)[0]
    kl = sum(float(a) * math.log(float(a) / float(b)) for a, b in zip(p_t, p_s))
    assert hinton_kd_loss(s, t, 1.0).item() == pytest.approx(kl, rel=1e-5)


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_teacher_stays_in_eval_mode_without_gradients():
    student, teacher = small_net(0), small_net(1)
    teacher.train()  # handed over in train mode on purpose
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kd = build_distiller("hinton", student, teacher, temperature=4.0, alpha=0.5)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    opt = torch.optim.SGD(kd.trainable_parameters(), lr=0.1)
    x = torch.randn(8, 3, 8, 8)
    for _ in range(3):
        student.train()
        teacher.train()  # even if someone flips it, the teacher forward runs in eval mode
        _, losses = kd.forward_train(x, torch.randint(0, 2, (8,)))
        assert losses["loss_kd"].requires_grad  # gradient flows into the student ...
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert all(p.grad is None for p in teacher.parameters())  # ... never into the teacher
    for k, v in teacher.state_dict().items():  # BN running stats untouched, weights unchanged
        assert torch.equal(v, before[k]), k
    # eval mode: dropout off, so two teacher calls agree
    assert torch.equal(kd.teacher_logits(x), kd.teacher_logits(x))
    assert not kd.teacher_logits(x).requires_grad


def test_ensemble_averages_member_logits():
    ens = TeacherEnsemble([Fixed([[1.0, 3.0]]), Fixed([[3.0, -1.0]])])
    assert torch.equal(ens(torch.zeros(1)), torch.tensor([[2.0, 1.0]]))
    with pytest.raises(DafslError, match="at least one checkpoint"):
        TeacherEnsemble([])


def test_registry_errors_are_one_line():
    with pytest.raises(DafslError, match="unknown method 'fitnet'.*none, hinton"):
        build_distiller("fitnet", small_net(0))
    with pytest.raises(DafslError, match="needs a teacher"):
        build_distiller("hinton", small_net(0))
    with pytest.raises(DafslError, match="alpha must be in"):
        build_distiller("hinton", small_net(0), small_net(1), alpha=1.5)


class TwoViewConsistency(Distiller):
    """A stand-in for a DDGSD-like method: it asks the data for two views per image."""

    views = 2

    def forward_train(self, image, target, **batch):
        v1, v2 = batch["views"]
        l1, l2 = self.student(v1), self.student(v2)
        return l1, {"loss_ce": self.cross_entropy(l1, target) + self.cross_entropy(l2, target),
                    "loss_views": (l1.softmax(1) - l2.softmax(1)).pow(2).sum(1).mean()}


def test_new_method_plugs_in_without_touching_the_trainer(monkeypatch):
    monkeypatch.setitem(DISTILLERS, "two_view", TwoViewConsistency)
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8),
                    np.array([0] * 8 + [1] * 4), np.zeros(12, dtype=bool))
    student = small_net(0)
    method = build_distiller("two_view", student)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    import albumentations as A

    trainer = ClassifierTrainer("classifier", method, opt, sched, faces, faces, ["male", "female"],
                                "female", seed=0, batch_size=6, input_size=8, balanced=True,
                                epoch_size=12, augment=A.Compose([A.HorizontalFlip(p=0.5)], seed=0))
    batch = next(iter(trainer.batches(0)))
    assert batch["views"].shape == (2, 6, 3, 8, 8)
    logged = {k: float(v) for k, v in trainer.train_step(batch).items()}
    assert {"loss", "loss_ce", "loss_views", "train_accuracy"} <= set(logged)
    assert logged["loss"] == pytest.approx(logged["loss_ce"] + logged["loss_views"], rel=1e-6)
