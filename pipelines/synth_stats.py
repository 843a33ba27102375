"""Print statistics of the embedded procedural datasets and write a sample grid PNG.

Usage: python pipelines/synth_stats.py [--out runs/synth_samples.png] [--scenes 1000]

Reports the synthfaces Bayes accuracy, median rendering speed (scenes/s, one core)
for synthfaces and shapes, faces per scene and face box sizes; the grid shows
4x4 face scenes (boxes coloured by gender, labelled M/F) and a row of shapes scenes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl.errors import DafslError, exit_on_error  # noqa: E402
from dafsl.synth import faces, shapes  # noqa: E402

_MALE, _FEMALE = (60, 140, 255), (255, 70, 170)  # RGB box colours


def _genders(seed: int) -> list[tuple[str, int]]:
    """Alternate genders so the grid shows both; identities are just the slot index."""
    return [(faces.CLASSES[(seed + k) % 2], seed * 3 + k) for k in range(faces.face_count(seed))]


def _speed(render, repeats: int, scenes: int) -> tuple[float, float]:
    """Median scenes/s over ``repeats`` runs, by CPU time (one core) and by wall clock.

    CPU time is the headline: on a shared machine wall clock mostly measures the neighbours.
    """
    cpu, wall = [], []
    for r in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for s in range(r * scenes, (r + 1) * scenes):
            render(s)
        cpu.append(scenes / max(time.process_time() - c0, 1e-9))
        wall.append(scenes / (time.perf_counter() - w0))
    return statistics.median(cpu), statistics.median(wall)


def _annotate(img: np.ndarray, anns: list[dict], zoom: int) -> np.ndarray:
    big = cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    for a in anns:
        x, y, w, h = (int(round(v * zoom)) for v in a["bbox"])
        if "gender" in a:
            color, label = (_FEMALE if a["gender"] == "female" else _MALE), a["gender"][0].upper()
        else:
            color, label = (255, 255, 0), a["category"][:4]
        cv2.rectangle(big, (x, y), (x + w, y + h), color, 1)
        cv2.putText(big, label, (x + 2, max(y - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return big


def sample_grid(rows: int = 4, cols: int = 4, zoom: int = 2, seed: int = 0) -> np.ndarray:
    """RGB grid: ``rows`` x ``cols`` face scenes plus one row of shapes scenes."""
    tiles = []
    for k in range(rows * cols):
        s = seed + k
        img, anns = faces.render_scene(s, _genders(s))
        tiles.append(_annotate(img, anns, zoom))
    for k in range(cols):
        img, objs = shapes.render_scene(seed + k)
        tiles.append(_annotate(img, objs, zoom))
    pad = lambda t: cv2.copyMakeBorder(t, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))  # noqa: E731
    grid_rows = [np.concatenate([pad(t) for t in tiles[r * cols:(r + 1) * cols]], 1) for r in range(rows + 1)]
    return np.concatenate(grid_rows, 0)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/synth_samples.png", help="sample grid PNG path")
    ap.add_argument("--scenes", type=int, default=1000, help="scenes used for count/size stats")
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats of 200 scenes")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)  # "one core" speed, and no oversubscription on small machines

    print(f"bayes accuracy (n=200k): {faces.bayes_accuracy(200_000, seed=0):.4f}")
    f_rate = _speed(lambda s: faces.render_scene(s, _genders(s)), args.repeats, 200)
    s_rate = _speed(shapes.render_scene, args.repeats, 200)
    print(f"render speed, median of {args.repeats}x200 scenes, one core (CPU time): "
          f"faces {f_rate[0]:.0f} scenes/s, shapes {s_rate[0]:.0f} scenes/s "
          f"(wall clock: {f_rate[1]:.0f} / {s_rate[1]:.0f})")

    counts, sides, aspects = [], [], []
    for s in range(args.scenes):
        _, anns = faces.render_scene(s, _genders(s))
        counts.append(len(anns))
        for a in anns:
            w, h = a["bbox"][2], a["bbox"][3]
            sides.append(max(w, h))
            aspects.append(h / w)
    sides_a = np.array(sides)
    print(f"faces/scene: mean {np.mean(counts):.2f} over {args.scenes} scenes "
          f"(1: {counts.count(1)}, 2: {counts.count(2)}, 3: {counts.count(3)})")
    print(f"face box longer side (px @ {faces.DEFAULT_PARAMS['size']}): min {sides_a.min():.1f} "
          f"p10 {np.percentile(sides_a, 10):.1f} median {np.median(sides_a):.1f} "
          f"p90 {np.percentile(sides_a, 90):.1f} max {sides_a.max():.1f}; "
          f"h/w median {np.median(aspects):.2f}")

    grid = sample_grid()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(os.fspath(out), grid[:, :, ::-1]):
        raise DafslError(f"{out}: could not write the sample grid PNG")
    print(f"sample grid: {out}")


if __name__ == "__main__":
    main()
