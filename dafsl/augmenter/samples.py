"""What the augmenter writes for people and for the classifier: sample grids and the
generated Dlack faces (PNG files plus a manifest the classifier stage reads)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from dafsl.runs import atomic_write_bytes, atomic_write_json


def write_png(path: Path, image: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB -> PNG at ``path``, written atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def tile(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """(N, r, r, 3) uint8 -> one (rows * (r + pad) + pad, cols * (r + pad) + pad, 3) grid, white gaps."""
    n, r = len(images), images.shape[1]
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (r + pad) + pad, cols * (r + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        y, x = pad + (i // cols) * (r + pad), pad + (i % cols) * (r + pad)
        grid[y:y + r, x:x + r] = img
    return grid


def write_grid(path: Path, images: np.ndarray, cols: int = 8, scale: int = 2) -> Path:
    """Sample grid of (N, r, r, 3) uint8 faces, upscaled ``scale`` x (nearest) to be visible."""
    grid = tile(images, cols)
    write_png(path, cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
    return path


def write_real_vs_generated(path: Path, real: np.ndarray, fake: np.ndarray, cols: int = 5) -> Path:
    """Real Dlack crops (left) beside as many generated faces (right), one gutter between."""
    n = min(len(real), len(fake))
    left, right = tile(real[:n], cols), tile(fake[:n], cols)
    gutter = np.full((left.shape[0], 6, 3), 255, np.uint8)
    side = np.concatenate([left, gutter, right], axis=1)
    write_png(path, cv2.resize(side, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST))
    return path


def write_generated(out_dir: Path, images: np.ndarray, class_name: str, manifest_path: Path,
                    extra: dict | None = None) -> Path:
    """Write ``images`` (N, r, r, 3) uint8 as ``out_dir/gen_00000.png``... and the manifest
    ``{"synthetic": true, "class", "resolution", "images", "count", ...extra}``.
    Stale PNGs of an earlier run in the same directory are removed first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("gen_*.png"):
        old.unlink()
    names = []
    for i, img in enumerate(images):
        name = f"gen_{i:05d}.png"
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        (out_dir / name).write_bytes(buf.tobytes())
        names.append(name)
    manifest = {"synthetic": True, "class": class_name,
                "resolution": int(images.shape[1]) if len(images) else None,
                "images": names, "count": len(names), **(extra or {})}
    atomic_write_json(manifest_path, manifest)
    return manifest_path


def read_generated(manifest_path: Path) -> dict:
    """The manifest written by :func:`write_generated` (for tests and the classifier)."""
    return json.loads(Path(manifest_path).read_text())
