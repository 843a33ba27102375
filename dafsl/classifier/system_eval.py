"""End-to-end evaluation of the DA-FSL chain as a two-class detector.

On the test scenes the BDRP detector finds faces and the classifier labels each one.
Every detected box is reported once per class with score = detection score × the
classifier's probability of that class, the way a multi-class detector reports
per-class scores; ``dafsl.evaluate.evaluate_detections`` then gives per-class 11-point
AP@0.5 (seed 001, eq. 2) against the gender-labelled ground truth, and their mean
``system_map50``: the one number for the whole system.

Detections come from :func:`dafsl.faces.split_detections` (cached, shared with the
crops), so ablation runs that reuse a detector (``--from``) do not detect again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from dafsl.classifier.data import model_device, to_input
from dafsl.data import Split
from dafsl.evaluate import evaluate_detections, write_report
from dafsl.faces import crop_face, xyxy_to_xywh


def gender_ground_truth(split: Split, classes: Sequence[str]) -> dict:
    """The split's COCO ground truth with one category per class (``male``, ``female``)."""
    cat = {c: i + 1 for i, c in enumerate(classes)}
    anns = [{**a, "category_id": cat[split.class_of(a)]} for a in split.coco["annotations"]]
    return {"images": split.coco["images"], "annotations": anns,
            "categories": [{"id": i, "name": c} for c, i in cat.items()]}


@torch.no_grad()
def classify_detections(model: nn.Module, split: Split, detections: dict[int, dict],
                        classes: Sequence[str], *, crop_size: int, margin: float, input_size: int,
                        score_threshold: float, batch_size: int = 256) -> list[dict]:
    """COCO results: each detected box with score >= ``score_threshold``, once per class,
    score = detection score × p(class | crop)."""
    crops, meta = [], []
    for image_id in split.image_ids:
        det = detections.get(image_id)
        if det is None or len(det["scores"]) == 0:
            continue
        keep = det["scores"] >= score_threshold
        if not keep.any():
            continue
        img = split.load_image(image_id)
        for box, score in zip(det["boxes"][keep], det["scores"][keep]):
            crops.append(crop_face(img, box, crop_size, margin))
            meta.append((image_id, [float(v) for v in xyxy_to_xywh(box)[0]], float(score)))
    if not crops:
        return []
    model.eval()
    crops_arr = np.stack(crops)
    dev = model_device(model)
    probs = torch.cat([model(to_input(crops_arr[i:i + batch_size], input_size, dev)).softmax(dim=1).cpu()
                       for i in range(0, len(crops_arr), batch_size)]).numpy()
    return [{"image_id": image_id, "category_id": c + 1, "bbox": box, "score": score * float(p[c])}
            for (image_id, box, score), p in zip(meta, probs) for c in range(len(classes))]


def evaluate_system(model: nn.Module, split: Split, detections: dict[int, dict],
                    classes: Sequence[str], out_dir: Path, *, crop_size: int, margin: float,
                    input_size: int, score_threshold: float) -> dict:
    """Score detector + classifier on ``split``; writes ``pr_curves.png`` and ``report.md``
    into ``out_dir``. Returns {"system_map50", "system_ap50_coco", "system_ap11_<class>"}."""
    results = classify_detections(model, split, detections, classes, crop_size=crop_size,
                                  margin=margin, input_size=input_size,
                                  score_threshold=score_threshold)
    result = evaluate_detections(gender_ground_truth(split, classes), results, iou_threshold=0.5)
    write_report(result, out_dir)
    out = {"system_map50": result["map50"], "system_ap50_coco": result["ap50_coco"]}
    for name, v in result["per_class"].items():
        out[f"system_ap11_{name}"] = v["ap11"]
    return out
