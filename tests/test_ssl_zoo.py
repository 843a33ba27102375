"""Zoo entry ``classifier-ssl`` (dafsl/classifier/ssl_zoo.py): registered, built into the
tests' cache, loadable into the classifier's backbone by name through
``classifier.source: zoo``, deterministic, and blind to gender labels. NT-Xent itself is
checked against a hand computation in tests/test_augmenter_quality.py."""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dafsl import stages, transfer, zoo
from dafsl.classifier import ssl_zoo
from dafsl.classifier.model import backbone_prefixes, build_classifier
from dafsl.classifier.train import source_state
from dafsl.config import CONFIG_DIR, load_config
from dafsl.data import Split
from dafsl.runs import load_checkpoint

SMOKE = str(CONFIG_DIR / "smoke.yaml")
ENTRY = "classifier-ssl"
# resnet18 with the small stem, as the default classifier; 16 faces of 16 px, 2 steps
TINY = ["classifier.backbone=resnet18", "classifier.stem=small", "classifier.input_size=16",
        "zoo.ssl_manifest=synthfaces_tiny", "zoo.ssl_max_faces=16", "zoo.ssl_batch_size=8",
        "zoo.ssl_epochs=1", "classifier.source=zoo", f"classifier.zoo_entry={ENTRY}"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(SMOKE, TINY)


@pytest.fixture(scope="module")
def built(cfg):
    return zoo.get(ENTRY, cfg)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_entry_is_registered_and_needed_by_a_zoo_sourced_classifier(cfg):
    assert zoo.ENTRIES[ENTRY] == "dafsl.classifier.ssl_zoo:build_ssl_entry"
    assert ENTRY in stages.STAGES["classifier"].zoo
    assert stages.STAGES["classifier"].zoo_needs(cfg, "fixed") == [ENTRY]
    assert stages.STAGES["classifier"].zoo_needs(cfg, "vanilla") == []


def test_build_goes_to_the_tests_cache_and_records_its_time(built, cfg):
    path, meta = built
    assert Path(os.environ["DAFSL_CACHE"]) in path.parents
    assert meta["built_now"] is True and meta["build_time_s"] > 0
    assert meta["faces"] == 16 and meta["steps"] == 2 and meta["seed"] == ssl_zoo.SOURCE_SEED
    assert meta["source_dataset"].startswith("synthfaces_tiny/train") and "no labels" in meta["source_dataset"]
    assert 0 <= meta["heldout_twin_accuracy"] <= 1
    assert any(r["name"] == ENTRY and r["built"] for r in zoo.list_entries(cfg))


def test_state_loads_into_the_classifier_backbone_with_every_tensor_matched(built, cfg):
    path, _ = built
    model = build_classifier("resnet18", 2, "small")
    loaded, skipped = transfer.load_matching(model, weights(path), backbone_prefixes(model))
    assert sorted(name for name, _ in skipped) == ["fc.bias", "fc.weight"]
    assert set(loaded) == set(model.state_dict()) - {"fc.weight", "fc.bias"}
    # the stage's own path: classifier.source zoo takes the classifier-format state as it is
    state, info = source_state(SimpleNamespace(cfg=cfg), None)
    assert info["source"] == f"zoo:{ENTRY}" and state.keys() == weights(path).keys()


def test_two_builds_with_the_same_seed_give_identical_weights(built, cfg, tmp_path):
    ssl_zoo.build_ssl_entry(cfg, tmp_path, torch.device("cpu"))
    first, second = weights(built[0]), weights(tmp_path / "checkpoint.pt")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_build_never_reads_a_gender_label(built, cfg, tmp_path, monkeypatch):
    """Every label (class attribute, identity, rendered cues) stripped from the splits and
    ``class_of`` made to fail: the build runs and gives the same weights."""
    real_load = ssl_zoo.load_split

    def unlabelled(*args, **kwargs) -> Split:
        split = real_load(*args, **kwargs)
        coco = copy.deepcopy(split.coco)
        for ann in coco["annotations"]:
            for key in ("gender", "identity", "attributes"):
                ann.pop(key, None)
        return dataclasses.replace(split, coco=coco)

    def no_class(self, ann):
        raise AssertionError("the SSL build read a class label")

    seen = []
    real_trainer = ssl_zoo.SimCLRTrainer

    def spy(model, images, val_images, **kwargs):
        seen.append((images, val_images, kwargs))
        return real_trainer(model, images, val_images, **kwargs)

    monkeypatch.setattr(ssl_zoo, "load_split", unlabelled)
    monkeypatch.setattr(Split, "class_of", no_class)
    monkeypatch.setattr(ssl_zoo, "SimCLRTrainer", spy)
    ssl_zoo.build_ssl_entry(cfg, tmp_path, torch.device("cpu"))
    (images, val_images, kwargs), = seen
    assert images.shape == (16, 3, 16, 16) and images.dtype == torch.float32
    assert val_images.ndim == 4 and not any(isinstance(v, torch.Tensor) for v in kwargs.values())
    plain, blind = weights(built[0]), weights(tmp_path / "checkpoint.pt")
    assert all(torch.equal(plain[k], blind[k]) for k in plain)
