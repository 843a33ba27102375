"""The paper's data layout end to end: training on an FFHQ-layout fixture (exact class
counts), testing on a UMDFaces-layout fixture, through ``--stage all``; the mAP@0.5 report
on the UMDFaces source equals the one on its COCO conversion; ``configs/paper.yaml`` runs
the same chain once ``--set`` shrinks it. Detection-only sources stop the class stages in
one line."""
from __future__ import annotations

import json

import pytest
import yaml

import fixtures_formats as F
from dafsl.config import CONFIG_DIR, load_config
from dafsl.data_cli import main as data_main
from dafsl.errors import DafslError
from dafsl.pipeline import main
from test_data_cli import evaluate_report_module

SMOKE = str(CONFIG_DIR / "smoke.yaml")
PAPER = str(CONFIG_DIR / "paper.yaml")


def paper_layout(tmp_path):
    """FFHQ-layout train/val and, as the test split, the UMDFaces-layout fixture."""
    ffhq, umd = F.ffhq(tmp_path, box="face_rectangle"), F.umdfaces(tmp_path)  # as paper.json
    m = json.loads(ffhq.read_text())
    m["splits"]["test"] = {"manifest": umd.name, "split": "test"}  # relative to this manifest
    m["name"] = "paper_fixture"
    path = tmp_path / "paper_fixture.json"
    path.write_text(json.dumps(m))
    return path, umd


def flat(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += flat(v, key + ".") if isinstance(v, dict) else [f"{key}={json.dumps(v)}"]
    return out


def test_ffhq_train_umdfaces_test_chain_and_report(tmp_path):
    manifest, umd = paper_layout(tmp_path)
    run = tmp_path / "run"
    summary = main(["--stage", "all", "--kd", "pretrained", "--config", SMOKE, "--quiet",
                    "--set", f"data.manifest={manifest}", "--out", str(run)])
    assert 0.0 <= summary["detector"]["test_map50"] <= 1.0
    assert summary["classifier"]["test_balanced_accuracy"] >= 0.0
    split = json.loads((run / "data_split.json").read_text())
    assert split["counts"] == {"male": 40, "female": 3} and split["dlack"] == ["female"]
    chosen = json.loads((run / "data_selection.json").read_text())
    assert chosen["train"]["select"] == {"male": 40, "female": 3} and len(chosen["train"]["file_names"]) == 43
    assert chosen["test"]["from"] == "umd_fixture/test" and len(chosen["test"]["file_names"]) == 16
    # the report on the UMDFaces source and on its COCO conversion: same mAP@0.5
    report = evaluate_report_module()
    coco = data_main(["convert", str(umd), "--out", str(tmp_path / "coco"), "--split", "test"])
    a = report.main(["--run", str(run), "--manifest", str(umd), "--config", SMOKE, "--out", str(tmp_path / "a")])
    b = report.main(["--run", str(run), "--manifest", str(coco), "--config", SMOKE, "--out", str(tmp_path / "b")])
    assert (a["map50"], a["ap50_coco"]) == (b["map50"], b["ap50_coco"])
    assert a["per_class"]["face"]["n_gt"] == 33
    # and on a user's own VOC, YOLO and WIDER data, without conversion
    for writer in (F.voc, F.yolo, F.wider):
        own = writer(tmp_path / writer.__name__)
        r = report.main(["--run", str(run), "--manifest", str(own), "--config", SMOKE,
                         "--out", str(tmp_path / f"eval-{writer.__name__}")])
        assert 0.0 <= r["map50"] <= 1.0 and (tmp_path / f"eval-{writer.__name__}" / "report.md").is_file()


def test_paper_config_runs_end_to_end_when_shrunk(tmp_path):
    manifest, _ = paper_layout(tmp_path)
    shrink = flat(yaml.safe_load(open(SMOKE))) + [
        f"data.manifest={manifest}", "detector.rpn_pre_nms_train=200", "detector.rpn_post_nms_train=100",
        "detector.rpn_pre_nms_test=100", "detector.rpn_post_nms_test=50", "detector.epochs=1",
        "detector.rpn_batch_per_image=64", "detector.roi_batch_per_image=64", "classifier.epochs=1"]
    overrides = [x for item in shrink for x in ("--set", item)]
    cfg = load_config(PAPER, [o for o in overrides if o != "--set"])
    assert cfg["detector"]["optimizer"] == "sgd" and cfg["detector"]["fpn_extra_pool"]  # paper.yaml's
    summary = main(["--stage", "all", "--kd", "pretrained", "--config", PAPER, "--quiet",
                    *overrides, "--out", str(tmp_path / "run")])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["detector"]["anchor_sizes"] == [[32], [64], [128], [256], [512]]
    assert 0.0 <= summary["detector"]["test_map50"] <= 1.0
    assert summary["classifier"]["test_balanced_accuracy"] >= 0.0


def test_detection_only_source_stops_class_stages_in_one_line(tmp_path):
    own = F.wider(tmp_path)
    m = json.loads(own.read_text())
    m["splits"] = {s: m["splits"]["test"] for s in ("train", "val", "test")}
    own.write_text(json.dumps(m))
    with pytest.raises(SystemExit) as err:
        main(["--stage", "all", "--config", SMOKE, "--quiet", "--set", f"data.manifest={own}",
              "--out", str(tmp_path / "run")])
    assert err.value.code == 2
    assert not (tmp_path / "run" / "detector").exists()  # refused before anything trained
    summary = main(["--stage", "detector", "--kd", "vanilla", "--config", SMOKE, "--quiet",
                    "--set", f"data.manifest={own}", "--set", "detector.epochs=1",
                    "--out", str(tmp_path / "det")])  # the detector trains without a class
    assert 0.0 <= summary["detector"]["test_map50"] <= 1.0
    from dafsl.stages import STAGES

    with pytest.raises(DafslError, match="stage augmenter needs a class attribute .* has only face"):
        STAGES["augmenter"].check_data({"counts": {"face": 28}, "dataset": "wider_fixture/train"})
    STAGES["detector"].check_data({"counts": {"face": 28}})  # the detector needs no class
