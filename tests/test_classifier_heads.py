"""Few-shot heads of the gender classifier (classifier.head): each runs through the
classifier stage on the smoke config, survives its checkpoint, and scores by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dafsl.classifier.heads import balanced_pairs
from dafsl.fewshot.head import SupportHead, empty_head
from dafsl.pipeline import main

ALONE = ["--stage", "classifier", "--kd", "vanilla", "--config", "configs/smoke.yaml", "--quiet",
         "--set", "faces.crops=gt", "--set", "classifier.augmentation=classic",
         "--set", "classifier.system_eval=false"]


@pytest.mark.parametrize("head", ["protonet", "matching", "siamese"])
def test_classifier_stage_with_each_few_shot_head(head, tmp_path):
    from dafsl.classifier.model import load_classifier
    from dafsl.classifier.trainer import predict_probs

    summary = main([*ALONE, "--out", str(tmp_path / head), "--set", f"classifier.head={head}"])["classifier"]
    assert summary["head"] == head and summary["head_support"] > 0
    assert 0.0 <= summary["test_balanced_accuracy"] <= 1.0
    if head == "siamese":
        assert 0.0 <= summary["head_pair_accuracy"] <= 1.0
    model, _ = load_classifier(tmp_path / head / "classifier" / "classifier_final.pt")
    assert isinstance(model.fc, SupportHead) and model.fc.method_name == head
    faces = (np.random.default_rng(0).random((4, 32, 32, 3)) * 255).astype(np.uint8)
    probs = predict_probs(model, faces, 32)
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_support_head_by_hand_and_through_a_state_dict():
    support = torch.tensor([[0., 0.], [2., 0.], [0., 3.]])
    head = SupportHead("protonet", support, torch.tensor([0, 0, 1]))
    assert head(torch.tensor([[1., 1.]])).tolist() == [[-1.0, -5.0]]  # prototypes (1,0), (0,3)
    again = empty_head({f"fc.{k}": v for k, v in head.state_dict().items()}, "fc.")
    again.load_state_dict(head.state_dict())
    assert again.method_name == "protonet" and again(torch.tensor([[1., 1.]])).tolist() == [[-1.0, -5.0]]


def test_siamese_pairs_are_class_balanced():
    labels = np.array([0] * 98 + [1] * 2)  # a 49:1 imbalance
    a, b, same = balanced_pairs(labels, 2000, torch.Generator().manual_seed(0))
    la, lb = torch.as_tensor(labels)[a], torch.as_tensor(labels)[b]
    assert torch.equal((la == lb).float(), same) and same.mean() == 0.5
    assert 0.45 < (la == 1).float().mean() < 0.55  # the rare class anchors half the pairs


def test_head_rows_in_the_imbalance_comparison():
    import importlib.util

    from dafsl.config import REPO_ROOT

    spec = importlib.util.spec_from_file_location("compare_imbalance",
                                                  REPO_ROOT / "pipelines" / "compare_imbalance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {"head-protonet", "head-matching", "head-siamese"} <= set(mod.HEAD_ROWS) and not set(mod.HEAD_ROWS) & set(mod.ROWS)
    assert mod.row_spec("head-matching")["overrides"] == [
        "classifier.augmentation=none", "classifier.imbalance=none", "classifier.head=matching"]
