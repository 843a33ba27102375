"""The augmenter stage end to end on the smoke config: outputs, summary, metrics,
resume equality (growth phase and alpha included), Dlack crops from the detector,
and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dafsl.augmenter.trainer import GanTrainer
from dafsl.config import CONFIG_DIR, load_config
from dafsl.data import load_split
from dafsl.pipeline import main
from dafsl.runs import load_checkpoint, read_metrics, save_checkpoint

SMOKE = str(CONFIG_DIR / "smoke.yaml")
TIMING = {"epoch_time_s", "wall_clock_s", "eval_time_s", "peak_rss_mb"}


def run_stage(out: Path, mode: str, *extra: str) -> dict:
    return main(["--stage", "augmenter", "--kd", mode, "--config", SMOKE, "--out", str(out),
                 "--quiet", *extra])


@pytest.fixture(scope="module")
def vanilla_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aug") / "vanilla"
    run_stage(out, "vanilla")
    return out


def test_smoke_run_writes_faces_manifest_summary_and_metrics(vanilla_run):
    summary = json.loads((vanilla_run / "summary.json").read_text())["augmenter"]
    for key in ("train_time_s", "final_loss_g", "final_loss_d", "kid", "kid_std", "precision",
                "recall", "trainable_params", "frozen_params", "zoo_build_time_s", "generated"):
        assert key in summary, key
    assert summary["crops"] == "gt" and summary["real_faces"] == 4 and summary["final_resolution"] == 16
    outputs = json.loads((vanilla_run / "augmenter" / "outputs.json").read_text())
    manifest = json.loads((vanilla_run / outputs["generated_manifest"]).read_text())
    assert manifest["synthetic"] is True and manifest["class"] == "female"
    assert manifest["count"] == 12 == len(manifest["images"]) == summary["generated"]
    assert manifest["resolution"] == 16
    pngs = sorted((vanilla_run / outputs["generated_dir"]).glob("*.png"))
    assert [p.name for p in pngs] == manifest["images"]
    g = load_checkpoint(vanilla_run / outputs["generator"])
    assert g["resolution"] == 16 and "blocks.0.dense.weight" in g["model"]
    from dafsl.data import read_image

    # 4 real crops (left) beside 4 generated faces (right), one row, 3x upscaled
    side = read_image(vanilla_run / "augmenter" / "real_vs_generated.png")
    h, w = side.shape[:2]
    assert h % 3 == 0 and w > 2 * h
    assert not np.array_equal(side[:, : w // 2 - 9], side[:, w - (w // 2 - 9):])
    # the Denough fill from the source GAN: as many as the Dlack fill, the other class
    denough = json.loads((vanilla_run / outputs["generated_denough_manifest"]).read_text())
    assert denough["class"] == "male" and denough["count"] == 12 == summary["generated_denough"]
    # the selected snapshot: the lowest validation KID of the evaluations from
    # select_after (0.5) x 5 epochs on, i.e. 0-based epoch >= 2
    kids = {r["epoch"] + 1: r["kid"] for r in read_metrics(vanilla_run / "metrics.jsonl", "augmenter")
            if "kid" in r and r["epoch"] >= 2}
    assert summary["select"] == "best_val_kid" and summary["selected_epoch"] == min(kids, key=kids.get)
    assert {"kid_test", "kid_real_crops", "kid_real_crops_test", "kid_degraded"} <= summary.keys()
    assert sorted(p.name for p in (vanilla_run / "augmenter" / "samples").glob("*.png")) == [
        "epoch0002.png", "epoch0004.png", "epoch0005.png"]
    records = read_metrics(vanilla_run / "metrics.jsonl", "augmenter")
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    for r in records:
        assert {"loss_g", "loss_d", "d_real", "d_fake", "epoch_time_s", "wall_clock_s",
                "resolution", "alpha", "growth_phase"} <= r.keys()
        # loss_d is the sum of D's real and fake BCE terms (DCGAN example)
        assert r["loss_d"] == pytest.approx(r["loss_d_real"] + r["loss_d_fake"], rel=1e-6)
    # growth: 4 px stable, 8 px fading in, 8 px, 16 px fading in, 16 px
    assert [(r["resolution"], r["alpha"]) for r in records] == [(4, 1.0), (8, 1.0), (8, 1.0), (16, 1.0), (16, 1.0)]
    assert [r["growth_phase"] for r in records] == ["stable", "stable", "stable", "full", "full"]
    assert [("kid" in r) for r in records] == [False, True, False, True, True]


class Interrupted(RuntimeError):
    pass


def test_resumed_run_matches_an_uninterrupted_one(vanilla_run, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    original = GanTrainer.evaluate

    def crash_after_epoch_1(self, epoch):
        if epoch == 2:  # epoch 2 (8 px) trained but never checkpointed: lost, redone on resume
            raise Interrupted("simulated crash")
        return original(self, epoch)

    monkeypatch.setattr(GanTrainer, "evaluate", crash_after_epoch_1)
    with pytest.raises(Interrupted):
        run_stage(out, "vanilla")
    state = load_checkpoint(out / "checkpoints" / "augmenter_last.pt")
    assert state["epoch"] == 1 and state["trainer"]["step"] == 4
    # after 4 steps (1 stable epoch at 4 px, 1 fade epoch) the next step is 8 px, alpha 1
    assert (state["trainer"]["level"], state["trainer"]["alpha"]) == (1, 1.0)
    monkeypatch.setattr(GanTrainer, "evaluate", original)
    run_stage(out, "vanilla", "--resume")

    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
    assert strip(read_metrics(out / "metrics.jsonl", "augmenter")) == \
        strip(read_metrics(vanilla_run / "metrics.jsonl", "augmenter"))
    a = load_checkpoint(vanilla_run / "augmenter" / "generator_ema.pt")["model"]
    b = load_checkpoint(out / "augmenter" / "generator_ema.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = json.loads((vanilla_run / "summary.json").read_text())["augmenter"]
    sb = json.loads((out / "summary.json").read_text())["augmenter"]
    assert (sa["kid"], sa["precision"], sa["recall"]) == (sb["kid"], sb["precision"], sb["recall"])
    for name in ("gen_00000.png", "gen_00011.png"):
        assert (vanilla_run / "augmenter" / "generated" / name).read_bytes() == \
            (out / "augmenter" / "generated" / name).read_bytes()


def test_pretrained_smoke_run_starts_grown_from_the_source_gan(tmp_path):
    summary = run_stage(tmp_path / "pre", "pretrained")["augmenter"]
    assert summary["transfer"]["n_loaded"] == len(summary["transfer"]["loaded"]) > 0
    assert summary["frozen_params"] == 0
    records = read_metrics(tmp_path / "pre" / "metrics.jsonl", "augmenter")
    assert {r["resolution"] for r in records} == {16}
    assert records[0]["lr_g"] < records[-1]["lr_g"]  # warm-up of the pretrained mode


def test_fewer_than_two_dlack_crops_is_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_stage(tmp_path / "one", "vanilla", "--set", "augmenter.shots=1")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least 2" in err and "female" in err


def test_detector_crops_without_a_detector_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_stage(tmp_path / "nodet", "vanilla", "--set", "faces.crops=detector")
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "no detector outputs" in err and len(err.splitlines()) == 1


def test_stage_crops_through_a_real_detector_checkpoint(tmp_path):
    """Wiring through dafsl.detector.model.load_detector + predict.detect (an untrained
    detector: whatever it misses is logged and cropped at the ground-truth box)."""
    from dafsl.detector.model import build_detector

    cfg = load_config(SMOKE)
    prev = tmp_path / "det-run"
    torch.manual_seed(0)
    save_checkpoint({"model": build_detector(cfg["detector"]).state_dict(),
                     "detector_cfg": cfg["detector"], "num_classes": 1},
                    prev / "detector" / "detector_final.pt")
    (prev / "detector" / "outputs.json").write_text(json.dumps({"checkpoint": "detector/detector_final.pt"}))
    summary = run_stage(tmp_path / "aug", "vanilla", "--from", str(prev), "--set", "augmenter.epochs=1",
                        "--set", "faces.crops=detector")["augmenter"]
    assert summary["crops"] == "detector" and summary["real_faces"] == 4
    female_ids = {a["id"] for a in load_split(cfg["data"]["manifest"], "train").coco["annotations"]
                  if a["gender"] == "female"}
    assert set(summary["detector_missed"]) <= female_ids
