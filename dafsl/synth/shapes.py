"""Procedural *source* dataset: textured geometric shapes with boxes.

These scenes are deliberately not faces. They are for pretraining detectors and
backbones (the offline ``pretrained`` mode): objectness, edges, textures and
boxes transfer, but no face-specific features leak into the source domain.

The module also holds the scene utilities that :mod:`dafsl.synth.faces` shares
(parameter merging, textured backgrounds, anti-aliased polygon drawing and the
photometric nuisance chain). Everything is a pure function of its seed: only
``np.random.default_rng`` generators are used, never global RNG state.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator

import cv2
import numpy as np

from dafsl.errors import DafslError

CATEGORIES: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "star", "ring")

DEFAULT_PARAMS: dict[str, Any] = {
    "size": 128,                 # square image side in px
    "min_objects": 1,
    "max_objects": 5,
    "object_size": (0.12, 0.45),  # box's longer side as a fraction of the image side
    "max_iou": 0.3,              # between object boxes; keeps occlusion moderate
    "clutter": (0, 4),           # unannotated thin lines/specks over the background
    "lighting": 0.35,            # max amplitude of the multiplicative light gradient
    "blur_prob": 0.3,
    "blur_sigma": (0.4, 1.3),
    "noise_std": (0.0, 8.0),     # additive Gaussian noise, in grey levels
    "jpeg_prob": 0.8,
    "jpeg_quality": (35, 95),
}

_SHIFT = 4                       # sub-pixel bits for cv2 drawing
_SCALE = float(1 << _SHIFT)
_T = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
UNIT_CIRCLE = np.stack([np.cos(_T), np.sin(_T)], axis=1)  # 40 points, float64


# ----------------------------------------------------------------- shared utils
def merge_params(defaults: dict[str, Any], params: dict | None, where: str) -> dict[str, Any]:
    """Return ``defaults`` updated with ``params``; unknown keys are a :class:`DafslError`."""
    merged = dict(defaults)
    for key, value in (params or {}).items():
        if key not in defaults:
            raise DafslError(f"{where}: unknown param {key!r} (known: {', '.join(sorted(defaults))})")
        merged[key] = value
    if int(merged["size"]) < 32:
        raise DafslError(f"{where}: param 'size' must be >= 32, got {merged['size']!r}")
    return merged


def check_seed(seed: int, where: str) -> int:
    """Seeds feed ``np.random.SeedSequence``, which needs non-negative integers."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DafslError(f"{where}: seed must be a non-negative int, got {seed!r}")
    return int(seed)


def random_color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    c = rng.integers(lo, hi, size=3)
    return int(c[0]), int(c[1]), int(c[2])


def fill_poly(img: np.ndarray, pts: np.ndarray, color) -> None:
    """Anti-aliased filled polygon from float points (drawn with sub-pixel precision)."""
    cv2.fillPoly(img, [(pts * _SCALE + 0.5).astype(np.int32)], color, cv2.LINE_AA, _SHIFT)


def draw_polyline(img: np.ndarray, pts: np.ndarray, color, thickness: float, closed: bool = False) -> None:
    """Anti-aliased polyline; thickness in px is rounded but never below 1 so details survive."""
    t = max(1, int(round(thickness)))
    cv2.polylines(img, [(pts * _SCALE + 0.5).astype(np.int32)], closed, color, t, cv2.LINE_AA, _SHIFT)


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A uint8 HxWx3 texture: gradient, stripes, checkers or smooth noise blobs."""
    kind = int(rng.integers(4))
    c1 = np.array(random_color(rng), np.float32)
    c2 = np.array(random_color(rng), np.float32)
    ang = rng.uniform(0, np.pi)
    cos, sin = np.float32(np.cos(ang)), np.float32(np.sin(ang))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    u = xx * cos + yy * sin
    if kind == 0:  # linear gradient
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    elif kind == 1:  # stripes, soft or hard
        period = rng.uniform(3.0, 16.0)
        t = 0.5 + 0.5 * np.sin(u * np.float32(2 * np.pi / period) + np.float32(rng.uniform(0, 6.3)))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == 2:  # rotated checkers
        period = np.float32(rng.uniform(4.0, 16.0))
        t = (np.floor(u / period) + np.floor((yy * cos - xx * sin) / period)) % 2
    else:  # smooth noise blobs: upsampled low-res noise
        cells = int(rng.integers(2, 7))
        t = cv2.resize(rng.random((cells, cells), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    # Quantise the pattern to 8 bits and colour it through a LUT: much cheaper than float RGB maths.
    t8 = np.clip(np.broadcast_to(t, (h, w)) * 255.0, 0, 255).astype(np.uint8)
    lut = (c1 + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * (c2 - c1)).astype(np.uint8)
    return cv2.LUT(cv2.merge([t8, t8, t8]), lut.reshape(256, 1, 3))


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 background: a base texture, sometimes blended with a second one.

    uint8 because cv2 only anti-aliases on 8-bit images (it silently drops LINE_AA on float).
    """
    bg = texture(rng, size, size)
    if rng.random() < 0.4:
        alpha = rng.uniform(0.2, 0.5)
        bg = cv2.addWeighted(bg, 1 - alpha, texture(rng, size, size), alpha, 0.0)
    return bg


@functools.lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """A fixed table of unit Gaussian noise; scenes take random crops of it.

    Drawing fresh noise per scene dominated render time; a constant table (same for
    every process) keeps scenes deterministic and the noise pattern varies by crop offset.
    """
    return np.random.default_rng(0x0153).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def add_clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Thin unannotated lines and small specks: edges that are not objects."""
    s = img.shape[0]
    for _ in range(count):
        pts = rng.uniform(-0.1 * s, 1.1 * s, size=(int(rng.integers(2, 4)), 2))
        if rng.random() < 0.6:
            draw_polyline(img, pts, random_color(rng), rng.uniform(1, 3))
        else:
            r = rng.uniform(1.0, 0.03 * s + 1.0)
            fill_poly(img, pts[0] + r * UNIT_CIRCLE, random_color(rng))


def add_clutter_shapes(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Solid random blobs, boxes and triangles: background edges and colours to ignore."""
    s = img.shape[0]
    for _ in range(count):
        centre, r = rng.uniform(0, s, 2), rng.uniform(0.04, 0.25) * s
        k = int(rng.choice([3, 4, 40]))
        if k == 40:  # irregular blob
            pts = UNIT_CIRCLE * rng.uniform(0.6, 1.0, (40, 1)).repeat(2, 1)
            pts = (pts + np.roll(pts, 1, 0) + np.roll(pts, -1, 0)) / 3
        else:
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            pts = np.stack([np.cos(ang), np.sin(ang)], 1)
        fill_poly(img, centre + r * pts * [1.0, rng.uniform(0.4, 1.0)], random_color(rng))


def apply_nuisance(img: np.ndarray, rng: np.random.Generator, p: dict[str, Any]) -> np.ndarray:
    """Photometric nuisance chain: light gradient -> blur -> noise -> JPEG. Returns uint8 RGB."""
    h, w = img.shape[:2]
    ang = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0, float(p["lighting"]))
    gain = rng.uniform(0.8, 1.15)
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    light = np.float32(gain) * (1 + np.float32(amp) * (xx * np.float32(np.cos(ang)) + yy * np.float32(np.sin(ang))))
    f = img.astype(np.float32)
    f *= light[:, :, None]
    blur = rng.random() < p["blur_prob"]
    sigma = rng.uniform(*p["blur_sigma"])
    if blur:
        f = cv2.GaussianBlur(f, (0, 0), sigma)
    std = rng.uniform(*p["noise_std"])
    oy, ox = rng.integers(0, max(h, w), size=2)
    if std > 0:
        bank = _noise_bank(max(h, w))
        f += bank[oy:oy + h, ox:ox + w] * np.float32(std)
    out = np.clip(f, 0, 255, out=f).astype(np.uint8)
    jpeg = rng.random() < p["jpeg_prob"]
    quality = int(rng.integers(int(p["jpeg_quality"][0]), int(p["jpeg_quality"][1]) + 1))
    if jpeg:
        # cv2's codec assumes BGR; swap so chroma subsampling hits the real chroma.
        ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
    return out


def iou_xywh(a, b) -> float:
    """IoU of two COCO xywh boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def bbox_of(pts: np.ndarray) -> list[float]:
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


# ----------------------------------------------------------------- shapes scene
def _outline(category: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit-sized outline (and inner hole for rings) in local coordinates, roughly in [-1, 1]."""
    if category == "ellipse":
        return UNIT_CIRCLE * [1.0, rng.uniform(0.45, 1.0)], None
    if category == "rectangle":
        hy = rng.uniform(0.35, 1.0)
        return np.array([[-1, -hy], [1, -hy], [1, hy], [-1, hy]], float), None
    if category == "triangle":
        ang = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6]) + rng.uniform(-0.35, 0.35, 3)
        return np.stack([np.cos(ang), np.sin(ang)], 1), None
    if category == "star":
        k = int(rng.integers(5, 8))
        ang = np.arange(2 * k) * np.pi / k - np.pi / 2
        r = np.where(np.arange(2 * k) % 2 == 0, 1.0, rng.uniform(0.35, 0.55))
        return np.stack([r * np.cos(ang), r * np.sin(ang)], 1), None
    if category == "ring":
        return UNIT_CIRCLE.copy(), UNIT_CIRCLE * rng.uniform(0.4, 0.7)
    raise DafslError(f"shapes: unknown category {category!r}")


def _paste_textured(img: np.ndarray, rng: np.random.Generator, outer: np.ndarray,
                    hole: np.ndarray | None) -> None:
    """Alpha-blend a fresh texture through an anti-aliased mask, only over the shape's patch."""
    h, w = img.shape[:2]
    x0, y0 = np.maximum(np.floor(outer.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(outer.max(0)).astype(int) + 2, [w, h])
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fill_poly(mask, outer - [x0, y0], 255)
    if hole is not None:
        fill_poly(mask, hole - [x0, y0], 0)
    tex = texture(rng, y1 - y0, x1 - x0).astype(np.float32)
    a = mask.astype(np.float32)[:, :, None] / 255.0
    patch = img[y0:y1, x0:x1]
    patch[...] = np.clip(patch * (1 - a) + tex * a, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # an outline sharpens the boundary cue half the time
        draw_polyline(img, outer, random_color(rng), 1.0, closed=True)


def render_scene(seed: int, params: dict | None = None) -> tuple[np.ndarray, list[dict]]:
    """Render one shapes scene.

    Returns ``(image, objects)``: an HxWx3 uint8 RGB image and a list of
    ``{"bbox": [x, y, w, h], "category": str}`` (COCO xywh, float, inside the image).
    Deterministic: the same seed and params give byte-identical output.
    """
    p = merge_params(DEFAULT_PARAMS, params, "shapes")
    rng = np.random.default_rng([check_seed(seed, "shapes"), 0x5A4E])
    size = int(p["size"])
    img = textured_background(rng, size)
    add_clutter(img, rng, int(rng.integers(p["clutter"][0], p["clutter"][1] + 1)))
    n = int(rng.integers(p["min_objects"], p["max_objects"] + 1))
    objects: list[dict] = []
    for _ in range(n):
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        outer, hole = _outline(category, rng)
        ang = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        outer, hole = outer @ rot.T, None if hole is None else hole @ rot.T
        side = max(np.ptp(outer[:, 0]), np.ptp(outer[:, 1]))
        for _attempt in range(30):  # rejection sampling; a crowded scene just gets fewer objects
            scale = rng.uniform(*p["object_size"]) * size / side
            box = bbox_of(outer * scale)
            cx = rng.uniform(-box[0], size - box[0] - box[2])
            cy = rng.uniform(-box[1], size - box[1] - box[3])
            box = [box[0] + cx, box[1] + cy, box[2], box[3]]
            if box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= size and box[1] + box[3] <= size \
                    and all(iou_xywh(box, o["bbox"]) < p["max_iou"] for o in objects):
                break
        else:
            continue
        shift = np.array([cx, cy])
        _paste_textured(img, rng, outer * scale + shift, None if hole is None else hole * scale + shift)
        objects.append({"bbox": box, "category": category})
    return apply_nuisance(img, rng, p), objects


def render_split(seed_start: int, count: int, params: dict | None = None) -> Iterator[tuple[int, np.ndarray, list[dict]]]:
    """Yield ``(scene_seed, image, objects)`` for seeds ``seed_start .. seed_start + count - 1``.

    Params are validated at call time, before anything is rendered.
    """
    p = merge_params(DEFAULT_PARAMS, params, "shapes")
    check_seed(seed_start, "shapes")
    return ((seed, *render_scene(seed, p)) for seed in range(seed_start, seed_start + count))
