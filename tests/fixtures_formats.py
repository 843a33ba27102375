"""Small datasets in each official layout (FFHQ + features, UMDFaces batch CSV, WIDER FACE,
Pascal VOC, YOLO), written into a temporary folder from the tiny rendered synthfaces
splits; each writer also writes a manifest and returns its path. Nothing is downloaded."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from dafsl.data import load_split
from dafsl.faces import crop_face

SYNTH = "synthfaces_tiny"
BASE = {"license": "test fixture", "citation": "dafsl tests", "categories": ["face"]}
GENDER = {**BASE, "class_attribute": "gender", "classes": ["male", "female"]}
DETECTION = {**BASE, "class_attribute": None, "classes": ["face"]}


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_manifest(path: Path, name: str, head: dict, source: dict, splits: dict) -> Path:
    path.write_text(json.dumps({"name": name, **head, "source": source, "splits": splits}))
    return path


def faces_of(split_name: str):
    """(rgb scene, [(x, y, w, h), gender], file stem) per scene of a tiny synthfaces split."""
    split = load_split(SYNTH, split_name)
    for iid in split.image_ids:
        anns = split.annotations(iid)
        yield split.load_image(iid), [(a["bbox"], a["gender"]) for a in anns], f"{iid:05d}"


def ffhq(tmp: Path, size: int = 64, box: str = "image") -> Path:
    """FFHQ layout: aligned crops of the synth faces (train scenes give indices 0.., then val
    scenes), ffhq-dataset-v2.json, thumbnails at size/2, and features json/NNNNN.json.
    Three extra images test the skip policy: no features file, an empty array, two faces."""
    root = tmp / "ffhq"
    crops = []
    for split_name in ("train", "val"):
        for img, faces, _ in faces_of(split_name):
            for (x, y, w, h), gender in faces:
                crops.append((crop_face(img, [x, y, x + w, y + h], size, 0.6), gender,
                              max(w, h) / (max(w, h) * 1.6)))
    meta = {}
    for idx, (crop, gender, frac) in enumerate(crops + [crops[0]] * 3):
        folder = f"{idx // 1000 * 1000:05d}"
        big, thumb = f"images1024x1024/{folder}/{idx:05d}.png", f"thumbnails128x128/{folder}/{idx:05d}.png"
        write_image(root / big, crop)
        write_image(root / thumb, cv2.resize(crop, (size // 2, size // 2), interpolation=cv2.INTER_AREA))
        meta[str(idx)] = {"category": "training" if idx < len(crops) - 20 else "validation",
                          "image": {"file_path": big, "pixel_size": [size, size]},
                          "thumbnail": {"file_path": thumb, "pixel_size": [size // 2, size // 2]},
                          "in_the_wild": {"face_rect": [0, 0, 10, 10]}}
        side = size * frac
        rect = {"top": round((size - side) / 2), "left": round((size - side) / 2),
                "width": round(side), "height": round(side)}
        face = {"faceRectangle": rect, "faceAttributes": {"gender": gender, "age": 30.0}}
        extra = idx - len(crops)
        if extra == 0:
            continue  # no features file
        feats = [] if extra == 1 else [face, face] if extra == 2 else [face]
        (root / "json").mkdir(parents=True, exist_ok=True)
        (root / "json" / f"{idx:05d}.json").write_text(json.dumps(feats))
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(meta))
    n = len(crops)
    source = {"type": "ffhq", "root": str(root), "metadata": "ffhq-dataset-v2.json",
              "image_size": 1024, "features": "json", "class_from": {"path": "faceAttributes.gender"},
              "box": box}
    splits = {"train": {"range": [0, n - 20], "select": {"male": 40, "female": 3}, "seed": 0},
              "val": {"range": [n - 20, n + 3], "select": {"male": 6, "female": 6}, "seed": 0},
              "test": {"range": [n - 20, n + 3]}}
    return write_manifest(tmp / "ffhq.json", "ffhq_fixture", GENDER, source, splits)


UMD_COLUMNS = ["SUBJECT_ID", "FILE", "FACE_Y", "FACE_X", "FACE_WIDTH", "FACE_HEIGHT", "YAW",
               "PR_MALE", "PR_FEMALE"]  # not the official order: columns are found by name


def umdfaces(tmp: Path, split_name: str = "test") -> Path:
    """UMDFaces layout: umdfaces_batch1/<subject>/<name>.jpg and a batch CSV, one row per face."""
    root = tmp / "umd"
    rows = []
    for k, (img, faces, stem) in enumerate(faces_of(split_name)):
        rel = f"{k % 3 + 1}/{stem}.jpg"
        write_image(root / "umdfaces_batch1" / rel, img)
        for (x, y, w, h), gender in faces:
            p = 0.93 if gender == "male" else 0.04
            rows.append({"SUBJECT_ID": k % 3 + 1, "FILE": rel, "FACE_X": x, "FACE_Y": y,
                         "FACE_WIDTH": w, "FACE_HEIGHT": h, "YAW": 0.0, "PR_MALE": p,
                         "PR_FEMALE": round(1 - p, 2)})
    write_csv(root / "umdfaces_batch1" / "umdfaces_batch1_ultraface.csv", rows, UMD_COLUMNS)
    source = {"type": "umdfaces", "root": str(root),
              "csv": ["umdfaces_batch1/umdfaces_batch1_ultraface.csv"],
              "class_from": {"column": "PR_MALE", "threshold": 0.5, "above": "male", "below": "female"}}
    return write_manifest(tmp / "umdfaces.json", "umd_fixture", GENDER, source,
                          {"test": {"subset": 16, "seed": 0}, "all": {}})


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def wider(tmp: Path) -> Path:
    """WIDER FACE layout: WIDER_val/images/<event>/<name>.jpg and wider_face_val_bbx_gt.txt;
    one extra invalid face, one zero-size face, and one image without faces."""
    root = tmp / "wider"
    lines = []
    for k, (img, faces, stem) in enumerate(faces_of("val")):
        name = f"{k % 2}--Event/{k % 2}_Event_{stem}.jpg"
        write_image(root / "WIDER_val" / "images" / name, img)
        face_lines = [f"{x:g} {y:g} {w:g} {h:g} 0 0 0 0 0 0 " for (x, y, w, h), _ in faces]
        if k == 0:
            face_lines += ["5 5 20 20 0 0 0 1 0 0 ", "30 30 0 12 0 0 0 0 0 0 "]
        if k == 1:
            face_lines = []
        lines += [name, str(len(face_lines))] + (face_lines or ["0 0 0 0 0 0 0 0 0 0 "])
    ann = root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    ann.parent.mkdir(parents=True)
    ann.write_text("\n".join(lines) + "\n")
    source = {"type": "wider", "root": str(root)}
    return write_manifest(tmp / "wider.json", "wider_fixture", DETECTION, source, {
        "test": {"images": "WIDER_val/images", "annotations": "wider_face_split/wider_face_val_bbx_gt.txt"}})


def voc(tmp: Path, gender: bool = False) -> Path:
    """Pascal VOC layout: JPEGImages/, Annotations/*.xml, ImageSets/Main/test.txt; the first
    face of the first image is marked difficult."""
    root = tmp / "voc"
    ids = []
    for k, (img, faces, stem) in enumerate(faces_of("val")):
        write_image(root / "JPEGImages" / f"{stem}.jpg", img)
        objs = "".join(
            f"<object><name>{g if gender else 'face'}</name><difficult>{int(k == 0 and j == 0)}</difficult>"
            f"<bndbox><xmin>{x:g}</xmin><ymin>{y:g}</ymin><xmax>{x + w:g}</xmax><ymax>{y + h:g}</ymax>"
            f"</bndbox></object>" for j, ((x, y, w, h), g) in enumerate(faces))
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><folder>VOC</folder><filename>{stem}.jpg</filename><size><width>{img.shape[1]}"
            f"</width><height>{img.shape[0]}</height><depth>3</depth></size>{objs}</annotation>")
        ids.append(stem)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    head = GENDER if gender else DETECTION
    return write_manifest(tmp / "voc.json", "voc_fixture", head, {"type": "voc", "root": str(root)}, {
        "test": {"images": "JPEGImages", "annotations": "Annotations", "list": "ImageSets/Main/test.txt"}})


def yolo(tmp: Path) -> Path:
    """YOLO layout: images/val/*.png, labels/val/*.txt (class 0 male, 1 female), classes.txt;
    the last image has no label file (a background image)."""
    root = tmp / "yolo"
    (root / "labels" / "val").mkdir(parents=True)
    scenes = list(faces_of("val"))
    for k, (img, faces, stem) in enumerate(scenes):
        write_image(root / "images" / "val" / f"{stem}.png", img)
        if k == len(scenes) - 1:
            continue
        H, W = img.shape[:2]
        (root / "labels" / "val" / f"{stem}.txt").write_text("".join(
            f"{['male', 'female'].index(g)} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}\n"
            for (x, y, w, h), g in faces))
    (root / "classes.txt").write_text("male\nfemale\n")
    return write_manifest(tmp / "yolo.json", "yolo_fixture", GENDER,
                          {"type": "yolo", "root": str(root), "classes": "classes.txt"},
                          {"test": {"images": "images/val", "labels": "labels/val"}})
