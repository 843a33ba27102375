"""``--stage all`` on a user's COCO face dataset: boxes and a gender attribute, no rendered
attributes, no identities. Written by the test from the tiny rendered splits."""
from __future__ import annotations

import json
import shutil

from dafsl.config import CONFIG_DIR
from dafsl.data import load_split
from dafsl.manifest import load_manifest
from dafsl.pipeline import main

SMOKE = str(CONFIG_DIR / "smoke.yaml")


def write_coco_dataset(tmp_path):
    root = tmp_path / "mydata"
    splits = {}
    for name in ("train", "val", "test"):
        split = load_split("synthfaces_tiny", name)
        shutil.copytree(split.image_dir, root / name)
        coco = json.loads(json.dumps(split.coco))
        for ann in coco["annotations"]:  # what a real COCO face set has: box, class, nothing else
            for key in ("attributes", "identity"):
                ann.pop(key, None)
        (root / f"{name}.json").write_text(json.dumps(coco))
        splits[name] = {"images": name, "annotations": f"{name}.json"}
    m = json.loads(load_manifest("synthfaces_tiny").path.read_text())
    m.update(name="myfaces", source={"type": "coco", "root": str(root)}, splits=splits)
    path = tmp_path / "myfaces.json"
    path.write_text(json.dumps(m))
    return path


def test_stage_all_runs_on_coco_faces_without_rendered_attributes(tmp_path):
    manifest = write_coco_dataset(tmp_path)
    assert "attributes" not in load_split(manifest, "train").coco["annotations"][0]
    summary = main(["--stage", "all", "--kd", "pretrained", "--config", SMOKE, "--quiet",
                    "--set", f"data.manifest={manifest}", "--out", str(tmp_path / "run")])
    assert 0.0 <= summary["detector"]["test_map50"] <= 1.0
    assert summary["augmenter"]["kid"] == summary["augmenter"]["kid"]  # a number, not NaN
    assert summary["classifier"]["test_balanced_accuracy"] >= 0.0
    assert (tmp_path / "run" / "report.html").is_file()
