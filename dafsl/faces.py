"""Face crops, one way for every stage: framing, matching detections to annotations, and
the detector's boxes of a split, cached.

* **Framing** (:func:`crop_face`): a box becomes a square of side ``longer side x (1 +
  margin)`` around its centre (a face box is rarely square; the GAN and the classifier want
  square images), edge-replicated outside the scene, resized to ``size`` with area
  interpolation when shrinking. Real crops, the GAN's training faces, the quality
  reference and the classifier's inputs are all framed here, so real and generated faces
  differ in content, not in framing.
* **Matching** (:func:`match_detections`), the one rule: detections at or above
  ``faces.score_threshold``, taken in descending score order (the VOC convention the
  evaluator uses), each matches the free annotated face it overlaps most when that IoU
  (:func:`dafsl.evaluate.iou_matrix`, the evaluator's IoU) is at least ``faces.match_iou``.
  A face no detection matches keeps its annotated box (:func:`face_boxes`), so the Dlack
  class loses none of its few real faces and every run scores the same faces.
* **Detections** (:func:`split_detections`): the BDRP detector's boxes for every image of
  a split, cached under ``<cache>/detections/`` keyed by the checkpoint's bytes and the
  split's images; the augmenter, the classifier and the end-to-end evaluation share them.
* **Crop source** (``faces.crops``): ``detector`` (the BDRP boxes), ``gt`` (annotated boxes)
  or ``auto`` (detector when this run or ``--from`` has one, else gt; said in one line).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from dafsl.config_schema import CROP_SOURCES
from dafsl.data import Split, cache_root
from dafsl.errors import DafslError
from dafsl.evaluate import iou_matrix
from dafsl.log import get_logger, progress
from dafsl.runs import atomic_write_bytes

log = get_logger("faces")


def xywh_to_xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def xyxy_to_xywh(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def crop_face(image: np.ndarray, box_xyxy, size: int, margin: float) -> np.ndarray:
    """HxWx3 uint8 scene + (4,) xyxy box -> (size, size, 3) uint8 square face crop."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box_xyxy).reshape(4))
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    if side < 1:
        raise DafslError(f"box {[round(v, 1) for v in (x0, y0, x1, y1)]}: too small to crop")
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


def class_faces(split: Split, cls: str | None, limit: int | None = None) -> list[tuple[int, dict]]:
    """(image_id, annotation) of every face of class ``cls`` (None: every face) in
    ``split``, in annotation order; the first ``limit`` if given (<= 0 or None: all)."""
    out = [(a["image_id"], a) for a in split.coco["annotations"]
           if not a.get("iscrowd") and (cls is None or split.class_of(a) == cls)]
    return out[:limit] if limit and limit > 0 else out


def crop_faces(split: Split, faces: Sequence[tuple[int, dict]], size: int, margin: float,
               boxes: Sequence | None = None) -> np.ndarray:
    """Crop ``faces`` at their annotated boxes, or at ``boxes`` ((4,) xyxy, same order)
    -> (N, size, size, 3) uint8."""
    crops, cache = [], {}
    for i, (image_id, ann) in enumerate(faces):
        if image_id not in cache:
            cache = {image_id: split.load_image(image_id)}  # faces come grouped by scene
        box = boxes[i] if boxes is not None else xywh_to_xyxy(ann["bbox"])[0]
        crops.append(crop_face(cache[image_id], box, size, margin))
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)


def match_detections(gt_xyxy, det_xyxy, det_scores, iou_threshold: float) -> np.ndarray:
    """For each annotated box (G, 4 xyxy) the index of its detection (D, 4 xyxy), or -1.

    Detections in descending score order; each takes the free face it overlaps most when
    that IoU >= ``iou_threshold`` (the VOC convention of :mod:`dafsl.evaluate`).
    """
    gt, det = xyxy_to_xywh(gt_xyxy), xyxy_to_xywh(det_xyxy)
    match = np.full(len(gt), -1, dtype=np.int64)
    if len(gt) == 0 or len(det) == 0:
        return match
    iou = iou_matrix(det, gt)
    for d in np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable"):
        free = np.where(match < 0, iou[d], -1.0)
        g = int(free.argmax())
        if free[g] >= iou_threshold:
            match[g] = d
    return match


@dataclass
class FaceBoxes:
    """The box each face is cropped at and where it came from."""

    boxes: list[np.ndarray]                               # (4,) xyxy per face, input order
    source: str                                           # "detector" or "gt"
    missed: list[int] = field(default_factory=list)       # annotation ids kept at their GT box
    ious: list[float] = field(default_factory=list)       # IoU of each matched detection

    @property
    def from_detector(self) -> int:
        return len(self.boxes) - len(self.missed) if self.source == "detector" else 0


def face_boxes(faces: Sequence[tuple[int, dict]], detections: dict[int, dict] | None,
               score_threshold: float, iou_threshold: float) -> FaceBoxes:
    """The crop box of every face: its matching detection (the rule above) when
    ``detections`` ({image_id: {"boxes" xyxy, "scores"}}) are given, else its annotation."""
    gt_all = [xywh_to_xyxy(ann["bbox"])[0] for _, ann in faces]
    if detections is None:
        return FaceBoxes(gt_all, "gt")
    boxes: list[np.ndarray] = list(gt_all)
    out = FaceBoxes(boxes, "detector")
    by_image: dict[int, list[int]] = {}
    for k, (image_id, _) in enumerate(faces):
        by_image.setdefault(image_id, []).append(k)
    for image_id, idx in by_image.items():
        det = detections.get(image_id) or {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)}
        keep = np.asarray(det["scores"]) >= score_threshold
        dbox, dscore = np.asarray(det["boxes"]).reshape(-1, 4)[keep], np.asarray(det["scores"])[keep]
        gt = np.stack([gt_all[k] for k in idx])
        for j, m in enumerate(match_detections(gt, dbox, dscore, iou_threshold)):
            k = idx[j]
            if m < 0:
                out.missed.append(int(faces[k][1]["id"]))
            else:
                boxes[k] = dbox[m].astype(np.float64)
                out.ious.append(float(iou_matrix(xyxy_to_xywh(gt[j]), xyxy_to_xywh(dbox[m]))[0, 0]))
    return out


def crop_source(choice: str, has_detector: bool, who: str) -> str:
    """Resolve ``faces.crops`` (auto|detector|gt) given whether a detector output exists."""
    if choice not in CROP_SOURCES:
        raise DafslError(f"faces.crops: expected one of {', '.join(CROP_SOURCES)}, got {choice!r}")
    if choice == "detector" and not has_detector:
        raise DafslError(f"faces.crops detector: no detector outputs for the {who}; run the "
                         f"detector stage first or pass --from RUN_DIR")
    if choice == "auto":
        if not has_detector:
            get_logger(who).info("crops: no detector output in this run or --from; using the "
                                 "annotated boxes")
        return "detector" if has_detector else "gt"
    return choice


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def split_detections(checkpoint: Path, split: Split, device: torch.device | str,
                     cache_dir: str | None, chunk: int = 64) -> dict[int, dict]:
    """{image_id: {"boxes": (N, 4) float32 xyxy, "scores": (N,) float32}}: every box the
    detector in ``checkpoint`` reports (down to its ``box_score_thresh``) on every image of
    ``split``. Cached, keyed by the checkpoint's bytes and the split's image list."""
    checkpoint = Path(checkpoint)
    images_key = hashlib.sha1(json.dumps(split.coco["images"], sort_keys=True).encode()).hexdigest()[:12]
    name = f"{split.label.replace('/', '-')}-{images_key}-{_file_digest(checkpoint)}.npz"
    path = cache_root(cache_dir) / "detections" / name
    if path.is_file():
        try:
            with np.load(path) as data:
                ids, counts = data["image_ids"], data["counts"]
                cut = np.cumsum(counts)[:-1]
                boxes, scores = np.split(data["boxes"], cut), np.split(data["scores"], cut)
            return {int(i): {"boxes": b, "scores": s} for i, b, s in zip(ids, boxes, scores)}
        except (OSError, ValueError, KeyError):
            log.warning(f"{path}: unreadable detection cache; detecting again")
    from dafsl.detector.model import load_detector
    from dafsl.detector.predict import detect

    with torch.random.fork_rng(devices=[]):  # building the model must not move the global RNG:
        model = load_detector(checkpoint, device)  # a cache hit and a miss give the same run
    ids = split.image_ids
    out: dict[int, dict] = {}
    for start in progress(range(0, len(ids), chunk), desc=f"detect {split.label}"):
        batch_ids = ids[start:start + chunk]
        preds = detect(model, [split.load_image(i) for i in batch_ids], device, score_threshold=0.0)
        for i, p in zip(batch_ids, preds):
            out[int(i)] = {"boxes": np.asarray(p["boxes"], dtype=np.float32).reshape(-1, 4),
                           "scores": np.asarray(p["scores"], dtype=np.float32).reshape(-1)}
    buf = io.BytesIO()
    np.savez(buf, image_ids=np.asarray(list(out), dtype=np.int64),
             counts=np.asarray([len(v["scores"]) for v in out.values()], dtype=np.int64),
             boxes=np.concatenate([v["boxes"] for v in out.values()]).reshape(-1, 4),
             scores=np.concatenate([v["scores"] for v in out.values()]))
    atomic_write_bytes(path, buf.getvalue())
    return out
