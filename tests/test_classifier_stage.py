"""The classifier stage alone (annotated-box crops, no detector or augmenter needed):
resume, distillation with a trained teacher and with an ensemble of checkpoints."""
from __future__ import annotations

import pytest

from dafsl.pipeline import main
from dafsl.runs import read_metrics

ALONE = ["--stage", "classifier", "--kd", "vanilla", "--config", "configs/smoke.yaml", "--quiet",
         "--set", "faces.crops=gt", "--set", "classifier.augmentation=classic"]


def test_resumed_classifier_equals_uninterrupted(tmp_path):
    straight = main([*ALONE, "--out", str(tmp_path / "a")])["classifier"]
    assert straight["crops"] == "gt" and "system_map50" not in straight  # no detector: no system eval
    main([*ALONE, "--out", str(tmp_path / "b"), "--set", "classifier.epochs=1"])
    resumed = main([*ALONE, "--out", str(tmp_path / "b"), "--resume"])["classifier"]
    for key in ("test_balanced_accuracy", "test_roc_auc", "test_confusion"):
        assert resumed[key] == straight[key], key
    a = read_metrics(tmp_path / "a" / "metrics.jsonl", "classifier")
    b = read_metrics(tmp_path / "b" / "metrics.jsonl", "classifier")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_hinton_teacher_trained_first_or_an_ensemble_of_checkpoints(tmp_path):
    kd = [*ALONE, "--set", "classifier.distill=hinton"]
    trained = main([*kd, "--out", str(tmp_path / "t")])["classifier"]
    records = read_metrics(tmp_path / "t" / "metrics.jsonl")
    assert [r["stage"] for r in records] == ["classifier_teacher", "classifier", "classifier"]
    assert "loss_kd" not in records[0]  # the teacher itself trains on labels only
    assert all(r["loss"] == pytest.approx(r["loss_ce"] + r["loss_kd"]) for r in records[1:])
    assert trained["teacher_backbone"] == "resnet18"  # larger than the resnet10 student
    teacher = tmp_path / "t" / "classifier" / "teacher_final.pt"
    assert trained["teacher"] == str(teacher)

    members = [tmp_path / "t" / "classifier" / "classifier_final.pt", teacher]
    ensemble = main([*kd, "--out", str(tmp_path / "e"),
                     "--set", f"classifier.teacher.checkpoints=[{members[0]}, {members[1]}]"])
    assert ensemble["classifier"]["teacher"] == [str(m) for m in members]
    assert {r["stage"] for r in read_metrics(tmp_path / "e" / "metrics.jsonl")} == {"classifier"}
