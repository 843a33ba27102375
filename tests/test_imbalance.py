"""The imbalance baselines (dafsl/classifier/imbalance.py) against hand computations,
cRT on a toy problem where class balance decides, and one smoke run per new value."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from dafsl.classifier import imbalance
from dafsl.classifier.model import build_classifier, load_classifier, save_classifier
from dafsl.errors import DafslError
from dafsl.pipeline import main

LOGITS = torch.tensor([[1.0, 2.0]])
TARGET = torch.tensor([0])
PRIOR_COUNTS = [800, 200]  # prior (0.8, 0.2): log(0.2 / 0.8) = -log 4


def test_logit_adjusted_loss_by_hand():
    lp = imbalance.log_prior(PRIOR_COUNTS)
    assert lp.tolist() == pytest.approx([math.log(0.8), math.log(0.2)])
    # CE(z + tau log pi, 0) = log(1 + exp((z1 - z0) + tau log(pi1/pi0))) = log(1 + e / 4^tau)
    for tau, want in ((1.0, math.log(1 + math.e / 4)), (2.0, math.log(1 + math.e / 16)),
                      (0.0, math.log(1 + math.e))):
        assert imbalance.logit_adjusted_loss(LOGITS, TARGET, lp, tau).item() == pytest.approx(want, rel=1e-6)
    # the minority target is penalised more: log(1 + exp(-(1 + log 4 ... ))) by the same rule
    minority = imbalance.logit_adjusted_loss(LOGITS, torch.tensor([1]), lp, 1.0).item()
    assert minority == pytest.approx(math.log(1 + 4 / math.e), rel=1e-6)


def test_balanced_softmax_by_hand_equals_logit_adjustment_at_tau_one():
    # -log(n0 e^z0 / (n0 e^z0 + n1 e^z1)) = log(1 + (n1/n0) e^(z1-z0)) = log(1 + e / 4)
    counts = torch.tensor(PRIOR_COUNTS, dtype=torch.float32)
    got = imbalance.balanced_softmax_loss(LOGITS, TARGET, counts).item()
    assert got == pytest.approx(math.log(1 + math.e / 4), rel=1e-6)
    plan = imbalance.plan("balanced_softmax", PRIOR_COUNTS, {"tau": 3.0, "crt_epochs": 1, "crt_lr": 0.1})
    assert plan.loss(LOGITS, TARGET).item() == pytest.approx(got, rel=1e-6)  # tau does not apply


def test_plans_per_method():
    params = {"tau": 2.0, "crt_epochs": 1, "crt_lr": 0.1}
    la = imbalance.plan("logit_adjustment", PRIOR_COUNTS, params)
    assert la.loss(LOGITS, TARGET).item() == pytest.approx(math.log(1 + math.e / 16), rel=1e-6)
    # weighted loss: weights (1000 / (2*800), 1000 / (2*200)) = (0.625, 2.5); batch of one
    # sample -> the weighted mean is the plain CE of that sample
    w = imbalance.plan("weighted_loss", PRIOR_COUNTS, params)
    assert w.loss.weight.tolist() == pytest.approx([0.625, 2.5])
    two = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    ce0, ce1 = math.log(1 + math.e), math.log(1 + 1 / math.e)
    assert w.loss(two, torch.tensor([0, 1])).item() == pytest.approx((0.625 * ce0 + 2.5 * ce1) / 3.125)
    for m in ("none", "logit_adjustment_posthoc", "crt", "ncm", "balanced_sampling"):
        p = imbalance.plan(m, PRIOR_COUNTS, params)
        assert p.loss(LOGITS, TARGET).item() == pytest.approx(ce0)  # plain CE while training
        assert p.balanced == (m == "balanced_sampling")
    with pytest.raises(DafslError, match="imbalance_params.tau"):
        imbalance.plan("logit_adjustment", PRIOR_COUNTS, dict(params, tau=-1))


def test_posthoc_adjustment_by_hand_and_folded_into_the_bias():
    lp = imbalance.log_prior(PRIOR_COUNTS)
    adj = imbalance.posthoc_adjust(LOGITS, lp, 1.0)
    assert adj.tolist()[0] == pytest.approx([1 - math.log(0.8), 2 - math.log(0.2)])
    # p(minority) = sigmoid((z1 - z0) + log 4) = 4e / (1 + 4e)
    assert adj.softmax(1)[0, 1].item() == pytest.approx(4 * math.e / (1 + 4 * math.e))

    # a raw score that prefers the majority flips to the minority after adjustment
    close = torch.tensor([[1.0, 0.0]])
    assert close.argmax(1).item() == 0 and imbalance.posthoc_adjust(close, lp).argmax(1).item() == 1

    class Faces:  # the FaceSet fields finish_head reads
        labels = np.array([0] * 800 + [1] * 200)

        def counts(self, n):
            return np.bincount(self.labels, minlength=n)

    model = build_classifier("resnet10", 2)
    before = model.fc.bias.detach().clone()
    info = imbalance.finish_head("logit_adjustment_posthoc", model, Faces(), 2,
                                 params={"tau": 0.5, "crt_epochs": 1, "crt_lr": 0.1},
                                 input_size=32, batch_size=8, seed=0, epoch_size=None)
    assert info == {"imbalance_tau": 0.5}
    assert (model.fc.bias.detach() - before).tolist() == pytest.approx(
        [-0.5 * math.log(0.8), -0.5 * math.log(0.2)], rel=1e-5)


def test_ncm_by_hand():
    # training mean (1, 1); centred (2, 0), (0, 2), (-2, -2); normalised (1, 0), (0, 1),
    # (-r, -r) with r = 1/sqrt 2; class means mu0 = (1/2, 1/2), mu1 = (-r, -r)
    feats = torch.tensor([[3.0, 1.0], [1.0, 3.0], [-1.0, -1.0]])
    labels = np.array([0, 0, 1])
    centre, centroids = imbalance.ncm_fit(feats, labels, 2)
    r = 1 / math.sqrt(2)
    assert centre.tolist() == pytest.approx([1.0, 1.0])
    assert centroids.tolist() == [pytest.approx([0.5, 0.5]), pytest.approx([-r, -r])]
    # query (4, 1): centred (3, 0), normalised (1, 0); d0 = 1/4 + 1/4, d1 = (1 + r)^2 + r^2 = 2 + sqrt 2
    query = torch.tensor([[4.0, 1.0], [0.0, 0.0]])
    scores = imbalance.ncm_scores(query, centre, centroids)
    assert scores[0].tolist() == pytest.approx([-0.5, -(2 + math.sqrt(2))], rel=1e-6)
    # (0, 0): centred (-1, -1), normalised (-r, -r): on mu1 (d1 = 0), d0 = 2 (1/2 + r)^2
    assert scores[1].tolist() == pytest.approx([-2 * (0.5 + r) ** 2, 0.0], abs=1e-6)
    # the head form gives the same scores
    head = imbalance.NCMHead(centre, centroids)
    assert head(query).tolist() == [pytest.approx(s, abs=1e-6) for s in scores.tolist()]


def test_ncm_head_survives_a_checkpoint(tmp_path):
    model = build_classifier("resnet10", 2).eval()
    feats = torch.randn(6, model.fc.in_features)
    imbalance.install_ncm_head(model, *imbalance.ncm_fit(feats, np.array([0, 0, 0, 1, 1, 1]), 2))
    x = torch.randn(3, 3, 32, 32)
    save_classifier(model, tmp_path / "c.pt", backbone="resnet10", classes=["male", "female"],
                    input_size=32, crop_size=32)
    loaded, _ = load_classifier(tmp_path / "c.pt")
    assert isinstance(loaded.fc, imbalance.NCMHead)
    torch.testing.assert_close(loaded(x), model(x))


def _toy(n_major=500, n_minor=20):
    """1-D Gaussians N(-1, 1) (class 0) and N(+1, 1) (class 1) at evenly spaced quantiles,
    plus a nuisance dimension: the balanced Bayes boundary is x = 0, an instance-balanced
    (prior-weighted) one x = log(n_major / n_minor) / 2 = 1.6."""
    def pts(n, mu, col):
        x = mu + norm.ppf((np.arange(n) + 0.5) / n)
        return np.stack([x, np.resize([-1.0, 1.0], n) * col], 1)
    feats = torch.tensor(np.concatenate([pts(n_major, -1.0, 1.0), pts(n_minor, 1.0, 0.5)]), dtype=torch.float32)
    return feats, np.array([0] * n_major + [1] * n_minor)


def test_crt_retrained_balanced_flips_a_biased_decision():
    feats, labels = _toy()
    query = torch.tensor([[0.6, 0.0]])  # nearer class 1's mean; balanced -> 1, prior-weighted -> 0
    kw = dict(epochs=40, batch_size=64, lr=0.05, seed=0, epoch_size=512)
    biased = imbalance.train_linear_head(feats, labels, 2, balanced=False, **kw)
    crt = imbalance.train_linear_head(feats, labels, 2, balanced=True, **kw)
    assert biased(query).argmax(1).item() == 0
    assert crt(query).argmax(1).item() == 1
    # the retrained boundary sits near the balanced one (x = 0), the biased one far right
    boundary = lambda h: (-(h.bias[1] - h.bias[0]) / (h.weight[1, 0] - h.weight[0, 0])).item()
    assert abs(boundary(crt)) < 0.35 and boundary(biased) > 1.0
    minority_recall = lambda h: (h(feats[labels == 1]).argmax(1) == 1).float().mean().item()
    assert minority_recall(crt) > 0.7 > 0.5 > minority_recall(biased)


def test_finish_head_crt_and_ncm_replace_the_head():
    from dafsl.classifier.data import FaceSet

    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 255, (24, 16, 16, 3), dtype=np.uint8),
                    np.array([0] * 18 + [1] * 6), np.zeros(24, dtype=bool))
    params = {"tau": 1.0, "crt_epochs": 2, "crt_lr": 0.01}
    for method in ("crt", "ncm"):
        torch.manual_seed(0)
        model = build_classifier("resnet10", 2)
        old = model.fc.weight.detach().clone()
        info = imbalance.finish_head(method, model, faces, 2, params=params, input_size=32,
                                     batch_size=8, seed=0, epoch_size=None)
        assert not torch.equal(model.fc.weight.detach(), old)
        assert isinstance(model.fc, imbalance.NCMHead) == (method == "ncm")
        assert ("crt_train_accuracy" in info) == (method == "crt")


ALONE = ["--stage", "classifier", "--kd", "vanilla", "--config", "configs/smoke.yaml", "--quiet",
         "--set", "faces.crops=gt", "--set", "classifier.augmentation=none",
         "--set", "classifier.epochs=1", "--set", "classifier.imbalance_params.crt_epochs=2"]


@pytest.mark.parametrize("method", ["logit_adjustment", "logit_adjustment_posthoc",
                                    "balanced_softmax", "crt", "ncm"])
def test_pipeline_runs_each_new_value(tmp_path, method):
    out = main([*ALONE, "--out", str(tmp_path / method), "--set", f"classifier.imbalance={method}"])
    s = out["classifier"]
    assert s["imbalance"] == method
    assert 0.0 <= s["test_balanced_accuracy"] <= 1.0 and s["test_roc_auc"] is not None
    model, _ = load_classifier(tmp_path / method / "classifier" / "classifier_final.pt")
    assert isinstance(model.fc, imbalance.NCMHead) == (method == "ncm")


def test_unknown_value_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*ALONE, "--out", str(tmp_path / "x"), "--set", "classifier.imbalance=focal"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: classifier.imbalance: expected one of") and "\n" not in err
