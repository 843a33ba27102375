"""Manifests, rendered splits, COCO export/validation and the Denough/Dlack rule."""
import json
import shutil
from contextlib import redirect_stdout
from io import StringIO

import cv2
import numpy as np
import pytest

from dafsl import data as data_mod
from dafsl.data import denough_dlack, load_split
from dafsl.errors import DafslError
from dafsl.manifest import load_manifest


def test_tiny_split_renders_once_then_comes_from_cache(monkeypatch):
    first = load_split("synthfaces_tiny", "val")
    assert len(first.image_ids) == 16 and first.coco["categories"] == [{"id": 1, "name": "face"}]

    def no_render(*a, **k):
        raise AssertionError("rendered again")

    monkeypatch.setattr(data_mod, "render_to", no_render)
    again = load_split("synthfaces_tiny", "val")
    assert again.coco == first.coco
    assert np.array_equal(again.load_image(again.image_ids[0]), first.load_image(first.image_ids[0]))


def test_cache_is_keyed_by_manifest_content(tmp_path):
    m = json.loads(load_manifest("synthfaces_tiny").path.read_text())
    m["splits"]["val"]["count"] = 3
    path = tmp_path / "other.json"
    path.write_text(json.dumps(m))
    split = load_split(path, "val")
    assert len(split.image_ids) == 3
    assert split.image_dir != load_split("synthfaces_tiny", "val").image_dir


def test_export_is_valid_coco_with_gender_attribute():
    from pycocotools.coco import COCO

    split = load_split("synthfaces_tiny", "train")
    coco = COCO()
    coco.dataset = split.coco
    with redirect_stdout(StringIO()):
        coco.createIndex()
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and {a["gender"] for a in anns} == {"male", "female"}
    assert all("identity" in a for a in anns)
    counts = split.class_counts()
    assert counts["female"] == 4 and counts["male"] > 40  # male-heavy pool, 4 female faces
    for img in coco.loadImgs(coco.getImgIds()):
        assert split.load_image(img["id"]).shape == (img["height"], img["width"], 3)


def test_splits_are_disjoint():
    train, test = load_split("synthfaces_tiny", "train"), load_split("synthfaces_tiny", "test")
    seeds = lambda s: {i["seed"] for i in s.coco["images"]}  # noqa: E731
    ids = lambda s: {a["identity"] for a in s.coco["annotations"]}  # noqa: E731
    assert not seeds(train) & seeds(test) and not ids(train) & ids(test)
    counts = test.class_counts()
    assert abs(counts["male"] - counts["female"]) <= 1  # balanced test split


def test_denough_dlack_rule():
    info = denough_dlack({"male": 10000, "female": 10}, 0.1)
    assert info["denough"] == ["male"] and info["dlack"] == ["female"]
    assert denough_dlack({"male": 100, "female": 60}, 0.5)["dlack"] == []
    with pytest.raises(DafslError, match="class 'female' has no samples"):
        denough_dlack({"male": 5, "female": 0}, 0.1, origin="x/train")
    with pytest.raises(DafslError, match="imbalance_threshold"):
        denough_dlack({"male": 5, "female": 1}, 0.0)


# -- bad input: a COCO manifest written from the rendered tiny split -----------------
@pytest.fixture
def coco_manifest(tmp_path):
    split = load_split("synthfaces_tiny", "val")
    root = tmp_path / "data"
    shutil.copytree(split.image_dir, root / "images")
    (root / "val.json").write_text(json.dumps(split.coco))
    m = json.loads(load_manifest("synthfaces_tiny").path.read_text())
    m.update(name="mycoco", source={"type": "coco", "root": str(root)},
             splits={"val": {"images": "images", "annotations": "val.json"}})
    path = tmp_path / "mycoco.json"
    path.write_text(json.dumps(m))
    return path, root, split.coco


def _rewrite(root, coco):
    (root / "val.json").write_text(json.dumps(coco))


def test_coco_manifest_loads(coco_manifest):
    path, _, coco = coco_manifest
    assert load_split(path, "val").coco == coco


@pytest.mark.parametrize("edit, msg", [
    (lambda c: c["annotations"][0].update(bbox=[120.0, 120.0, 30.0, 30.0]),
     "annotation 1 box .* lies outside"),
    (lambda c: c["annotations"][0].update(bbox=[10.0, 10.0, 0.0, 5.0]),
     "annotation 1 box has zero area"),
    (lambda c: c["annotations"][0].update(category_id=7), "annotation 1 has unknown category"),
    (lambda c: c["annotations"][0].update(gender="robot"), "annotation 1 has unknown gender"),
])
def test_bad_records_name_the_record(coco_manifest, edit, msg):
    path, root, coco = coco_manifest
    edit(coco)
    _rewrite(root, coco)
    with pytest.raises(DafslError, match=msg) as err:
        load_split(path, "val")
    assert "val.json" in str(err.value)


def test_missing_and_corrupt_images(coco_manifest):
    path, root, coco = coco_manifest
    first = root / "images" / coco["images"][0]["file_name"]
    first.write_bytes(b"garbage")
    split = load_split(path, "val")
    with pytest.raises(DafslError, match="cannot decode image"):
        split.load_image(coco["images"][0]["id"])
    first.unlink()
    with pytest.raises(DafslError, match=f"{first.name}: image file not found"):
        load_split(path, "val")


def test_manifest_errors(tmp_path):
    with pytest.raises(DafslError, match="manifest not found"):
        load_manifest(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DafslError, match="bad.json: invalid JSON"):
        load_manifest(bad)
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(DafslError, match="missing key"):
        load_manifest(bad)
    with pytest.raises(DafslError, match="no split 'dev'"):
        load_split("synthfaces_tiny", "dev")


def test_real_dataset_manifests_describe_ffhq_and_umdfaces():
    ffhq, umd = load_manifest("ffhq"), load_manifest("umdfaces")
    assert ffhq.source["class_from"]["path"] == "faceAttributes.gender"
    assert umd.source["class_from"]["column"] == "PR_MALE"
    assert ffhq.classes == umd.classes == ["male", "female"]


def test_written_png_is_what_the_renderer_drew():
    from dafsl.synth import faces

    split = load_split("synthfaces_tiny", "val")
    info = split.coco["images"][0]
    n = faces.face_count(info["seed"])
    assert n == len(split.annotations(info["id"]))
    img = cv2.cvtColor(cv2.imread(str(split.image_path(info["id"]))), cv2.COLOR_BGR2RGB)
    assert img.shape == (128, 128, 3)


@pytest.mark.slow
def test_default_dataset_renders_and_loads_in_pycocotools():
    """The full default manifest (1,100 scenes): ~15 s to render on 2 cores."""
    from pycocotools.coco import COCO

    for split_name in ("train", "val", "test"):
        split = load_split("synthfaces", split_name)
        coco = COCO()
        coco.dataset = split.coco
        with redirect_stdout(StringIO()):
            coco.createIndex()
        assert len(coco.getImgIds()) == len(split.image_ids)
    assert load_split("synthfaces", "train").class_counts()["female"] == 10


def test_truncated_cached_image_is_detected_and_rendered_again(tmp_path):
    root = str(tmp_path / "cache")
    first = load_split("synthfaces_tiny", "val", root)
    img = first.image_dir / first.coco["images"][0]["file_name"]
    good = img.read_bytes()
    img.write_bytes(good[: len(good) // 2])  # a copy interrupted half-way
    again = load_split("synthfaces_tiny", "val", root)
    assert img.read_bytes() == good and again.coco == first.coco
    assert np.array_equal(again.load_image(again.image_ids[0]), first.load_image(first.image_ids[0]))
