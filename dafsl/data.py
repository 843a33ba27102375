"""Materialised dataset splits: images on disk plus a COCO ground-truth dict.

:func:`load_split` is how every stage gets data. For a generator manifest it renders
the split once into ``<cache>/<name>-<content hash>/<split>/`` (PNG files plus
``coco.json``) and reuses it afterwards; for a COCO manifest it validates the given
files. Either way the caller gets a :class:`Split` whose COCO dict has category
``face`` (or the manifest's categories) and, per annotation, the class attribute
(``gender``) so any COCO tool can read it.

The Denough/Dlack rule (:func:`denough_dlack`): a class is *Dlack* when its sample
count is below ``threshold`` × the count of the largest class; the others are
*Denough*. With the paper's 10,000 male / 10 female faces and the default threshold
0.1, female is Dlack.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dafsl.errors import DafslError
from dafsl.log import progress
from dafsl.manifest import Manifest, load_manifest


def cache_root(configured: str | None = None) -> Path:
    """``data.cache_dir`` if set, else ``$DAFSL_CACHE``, else ``~/.cache/dafsl``."""
    if configured:
        return Path(os.path.expanduser(configured))
    return Path(os.environ.get("DAFSL_CACHE", Path.home() / ".cache" / "dafsl"))


@dataclass
class Split:
    """One split: ``coco`` is a COCO ground-truth dict, images live in ``image_dir``."""

    manifest: Manifest
    name: str
    image_dir: Path
    coco: dict
    _by_image: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._by_image = {img["id"]: [] for img in self.coco["images"]}
        for ann in self.coco["annotations"]:
            self._by_image[ann["image_id"]].append(ann)
        self._images = {img["id"]: img for img in self.coco["images"]}

    @property
    def label(self) -> str:
        return f"{self.manifest.name}/{self.name}"

    @property
    def image_ids(self) -> list[int]:
        return [img["id"] for img in self.coco["images"]]

    def image_info(self, image_id: int) -> dict:
        return self._images[image_id]

    def annotations(self, image_id: int) -> list[dict]:
        return self._by_image[image_id]

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self._images[image_id]["file_name"]

    def load_image(self, image_id: int) -> np.ndarray:
        """HxWx3 uint8 RGB; a missing or undecodable file is a one-line error."""
        return read_image(self.image_path(image_id))

    def class_of(self, ann: dict) -> str:
        attr = self.manifest.class_attribute
        if attr is None:
            return self.category_names[ann["category_id"]]
        return ann[attr]

    @property
    def category_names(self) -> dict[int, str]:
        return {c["id"]: c["name"] for c in self.coco["categories"]}

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.class_of(a) for a in self.coco["annotations"])
        return {c: counts.get(c, 0) for c in self.manifest.classes}


def read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DafslError(f"{path}: image file not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DafslError(f"{path}: cannot decode image (corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def validate_coco(coco: dict, manifest: Manifest, origin: str) -> None:
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


def load_split(manifest: Manifest | str | Path, split: str, cache_dir: str | None = None) -> Split:
    """Materialise (render or validate) ``split`` of ``manifest``."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    spec = manifest.split(split)
    kind = manifest.source["type"]
    if kind == "omniglot" or manifest.source.get("generator") == "glyphs":
        raise DafslError(f"{manifest.path}: a character set, not a detection dataset; load it "
                         f"with dafsl.fewshot.data.load_characters")
    if kind == "generator":
        return _generated_split(manifest, split, spec, cache_root(cache_dir))
    if kind == "coco":
        root = manifest.resolve(manifest.source["root"])
        ann_path = root / spec["annotations"]
        if not ann_path.is_file():
            raise DafslError(f"{ann_path}: annotation file not found "
                             f"(manifest {manifest.path}, split {split})")
        try:
            coco = json.loads(ann_path.read_text())
        except json.JSONDecodeError as err:
            raise DafslError(f"{ann_path}: invalid JSON (line {err.lineno})") from None
        validate_coco(coco, manifest, str(ann_path))
        image_dir = root / spec["images"]
        for img in coco["images"]:
            if not (image_dir / img["file_name"]).is_file():
                raise DafslError(f"{image_dir / img['file_name']}: image file not found "
                                 f"(listed in {ann_path})")
        return Split(manifest, split, image_dir, coco)
    raise DafslError(f"{manifest.path}: source type '{kind}' has no converter yet; convert "
                     f"it to COCO and use a 'coco' manifest")


def _generator(manifest: Manifest):
    from dafsl.synth import faces, shapes

    return {"synthfaces": faces, "shapes": shapes}[manifest.source["generator"]]


def split_cache_dir(manifest: Manifest, split: str, root: Path) -> Path:
    from dafsl.synth import faces, shapes

    # The renderers' source is part of the key: changing how scenes are drawn must
    # not silently reuse stale images (faces.py draws with helpers from shapes.py).
    version = inspect.getsource(faces) + inspect.getsource(shapes)
    return root / "data" / f"{manifest.name}-{manifest.content_hash(version)}" / split


def _generated_split(manifest: Manifest, split: str, spec: dict, root: Path) -> Split:
    out = split_cache_dir(manifest, split, root)
    coco_path = out / "coco.json"
    if coco_path.is_file():
        return Split(manifest, split, out / "images", json.loads(coco_path.read_text()))
    coco = render_to(manifest, split, spec, out)
    return Split(manifest, split, out / "images", coco)


def render_to(manifest: Manifest, split: str, spec: dict, out: Path) -> dict:
    """Render a generator split into ``out`` (``images/*.png`` + ``coco.json``), atomically:
    everything goes to a temp dir that is renamed into place at the end."""
    gen = _generator(manifest)
    params = manifest.source.get("params", {})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{split}-"))
    try:
        (tmp / "images").mkdir()
        cat_names = list(manifest.categories) if manifest.class_attribute else list(gen.CATEGORIES)
        cats = [{"id": i + 1, "name": n} for i, n in enumerate(cat_names)]
        cat_id = {c["name"]: c["id"] for c in cats}
        images, anns = [], []
        kwargs = {k: v for k, v in spec.items() if k != "description"}
        it = gen.render_split(**kwargs, params=params)
        for image_id, (seed, img, objs) in enumerate(
                progress(it, total=spec["count"], desc=f"render {manifest.name}/{split}"), start=1):
            fname = f"{seed:08d}.png"
            ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            (tmp / "images" / fname).write_bytes(buf.tobytes())
            images.append({"id": image_id, "file_name": fname, "width": int(img.shape[1]),
                           "height": int(img.shape[0]), "seed": int(seed)})
            for obj in objs:
                ann = {"id": len(anns) + 1, "image_id": image_id,
                       "category_id": cat_id[obj.get("category", cat_names[0])],
                       "bbox": [round(float(v), 2) for v in obj["bbox"]], "iscrowd": 0}
                ann["area"] = ann["bbox"][2] * ann["bbox"][3]
                for key in ("gender", "identity", "attributes"):
                    if key in obj:
                        ann[key] = obj[key]
                anns.append(ann)
        coco = {"info": {"description": f"{manifest.name} {split}", "generator":
                         manifest.source["generator"]},
                "licenses": [{"id": 1, "name": manifest.raw["license"]}],
                "images": images, "annotations": anns, "categories": cats}
        (tmp / "coco.json").write_text(json.dumps(coco))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return coco


def denough_dlack(counts: dict[str, int], threshold: float, origin: str = "") -> dict:
    """Split classes into Denough/Dlack: Dlack ⇔ count < threshold × max count.

    An empty class is an error: a Dlack with nothing in it leaves nothing to augment from.
    """
    if not 0 < threshold <= 1:
        raise DafslError(f"data.imbalance_threshold must be in (0, 1], got {threshold}")
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise DafslError(f"{origin}: class '{empty[0]}' has no samples after the split")
    top = max(counts.values())
    dlack = [c for c, n in counts.items() if n < threshold * top]
    denough = [c for c in counts if c not in dlack]
    return {"counts": counts, "threshold": threshold, "denough": denough, "dlack": dlack,
            "rule": f"Dlack = classes with count < {threshold} x largest class count ({top})"}
