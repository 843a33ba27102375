"""Detection evaluation at IoU 0.5: PASCAL VOC 2007 11-point AP and COCO AP50.

Ground truth is a COCO dict (images, annotations, categories); detections are a COCO
results list ({image_id, category_id, bbox, score}). The 11-point AP ("seed 001,
eq. 2") is AP = 1/11 * sum_{r in 0, 0.1, ..., 1} max_{r' >= r} p(r') (0 where no
recall reaches r), in numpy; ``ap50_coco`` comes from pycocotools, and
:func:`coco_ap50` re-implements it as an independent cross-check.

Matching convention
-------------------
- Boxes are COCO [x, y, w, h] in continuous coordinates: area = w * h, no "+1 pixel".
- Detections are ranked by descending score, stable sort: ties keep input order.
- Per image and class, in that order, a detection matches the unmatched non-crowd
  ground truth (GT) of its class with the highest IoU; a match needs
  IoU >= threshold (greater than or equal). Equal IoUs go to the GT listed later,
  as in pycocotools. Otherwise the detection is a false positive (FP), so a
  duplicate of an already-matched detection is an FP. As in COCO (unlike the VOC
  devkit), a detection whose best GT is taken may still match another free GT.
- GT with iscrowd=1 is ignored, like VOC "difficult": it is not counted among the
  positives, and a detection matching no regular GT but overlapping a crowd region
  with IoU >= threshold is neither TP nor FP (the IoU with a crowd region is, as in
  COCO, intersection / detection area).
- The 11-point AP keeps every detection; COCO AP keeps the 100 best-scored per image
  and class (maxDets=100). A class with no non-crowd GT is left out of the mean and
  listed under ``classes_without_gt``.
"""
from __future__ import annotations

import contextlib
import io
import math
import numbers
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from dafsl.errors import DafslError

TP, FP, IGNORED = 1, 0, -1
COCO_MAX_DETS = 100


def _as_boxes(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def iou_matrix(a: np.ndarray, b: np.ndarray, b_crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of xywh boxes ``a`` (N, 4) against ``b`` (M, 4), shape (N, M).

    Where ``b_crowd`` (M,) is true the ratio is intersection / area(a), COCO's
    overlap with a crowd region. Same arithmetic as pycocotools' ``bbIou``.
    """
    a, b = _as_boxes(a), _as_boxes(b)
    hi = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(hi - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None), axis=2)
    area_a = (a[:, 2] * a[:, 3])[:, None]
    union = area_a + (b[:, 2] * b[:, 3])[None, :] - inter
    if b_crowd is not None:
        union = np.where(np.asarray(b_crowd, dtype=bool)[None, :], area_a, union)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def voc_ap11(recall: np.ndarray, precision: np.ndarray) -> float:
    """11-point interpolated AP (VOC 2007) from ranked ``recall`` and ``precision`` (K,)."""
    recall = np.asarray(recall, dtype=np.float64).ravel()
    precision = np.asarray(precision, dtype=np.float64).ravel()
    if recall.shape != precision.shape:
        raise ValueError(f"recall {recall.shape} and precision {precision.shape} differ in shape")
    total = 0.0
    # i/10 rather than 0.1*i: 0.1*3 > 0.3, which would make a recall of exactly 3/10 miss r=0.3
    for r in np.arange(11) / 10.0:
        above = precision[recall >= r]
        total += float(above.max()) if above.size else 0.0
    return total / 11.0


@dataclass
class _Data:
    cat_names: dict[int, str]  # category id -> name, ordered by id
    anns: list[tuple[int, int, int, list[float], bool]]  # (ann id, image id, cat id, bbox, crowd)
    gt: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]  # (image, cat) -> boxes (G, 4), crowd (G,)
    n_gt: dict[int, int]  # non-crowd GT per category
    det_img: np.ndarray  # (D,)
    det_cat: np.ndarray  # (D,)
    det_boxes: np.ndarray  # (D, 4)
    det_scores: np.ndarray  # (D,)


def _field(rec: Any, key: str, where: str) -> Any:
    if not isinstance(rec, dict):
        raise DafslError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if key not in rec:
        raise DafslError(f"{where}: missing key '{key}'")
    return rec[key]


def _int(rec: Any, key: str, where: str) -> int:
    value = _field(rec, key, where)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise DafslError(f"{where}: '{key}' must be an integer, got {value!r}")
    return int(value)


def _number(value: Any, what: str, where: str) -> float:
    # numbers.Real also admits numpy scalars, which callers building results in-process pass
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise DafslError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _bbox(rec: Any, where: str) -> list[float]:
    box = _field(rec, "bbox", where)
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        raise DafslError(f"{where}: bbox must be [x, y, w, h], got {box!r}")
    box = [_number(v, "bbox value", where) for v in box]
    if box[2] <= 0 or box[3] <= 0:
        raise DafslError(f"{where}: bbox width and height must be > 0 (zero-area box), got {box}")
    return box


def _parse(gt: Any, detections: Any) -> _Data:
    if not isinstance(gt, dict):
        raise DafslError("ground truth must be a COCO object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DafslError(f"ground truth: missing '{key}' list")
    image_ids = {_int(img, "id", f"ground truth image #{i}") for i, img in enumerate(gt["images"])}
    cat_names: dict[int, str] = {}
    for i, cat in enumerate(gt["categories"]):
        where = f"ground truth category #{i}"
        cid, name = _int(cat, "id", where), _field(cat, "name", where)
        if not isinstance(name, str) or cid in cat_names or name in cat_names.values():
            raise DafslError(f"ground truth category id {cid}: name must be a unique string, got {name!r}")
        cat_names[cid] = name
    cat_names = dict(sorted(cat_names.items()))

    anns = []
    groups: dict[tuple[int, int], list] = defaultdict(list)
    for i, ann in enumerate(gt["annotations"]):
        aid = _int(ann, "id", f"ground truth annotation #{i}")
        where = f"ground truth annotation id {aid}"
        img, cat = _int(ann, "image_id", where), _int(ann, "category_id", where)
        if img not in image_ids or cat not in cat_names:
            raise DafslError(f"{where}: unknown {'image_id' if img not in image_ids else 'category_id'}")
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise DafslError(f"{where}: iscrowd must be 0 or 1, got {crowd!r}")
        anns.append((aid, img, cat, _bbox(ann, where), bool(crowd)))
        groups[img, cat].append(anns[-1])
    gt_arrays = {k: (_as_boxes([a[3] for a in v]), np.array([a[4] for a in v])) for k, v in groups.items()}
    n_gt = {c: sum(1 for a in anns if a[2] == c and not a[4]) for c in cat_names}
    if sum(n_gt.values()) == 0:
        raise DafslError("ground truth has no non-crowd annotations: nothing to evaluate")

    if not isinstance(detections, list):
        raise DafslError("detections must be a COCO results list of {image_id, category_id, bbox, score}")
    rows = []
    for i, det in enumerate(detections):
        img = _int(det, "image_id", f"detection #{i}")
        where = f"detection #{i} (image_id {img})"
        cat = _int(det, "category_id", where)
        if img not in image_ids:
            raise DafslError(f"{where}: unknown image_id {img}")
        if cat not in cat_names:
            raise DafslError(f"{where}: unknown category_id {cat}")
        box, score = _bbox(det, where), _number(_field(det, "score", where), "score", where)
        rows.append((img, cat, box, score))
    return _Data(cat_names, anns, gt_arrays, n_gt,
                 np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64),
                 _as_boxes([r[2] for r in rows]), np.array([r[3] for r in rows], dtype=np.float64))


def _check_iou(iou_threshold: float) -> float:
    if not isinstance(iou_threshold, numbers.Real) or not 0.0 < iou_threshold <= 1.0:
        raise DafslError(f"IoU threshold must be in (0, 1], got {iou_threshold!r}")
    return float(iou_threshold)


def _match(data: _Data, thr: float, max_dets: int | None = None) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
    """(image, cat) -> (detection indices in rank order, TP/FP/IGNORED state per detection)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(data.det_img.tolist(), data.det_cat.tolist())):
        groups[key].append(i)
    out = {}
    empty = (np.zeros((0, 4)), np.zeros(0, dtype=bool))
    for key, idx in groups.items():
        idx = np.asarray(idx)
        idx = idx[np.argsort(-data.det_scores[idx], kind="stable")][:max_dets]
        boxes, crowd = data.gt.get(key, empty)
        ious = iou_matrix(data.det_boxes[idx], boxes, crowd)
        taken = np.zeros(len(boxes), dtype=bool)
        state = np.full(len(idx), FP)
        for k, row in enumerate(ious):
            free = np.flatnonzero((row >= thr) & ~crowd & ~taken)
            if free.size:
                best = free[np.flatnonzero(row[free] == row[free].max())[-1]]
                taken[best], state[k] = True, TP
            elif np.any((row >= thr) & crowd):  # crowd regions absorb any number of detections
                state[k] = IGNORED
        out[key] = (idx, state)
    return out


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dtype=np.int64) for i in (0, 1))


def _ranked(data: _Data, matches: dict, cat: int, coco_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All detections of ``cat`` ranked by score: (indices (K,), states (K,)).

    Ties keep input order; with ``coco_order`` they keep pycocotools' order instead
    (images by ascending id, then rank within the image).
    """
    idx, state = _stack([matches[k] for k in sorted(matches) if k[1] == cat])
    order = np.lexsort((np.arange(len(idx)) if coco_order else idx, -data.det_scores[idx]))
    return idx[order], state[order]


def coco_ap50(gt: dict, detections: list[dict], iou_threshold: float = 0.5, max_dets: int = COCO_MAX_DETS) -> float:
    """COCO-style AP (101 recall points, monotone precision, maxDets per image and
    class, crowd handled as in COCO), averaged over classes with GT. Reproduces
    pycocotools' ``stats[1]`` without using it."""
    data = _parse(gt, detections)
    matches = _match(data, _check_iou(iou_threshold), max_dets)
    rec_thrs = np.linspace(0.0, 1.0, 101)
    aps = []
    for cat, n_gt in data.n_gt.items():
        if n_gt == 0:
            continue
        _, state = _ranked(data, matches, cat, coco_order=True)
        state = state[state != IGNORED]
        tp, fp = np.cumsum(state == TP).astype(float), np.cumsum(state == FP).astype(float)
        precision = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[::-1])[::-1]
        pos = np.searchsorted(tp / n_gt, rec_thrs, side="left")
        q = np.zeros(len(rec_thrs))
        q[pos < len(precision)] = precision[pos[pos < len(precision)]]
        aps.append(q.mean())
    return float(np.mean(aps))


def _pycocotools_ap50(data: _Data) -> float:
    if len(data.det_scores) == 0:
        return 0.0  # COCO.loadRes indexes anns[0] and fails on an empty list
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # Fresh records: loadRes mutates its input, and annotation ids are renumbered from 1
    # because COCOeval stores the matched GT id as a flag, so a GT with id 0 never counts as TP.
    images = sorted({a[1] for a in data.anns} | set(data.det_img.tolist()))
    dataset = {"images": [{"id": i} for i in images],
               "categories": [{"id": c, "name": n} for c, n in data.cat_names.items()],
               "annotations": [{"id": k + 1, "image_id": a[1], "category_id": a[2], "bbox": a[3],
                                "area": a[3][2] * a[3][3], "iscrowd": int(a[4])} for k, a in enumerate(data.anns)]}
    results = [{"image_id": int(i), "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
               for i, c, b, s in zip(data.det_img, data.det_cat, data.det_boxes, data.det_scores)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])  # AP @ IoU=.50, area=all, maxDets=100


def evaluate_detections(gt: dict, detections: list[dict], iou_threshold: float = 0.5, with_coco: bool = True) -> dict:
    """Evaluate COCO-format detections against COCO ground truth.

    Returns a JSON-serialisable dict: ``map50`` (mean 11-point AP over classes with
    GT), ``ap50_coco`` (pycocotools AP at IoU .50, always at 0.5; None unless
    ``with_coco``), ``per_class`` {name: {ap11, n_gt, n_det, tp, fp}},
    ``classes_without_gt`` [name], ``pr_curves`` {name: {recall, precision, scores}}
    (one point per ranked non-ignored detection, length K) and ``iou_threshold``.
    Raises DafslError naming the offending record on bad input.
    """
    thr = _check_iou(iou_threshold)
    data = _parse(gt, detections)
    matches = _match(data, thr)
    per_class, curves, without = {}, {}, []
    for cat, name in data.cat_names.items():
        n_gt = data.n_gt[cat]
        if n_gt == 0:
            without.append(name)
            continue
        idx, state = _ranked(data, matches, cat)
        n_det = len(idx)
        idx, state = idx[state != IGNORED], state[state != IGNORED]
        tp, fp = np.cumsum(state == TP), np.cumsum(state == FP)
        recall, precision = tp / n_gt, tp / np.arange(1, len(tp) + 1)  # every kept rank is TP or FP
        per_class[name] = {"ap11": voc_ap11(recall, precision), "n_gt": n_gt, "n_det": n_det,
                           "tp": int(tp[-1]) if len(tp) else 0, "fp": int(fp[-1]) if len(fp) else 0}
        curves[name] = {"recall": recall.tolist(), "precision": precision.tolist(),
                        "scores": data.det_scores[idx].tolist()}
    return {"map50": float(np.mean([v["ap11"] for v in per_class.values()])),
            "ap50_coco": _pycocotools_ap50(data) if with_coco else None,
            "per_class": per_class, "classes_without_gt": without, "pr_curves": curves, "iou_threshold": thr}


def score_threshold_sweep(gt: dict, detections: list[dict], thresholds: Iterable[float],
                          iou_threshold: float = 0.5) -> list[dict]:
    """Micro-averaged precision, recall and F1 over all classes, keeping detections
    with score >= each threshold. Returns one dict per threshold: threshold,
    precision, recall, f1, tp, fp, n_gt. Precision is 0 when nothing is kept;
    detections of a class without GT are false positives."""
    data = _parse(gt, detections)
    # Greedy matching runs in score order, so dropping low scores never changes
    # the matches of the detections kept: one matching serves every threshold.
    idx, state = _stack(list(_match(data, _check_iou(iou_threshold)).values()))
    scores, n_gt = data.det_scores[idx], sum(data.n_gt.values())
    rows = []
    for t in thresholds:
        t = _number(t, "score threshold", "score_threshold_sweep")
        kept = state[scores >= t]
        tp, fp = int(np.sum(kept == TP)), int(np.sum(kept == FP))
        precision, recall = (tp / (tp + fp) if tp + fp else 0.0), tp / n_gt
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"threshold": t, "precision": precision, "recall": recall, "f1": f1,
                     "tp": tp, "fp": fp, "n_gt": n_gt})
    return rows


def plot_pr_curves(result: dict, path: str | Path) -> None:
    """Save one precision-recall curve per class (legend gives AP11) as a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5))
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no global backend switch
    ax = fig.add_subplot()
    for name, curve in result["pr_curves"].items():
        # markers keep one-point curves (a single detection) visible
        ax.plot(curve["recall"], curve["precision"], drawstyle="steps-post", marker=".",
                label=f"{name} (AP11 {result['per_class'][name]['ap11']:.3f})")
    ax.set(xlim=(0, 1.01), ylim=(0, 1.05), xlabel="recall", ylabel="precision",
           title=f"PR at IoU {result['iou_threshold']:g}: mAP50 (11-pt) {result['map50']:.3f}")
    if result["pr_curves"]:
        ax.legend(loc="lower left", fontsize="small")
    fig.savefig(path, dpi=100)


def _convention() -> str:
    # the module docstring is the single statement of the rules (it is None under python -OO)
    return (__doc__ or "").partition("-------------------\n")[2].strip() or "See dafsl/evaluate.py."


def write_report(result: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``pr_curves.png`` and ``report.md`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    coco = "not computed" if result["ap50_coco"] is None else f"{result['ap50_coco']:.4f}"
    lines = ["# Detection evaluation", "",
             f"- IoU threshold: {result['iou_threshold']:g} (a match needs IoU >= threshold)",
             f"- mAP50, 11-point VOC07 (mean over classes with GT): {result['map50']:.4f}",
             f"- AP50, COCO 101-point at IoU 0.5 (pycocotools): {coco}", "",
             "| class | AP11 | n_gt | n_det | TP | FP |", "|---|---:|---:|---:|---:|---:|"]
    for name, v in result["per_class"].items():
        cells = [name.replace("|", "/"), f"{v['ap11']:.4f}", v["n_gt"], v["n_det"], v["tp"], v["fp"]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    left_out = ", ".join(result["classes_without_gt"]) or "none"
    lines += ["", f"Classes left out of the mean (no ground truth): {left_out}", "",
              "## Matching convention", "", _convention(), ""]
    try:
        out.mkdir(parents=True, exist_ok=True)
        plot_pr_curves(result, out / "pr_curves.png")
        (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    except OSError as err:
        raise DafslError(f"cannot write report to {out}: {err.strerror or err}") from None
    return out / "pr_curves.png", out / "report.md"


if __name__ == "__main__":  # python -m dafsl.evaluate: the CLI lives in dafsl/evaluate_cli.py
    import runpy

    runpy.run_module("dafsl.evaluate_cli", run_name="__main__")
