"""Face crops, detector-box matching, generated faces and the per-epoch order."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from dafsl.classifier.data import (EpochBatches, FaceSet, classic_augmentation, epoch_order,
                                   generated_faces, split_faces, to_input)
from dafsl.classifier.model import IMAGENET_MEAN, IMAGENET_STD
from dafsl.data import load_split
from dafsl.errors import DafslError


def test_split_faces_use_detector_boxes_and_keep_missed_faces():
    split = load_split("synthfaces_tiny", "val")
    classes = ["male", "female"]
    fcfg = {"score_threshold": 0.5, "match_iou": 0.5, "margin": 0.1}
    gt_faces, gt_stats = split_faces(split, classes, 16, fcfg)
    assert gt_stats == {"faces": len(split.coco["annotations"]), "from_detector": 0,
                        "from_gt": len(split.coco["annotations"])}
    assert gt_faces.images.shape[1:] == (16, 16, 3)
    # a fake detector that finds every face of the first image, shifted by 2 px, and one
    # low-scoring duplicate that must be ignored
    first = split.image_ids[0]
    boxes = np.array([[a["bbox"][0] + 2, a["bbox"][1], a["bbox"][0] + a["bbox"][2] + 2,
                       a["bbox"][1] + a["bbox"][3]] for a in split.annotations(first)])
    dets = {first: {"boxes": np.concatenate([boxes, boxes]),
                    "scores": np.r_[np.full(len(boxes), 0.9), np.full(len(boxes), 0.2)]}}
    faces, stats = split_faces(split, classes, 16, fcfg, dets)
    n_first = len(split.annotations(first))
    assert stats["from_detector"] == n_first and stats["faces"] == gt_stats["faces"]
    assert np.array_equal(faces.labels, gt_faces.labels)  # same faces, same labels
    assert not np.array_equal(faces.images[:n_first], gt_faces.images[:n_first])
    assert np.array_equal(faces.images[n_first:], gt_faces.images[n_first:])


def test_generated_faces_are_read_and_resized(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"g{i}.png"), np.full((16, 16, 3), 40 * i, dtype=np.uint8))
    (tmp_path / "generated.json").write_text(json.dumps(
        {"synthetic": True, "class": "female", "resolution": 16, "images": ["g0.png", "g1.png", "g2.png"],
         "count": 3}))
    gen = generated_faces(tmp_path / "generated.json", tmp_path, ["male", "female"], 8, limit=2)
    assert gen.images.shape == (2, 8, 8, 3) and gen.labels.tolist() == [1, 1] and gen.synthetic.all()
    (tmp_path / "bad.json").write_text(json.dumps({"class": "cat", "images": ["g0.png"]}))
    with pytest.raises(DafslError, match="class 'cat'"):
        generated_faces(tmp_path / "bad.json", tmp_path, ["male", "female"], 8)


def test_epoch_order_deterministic_and_balanced():
    labels = np.array([0] * 95 + [1] * 5)
    a = epoch_order(labels, 3, seed=7, balanced=True, epoch_size=4000)
    assert np.array_equal(a, epoch_order(labels, 3, seed=7, balanced=True, epoch_size=4000))
    assert not np.array_equal(a, epoch_order(labels, 4, seed=7, balanced=True, epoch_size=4000))
    share = (labels[a] == 1).mean()
    assert 0.45 < share < 0.55  # 5 % of the data, half of the draws
    # with generated faces in the scarce class: half of its draws are its 5 real faces
    labels2 = np.array([0] * 95 + [1] * 5 + [1] * 90)
    synthetic = np.r_[np.zeros(100, dtype=bool), np.ones(90, dtype=bool)]
    b = epoch_order(labels2, 0, seed=7, balanced=True, epoch_size=8000, synthetic=synthetic)
    assert 0.47 < (labels2[b] == 1).mean() < 0.53
    assert 0.22 < (~synthetic[b] & (labels2[b] == 1)).mean() < 0.28
    perm = epoch_order(labels, 0, seed=7, balanced=False)
    assert sorted(perm.tolist()) == list(range(100))
    assert len(epoch_order(labels, 0, seed=7, balanced=False, epoch_size=250)) == 250


def test_batches_drop_a_single_leftover_and_normalise():
    faces = FaceSet(np.full((9, 8, 8, 3), 255, dtype=np.uint8), np.zeros(9, dtype=np.int64),
                    np.zeros(9, dtype=bool))
    batches = EpochBatches(faces, np.arange(9), batch_size=4, input_size=16, augment=None)
    sizes = [b["image"].shape for b in batches]
    assert len(batches) == 2 and sizes == [(4, 3, 16, 16)] * 2  # 4 + 4, the lone 9th is dropped
    x = to_input(faces.images[:1], 8)
    expect = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 0, 0], expect)


def test_classic_augmentation_is_seeded():
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    a = classic_augmentation(5)
    out1 = [a(image=img)["image"] for _ in range(3)]
    a.set_random_seed(5)
    out2 = [a(image=img)["image"] for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(out1, out2))
    assert any(not np.array_equal(x, img) for x in out1)
