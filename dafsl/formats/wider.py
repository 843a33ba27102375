"""WIDER FACE ``wider_face_<split>_bbx_gt.txt``: a file-name line, a face-count line, then
one line per face ``x y w h blur expression illumination invalid occlusion pose`` (an image
with no face has count 0 and one all-zero line). Faces flagged invalid or of zero size are
skipped and counted. Detection only: the manifest has no class attribute.

Source keys: ``root``. Splits: ``{"images": "WIDER_train/images", "annotations":
"wider_face_split/wider_face_train_bbx_gt.txt", "range": [start, stop] (optional, images)}``.
"""
from __future__ import annotations

from typing import Any

from dafsl.errors import DafslError
from dafsl.formats.common import CocoBuilder, SourceSplit, split_range

SOURCE_KEYS = ("root",)
SPLIT_KEYS = ("images", "annotations")
NEEDS_CLASS_ATTRIBUTE = False
INVALID = 7  # index of the "invalid" flag on a face line


def _numbers(text: str) -> list[float] | None:
    try:
        return [float(v) for v in text.split()]
    except ValueError:
        return None


def parse(path) -> list[tuple[int, str, list[tuple[int, list[float]]]]]:
    """[(line of the file name, file name, [(line, numbers), ...]), ...]; a count line that
    disagrees with the face lines after it is one line naming both."""
    if not path.is_file():
        raise DafslError(f"{path}: WIDER FACE annotation file not found")
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(path.read_text(encoding="utf-8").splitlines())]
    lines = [(i, ln) for i, ln in lines if ln]
    out, k = [], 0
    while k < len(lines):
        name_line, name = lines[k]
        if _numbers(name) is not None:
            prev = out[-1] if out else None
            hint = (f"; the count for {prev[1]} (line {prev[0] + 1}) disagrees with the "
                    f"face lines that follow" if prev else "")
            raise DafslError(f"{path} line {name_line}: expected an image file name, "
                             f"got {name!r}{hint}")
        if k + 1 >= len(lines):
            raise DafslError(f"{path} line {name_line}: {name} has no face-count line")
        count_line, count_text = lines[k + 1]
        if not count_text.isdigit():
            raise DafslError(f"{path} line {count_line}: expected the face count of {name}, "
                             f"got {count_text!r}")
        count, k = int(count_text), k + 2
        faces = []
        want = count if count > 0 else (1 if k < len(lines) and _numbers(lines[k][1]) else 0)
        for j in range(want):
            if k >= len(lines) or _numbers(lines[k][1]) is None or len(_numbers(lines[k][1])) < 4:
                raise DafslError(f"{path} line {count_line}: count {count} for {name} disagrees "
                                 f"with the {j} face line(s) that follow")
            faces.append((lines[k][0], _numbers(lines[k][1])))
            k += 1
        out.append((name_line, name, faces if count > 0 else []))
    return out


def read(manifest: Any, split: str, spec: dict) -> SourceSplit:
    root = manifest.resolve(manifest.source["root"])
    path = root / spec["annotations"]
    entries = parse(path)
    start, stop = split_range(spec, f"{manifest.path} split {split}", len(entries))
    builder = CocoBuilder(manifest, root / spec["images"])
    label = manifest.categories[0]
    for name_line, name, faces in entries[start:stop]:
        image_id = builder.add_image(name, f"{path} line {name_line}")
        for line, v in faces:
            if len(v) > INVALID and v[INVALID] != 0:
                builder.skip("face flagged invalid")
            elif v[2] <= 0 or v[3] <= 0:
                builder.skip("face of zero size")
            else:
                builder.add_box(image_id, lambda w, h, b=v[:4]: b, label, f"{path} line {line}")
    return builder.result()
