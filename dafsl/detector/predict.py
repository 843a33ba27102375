"""Running a trained detector: face boxes for other stages, COCO results for scoring."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from dafsl.data import Split
from dafsl.detector.data import category_labels, to_tensor
from dafsl.evaluate import evaluate_detections


@torch.no_grad()
def _forward(model: nn.Module, images: list[np.ndarray], device, batch_size: int):
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            batch = [to_tensor(im).to(device) for im in images[start:start + batch_size]]
            yield from model(batch)
    finally:
        model.train(was_training)


@torch.no_grad()
def detect(model: nn.Module, images: list[np.ndarray], device: torch.device | str = "cpu",
           score_threshold: float = 0.5, batch_size: int = 16) -> list[dict]:
    """Face boxes for a list of (H, W, 3) uint8 RGB images (any sizes).

    Returns per image ``{"boxes": float32 (N, 4) xyxy in that image's pixels, "scores":
    float32 (N,), "labels": int64 (N,)}``, highest score first, ``score >= score_threshold``.
    """
    out = []
    for pred in _forward(model, images, device, batch_size):
        keep = pred["scores"] >= score_threshold
        out.append({"boxes": pred["boxes"][keep].cpu().numpy().astype(np.float32),
                    "scores": pred["scores"][keep].cpu().numpy().astype(np.float32),
                    "labels": pred["labels"][keep].cpu().numpy().astype(np.int64)})
    return out


def predict_coco(model: nn.Module, split: Split, device: torch.device | str = "cpu",
                 batch_size: int = 16, images: dict[int, np.ndarray] | None = None) -> list[dict]:
    """COCO results list (``image_id``, ``category_id``, xywh ``bbox``, ``score``) for
    every image of ``split``; ``images`` may hold already decoded images by id."""
    ids = split.image_ids
    to_category = {label: cid for cid, label in category_labels(split).items()}
    decoded = [images[i] if images is not None and i in images else split.load_image(i)
               for i in ids]
    results = []
    for image_id, pred in zip(ids, _forward(model, decoded, device, batch_size)):
        boxes = pred["boxes"].cpu().numpy().astype(np.float64)
        for (x1, y1, x2, y2), score, label in zip(boxes, pred["scores"].tolist(),
                                                  pred["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": to_category[int(label)],
                            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2),
                                     round(y2 - y1, 2)], "score": round(float(score), 5)})
    return results


def score_split(model: nn.Module, split: Split, device: torch.device | str = "cpu",
                batch_size: int = 16, images: dict[int, np.ndarray] | None = None,
                with_coco: bool = True) -> dict:
    """mAP@0.5 (11-point VOC, seed 001 eq. 2) and COCO AP50 of ``model`` on ``split``;
    the full :func:`dafsl.evaluate.evaluate_detections` result."""
    return evaluate_detections(split.coco, predict_coco(model, split, device, batch_size, images),
                               iou_threshold=0.5, with_coco=with_coco)


def val_subset(split: Split, n: int) -> Split:
    """``n`` evenly spaced images of ``split`` (in id order) with their annotations, as a
    :class:`Split` over the same image folder; ``n`` 0 or >= the split's size: ``split``.
    The same split and ``n`` always give the same subset."""
    ids = split.image_ids
    if n <= 0 or n >= len(ids):
        return split
    keep = {ids[i] for i in np.linspace(0, len(ids) - 1, num=n).round().astype(int)}
    coco = {**split.coco, "images": [im for im in split.coco["images"] if im["id"] in keep],
            "annotations": [a for a in split.coco["annotations"] if a["image_id"] in keep]}
    return dataclasses.replace(split, coco=coco)
