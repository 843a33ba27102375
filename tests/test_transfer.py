"""dafsl.transfer on a tiny CNN: freezing (weights and BN statistics), matching loads,
required layers, the pretrained schedule and the checkpoint / ImageNet sources."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dafsl.errors import DafslError
from dafsl.runs import save_checkpoint
from dafsl.transfer import (apply_mode, build_scheduler, freeze_module, is_frozen_norm,
                            load_matching, resolve_source)


def tiny_net(classes: int = 3) -> nn.Sequential:
    torch.manual_seed(classes)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),   # "0": stem
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),   # "1": block
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes)))  # "2": head


def train_steps(model: nn.Module, n: int = 3) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for i in range(n):
        x = torch.randn(6, 3, 10, 10, generator=torch.Generator().manual_seed(i)) * 3 + 1
        loss = nn.functional.cross_entropy(model(x), torch.arange(6) % 3)
        opt.zero_grad()
        loss.backward()
        opt.step()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_freeze_module_keeps_weights_and_bn_statistics_through_train():
    model = tiny_net()
    freeze_module(model[0])
    model.train()  # must not wake the frozen BatchNorm up
    assert not model[0][1].training and is_frozen_norm(model[0][1])
    assert isinstance(model[0][1], nn.BatchNorm2d) and model[1][1].training
    before = snapshot(model)
    train_steps(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("0."))
    assert not torch.equal(before["1.0.weight"], after["1.0.weight"])
    assert not torch.equal(before["1.1.running_mean"], after["1.1.running_mean"])
    assert set(model[0][1].state_dict()) == set(nn.BatchNorm2d(4).state_dict())  # keys unchanged


def test_load_matching_lists_skips_and_errors_on_required_mismatch():
    src, model = tiny_net(classes=5), tiny_net(classes=3)
    loaded, skipped = load_matching(model, src.state_dict(), required=["0", "1"])
    assert "2.2.weight" in dict(skipped) and "(5, 4) in source vs (3, 4) here" in dict(skipped)["2.2.weight"]
    assert all(torch.equal(model.state_dict()[k], src.state_dict()[k]) for k in loaded)
    bad = src.state_dict()
    bad["1.0.weight"] = torch.zeros(4, 4, 5, 5)
    with pytest.raises(DafslError, match=r"1\.0\.weight.*\(4, 4, 5, 5\) in source vs \(4, 4, 3, 3\)"):
        load_matching(tiny_net(), bad, required=["1"])
    del bad["1.0.weight"]
    with pytest.raises(DafslError, match=r"1\.0\.weight.*missing in source"):
        load_matching(tiny_net(), bad, required=["1"])


def test_modes_freeze_what_the_stage_names():
    src = tiny_net(classes=5).state_dict()
    for mode, frozen_expected in [("vanilla", []), ("fixed", ["0", "1"]), ("finetune", ["0"]),
                                  ("pretrained", [])]:
        model = tiny_net()
        init = snapshot(model)
        report = apply_mode(model, mode, source_state=src, frozen=frozen_expected,
                            required=["0", "1"], lr_factor=0.1, log=lambda *_: None)
        assert report.frozen_modules == frozen_expected
        n_frozen = sum(p.numel() for name in frozen_expected for p in model[int(name)].parameters())
        assert report.frozen_params == n_frozen
        assert report.trainable_params + report.frozen_params == sum(p.numel() for p in model.parameters())
        if mode == "vanilla":
            assert all(torch.equal(init[k], v) for k, v in model.state_dict().items())
        else:  # every weight starts equal to the source, except the listed skips
            skipped = dict(report.skipped)
            assert set(skipped) == {"2.2.weight", "2.2.bias"}
            assert all(torch.equal(src[k], v) for k, v in model.state_dict().items() if k not in skipped)
        before = snapshot(model)
        train_steps(model)
        changed = {k.split(".")[0] for k, v in model.state_dict().items()
                   if not torch.equal(before[k], v) and not k.endswith("num_batches_tracked")}
        assert changed == {"0", "1", "2"} - set(frozen_expected)


def test_unknown_mode_and_missing_source_are_errors():
    with pytest.raises(DafslError, match="unknown transfer mode 'auto'"):
        apply_mode(tiny_net(), "auto", source_state=None, log=lambda *_: None)
    with pytest.raises(DafslError, match="needs a source"):
        apply_mode(tiny_net(), "fixed", source_state=None, log=lambda *_: None)


def test_scheduler_warms_up_only_in_pretrained():
    cfg = {"lr_factor": 0.5, "warmup_steps": 4}
    for mode, expected in [("pretrained", [0.125, 0.25, 0.375, 0.5, 0.5]), ("finetune", [1.0] * 5)]:
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = build_scheduler(opt, mode, cfg)
        seen = []
        for _ in range(5):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert seen == pytest.approx(expected)


def test_checkpoint_path_source(tmp_path):
    src = tiny_net(classes=5).state_dict()
    save_checkpoint({"model": src, "source_dataset": "shapes"}, tmp_path / "src.pt")
    state, meta = resolve_source({"transfer": {"source": str(tmp_path / "src.pt")}}, "unused")
    assert meta["source_dataset"] == "shapes" and meta["built_now"] is False
    assert all(torch.equal(state[k], src[k]) for k in src)
    save_checkpoint({"model": {"w": [1, 2]}}, tmp_path / "bad.pt")
    with pytest.raises(DafslError, match="bad.pt: not a state dict"):
        resolve_source({"transfer": {"source": str(tmp_path / "bad.pt")}}, "unused")
    with pytest.raises(DafslError, match="missing.pt: checkpoint not found"):
        resolve_source({"transfer": {"source": str(tmp_path / "missing.pt")}}, "unused")


def test_imagenet_offline_fails_with_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = {"transfer": {"source": "imagenet"}}
    with pytest.raises(DafslError) as err:
        resolve_source(cfg, "unused", arch="resnet18")
    msg = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "\n" not in msg and "offline" in msg
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(DafslError, match=str(tmp_path / "hf" / "models--timm--resnet18")):
        resolve_source(cfg, "unused", arch="timm/resnet18")


def test_imagenet_cached_weights_load(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    net = torchvision.models.resnet18(weights=None)
    save_checkpoint(net.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    state, meta = resolve_source({"transfer": {"source": "imagenet"}}, "unused", arch="resnet18")
    assert meta["source_dataset"] == "imagenet" and torch.equal(state["conv1.weight"], net.conv1.weight)
