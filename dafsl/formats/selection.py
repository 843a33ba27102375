"""Exact class counts and test subsets for few-shot experiments, from a split's spec:

* ``"select": {"male": 10000, "female": 10}``: exactly that many images of each class
  (an image's class is the class of its faces; images without faces or with faces of
  several classes are not candidates);
* ``"subset": 1000``: that many images, whatever their class;
* ``"seed": 0``: the random draw (default 0). Same data, same spec, same seed: same images.

The choice is returned as a record (seed, counts, file names) that the pipeline saves with
the run (``data_selection.json``).
"""
from __future__ import annotations

import numpy as np

from dafsl.errors import DafslError
from dafsl.formats.common import SourceSplit

KEYS = ("select", "subset", "seed")


def check_spec(spec: dict, classes: list[str], where: str) -> None:
    if "select" in spec and "subset" in spec:
        raise DafslError(f"{where}: give either 'select' (class counts) or 'subset' (a size), not both")
    sel = spec.get("select")
    if sel is not None:
        if not isinstance(sel, dict) or not sel:
            raise DafslError(f"{where}: select must map class -> count, e.g. {{\"male\": 10000, \"female\": 10}}")
        for cls, n in sel.items():
            if cls not in classes:
                raise DafslError(f"{where}: select names unknown class {cls!r} (classes: {', '.join(classes)})")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise DafslError(f"{where}: select.{cls} must be a count >= 0, got {n!r}")
    sub = spec.get("subset")
    if sub is not None and (not isinstance(sub, int) or isinstance(sub, bool) or sub < 1):
        raise DafslError(f"{where}: subset must be an image count >= 1, got {sub!r}")
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DafslError(f"{where}: seed must be an integer, got {seed!r}")


def image_classes(coco: dict, attr: str | None) -> dict[int, set[str]]:
    """image id -> classes of its non-crowd boxes (attribute value, or category name)."""
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    out: dict[int, set[str]] = {img["id"]: set() for img in coco["images"]}
    for a in coco["annotations"]:
        if not a.get("iscrowd"):
            out[a["image_id"]].add(a[attr] if attr else cats[a["category_id"]])
    return out


def apply(src: SourceSplit, spec: dict, attr: str | None, where: str) -> SourceSplit:
    """Keep the images the spec selects (no selection keys: everything, unchanged)."""
    if "select" not in spec and "subset" not in spec:
        return src
    seed = int(spec.get("seed", 0))
    rng = np.random.default_rng(seed)
    images = src.coco["images"]
    record: dict = {"seed": seed, "images_before": len(images)}
    if "subset" in spec:
        if spec["subset"] > len(images):
            raise DafslError(f"{where}: subset asks for {spec['subset']} images, the split has {len(images)}")
        keep = set(rng.permutation(len(images))[:spec["subset"]].tolist())
        chosen = [img for k, img in enumerate(images) if k in keep]
        record["subset"] = spec["subset"]
    else:
        classes = image_classes(src.coco, attr)
        by_class: dict[str, list[int]] = {c: [] for c in spec["select"]}
        mixed = 0
        for k, img in enumerate(images):
            cls = classes[img["id"]]
            mixed += len(cls) > 1
            if len(cls) == 1 and next(iter(cls)) in by_class:
                by_class[next(iter(cls))].append(k)
        keep = set()
        for cls, n in spec["select"].items():  # one draw per class, in the spec's order
            if n > len(by_class[cls]):
                raise DafslError(f"{where}: select asks for {n} {cls} images, only "
                                 f"{len(by_class[cls])} are available")
            keep |= {by_class[cls][i] for i in rng.permutation(len(by_class[cls]))[:n].tolist()}
        chosen = [img for k, img in enumerate(images) if k in keep]
        record.update(select=dict(spec["select"]), available={c: len(v) for c, v in by_class.items()},
                      images_with_several_classes=mixed)
    ids = {img["id"] for img in chosen}
    src.coco = {**src.coco, "images": chosen,
                "annotations": [a for a in src.coco["annotations"] if a["image_id"] in ids]}
    record["file_names"] = [img["file_name"] for img in chosen]
    src.selection = record
    return src
