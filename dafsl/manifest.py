"""Data manifests: one JSON file per dataset in ``data_manifests/``.

Format (all keys required unless marked optional)::

    {
      "name": "synthfaces",                       # used in cache keys and reports
      "description": "...",
      "license": "...", "citation": "...",
      "categories": ["face"],                     # detection categories (COCO names)
      "class_attribute": "gender",                # per-annotation attribute that is the class,
                                                  # or null when the category is the class
      "classes": ["male", "female"],              # values of class_attribute
      "source": {"type": ..., ...},               # where the data comes from, see below
      "splits": {"train": {...}, "val": {...}, "test": {...}}
    }

``source.type`` is one of

* ``"generator"``: ``{"generator": "synthfaces" | "shapes" | "glyphs", "params": {...}}``;
  each split gives the generator's split arguments (``seed_start``, ``count``, ...). Rendered
  images are cached under a directory keyed by the manifest's content hash. ``glyphs`` is a
  character set (splits ``{"set": "background" | "evaluation", "alphabets": [start, stop]}``),
  loaded by :func:`dafsl.fewshot.data.load_characters`.
* ``"omniglot"``: ``{"root": DIR}`` in Omniglot's official layout
  (``images_<set>/<alphabet>/<character>/*.png``); splits as for ``glyphs``.
* ``"coco"``: ``{"root": DIR}``; each split gives ``{"images": SUBDIR, "annotations":
  FILE.json}`` relative to ``root``. Annotations carry the class attribute by name.
* ``"ffhq"``: ``{"root": DIR, "images": SUBDIR, "features": SUBDIR, "class_from":
  {"path": "faceAttributes.gender"}}``; splits select image index ranges
  (``{"range": [start, stop]}``). Labels come from the public FFHQ feature annotations.
* ``"umdfaces"``: ``{"root": DIR, "csv": [FILE, ...], "class_from": {"column": "PR_MALE",
  "threshold": 0.5, "above": "male", "below": "female"}}``; splits select by row range or
  subject id range (``{"range": [start, stop]}``). Boxes come from FACE_X/Y/WIDTH/HEIGHT.

``root`` may start with ``~`` or ``$VAR``; relative roots resolve against the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from dafsl.config import REPO_ROOT
from dafsl.errors import DafslError

MANIFEST_DIR = REPO_ROOT / "data_manifests"
SOURCE_TYPES = ("generator", "coco", "ffhq", "umdfaces", "omniglot")
REQUIRED = ("name", "license", "citation", "categories", "class_attribute", "classes",
            "source", "splits")


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; ``raw`` is the parsed JSON, ``path`` the file it came from."""

    path: Path
    raw: dict

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def source(self) -> dict:
        return self.raw["source"]

    @property
    def classes(self) -> list[str]:
        return list(self.raw["classes"])

    @property
    def class_attribute(self) -> str | None:
        return self.raw["class_attribute"]

    @property
    def categories(self) -> list[str]:
        return list(self.raw["categories"])

    def split(self, name: str) -> dict:
        if name not in self.raw["splits"]:
            raise DafslError(f"{self.path}: no split '{name}' "
                             f"(has {', '.join(self.raw['splits'])})")
        return self.raw["splits"][name]

    def content_hash(self, extra: str = "") -> str:
        """Hash of the manifest's content (not its path), plus ``extra`` (e.g. renderer version)."""
        canon = json.dumps(self.raw, sort_keys=True, separators=(",", ":")) + extra
        return hashlib.sha256(canon.encode()).hexdigest()[:12]

    def resolve(self, rel: str) -> Path:
        """Resolve a path from the manifest (``~``, ``$VAR``, relative to the manifest file)."""
        p = Path(os.path.expandvars(os.path.expanduser(rel)))
        return p if p.is_absolute() else (self.path.parent / p)


def find_manifest(name_or_path: str | Path) -> Path:
    """``synthfaces`` → ``data_manifests/synthfaces.json``; a path is used as given."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        return p
    return MANIFEST_DIR / f"{name_or_path}.json"


def load_manifest(name_or_path: str | Path) -> Manifest:
    """Read and validate a manifest; every problem is a one-line :class:`DafslError`."""
    path = find_manifest(name_or_path)
    if not path.is_file():
        raise DafslError(f"{path}: manifest not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DafslError(f"{path}: invalid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(raw, dict):
        raise DafslError(f"{path}: manifest must be a JSON object")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise DafslError(f"{path}: missing key(s) {', '.join(missing)}")
    src = raw["source"]
    if not isinstance(src, dict) or src.get("type") not in SOURCE_TYPES:
        raise DafslError(f"{path}: source.type must be one of {', '.join(SOURCE_TYPES)}")
    if not isinstance(raw["splits"], dict) or not raw["splits"]:
        raise DafslError(f"{path}: splits must be a non-empty object")
    if not raw["categories"]:
        raise DafslError(f"{path}: categories must not be empty")
    if raw["class_attribute"] is not None and len(raw["classes"]) < 2:
        raise DafslError(f"{path}: a class attribute needs at least two classes")
    if src["type"] == "generator" and src.get("generator") not in ("synthfaces", "shapes", "glyphs"):
        raise DafslError(f"{path}: unknown generator {src.get('generator')!r}")
    if src["type"] == "coco":
        for name, split in raw["splits"].items():
            if not {"images", "annotations"} <= set(split):
                raise DafslError(f"{path}: split '{name}' needs 'images' and 'annotations'")
    return Manifest(path=path, raw=raw)
