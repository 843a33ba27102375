"""``python -m dafsl.data check`` and ``convert``: counts and the Denough/Dlack split without
training, COCO output that pycocotools loads and that scores exactly like its source."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

import fixtures_formats as F
from dafsl.config import REPO_ROOT
from dafsl.data import load_split
from dafsl.data_cli import main


def evaluate_report_module():
    spec = importlib.util.spec_from_file_location("evaluate_report", REPO_ROOT / "pipelines" / "evaluate_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_detections(split):
    """Per image, in split order: each true box jittered, plus one false positive, scores
    drawn from a generator seeded by the file name (same image, same detections)."""
    dets = []
    for iid in split.image_ids:
        info = split.image_info(iid)
        rng = np.random.default_rng(zlib.crc32(info["file_name"].encode()))
        boxes = [[x + d, y + d, x + w + d, y + h + d] for (x, y, w, h), d in
                 ((a["bbox"], rng.uniform(-3, 3)) for a in split.annotations(iid))]
        boxes.append([2.0, 2.0, 14.0, 14.0])
        dets.append({"boxes": np.array(boxes, dtype=float).reshape(-1, 4),
                     "scores": rng.uniform(0.1, 1.0, len(boxes))})
    return dets


def test_check_prints_counts_and_denough_dlack(tmp_path, capsys):
    out = main(["check", str(F.ffhq(tmp_path))])
    text = capsys.readouterr().out
    assert out["train"]["counts"] == {"male": 40, "female": 3}
    assert out["denough_dlack"]["dlack"] == ["female"]  # 3 < 0.1 x 40
    assert "ffhq_fixture/train: 43 images, 43 boxes; male=40, female=3" in text
    assert "skipped: 1 no features file, 1 no face found (empty array), 1 several faces" in text
    assert "Denough ['male'], Dlack ['female']" in text
    main(["check", str(F.wider(tmp_path)), "--split", "test"])
    assert "wider_fixture/test: 16 images, 28 boxes; face=28" in capsys.readouterr().out


def test_check_bad_record_is_one_line_exit_2(tmp_path):
    man = F.yolo(tmp_path)
    label = sorted((tmp_path / "yolo" / "labels" / "val").glob("*.txt"))[0]
    label.write_text("7 0.5 0.5 0.1 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "dafsl.data", "check", str(man)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert f"{label.name} line 1: class id 7 outside the 2 classes" in proc.stderr


@pytest.mark.parametrize("writer", [F.ffhq, F.umdfaces, F.wider, F.voc, F.yolo])
def test_convert_loads_in_pycocotools_and_scores_the_same(tmp_path, writer):
    from pycocotools.coco import COCO

    man = writer(tmp_path)
    new = main(["convert", str(man), "--out", str(tmp_path / "coco")])
    raw = json.loads(man.read_text())
    report = evaluate_report_module()
    for name in raw["splits"]:
        coco = COCO(str(tmp_path / "coco" / f"{name}.json"))
        original, converted = load_split(man, name), load_split(new, name)
        assert len(coco.getImgIds()) == len(original.image_ids) == len(converted.image_ids)
        assert len(coco.getAnnIds()) == len(original.coco["annotations"])
        assert converted.class_counts() == original.class_counts()
        if raw["class_attribute"]:
            assert {a[raw["class_attribute"]] for a in coco.loadAnns(coco.getAnnIds())} <= set(raw["classes"])
        dets = fake_detections(original)
        a = report.evaluation_report(original, dets, tmp_path / f"a-{name}", examples=0)
        b = report.evaluation_report(converted, fake_detections(converted), tmp_path / f"b-{name}", examples=0)
        assert 0.2 < a["map50"] < 1.0
        assert (a["map50"], a["ap50_coco"]) == (b["map50"], b["ap50_coco"])


def test_convert_keeps_the_selection(tmp_path):
    man = F.ffhq(tmp_path)
    main(["convert", str(man), "--out", str(tmp_path / "coco"), "--split", "train"])
    coco = json.loads((tmp_path / "coco" / "train.json").read_text())
    assert coco["info"]["selection"]["select"] == {"male": 40, "female": 3}
    assert [i["file_name"] for i in coco["images"]] == coco["info"]["selection"]["file_names"]
    assert not (tmp_path / "coco" / "val.json").exists()
