"""UMDFaces still images: batch CSVs with one face per row.

Source keys: ``root``; ``csv`` (list of CSV files relative to ``root``); ``images``
(optional: the folder ``FILE`` is relative to; default the folder of each CSV, as in
``umdfaces_batch1/``); ``class_from`` ``{"column": "PR_MALE", "threshold": 0.5, "above":
"male", "below": "female"}`` (value >= threshold gives ``above``). Columns are found by
name (``FILE``, ``FACE_X``, ``FACE_Y``, ``FACE_WIDTH``, ``FACE_HEIGHT`` and the class
column), never by position. Splits: ``{"range": [start, stop]}`` over the data rows of the
CSVs taken in order; rows naming the same ``FILE`` become one image.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from dafsl.errors import DafslError
from dafsl.formats.common import CocoBuilder, SourceSplit, split_range

SOURCE_KEYS = ("root", "csv", "class_from")
SPLIT_KEYS = ()
NEEDS_CLASS_ATTRIBUTE = True
BOX_COLUMNS = ("FACE_X", "FACE_Y", "FACE_WIDTH", "FACE_HEIGHT")


def check_source(source: dict, where: str) -> None:
    if not (isinstance(source["csv"], list) and source["csv"]):
        raise DafslError(f"{where}: source.csv must be a non-empty list of CSV files")
    cf = source["class_from"]
    if not isinstance(cf, dict) or not {"column", "threshold", "above", "below"} <= set(cf):
        raise DafslError(f"{where}: source.class_from needs column, threshold, above, below")


def _rows(path: Path, needed: tuple[str, ...]):
    """(line number, row dict) of one CSV; a missing needed column is one line."""
    if not path.is_file():
        raise DafslError(f"{path}: UMDFaces CSV not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in needed if c not in header]
        if missing:
            raise DafslError(f"{path}: CSV has no column {', '.join(missing)} "
                             f"(columns: {', '.join(header) or 'none'})")
        reader.fieldnames = header
        for row in reader:
            yield reader.line_num, row


def _number(row: dict, col: str, rec: str) -> float:
    try:
        value = float(row[col])
    except (TypeError, ValueError):
        raise DafslError(f"{rec}: {col} is not a number ({row[col]!r})") from None
    if not math.isfinite(value):
        raise DafslError(f"{rec}: {col} is not finite ({row[col]!r})")
    return value


def read(manifest: Any, split: str, spec: dict) -> SourceSplit:
    src = manifest.source
    root = manifest.resolve(src["root"])
    cf = src["class_from"]
    needed = ("FILE", *BOX_COLUMNS, cf["column"])
    start, stop = split_range(spec, f"{manifest.path} split {split}", 1 << 62)
    builder = CocoBuilder(manifest, root)
    by_file: dict[str, int] = {}
    n = 0
    for rel in src["csv"]:
        path = root / rel
        base = root / src["images"] if src.get("images") else path.parent
        for line, row in _rows(path, needed):
            if n >= stop:
                break
            n += 1
            if n - 1 < start:
                continue
            rec = f"{path} line {line}"
            p = _number(row, cf["column"], rec)
            label = cf["above"] if p >= float(cf["threshold"]) else cf["below"]
            box = [_number(row, c, rec) for c in BOX_COLUMNS]
            path_of_image = base / (row["FILE"] or "").strip()
            file_name = str(path_of_image.relative_to(root) if path_of_image.is_relative_to(root)
                            else path_of_image)
            if file_name not in by_file:
                by_file[file_name] = builder.add_image(file_name, rec)
            builder.add_box(by_file[file_name], lambda w, h, b=box: b, label, rec)
    return builder.result()
