"""mAP@0.5 evaluation report of a detector checkpoint on any manifest split: generated,
COCO, FFHQ, UMDFaces, WIDER FACE, Pascal VOC or YOLO (dafsl/formats/), no conversion needed.

Usage:
    python pipelines/evaluate_report.py (--checkpoint PATH | --run RUN_DIR)
        [--manifest NAME_OR_PATH] [--split test] [--config FILE] [--set KEY=VALUE ...]
        [--out DIR] [--min-score 0.01] [--show-score 0.5] [--examples 8] [--iou 0.5]

Writes into --out (default ``<checkpoint dir>/eval-<manifest>-<split>``):
report.md (per-class 11-point AP and COCO AP50, the score-threshold sweep, the
matching convention), pr_curves.png, threshold_sweep.png, examples.png (ground
truth green, detections above --show-score red with their score) and
evaluation.json. Built on :mod:`dafsl.evaluate` (seed 001, eq. 2).

The detector outputs boxes and scores for one category. On a manifest with several
categories (e.g. shapes) the ground truth is scored class-agnostic ("object").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl.config import DEFAULT_CONFIG, load_config  # noqa: E402
from dafsl.data import Split, load_split  # noqa: E402
from dafsl.errors import DafslError, exit_on_error  # noqa: E402
from dafsl.evaluate import (coco_ap50, evaluate_detections, score_threshold_sweep,  # noqa: E402
                            write_report)

THRESHOLDS = [round(t, 2) for t in np.arange(0.05, 1.0, 0.05)]
GT_RGB, DET_RGB = (40, 220, 40), (235, 40, 40)


def ground_truth(split: Split) -> dict:
    """The split's COCO dict; several categories collapse into one ("object")."""
    gt = split.coco
    if len(gt["categories"]) == 1:
        return gt
    return {**gt, "categories": [{"id": 1, "name": "object"}],
            "annotations": [{**a, "category_id": 1} for a in gt["annotations"]]}


def to_coco_results(image_ids: Sequence[int], detections: Sequence[dict], category_id: int) -> list[dict]:
    """Per-image {"boxes": (N, 4) xyxy, "scores": (N,)} → COCO results (xywh)."""
    out = []
    for iid, det in zip(image_ids, detections):
        for (x0, y0, x1, y1), s in zip(np.asarray(det["boxes"], dtype=float).reshape(-1, 4),
                                       np.asarray(det["scores"], dtype=float).ravel()):
            if x1 > x0 and y1 > y0:
                out.append({"image_id": int(iid), "category_id": category_id,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)})
    return out


def draw_examples(split: Split, gt: dict, results: list[dict], image_ids: Sequence[int],
                  show_score: float, path: Path, scale: int = 2) -> None:
    """Grid of images (4 per row) with ground truth (green) and detections >= show_score (red)."""
    tiles = []
    for iid in image_ids:
        img = cv2.resize(split.load_image(iid), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for a in gt["annotations"]:
            if a["image_id"] == iid:
                x, y, w, h = (np.array(a["bbox"]) * scale).round().astype(int)
                cv2.rectangle(img, (x, y), (x + w, y + h), GT_RGB, 3)  # under the detections, still visible
        for d in results:
            if d["image_id"] == iid and d["score"] >= show_score:
                x, y, w, h = (np.array(d["bbox"]) * scale).round().astype(int)
                cv2.rectangle(img, (x, y), (x + w, y + h), DET_RGB, 1)
                cv2.putText(img, f"{d['score']:.2f}", (x, max(y - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.35, DET_RGB, 1, cv2.LINE_AA)
        tiles.append(img)
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, h - t.shape[0] + 4, 0, w - t.shape[1] + 4, cv2.BORDER_CONSTANT,
                                value=(255, 255, 255)) for t in tiles]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % 4)
    grid = np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)])
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def plot_sweep(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    t = [r["threshold"] for r in rows]
    for key in ("precision", "recall", "f1"):
        ax.plot(t, [r[key] for r in rows], marker=".", label=key)
    ax.set(xlabel="score threshold", ylabel="value", ylim=(0, 1.05), title="Score-threshold sweep (IoU 0.5)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def evaluation_report(split: Split, detections: Sequence[dict], out: Path, *, iou: float = 0.5,
                      show_score: float = 0.5, examples: int = 8, source: str = "") -> dict:
    """Evaluate per-image detections ({"boxes" (N, 4) xyxy px, "scores" (N,)}, one per image
    of ``split`` in ``split.image_ids`` order) and write the report into ``out``."""
    ids = split.image_ids
    if len(detections) != len(ids):
        raise DafslError(f"{split.label}: {len(detections)} detection lists for {len(ids)} images")
    gt = ground_truth(split)
    results = to_coco_results(ids, detections, gt["categories"][0]["id"])
    result = evaluate_detections(gt, results, iou_threshold=iou)
    _, md_path = write_report(result, out)  # pr_curves.png + report.md with the convention
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for cid, name in names.items():  # COCO AP50 per class: the class alone, same matching
        if name in result["per_class"]:
            sub = {**gt, "categories": [c for c in gt["categories"] if c["id"] == cid],
                   "annotations": [a for a in gt["annotations"] if a["category_id"] == cid]}
            result["per_class"][name]["ap50_coco"] = coco_ap50(sub, [d for d in results if d["category_id"] == cid])
    sweep = score_threshold_sweep(gt, results, THRESHOLDS, iou_threshold=iou)
    plot_sweep(sweep, out / "threshold_sweep.png")
    pick = [ids[i] for i in np.linspace(0, len(ids) - 1, num=min(examples, len(ids))).round().astype(int)]
    if pick:
        draw_examples(split, gt, results, pick, show_score, out / "examples.png")
    best = max(sweep, key=lambda r: r["f1"])
    lines = [f"# Detector evaluation: {split.label}", "",
             f"- detector: {source or 'given detections'}",
             f"- images: {len(ids)}, ground-truth boxes: {sum(v['n_gt'] for v in result['per_class'].values())}, "
             f"detections kept for ranking: {len(results)}",
             f"- **mAP@0.5 (11-point VOC07): {result['map50']:.4f}**; COCO AP50 (pycocotools): "
             f"{result['ap50_coco']:.4f}",
             f"- best F1 {best['f1']:.3f} at score >= {best['threshold']:g} "
             f"(precision {best['precision']:.3f}, recall {best['recall']:.3f})", "",
             "## Per-class AP at IoU 0.5", "", "| class | n_gt | n_det | TP | FP | AP (11-point) | AP50 (COCO) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, v in result["per_class"].items():
        lines.append(f"| {name} | {v['n_gt']} | {v['n_det']} | {v['tp']} | {v['fp']} | {v['ap11']:.4f} | "
                     f"{v['ap50_coco']:.4f} |")
    lines += ["", "![PR curves](pr_curves.png)", "", "## Score-threshold sweep", "",
              "| score >= | precision | recall | F1 | TP | FP |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['threshold']:g} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['tp']} | "
              f"{r['fp']} |" for r in sweep]
    lines += ["", "![threshold sweep](threshold_sweep.png)", "",
              f"## Examples (ground truth green, detections with score >= {show_score:g} red)", "",
              "![examples](examples.png)", ""]
    convention = md_path.read_text(encoding="utf-8").partition("## Matching convention")[2]
    md_path.write_text("\n".join(lines) + "\n## Matching convention" + convention, encoding="utf-8")
    summary = {"split": split.label, "detector": source, "map50": result["map50"],
               "ap50_coco": result["ap50_coco"], "per_class": result["per_class"],
               "threshold_sweep": sweep, "iou_threshold": iou}
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python pipelines/evaluate_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="detector checkpoint (e.g. <run>/detector/detector_final.pt)")
    src.add_argument("--run", type=Path, help="run directory whose detector outputs to evaluate")
    p.add_argument("--manifest", default=None, help="manifest name or path (default data.manifest)")
    p.add_argument("--split", default="test")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--min-score", type=float, default=0.01,
                   help="detections kept for the AP ranking (low, so the PR curve is complete)")
    p.add_argument("--show-score", type=float, default=0.5, help="detections drawn on the examples")
    p.add_argument("--examples", type=int, default=8)
    p.add_argument("--iou", type=float, default=0.5)
    return p


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    ckpt = args.checkpoint
    if args.run is not None:
        from dafsl.stages import read_outputs

        outputs = args.run / "detector" / "outputs.json"
        if not outputs.is_file():
            raise DafslError(f"{args.run}: no detector outputs (detector/outputs.json)")
        ckpt = Path(read_outputs(outputs)["checkpoint"])
    if not ckpt.is_file():
        raise DafslError(f"{ckpt}: checkpoint not found")
    import torch

    from dafsl.detector.model import load_detector
    from dafsl.detector.predict import detect
    from dafsl.stages import resolve_device

    manifest = args.manifest or cfg["data"]["manifest"]
    split = load_split(manifest, args.split, cfg["data"]["cache_dir"])
    device = resolve_device(cfg["device"])
    model = load_detector(ckpt, device)
    with torch.no_grad():
        dets = []
        for i in range(0, len(split.image_ids), 64):  # bounded memory on large splits
            images = [split.load_image(iid) for iid in split.image_ids[i:i + 64]]
            dets += detect(model, images, device, score_threshold=args.min_score)
    out = args.out or ckpt.parent / f"eval-{split.manifest.name}-{args.split}"
    summary = evaluation_report(split, dets, out, iou=args.iou, show_score=args.show_score,
                                examples=args.examples, source=str(ckpt))
    print(f"{split.label}: mAP@0.5 (11-point) {summary['map50']:.4f}, COCO AP50 "
          f"{summary['ap50_coco']:.4f}; report {out / 'report.md'}")
    return summary


if __name__ == "__main__":
    main()
