"""YOLO text labels: ``images/<split>/NAME.jpg`` with ``labels/<split>/NAME.txt``, one line
per box ``class_id cx cy w h`` normalised to [0, 1]; an image without a label file has no
boxes (YOLO's background images). The class list is a text file (one name per line, line k
is class id k) or a ``data.yaml`` with ``names``. A name is the class when the manifest has
a class attribute (e.g. ``male``/``female``), else the category.

Source keys: ``root``, ``classes`` (the class-list file). Splits: ``{"images":
"images/val", "labels": "labels/val"}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dafsl.errors import DafslError
from dafsl.formats.common import IMAGE_SUFFIXES, CocoBuilder, SourceSplit

SOURCE_KEYS = ("root", "classes")
SPLIT_KEYS = ("images", "labels")
NEEDS_CLASS_ATTRIBUTE = None


def class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DafslError(f"{path}: YOLO class list not found (source.classes)")
    if path.suffix in (".yaml", ".yml"):
        try:
            names = (yaml.safe_load(path.read_text()) or {}).get("names")
        except (yaml.YAMLError, AttributeError):
            raise DafslError(f"{path}: invalid YAML or no 'names'") from None
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list) or not names:
            raise DafslError(f"{path}: 'names' must be a non-empty list or id -> name mapping")
        return [str(n) for n in names]
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not names:
        raise DafslError(f"{path}: the class list is empty")
    return names


def read(manifest: Any, split: str, spec: dict) -> SourceSplit:
    root = manifest.resolve(manifest.source["root"])
    classes_file = root / manifest.source["classes"]
    names = class_names(classes_file)
    image_dir, label_dir = root / spec["images"], root / spec["labels"]
    if not image_dir.is_dir():
        raise DafslError(f"{image_dir}: YOLO image folder not found (split {split})")
    builder = CocoBuilder(manifest, image_dir)
    for img in sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = img.relative_to(image_dir)
        image_id = builder.add_image(str(rel), str(img))
        label_file = (label_dir / rel).with_suffix(".txt")
        if not label_file.is_file():
            continue
        for n, line in enumerate(label_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            rec = f"{label_file} line {n}"
            parts = line.split()
            try:
                cid, cx, cy, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
            except (ValueError, IndexError, TypeError):
                raise DafslError(f"{rec}: expected 'class_id cx cy w h', got {line.strip()!r}") from None
            if len(parts) != 5:
                raise DafslError(f"{rec}: expected 5 values 'class_id cx cy w h', got {len(parts)}")
            if not 0 <= cid < len(names):
                raise DafslError(f"{rec}: class id {cid} outside the {len(names)} classes of "
                                 f"{classes_file.name} (0..{len(names) - 1})")
            builder.add_box(image_id, lambda w, h, b=(cx, cy, bw, bh): [
                (b[0] - b[2] / 2) * w, (b[1] - b[3] / 2) * h, b[2] * w, b[3] * h], names[cid], rec)
    return builder.result()
