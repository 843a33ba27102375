"""The whole chain on the smoke config: ``--stage all``, then the classifier alone reusing
that run's detector and augmenter through ``--from`` (nothing retrained)."""
from __future__ import annotations

import json

import pytest

from dafsl.errors import DafslError
from dafsl.pipeline import main
from dafsl.runs import read_metrics

SMOKE = ["--config", "configs/smoke.yaml", "--quiet"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("all") / "run"
    summary = main(["--stage", "all", "--kd", "pretrained", "--out", str(out), *SMOKE])
    return out, summary


def test_stage_all_runs_the_chain(full_run):
    out, summary = full_run
    assert set(summary) >= {"detector", "augmenter", "classifier"}
    stages = {r["stage"] for r in read_metrics(out / "metrics.jsonl")}
    assert {"detector", "augmenter", "classifier"} <= stages
    c = summary["classifier"]
    # the classifier took the BDRP backbone of this very run, and the generated faces
    assert c["source"] == f"detector:{out / 'detector' / 'detector_final.pt'}"
    assert c["transfer"]["n_loaded"] > 0 and c["frozen_params"] == 0
    assert c["generated_used"] == summary["augmenter"]["generated"] > 0
    assert c["train_counts"]["female"] == 4 + c["generated_used"]
    assert c["crops"] == "detector"
    # the real-vs-generated check is reported whenever generated faces were used
    assert 0.0 <= c["train_recall_female_real"] <= 1.0
    assert 0.0 <= c["train_recall_female_generated"] <= 1.0
    for key in ("test_accuracy", "test_balanced_accuracy", "test_recall_female",
                "test_precision_female", "test_f1_macro", "test_roc_auc", "system_map50",
                "system_ap11_male", "system_ap11_female"):
        assert 0.0 <= c[key] <= 1.0, key
    assert sum(map(sum, c["test_confusion"])) == c["test_n_male"] + c["test_n_female"]
    assert c["system_map50"] == pytest.approx((c["system_ap11_male"] + c["system_ap11_female"]) / 2)
    records = read_metrics(out / "metrics.jsonl", "classifier")
    assert [r["epoch"] for r in records] == [0, 1]
    assert all("val_balanced_accuracy" in r and "val_confusion" in r for r in records)
    outputs = json.loads((out / "classifier" / "outputs.json").read_text())
    from dafsl.classifier.model import load_classifier

    model, meta = load_classifier(out / outputs["checkpoint"])
    assert meta["classes"] == ["male", "female"] and meta["crop_size"] == 16
    assert (out / outputs["confusion_png"]).read_bytes()[:4] == b"\x89PNG"
    system_md = (out / "classifier" / "system_eval" / "report.md").read_text()
    assert f"(mean over classes with GT): {c['system_map50']:.4f}" in system_md


def test_from_reuses_detector_and_augmenter_without_retraining(full_run, tmp_path):
    first, _ = full_run
    out = tmp_path / "again"
    summary = main(["--stage", "classifier", "--kd", "fixed", "--from", str(first), "--out", str(out),
                    "--set", "classifier.augmentation=gan", "--set", "classifier.imbalance=weighted_loss",
                    *SMOKE])
    stages = {r["stage"] for r in read_metrics(out / "metrics.jsonl")}
    assert stages == {"classifier"}  # no detector or augmenter epoch was trained here
    assert not (out / "detector").exists() and not (out / "augmenter").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["classifier_last.pt"]
    c = summary["classifier"]
    assert c["source"] == f"detector:{first / 'detector' / 'detector_final.pt'}"
    assert c["generated_used"] > 0 and c["augmentation"] == "gan"
    assert c["frozen_params"] > 0 and c["transfer"]["trainable_modules"] == ["fc"]


def test_from_repeats_the_chains_classifier_exactly(full_run, tmp_path):
    """Same seed and config: the classifier run alone on the chain's outputs gives the
    chain's classifier metrics (every stage starts from the seed)."""
    first, summary = full_run
    again = main(["--stage", "classifier", "--kd", "pretrained", "--from", str(first),
                  "--out", str(tmp_path / "c"), *SMOKE])["classifier"]
    for key in ("test_balanced_accuracy", "test_roc_auc", "system_map50"):
        assert again[key] == summary["classifier"][key], key
    losses = [r["loss"] for r in read_metrics(first / "metrics.jsonl", "classifier")]
    assert [r["loss"] for r in read_metrics(tmp_path / "c" / "metrics.jsonl", "classifier")] == losses


def test_gan_augmentation_needs_augmenter_outputs(tmp_path):
    with pytest.raises(SystemExit) as exc:  # main is wrapped: a DafslError exits with 2
        main(["--stage", "classifier", "--kd", "vanilla", "--out", str(tmp_path / "r"), *SMOKE,
              "--set", "faces.crops=gt"])
    assert exc.value.code == 2
    with pytest.raises(DafslError, match="no augmenter outputs"):
        main.__wrapped__(["--stage", "classifier", "--kd", "vanilla", "--out", str(tmp_path / "r"),
                          *SMOKE, "--set", "faces.crops=gt"])

