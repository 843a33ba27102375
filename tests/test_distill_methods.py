"""DDGSD, TAKD, DGKD and the ensemble pseudo-teacher: losses against hand computations,
teachers untouched, the method's own weights optimised and checkpointed, chains."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dafsl.classifier.chain import run_chain
from dafsl.classifier.distill import (DDGSD, DGKD, Distiller, EnsembleKD, TAKD, build_distiller,
                                      ddgsd_terms)
from dafsl.errors import DafslError
from test_distill import Fixed  # noqa: E402  (tests/ is on sys.path under pytest)

LN3 = math.log(3.0)


class Identity(nn.Module):
    """A 'network' whose features are its input (B, D) and whose head is the identity, so
    features = logits = the input: DDGSD's terms can be computed by hand."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward_features(self, x):
        return x * self.scale

    def forward_head(self, x, pre_logits=False):
        return x

    def get_classifier(self):
        return nn.Identity()

    def forward(self, x):
        return self.forward_features(x)


# view a: logits (0, ln 3), (0, 0) -> p_a = (1/4, 3/4), (1/2, 1/2); view b: (0, 0), (0, 0)
# MMD  = |mean_a - mean_b|^2 = (0 - 0)^2 + (ln3/2 - 0)^2                      = 0.301737
# KL(p_a || p_b) = [1/4 ln(1/2) + 3/4 ln(3/2) + 0] / 2 = 0.130812 / 2          = 0.065406
# KL(p_b || p_a) = [1/2 ln(2) + 1/2 ln(2/3) + 0] / 2   = 0.143841 / 2          = 0.071921
# targets (1, 0): CE_a = [-ln 3/4 - ln 1/2] / 2 = (0.287682 + 0.693147) / 2     = 0.490415
#                 CE_b = ln 2                                                     = 0.693147
VIEW_A = [[0.0, LN3], [0.0, 0.0]]
VIEW_B = [[0.0, 0.0], [0.0, 0.0]]
TARGET = torch.tensor([1, 0])
HAND = {"loss_mmd": 0.301737, "loss_kl_ab": 0.065406, "loss_kl_ba": 0.071921,
        "loss_ce_a": 0.490415, "loss_ce_b": 0.693147}


def test_ddgsd_five_terms_match_hand_computation():
    method = build_distiller("ddgsd", Identity())
    views = torch.tensor([VIEW_A, VIEW_B])
    logits, losses = method.forward_train(views[0], TARGET, views=views)
    assert set(losses) == set(HAND)
    for k, v in HAND.items():
        assert losses[k].item() == pytest.approx(v, abs=1e-6), k
    assert torch.equal(logits, views[0])  # view a's logits are the ones returned
    sum(losses.values()).backward()  # gradients reach the network through every term
    assert method.student.scale.grad is not None and method.student.scale.grad != 0


def test_ddgsd_weights_scale_each_term():
    a, b = torch.tensor(VIEW_A), torch.tensor(VIEW_B)
    ce = torch.tensor(0.490415), torch.tensor(0.693147)
    terms = ddgsd_terms(a, b, a, b, *ce, w_mmd=0.5, w_kl=2.0, w_ce=3.0)
    assert terms["loss_mmd"].item() == pytest.approx(0.5 * 0.301737, abs=1e-6)
    assert terms["loss_kl_ab"].item() == pytest.approx(2 * 0.065406, abs=1e-6)
    assert terms["loss_kl_ba"].item() == pytest.approx(2 * 0.071921, abs=1e-6)
    assert terms["loss_ce_b"].item() == pytest.approx(3 * 0.693147, abs=1e-6)
    with pytest.raises(DafslError, match="two views"):
        build_distiller("ddgsd", Identity()).forward_train(a, TARGET)
    with pytest.raises(DafslError, match="w_kl must be >= 0"):
        build_distiller("ddgsd", Identity(), w_kl=-1.0)
    with pytest.raises(DafslError, match=r"distortion\[0\]: 'Flip2' is not an albumentations"):
        build_distiller("ddgsd", Identity(), distortion=[{"name": "Flip2"}])


# A three-model chain: A (largest), B, then the student S; T = 1, alpha = 0.5, label 0.
# p_S = (1/2, 1/2); p_A = softmax(ln 3, 0) = (3/4, 1/4); p_B = softmax(0, ln 3) = (1/4, 3/4)
# KL(p_A || p_S) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812 = KL(p_B || p_S)
# DGKD: soft = mean(0.130812, 0.130812) = 0.130812 -> loss_kd = 0.065406
# ensemble: mean logits (ln3/2, ln3/2) -> p = (1/2, 1/2) = p_S -> loss_kd = 0
# TAKD: the nearest larger model only, B: loss_kd = 0.065406 (A is not used)
# every method: loss_ce = 0.5 * ln 2 = 0.346574
CHAIN_A, CHAIN_B, STUDENT = [[LN3, 0.0]], [[0.0, LN3]], [[0.0, 0.0]]


@pytest.mark.parametrize("name, kd", [("dgkd", 0.065406), ("ensemble", 0.0), ("takd", 0.065406)])
def test_chain_losses_match_hand_computation(name, kd):
    method = build_distiller(name, Fixed(STUDENT), [Fixed(CHAIN_A), Fixed(CHAIN_B)],
                             temperature=1.0, alpha=0.5)
    _, losses = method.forward_train(torch.zeros(1, 3, 2, 2), torch.tensor([0]))
    assert losses["loss_kd"].item() == pytest.approx(kd, abs=1e-6)
    assert losses["loss_ce"].item() == pytest.approx(0.346574, abs=1e-6)


def test_takd_uses_only_the_nearest_larger_model():
    a, b = Fixed(CHAIN_A), Fixed(CHAIN_B)
    method = build_distiller("takd", Fixed(STUDENT), [a, b])
    assert list(method.teachers) == [b]
    # with B's logits changed to A's the loss changes: B is the one in use
    other = build_distiller("takd", Fixed(STUDENT), [b, a], temperature=1.0, alpha=0.5)
    assert other.teacher is a


def test_dgkd_drops_teachers_only_while_training():
    method = DGKD(Fixed(STUDENT), [Fixed(CHAIN_A), Fixed(CHAIN_B), Fixed(STUDENT)], drop_prob=0.9)
    torch.manual_seed(0)
    method.train()
    kept = [method.kept_teachers() for _ in range(50)]
    assert all(1 <= len(k) <= 3 for k in kept) and any(len(k) < 3 for k in kept)
    method.eval()
    assert method.kept_teachers() == [0, 1, 2]
    with pytest.raises(DafslError, match="drop_prob must be in"):
        DGKD(Fixed(STUDENT), [Fixed(CHAIN_A)], drop_prob=1.0)
    with pytest.raises(DafslError, match="needs a teacher .classifier.distill_chain"):
        build_distiller("ensemble", Fixed(STUDENT))


def small_net(seed: int, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 3))


@pytest.mark.parametrize("name", ["takd", "dgkd", "ensemble", "hinton"])
def test_every_larger_model_stays_frozen(name):
    """Each teacher: eval mode (BN running stats unchanged, dropout off), no grad, weights
    unchanged, while the student trains for a few steps."""
    teachers = [small_net(1, 8), small_net(2, 6)]
    for t in teachers:
        t.train()  # handed over in train mode on purpose
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    student = small_net(0)
    method = build_distiller(name, student, teachers if name != "hinton" else teachers[0])
    used = {"takd": teachers[-1:], "hinton": teachers[:1]}.get(name, teachers)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    x = torch.randn(8, 3, 8, 8)
    for _ in range(3):
        method.train()
        assert student.training and not any(t.training for t in used)
        _, losses = method.forward_train(x, torch.randint(0, 3, (8,)))
        assert losses["loss_kd"].requires_grad
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert not any(id(p) in {id(q) for t in teachers for q in t.parameters()}
                   for p in method.trainable_parameters())
    assert all(p.grad is None and not p.requires_grad for t in used for p in t.parameters())
    for t, b in zip(teachers, before):
        for k, v in t.state_dict().items():  # weights AND BatchNorm running stats
            assert torch.equal(v, b[k]), k
    assert not any(k.startswith("teachers.") for k in method.own_state_dict())


class WithHead(Distiller):
    """A method with weights of its own (a projection, as FitNets' regressors)."""

    def __init__(self, student, teacher=None, class_weight=None):
        super().__init__(student, teacher, class_weight)
        self.proj = nn.Linear(3, 3)

    def forward_train(self, image, target, **batch):
        logits = self.student(image)
        return logits, {"loss_ce": self.cross_entropy(self.proj(logits), target)}


def test_a_method_with_weights_is_optimised_moved_and_checkpointed():
    method = WithHead(small_net(0))
    names = {id(p) for p in method.trainable_parameters()}
    assert id(method.proj.weight) in names and id(method.student[0].weight) in names
    state = method.own_state_dict()
    assert set(state) == {"proj.weight", "proj.bias"}
    other = WithHead(small_net(0))
    other.load_own_state_dict({k: v + 1 for k, v in state.items()})
    assert torch.equal(other.proj.weight, method.proj.weight + 1)
    assert method.to(torch.float64).proj.weight.dtype == torch.float64  # .to() reaches the method
    with pytest.raises(DafslError, match="lacks"):
        other.load_own_state_dict({})


def test_run_chain_hands_every_larger_model_to_each_next_one():
    seen = []

    def train_one(i, name, method, teachers):
        seen.append((name, method, list(teachers)))
        return name.upper(), {"i": i}

    models, infos = run_chain(["cnn10", "cnn6", "cnn2"], "dgkd", train_one)
    assert models == ["CNN10", "CNN6", "CNN2"] and [i["i"] for i in infos] == [0, 1, 2]
    assert seen == [("cnn10", "none", []), ("cnn6", "dgkd", ["CNN10"]), ("cnn2", "dgkd", ["CNN10", "CNN6"])]
    with pytest.raises(DafslError, match="needs at least one model"):
        run_chain([], "takd", train_one)
    with pytest.raises(DafslError, match="a chain needs one of takd, dgkd, ensemble"):
        run_chain(["cnn4"], "hinton", train_one)


def test_registry_lists_every_method():
    from dafsl.classifier.distill import DISTILLERS

    assert {k: v for k, v in DISTILLERS.items()} == {
        "none": Distiller, "hinton": DISTILLERS["hinton"], "ddgsd": DDGSD, "takd": TAKD,
        "dgkd": DGKD, "ensemble": EnsembleKD}
    assert DDGSD.views == 2 and all(c.chain for c in (TAKD, DGKD, EnsembleKD))
