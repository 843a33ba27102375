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

from dafsl.cache import file_digests, file_lock, verify_digests
from dafsl.errors import DafslError
from dafsl.formats import READERS, read_split
from dafsl.formats.coco import validate_coco  # noqa: F401  (re-exported: its old home)
from dafsl.log import get_logger, progress
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
    selection: dict | None = None  # what a select/subset spec chose (formats.selection)
    skipped: dict = field(default_factory=dict)  # records a reader skipped: reason -> count

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
    if "manifest" in spec:  # e.g. the paper: FFHQ train/val, UMDFaces test
        return _borrowed_split(manifest, split, spec, cache_dir)
    if kind in READERS:
        src = read_split(manifest, split, spec)
        return Split(manifest, split, src.image_dir, src.coco, selection=src.selection,
                     skipped=src.skipped)
    raise DafslError(f"{manifest.path}: source type '{kind}' has no reader")


def _borrowed_split(manifest: Manifest, split: str, spec: dict, cache_dir: str | None) -> Split:
    """``{"manifest": NAME_OR_PATH, "split": NAME}``: a split of another manifest with the
    same categories and classes (relative paths resolve against this manifest)."""
    ref = spec["manifest"]
    other_path = manifest.resolve(ref) if str(ref).endswith(".json") else ref
    other = load_manifest(other_path)
    for key in ("categories", "class_attribute", "classes"):
        if other.raw[key] != manifest.raw[key]:
            raise DafslError(f"{manifest.path}: split '{split}' takes {other.path}, whose {key} "
                             f"{other.raw[key]!r} differ from {manifest.raw[key]!r}")
    got = load_split(other, spec.get("split", split), cache_dir)
    selection = {**got.selection, "from": got.label} if got.selection else None
    return Split(manifest, split, got.image_dir, got.coco, selection=selection, skipped=got.skipped)


def save_selections(manifest: Manifest, cache_dir: str | None, path: Path) -> dict:
    """Write what each split's ``select``/``subset`` chose (seed, counts, file names) to
    ``path`` (the run's ``data_selection.json``), so a run records the exact images it used."""
    from dafsl.runs import atomic_write_json

    out = {}
    for name, spec in manifest.raw["splits"].items():
        if isinstance(spec, dict) and {"select", "subset", "manifest"} & set(spec):
            split = load_split(manifest, name, cache_dir)
            if split.selection:
                out[name] = {"dataset": split.label, **split.selection}
    if out:
        atomic_write_json(path, out)
    return out


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
    cached = _cached_split(manifest, split, out)
    if cached is not None:
        return cached
    # one process renders, a concurrent one waits for the lock and then reads the result
    with file_lock(out, f"{manifest.name}/{split}"):
        cached = _cached_split(manifest, split, out)
        if cached is not None:
            return cached
        coco = render_to(manifest, split, spec, out)
    return Split(manifest, split, out / "images", coco)


def _cached_split(manifest: Manifest, split: str, out: Path) -> Split | None:
    """The rendered split in ``out`` if it is complete and every file matches the
    checksum recorded when it was rendered; ``None`` (render again) otherwise."""
    coco_path, sums = out / "coco.json", out / "checksums.json"
    if not coco_path.is_file():
        return None
    try:
        problem = verify_digests(out, json.loads(sums.read_text()))
    except (OSError, json.JSONDecodeError):
        problem = f"{sums}: missing or unreadable"
    if problem:
        get_logger("data").warning(f"{problem}; rendering {manifest.name}/{split} again")
        return None
    return Split(manifest, split, out / "images", json.loads(coco_path.read_text()))


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
        (tmp / "checksums.json").write_text(json.dumps(file_digests(tmp)))
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


if __name__ == "__main__":  # python -m dafsl.data: the CLI lives in dafsl/data_cli.py
    import runpy

    runpy.run_module("dafsl.data_cli", run_name="__main__")
