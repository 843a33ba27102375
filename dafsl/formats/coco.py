"""COCO JSON: ``{"root": DIR}``; each split ``{"images": SUBDIR, "annotations": FILE.json}``
relative to ``root``. Annotations carry the class attribute by name (e.g. ``gender``)."""
from __future__ import annotations

from typing import Any

from dafsl.errors import DafslError
from dafsl.formats.common import SourceSplit, read_json

SOURCE_KEYS = ("root",)
SPLIT_KEYS = ("images", "annotations")
NEEDS_CLASS_ATTRIBUTE = None  # either: the class is an attribute or the category


def validate_coco(coco: dict, manifest: Any, origin: str) -> None:
    """Check images/annotations/categories; each bad record is a one-line error."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DafslError(f"{origin}: COCO file lacks a '{key}' list")
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    images = {img["id"]: img for img in coco["images"]}
    attr, classes = manifest.class_attribute, set(manifest.classes)
    for ann in coco["annotations"]:
        aid = ann.get("id")
        if ann.get("image_id") not in images:
            raise DafslError(f"{origin}: annotation {aid} refers to unknown image_id "
                             f"{ann.get('image_id')}")
        name = cats.get(ann.get("category_id"))
        if name is None or name not in manifest.categories:
            raise DafslError(f"{origin}: annotation {aid} has unknown category "
                             f"{ann.get('category_id')!r}")
        img = images[ann["image_id"]]
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DafslError(f"{origin}: annotation {aid} has no valid bbox") from None
        if not (w > 0 and h > 0):
            raise DafslError(f"{origin}: annotation {aid} box has zero area ({w}x{h})")
        if x < 0 or y < 0 or x + w > img["width"] + 1e-6 or y + h > img["height"] + 1e-6:
            raise DafslError(f"{origin}: annotation {aid} box {[x, y, w, h]} lies outside "
                             f"its {img['width']}x{img['height']} image {img.get('file_name')}")
        if attr is not None and ann.get(attr) not in classes:
            raise DafslError(f"{origin}: annotation {aid} has unknown {attr} "
                             f"{ann.get(attr)!r} (expected one of {sorted(classes)})")


def read(manifest: Any, split: str, spec: dict) -> SourceSplit:
    root = manifest.resolve(manifest.source["root"])
    ann_path = root / spec["annotations"]
    if not ann_path.is_file():
        raise DafslError(f"{ann_path}: annotation file not found "
                         f"(manifest {manifest.path}, split {split})")
    coco = read_json(ann_path, "annotation file")
    if not isinstance(coco, dict):
        raise DafslError(f"{ann_path}: a COCO file must be a JSON object")
    validate_coco(coco, manifest, str(ann_path))
    image_dir = root / spec["images"]
    for img in coco["images"]:
        if not (image_dir / img["file_name"]).is_file():
            raise DafslError(f"{image_dir / img['file_name']}: image file not found "
                             f"(listed in {ann_path})")
    return SourceSplit(image_dir, coco, final=True)
