""""synthfaces": procedurally rendered face scenes with box, gender and identity labels.

Each face is drawn from *identity attributes* (stable across scenes, drawn from
``(identity, gender)`` with their own RNG) and *scene nuisances* (pose, scale,
lighting, blur, noise, JPEG, clutter, hard negatives) drawn from the scene seed.

The gender cues are weak and overlapping on purpose: each is a simple
class-conditional Beta or Bernoulli distribution (see ``BETA_CUES`` and
``BERNOULLI_CUES``), so the exact class posterior is known and
:func:`bayes_accuracy` gives the ceiling any classifier can reach (~0.93). The
renderer maps every cue monotonically onto the drawing (longer hair is drawn
longer, a wider jaw is drawn wider, ...), so a CNN can in principle learn them.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator

import numpy as np
from scipy import stats
from scipy.special import expit

from dafsl.errors import DafslError
from dafsl.synth.shapes import (UNIT_CIRCLE, add_clutter, add_clutter_shapes, apply_nuisance,
                                bbox_of, check_seed, draw_polyline, fill_poly, iou_xywh,
                                merge_params, random_color, textured_background)

CLASSES = ("male", "female")

DEFAULT_PARAMS: dict[str, Any] = {
    "size": 128,                        # square image side in px
    "min_faces": 1,
    "max_faces": 3,
    "face_size": (24 / 128, 60 / 128),  # box's longer side as a fraction of the image side
    "rotation_deg": 20.0,               # in-plane rotation, uniform in +-this
    "max_face_iou": 0.3,
    "hard_negatives": (0, 2),           # face-like non-faces, unannotated
    "clutter": (2, 8),                  # random solid shapes/blobs on the background
    "lighting": 0.35,                   # max amplitude of the multiplicative light gradient
    "blur_prob": 0.3,
    "blur_sigma": (0.4, 1.2),
    "noise_std": (0.0, 8.0),            # additive Gaussian noise, in grey levels
    "jpeg_prob": 0.8,
    "jpeg_quality": (35, 95),
}

# Class-conditional cue distributions, index 0 = male, 1 = female. Sized so that
# each cue alone gives 55-77% accuracy and all together ~93% (see bayes_accuracy).
BETA_CUES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "hair_length": ((2.3, 4.0), (4.0, 2.3)),
    "jaw_width": ((5.0, 3.2), (3.2, 5.0)),
    "brow_thickness": ((5.0, 3.2), (3.2, 5.0)),
    "lip_size": ((4.0, 4.8), (4.8, 4.0)),
    "lip_saturation": ((3.0, 4.2), (4.2, 3.0)),
}
BERNOULLI_CUES: dict[str, tuple[float, float]] = {
    "earrings": (0.10, 0.40),
    "glasses": (0.30, 0.20),
    "facial_hair": (0.35, 0.0),  # some males only
}
CUE_NAMES: tuple[str, ...] = tuple(BETA_CUES) + tuple(BERNOULLI_CUES)

# Distinct RNG streams so that, e.g., the face count never depends on render details.
_COUNT, _SCENE, _IDENTITY, _SPLIT, _BAYES = 0xC0, 0x5C, 0x1D, 0x59, 0xBA

_SKIN_LIGHT, _SKIN_DARK = np.array([240.0, 206, 180]), np.array([88.0, 56, 38])
_HAIR = np.array([[28, 22, 20], [58, 40, 28], [98, 64, 40], [140, 72, 36],
                  [192, 156, 96], [226, 202, 142], [150, 146, 140]], float)
_HAIR_P = np.array([0.25, 0.25, 0.2, 0.08, 0.1, 0.05, 0.07])
_EYES = np.array([[60, 40, 25], [95, 62, 30], [70, 112, 160], [80, 120, 70], [30, 25, 25]], float)
_TOP = np.stack([np.cos(np.linspace(np.pi, 2 * np.pi, 21)), np.sin(np.linspace(np.pi, 2 * np.pi, 21))], 1)


def _params(params: dict | None) -> dict[str, Any]:
    p = merge_params(DEFAULT_PARAMS, params, "synthfaces")
    if not 1 <= int(p["min_faces"]) <= int(p["max_faces"]):
        raise DafslError(f"synthfaces: need 1 <= min_faces <= max_faces, got {p['min_faces']}, {p['max_faces']}")
    return p


def _gender_index(gender: str) -> int:
    if gender not in CLASSES:
        raise DafslError(f"synthfaces: gender must be one of {CLASSES}, got {gender!r}")
    return CLASSES.index(gender)


# ------------------------------------------------------------------ attributes
def sample_cues(rng: np.random.Generator, genders: np.ndarray) -> dict[str, np.ndarray]:
    """Draw every cue for each entry of ``genders`` (0 = male, 1 = female)."""
    g = np.asarray(genders)
    out = {}
    for name, (m, f) in BETA_CUES.items():
        out[name] = rng.beta(np.where(g == 0, m[0], f[0]), np.where(g == 0, m[1], f[1]))
    for name, (pm, pf) in BERNOULLI_CUES.items():
        out[name] = (rng.random(g.shape) < np.where(g == 0, pm, pf)).astype(np.float64)
    return out


def cue_log_likelihood(cues: dict[str, np.ndarray], gender: int) -> np.ndarray:
    """Exact log p(cues | gender) under the factorised generator distributions."""
    total = 0.0
    for name, params in BETA_CUES.items():
        total = total + stats.beta.logpdf(cues[name], *params[gender])
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer for impossible cues
        for name, probs in BERNOULLI_CUES.items():
            total = total + stats.bernoulli.logpmf(np.asarray(cues[name]).astype(int), probs[gender])
    return np.asarray(total)


def bayes_accuracy(n: int = 200_000, seed: int = 0) -> float:
    """Monte-Carlo estimate of E[max_c p(c | cues)] with equal class priors.

    The best accuracy any classifier can reach from the rendered attributes
    (rendering only loses information).
    """
    rng = np.random.default_rng([check_seed(seed, "bayes_accuracy"), _BAYES])
    genders = rng.integers(2, size=int(n))
    cues = sample_cues(rng, genders)
    p_male = expit(cue_log_likelihood(cues, 0) - cue_log_likelihood(cues, 1))
    return float(np.maximum(p_male, 1 - p_male).mean())


def identity_attributes(identity: int, gender: str) -> dict[str, float]:
    """Stable look of one identity: the gender cues plus class-independent appearance.

    Keys in ``CUE_NAMES`` and ``skin_tone`` are reported in annotations; the rest
    (hair colour, eye colour, facial-hair style, face width, hair parting) only drive rendering.
    """
    gi = _gender_index(gender)
    if isinstance(identity, bool) or not isinstance(identity, (int, np.integer)) or identity < 0:
        raise DafslError(f"synthfaces: identity must be a non-negative int, got {identity!r}")
    return dict(_identity_look(int(identity), gi))


def _draw_look(identity: int, gi: int) -> dict[str, float]:
    # Scalar draws from exactly the distributions of sample_cues (array calls cost ~10x more).
    rng = np.random.default_rng([identity, gi, _IDENTITY])
    look = {name: float(rng.beta(*ab[gi])) for name, ab in BETA_CUES.items()}
    look.update({name: float(rng.random() < pr[gi]) for name, pr in BERNOULLI_CUES.items()})
    look["skin_tone"] = float(rng.random())
    look["hair_color"] = float(rng.choice(len(_HAIR), p=_HAIR_P))
    look["eye_color"] = float(rng.integers(len(_EYES)))
    look["beard_style"] = float(rng.integers(3))  # moustache / full beard / goatee
    look["face_width"] = float(rng.uniform(0.92, 1.06))
    look["parting"] = float(rng.uniform(-0.5, 0.5))
    return look


_identity_look = functools.lru_cache(maxsize=4096)(_draw_look)  # identities recur across scenes


# ------------------------------------------------------------------ face geometry
def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return UNIT_CIRCLE * [rx, ry] + [cx, cy]


def _head_geometry(look: dict[str, float]) -> dict[str, np.ndarray]:
    """Head, hair and ear outlines in local units (head half-width ~1, y down)."""
    a, b = look["face_width"], 1.28 * look["face_width"]
    c, s = UNIT_CIRCLE[:, 0], UNIT_CIRCLE[:, 1]
    jaw, hl = look["jaw_width"], look["hair_length"]
    lower = np.clip(s, 0, None)
    # Narrow jaw: the lower face tapers to a pointed chin; wide jaw: squarer, wider chin.
    taper = 1 - (0.75 - 0.7 * jaw) * lower ** 2
    squ = np.sign(c) * np.abs(c) ** (1 - 0.75 * jaw * lower)
    head = np.stack([a * squ * taper, b * s], 1)
    # Hair behind the head: a cap that grows into a curtain reaching lower with hair_length.
    y_end = max(0.0, b * (-0.1 + 1.55 * hl))
    w_end = a * (1.12 + 0.25 * hl)
    back = np.concatenate([_TOP * [1.12 * a, 1.1 * b],
                           [[w_end, y_end], [0.0, y_end + 0.12 * hl * b], [-w_end, y_end]]])
    # Hair in front: top cap with a fringe line plus side locks down to the same length.
    lock = a * (0.1 + 0.15 * hl)
    ys = max(y_end, -0.25 * b)
    xs = np.linspace(0.8 * a, -0.8 * a, 9)
    fringe = -b * (0.47 + 0.1 * (1 - (xs / a - look["parting"]) ** 2))
    front = np.concatenate([_TOP * [1.1 * a, 1.1 * b],
                            [[1.1 * a, ys], [1.1 * a - lock, ys], [0.84 * a, -0.4 * b]],
                            np.stack([xs, fringe], 1),
                            [[-0.84 * a, -0.4 * b], [-1.1 * a + lock, ys], [-1.1 * a, ys]]])
    ears = [_ellipse(sx * 0.98 * a, -0.02 * b, 0.15 * a, 0.24 * b) for sx in (-1, 1)]
    return {"a": np.float64(a), "b": np.float64(b), "head": head, "back": back, "front": front,
            "ears": ears}


def _draw_face(img: np.ndarray, look: dict[str, float], geo: dict, m: np.ndarray, t: np.ndarray,
               rng: np.random.Generator) -> None:
    """Draw one face (with neck and shoulders) through the local->image affine ``p @ m.T + t``."""
    a, b = float(geo["a"]), float(geo["b"])
    px = float(np.sqrt(abs(np.linalg.det(m))))  # pixels per local unit
    light = rng.uniform(0.85, 1.12)
    skin = (_SKIN_LIGHT + look["skin_tone"] * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0, 4, 3)) * light
    hair = (_HAIR[int(look["hair_color"])] + rng.normal(0, 6, 3)) * light
    cloth = random_color(rng, 20, 235)

    mt = m.T

    def col(c) -> tuple[float, float, float]:
        return (min(255.0, max(0.0, float(c[0]))), min(255.0, max(0.0, float(c[1]))),
                min(255.0, max(0.0, float(c[2]))))

    def poly(pts, c) -> None:
        fill_poly(img, np.asarray(pts, float) @ mt + t, col(c))

    def line(pts, c, width) -> None:
        draw_polyline(img, np.asarray(pts, float) @ mt + t, col(c), width * px)

    poly([[-0.4 * a, 0.5 * b], [0.4 * a, 0.5 * b], [0.45 * a, 2.0 * b], [-0.45 * a, 2.0 * b]], skin * 0.8)
    poly([[-0.55 * a, 1.55 * b], [0, 1.75 * b], [0.55 * a, 1.55 * b], [1.9 * a, 1.95 * b],
          [2.3 * a, 3.2 * b], [-2.3 * a, 3.2 * b], [-1.9 * a, 1.95 * b]], np.array(cloth))
    poly(geo["back"], hair * 0.8)
    for ear in geo["ears"]:
        poly(ear, skin * 0.93)
    poly(geo["head"], skin)
    poly([[0.0, -0.05 * b], [0.1 * a, 0.28 * b], [-0.07 * a, 0.31 * b]], skin * 0.84)
    if look["facial_hair"] and look["beard_style"] == 1:  # full beard along the jaw
        low = geo["head"][geo["head"][:, 1] > 0.1 * b]
        low = low[np.argsort(-np.arctan2(low[:, 1], low[:, 0]))] * 1.03
        poly(np.concatenate([low, [[0.7 * a, 0.28 * b], [0.35 * a, 0.45 * b],
                                   [-0.35 * a, 0.45 * b], [-0.7 * a, 0.28 * b]]])[::-1], hair)
    elif look["facial_hair"] and look["beard_style"] == 2:  # goatee
        poly(_ellipse(0.0, 0.82 * b, 0.24 * a, 0.17 * b), hair)
    # Lips: size and saturation are cues; the colour moves from skin-like to saturated red.
    lip, sat = look["lip_size"], look["lip_saturation"]
    my, hw, hh = 0.56 * b, a * (0.18 + 0.22 * lip), b * (0.04 + 0.11 * lip)
    lip_col = skin * [0.85, 0.68, 0.68] + sat * (np.array([205.0, 35, 70]) * light - skin * [0.85, 0.68, 0.68])
    poly(_ellipse(0.0, my, hw, hh), lip_col)
    smile = rng.uniform(-0.02, 0.06) * b
    line([[-hw, my - smile], [0, my], [hw, my - smile]], lip_col * 0.5, 0.03)
    if look["facial_hair"]:  # every facial-hair style includes a moustache
        poly([[-0.32 * a, 0.56 * b], [-0.2 * a, 0.42 * b], [0, 0.4 * b], [0.2 * a, 0.42 * b],
              [0.32 * a, 0.56 * b], [0.15 * a, 0.48 * b], [0, 0.47 * b], [-0.15 * a, 0.48 * b]], hair)
    gaze = rng.uniform(-0.04, 0.04, 2) * [a, b]
    eye_c = _EYES[int(look["eye_color"])]
    brow = b * (0.05 + 0.17 * look["brow_thickness"])
    bx = np.linspace(0.12 * a, 0.62 * a, 7)
    arch = -0.33 * b - 0.05 * b * np.sin(np.pi * (bx - 0.12 * a) / (0.5 * a))
    for sx in (-1, 1):
        ex, ey = sx * 0.37 * a, -0.1 * b
        poly(_ellipse(ex, ey, 0.18 * a, 0.09 * b), np.array([235.0, 232, 225]) * light)
        poly(_ellipse(ex + gaze[0], ey + gaze[1], 0.085 * b, 0.085 * b), eye_c * light)
        poly(_ellipse(ex + gaze[0], ey + gaze[1], 0.04 * b, 0.04 * b), np.array([10.0, 10, 10]))
        poly(np.concatenate([np.stack([sx * bx, arch - brow / 2], 1),
                             np.stack([sx * bx, arch + brow / 2], 1)[::-1]]), hair * 0.45)
    poly(geo["front"], hair)
    if look["earrings"]:
        metal = np.array([232.0, 192, 60] if rng.random() < 0.6 else [214, 214, 220])
        for sx in (-1, 1):
            line([[sx * 1.0 * a, 0.18 * b], [sx * 1.0 * a, 0.28 * b]], metal * 0.8, 0.05)
            poly(_ellipse(sx * 1.0 * a, 0.36 * b, 0.14 * a, 0.14 * a), metal * light)
    if look["glasses"]:
        frame = np.array(random_color(rng, 0, 90), float)
        for sx in (-1, 1):
            draw_polyline(img, _ellipse(sx * 0.37 * a, -0.1 * b, 0.24 * a, 0.17 * b) @ m.T + t,
                          col(frame), 0.05 * px, closed=True)
            line([[sx * 0.61 * a, -0.12 * b], [sx * 0.98 * a, -0.16 * b]], frame, 0.04)
        line([[-0.13 * a, -0.12 * b], [0.13 * a, -0.12 * b]], frame, 0.04)


def _hard_negative(img: np.ndarray, rng: np.random.Generator, m: np.ndarray, t: np.ndarray) -> None:
    """Face-like non-faces: a featureless head, eye-dots on a non-skin blob, or scrambled features."""
    kind = int(rng.integers(3))
    look = _draw_look(int(rng.integers(1 << 30)), int(rng.integers(2)))  # uncached: one-off looks
    geo = _head_geometry(look)
    skin = _SKIN_LIGHT + look["skin_tone"] * (_SKIN_DARK - _SKIN_LIGHT)
    hair = _HAIR[int(look["hair_color"])]
    tx = lambda pts: np.asarray(pts, float) @ m.T + t  # noqa: E731
    if kind == 0:  # a head with hair but no face
        if rng.random() < 0.6:
            fill_poly(img, tx(geo["back"]), tuple(hair * 0.8))
        fill_poly(img, tx(geo["head"]), tuple(skin))
        if rng.random() < 0.6:
            fill_poly(img, tx(geo["front"]), tuple(hair))
        return
    if kind == 1:  # eye-like dots and a mouth-like bar on a blob that is not skin-coloured
        fill_poly(img, tx(_ellipse(0, 0, 1.0, rng.uniform(0.8, 1.4))), random_color(rng, 0, 256))
        for sx in (-1, 1):
            fill_poly(img, tx(_ellipse(sx * 0.37, -0.12, 0.12, 0.12)), random_color(rng, 0, 80))
        fill_poly(img, tx(_ellipse(0, 0.6, 0.3, 0.06)), random_color(rng, 0, 256))
        return
    fill_poly(img, tx(geo["head"]), tuple(skin))  # scrambled: right parts, wrong places
    spots = rng.uniform(-0.6, 0.6, size=(4, 2)) * [1.0, 1.1]
    for k, (x, y) in enumerate(spots):
        if k < 2:
            fill_poly(img, tx(_ellipse(x, y, 0.09, 0.18)), (235.0, 232.0, 225.0))
            fill_poly(img, tx(_ellipse(x, y, 0.07, 0.07)), (30.0, 25.0, 25.0))
        else:
            fill_poly(img, tx(_ellipse(x, y, 0.06, 0.28)), (180.0, 60.0, 70.0))


# ------------------------------------------------------------------ scenes
def face_count(seed: int, params: dict | None = None) -> int:
    """How many faces :func:`render_scene` draws for ``seed`` (deterministic, min..max_faces)."""
    p = _params(params)
    rng = np.random.default_rng([check_seed(seed, "synthfaces"), _COUNT])
    return int(rng.integers(int(p["min_faces"]), int(p["max_faces"]) + 1))


def _rotation(deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])


def _cover(a: list[float], b: list[float]) -> float:
    """Intersection over the smaller box: IoU alone lets a small face hide behind a big one."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(min(a[2] * a[3], b[2] * b[3]), 1e-9)


def _place(rng: np.random.Generator, pts: np.ndarray, size: int, lo: float, hi: float,
           taken: list[list[float]], max_iou: float, max_cover: float = 0.5
           ) -> tuple[float, np.ndarray, list[float]] | None:
    """Rejection-sample a scale and centre so that the box of ``pts`` fits and overlaps little."""
    side = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])))
    for attempt in range(80):
        shrink = 0.85 ** (attempt // 20)  # crowded scenes fall back to smaller faces
        scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * size * shrink / side
        x0, y0, w, h = bbox_of(pts * scale)
        if w > size or h > size:
            continue
        t = np.array([rng.uniform(-x0, size - x0 - w), rng.uniform(-y0, size - y0 - h)])
        box = [x0 + t[0], y0 + t[1], w, h]
        if all(iou_xywh(box, o) < max_iou and _cover(box, o) < max_cover for o in taken):
            return scale, t, box
    return None


def render_scene(seed: int, faces: list[tuple[str, int]], params: dict | None = None
                 ) -> tuple[np.ndarray, list[dict]]:
    """Render one scene.

    ``faces`` is ``[(gender, identity), ...]`` of length ``face_count(seed, params)``.
    Returns ``(image, annotations)``: an HxWx3 uint8 RGB image and, in the order of
    ``faces``, ``{"bbox": [x, y, w, h], "gender", "identity", "attributes": {cue: float}}``
    with COCO-xywh float boxes around head and hair, fully inside the image.
    Byte-identical for the same seed, faces and params.
    """
    p = _params(params)
    n = face_count(seed, p)
    if len(faces) != n:
        raise DafslError(f"synthfaces: scene {seed} has {n} face slots, got {len(faces)} (gender, identity) pairs")
    size = int(p["size"])
    rng = np.random.default_rng([check_seed(seed, "synthfaces"), _SCENE])
    img = textured_background(rng, size)
    add_clutter_shapes(img, rng, int(rng.integers(p["clutter"][0], p["clutter"][1] + 1)))
    add_clutter(img, rng, int(rng.integers(0, 3)))
    lo, hi = p["face_size"]
    placed, boxes = [], []
    for gender, identity in faces:
        look = identity_attributes(identity, gender)
        geo = _head_geometry(look)
        rot = _rotation(rng.uniform(-1, 1) * float(p["rotation_deg"]))
        outline = np.concatenate([geo["head"], geo["back"], geo["front"], *geo["ears"]]) @ rot.T
        spot = _place(rng, outline, size, lo, hi, boxes, float(p["max_face_iou"]))
        if spot is None:  # only under extreme params; keep the promised count with a tiny face
            spot = _place(rng, outline, size, lo * 0.5, lo * 0.5, [], 1.0, 1.0)
        scale, t, box = spot
        box = [float(v) for v in box]
        placed.append((gender, identity, look, geo, rot * scale, t))
        boxes.append(box)
    # Hard negatives go under the faces and away from them, so they never hide a face.
    for _ in range(int(rng.integers(p["hard_negatives"][0], p["hard_negatives"][1] + 1))):
        outline = _ellipse(0, 0, 1.15, 1.45)
        rot = _rotation(rng.uniform(-180, 180))
        spot = _place(rng, outline @ rot.T, size, lo, hi, boxes, 0.05, 0.1)
        if spot is not None:
            _hard_negative(img, rng, rot * spot[0], spot[1])
    # Draw back to front (by box bottom) so a lower face's shoulders never cover a face.
    for i in sorted(range(n), key=lambda k: boxes[k][1] + boxes[k][3]):
        _, _, look, geo, m, t = placed[i]
        _draw_face(img, look, geo, m, t, rng)
    out = apply_nuisance(img, rng, p)
    annotations = [{"bbox": box, "gender": g, "identity": int(ident),
                    "attributes": {k: look[k] for k in CUE_NAMES + ("skin_tone",)}}
                   for box, (g, ident, look, *_rest) in zip(boxes, placed)]
    return out, annotations


def identity_span(count: int, params: dict | None = None) -> int:
    """Width of the identity-id range a split of ``count`` scenes may use: ``count * max_faces``.

    :func:`render_split` uses ids ``identity_start .. identity_start + identity_span - 1`` at
    most, so splits given ``identity_start`` values this far apart never share an identity.
    """
    return int(count) * int(_params(params)["max_faces"])


def _spread_identities(slots: np.ndarray, scene_of: np.ndarray, per: int, rng: np.random.Generator) -> None:
    """Swap slots so that no identity shows up twice in one scene (best effort, in place)."""
    n = len(slots)

    def fits(i: int, slot: int) -> bool:
        g = i // per
        return all(scene_of[slots[j]] != scene_of[slot] for j in range(g * per, min(n, g * per + per)) if j != i)

    for i in range(n):
        if fits(i, slots[i]):
            continue
        for j in rng.integers(0, n, size=30):
            if fits(i, slots[j]) and fits(j, slots[i]):
                slots[i], slots[j] = slots[j], slots[i]
                break


def _per_identity(value: int | dict | None, few_shot: bool) -> tuple[int, int]:
    """(male, female) faces per identity from ``render_split``'s ``faces_per_identity``."""
    if value is None:
        return (2, 1 if few_shot else 2)
    if isinstance(value, dict):
        unknown = set(value) - set(CLASSES)
        if unknown:
            raise DafslError(f"render_split: faces_per_identity has unknown class {sorted(unknown)[0]!r} "
                             f"(known: {', '.join(CLASSES)})")
        per = tuple(value.get(c, _per_identity(None, few_shot)[i]) for i, c in enumerate(CLASSES))
    else:
        per = (value, value)
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in per):
        raise DafslError(f"render_split: faces_per_identity must be ints >= 1, got {value!r}")
    return int(per[0]), int(per[1])


def render_split(seed_start: int, count: int, *, female_faces: int | None = None,
                 female_fraction: float | None = None, identity_start: int,
                 params: dict | None = None, faces_per_identity: int | dict | None = None
                 ) -> Iterator[tuple[int, np.ndarray, list[dict]]]:
    """Yield ``(scene_seed, image, annotations)`` for seeds ``seed_start .. seed_start + count - 1``.

    Genders: give exactly one of ``female_faces`` (exactly that many female faces among
    all the split's face slots, chosen at random, e.g. 10 for the male-heavy train pool) or
    ``female_fraction`` (exactly ``floor(total * fraction + 0.5)`` females). Identities:
    faces of each gender are grouped ``faces_per_identity`` at a time into identities (one
    identity never spans both genders, and is kept out of repeating within a scene); ids lie in
    ``identity_start .. identity_start + identity_span(count) - 1`` (``count * max_faces``).
    ``faces_per_identity`` is an int (both genders) or ``{"male": k, "female": k}``; the
    default ``None`` is 2 per identity, except that in a ``female_faces`` split every female
    face is its own identity: the few shots are that many different people, not k views
    of fewer people.
    """
    p = _params(params)
    if (female_faces is None) == (female_fraction is None):
        raise DafslError("render_split: give exactly one of female_faces or female_fraction")
    per = _per_identity(faces_per_identity, few_shot=female_faces is not None)
    if identity_start < 0:
        raise DafslError("render_split: identity_start must be >= 0")
    seeds = range(int(seed_start), int(seed_start) + int(count))
    counts = np.array([face_count(s, p) for s in seeds], dtype=np.int64)
    total = int(counts.sum())
    if female_faces is not None:
        n_female = int(female_faces)
        if not 0 <= n_female <= total:
            raise DafslError(f"render_split: female_faces={female_faces} but the split has {total} face slots")
    else:
        if not 0.0 <= float(female_fraction) <= 1.0:
            raise DafslError(f"render_split: female_fraction must be in [0, 1], got {female_fraction!r}")
        n_female = int(np.floor(total * float(female_fraction) + 0.5))
    rng = np.random.default_rng([check_seed(seed_start, "render_split"), int(count), n_female, _SPLIT])
    is_female = np.zeros(total, bool)
    is_female[rng.choice(total, n_female, replace=False)] = True
    scene_of = np.repeat(np.arange(len(counts)), counts)
    ids = np.zeros(total, np.int64)
    next_id = 0
    for female in (False, True):
        slots = rng.permutation(np.flatnonzero(is_female == female))
        _spread_identities(slots, scene_of, per[int(female)], rng)
        group = np.arange(len(slots)) // per[int(female)]
        ids[slots] = next_id + group
        next_id += int(group[-1]) + 1 if len(slots) else 0
    first = np.concatenate([[0], np.cumsum(counts)])
    plan = [(seed, [(CLASSES[int(f)], int(identity_start + i))
                    for f, i in zip(is_female[first[k]:first[k + 1]], ids[first[k]:first[k + 1]])])
            for k, seed in enumerate(seeds)]
    # A generator expression, so the arguments above are checked at call time, not on first next().
    return ((seed, *render_scene(seed, faces, p)) for seed, faces in plan)
