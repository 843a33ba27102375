"""The embedded character set (glyphs), the real-Omniglot loader on a written fixture, and
few-shot episodes."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dafsl.errors import DafslError
from dafsl.fewshot import data as fsdata
from dafsl.fewshot.data import EpisodeSampler, load_characters, sample_episode
from dafsl.manifest import MANIFEST_DIR
from dafsl.synth import glyphs

REPO = Path(__file__).resolve().parents[1]
SMALL = {"background_alphabets": 2, "evaluation_alphabets": 1, "characters": [3, 4], "drawers": 20}


# -- the renderer -------------------------------------------------------------------
def test_render_is_deterministic_and_the_seed_matters():
    a, b = glyphs.render_set(SMALL), glyphs.render_set(SMALL)
    assert np.array_equal(a["images"], b["images"]) and a["classes"] == b["classes"]
    other = glyphs.render_set({**SMALL, "seed": 1})
    n = min(len(a["images"]), len(other["images"]))
    assert not np.array_equal(a["images"][:n], other["images"][:n])
    img = a["images"]
    assert img.dtype == np.uint8 and img.shape[1:] == (28, 28)
    assert img.max() == 255 and (img.reshape(len(img), -1).max(1) > 200).all()  # every image has ink
    ink = (img > 127).mean((1, 2))
    assert (ink > 0.02).all() and (ink < 0.5).all()  # strokes, not blank nor filled
    # drawers differ from each other, and drawings of one character resemble each other
    # more than drawings of different characters
    x = img.reshape(len(img), -1).astype(np.float32)
    assert not np.array_equal(x[0], x[1])
    within = np.linalg.norm(x[0:20] - x[0:20].mean(0), axis=1).mean()
    between = np.linalg.norm(x[0:20] - x[20:40].mean(0), axis=1).mean()
    assert within < between


def test_bad_params_are_one_line_errors():
    with pytest.raises(DafslError, match="unknown glyphs param 'colour'"):
        glyphs.render_set({"colour": 1})
    with pytest.raises(DafslError, match="drawers >= 1"):
        glyphs.render_set({"characters": [5, 2]})


# -- load_characters on the embedded set ----------------------------------------------
def test_splits_shapes_drawers_and_disjoint_alphabets(tmp_path):
    sets = {s: load_characters("glyphs_tiny", s, cache_dir=tmp_path) for s in ("train", "val", "test")}
    counts = glyphs.character_counts(json.loads(
        (MANIFEST_DIR / "glyphs_tiny.json").read_text())["source"]["params"])
    assert len(sets["train"].classes) == sum(counts["background"][:3])
    assert len(sets["val"].classes) == counts["background"][3]
    assert len(sets["test"].classes) == sum(counts["evaluation"])
    alphabets = {s: {c.split("/")[0] for c in d.classes} for s, d in sets.items()}
    assert alphabets["train"] == {"background01", "background02", "background03"}
    assert alphabets["val"] == {"background04"}
    assert alphabets["test"] == {"evaluation01", "evaluation02"}
    for d in sets.values():
        assert d.images.dtype == torch.float32 and d.images.shape[1:] == (1, 28, 28)
        assert d.images.min() == 0.0 and d.images.max() == 1.0
        assert d.labels.dtype == torch.int64 and d.drawers.dtype == torch.int64
        c = len(d.classes)
        assert torch.equal(torch.bincount(d.labels, minlength=c), torch.full((c,), 20))
        for k in range(c):  # each character: drawers 0..19 exactly once
            assert sorted(d.drawers[d.labels == k].tolist()) == list(range(20))
    # no evaluation drawing equals a background one
    flat = {s: d.images.flatten(1) for s, d in sets.items()}
    assert torch.cdist(flat["test"], flat["train"]).min() > 1.0


def test_image_size_is_configurable(tmp_path):
    d = load_characters("glyphs_tiny", "val", image_size=20, cache_dir=tmp_path)
    assert d.images.shape[1:] == (1, 20, 20)
    with pytest.raises(DafslError, match="image_size"):
        load_characters("glyphs_tiny", "val", image_size=4, cache_dir=tmp_path)


def test_the_cache_is_hit_the_second_time(tmp_path, monkeypatch):
    first = load_characters("glyphs_tiny", "test", cache_dir=tmp_path)
    files = list((tmp_path / "data").rglob("*.npz"))
    assert len(files) == 1 and files[0].name == "28px.npz"
    assert not list((tmp_path / "data").rglob(".*"))  # no temp file left behind

    def no_render(*a, **k):
        raise AssertionError("rendered again")

    monkeypatch.setattr(glyphs, "render_set", no_render)
    again = load_characters("glyphs_tiny", "test", cache_dir=tmp_path)
    assert torch.equal(again.images, first.images) and again.classes == first.classes
    # other params -> another cache entry, so the renderer is needed again
    m = json.loads((MANIFEST_DIR / "glyphs_tiny.json").read_text())
    m["source"]["params"]["drawers"] = 5
    (tmp_path / "g.json").write_text(json.dumps(m))
    with pytest.raises(AssertionError, match="rendered again"):
        load_characters(tmp_path / "g.json", "test", cache_dir=tmp_path)


def test_a_split_spec_error_names_the_manifest(tmp_path):
    m = json.loads((MANIFEST_DIR / "glyphs_tiny.json").read_text())
    m["splits"]["val"] = {"set": "middle", "alphabets": [0, 1]}
    m["splits"]["test"] = {"set": "evaluation", "alphabets": [5, 9]}
    (tmp_path / "g.json").write_text(json.dumps(m))
    with pytest.raises(DafslError, match=r"g\.json split 'val': 'set' must be one of"):
        load_characters(tmp_path / "g.json", "val", cache_dir=tmp_path)
    with pytest.raises(DafslError, match=r"g\.json split 'test': selects no characters"):
        load_characters(tmp_path / "g.json", "test", cache_dir=tmp_path)


# -- the real Omniglot loader on a fixture in the official layout ------------------------
def write_omniglot(root: Path, background: int = 27, evaluation: int = 2, characters: int = 2,
                   drawings: int = 3) -> None:
    """Omniglot's layout: 105x105 PNGs, black ink on white, files <char>_<drawer>.png."""
    for sub, n_alpha in (("images_background", background), ("images_evaluation", evaluation)):
        for a in range(n_alpha):
            for c in range(characters):
                folder = root / sub / f"Alphabet_{a:02d}" / f"character{c + 1:02d}"
                folder.mkdir(parents=True)
                for d in range(drawings):
                    img = np.full((105, 105), 255, np.uint8)
                    cv2.rectangle(img, (10 + 5 * c, 10 + 3 * d), (60 + a, 90), 0, -1)
                    cv2.imwrite(str(folder / f"{a * 100 + c:04d}_{d + 1:02d}.png"), img)


@pytest.fixture
def omniglot(tmp_path, monkeypatch):
    root = tmp_path / "omniglot"
    write_omniglot(root)
    monkeypatch.setenv("OMNIGLOT_ROOT", str(root))
    return root


def test_omniglot_fixture_loads_through_the_shipped_manifest(omniglot):
    train = load_characters("omniglot", "train")
    val, test = load_characters("omniglot", "val"), load_characters("omniglot", "test")
    assert len(train.classes) == 25 * 2 and len(val.classes) == 2 * 2 and len(test.classes) == 2 * 2
    assert train.classes[:3] == ("Alphabet_00/character01", "Alphabet_00/character02",
                                 "Alphabet_01/character01")
    assert {c.split("/")[0] for c in val.classes} == {"Alphabet_25", "Alphabet_26"}
    assert train.images.shape == (25 * 2 * 3, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.drawers[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert train.labels[:6].tolist() == [0, 0, 0, 1, 1, 1]
    # inverted: the black rectangle is ink (1.0), the white page is background (0.0)
    img = train.images[0, 0]
    assert img[0, 0] == 0.0 and img[14, 10] == 1.0
    assert load_characters("omniglot", "test", image_size=105).images[0, 0, 0, 0] == 0.0


def test_omniglot_is_decoded_once_then_cached_until_a_file_changes(omniglot, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_characters("omniglot", "test", cache_dir=cache)
    assert len(list((cache / "data").rglob("*.npz"))) == 1

    def no_read(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(fsdata, "_read_drawing", no_read)
    again = load_characters("omniglot", "test", cache_dir=cache)
    assert torch.equal(again.images, first.images) and again.classes == first.classes
    # a redrawn file (new size/mtime) invalidates the cache
    png = next((omniglot / "images_evaluation").rglob("*.png"))
    img = np.full((105, 105), 255, np.uint8)
    cv2.line(img, (0, 0), (104, 104), 0, 9)
    cv2.imwrite(str(png), img)
    with pytest.raises(AssertionError, match="decoded again"):
        load_characters("omniglot", "test", cache_dir=cache)
    assert png.exists()


def test_omniglot_root_unset_or_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("OMNIGLOT_ROOT", raising=False)
    with pytest.raises(DafslError, match=r"omniglot\.json: .*OMNIGLOT_ROOT, which is not set"):
        load_characters("omniglot", "train")
    monkeypatch.setenv("OMNIGLOT_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(DafslError, match="nowhere: Omniglot root folder not found"):
        load_characters("omniglot", "train")


def _first_char(root: Path) -> Path:
    return root / "images_background" / "Alphabet_00" / "character01"


@pytest.mark.parametrize("breakage, culprit, message", [
    ("empty", "character01", "character folder has no images"),
    ("text", "notes.txt", "not a PNG image"),
    ("corrupt", "0000_09.png", "cannot decode PNG"),
    ("zero_bytes", "0000_09.png", "cannot decode PNG"),
    ("no_eval", "images_evaluation", "split folder not found"),
])
def test_malformed_omniglot_is_one_line_naming_the_path(omniglot, breakage, culprit, message):
    char = _first_char(omniglot)
    if breakage == "empty":
        for f in char.iterdir():
            f.unlink()
    elif breakage == "text":
        (char / "notes.txt").write_text("hello")
    elif breakage in ("corrupt", "zero_bytes"):
        (char / "0000_09.png").write_bytes(b"not a png" if breakage == "corrupt" else b"")
    else:
        import shutil
        shutil.rmtree(omniglot / "images_evaluation")
    split = "test" if breakage == "no_eval" else "train"
    with pytest.raises(DafslError) as err:
        load_characters("omniglot", split)
    text = str(err.value)
    assert "\n" not in text and culprit in text and message in text and str(omniglot) in text


def test_malformed_omniglot_through_a_cli_exits_2(omniglot, monkeypatch):
    for f in _first_char(omniglot).iterdir():
        f.unlink()
    proc = subprocess.run([sys.executable, str(REPO / "pipelines" / "glyphs_baseline.py"),
                           "--manifest", "omniglot", "--split", "train"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "character01: character folder has no images" in lines[0]


def test_fewer_classes_than_way_is_one_line(omniglot):
    test = load_characters("omniglot", "test")  # 2 alphabets x 2 characters = 4 classes
    with pytest.raises(DafslError, match=r"omniglot/test has 4 classes, fewer than way=5"):
        EpisodeSampler(test.labels, way=5, shot=1, query=1, n_episodes=10, origin=test.origin)
    with pytest.raises(DafslError, match="has 4 classes, fewer than way=5"):
        sample_episode(test.labels, 5, 1, 1, torch.Generator().manual_seed(0))
    with pytest.raises(DafslError, match=r"class 0 has 3 images, fewer than shot\+query=4"):
        EpisodeSampler(test.labels, way=2, shot=1, query=3, n_episodes=10, origin=test.origin)


# -- episodes ------------------------------------------------------------------------
LABELS = torch.tensor([0, 1, 2, 3] * 6 + [4] * 6)  # 5 classes of 6 images, interleaved


def _check_episode(ep, labels, way, shot, query):
    assert ep.support_idx.dtype == torch.int64 and ep.query_idx.dtype == torch.int64
    assert ep.support_labels.tolist() == [i for i in range(way) for _ in range(shot)]
    assert ep.query_labels.tolist() == [i for i in range(way) for _ in range(query)]
    assert not set(ep.support_idx.tolist()) & set(ep.query_idx.tolist())
    original = []
    for i in range(way):  # every new label i maps to one original class, in support and query
        s = labels[ep.support_idx[ep.support_labels == i]].unique()
        q = labels[ep.query_idx[ep.query_labels == i]].unique()
        assert len(s) == 1 and torch.equal(s, q)
        original.append(int(s))
    assert len(set(original)) == way


def test_sample_episode_is_balanced_relabelled_and_seeded():
    ep = sample_episode(LABELS, 3, 2, 4, torch.Generator().manual_seed(7))
    _check_episode(ep, LABELS, 3, 2, 4)
    same = sample_episode(LABELS, 3, 2, 4, torch.Generator().manual_seed(7))
    assert torch.equal(ep.support_idx, same.support_idx) and torch.equal(ep.query_idx, same.query_idx)
    others = [sample_episode(LABELS, 3, 2, 4, torch.Generator().manual_seed(s)) for s in range(8, 12)]
    assert any(not torch.equal(ep.query_idx, o.query_idx) for o in others)
    # 5-way with shot + query = all 6 images: every image is used exactly once
    full = sample_episode(LABELS, 5, 1, 5, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([full.support_idx, full.query_idx]).tolist()) == list(range(30))


def test_episode_sampler_is_deterministic_and_resumable():
    s = EpisodeSampler(LABELS, way=4, shot=1, query=3, n_episodes=50, seed=3)
    eps = list(s)
    assert len(s) == len(eps) == 50
    for ep in eps:
        _check_episode(ep, LABELS, 4, 1, 3)
    again = list(EpisodeSampler(LABELS, way=4, shot=1, query=3, n_episodes=50, seed=3))
    assert all(torch.equal(a.query_idx, b.query_idx) for a, b in zip(eps, again))
    assert torch.equal(s[17].support_idx, eps[17].support_idx)  # random access = iteration
    other = list(EpisodeSampler(LABELS, way=4, shot=1, query=3, n_episodes=50, seed=4))
    assert any(not torch.equal(a.query_idx, b.query_idx) for a, b in zip(eps, other))
    s.set_epoch(1)
    assert any(not torch.equal(a.query_idx, b.query_idx) for a, b in zip(eps, s))
    # over many episodes every class is drawn about equally often
    drawn = torch.cat([LABELS[ep.support_idx] for ep in eps])
    assert torch.bincount(drawn).min() >= 30  # 50 episodes x 4 of 5 classes = 40 each on average
    with pytest.raises(IndexError):
        s[50]


def test_glyph_episodes_cover_the_evaluation_split(tmp_path):
    test = load_characters("glyphs_tiny", "test", cache_dir=tmp_path)
    ep = EpisodeSampler(test.labels, 5, 5, 15, n_episodes=1, seed=0, origin=test.origin)[0]
    _check_episode(ep, test.labels, 5, 5, 15)
    assert test.images[ep.query_idx].shape == (75, 1, 28, 28)


def test_baseline_script_reports_accuracy(tmp_path):
    from importlib import util

    spec = util.spec_from_file_location("glyphs_baseline", REPO / "pipelines" / "glyphs_baseline.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    test = load_characters("glyphs_tiny", "test", cache_dir=tmp_path)
    mean, ci = mod.nearest_neighbour_accuracy(test, 5, 1, 5, episodes=50, seed=0)
    assert 0.2 < mean <= 1.0 and 0 < ci < 0.2
    assert fsdata.CharacterSet is type(test)


def test_detection_loader_refuses_character_sets():
    from dafsl.data import load_split

    with pytest.raises(DafslError, match=r"glyphs_tiny\.json: a character set.*load_characters"):
        load_split("glyphs_tiny", "train")
