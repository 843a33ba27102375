"""End-to-end evaluation of the DA-FSL chain as a two-class detector.

On the test scenes the BDRP detector finds faces and the classifier labels each one.
Every detected box is reported once per class with score = detection score × the
classifier's probability of that class, the way a multi-class detector reports
per-class scores; ``dafsl.evaluate.evaluate_detections`` then gives per-class 11-point
AP@0.5 (seed 001, eq. 2) against the gender-labelled ground truth, and their mean
``system_map50``: the one number for the whole system.

Detections of a split are cached under ``<cache>/detections/``, keyed by the detector
checkpoint's bytes and the split's images, so ablation runs that reuse a detector
(``--from``) do not detect again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from dafsl.classifier.data import crop_face, to_input, xyxy_to_xywh
from dafsl.data import Split, cache_root
from dafsl.evaluate import evaluate_detections, write_report


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def split_detections(detector: nn.Module, checkpoint: Path, split: Split, device: torch.device,
                     score_threshold: float, cache_dir: str | None, quiet: bool = True,
                     chunk: int = 64) -> dict[int, dict]:
    """{image_id: {"boxes": (N, 4) float32 xyxy, "scores": (N,) float32}} for every image of
    ``split`` with score >= ``score_threshold``; read from the cache when present."""
    from dafsl.detector.predict import detect
    from dafsl.runs import atomic_write_bytes

    images_key = hashlib.sha1(json.dumps(split.coco["images"], sort_keys=True).encode()).hexdigest()[:12]
    name = f"{split.label.replace('/', '-')}-{images_key}-{_file_digest(checkpoint)}-{score_threshold:g}.npz"
    path = cache_root(cache_dir) / "detections" / name
    if path.is_file():
        with np.load(path) as data:
            ids, counts = data["image_ids"], data["counts"]
            boxes, scores = np.split(data["boxes"], np.cumsum(counts)[:-1]), np.split(data["scores"], np.cumsum(counts)[:-1])
        return {int(i): {"boxes": b, "scores": s} for i, b, s in zip(ids, boxes, scores)}
    ids = split.image_ids
    out: dict[int, dict] = {}
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(ids), chunk), desc=f"detect {split.label}", disable=quiet, leave=False):
        batch_ids = ids[start:start + chunk]
        preds = detect(detector, [split.load_image(i) for i in batch_ids], device,
                       score_threshold=score_threshold)
        for i, p in zip(batch_ids, preds):
            out[int(i)] = {"boxes": np.asarray(p["boxes"], dtype=np.float32).reshape(-1, 4),
                           "scores": np.asarray(p["scores"], dtype=np.float32).reshape(-1)}
    import io

    buf = io.BytesIO()
    np.savez(buf, image_ids=np.asarray(list(out), dtype=np.int64),
             counts=np.asarray([len(v["scores"]) for v in out.values()], dtype=np.int64),
             boxes=np.concatenate([v["boxes"] for v in out.values()]).reshape(-1, 4),
             scores=np.concatenate([v["scores"] for v in out.values()]))
    atomic_write_bytes(path, buf.getvalue())
    return out


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
        for box, score in zip(xyxy_to_xywh(det["boxes"][keep]), det["scores"][keep]):
            crops.append(crop_face(img, box, crop_size, margin))
            meta.append((image_id, [float(v) for v in box], float(score)))
    if not crops:
        return []
    model.eval()
    crops_arr = np.stack(crops)
    probs = torch.cat([model(to_input(crops_arr[i:i + batch_size], input_size)).softmax(dim=1)
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
