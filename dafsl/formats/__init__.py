"""Readers of the dataset formats a manifest's ``source.type`` can name: one small module
per format, one registry. Every reader returns the same structure, a
:class:`~dafsl.formats.common.SourceSplit` (a COCO ground-truth dict with the class
attribute per annotation, plus its image folder), so :mod:`dafsl.data` treats all sources
alike. A reader module declares ``SOURCE_KEYS`` (required in ``source``), ``SPLIT_KEYS``
(required in each split), ``NEEDS_CLASS_ATTRIBUTE`` (True, False or None = either), an
optional ``check_source(source, where)`` and ``read(manifest, split, spec)``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from dafsl.errors import DafslError
from dafsl.formats.common import SourceSplit, finalize
from dafsl.formats.selection import apply as apply_selection, check_spec

#: source.type -> reader module
READERS = {"coco": "dafsl.formats.coco", "ffhq": "dafsl.formats.ffhq",
           "umdfaces": "dafsl.formats.umdfaces", "wider": "dafsl.formats.wider",
           "voc": "dafsl.formats.voc", "yolo": "dafsl.formats.yolo"}


def reader(kind: str) -> ModuleType:
    return importlib.import_module(READERS[kind])


def check_manifest(raw: dict, where: str) -> None:
    """The format-specific part of manifest validation (keys, class attribute, selections)."""
    mod = reader(raw["source"]["type"])
    src = raw["source"]
    missing = [k for k in mod.SOURCE_KEYS if k not in src]
    if missing:
        raise DafslError(f"{where}: source needs key(s) {', '.join(missing)}")
    if hasattr(mod, "check_source"):
        mod.check_source(src, where)
    has_attr = raw["class_attribute"] is not None
    if mod.NEEDS_CLASS_ATTRIBUTE is True and not has_attr:
        raise DafslError(f"{where}: a {src['type']} source needs a class_attribute (e.g. gender)")
    if mod.NEEDS_CLASS_ATTRIBUTE is False and has_attr:
        raise DafslError(f"{where}: a {src['type']} source has no class attribute; set "
                         f"class_attribute to null (detection only)")
    for name, split in raw["splits"].items():
        if not isinstance(split, dict):
            raise DafslError(f"{where}: split '{name}' must be an object")
        if "manifest" in split:  # a split taken from another manifest, checked when loaded
            continue
        lack = [k for k in mod.SPLIT_KEYS if k not in split]
        if lack:
            raise DafslError(f"{where}: split '{name}' needs {' and '.join(repr(k) for k in lack)}")
        check_spec(split, list(raw["classes"]) if has_attr else list(raw["categories"]),
                   f"{where} split '{name}'")


def read_split(manifest, split: str, spec: dict) -> SourceSplit:
    """Read, select (``select``/``subset``), then size and check the images that are kept."""
    src = reader(manifest.source["type"]).read(manifest, split, spec)
    src = apply_selection(src, spec, manifest.class_attribute, f"{manifest.path} split '{split}'")
    return finalize(src)
