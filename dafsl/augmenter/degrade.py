"""Pass generated faces through the degradation chain real scene crops went through.

A real face crop is a face drawn into a scene at some size (20-60 px here), then blurred,
noised and JPEG-compressed with halved colour resolution as part of the whole scene, and
finally cut out and resampled to the working resolution. A GAN's output skips all of
that; left clean (or with its own colour noise), "generated" becomes a cue a classifier
can learn instead of the class. :func:`degrade_faces` gives every generated face one draw
of the same chain:

1. upsample the r-px face to a side ``s`` drawn from the crop sides of the training
   split's faces (:func:`scene_face_sides`; any COCO face set has them);
2. Gaussian blur with probability ``blur_prob``, sigma ~ U(``blur_sigma``);
3. additive Gaussian noise, std ~ U(``noise_std``) grey levels;
4. JPEG with probability ``jpeg_prob``, quality ~ U(``jpeg_quality``), OpenCV's default
   4:2:0 chroma subsampling;
5. resample back to r px as :func:`dafsl.augmenter.data.crop_face` does (area
   interpolation down, bilinear up).

The defaults in ``augmenter.degrade`` are the renderer's nuisance settings
(``dafsl.synth.faces.DEFAULT_PARAMS``); on other data, set them to what its photos show.
"""
from __future__ import annotations

import cv2
import numpy as np

from dafsl.data import Split
from dafsl.errors import DafslError

KEYS = ("enabled", "blur_prob", "blur_sigma", "noise_std", "jpeg_prob", "jpeg_quality")


def check_params(p: dict) -> dict:
    """``augmenter.degrade`` validated: every key present, ranges as [lo, hi] with lo <= hi."""
    missing = [k for k in KEYS if k not in p]
    if missing:
        raise DafslError(f"augmenter.degrade.{missing[0]}: missing")
    for key in ("blur_sigma", "noise_std", "jpeg_quality"):
        lo_hi = p[key]
        if not (isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2 and 0 <= lo_hi[0] <= lo_hi[1]):
            raise DafslError(f"augmenter.degrade.{key}: expected [lo, hi] with 0 <= lo <= hi, got {lo_hi!r}")
    for key in ("blur_prob", "jpeg_prob"):
        if not 0.0 <= float(p[key]) <= 1.0:
            raise DafslError(f"augmenter.degrade.{key}: expected a probability in [0, 1], got {p[key]!r}")
    return p


def scene_face_sides(split: Split, margin: float) -> np.ndarray:
    """Crop side in scene pixels, ``max(w, h) * (1 + margin)``, of every face of ``split``."""
    sides = [max(float(a["bbox"][2]), float(a["bbox"][3])) * (1.0 + margin)
             for a in split.coco["annotations"]]
    if not sides:
        raise DafslError(f"{split.label}: no face boxes to take the scene face sizes from")
    return np.asarray(sides, dtype=np.float32)


def degrade_face(face: np.ndarray, side: int, rng: np.random.Generator, p: dict) -> np.ndarray:
    """One (r, r, 3) uint8 face through the chain at scene side ``side`` px -> (r, r, 3) uint8."""
    r = face.shape[0]
    side = max(4, int(side))
    up = cv2.resize(face, (side, side), interpolation=cv2.INTER_LINEAR if side > r else cv2.INTER_AREA)
    f = up.astype(np.float32)
    blur, sigma = rng.random() < float(p["blur_prob"]), rng.uniform(*p["blur_sigma"])
    if blur and sigma > 0:
        f = cv2.GaussianBlur(f, (0, 0), sigma)
    std = rng.uniform(*p["noise_std"])
    if std > 0:
        f += rng.standard_normal(f.shape, dtype=np.float32) * np.float32(std)
    out = np.clip(f, 0, 255).astype(np.uint8)
    jpeg = rng.random() < float(p["jpeg_prob"])
    quality = int(rng.integers(int(p["jpeg_quality"][0]), int(p["jpeg_quality"][1]) + 1))
    if jpeg:  # cv2's codec assumes BGR; swap so that chroma subsampling hits the real chroma
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(out[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    interp = cv2.INTER_AREA if side >= r else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(out), (r, r), interpolation=interp)


def degrade_faces(faces: np.ndarray, sides: np.ndarray, p: dict, seed: int) -> np.ndarray:
    """(N, r, r, 3) uint8 -> the same faces through the chain (one draw each, seeded);
    ``sides`` is the pool of scene crop sides each face's size is drawn from. With
    ``p["enabled"]`` false the faces come back unchanged."""
    if not p["enabled"] or len(faces) == 0:
        return faces
    rng = np.random.default_rng(seed)
    picks = rng.choice(np.asarray(sides), size=len(faces))
    return np.stack([degrade_face(f, int(round(s)), rng, p) for f, s in zip(faces, picks)])
