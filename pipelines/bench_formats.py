"""How long the paper's splits take to load at full size, on stand-in files.

    python pipelines/bench_formats.py --out /tmp/bench-formats [--ffhq 70000] [--umd 120000]

Writes an FFHQ layout with ``--ffhq`` entries (a metadata file of about the official size:
~3.8 kB per entry, a gender JSON per image, 8x8 px thumbnails standing in for the images)
and a UMDFaces batch CSV with ``--umd`` rows, then times ``load_split`` of the paper's
train split (10,000 male + 10 female drawn from 60,000) and its 1,000-image UMDFaces test
subset, each twice in one process (the second reuses the parsed metadata). No training.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl.data import load_split  # noqa: E402
from dafsl.errors import exit_on_error  # noqa: E402


def write_ffhq(root: Path, n: int, rng: np.random.Generator) -> None:
    tile = np.full((8, 8, 3), 128, np.uint8)
    landmarks = [[round(float(v), 2) for v in rng.uniform(0, 1000, 2)] for _ in range(68)]
    meta = {}
    (root / "json").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        folder = f"{i // 1000 * 1000:05d}"
        thumb = f"thumbnails128x128/{folder}/{i:05d}.png"
        if i % 1000 == 0:
            (root / "thumbnails128x128" / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / thumb), tile)
        meta[str(i)] = {"category": "training" if i < 60000 else "validation",
                        "metadata": {"photo_url": "https://www.flickr.com/photos/x/1/", "author": "a",
                                     "license": "Attribution License", "date_uploaded": "2009-01-01"},
                        "image": {"file_url": "https://drive.google.com/x", "file_path":
                                  f"images1024x1024/{folder}/{i:05d}.png", "file_size": 1488194,
                                  "file_md5": "ddeaeea6ce59569643715759d537fd1b", "pixel_size": [1024, 1024],
                                  "pixel_md5": "47238b44dfb87644460cbdcc4607e289"},
                        "thumbnail": {"file_url": "https://drive.google.com/y", "file_path": thumb,
                                      "file_size": 29050, "file_md5": "bd3e40b2ba20f76b55dc282907b89cd1",
                                      "pixel_size": [8, 8], "pixel_md5": "38d7e93eb9a796d0e65f8c64de8ba161"},
                        "in_the_wild": {"file_url": "https://drive.google.com/z", "file_path": f"w/{i}.png",
                                        "file_size": 3991569, "file_md5": "1dc0287e73e485efb0516a80ce9d42b4",
                                        "pixel_size": [2016, 1512], "pixel_md5": "86b3470c42e33235d76b979161fb2327",
                                        "face_rect": [667, 410, 1438, 1181], "face_landmarks": landmarks,
                                        "face_quad": landmarks[:4]}}
        gender = "female" if rng.random() < 0.45 else "male"
        faces = [] if rng.random() < 0.01 else [{"faceId": "x", "faceRectangle": {
            "top": 300, "left": 250, "width": 500, "height": 500},
            "faceAttributes": {"gender": gender, "age": 30.0, "smile": 0.1}}]
        (root / "json" / f"{i:05d}.json").write_text(json.dumps(faces))
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(meta))


def write_umd(root: Path, n: int, rng: np.random.Generator) -> None:
    folder = root / "umdfaces_batch1"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    img = np.full((64, 64, 3), 90, np.uint8)
    cols = ["SUBJECT_ID", "FILE", "FACE_X", "FACE_Y", "FACE_WIDTH", "FACE_HEIGHT", "YAW", "PITCH",
            "ROLL", *[f"P{k}{a}" for k in range(1, 22) for a in "XY"], *[f"VIS{k}" for k in range(1, 22)],
            "PR_MALE", "PR_FEMALE"]
    with (folder / "umdfaces_batch1_ultraface.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(n):
            name = f"1/img_{i}.jpg"
            cv2.imwrite(str(folder / name), img)
            p = float(rng.random())
            w.writerow([1, name, 4, 4, 40, 40, *[0.0] * (len(cols) - 9), round(p, 3), round(1 - p, 3)])


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ffhq", type=int, default=70000)
    p.add_argument("--umd", type=int, default=120000)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    ffhq, umd = args.out / "ffhq", args.out / "umd"
    t0 = time.perf_counter()
    if not (ffhq / "ffhq-dataset-v2.json").is_file():
        write_ffhq(ffhq, args.ffhq, rng)
        write_umd(umd, args.umd, rng)
    print(f"wrote stand-in files in {time.perf_counter() - t0:.0f} s; metadata "
          f"{(ffhq / 'ffhq-dataset-v2.json').stat().st_size / 1e6:.0f} MB")
    paper = json.loads((Path(__file__).resolve().parents[1] / "data_manifests" / "paper.json").read_text())
    umd_m = json.loads((Path(__file__).resolve().parents[1] / "data_manifests" / "umdfaces.json").read_text())
    umd_m["source"]["root"] = str(umd)
    (args.out / "umdfaces.json").write_text(json.dumps(umd_m))
    paper["source"]["root"] = str(ffhq)
    paper["source"]["features"] = "json"
    (args.out / "paper.json").write_text(json.dumps(paper))
    times = {}
    for name in ("train", "train", "test"):
        t = time.perf_counter()
        split = load_split(args.out / "paper.json", name)
        times.setdefault(name, []).append(round(time.perf_counter() - t, 1))
        print(f"{split.label}: {len(split.image_ids)} images {split.class_counts()} skipped "
              f"{split.skipped} in {times[name][-1]} s")
    return times


if __name__ == "__main__":
    main()
