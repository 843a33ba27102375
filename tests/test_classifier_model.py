"""Classifier model: freezing plans per mode, frozen layers staying frozen while training,
architecture mismatches as errors, checkpoint round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dafsl import transfer
from dafsl.classifier.data import FaceSet, classic_augmentation
from dafsl.classifier.distill import build_distiller
from dafsl.classifier.model import (adapt_stem, backbone_blocks, backbone_prefixes,
                                    build_classifier, frozen_modules, load_classifier,
                                    save_classifier)
from dafsl.classifier.trainer import FEATURE_VIEWS, ClassifierTrainer, classifier_scheduler
from dafsl.errors import DafslError


def source_state(seed: int = 1) -> dict:
    """A 'pretrained' resnet10 backbone with plain resnet names (no head), like
    dafsl.detector.model.backbone_state returns."""
    torch.manual_seed(seed)
    net = build_classifier("resnet10")
    with torch.no_grad():  # non-trivial BN statistics, so an update would show
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.9, 1.1)
    return {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}


def test_freezing_plans():
    model = build_classifier("resnet10")
    assert backbone_blocks(model) == [["conv1", "bn1", "act1"], ["maxpool", "layer1"],
                                      ["layer2"], ["layer3"], ["layer4"]]
    assert frozen_modules(model, "fixed", 2) == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    assert frozen_modules(model, "finetune", 2) == ["conv1", "bn1", "act1", "maxpool", "layer1"]
    assert frozen_modules(model, "finetune", 0) == []
    assert frozen_modules(model, "pretrained", 2) == frozen_modules(model, "vanilla", 2) == []
    with pytest.raises(DafslError, match="freeze_at: 5 would freeze every stage"):
        frozen_modules(model, "finetune", 5)
    assert backbone_prefixes(model) == ["conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4."]
    assert sum(1 for _ in model.layer1.children()) == 1  # resnet10: one block per stage


def train_a_few_steps(model) -> None:
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 255, (24, 16, 16, 3), dtype=np.uint8),
                    np.array([0, 1] * 12), np.zeros(24, dtype=bool))
    method = build_distiller("none", model)
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    sched = transfer.build_scheduler(opt, "finetune", {"lr_factor": 0.5, "warmup_steps": 2})
    trainer = ClassifierTrainer("classifier", method, opt, sched, faces, faces, ["male", "female"],
                                "female", seed=0, batch_size=8, input_size=16, balanced=False,
                                epoch_size=None, augment=None)
    for batch in trainer.batches(0):
        trainer.train_step(batch)
    trainer.evaluate(0)  # eval then train again: frozen BN must not wake up
    for batch in trainer.batches(1):
        trainer.train_step(batch)


@pytest.mark.parametrize("mode, frozen_prefixes, trained_prefixes", [
    ("fixed", ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4."), ("fc.",)),
    ("finetune", ("conv1.", "bn1.", "layer1."), ("layer2.", "layer3.", "layer4.", "fc.")),
])
def test_frozen_layers_stay_frozen(mode, frozen_prefixes, trained_prefixes):
    model = build_classifier("resnet10")
    src = source_state()
    report = transfer.apply_mode(model, mode, source_state=src, frozen=frozen_modules(model, mode, 2),
                                 required=backbone_prefixes(model), log=lambda m: None)
    assert report.skipped == [("fc.weight", "missing in source"), ("fc.bias", "missing in source")]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_a_few_steps(model)
    after = model.state_dict()
    for name, value in after.items():
        if name.startswith(frozen_prefixes):  # weights and BN running stats alike
            assert torch.equal(value, before[name]), f"{mode}: {name} changed"
            assert torch.equal(value, src[name]), f"{mode}: {name} is not the source's"
    changed = [n for n in after if n.startswith(trained_prefixes) and n.endswith("weight")
               and not torch.equal(after[n], before[n])]
    assert changed and all(n.startswith(trained_prefixes) for n in changed)
    assert any(n.startswith("fc.") for n in changed)
    if mode == "finetune":  # upper BN layers do update their statistics
        assert not torch.equal(after["layer4.0.bn1.running_mean"], before["layer4.0.bn1.running_mean"])


def test_mismatched_source_is_an_error_naming_the_layer():
    model = build_classifier("resnet18")  # two blocks per stage; the source has one
    with pytest.raises(DafslError, match=r"layer1\.1\.conv1\.weight: required layer does not transfer"):
        transfer.apply_mode(model, "pretrained", source_state=source_state(),
                            required=backbone_prefixes(model), log=lambda m: None)


def test_checkpoint_round_trip(tmp_path):
    model = build_classifier("resnet10").eval()
    path = tmp_path / "c.pt"
    save_classifier(model, path, backbone="resnet10", classes=["male", "female"], input_size=16,
                    crop_size=16)
    again, meta = load_classifier(path)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x), again(x))
    assert meta == {"backbone": "resnet10", "stem": "imagenet", "classes": ["male", "female"],
                    "input_size": 16, "crop_size": 16}
    small = build_classifier("resnet10", stem="small").eval()
    save_classifier(small, path, backbone="resnet10", classes=["male", "female"], input_size=16,
                    crop_size=16, stem="small")
    again, meta = load_classifier(path)
    assert meta["stem"] == "small" and torch.equal(small(x), again(x))
    with pytest.raises(DafslError, match="checkpoint not found"):
        load_classifier(tmp_path / "absent.pt")
    with pytest.raises(DafslError, match="classifier.backbone"):
        build_classifier("no_such_net")


@pytest.mark.parametrize("stem, grid", [("imagenet", 1), ("small", 2), ("cifar", 4)])
def test_stems_keep_more_of_a_32px_face(stem, grid):
    model = build_classifier("resnet10", stem=stem).eval()
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 512, grid, grid)
    assert model.conv1.kernel_size == ((7, 7) if stem == "imagenet" else (3, 3))
    with pytest.raises(DafslError, match="classifier.stem"):
        build_classifier("resnet10", stem="tiny")


def test_small_stem_loads_a_7x7_source_resampled():
    src = source_state()
    src["conv1.weight"] = torch.ones(64, 3, 7, 7)
    src["conv1.weight"][0, 0] = torch.arange(49.0).view(7, 7)
    model = build_classifier("resnet10", stem="small")
    with pytest.raises(DafslError, match=r"conv1\.weight: required layer does not transfer"):
        transfer.apply_mode(model, "fixed", source_state=src, required=backbone_prefixes(model),
                            log=lambda m: None)
    adapted = adapt_stem(model, src)
    assert adapted["conv1.weight"].shape == (64, 3, 3, 3)
    # area resampling 7 -> 3 then x 49/9: every kernel keeps its sum (here 49 and 0+...+48)
    assert torch.allclose(adapted["conv1.weight"][1].sum((1, 2)), torch.full((3,), 49.0))
    assert torch.isclose(adapted["conv1.weight"][0, 0].sum(), torch.tensor(float(sum(range(49)))))
    report = transfer.apply_mode(model, "fixed", source_state=adapted,
                                 required=backbone_prefixes(model), log=lambda m: None)
    assert "conv1.weight" in report.loaded
    assert adapt_stem(build_classifier("resnet10"), src) is src  # same shape: untouched


def test_cosine_schedule_with_warmup_by_hand():
    f = transfer.cosine_decay(10, final=0.0, warmup=2)
    assert [f(0), f(1), f(2), f(6), f(10), f(12)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = {"classifier": {"epoch_size": 16, "batch_size": 8, "epochs": 3, "lr_schedule": "cosine",
                          "warmup_steps": 2},
           "transfer": {"lr_factor": 0.5, "warmup_steps": 4}}
    sched = classifier_scheduler(opt, "vanilla", cfg, train_size=100)  # 3 epochs x 2 steps
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    g = transfer.cosine_decay(6, warmup=2)
    assert lrs == pytest.approx([g(k) for k in range(6)])
    # pretrained: the transfer section's warm-up and factor instead of the classifier's warm-up
    opt.param_groups[0]["lr"] = 1.0
    sched = classifier_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                                 "pretrained", cfg, train_size=100)
    assert sched.get_last_lr()[0] == pytest.approx(0.5 * 0.25 * transfer.cosine_decay(6)(0))


def test_fixed_mode_trains_the_head_on_cached_features_like_the_full_path():
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 255, (24, 16, 16, 3), dtype=np.uint8),
                    np.array([0, 1] * 12), np.zeros(24, dtype=bool))
    heads = []
    for head_only in (True, False):
        model = build_classifier("resnet10")
        transfer.apply_mode(model, "fixed", source_state=source_state(),
                            frozen=frozen_modules(model, "fixed", 2), log=lambda m: None)
        torch.manual_seed(0)
        model.fc.reset_parameters()
        method = build_distiller("none", model)
        opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
        trainer = ClassifierTrainer("classifier", method, opt, transfer.build_scheduler(opt, "fixed", {
            "lr_factor": 1.0, "warmup_steps": 0}), faces, faces, ["male", "female"], "female", seed=0,
            batch_size=8, input_size=16, balanced=True, epoch_size=32, augment=None)
        assert trainer.head_only
        trainer.head_only = head_only
        for epoch in range(2):
            for batch in trainer.batches(epoch):
                assert ("feature" in batch) == head_only
                trainer.train_step(batch)
        heads.append(model.fc.weight.detach().clone())
    assert not torch.equal(heads[0], torch.zeros_like(heads[0]))
    assert torch.allclose(heads[0], heads[1], atol=1e-5)
    # with classic augmentation: the clean view plus FEATURE_VIEWS - 1 augmented ones, seed 0 too
    trainer = ClassifierTrainer("classifier", method, opt, trainer.scheduler, faces, faces,
                                ["male", "female"], "female", seed=0, batch_size=8, input_size=16,
                                balanced=True, epoch_size=32, augment=classic_augmentation(0))
    batch = trainer.batches(0)[0]
    assert trainer.features.shape == (FEATURE_VIEWS, 24, 512) and batch["feature"].shape == (8, 512)
    assert not torch.allclose(trainer.features[0], trainer.features[1])
