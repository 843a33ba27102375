"""Tests for dafsl.evaluate: hand-computed AP, a naive 11-point reference, pycocotools parity, CLI."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dafsl.errors import DafslError
from dafsl.evaluate import (coco_ap50, evaluate_detections, iou_matrix, score_threshold_sweep, voc_ap11,
                            write_report)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ hand case
def hand_case() -> tuple[dict, list[dict]]:
    """Class a: 3 positives (g1, g2 in image 1, g3 in image 2), a crowd region in image 2.
    Class b: one GT found exactly; class c: one GT missed; class d: no GT, one detection."""
    gt = {"images": [{"id": 1}, {"id": 2}],
          "categories": [{"id": i, "name": n} for i, n in zip((1, 2, 3, 4), "abcd")],
          "annotations": [
              {"id": 0, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},  # g1 (id 0 on purpose)
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10]},  # g2, never found
              {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 20]},  # g3
              {"id": 4, "image_id": 2, "category_id": 1, "bbox": [100, 100, 50, 50], "iscrowd": 1},
              {"id": 5, "image_id": 1, "category_id": 2, "bbox": [200, 200, 30, 30]},
              {"id": 6, "image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10]}]}
    det = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # IoU 1 with g1: TP
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.8},  # duplicate, g1 taken: FP
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 10], "score": 0.7},  # IoU 200/400 = 0.5 with g3: TP (>=)
        {"image_id": 2, "category_id": 1, "bbox": [110, 110, 20, 20], "score": 0.65},  # inside crowd: ignored
        {"image_id": 1, "category_id": 1, "bbox": [100, 100, 5, 5], "score": 0.6},  # overlaps nothing: FP
        {"image_id": 1, "category_id": 2, "bbox": [200, 200, 30, 30], "score": 0.5},  # b: TP
        {"image_id": 2, "category_id": 3, "bbox": [30, 30, 10, 10], "score": 0.5},  # c: FP
        {"image_id": 2, "category_id": 4, "bbox": [30, 30, 10, 10], "score": 0.5}]  # d: no GT
    return gt, det


def test_hand_computed_ap():
    gt, det = hand_case()
    res = evaluate_detections(gt, det)
    # Class a ranked (crowd-ignored dropped): TP, FP, TP, FP; cumulative tp 1,1,2,2 and fp 0,1,1,2
    # recall    = 1/3, 1/3, 2/3, 2/3
    # precision = 1,   1/2, 2/3, 1/2
    # r = 0, .1, .2, .3 -> max precision at recall >= r = 1       (4 points)
    # r = .4, .5, .6    -> max(2/3, 1/2) = 2/3                     (3 points)
    # r = .7 ... 1      -> no recall that high: 0                  (4 points)
    # AP = (4 * 1 + 3 * 2/3) / 11 = 6/11
    a = res["per_class"]["a"]
    assert a["ap11"] == pytest.approx(6 / 11, abs=1e-12)
    assert (a["n_gt"], a["n_det"], a["tp"], a["fp"]) == (3, 5, 2, 2)
    assert res["pr_curves"]["a"]["precision"] == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2])
    assert res["pr_curves"]["a"]["scores"] == [0.9, 0.8, 0.7, 0.6]
    assert res["per_class"]["b"]["ap11"] == 1.0  # exactly 1
    assert res["per_class"]["c"]["ap11"] == 0.0  # exactly 0
    assert res["classes_without_gt"] == ["d"] and "d" not in res["per_class"]
    # mean over a, b, c only (d left out)
    assert res["map50"] == pytest.approx((6 / 11 + 1 + 0) / 3, abs=1e-12)
    # COCO 101-point for a: monotone precision 1, 2/3, 2/3, 1/2; thresholds 0..0.33 (34) -> 1,
    # 0.34..0.66 (33) -> 2/3, the rest 0: (34 + 22) / 101 = 56/101; b = 1, c = 0.
    assert res["ap50_coco"] == pytest.approx((56 / 101 + 1) / 3, abs=1e-9)
    assert coco_ap50(gt, det) == pytest.approx(res["ap50_coco"], abs=1e-12)
    json.dumps(res)


def test_iou_threshold_is_inclusive():
    gt, det = hand_case()
    # the 0.5-IoU detection of g3 becomes an FP just above 0.5: TP, FP, FP, FP -> AP = 4 * 1 / 11
    assert evaluate_detections(gt, det, iou_threshold=0.5 + 1e-9, with_coco=False)["per_class"]["a"]["ap11"] == \
        pytest.approx(4 / 11)


def test_voc_ap11_exact_recall_steps():
    # recall reaching exactly 0.3 must count for r = 0.3 (0.1 * 3 would be 0.30000000000000004)
    assert voc_ap11(np.array([0.1, 0.2, 0.3]), np.ones(3)) == pytest.approx(4 / 11)
    assert voc_ap11(np.array([1.0]), np.array([1.0])) == 1.0
    assert voc_ap11(np.zeros(0), np.zeros(0)) == 0.0


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [5, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [10, 0, 5, 5], [0, 0, 20, 20]], dtype=float)
    expected = [[1, 0, 100 / 400], [50 / 150, 25 / 100, 100 / 400]]
    assert iou_matrix(a, b) == pytest.approx(np.array(expected))
    crowd = iou_matrix(a, b, np.array([False, False, True]))  # crowd: intersection / area(a)
    assert crowd[:, 2] == pytest.approx([1.0, 1.0])
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


def test_empty_detections_and_no_gt_class():
    gt, _ = hand_case()
    res = evaluate_detections(gt, [])
    assert res["map50"] == 0.0 and res["ap50_coco"] == 0.0
    assert res["classes_without_gt"] == ["d"]
    assert all(v["ap11"] == 0.0 and v["n_det"] == 0 for v in res["per_class"].values())
    assert evaluate_detections(gt, [], with_coco=False)["ap50_coco"] is None


def test_numpy_scalars_are_accepted():
    gt, det = hand_case()
    det = [{"image_id": np.int64(d["image_id"]), "category_id": np.int32(d["category_id"]),
            "bbox": np.asarray(d["bbox"], dtype=np.float32), "score": np.float32(d["score"])} for d in det]
    assert evaluate_detections(gt, det)["map50"] == pytest.approx((6 / 11 + 1) / 3)


def test_score_threshold_sweep():
    gt, det = hand_case()
    rows = score_threshold_sweep(gt, det, [0.0, 0.7, 1.0])
    # 5 positives (a: 3, b: 1, c: 1). At 0: TP = a 2 + b 1, FP = a 2 + c 1 + d 1 (crowd-ignored not counted)
    assert (rows[0]["tp"], rows[0]["fp"], rows[0]["n_gt"]) == (3, 4, 5)
    assert rows[0]["precision"] == pytest.approx(3 / 7) and rows[0]["recall"] == pytest.approx(3 / 5)
    assert rows[0]["f1"] == pytest.approx(2 * (3 / 7) * (3 / 5) / (3 / 7 + 3 / 5))
    assert (rows[1]["tp"], rows[1]["fp"]) == (2, 1)  # scores .9 (TP), .8 (FP), .7 (TP) kept
    assert rows[2] == {"threshold": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "n_gt": 5}


@pytest.mark.parametrize("index, change, words", [
    (2, {"image_id": 9}, "detection #2 (image_id 9): unknown image_id"),
    (3, {"category_id": 7}, "detection #3 (image_id 2): unknown category_id 7"),
    (1, {"bbox": [0, 0, 0, 5]}, "detection #1"),
    (1, {"bbox": [0, 0, 5, -1]}, "zero-area"),
    (0, {"bbox": [0, float("nan"), 5, 5]}, "finite"),
    (0, {"score": float("inf")}, "score must be a finite number"),
    (0, {"score": None}, "score"),
])
def test_bad_detection_is_named(index, change, words):
    gt, det = hand_case()
    det[index].update(change)
    with pytest.raises(DafslError, match=words.replace("(", r"\(").replace(")", r"\)")):
        evaluate_detections(gt, det)


def test_bad_records_missing_keys_and_zero_area_gt():
    gt, det = hand_case()
    del det[4]["score"]
    with pytest.raises(DafslError, match="detection #4 .*missing key 'score'"):
        evaluate_detections(gt, det)
    gt, det = hand_case()
    gt["annotations"][3]["bbox"] = [1, 1, 0, 4]
    with pytest.raises(DafslError, match="annotation id 4.*zero-area"):
        evaluate_detections(gt, det)
    gt, det = hand_case()
    del gt["categories"]
    with pytest.raises(DafslError, match="categories"):
        evaluate_detections(gt, det)
    with pytest.raises(DafslError, match="IoU threshold"):
        evaluate_detections(*hand_case(), iou_threshold=0.0)


# ------------------------------------------------------- random cross-checks
def random_case(seed: int, crowd: bool) -> tuple[dict, list[dict]]:
    """3 classes, 20-40 objects per image, jittered hits, misses, duplicates, wrong-class and
    background FPs, scores rounded to 2 decimals (many ties), one image with >100 detections
    of one class (exercises COCO's maxDets=100), an image with detections but no GT."""
    rng = np.random.default_rng(seed)
    image_ids = [int(i) for i in rng.permutation(np.arange(1, 60))[:8]]  # unordered, non-contiguous
    anns, dets = [], []

    def add_object(img: int, cat: int, n_dets: int) -> None:
        x, y, w, h = *rng.uniform(0, 400, 2), *rng.uniform(8, 80, 2)
        is_crowd = int(crowd and rng.random() < 0.1)
        anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat,
                     "bbox": [x, y, w, h], "iscrowd": is_crowd})
        for _ in range(n_dets):
            dx, dy = rng.normal(0, 0.15, 2) * [w, h]
            sw, sh = np.exp(rng.normal(0, 0.2, 2))
            dcat = cat if rng.random() > 0.05 else int(rng.integers(1, 4))
            dets.append({"image_id": img, "category_id": dcat, "bbox": [x + dx, y + dy, w * sw, h * sh]})

    for img in image_ids[:-2]:
        for _ in range(rng.integers(20, 41)):
            add_object(img, int(rng.integers(1, 4)), int(rng.poisson(1.3)))
    for _ in range(60):  # dense image
        add_object(image_ids[-2], 1, 2)
    for img in image_ids[:-1] + [image_ids[-1]] * 5:  # last image: detections only
        for _ in range(rng.integers(0, 8)):
            dets.append({"image_id": img, "category_id": int(rng.integers(1, 4)),
                         "bbox": [*rng.uniform(0, 400, 2), *rng.uniform(5, 60, 2)]})
    for d in dets:
        d["bbox"] = [float(v) for v in d["bbox"]]
        d["score"] = round(float(rng.random()), 2)
    dets = [dets[i] for i in rng.permutation(len(dets))]
    gt = {"images": [{"id": i} for i in image_ids],
          "categories": [{"id": c, "name": f"class{c}"} for c in (1, 2, 3)], "annotations": anns}
    return gt, dets


def naive_map11(gt: dict, dets: list[dict], thr: float = 0.5) -> float:
    """Deliberately plain 11-point VOC mAP: Python loops, brute-force matching over all GT."""
    def overlap(d, g, crowd):
        ix = max(0.0, min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0]))
        iy = max(0.0, min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1]))
        inter = ix * iy
        return inter / (d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter)

    aps = []
    for cat in sorted(c["id"] for c in gt["categories"]):
        gts = [a for a in gt["annotations"] if a["category_id"] == cat]
        n_pos = sum(1 for a in gts if not a.get("iscrowd"))
        if n_pos == 0:
            continue
        ranked = sorted((d for d in dets if d["category_id"] == cat), key=lambda d: -d["score"])
        used, flags = set(), []
        for d in ranked:
            same_image = [(k, g) for k, g in enumerate(gts) if g["image_id"] == d["image_id"]]
            ok = [(overlap(d["bbox"], g["bbox"], False), k) for k, g in same_image
                  if not g.get("iscrowd") and k not in used]
            ok = [c for c in ok if c[0] >= thr]
            if ok:
                used.add(max(ok)[1])
                flags.append(True)
            elif any(overlap(d["bbox"], g["bbox"], True) >= thr for _, g in same_image if g.get("iscrowd")):
                continue  # ignored: neither TP nor FP
            else:
                flags.append(False)
        points, tp = [], 0
        for n, hit in enumerate(flags, start=1):
            tp += hit
            points.append((tp / n_pos, tp / n))
        aps.append(sum(max([p for r, p in points if r >= k / 10], default=0.0) for k in range(11)) / 11)
    return sum(aps) / len(aps)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("crowd", [False, True])
def test_map50_matches_naive_reference(seed, crowd):
    gt, dets = random_case(seed, crowd)
    res = evaluate_detections(gt, dets, with_coco=False)
    assert res["map50"] == pytest.approx(naive_map11(gt, dets), abs=1e-6)
    assert 0.05 < res["map50"] < 0.95  # the data is neither trivial nor hopeless
    assert sum(v["fp"] for v in res["per_class"].values()) > 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("crowd", [False, True])
def test_coco_ap50_matches_pycocotools(seed, crowd):
    gt, dets = random_case(seed, crowd)
    untouched = copy.deepcopy((gt, dets))
    ours, theirs = coco_ap50(gt, dets), evaluate_detections(gt, dets)["ap50_coco"]
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert (gt, dets) == untouched  # pycocotools mutates what it is given; we pass copies


# ------------------------------------------------------------------------ CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "dafsl.evaluate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def write_case(tmp_path: Path, det: list[dict] | None = None) -> tuple[Path, Path]:
    gt, hand_det = hand_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(hand_det if det is None else det))
    return tmp_path / "gt.json", tmp_path / "dt.json"


def test_cli_prints_json_and_writes_report(tmp_path):
    gt, dt = write_case(tmp_path)
    proc = run_cli("--gt", str(gt), "--dt", str(dt), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["map50"] == pytest.approx((6 / 11 + 1) / 3) and out["ap50_coco"] == pytest.approx((56 / 101 + 1) / 3)
    assert out["per_class"]["a"]["ap11"] == pytest.approx(6 / 11)
    assert (tmp_path / "rep" / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| a | 0.5455 | 3 | 5 | 2 | 2 |" in md and "no ground truth): d" in md and "IoU >= threshold" in md


@pytest.mark.parametrize("case", ["missing", "bad_json", "unknown_category"])
def test_cli_errors_exit_2_without_traceback(tmp_path, case):
    gt, dt = write_case(tmp_path)
    if case == "missing":
        dt, expected = tmp_path / "nope.json", "nope.json"
    elif case == "bad_json":
        dt.write_text("[{")
        expected = "invalid JSON"
    else:
        det = hand_case()[1]
        det[1]["category_id"] = 42
        gt, dt = write_case(tmp_path, det)
        expected = "unknown category_id 42"
    proc = run_cli("--gt", str(gt), "--dt", str(dt))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error:") and expected in proc.stderr and "Traceback" not in proc.stderr


def test_write_report_without_coco(tmp_path):
    res = evaluate_detections(*hand_case(), with_coco=False)
    png, md = write_report(res, tmp_path / "a" / "b")
    assert png.stat().st_size > 0 and "not computed" in md.read_text()
