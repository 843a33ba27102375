"""What every format reader shares: one record structure and one place that checks it.

A reader turns its files into a :class:`SourceSplit`: a COCO ground-truth dict (the
structure the project uses for every source: ``images``, ``annotations`` with the class
attribute by name, ``categories``) plus the image folder the ``file_name`` values are
relative to. While reading, each image and annotation carries where it came from
(``_where``: "file line 12") and, for annotations, a ``_box(width, height)`` function, so
that image sizes are read (PIL, header only) after the split's selection, for the images
that are used. :func:`finalize` does that, checks every box against its image and strips
the private keys; every bad record is a one-line :class:`DafslError` naming file and record.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image, UnidentifiedImageError

from dafsl.errors import DafslError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EPS = 1e-3  # tolerance for boxes touching the border after float conversions


@dataclass
class SourceSplit:
    """A read split: ``coco`` (COCO dict), its ``image_dir``, ``skipped`` reasons -> counts,
    ``selection`` (what a ``select``/``subset`` spec chose, or None); ``final``: already
    checked, no private keys (a COCO source)."""

    image_dir: Path
    coco: dict
    skipped: dict = field(default_factory=dict)
    selection: dict | None = None
    final: bool = False


class CocoBuilder:
    """Collects images and boxes with their source records; labels resolve through the
    manifest: with a class attribute the label is a class (category = the first category),
    without one it is a category name."""

    def __init__(self, manifest: Any, image_dir: Path):
        self.image_dir = image_dir
        self.attr = manifest.class_attribute
        self.classes = manifest.classes
        self.categories = [{"id": i + 1, "name": n} for i, n in enumerate(manifest.categories)]
        self._cat_id = {c["name"]: c["id"] for c in self.categories}
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.skipped: dict[str, int] = {}

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def add_image(self, file_name: str, where: str, **extra) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": None, "height": None,
                            "_where": where, **extra})
        return image_id

    def add_box(self, image_id: int, box: Callable[[int, int], list[float]], label: str,
                where: str, iscrowd: int = 0) -> None:
        """``box(width, height) -> [x, y, w, h]`` in pixels, evaluated once the size is known."""
        ann = {"id": len(self.annotations) + 1, "image_id": image_id, "iscrowd": int(iscrowd),
               "_box": box, "_where": where}
        if self.attr is not None:
            if label not in self.classes:
                raise DafslError(f"{where}: unknown {self.attr} {label!r} "
                                 f"(expected one of {', '.join(self.classes)})")
            ann["category_id"] = self.categories[0]["id"]
            ann[self.attr] = label
        else:
            if label not in self._cat_id:
                raise DafslError(f"{where}: unknown category {label!r} "
                                 f"(expected one of {', '.join(self._cat_id)})")
            ann["category_id"] = self._cat_id[label]
        self.annotations.append(ann)

    def result(self) -> SourceSplit:
        coco = {"images": self.images, "annotations": self.annotations,
                "categories": self.categories}
        return SourceSplit(self.image_dir, coco, dict(self.skipped))


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) from the file header; a missing or unreadable image is one line."""
    if not path.is_file():
        raise DafslError(f"{path}: image file not found ({where})")
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError):
        raise DafslError(f"{path}: cannot read image (corrupt or not an image) ({where})") from None


def check_box(box: list[float], width: int, height: int, where: str, file_name: str) -> list[float]:
    """A box must have positive size and lie inside its image (within :data:`EPS`)."""
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        raise DafslError(f"{where}: box has zero size ({w:g}x{h:g}) in {file_name}")
    if x < -EPS or y < -EPS or x + w > width + EPS or y + h > height + EPS:
        raise DafslError(f"{where}: box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside its "
                         f"{width}x{height} image {file_name}")
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if (x0, y0, x1, y1) == (x, y, x + w, y + h):
        return [x, y, w, h]  # as given: a converted file keeps the source's numbers
    return [x0, y0, x1 - x0, y1 - y0]


def finalize(src: SourceSplit) -> SourceSplit:
    """Read the sizes of the images still in the split, check and fix every box, drop the
    private keys; the result is a plain COCO dict any COCO tool can read."""
    if src.final:
        return src
    images = {img["id"]: img for img in src.coco["images"]}
    for img in images.values():
        path = src.image_dir / img["file_name"]
        if img["width"] is None:
            img["width"], img["height"] = image_size(path, img["_where"])
        elif not path.is_file():
            raise DafslError(f"{path}: image file not found ({img['_where']})")
    for ann in src.coco["annotations"]:
        img = images[ann["image_id"]]
        ann["bbox"] = check_box(ann.pop("_box")(img["width"], img["height"]), img["width"],
                                img["height"], ann.pop("_where"), img["file_name"])
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    for img in images.values():
        img.pop("_where", None)
    src.final = True
    return src


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DafslError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        line = getattr(err, "lineno", None)
        raise DafslError(f"{path}: invalid JSON{f' (line {line})' if line else ''}") from None


def split_range(spec: dict, where: str, default_stop: int) -> tuple[int, int]:
    """``{"range": [start, stop]}`` (stop exclusive); no range: everything."""
    rng = spec.get("range")
    if rng is None:
        return 0, default_stop
    if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) for v in rng)
            and 0 <= rng[0] <= rng[1]):
        raise DafslError(f"{where}: range must be [start, stop] with 0 <= start <= stop, got {rng!r}")
    return rng[0], rng[1]


def need_keys(spec: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in spec]
    if missing:
        raise DafslError(f"{where}: missing key(s) {', '.join(missing)}")
