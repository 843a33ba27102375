"""dafsl.faces: one framing, one matching rule, and cached detections for every stage."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dafsl import faces
from dafsl.config import CONFIG_DIR, load_config
from dafsl.data import load_split
from dafsl.errors import DafslError
from dafsl.faces import (class_faces, crop_face, crop_faces, crop_source, face_boxes,
                         match_detections, split_detections, xywh_to_xyxy)

SMOKE = str(CONFIG_DIR / "smoke.yaml")


def test_crop_face_square_resized_and_filled_at_borders():
    img = np.zeros((20, 30, 3), dtype=np.uint8)
    img[5:15, 10:20] = 255  # a 10x10 white "face"
    crop = crop_face(img, [10, 5, 20, 15], size=8, margin=0.0)
    assert crop.shape == (8, 8, 3) and crop.min() == 255
    # a box at the corner with margin: the outside is filled from the edge, not black
    img2 = np.full((10, 10, 3), 100, dtype=np.uint8)
    edge = crop_face(img2, [0, 0, 4, 4], size=8, margin=1.0)
    assert edge.shape == (8, 8, 3) and (edge == 100).all()
    with pytest.raises(DafslError, match="too small"):
        crop_face(img, [3, 3, 3.2, 3.2], size=8, margin=0.0)


def test_matching_takes_detections_by_descending_score():
    gt = xywh_to_xyxy([[0, 0, 10, 10], [20, 0, 10, 10], [50, 50, 5, 5]])
    det = xywh_to_xyxy([[1, 0, 10, 10],     # IoU 9/11 = .82 with gt0, highest score
                        [0, 0, 10, 10],     # IoU 1 with gt0, but a lower score: gt0 is taken
                        [21, 1, 10, 10],    # gt1
                        [100, 100, 5, 5]])  # nothing
    assert match_detections(gt, det, [0.9, 0.8, 0.7, 0.95], 0.5).tolist() == [0, 2, -1]
    # the IoU threshold is inclusive and applies to the evaluator's IoU (9/11 here)
    assert match_detections(gt[:1], det[:1], [0.9], 9 / 11).tolist() == [0]
    assert match_detections(gt[:1], det[:1], [0.9], 9 / 11 + 1e-6).tolist() == [-1]
    assert match_detections(gt, np.zeros((0, 4)), [], 0.5).tolist() == [-1, -1, -1]


def test_face_boxes_use_matches_and_keep_missed_faces_at_their_annotation():
    split = load_split(load_config(SMOKE)["data"]["manifest"], "train")
    fs = class_faces(split, "female")
    assert len(fs) == 4
    missing = fs[1][1]["id"]
    shifted = {}
    for image_id, ann in fs:
        if ann["id"] != missing:
            box = xywh_to_xyxy(ann["bbox"])[0] + 1.0
            shifted.setdefault(image_id, []).append(box)
    dets = {i: {"boxes": np.array(b, np.float32), "scores": np.full(len(b), 0.9, np.float32)}
            for i, b in shifted.items()}
    boxes = face_boxes(fs, dets, score_threshold=0.5, iou_threshold=0.5)
    assert boxes.source == "detector" and boxes.missed == [missing] and boxes.from_detector == 3
    assert len(boxes.ious) == 3 and all(0.5 <= v < 1.0 for v in boxes.ious)
    for k, (_, ann) in enumerate(fs):
        expected = xywh_to_xyxy(ann["bbox"])[0] + (0.0 if ann["id"] == missing else 1.0)
        assert np.allclose(boxes.boxes[k], expected)
    crops = crop_faces(split, fs, 16, 0.1, boxes.boxes)
    for k, (image_id, _) in enumerate(fs):
        assert np.array_equal(crops[k], crop_face(split.load_image(image_id), boxes.boxes[k], 16, 0.1))
    # below the score threshold a detection does not count: every face keeps its annotation
    low = {i: {**d, "scores": np.full(len(d["scores"]), 0.2, np.float32)} for i, d in dets.items()}
    assert face_boxes(fs, low, 0.5, 0.5).from_detector == 0
    assert face_boxes(fs, None, 0.5, 0.5).source == "gt"


def test_crop_source_rules():
    assert crop_source("auto", True, "classifier") == "detector"
    assert crop_source("auto", False, "classifier") == "gt"
    assert crop_source("gt", True, "classifier") == "gt"
    with pytest.raises(DafslError, match="no detector outputs"):
        crop_source("detector", False, "augmenter")


def test_split_detections_are_cached_by_checkpoint_and_split(tmp_path, monkeypatch):
    from dafsl.detector.model import build_detector
    from dafsl.runs import save_checkpoint

    cfg = load_config(SMOKE)
    split = load_split(cfg["data"]["manifest"], "val")
    torch.manual_seed(0)
    ckpt = tmp_path / "det.pt"
    save_checkpoint({"model": build_detector(cfg["detector"]).state_dict(),
                     "detector_cfg": cfg["detector"], "num_classes": 1}, ckpt)
    first = split_detections(ckpt, split, "cpu", str(tmp_path / "cache"))
    assert set(first) == set(split.image_ids)

    import dafsl.detector.model as model_module

    def no_detector(*a, **k):
        raise AssertionError("detected again instead of reading the cache")

    monkeypatch.setattr(model_module, "load_detector", no_detector)
    again = split_detections(ckpt, split, "cpu", str(tmp_path / "cache"))
    for i in first:
        assert np.array_equal(first[i]["boxes"], again[i]["boxes"])
        assert np.array_equal(first[i]["scores"], again[i]["scores"])
    # another checkpoint is another cache entry
    other = tmp_path / "det2.pt"
    other.write_bytes(ckpt.read_bytes() + b"")
    save_checkpoint({"model": build_detector(cfg["detector"]).state_dict(),
                     "detector_cfg": cfg["detector"], "num_classes": 1, "tag": 1}, other)
    with pytest.raises(AssertionError, match="detected again"):
        split_detections(other, split, "cpu", str(tmp_path / "cache"))
    assert faces.CROP_SOURCES == ("auto", "detector", "gt")
