"""Pascal VOC XML: one file per image (``<filename>``, ``<object>`` with ``<name>``,
``<difficult>``, ``<bndbox> xmin ymin xmax ymax``). ``difficult`` boxes become COCO crowd
boxes (``iscrowd: 1``), which the evaluation ignores as VOC does. Boxes are read as
``[xmin, ymin, xmax - xmin, ymax - ymin]``. The object name is the class when the manifest
has a class attribute (e.g. ``male``/``female``), else the category (e.g. ``face``).

Source keys: ``root``. Splits: ``{"images": "JPEGImages", "annotations": "Annotations",
"list": "ImageSets/Main/test.txt" (optional: the image ids; default every XML file)}``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from dafsl.errors import DafslError
from dafsl.formats.common import CocoBuilder, SourceSplit

SOURCE_KEYS = ("root",)
SPLIT_KEYS = ("images", "annotations")
NEEDS_CLASS_ATTRIBUTE = None


def _text(node: ET.Element, tag: str, rec: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DafslError(f"{rec}: no <{tag}>")
    return child.text.strip()


def _float(node: ET.Element, tag: str, rec: str) -> float:
    text = _text(node, tag, rec)
    try:
        return float(text)
    except ValueError:
        raise DafslError(f"{rec}: <{tag}> is not a number ({text!r})") from None


def read(manifest: Any, split: str, spec: dict) -> SourceSplit:
    root = manifest.resolve(manifest.source["root"])
    ann_dir = root / spec["annotations"]
    if not ann_dir.is_dir():
        raise DafslError(f"{ann_dir}: VOC annotation folder not found (split {split})")
    if spec.get("list"):
        listing = root / spec["list"]
        if not listing.is_file():
            raise DafslError(f"{listing}: VOC image-set list not found (split {split})")
        files = [ann_dir / f"{ln.split()[0]}.xml" for ln in listing.read_text().splitlines() if ln.strip()]
    else:
        files = sorted(ann_dir.glob("*.xml"))
    builder = CocoBuilder(manifest, root / spec["images"])
    for path in files:
        if not path.is_file():
            raise DafslError(f"{path}: VOC annotation file not found")
        try:
            doc = ET.parse(path).getroot()
        except ET.ParseError as err:
            line, col = err.position
            raise DafslError(f"{path}: malformed XML (line {line}, column {col})") from None
        image_id = builder.add_image(_text(doc, "filename", str(path)), str(path))
        for k, obj in enumerate(doc.iter("object")):
            rec = f"{path} object {k}"
            bb = obj.find("bndbox")
            if bb is None:
                raise DafslError(f"{rec}: no <bndbox>")
            x0, y0, x1, y1 = (_float(bb, t, rec) for t in ("xmin", "ymin", "xmax", "ymax"))
            diff = obj.find("difficult")
            crowd = int(diff is not None and (diff.text or "0").strip() not in ("0", ""))
            builder.add_box(image_id, lambda w, h, b=[x0, y0, x1 - x0, y1 - y0]: b,
                            _text(obj, "name", rec), rec, iscrowd=crowd)
    return builder.result()
