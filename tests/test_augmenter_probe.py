"""The real-vs-generated probe (cross-validated ROC-AUC) and the degradation chain."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dafsl.augmenter.degrade import check_params, degrade_faces
from dafsl.augmenter.probe import probe_auc, stratified_folds
from dafsl.errors import DafslError

TINY = dict(backbone="resnet10", input_size=16, steps=20, batch_size=16, lr=0.003,
            weight_decay=0.0, folds=2, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
DEGRADE = {"enabled": True, "blur_prob": 1.0, "blur_sigma": [1.0, 1.0], "noise_std": [8.0, 8.0],
           "jpeg_prob": 1.0, "jpeg_quality": [40, 40]}


def faces(n: int, seed: int, colour_noise: float = 0.0) -> np.ndarray:
    """Smooth random 16 px 'faces'; ``colour_noise`` adds per-pixel colour noise (grey levels)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 200, (n, 1, 1, 3)) + rng.normal(0, 20, (n, 4, 4, 3)).repeat(4, 1).repeat(4, 2)
    return np.clip(base + rng.normal(0, colour_noise, base.shape), 0, 255).astype(np.uint8)


def test_stratified_folds_cover_every_index_once_with_both_classes():
    labels = np.array([0] * 7 + [1] * 5)
    parts = stratified_folds(labels, 3, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(12))
    assert all(set(labels[p]) == {0, 1} for p in parts)


def test_probe_separates_what_differs_by_construction():
    out = probe_auc(faces(32, 0), faces(32, 1, colour_noise=60.0), **TINY)
    assert out["auc"] > 0.9 and len(out["auc_folds"]) == 2 and out["real"] == out["generated"] == 32


def test_probe_is_near_chance_on_one_distribution():
    out = probe_auc(faces(32, 2), faces(32, 3), **TINY)
    assert 0.25 < out["auc"] < 0.75


def test_probe_needs_a_face_per_fold():
    with pytest.raises(DafslError, match="probe"):
        probe_auc(faces(1, 0), faces(10, 1), **TINY)


def test_degradation_removes_colour_noise_and_keeps_size_and_seed():
    noisy = faces(8, 4, colour_noise=40.0)
    out = degrade_faces(noisy, np.array([40.0]), DEGRADE, seed=0)
    assert out.shape == noisy.shape and out.dtype == np.uint8
    # blur + 4:2:0 JPEG at 40 px: the pixel-to-pixel colour noise is much smaller
    rough = lambda x: np.abs(np.diff(x.astype(float), axis=2)).mean()  # noqa: E731
    assert rough(out) < 0.6 * rough(noisy)
    np.testing.assert_array_equal(out, degrade_faces(noisy, np.array([40.0]), DEGRADE, seed=0))
    off = {**DEGRADE, "enabled": False}
    assert degrade_faces(noisy, np.array([40.0]), off, seed=0) is noisy


def test_degradation_params_are_checked():
    with pytest.raises(DafslError, match="augmenter.degrade.jpeg_quality"):
        check_params({**DEGRADE, "jpeg_quality": [90, 40]})
    with pytest.raises(DafslError, match="augmenter.degrade.blur_prob"):
        check_params({**DEGRADE, "blur_prob": 2})
