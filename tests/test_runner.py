"""The shared runner: a cached and a freshly built zoo entry give the same stage result,
and a chain killed mid-stage resumes with ``--stage all --resume`` to the same figures."""
from __future__ import annotations

import pytest

from dafsl.config import CONFIG_DIR
from dafsl.pipeline import main
from dafsl.runs import RunDir, read_metrics

SMOKE = str(CONFIG_DIR / "smoke.yaml")
FIGURES = ("kid", "kid_std", "precision", "recall", "final_loss_g", "final_loss_d", "kid_start")


def test_cached_and_freshly_built_zoo_entries_give_the_same_augmenter(tmp_path):
    zoo_dir = tmp_path / "zoo"
    args = ["--stage", "augmenter", "--kd", "pretrained", "--config", SMOKE, "--quiet",
            "--set", f"zoo.dir={zoo_dir}"]
    fresh = main([*args, "--out", str(tmp_path / "fresh")])["augmenter"]
    assert set(fresh["zoo_build_time_by_entry_s"]) == {"augmenter-gan", "augmenter-featnet"}
    assert fresh["zoo_build_time_s"] > 0
    cached = main([*args, "--out", str(tmp_path / "cached")])["augmenter"]
    assert cached["zoo_build_time_s"] == 0 and cached["zoo_build_time_by_entry_s"] == {}
    for key in FIGURES:
        assert cached[key] == fresh[key], key
    losses = [r["loss_g"] for r in read_metrics(tmp_path / "fresh" / "metrics.jsonl")]
    assert [r["loss_g"] for r in read_metrics(tmp_path / "cached" / "metrics.jsonl")] == losses


class Killed(Exception):
    pass


def test_stage_all_resume_after_a_kill_matches_an_uninterrupted_chain(tmp_path, monkeypatch):
    args = ["--stage", "all", "--kd", "pretrained", "--config", SMOKE, "--quiet"]
    straight = main([*args, "--out", str(tmp_path / "straight")])

    log = RunDir.log

    def dies_in_classifier_epoch_2(self, record):
        log(self, record)
        if record["stage"] == "classifier" and record["epoch"] == 1:
            raise Killed  # after the record, before the epoch's checkpoint: as a kill would

    monkeypatch.setattr(RunDir, "log", dies_in_classifier_epoch_2)
    with pytest.raises(Killed):
        main.__wrapped__([*args, "--out", str(tmp_path / "killed")])
    monkeypatch.setattr(RunDir, "log", log)
    killed = RunDir(tmp_path / "killed")
    assert [r["epoch"] for r in killed.read_metrics("classifier")] == [0, 1]
    resumed = main([*args, "--out", str(tmp_path / "killed"), "--resume"])
    assert [r["epoch"] for r in killed.read_metrics("classifier")] == [0, 1]  # epoch 1 redone once
    for stage, keys in (("detector", ("test_map50", "val_map50")),
                        ("augmenter", ("kid", "precision", "final_loss_g")),
                        ("classifier", ("test_balanced_accuracy", "test_roc_auc", "system_map50"))):
        for key in keys:
            assert resumed[stage][key] == straight[stage][key], (stage, key)
    assert [r["loss"] for r in killed.read_metrics("classifier")] == \
        [r["loss"] for r in RunDir(tmp_path / "straight").read_metrics("classifier")]
