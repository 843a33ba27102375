"""FFHQ: ``ffhq-dataset-v2.json`` plus the per-image gender JSONs of the FFHQ features set.

Source keys: ``root``; ``metadata`` (default ``ffhq-dataset-v2.json``, keyed by image
index, each entry with ``category`` training/validation, ``image.file_path`` like
``images1024x1024/00000/00000.png``, ``thumbnail.file_path``); ``image_size`` (1024: the
originals, 128: the thumbnails); ``features`` (folder of ``NNNNN.json``: a JSON array of
faces with ``faceRectangle {top, left, width, height}`` in original pixels and
``faceAttributes.gender``); ``class_from.path`` (dotted path of the class in a face);
``box`` (``image``: the whole aligned image, default; ``face_rectangle``). Splits:
``{"range": [start, stop], "category": "training" (optional)}`` over image indices.

An image without a usable label (no features file, an empty array = no face found, several
faces, a face without the class field) is skipped and counted, never guessed; a class value
outside the manifest's classes is an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dafsl.errors import DafslError
from dafsl.formats.common import CocoBuilder, SourceSplit, read_json, split_range

SOURCE_KEYS = ("root", "features", "class_from")
SPLIT_KEYS = ()
NEEDS_CLASS_ATTRIBUTE = True
SIZES = {1024: "image", 128: "thumbnail"}
BOXES = ("image", "face_rectangle")
_METADATA: dict[tuple, dict] = {}  # (path, mtime, size) -> compact entries; the file is ~250 MB


def check_source(source: dict, where: str) -> None:
    if source.get("image_size", 1024) not in SIZES:
        raise DafslError(f"{where}: source.image_size must be 1024 or 128, got {source['image_size']!r}")
    if source.get("box", "image") not in BOXES:
        raise DafslError(f"{where}: source.box must be one of {', '.join(BOXES)}, got {source['box']!r}")
    if not isinstance(source["class_from"], dict) or "path" not in source["class_from"]:
        raise DafslError(f"{where}: source.class_from needs 'path' (e.g. faceAttributes.gender)")


def metadata(path: Path) -> dict[int, dict]:
    """index -> {category, image, thumbnail: (file_path, pixel width)}, cached per file version."""
    if not path.is_file():
        raise DafslError(f"{path}: FFHQ metadata file not found")
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _METADATA:
        raw = read_json(path, "FFHQ metadata file")
        if not isinstance(raw, dict):
            raise DafslError(f"{path}: FFHQ metadata must be a JSON object keyed by image index")
        out = {}
        for k, e in raw.items():
            try:
                out[int(k)] = {"category": e.get("category"),
                               **{part: (e[part]["file_path"], int(e[part]["pixel_size"][0]))
                                  for part in ("image", "thumbnail")}}
            except (KeyError, TypeError, ValueError, AttributeError):
                raise DafslError(f"{path}: entry {k} lacks image/thumbnail file_path "
                                 f"or pixel_size") from None
        _METADATA.clear()
        _METADATA[key] = out
    return _METADATA[key]


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def read(manifest: Any, split: str, spec: dict) -> SourceSplit:
    src = manifest.source
    root = manifest.resolve(src["root"])
    meta = metadata(root / src.get("metadata", "ffhq-dataset-v2.json"))
    features = root / src["features"]
    if not features.is_dir():
        raise DafslError(f"{features}: FFHQ features folder not found (source.features)")
    part = SIZES[src.get("image_size", 1024)]
    path_in_face, whole = src["class_from"]["path"], src.get("box", "image") == "image"
    where = f"{manifest.path} split {split}"
    start, stop = split_range(spec, where, len(meta))
    builder = CocoBuilder(manifest, root)
    for idx in range(start, stop):
        if idx not in meta:
            raise DafslError(f"{where}: image index {idx} is not in the FFHQ metadata")
        entry = meta[idx]
        if spec.get("category") and entry["category"] != spec["category"]:
            continue
        label_file = features / f"{idx:05d}.json"
        if not label_file.is_file():
            builder.skip("no features file")
            continue
        faces = read_json(label_file, "FFHQ features file")
        if not isinstance(faces, list):
            raise DafslError(f"{label_file}: expected a JSON array of faces")
        if not faces:
            builder.skip("no face found (empty array)")
            continue
        if len(faces) > 1:
            builder.skip("several faces")
            continue
        label = _dig(faces[0], path_in_face)
        if label is None:
            builder.skip(f"face without {path_in_face}")
            continue
        file_path, original = entry[part][0], entry["image"][1]  # faceRectangle: originals' pixels
        image_id = builder.add_image(file_path, f"{label_file} (image {idx})", ffhq_index=idx)
        rec = f"{label_file} face 0"
        builder.add_box(image_id, _box(faces[0], original, whole, rec), str(label), rec)
    return builder.result()


def _box(face: dict, original: int, whole: bool, rec: str):
    if whole:
        return lambda w, h: [0.0, 0.0, float(w), float(h)]
    r = face.get("faceRectangle")
    try:
        left, top, fw, fh = (float(r[k]) for k in ("left", "top", "width", "height"))
    except (KeyError, TypeError, ValueError):
        raise DafslError(f"{rec}: faceRectangle needs numeric top, left, width, height") from None
    # faceRectangle is in the originals' pixels; the thumbnails scale it down
    return lambda w, h: [left * w / original, top * h / original, fw * w / original, fh * h / original]

