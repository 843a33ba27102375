"""Dataset similarity (seed 001, eq. 1): datasets as descriptor vectors compared with
the Minkowski distance, and the mode choice of ``--kd auto``.

Descriptor (:func:`describe_images`): the mean, over a deterministic sample of
*annotated objects* (box crops resized to 48x48 px, which is what a detector head, a
GAN or a classifier learns from), of a fixed, non-learned feature bank. Nothing is
trained, so two datasets can be compared without any checkpoint:

* colour: 8-bin histograms of R, G and B (3 blocks of 8, each sums to 1);
* hue: 12-bin hue histogram weighted by saturation (1 block of 12, sums to 1);
* gradients: 8-bin gradient-orientation histograms weighted by magnitude, at full and
  half resolution, on the luminance image (2 blocks of 8, each sums to 1);
* texture: 10-bin histogram of uniform 8-neighbour local binary patterns (sums to 1);
* scalars: mean gradient magnitude at both scales / 255 and mean saturation / 255
  (3 values clipped to [0, 1]).

65 values; 7 histogram blocks and 3 bounded scalars. Whole scenes were tried first:
the embedded face and shapes sets share their textured backgrounds on purpose, so
scene statistics could not tell a face set from the shapes set on 48 images, while
the object crops separate them 3-5x beyond the seed-to-seed spread.

Similarity: ``s = 1 - d / d_max(p)`` where ``d_max(p) = (2 * 7 + 3) ** (1 / p)`` (1 for
p = inf) is the largest distance two descriptors can have: two histograms differ by at
most 2 in ``sum |x_i - y_i| ** p`` (disjoint one-hot bins), a scalar in [0, 1] by at most
1. So s is in [0, 1], 1 for identical descriptors, and it falls linearly with eq. 1.

Decision (:func:`decide`), thresholds in the ``similarity:`` config section:
``s >= similar`` → ``pretrained`` (the whole network transfers), ``s < dissimilar`` →
``fixed`` (only the new head trains), in between → ``finetune``. The target size
moves a choice one step towards fewer trained layers when it is below
``min_target_size`` (too few samples to move every weight without overfitting).

Noise (:func:`bootstrap_interval`): a target of 10 objects gives a similarity that moves
by a few hundredths with the choice of the 10 (issue 11: 0.927-0.961 for 10 male and
0.928-0.962 for 10 female faces against the male reference), more than the gap between
the thresholds and the values they separate. So the target's object descriptors are
resampled with replacement ``similarity.bootstrap`` times (seeded by the run's seed),
and a mode is chosen only when the whole ``similarity.confidence`` basic bootstrap
interval lies in its range. Otherwise the decision is "undecided within noise" and falls back to
the mode of the interval's *lower* end, the one with fewer trained layers: it decides as
if the datasets were only as similar as the evidence guarantees at that confidence,
never claiming a similarity the target cannot support, and it errs in the same
direction as the ``min_target_size`` rule (few target samples: train fewer layers).
``bootstrap: 0`` decides on the point estimate alone, as before.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import cv2
import numpy as np

from dafsl.errors import DafslError

CROP_SIZE = 48
HIST_BLOCKS = 7
BOUNDED_SCALARS = 3
DESCRIPTOR_SIZE = 3 * 8 + 12 + 2 * 8 + 10 + BOUNDED_SCALARS  # 65
PS = (1.0, 2.0, math.inf)

# --------------------------------------------------------------------- descriptor


def _orientation_hist(gray: np.ndarray) -> tuple[np.ndarray, float]:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    mag, ang = cv2.cartToPolar(gx, gy)
    # Orientation modulo pi: a dark-to-light edge and its reverse are the same edge.
    bins = ((ang % np.pi) / np.pi * 8).astype(np.int64).clip(0, 7)
    hist = np.bincount(bins.ravel(), weights=mag.ravel(), minlength=8)
    total = hist.sum()
    return (hist / total if total > 0 else np.full(8, 1 / 8)), float(mag.mean())


def _uniform_lbp_hist(gray: np.ndarray) -> np.ndarray:
    """10-bin histogram of uniform LBP codes (0..8 ones in a uniform ring, 9 = other)."""
    c = gray[1:-1, 1:-1]
    ring = [gray[:-2, :-2], gray[:-2, 1:-1], gray[:-2, 2:], gray[1:-1, 2:],
            gray[2:, 2:], gray[2:, 1:-1], gray[2:, :-2], gray[1:-1, :-2]]
    # +2 grey levels: flat JPEG-noisy regions would otherwise flip bits at random
    bits = np.stack([(n >= c + 2) for n in ring]).astype(np.int8)
    transitions = np.sum(bits != np.roll(bits, 1, axis=0), axis=0)
    label = np.where(transitions <= 2, bits.sum(axis=0), 9)
    return np.bincount(label.ravel(), minlength=10) / label.size


def describe_image(img: np.ndarray) -> np.ndarray:
    """Feature-bank vector of one HxWx3 uint8 RGB image (an object crop), shape (65,).

    The image is resized to 48x48 first so gradient and texture statistics do not
    depend on the object's size in pixels.
    """
    if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    img = cv2.resize(np.ascontiguousarray(img), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    colour = [np.bincount((img[..., c] >> 5).ravel(), minlength=8) / img[..., c].size
              for c in range(3)]
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # uint8: H in [0, 180), S in [0, 255]
    sat = hsv[..., 1].astype(np.float64) / 255.0
    hue = np.bincount((hsv[..., 0].astype(np.int64) * 12 // 180).clip(0, 11).ravel(),
                      weights=sat.ravel(), minlength=12)
    hue = hue / hue.sum() if hue.sum() > 0 else np.full(12, 1 / 12)  # grey image: no hue
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h1, e1 = _orientation_hist(gray)
    h2, e2 = _orientation_hist(cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    scalars = np.clip([e1 / 255.0, e2 / 255.0, sat.mean()], 0.0, 1.0)
    return np.concatenate([*colour, hue, h1, h2, _uniform_lbp_hist(gray), scalars]).astype(np.float64)


def describe_images(images: Iterable[np.ndarray]) -> np.ndarray:
    """Mean descriptor of a set of object images (crops, GAN samples), shape (65,)."""
    vecs = [describe_image(im) for im in images]
    if not vecs:
        raise DafslError("cannot describe an empty set of images")
    return np.mean(vecs, axis=0)


def object_crops(split, n: int = 200, classes: Sequence[str] | None = None) -> list[np.ndarray]:
    """``n`` evenly spaced annotated objects of ``split`` (optionally only ``classes``),
    each as an HxWx3 uint8 box crop clipped to the image. Deterministic."""
    objects = [(iid, ann) for iid in split.image_ids for ann in split.annotations(iid)
               if not ann.get("iscrowd") and (classes is None or split.class_of(ann) in classes)]
    if not objects:
        which = f" of class {', '.join(classes)}" if classes else ""
        raise DafslError(f"{split.label}: no annotated objects{which} to describe")
    pick = np.linspace(0, len(objects) - 1, num=min(n, len(objects))).round().astype(int)
    crops, cache = [], {}
    for i in pick:
        iid, ann = objects[i]
        if iid not in cache:
            cache = {iid: split.load_image(iid)}  # objects are grouped by image
        img = cache[iid]
        x, y, w, h = ann["bbox"]
        x0, y0 = max(int(math.floor(x)), 0), max(int(math.floor(y)), 0)
        x1, y1 = min(int(math.ceil(x + w)), img.shape[1]), min(int(math.ceil(y + h)), img.shape[0])
        if x1 > x0 and y1 > y0:
            crops.append(img[y0:y1, x0:x1])
    return crops


def describe_objects(split, n: int = 200, classes: Sequence[str] | None = None) -> np.ndarray:
    """Feature-bank vectors (N, 65) of ``n`` evenly spaced annotated objects of ``split``."""
    return np.stack([describe_image(im) for im in object_crops(split, n, classes)])


def describe_split(split, n: int = 200, classes: Sequence[str] | None = None) -> list[float]:
    """Descriptor of a :class:`dafsl.data.Split`: mean feature bank of ``n`` evenly spaced
    annotated objects (only ``classes`` if given). The same split always gives the same
    vector; a list of 65 floats so it can be stored in JSON (zoo meta, summaries)."""
    return describe_objects(split, n, classes).mean(axis=0).tolist()


# ----------------------------------------------------------------------- distance


def parse_p(p: float | int | str) -> float:
    """Minkowski exponent from config or CLI: a number >= 1, or ``inf``."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise DafslError(f"similarity.p: expected a number >= 1 or inf, got {p!r}") from None
    if math.isnan(value) or value < 1:
        raise DafslError(f"similarity.p: expected a number >= 1 or inf, got {p!r}")
    return value


def minkowski(x: Sequence[float], y: Sequence[float], p: float = 2.0) -> float:
    """Eq. 1 (seed 001): ``(sum_i |x_i - y_i|^p)^(1/p)``; p = inf gives ``max_i |x_i - y_i|``
    (Chebyshev), the limit of eq. 1. ``x`` and ``y`` have shape (D,)."""
    p = parse_p(p)
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise DafslError(f"descriptors differ in shape: {a.shape} vs {b.shape}")
    diff = np.abs(a - b)
    if math.isinf(p):
        return float(diff.max(initial=0.0))
    return float(np.sum(diff ** p) ** (1.0 / p))


def max_distance(p: float) -> float:
    """Largest eq. 1 distance two descriptors can have (see the module docstring)."""
    p = parse_p(p)
    return 1.0 if math.isinf(p) else float((2 * HIST_BLOCKS + BOUNDED_SCALARS) ** (1.0 / p))


def similarity(distance: float, p: float) -> float:
    """``1 - distance / max_distance(p)``, in [0, 1]."""
    return float(min(max(1.0 - distance / max_distance(p), 0.0), 1.0))


def p_label(p: float) -> str:
    return "inf" if math.isinf(p) else f"{p:g}"


# ----------------------------------------------------------------------- decision


def bootstrap_interval(source: Sequence[float], objects: np.ndarray, p: float, n_boot: int,
                       confidence: float, seed: int = 0) -> tuple[float, float]:
    """Basic (reverse-percentile) bootstrap interval of the similarity over the target's
    objects: the object descriptors ``objects`` (N, D) resampled with replacement
    ``n_boot`` times, each resample's mean compared with the fixed ``source`` descriptor,
    and the interval ``[2 s - q_hi, 2 s - q_lo]`` (``s`` on all N objects, ``q`` the
    resamples' quantiles), clipped to [0, 1].

    Basic, not percentile: a distance from a mean of few objects is biased upwards (the
    mean's noise adds to it), and resampling adds the same bias again, so the
    percentile interval sits below ``s``. On the default data, 10-face targets, it
    covered the population's similarity in 0 of 200 random subsets; the basic interval,
    which subtracts the bias the resamples show, in 66 % (male) and 85 % (female).
    """
    objects = np.asarray(objects, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(objects), size=(int(n_boot), len(objects)))
    diff = np.abs(objects[idx].mean(axis=1) - np.asarray(source, dtype=np.float64))
    d = diff.max(axis=1) if math.isinf(p) else (diff ** p).sum(axis=1) ** (1.0 / p)
    sims = np.clip(1.0 - d / max_distance(p), 0.0, 1.0)
    tail = (1.0 - confidence) / 2 * 100
    q_lo, q_hi = np.percentile(sims, [tail, 100 - tail])
    point = similarity(minkowski(source, objects.mean(axis=0), p), p)
    lo, hi = np.clip([2 * point - q_hi, 2 * point - q_lo], 0.0, 1.0)
    return float(lo), float(hi)


def check_similarity_config(s: dict) -> None:
    parse_p(s["p"])
    if int(s.get("bootstrap", 0)) < 0 or not 0 < float(s.get("confidence", 0.95)) < 1:
        raise DafslError(f"similarity: bootstrap must be >= 0 and 0 < confidence < 1, got "
                         f"{s.get('bootstrap')} and {s.get('confidence')}")
    if not 0.0 <= s["dissimilar"] <= s["similar"] <= 1.0:
        raise DafslError(f"similarity: need 0 <= dissimilar <= similar <= 1, got dissimilar "
                         f"{s['dissimilar']} and similar {s['similar']}")
    if int(s["min_target_size"]) < 0 or int(s["n_objects"]) < 1:
        raise DafslError("similarity: min_target_size must be >= 0 and n_objects >= 1")


UNDECIDED = "undecided within noise"


def _mode_of(sim: float, s_cfg: dict) -> str:
    return ("pretrained" if sim >= s_cfg["similar"] else "fixed" if sim < s_cfg["dissimilar"]
            else "finetune")


def decide(sim: float, target_size: int, s_cfg: dict,
           interval: tuple[float, float] | None = None) -> tuple[str, str]:
    """(mode, reason) from the similarity (and its bootstrap ``interval``, when given) and
    the number of target samples.

    With an interval, a mode is chosen only when the whole interval falls in its range.
    An interval across a threshold is "undecided within noise": the fallback is the mode
    of the interval's lower end, the one with fewer trained layers (see the module
    docstring).
    """
    mode = _mode_of(sim, s_cfg)
    rule = {"pretrained": f"similar (s {sim:.3f} >= {s_cfg['similar']})",
            "fixed": f"dissimilar (s {sim:.3f} < {s_cfg['dissimilar']})",
            "finetune": f"in between ({s_cfg['dissimilar']} <= s {sim:.3f} < {s_cfg['similar']})"}
    reason = rule[mode]
    if interval is not None:
        lo, hi = interval
        span = f"{float(s_cfg.get('confidence', 0.95)):.0%} interval [{lo:.3f}, {hi:.3f}]"
        low_mode, high_mode = _mode_of(lo, s_cfg), _mode_of(hi, s_cfg)
        if low_mode == high_mode:
            where = {"pretrained": f">= {s_cfg['similar']}", "fixed": f"< {s_cfg['dissimilar']}",
                     "finetune": f"in [{s_cfg['dissimilar']}, {s_cfg['similar']})"}[low_mode]
            name = {"pretrained": "similar", "fixed": "dissimilar", "finetune": "in between"}[low_mode]
            mode, reason = low_mode, f"{name} (whole {span} {where}; s {sim:.3f} on all objects)"
        else:
            crossed = [str(t) for t in (s_cfg["dissimilar"], s_cfg["similar"]) if lo < t <= hi]
            mode = low_mode
            reason = (f"{UNDECIDED}: s {sim:.3f}, {span} spans the threshold "
                      f"{' and '.join(crossed)} ({low_mode} to {high_mode}); fallback {mode}, "
                      f"the mode of the interval's lower end (fewer trained layers)")
    small = target_size < int(s_cfg["min_target_size"])
    if small and mode != "fixed":
        step = {"pretrained": "finetune", "finetune": "fixed"}[mode]
        reason += (f"; only {target_size} target samples < min_target_size "
                   f"{s_cfg['min_target_size']}, so {step} instead of {mode}")
        mode = step
    return mode, reason


def compare(source: Sequence[float], target: Sequence[float], target_size: int, s_cfg: dict,
            p: float | None = None, objects: np.ndarray | None = None, seed: int = 0) -> dict:
    """Distance, similarity and decision of ``target`` against ``source`` descriptors.

    ``objects`` (N, D): the target's object descriptors (``target`` is their mean); with
    them and ``similarity.bootstrap`` > 0 the decision uses the bootstrap interval.
    """
    check_similarity_config(s_cfg)
    if len(source) != len(target):
        raise DafslError(f"source descriptor has {len(source)} values, target {len(target)}: "
                         f"one was computed by another descriptor version; rebuild it")
    p = parse_p(s_cfg["p"] if p is None else p)
    d = minkowski(source, target, p)
    sim = similarity(d, p)
    n_boot = int(s_cfg.get("bootstrap", 0))
    interval = None
    if objects is not None and n_boot > 0:
        interval = bootstrap_interval(source, objects, p, n_boot, float(s_cfg["confidence"]), seed)
    mode, reason = decide(sim, target_size, s_cfg, interval)
    out = {"distance": d, "p": p_label(p), "similarity": sim, "target_size": int(target_size),
           "mode": mode, "reason": reason}
    if interval is not None:
        out.update(similarity_interval=list(interval), confidence=float(s_cfg["confidence"]),
                   bootstrap=n_boot, undecided=reason.startswith(UNDECIDED))
    return out


# ------------------------------------------------------------------- --kd auto

def zoo_descriptor(cfg: dict, entry: str) -> tuple[str, list[float]]:
    """(label, stored descriptor) of a zoo entry; builds the entry on first use."""
    from dafsl import zoo

    _, meta = zoo.get(entry, cfg)
    desc = meta.get("descriptor")
    if not isinstance(desc, list) or not desc:
        raise DafslError(f"zoo entry {entry}: meta.json has no source descriptor")
    if len(desc) != DESCRIPTOR_SIZE:
        raise DafslError(f"zoo entry {entry}: stored descriptor has {len(desc)} values, this "
                         f"dafsl computes {DESCRIPTOR_SIZE}; rebuild it: python -m dafsl.zoo build {entry}")
    return f"zoo:{entry} ({meta.get('source_dataset', 'source data')})", desc


def _split_objects(split, classes: Sequence[str] | None) -> int:
    return sum(1 for a in split.coco["annotations"]
               if not a.get("iscrowd") and (classes is None or split.class_of(a) in classes))


def _describe_target(split, classes, n: int, what: str) -> tuple[str, np.ndarray, int]:
    """(label, object descriptors (N, D), number of objects of ``classes`` in the split)."""
    label = f"{split.label} {what}" if classes is None else f"{split.label} {'+'.join(classes)} {what}"
    return label, describe_objects(split, n, classes), _split_objects(split, classes)


def source_entry(cfg: dict, stage: str) -> str:
    """The zoo entry a stage transfers from, as its registration declares it."""
    from dafsl.stages import get_stage

    return get_stage(stage).source_entry(cfg)


def stage_comparison(cfg: dict, stage: str, split_info: dict
                     ) -> tuple[str, list[float], str, np.ndarray, int]:
    """(source label, source descriptor, target label, target object descriptors (N, D),
    target size) of one stage, as ``--kd auto`` compares them:

    * detector: its zoo source (the shapes set) against the Denough training faces;
    * augmenter: the source GAN's Denough faces (zoo ``augmenter-gan``) against the Dlack
      faces it has to fill in;
    * classifier: its backbone's training data: with ``classifier.source: detector``
      the BDRP's Denough faces, with ``zoo`` that entry's data, against all training faces.
    """
    from dafsl.data import load_split

    transfer_src = cfg["transfer"]["source"]
    n = int(cfg["similarity"]["n_objects"])
    train = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    if stage == "classifier" and cfg["classifier"]["source"] == "detector":
        src_label, src_objects, _ = _describe_target(train, list(split_info["denough"]), n,
                                                     "faces (the BDRP's training data)")
        src_desc = src_objects.mean(axis=0).tolist()
    else:
        if stage == "classifier":
            transfer_src = cfg["classifier"]["source"]
        if transfer_src != "zoo":
            raise DafslError(f"--kd auto ({stage}): the source '{transfer_src}' stores no dataset "
                             f"descriptor; use the zoo source or an explicit --kd mode")
        src_label, src_desc = zoo_descriptor(cfg, source_entry(cfg, stage))
    # what the stage trains on: the detector the Denough scenes, the GAN the Dlack faces
    classes = {"detector": list(split_info["denough"]), "augmenter": list(split_info["dlack"]),
               "classifier": None}[stage]
    tgt_label, tgt_objects, size = _describe_target(train, classes, n, "faces")
    return src_label, src_desc, tgt_label, tgt_objects, size


def auto_decision(cfg: dict, stage: str, split_info: dict) -> dict:
    """The decision ``--kd auto`` makes for ``stage``: source, target, distance, p,
    similarity, target size, mode and reason (JSON-serialisable)."""
    src_label, src, tgt_label, objects, size = stage_comparison(cfg, stage, split_info)
    return {"source": src_label, "target": tgt_label,
            **compare(src, objects.mean(axis=0).tolist(), size, cfg["similarity"],
                      objects=objects, seed=int(cfg["seed"]))}


def format_decision(decision: dict) -> str:
    """One log line for an ``--kd auto`` decision, with the similarity's bootstrap interval."""
    interval = decision.get("similarity_interval")
    return (f"{decision['source']} vs {decision['target']}: Minkowski p={decision['p']} distance "
            f"{decision['distance']:.4f}, similarity {decision['similarity']:.3f}"
            + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
            + f", {decision['target_size']} target samples -> {decision['mode']} ({decision['reason']})")


# ------------------------------------------------------------------------- CLI

if __name__ == "__main__":  # python -m dafsl.similarity: the CLI lives in dafsl/similarity_cli.py
    import runpy

    runpy.run_module("dafsl.similarity_cli", run_name="__main__")
