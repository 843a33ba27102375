"""Every classifier.distill method runs in the gender stage (smoke config, tiny), and a
teacher-assistant chain killed while training its second model resumes to the same
figures as an uninterrupted one."""
from __future__ import annotations

import pytest

from dafsl.classifier.trainer import ClassifierTrainer
from dafsl.errors import DafslError
from dafsl.config import load_config
from dafsl.pipeline import main
from dafsl.runs import read_metrics

ALONE = ["--stage", "classifier", "--kd", "vanilla", "--config", "configs/smoke.yaml", "--quiet",
         "--set", "faces.crops=gt", "--set", "classifier.augmentation=classic",
         "--set", "classifier.probe=false", "--set", "classifier.epochs=1",
         "--set", "classifier.distill_chain=[cnn4, cnn3]"]
TERMS = {"none": {"loss_ce"}, "hinton": {"loss_ce", "loss_kd"}, "takd": {"loss_ce", "loss_kd"},
         "dgkd": {"loss_ce", "loss_kd"}, "ensemble": {"loss_ce", "loss_kd"},
         "ddgsd": {"loss_mmd", "loss_kl_ab", "loss_kl_ba", "loss_ce_a", "loss_ce_b"}}


def test_every_method_runs_in_the_gender_stage(tmp_path):
    for method, terms in TERMS.items():
        out = tmp_path / method
        summary = main([*ALONE, "--set", f"classifier.distill={method}",
                        "--set", "classifier.teacher.backbone=cnn4", "--out", str(out)])["classifier"]
        assert summary["distill"] == method
        student = [r for r in read_metrics(out / "metrics.jsonl") if r["stage"] == "classifier"]
        assert terms <= set(student[0]), method
        assert student[0]["loss"] == pytest.approx(sum(student[0][k] for k in terms), rel=1e-6)
        if method in ("takd", "dgkd", "ensemble"):
            chain = summary["chain"]
            assert [(c["model"], c["distill"]) for c in chain] == [("cnn4", "none"), ("cnn3", method)]
            assert all((out / "classifier" / f"chain{i}_{c['model']}.pt").is_file() for i, c in enumerate(chain))
            assert summary["chain_train_time_s"] == pytest.approx(sum(c["train_time_s"] for c in chain))


def test_a_chain_method_needs_a_chain():
    with pytest.raises(DafslError, match=r"^classifier.distill_chain: expected at least one model"):
        load_config("configs/smoke.yaml", ["classifier.distill=dgkd", "classifier.distill_chain=[]"])


class Killed(KeyboardInterrupt):
    pass


def test_chain_killed_in_its_second_model_resumes_to_the_same_figures(tmp_path, monkeypatch):
    args = [*ALONE, "--set", "classifier.distill=dgkd", "--set", "classifier.teacher.epochs=2",
            "--set", "classifier.distill_params.dgkd.drop_prob=0.5",
            "--set", "classifier.distill_chain=[cnn4, cnn3, cnn2]"]
    straight = main([*args, "--out", str(tmp_path / "a")])["classifier"]

    evaluate = ClassifierTrainer.evaluate

    def kill_in_second_model(self, epoch):
        if self.stage == "classifier_chain1" and epoch == 1:
            raise Killed  # after epoch 0's checkpoint of the second model
        return evaluate(self, epoch)

    monkeypatch.setattr(ClassifierTrainer, "evaluate", kill_in_second_model)
    with pytest.raises(Killed):
        main.__wrapped__([*args, "--out", str(tmp_path / "b")])
    stages = [r["stage"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert stages == ["classifier_chain0", "classifier_chain0", "classifier_chain1"]
    monkeypatch.setattr(ClassifierTrainer, "evaluate", evaluate)
    resumed = main([*args, "--out", str(tmp_path / "b"), "--resume"])["classifier"]
    for key in ("test_balanced_accuracy", "test_roc_auc", "test_confusion"):
        assert resumed[key] == straight[key], key
    a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [(r["stage"], r["epoch"], r["loss"]) for r in a] == [(r["stage"], r["epoch"], r["loss"]) for r in b]
    assert [c["val_balanced_accuracy"] for c in resumed["chain"]] == \
        [c["val_balanced_accuracy"] for c in straight["chain"]]
