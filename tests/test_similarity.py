"""Dataset similarity (seed 001, eq. 1) and the ``--kd auto`` decision."""
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial import distance as scipy_distance

from dafsl import similarity
from dafsl.config import load_config
from dafsl.data import denough_dlack, load_split
from dafsl.errors import DafslError
from dafsl.manifest import load_manifest
from dafsl.runs import RunDir

SMOKE = "configs/smoke.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(SMOKE)


@pytest.fixture(scope="module")
def faces():
    return load_split("synthfaces_tiny", "train")


@pytest.fixture(scope="module")
def other_seed_faces(tmp_path_factory):
    """The same generator and split recipe as synthfaces_tiny/train, seeds 7,000,000+."""
    m = json.loads(load_manifest("synthfaces_tiny").path.read_text())
    m["name"] = "synthfaces_other_seeds"
    m["splits"] = {"train": dict(m["splits"]["train"], seed_start=7_000_000,
                                 identity_start=7_000_000)}
    path = tmp_path_factory.mktemp("manifest") / "other.json"
    path.write_text(json.dumps(m))
    return load_split(path, "train")


@pytest.mark.parametrize("p", [1, 2, 3, 4.5])
def test_eq1_matches_scipy_minkowski(p):
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.random(similarity.DESCRIPTOR_SIZE), rng.random(similarity.DESCRIPTOR_SIZE)
        assert similarity.minkowski(x, y, p) == pytest.approx(scipy_distance.minkowski(x, y, p),
                                                              rel=1e-12)


def test_eq1_at_infinity_is_chebyshev():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert similarity.minkowski(x, y, math.inf) == scipy_distance.chebyshev(x, y)
    assert similarity.minkowski(x, y, "inf") == scipy_distance.chebyshev(x, y)


def test_bad_p_and_shape_are_one_line_errors():
    with pytest.raises(DafslError, match="similarity.p"):
        similarity.minkowski([0.0], [1.0], 0.5)
    with pytest.raises(DafslError, match="differ in shape"):
        similarity.minkowski([0.0, 1.0], [1.0], 2)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_similarity_spans_zero_to_one(p):
    # two descriptors as far apart as possible: every histogram block one-hot on
    # different bins, every bounded scalar at 0 vs 1
    blocks = [8, 8, 8, 12, 8, 8, 10]
    a, b = [], []
    for n in blocks:
        a += [1.0] + [0.0] * (n - 1)
        b += [0.0] * (n - 1) + [1.0]
    a += [0.0] * similarity.BOUNDED_SCALARS
    b += [1.0] * similarity.BOUNDED_SCALARS
    assert len(a) == similarity.DESCRIPTOR_SIZE
    assert similarity.similarity(similarity.minkowski(a, b, p), p) == pytest.approx(0.0, abs=1e-12)
    assert similarity.similarity(similarity.minkowski(a, a, p), p) == 1.0


def test_descriptor_is_deterministic_and_bounded(faces):
    d1, d2 = similarity.describe_split(faces), similarity.describe_split(faces)
    assert d1 == d2 and len(d1) == similarity.DESCRIPTOR_SIZE
    assert min(d1) >= 0.0 and max(d1) <= 1.0


def test_same_generator_other_seeds_is_similar_and_pretrained(cfg, faces, other_seed_faces):
    s_cfg = cfg["similarity"]
    src, tgt = similarity.describe_split(other_seed_faces), similarity.describe_split(faces)
    n_faces = len(faces.coco["annotations"])
    out = similarity.compare(src, tgt, n_faces, s_cfg)
    assert out["similarity"] >= s_cfg["similar"]
    assert out["mode"] == "pretrained", out


def test_shapes_source_against_faces_is_dissimilar_and_fixed(cfg, faces):
    s_cfg = cfg["similarity"]
    shapes = load_split("shapes_tiny", "train")
    out = similarity.compare(similarity.describe_split(shapes), similarity.describe_split(faces),
                             len(faces.coco["annotations"]), s_cfg)
    assert out["similarity"] < s_cfg["dissimilar"]
    assert out["mode"] == "fixed", out
    # the separation holds for every exponent: the dissimilar pair is always farther
    for p in (1.0, 2.0, math.inf):
        same = similarity.minkowski(similarity.describe_split(faces), similarity.describe_split(
            load_split("synthfaces_tiny", "val")), p)
        assert similarity.minkowski(similarity.describe_split(shapes),
                                    similarity.describe_split(faces), p) > 2 * same


def test_decision_rule_thresholds_and_target_size():
    s_cfg = {"p": 2.0, "n_objects": 10, "similar": 0.9, "dissimilar": 0.8, "min_target_size": 10}
    assert similarity.decide(0.95, 100, s_cfg)[0] == "pretrained"
    assert similarity.decide(0.9, 100, s_cfg)[0] == "pretrained"  # >= similar
    assert similarity.decide(0.85, 100, s_cfg)[0] == "finetune"
    assert similarity.decide(0.8, 100, s_cfg)[0] == "finetune"  # dissimilar is strict <
    assert similarity.decide(0.79, 100, s_cfg)[0] == "fixed"
    mode, reason = similarity.decide(0.95, 4, s_cfg)  # similar but too few samples
    assert mode == "finetune" and "min_target_size" in reason
    assert similarity.decide(0.85, 4, s_cfg)[0] == "fixed"
    assert similarity.decide(0.5, 4, s_cfg)[0] == "fixed"
    with pytest.raises(DafslError, match="dissimilar <= similar"):
        similarity.compare([0.0], [0.0], 1, dict(s_cfg, dissimilar=0.95))


def test_bootstrap_interval_by_hand():
    # 1-D, p = 1, d_max = 17: two objects 0 and 1 against source 0, s = 1 - 0.5/17. A
    # resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4, so the 2.5 % and
    # 97.5 % points of 1 - mean / 17 are q_lo = 1 - 1/17 and q_hi = 1, and the basic
    # interval [2s - q_hi, 2s - q_lo] is [1 - 1/17, 1] (symmetric case).
    lo, hi = similarity.bootstrap_interval([0.0], np.array([[0.0], [1.0]]), 1.0, 2000, 0.95, seed=0)
    assert (lo, hi) == (pytest.approx(1 - 1 / 17), 1.0)
    assert similarity.bootstrap_interval([0.0], np.array([[0.0], [1.0]]), 1.0, 2000, 0.95, seed=0) == (lo, hi)
    # a skewed case, by hand: objects 0, 0, 0, 1 (s = 1 - 0.25/17); resample means k/4 with
    # k ~ Bin(4, 1/4): P(k=0) = 0.316 > 2.5 %, P(k=4) = 0.004 < 2.5 % < P(k>=3) = 0.051,
    # so q_hi = 1 and q_lo = 1 - 0.75/17; basic [2s - q_hi, 2s - q_lo] =
    # [1 - 0.5/17, 1 + 0.25/17], clipped to [1 - 0.5/17, 1]: above s, the bias removed
    lo, hi = similarity.bootstrap_interval([0.0], np.array([[0.0], [0.0], [0.0], [1.0]]), 1.0, 4000, 0.95, seed=0)
    assert (lo, hi) == (pytest.approx(1 - 0.5 / 17), 1.0)
    # identical objects: no noise, the interval is the point
    same = np.full((10, 3), 0.5)
    lo, hi = similarity.bootstrap_interval([0.0, 0.5, 0.5], same, 2.0, 50, 0.9, seed=3)
    assert lo == hi == pytest.approx(similarity.similarity(0.5, 2.0))


def test_decision_inside_the_noise_is_undecided_with_the_lower_end_fallback():
    s_cfg = {"p": 2.0, "n_objects": 10, "similar": 0.9, "dissimilar": 0.8, "min_target_size": 10,
             "confidence": 0.95}
    # the point estimate alone would say pretrained; the interval spans 0.9
    mode, reason = similarity.decide(0.91, 100, s_cfg, (0.88, 0.93))
    assert mode == "finetune" and reason.startswith("undecided within noise")
    assert "[0.880, 0.930]" in reason and "0.9" in reason and "fallback finetune" in reason
    # an interval across both thresholds falls back to fixed
    assert similarity.decide(0.91, 100, s_cfg, (0.75, 0.95))[0] == "fixed"
    # clear cases decide, and say so
    mode, reason = similarity.decide(0.95, 100, s_cfg, (0.92, 0.97))
    assert mode == "pretrained" and reason == "similar (whole 95% interval [0.920, 0.970] >= 0.9; s 0.950 on all objects)"
    mode, reason = similarity.decide(0.85, 100, s_cfg, (0.81, 0.89))
    assert mode == "finetune" and reason.startswith("in between (whole 95% interval [0.810, 0.890]")
    assert similarity.decide(0.7, 100, s_cfg, (0.6, 0.79))[0] == "fixed"
    # the size rule still applies after the fallback
    assert similarity.decide(0.91, 4, s_cfg, (0.88, 0.93))[0] == "fixed"


def test_compare_with_objects_reports_the_interval_and_undecided():
    s_cfg = {"p": 1.0, "n_objects": 10, "similar": 0.9, "dissimilar": 0.5, "min_target_size": 0,
             "bootstrap": 500, "confidence": 0.95}
    source = [0.0] * 4
    # five objects at distance 0 and five at 0.2 * 17 * 2 = 6.8 (first coordinate):
    # the mean sits at similarity 0.9 exactly, resamples on both sides of it
    noisy = np.zeros((10, 4))
    noisy[5:, 0] = 3.4
    out = similarity.compare(source, noisy.mean(axis=0).tolist(), 10, s_cfg, objects=noisy, seed=1)
    lo, hi = out["similarity_interval"]
    assert lo < 0.9 < hi and out["similarity"] == pytest.approx(0.9)
    assert out["undecided"] and out["mode"] == "finetune" and "undecided within noise" in out["reason"]
    clear = np.zeros((10, 4))
    clear[:, 0] = np.linspace(0.0, 0.2, 10)  # similarities 0.988-1.0: clear of 0.9
    out = similarity.compare(source, clear.mean(axis=0).tolist(), 10, s_cfg, objects=clear, seed=1)
    assert out["similarity_interval"][0] > 0.9 and not out["undecided"] and out["mode"] == "pretrained"
    # bootstrap 0: the point estimate decides, no interval is reported
    out = similarity.compare(source, noisy.mean(axis=0).tolist(), 10, dict(s_cfg, bootstrap=0), objects=noisy)
    assert out["mode"] == "pretrained" and "similarity_interval" not in out
    with pytest.raises(DafslError, match="confidence"):
        similarity.compare(source, source, 10, dict(s_cfg, confidence=1.5), objects=noisy)


def test_descriptor_version_mismatch_is_an_error():
    s_cfg = {"p": 2.0, "n_objects": 10, "similar": 0.9, "dissimilar": 0.8, "min_target_size": 0}
    with pytest.raises(DafslError, match="another descriptor version"):
        similarity.compare([0.0] * 42, [0.0] * similarity.DESCRIPTOR_SIZE, 1, s_cfg)


def _ctx(cfg, tmp_path):
    train = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    info = denough_dlack(train.class_counts(), cfg["data"]["imbalance_threshold"])
    return SimpleNamespace(cfg=cfg, run=RunDir(tmp_path / "run"), split_info=info)


def test_auto_decision_classifier_and_its_log_line(cfg, tmp_path):
    # classifier.source detector: the BDRP was trained on the Denough faces of this split
    ctx = _ctx(dict(cfg, classifier=dict(cfg["classifier"], source="detector")), tmp_path)
    decision = similarity.auto_decision(ctx.cfg, "classifier", ctx.split_info)
    assert decision["mode"] == "pretrained"
    assert set(decision) >= {"source", "distance", "p", "similarity", "mode", "reason"}
    line = similarity.format_decision(decision)
    for part in ("p=2", "distance", "similarity", "-> pretrained"):
        assert part in line
    lo, hi = decision["similarity_interval"]
    assert f"[{lo:.3f}, {hi:.3f}]" in line and lo <= hi
    assert set(decision) >= {"similarity_interval", "confidence", "bootstrap", "undecided"}


def test_auto_decision_detector_uses_the_zoo_descriptor(cfg, tmp_path, monkeypatch):
    # Stand-in for the zoo meta (building the real entry trains a detector): the entry
    # stores the descriptor of its source data, here the shapes set.
    shapes = similarity.describe_split(load_split("shapes_tiny", "train"))
    asked = []
    monkeypatch.setattr(similarity, "zoo_descriptor",
                        lambda c, entry: (asked.append(entry) or f"zoo:{entry}", shapes))
    ctx = _ctx(cfg, tmp_path)
    decision = similarity.auto_decision(ctx.cfg, "detector", ctx.split_info)
    assert asked == ["detector-shapes"] and decision["mode"] == "fixed"
    assert decision["source"].startswith("zoo:")


def test_auto_refuses_a_source_without_descriptor(cfg, tmp_path):
    ctx = _ctx(dict(cfg, transfer=dict(cfg["transfer"], source="imagenet")), tmp_path)
    with pytest.raises(DafslError, match="stores no dataset descriptor"):
        similarity.auto_decision(ctx.cfg, "detector", ctx.split_info)


def test_cli_prints_distance_and_decision():
    proc = subprocess.run([sys.executable, "-m", "dafsl.similarity", "shapes_tiny",
                           "synthfaces_tiny", "--config", SMOKE, "--p", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "p=1" in proc.stdout and "decision    fixed" in proc.stdout
    assert "95% bootstrap interval" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "dafsl.similarity", "shapes_tiny",
                          "synthfaces_tiny", "--config", SMOKE, "--p", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: similarity.p")


def test_pipeline_kd_auto_runs_each_stage_in_its_decided_mode(tmp_path):
    """End to end on the smoke config (builds the smoke zoo entries: seconds)."""
    from dafsl.pipeline import main

    summary = main(["--stage", "all", "--kd", "auto", "--config", SMOKE,
                    "--out", str(tmp_path / "run"), "--quiet"])
    records = RunDir(tmp_path / "run").read_metrics()
    for stage in ("detector", "augmenter", "classifier"):
        decision = summary[stage]["auto"]
        assert decision["mode"] in ("fixed", "finetune", "pretrained")
        assert summary[stage]["mode"] == decision["mode"]
        assert {r["mode"] for r in records if r["stage"] == stage} == {decision["mode"]}
    assert summary["detector"]["auto"]["mode"] == "fixed"  # shapes source vs faces
