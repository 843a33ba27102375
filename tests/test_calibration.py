"""Distribution calibration (dafsl/classifier/calibration.py, ``classifier.imbalance:
calibration``) against its formula: Tukey by hand, the calibrated Gaussian's moments,
a head that learns on separable synthetic features, determinism, the checkpoint and one
smoke run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dafsl.classifier import calibration, imbalance
from dafsl.classifier.data import FaceSet
from dafsl.classifier.model import CalibratedHead, build_classifier, load_classifier, save_classifier
from dafsl.config import load_config
from dafsl.errors import DafslError
from dafsl.pipeline import main

KW = dict(lam=0.5, alpha=0.21, mean_rule="support", samples=None, seed=0)


def _gaussians(n_base: int, n_scarce: int, seed: int, dim: int = 8, base: float = 4.0,
               scarce: float = 9.0) -> tuple[torch.Tensor, np.ndarray]:
    """Non-negative 'features' (N, dim): class 0 ~ N(base, 1), class 1 ~ N(scarce, 1) per
    dimension, clamped at 0 as post-ReLU features are."""
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([base + torch.randn(n_base, dim, generator=g),
                   scarce + torch.randn(n_scarce, dim, generator=g)]).clamp(min=0)
    return x, np.array([0] * n_base + [1] * n_scarce)


def test_tukey_by_hand():
    f = torch.tensor([[0.0, 1.0, 4.0, 9.0], [-2.0, 0.25, 16.0, 2.0]])
    torch.testing.assert_close(calibration.tukey(f, 0.5),
                               torch.tensor([[0, 1, 2, 3], [0, 0.5, 4, 2 ** 0.5]]))
    torch.testing.assert_close(calibration.tukey(f, 2.0),
                               torch.tensor([[0, 1, 16, 81], [0, 0.0625, 256, 4]]))
    # the head applies the same transform before its linear layer
    head = CalibratedHead(torch.eye(4), torch.zeros(4), 0.5)
    torch.testing.assert_close(head(f), calibration.tukey(f, 0.5))


def test_calibrated_distributions_follow_the_formula_and_samples_match_them():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(400, 3, generator=g, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.7]], dtype=torch.float64) + 2
    support = torch.tensor([[5.0, 1.0, 0.0], [7.0, 3.0, 2.0]], dtype=torch.float64)
    mu_b, sigma_b = calibration.base_statistics(base)
    np.testing.assert_allclose(mu_b.numpy(), base.numpy().mean(0))
    np.testing.assert_allclose(sigma_b.numpy(), np.cov(base.numpy().T))  # unbiased, as np.cov
    want_cov = sigma_b + 0.21 * torch.eye(3, dtype=torch.float64)

    (mean, cov), = calibration.calibrated_distributions(support, mu_b, sigma_b, 0.21, "support")
    torch.testing.assert_close(mean, torch.tensor([6.0, 2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(cov, want_cov)
    paper = calibration.calibrated_distributions(support, mu_b, sigma_b, 0.21, "paper")
    assert len(paper) == 2  # one per support sample: (mu_b + x_i) / 2, eq. 6 with k = 1
    for (m, c), x in zip(paper, support):
        torch.testing.assert_close(m, (mu_b + x) / 2)
        torch.testing.assert_close(c, want_cov)

    # 200,000 draws: the standard error of each mean is ~0.003 and of each covariance
    # entry ~0.006, so 0.02 and 0.04 are > 6 standard errors
    pts, jitter = calibration.sample_gaussian(mean, cov, 200_000, torch.Generator().manual_seed(2))
    assert jitter == 0.0 and pts.shape == (200_000, 3)
    np.testing.assert_allclose(pts.mean(0).numpy(), mean.numpy(), atol=0.02)
    np.testing.assert_allclose(np.cov(pts.numpy().T), cov.numpy(), atol=0.04)


def test_singular_covariance_gets_jitter():
    v = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    cov = v @ v.T  # rank 1: alpha = 0 with too few base faces
    chol, jitter = calibration.safe_cholesky(cov)
    assert 0 < jitter < 1e-3
    torch.testing.assert_close(chol @ chol.T, cov, atol=1e-3, rtol=0)


def test_head_learns_to_separate_the_scarce_class():
    # 5 support samples; means 4 and 6 per dimension (Bayes balanced accuracy ~0.99)
    feats, labels = _gaussians(500, 5, seed=0, scarce=6.0)
    weight, bias, info = calibration.calibrate(feats, labels, None, 2, **KW)
    assert info["dc_samples"] == 500 and info["dc_base_class"] == 0  # as many as the base class
    held, held_labels = _gaussians(2000, 2000, seed=1, scarce=6.0)
    pred = CalibratedHead(weight, bias, 0.5)(held).argmax(1).numpy()
    recall = [(pred[held_labels == c] == c).mean() for c in (0, 1)]
    assert np.mean(recall) > 0.9 and min(recall) > 0.8, recall  # measured (0.96, 1.00)


def test_same_seed_same_head_and_generated_faces_are_left_out():
    feats, labels = _gaussians(200, 4, seed=3)
    w1, b1, _ = calibration.calibrate(feats, labels, None, 2, **KW)
    w2, b2, _ = calibration.calibrate(feats, labels, None, 2, **KW)
    assert torch.equal(w1, w2) and torch.equal(b1, b2)
    w3, _, _ = calibration.calibrate(feats, labels, None, 2, **dict(KW, seed=1))
    assert not torch.equal(w1, w3)  # the seed does reach the sampler
    # generated faces (here: absurd features labelled female) change neither the
    # statistics nor the head's training set
    junk = torch.full((50, feats.shape[1]), 100.0)
    w4, b4, info = calibration.calibrate(torch.cat([feats, junk]), np.concatenate([labels, [1] * 50]),
                                         np.array([False] * len(labels) + [True] * 50), 2, **KW)
    assert torch.equal(w1, w4) and torch.equal(b1, b4) and info["dc_samples"] == 200


def test_paper_mean_splits_the_draws_over_the_support():
    feats, labels = _gaussians(100, 3, seed=4)
    _, _, info = calibration.calibrate(feats, labels, None, 2, **dict(KW, mean_rule="paper", samples=10))
    assert info["dc_samples"] == 10 and info["dc_mean"] == "paper"


def test_bad_params_are_one_line_errors():
    params = {"dc_lambda": 0.5, "dc_alpha": 0.21, "dc_mean": "support", "dc_samples": None}
    calibration.check_params(params)
    for key, bad in (("dc_lambda", 0), ("dc_alpha", -1), ("dc_mean", "both"), ("dc_samples", 0)):
        with pytest.raises(DafslError, match=f"imbalance_params.{key}"):
            calibration.check_params(dict(params, **{key: bad}))
    with pytest.raises(DafslError, match="imbalance_params.dc_alpha"):
        calibration.check_params({k: v for k, v in params.items() if k != "dc_alpha"})


def test_config_rejects_a_negative_alpha_and_an_unknown_mean():
    with pytest.raises(DafslError) as err:
        load_config(None, ["classifier.imbalance_params.dc_alpha=-1"])
    assert str(err.value) == "classifier.imbalance_params.dc_alpha: expected a number >= 0, got -1"
    with pytest.raises(DafslError, match="dc_mean: expected one of support, paper"):
        load_config(None, ["classifier.imbalance_params.dc_mean=both"])
    cfg = load_config(None, ["classifier.imbalance=calibration", "classifier.imbalance_params.dc_samples=50"])
    assert cfg["classifier"]["imbalance_params"]["dc_samples"] == 50


PARAMS = {"tau": 1.0, "crt_epochs": 1, "crt_lr": 0.01, "dc_lambda": 0.5, "dc_alpha": 0.21,
          "dc_mean": "support", "dc_samples": None}


def test_finish_head_installs_a_head_that_survives_a_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 255, (24, 16, 16, 3), dtype=np.uint8),
                    np.array([0] * 18 + [1] * 6), np.array([False] * 22 + [True] * 2))
    torch.manual_seed(0)
    model = build_classifier("resnet10", 2)
    info = imbalance.finish_head("calibration", model, faces, 2, params=PARAMS, input_size=32,
                                 batch_size=8, seed=0, epoch_size=None)
    assert isinstance(model.fc, CalibratedHead)
    assert info["dc_samples"] == 18 and info["dc_lambda"] == 0.5  # 18 real male faces
    save_classifier(model, tmp_path / "c.pt", backbone="resnet10", classes=["male", "female"],
                    input_size=32, crop_size=16)
    loaded, _ = load_classifier(tmp_path / "c.pt")
    assert isinstance(loaded.fc, CalibratedHead) and loaded.fc.tukey_lambda.item() == 0.5
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))


def test_pipeline_runs_calibration(tmp_path):
    out = main(["--stage", "classifier", "--kd", "vanilla", "--config", "configs/smoke.yaml", "--quiet",
                "--set", "faces.crops=gt", "--set", "classifier.augmentation=none",
                "--set", "classifier.epochs=1", "--set", "classifier.imbalance=calibration",
                "--out", str(tmp_path / "dc")])
    s = out["classifier"]
    assert s["imbalance"] == "calibration" and s["dc_mean"] == "support" and s["dc_samples"] > 0
    assert 0.0 <= s["test_balanced_accuracy"] <= 1.0 and s["test_roc_auc"] is not None
    model, _ = load_classifier(tmp_path / "dc" / "classifier" / "classifier_final.pt")
    assert isinstance(model.fc, CalibratedHead)
