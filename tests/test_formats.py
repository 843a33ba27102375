"""Every source format, from fixtures in its official layout (tests/fixtures_formats.py):
what it loads to, by hand, and the one-line answer to each kind of bad record."""
from __future__ import annotations

import csv
import json

import pytest

import fixtures_formats as F
from dafsl.data import load_split
from dafsl.errors import DafslError
from dafsl.manifest import load_manifest


def synth_boxes(split_name: str):
    """file stem -> [(bbox, gender)] of the tiny rendered split the fixtures are made from."""
    return {stem: faces for _, faces, stem in F.faces_of(split_name)}


def edit_manifest(path, **changes):
    m = json.loads(path.read_text())
    for key, value in changes.items():
        m[key] = value
    path.write_text(json.dumps(m))
    return path


# ---------------------------------------------------------------- FFHQ
def test_ffhq_whole_image_boxes_and_the_skip_policy(tmp_path):
    man = F.ffhq(tmp_path)
    test = load_split(man, "test")
    assert test.skipped == {"no features file": 1, "no face found (empty array)": 1, "several faces": 1}
    assert len(test.image_ids) == 20  # 23 indices, 3 without a usable label
    for iid in test.image_ids:
        info = test.image_info(iid)
        assert info["file_name"].startswith("images1024x1024/00000/") and info["width"] == 64
        assert [a["bbox"] for a in test.annotations(iid)] == [[0.0, 0.0, 64.0, 64.0]]
    # the labels are the synth genders, in index order: train faces first, then val faces
    val_genders = [g for faces in synth_boxes("val").values() for _, g in faces]
    assert [test.annotations(i)[0]["gender"] for i in test.image_ids] == val_genders[-20:]


def test_ffhq_thumbnails_and_face_rectangle(tmp_path):
    man = F.ffhq(tmp_path, box="face_rectangle")
    src = json.loads(man.read_text())["source"]
    edit_manifest(man, source={**src, "image_size": 128})
    test = load_split(man, "test")
    iid = test.image_ids[0]
    rect = json.loads((tmp_path / "ffhq" / "json" / f"{test.image_info(iid)['ffhq_index']:05d}.json")
                      .read_text())[0]["faceRectangle"]
    assert test.image_info(iid)["file_name"].startswith("thumbnails128x128/")
    assert test.image_info(iid)["width"] == 32  # the 64 px originals' thumbnails
    half = [rect["left"] / 2, rect["top"] / 2, rect["width"] / 2, rect["height"] / 2]
    assert test.annotations(iid)[0]["bbox"] == pytest.approx(half)


def test_ffhq_exact_class_counts_are_deterministic(tmp_path):
    man = F.ffhq(tmp_path)
    a, b = load_split(man, "train"), load_split(man, "train")
    assert a.class_counts() == {"male": 40, "female": 3}
    assert a.selection["file_names"] == b.selection["file_names"]
    assert a.selection["available"] == {"male": 108, "female": 8}
    spec = json.loads(man.read_text())["splits"]
    edit_manifest(man, splits={**spec, "train": {**spec["train"], "seed": 1}})
    other = load_split(man, "train")
    assert other.class_counts() == {"male": 40, "female": 3}
    assert other.selection["file_names"] != a.selection["file_names"]
    edit_manifest(man, splits={**spec, "train": {**spec["train"], "select": {"male": 40, "female": 9}}})
    with pytest.raises(DafslError, match="select asks for 9 female images, only 8 are available"):
        load_split(man, "train")


@pytest.mark.parametrize("features, msg", [
    ([{"faceRectangle": {"top": 1, "left": 1, "width": 9, "height": 9},
       "faceAttributes": {"gender": "unknown"}}], r"json/00116\.json face 0: unknown gender 'unknown'"),
    ("{not json", r"json/00116\.json: invalid JSON"),
    ({"faceAttributes": {}}, r"json/00116\.json: expected a JSON array of faces"),
])
def test_ffhq_bad_label_files(tmp_path, features, msg):
    man = F.ffhq(tmp_path)
    path = tmp_path / "ffhq" / "json" / "00116.json"
    path.write_text(features if isinstance(features, str) else json.dumps(features))
    with pytest.raises(DafslError, match=msg) as err:
        load_split(man, "test")
    assert "\n" not in str(err.value)


def test_ffhq_missing_image_and_box_outside(tmp_path):
    man = F.ffhq(tmp_path, box="face_rectangle")
    (tmp_path / "ffhq" / "images1024x1024" / "00000" / "00117.png").unlink()
    with pytest.raises(DafslError, match=r"00117\.png: image file not found \(.*00117\.json"):
        load_split(man, "test")
    faces = json.loads((tmp_path / "ffhq" / "json" / "00118.json").read_text())
    faces[0]["faceRectangle"]["left"] = 50  # 50 + 40 > 64
    (tmp_path / "ffhq" / "json" / "00118.json").write_text(json.dumps(faces))
    spec = json.loads(man.read_text())["splits"]
    edit_manifest(man, splits={**spec, "test": {"range": [118, 119]}})
    with pytest.raises(DafslError, match=r"00118\.json face 0: box .* lies outside its 64x64 image"):
        load_split(man, "test")


# ---------------------------------------------------------------- UMDFaces
def test_umdfaces_columns_by_name_threshold_and_subset(tmp_path):
    man = F.umdfaces(tmp_path)
    full = load_split(man, "all")
    truth = synth_boxes("test")
    assert len(full.image_ids) == len(truth)
    for iid in full.image_ids:
        stem = full.image_info(iid)["file_name"].rsplit("/", 1)[1][:-4]
        got = [(a["bbox"], a["gender"]) for a in full.annotations(iid)]
        assert got == [(list(map(float, b)), g) for b, g in truth[stem]]
    sub = load_split(man, "test")
    assert len(sub.image_ids) == 16 and sub.selection["subset"] == 16
    assert set(sub.selection["file_names"]) < {i["file_name"] for i in full.coco["images"]}
    assert load_split(man, "test").selection == sub.selection


def _rewrite_csv(tmp_path, change):
    path = tmp_path / "umd" / "umdfaces_batch1" / "umdfaces_batch1_ultraface.csv"
    rows = list(csv.DictReader(path.open()))
    columns = change(rows) or F.UMD_COLUMNS
    F.write_csv(path, rows, columns)


@pytest.mark.parametrize("change, msg", [
    (lambda rows: [c for c in F.UMD_COLUMNS if c != "FACE_WIDTH"], "CSV has no column FACE_WIDTH"),
    (lambda rows: rows[2].update(PR_MALE="n/a"), r"csv line 4: PR_MALE is not a number \('n/a'\)"),
    (lambda rows: rows[0].update(FACE_X="120"), r"csv line 2: box \[120, .* lies outside its 128x128 image"),
    (lambda rows: rows[1].update(FILE="9/none.jpg"), r"none\.jpg: image file not found \(.*csv line 3\)"),
])
def test_umdfaces_bad_records(tmp_path, change, msg):
    man = F.umdfaces(tmp_path)
    _rewrite_csv(tmp_path, change)
    with pytest.raises(DafslError, match=msg):
        load_split(man, "all")


# ---------------------------------------------------------------- WIDER FACE
def test_wider_skips_invalid_and_zero_size_faces(tmp_path):
    man = F.wider(tmp_path)
    split = load_split(man, "test")
    truth = list(synth_boxes("val").values())
    assert split.skipped == {"face flagged invalid": 1, "face of zero size": 1}
    assert len(split.image_ids) == len(truth)
    assert split.annotations(split.image_ids[1]) == []  # count 0 and its all-zero line
    assert len(split.coco["annotations"]) == sum(map(len, truth)) - len(truth[1])
    assert [a["bbox"] for a in split.annotations(split.image_ids[0])] == \
        [list(map(float, b)) for b, _ in truth[0]]
    assert split.class_counts() == {"face": len(split.coco["annotations"])}


@pytest.mark.parametrize("delta, msg", [
    (+1, r"line 2: count \d+ for 0--Event/\S+ disagrees with the \d+ face line\(s\) that follow"),
    (-1, r"expected an image file name, got '.*'; the count for 0--Event/\S+ \(line 2\) disagrees"),
])
def test_wider_count_line_that_disagrees(tmp_path, delta, msg):
    man = F.wider(tmp_path)
    ann = tmp_path / "wider" / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    lines = ann.read_text().splitlines()
    lines[1] = str(int(lines[1]) + delta)
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(DafslError, match=msg):
        load_split(man, "test")


def test_wider_without_class_attribute_only(tmp_path):
    man = F.wider(tmp_path)
    edit_manifest(man, class_attribute="gender", classes=["male", "female"])
    with pytest.raises(DafslError, match="a wider source has no class attribute"):
        load_manifest(man)


# ---------------------------------------------------------------- Pascal VOC
def test_voc_boxes_difficult_and_gender_names(tmp_path):
    split = load_split(F.voc(tmp_path), "test")
    truth = list(synth_boxes("val").values())
    first = split.annotations(split.image_ids[0])
    assert [a["iscrowd"] for a in first] == [1] + [0] * (len(first) - 1)
    assert [v for a in first for v in a["bbox"]] == pytest.approx([v for b, _ in truth[0] for v in b])
    gender = load_split(F.voc(tmp_path / "g", gender=True), "test")
    assert [a["gender"] for a in gender.annotations(gender.image_ids[0])] == [g for _, g in truth[0]]


@pytest.mark.parametrize("edit, msg", [
    (lambda x: x.replace("</annotation>", ""), r"\.xml: malformed XML \(line 1, column \d+\)"),
    (lambda x: x.replace("<name>face</name>", "<name>cat</name>", 1), r"\.xml object 0: unknown category 'cat'"),
    (lambda x: x.replace("<xmax>", "<xmax>1", 1), r"\.xml object 0: box .* lies outside"),
    (lambda x: x.replace(".jpg</filename>", ".png</filename>"), r"\.png: image file not found"),
])
def test_voc_bad_records(tmp_path, edit, msg):
    man = F.voc(tmp_path)
    xml = sorted((tmp_path / "voc" / "Annotations").glob("*.xml"))[0]
    xml.write_text(edit(xml.read_text()))
    with pytest.raises(DafslError, match=msg) as err:
        load_split(man, "test")
    assert xml.name in str(err.value) or "png" in str(err.value)


# ---------------------------------------------------------------- YOLO
def test_yolo_normalised_boxes_and_class_list(tmp_path):
    split = load_split(F.yolo(tmp_path), "test")
    truth = synth_boxes("val")
    for iid in split.image_ids:
        stem = split.image_info(iid)["file_name"][:-4]
        got = [(a["bbox"], a["gender"]) for a in split.annotations(iid)]
        want = [] if stem == list(truth)[-1] else truth[stem]  # the last has no label file
        assert [g for _, g in got] == [g for _, g in want]
        for (b, _), (t, _) in zip(got, want):
            assert b == pytest.approx(list(map(float, t)), abs=1e-3)  # 6 decimals of 128 px


@pytest.mark.parametrize("line, msg", [
    ("2 0.5 0.5 0.1 0.1", r"\.txt line 1: class id 2 outside the 2 classes of classes\.txt \(0\.\.1\)"),
    ("0 0.95 0.5 0.3 0.1", r"\.txt line 1: box .* lies outside its 128x128 image"),
    ("0 0.5 0.5", r"\.txt line 1: expected 'class_id cx cy w h'"),
])
def test_yolo_bad_lines(tmp_path, line, msg):
    man = F.yolo(tmp_path)
    label = sorted((tmp_path / "yolo" / "labels" / "val").glob("*.txt"))[0]
    label.write_text(line + "\n")
    with pytest.raises(DafslError, match=msg):
        load_split(man, "test")


# ---------------------------------------------------------------- manifests
@pytest.mark.parametrize("split, msg", [
    ({"images": "x"}, "split 'test' needs 'labels'"),
    ({"images": "x", "labels": "y", "select": {"robot": 1}}, "select names unknown class 'robot'"),
    ({"images": "x", "labels": "y", "subset": 0}, "subset must be an image count >= 1"),
    ({"images": "x", "labels": "y", "subset": 2, "select": {"male": 1}}, "either 'select'"),
])
def test_manifest_split_keys_are_checked(tmp_path, split, msg):
    man = edit_manifest(F.yolo(tmp_path), splits={"test": split})
    with pytest.raises(DafslError, match=msg):
        load_manifest(man)


def test_unset_root_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("FFHQ_ROOT", raising=False)
    with pytest.raises(DafslError, match=r"paper\.json: '\$FFHQ_ROOT' names an environment variable"):
        load_split("paper", "train")
