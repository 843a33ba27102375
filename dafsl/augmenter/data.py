"""Face crops for the augmenter: the Dlack faces the GAN learns from, and the class
crops the zoo entries and the quality reference are built from.

Every crop goes through :func:`crop_face`: the box is widened to a square of side
``max(w, h) * (1 + margin)`` around its centre (a face box is rarely square and the
GAN wants square images), regions outside the scene are edge-replicated, and the
square is resized to the GAN resolution with area interpolation.

Dlack crops come from the trained BDRP detector (DA-FSL's data flow: the detector
finds the faces, the GAN learns from them). Each ground-truth Dlack face is matched
to a detection of its scene by IoU (one-to-one, greedy by descending IoU); a face the
detector missed is logged and cropped at its ground-truth box instead.
``augmenter.crops: gt`` skips the detector; ``auto`` uses it when this run or
``--from`` has detector outputs, else ground truth (said in one log line).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch

from dafsl.data import Split, denough_dlack
from dafsl.errors import DafslError

CROP_SOURCES = ("auto", "detector", "gt")


def xywh_to_xyxy(box: list[float]) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def crop_face(image: np.ndarray, box_xyxy: np.ndarray, size: int, margin: float) -> np.ndarray:
    """HxWx3 uint8 scene + (4,) xyxy box -> (size, size, 3) uint8 square face crop."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    if side < 1:
        raise DafslError(f"box {[round(v, 1) for v in box_xyxy]}: too small to crop")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    h, w = image.shape[:2]
    pad = max(0, -left, -top, left + s - w, top + s - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = image[top + pad: top + pad + s, left + pad: left + pad + s]
    interp = cv2.INTER_AREA if s >= size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)


def class_faces(split: Split, cls: str, limit: int | None = None) -> list[tuple[int, dict]]:
    """(image_id, annotation) of every face of class ``cls`` in ``split``, in annotation
    order; the first ``limit`` if given (``limit`` <= 0 or None: all)."""
    out = [(a["image_id"], a) for a in split.coco["annotations"] if split.class_of(a) == cls]
    return out[:limit] if limit and limit > 0 else out


def denough_classes(cfg: dict, split: Split) -> list[str]:
    """The Denough classes of ``split`` under the config's imbalance rule."""
    return denough_dlack(split.class_counts(), cfg["data"]["imbalance_threshold"],
                         origin=split.label)["denough"]


def crop_annotations(split: Split, faces: list[tuple[int, dict]], size: int, margin: float,
                     boxes: list[np.ndarray] | None = None) -> np.ndarray:
    """Crop ``faces`` (GT boxes, or ``boxes`` (4,) xyxy in the same order) -> (N, size, size, 3) uint8."""
    crops, cache = [], {}
    for i, (image_id, ann) in enumerate(faces):
        if image_id not in cache:
            cache = {image_id: split.load_image(image_id)}  # faces are grouped by scene
        box = boxes[i] if boxes is not None else xywh_to_xyxy(ann["bbox"])
        crops.append(crop_face(cache[image_id], box, size, margin))
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] (clipped) -> (N, H, W, 3) uint8."""
    x = ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a`` (n, 4) and ``b`` (m, 4) -> (n, m)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_detections(gt: np.ndarray, det: np.ndarray, iou_threshold: float) -> list[int | None]:
    """One-to-one matching, greedy by descending IoU: for each GT box (n, 4) the index of its
    detection in ``det`` (m, 4), or None where no free detection reaches ``iou_threshold``."""
    match: list[int | None] = [None] * len(gt)
    if len(gt) == 0 or len(det) == 0:
        return match
    iou = box_iou(gt, det)
    used: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        g, d = divmod(int(flat), iou.shape[1])
        if iou[g, d] < iou_threshold:
            break
        if match[g] is None and d not in used:
            match[g] = d
            used.add(d)
    return match


@dataclass
class DlackCrops:
    """The GAN's real images and where they came from."""

    images: np.ndarray                  # (N, r, r, 3) uint8
    source: str                         # "detector" or "gt"
    missed: list[int] = field(default_factory=list)   # annotation ids cropped at GT after a miss
    ious: list[float] = field(default_factory=list)   # IoU of each matched detection


def detector_crops(split: Split, faces: list[tuple[int, dict]], detect_fn: Callable,
                   size: int, margin: float, iou_threshold: float,
                   log: Callable[[str], None] = print) -> DlackCrops:
    """Crop ``faces`` at the boxes ``detect_fn(list of HxWx3 images) -> [{"boxes": (N, 4) xyxy}]``
    finds; a face without a matching detection is logged and cropped at its GT box."""
    image_ids = list(dict.fromkeys(i for i, _ in faces))
    dets = detect_fn([split.load_image(i) for i in image_ids])
    det_of = {i: np.asarray(d["boxes"], dtype=np.float32).reshape(-1, 4) for i, d in zip(image_ids, dets)}
    boxes, missed, ious = [], [], []
    for image_id in image_ids:
        mine = [(k, ann) for k, (i, ann) in enumerate(faces) if i == image_id]
        gt = np.stack([xywh_to_xyxy(ann["bbox"]) for _, ann in mine])
        dbox = det_of[image_id]
        for j, ((k, ann), m) in enumerate(zip(mine, match_detections(gt, dbox, iou_threshold))):
            if m is None:
                missed.append(int(ann["id"]))
                log(f"[augmenter] detector missed Dlack face {ann['id']} in image {image_id} "
                    f"(no detection with IoU >= {iou_threshold}); using its ground-truth box")
                boxes.append((k, gt[j]))
            else:
                ious.append(float(box_iou(gt[j:j + 1], dbox[m:m + 1])[0, 0]))
                boxes.append((k, dbox[m]))
    ordered = [b for _, b in sorted(boxes, key=lambda kb: kb[0])]
    return DlackCrops(crop_annotations(split, faces, size, margin, ordered), "detector", missed, ious)
