"""Embedded Omniglot-like character set ("glyphs"): stroke-drawn characters, no download.

Three levels of randomness, each a pure function of ``(seed, ...)``:

* **alphabet** ``(seed, set, a)``: a stroke *style* -- preferences over primitive strokes
  (line, arc, hook, loop, zigzag, wave, dot), a small library of parts that its
  characters reuse (so characters of one alphabet look alike, as in Omniglot), a set of
  preferred angles, how often strokes join, a stroke count range and a pen width.
* **character** ``(seed, set, a, c)``: 2-4 strokes composed from the alphabet's parts,
  placed, rotated and scaled, then fitted into the image box.
* **drawer** ``(seed, set, a, c, d)``: one of ~20 people drawing the character: control
  point noise, per-stroke offsets, pen width, a small affine (rotation, scale, shear,
  translation) and, rarely, a dropped stroke (only when 3 or more remain).

Strokes are Catmull-Rom splines drawn anti-aliased at ``render_scale`` x the output size
and area-downsampled. Images are uint8, ink = 255 on background 0. Background and
evaluation alphabets use different seed streams, so the two sets are disjoint.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from dafsl.errors import DafslError

SETS = ("background", "evaluation")
PRIMITIVES = ("line", "arc", "hook", "loop", "zigzag", "wave", "dot")

DEFAULT_PARAMS: dict[str, Any] = {
    "seed": 0,
    "background_alphabets": 30,
    "evaluation_alphabets": 20,
    "characters": [20, 30],      # characters per alphabet, inclusive range
    "drawers": 20,
    "render_scale": 4,           # draw at this multiple of the output size, then downsample
    # drawer jitter (units: the image side is 2.0)
    "point_jitter": 0.07,        # std of each control point's noise
    "stroke_shift": 0.05,        # std of each stroke's offset
    "rotation": 15.0,            # std, degrees
    "scale": 0.12,               # std of log scale
    "shear": 0.12,               # std
    "translate": 0.12,           # std
    "pen_width": [0.035, 0.06],  # pen width as a fraction of the image side (per alphabet)
    "width_jitter": 0.2,         # relative std of a drawer's pen width
    "omit_prob": 0.04,           # chance a drawer leaves out one stroke (>= 3 strokes)
}


def merge_params(params: dict | None, where: str = "glyphs") -> dict[str, Any]:
    """``DEFAULT_PARAMS`` updated with ``params``; unknown keys are a :class:`DafslError`."""
    merged = dict(DEFAULT_PARAMS)
    for key, value in (params or {}).items():
        if key not in DEFAULT_PARAMS:
            raise DafslError(f"{where}: unknown glyphs param {key!r} "
                             f"(known: {', '.join(sorted(DEFAULT_PARAMS))})")
        merged[key] = value
    lo, hi = merged["characters"]
    if not 1 <= lo <= hi or merged["drawers"] < 1:
        raise DafslError(f"{where}: glyphs needs 1 <= characters[0] <= characters[1] and "
                         f"drawers >= 1, got {merged['characters']} and {merged['drawers']}")
    return merged


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _rot(deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])


# ------------------------------------------------------------------ primitives
def _primitive(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Control points (K, 2) of one primitive in its own frame, roughly unit size."""
    if kind == "line":
        return np.array([[-0.5, 0.0], [0.0, rng.normal(0, 0.05)], [0.5, 0.0]])
    if kind == "arc":
        sweep = rng.uniform(np.pi / 2, 1.5 * np.pi)
        t = np.linspace(0, sweep, 6) - sweep / 2
        return 0.5 * np.stack([np.cos(t), np.sin(t)], 1)
    if kind == "hook":
        curl = rng.uniform(0.15, 0.3) * rng.choice([-1, 1])
        t = np.linspace(0, np.pi * rng.uniform(0.7, 1.2), 4)
        end = np.stack([curl - curl * np.cos(t), 0.4 + np.abs(curl) * np.sin(t)], 1)
        return np.concatenate([[[0.0, -0.5], [0.0, 0.0]], end])
    if kind == "loop":
        t = np.linspace(0, 2 * np.pi, 9)
        ecc = rng.uniform(0.5, 1.0)
        return 0.35 * np.stack([np.cos(t), ecc * np.sin(t)], 1)
    if kind == "zigzag":
        n = int(rng.integers(3, 6))
        x = np.linspace(-0.5, 0.5, n)
        y = 0.25 * np.where(np.arange(n) % 2 == 0, -1.0, 1.0)
        return np.stack([x, y], 1)
    if kind == "wave":
        x = np.linspace(-0.5, 0.5, 7)
        return np.stack([x, 0.2 * np.sin(x * 2 * np.pi * rng.uniform(0.8, 1.4))], 1)
    return np.zeros((1, 2))  # dot


def _alphabet(seed: int, set_idx: int, a: int, p: dict) -> dict:
    """An alphabet's stroke style and its library of parts."""
    rng = _rng(seed, set_idx, a)
    prefs = rng.dirichlet(np.full(len(PRIMITIVES), 0.6))
    prefs[-1] *= 0.4  # dots are accents, never the bulk of a script
    prefs /= prefs.sum()
    step = rng.choice([15.0, 30.0, 45.0, 90.0, 0.0])  # 0: any angle
    parts = []
    for _ in range(int(rng.integers(5, 10))):
        kind = PRIMITIVES[rng.choice(len(PRIMITIVES), p=prefs)]
        parts.append((kind, _primitive(kind, rng)))
    lo = int(rng.integers(2, 4))
    pw = p["pen_width"]
    return {"parts": parts, "angle_step": step, "join": rng.uniform(0.2, 0.8),
            "strokes": (lo, lo + int(rng.integers(0, 2))), "size": rng.uniform(0.6, 1.1),
            "width": rng.uniform(pw[0], pw[1]), "fresh": rng.uniform(0.0, 0.3), "prefs": prefs}


def _character(seed: int, set_idx: int, a: int, c: int, style: dict) -> list[tuple[str, np.ndarray]]:
    """A character: a list of ``(kind, control points)`` fitted into [-0.72, 0.72]^2."""
    rng = _rng(seed, set_idx, a, c, 1_000_003)
    n = int(rng.integers(style["strokes"][0], style["strokes"][1] + 1))
    strokes: list[tuple[str, np.ndarray]] = []
    while len(strokes) < n:
        if rng.random() < style["fresh"]:
            kind = PRIMITIVES[rng.choice(len(PRIMITIVES), p=style["prefs"])]
            pts = _primitive(kind, rng)
        else:
            kind, pts = style["parts"][int(rng.integers(len(style["parts"])))]
        if kind == "dot" and not strokes:
            continue  # a character starts with a real stroke
        step = style["angle_step"]
        ang = rng.uniform(0, 360) if step == 0 else step * rng.integers(0, int(360 // step))
        flip = np.diag([1.0, rng.choice([-1.0, 1.0])])
        pts = pts @ flip @ _rot(ang).T * style["size"] * rng.uniform(0.6, 1.3)
        if strokes and rng.random() < style["join"] and kind != "dot":
            prev = strokes[int(rng.integers(len(strokes)))][1]
            anchor = prev[int(rng.choice([0, len(prev) - 1, len(prev) // 2]))]
            pts = pts - pts[0] + anchor
        else:
            pts = pts + rng.uniform(-0.6, 0.6, size=2)
        strokes.append((kind, pts))
    allpts = np.concatenate([s for _, s in strokes])
    lo, hi = allpts.min(0), allpts.max(0)
    scale = 1.44 / max(float((hi - lo).max()), 0.3)
    centre = (lo + hi) / 2
    return [(k, (s - centre) * scale) for k, s in strokes]


def _spline(pts: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """Catmull-Rom spline through the control points (a polyline of dense points)."""
    if len(pts) < 3:
        return np.linspace(pts[0], pts[-1], per_segment + 1) if len(pts) == 2 else pts
    p = np.concatenate([pts[:1], pts, pts[-1:]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(pts[-1:])
    return np.concatenate(out)


def _draw(strokes, rng: np.random.Generator, style: dict, p: dict, size: int) -> np.ndarray:
    """One drawer's rendering of a character: uint8 (size, size), ink 255."""
    hi = size * int(p["render_scale"])
    canvas = np.zeros((hi, hi), np.uint8)
    if len(strokes) >= 3 and rng.random() < p["omit_prob"]:
        drop = int(rng.integers(1, len(strokes)))  # never the first (main) stroke
        strokes = strokes[:drop] + strokes[drop + 1:]
    sh = rng.normal(0, p["shear"])
    m = _rot(rng.normal(0, p["rotation"])) @ np.array([[1.0, sh], [0.0, 1.0]])
    m = m * np.exp(rng.normal(0, p["scale"]))
    shift = rng.normal(0, p["translate"], size=2)
    width = style["width"] * max(0.4, 1 + rng.normal(0, p["width_jitter"])) * hi
    thick = max(1, int(round(width)))
    for kind, pts in strokes:
        pts = pts + rng.normal(0, p["point_jitter"], size=pts.shape) \
            + rng.normal(0, p["stroke_shift"], size=2)
        pts = pts @ m.T + shift
        px = (pts + 1.0) * 0.5 * hi
        if kind == "dot":
            c = (px[0] * 16 + 0.5).astype(np.int64)
            cv2.circle(canvas, (int(c[0]), int(c[1])), int(round(width * 0.8 * 16)), 255,
                       -1, cv2.LINE_AA, 4)
        else:
            line = (_spline(px) * 16 + 0.5).astype(np.int32)
            cv2.polylines(canvas, [line], False, 255, thick, cv2.LINE_AA, 4)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


def character_counts(params: dict | None = None) -> dict[str, list[int]]:
    """Characters per alphabet, for each set (cheap: no rendering)."""
    p = merge_params(params)
    lo, hi = p["characters"]
    out = {}
    for s, name in enumerate(SETS):
        n = p[f"{name}_alphabets"]
        out[name] = [int(_rng(p["seed"], s, a, 7).integers(lo, hi + 1)) for a in range(n)]
    return out


def render_set(params: dict | None = None, image_size: int = 28) -> dict[str, Any]:
    """Render every alphabet of both sets.

    Returns ``images`` uint8 (N, S, S) ink 255; ``labels`` int64 (N,) class index;
    ``drawers`` int64 (N,); ``classes`` list of ``"<set>NN/characterNN"``; ``class_set``
    int64 (C,) 0 background / 1 evaluation; ``class_alphabet`` int64 (C,) alphabet index
    within its set. Images are ordered class by class, drawer by drawer.
    """
    if image_size < 8:
        raise DafslError(f"glyphs: image_size must be >= 8, got {image_size}")
    p = merge_params(params)
    counts = character_counts(p)
    d = int(p["drawers"])
    images, classes, class_set, class_alpha = [], [], [], []
    for s, name in enumerate(SETS):
        for a, n_chars in enumerate(counts[name]):
            style = _alphabet(p["seed"], s, a, p)
            for c in range(n_chars):
                strokes = _character(p["seed"], s, a, c, style)
                for k in range(d):
                    rng = _rng(p["seed"], s, a, c, k)
                    images.append(_draw(strokes, rng, style, p, image_size))
                classes.append(f"{name}{a + 1:02d}/character{c + 1:02d}")
                class_set.append(s)
                class_alpha.append(a)
    n_classes = len(classes)
    return {"images": np.stack(images), "labels": np.repeat(np.arange(n_classes), d),
            "drawers": np.tile(np.arange(d), n_classes), "classes": classes,
            "class_set": np.array(class_set, np.int64),
            "class_alphabet": np.array(class_alpha, np.int64)}
