"""The BDRP detector stage on the smoke config: what each transfer mode trains, exact
resume, the Denough filter, the final checkpoint and the ``detect`` library call."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

from dafsl.config import CONFIG_DIR, load_config
from dafsl.data import load_split
from dafsl.detector import backbone_state, build_detector, detect, load_detector
from dafsl.detector.data import load_scenes, to_tensor
from dafsl.detector.train import build_for_mode
from dafsl.detector.trainer import DetectorTrainer
from dafsl.engine import torch_threads
from dafsl.errors import DafslError
from dafsl.pipeline import main as pipeline_main
from dafsl.runs import load_checkpoint, save_checkpoint

SMOKE = str(CONFIG_DIR / "smoke.yaml")
BODY_BLOCKS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def smoke_cfg(*overrides: str) -> dict:
    return load_config(SMOKE, list(overrides))


@pytest.fixture(scope="module")
def scenes():
    cfg = smoke_cfg()
    split = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    return load_scenes(split, exclude_classes={"female"})[0][:16]


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    """A 5-class detector checkpoint (like the shapes zoo entry), different init."""
    torch.manual_seed(123)
    src = build_detector(smoke_cfg()["detector"], num_classes=5)
    path = tmp_path_factory.mktemp("source") / "source.pt"
    save_checkpoint({"model": src.state_dict(), "source_dataset": "shapes_tiny"}, path)
    return path


def trained_delta(cfg: dict, mode: str, scenes) -> tuple[dict, set[str], dict]:
    """Build ``mode`` from the source, take 2 SGD steps; (initial state, names of tensors
    that changed, report)."""
    model, report, _ = build_for_mode(cfg, mode)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = DetectorTrainer(model, scenes, det_cfg=cfg["detector"], mode=mode,
                              transfer_cfg=cfg["transfer"], seed=0, device=torch.device("cpu"),
                              epochs=1)
    with torch_threads(int(cfg["detector"]["num_threads"])):
        for batch in trainer.batches(0):
            trainer.train_step(batch)
    changed = {k for k, v in model.state_dict().items()
               if not torch.equal(init[k], v) and not k.endswith("num_batches_tracked")}
    return init, changed, report


def body_blocks(names: set[str]) -> set[str]:
    return {n.split(".")[2] for n in names if n.startswith("backbone.body.")}


def test_fixed_freezes_backbone_weights_and_bn_stats(scenes, source_path):
    cfg = smoke_cfg(f"transfer.source={source_path}")
    init, changed, report = trained_delta(cfg, "fixed", scenes)
    assert body_blocks(changed) == set()  # no weight and no running_mean/var moved
    assert any(k.startswith("backbone.body.") and "running_var" in k for k in init)
    for head in ("backbone.fpn.", "rpn.head.", "roi_heads.box_head.", "roi_heads.box_predictor."):
        assert any(k.startswith(head) for k in changed), head
    assert report.frozen_modules == ["backbone.body"]
    assert report.frozen_params == sum(v.numel() for k, v in init.items()
                                       if k.startswith("backbone.body.") and "running" not in k
                                       and "num_batches" not in k)


@pytest.mark.parametrize("freeze_at", [1, 3])
def test_finetune_changes_exactly_the_unfrozen_stages(scenes, source_path, freeze_at):
    cfg = smoke_cfg(f"transfer.source={source_path}", f"transfer.freeze_at={freeze_at}")
    _, changed, report = trained_delta(cfg, "finetune", scenes)
    frozen = {1: {"conv1", "bn1"}, 3: {"conv1", "bn1", "layer1", "layer2"}}[freeze_at]
    assert body_blocks(changed) == set(BODY_BLOCKS) - frozen
    assert {m.split(".")[-1] for m in report.frozen_modules} == frozen


def test_pretrained_starts_from_the_source(scenes, source_path):
    cfg = smoke_cfg(f"transfer.source={source_path}")
    source = load_checkpoint(source_path)["model"]
    model, report, meta = build_for_mode(cfg, "pretrained")
    skipped = dict(report.skipped)
    assert set(skipped) == {f"roi_heads.box_predictor.{n}.{p}" for n in ("cls_score", "bbox_pred")
                            for p in ("weight", "bias")}
    for k, v in model.state_dict().items():
        if k not in skipped:
            assert torch.equal(v, source[k]), k
    assert report.frozen_params == 0 and meta["source_dataset"] == "shapes_tiny"
    trainer = DetectorTrainer(model, scenes, det_cfg=cfg["detector"], mode="pretrained",
                              transfer_cfg=cfg["transfer"], seed=0, device=torch.device("cpu"),
                              epochs=1)
    lr = trainer.optimizer.param_groups[0]["lr"]  # lr x lr_factor x warm-up step 1
    t = cfg["transfer"]
    assert lr == pytest.approx(cfg["detector"]["lr"] * t["lr_factor"] / t["warmup_steps"])


def test_mismatched_required_layer_is_an_error(source_path, tmp_path):
    state = load_checkpoint(source_path)["model"]
    state["backbone.body.layer3.0.conv1.weight"] = torch.zeros(8, 8, 3, 3)
    save_checkpoint({"model": state}, tmp_path / "bad.pt")
    cfg = smoke_cfg(f"transfer.source={tmp_path / 'bad.pt'}")
    with pytest.raises(DafslError, match=r"backbone\.body\.layer3\.0\.conv1\.weight.*"
                                         r"\(8, 8, 3, 3\) in source vs \(256, 128, 3, 3\)"):
        build_for_mode(cfg, "finetune")


# ------------------------------------------------------------------ the stage end to end
def stage(out, *extra) -> dict:
    return pipeline_main(["--stage", "detector", "--kd", "pretrained", "--config", SMOKE,
                          "--out", str(out), "--quiet", *extra])


def detector_records(run) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if not k.endswith("_s") and k != "peak_rss_mb"}
            for r in map(json.loads, lines) if r["stage"] == "detector"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Smoke pretrained run, 2 epochs uninterrupted (builds the tiny zoo entry once)."""
    out = tmp_path_factory.mktemp("det") / "straight"
    return out, stage(out)["detector"]


def test_killed_run_resumes_to_the_same_metrics(straight_run, tmp_path, monkeypatch):
    out, straight = straight_run
    calls = {"n": 0}
    real_step = DetectorTrainer.train_step

    def dies_in_epoch_2(self, batch):
        calls["n"] += 1
        if calls["n"] > len(self.batches(0)):
            raise KeyboardInterrupt  # killed after epoch 1's checkpoint
        return real_step(self, batch)

    monkeypatch.setattr(DetectorTrainer, "train_step", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        stage(tmp_path / "killed")
    monkeypatch.setattr(DetectorTrainer, "train_step", real_step)
    resumed = stage(tmp_path / "killed", "--resume")["detector"]
    assert detector_records(tmp_path / "killed") == detector_records(out)
    assert len(detector_records(out)) == 2
    for key in ("test_map50", "test_ap50_coco", "val_map50"):
        assert resumed[key] == straight[key]


def test_stage_outputs_and_denough_filter(straight_run):
    out, summary = straight_run
    cfg = smoke_cfg()
    train = load_split(cfg["data"]["manifest"], "train", None)
    with_female = {a["image_id"] for a in train.coco["annotations"] if a["gender"] == "female"}
    assert summary["dlack_scenes_left_out"] == len(with_female) > 0
    assert summary["train_scenes"] == len(train.image_ids) - len(with_female)
    assert summary["trainable_params"] > 0 and summary["frozen_params"] == 0
    assert summary["source"] == "zoo:detector-shapes" and summary["source_dataset"] == "shapes_tiny"
    outputs = json.loads((out / "detector" / "outputs.json").read_text())
    assert outputs == {"checkpoint": "detector/detector_final.pt"}
    ckpt = load_checkpoint(out / "detector" / "detector_final.pt")
    assert set(ckpt) >= {"model", "detector_cfg"}
    # backbone_state feeds a plain torchvision ResNet: only the classifier fc is new
    net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    missing, unexpected = net.load_state_dict(backbone_state(ckpt), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []


def test_detect_returns_boxes_in_image_pixels(straight_run):
    out, _ = straight_run
    model = load_detector(out / "detector" / "detector_final.pt", "cpu")
    assert not model.training
    cfg = smoke_cfg()
    val = load_split(cfg["data"]["manifest"], "val", None)
    img = val.load_image(val.image_ids[0])  # 128 px; the smoke model works at 96 px inside
    big = np.ascontiguousarray(np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))  # 256 px
    small_res, big_res = detect(model, [img, big], "cpu", score_threshold=0.0)
    for res, size in ((small_res, 128), (big_res, 256)):
        assert res["boxes"].dtype == np.float32 and res["boxes"].shape[1] == 4
        assert len(res["boxes"]) == len(res["scores"]) > 0
        assert res["boxes"].min() >= 0 and res["boxes"].max() <= size
        assert np.all(np.diff(res["scores"]) <= 0)
    # the network's own boxes are in its 96-px input frame; detect() maps them back
    with torch.no_grad():
        images, _ = model.transform([to_tensor(img)])
        assert tuple(images.image_sizes[0]) == (96, 96)
        feats = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, feats)
        inner = model.roi_heads(feats, proposals, images.image_sizes)[0][0]
    np.testing.assert_allclose(small_res["boxes"], inner["boxes"].numpy() * 128 / 96, rtol=1e-5,
                               atol=1e-3)
    kept = detect(model, [img], "cpu", score_threshold=0.3)[0]
    assert (kept["scores"] >= 0.3).all()
    assert len(kept["scores"]) == int((small_res["scores"] >= 0.3).sum())
