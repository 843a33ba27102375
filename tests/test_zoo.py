"""The offline zoo: built once on first use, then cached; keyed by the architecture;
the CLI; and the offline failure of ImageNet sources."""
from __future__ import annotations

import json

import pytest

from dafsl import zoo
from dafsl.config import CONFIG_DIR, load_config
from dafsl.pipeline import main as pipeline_main
from dafsl.runs import load_checkpoint
from dafsl.similarity import DESCRIPTOR_SIZE

SMOKE = str(CONFIG_DIR / "smoke.yaml")


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


def smoke_cfg(root, *overrides: str) -> dict:
    return load_config(SMOKE, [f"zoo.dir={root}", *overrides])


def built(cfg: dict) -> bool:
    return next(r["built"] for r in zoo.list_entries(cfg) if r["name"] == "detector-shapes")


def test_entry_is_built_once_then_cached(zoo_root, monkeypatch):
    cfg = smoke_cfg(zoo_root)
    assert built(cfg) is False
    path, meta = zoo.get("detector-shapes", cfg)
    assert meta["built_now"] is True and meta["build_time_s"] > 0
    assert meta["source_dataset"] == "shapes_tiny" and len(meta["descriptor"]) == DESCRIPTOR_SIZE
    assert path.parent.parent == zoo_root and meta["name"] == "detector-shapes"
    ckpt = load_checkpoint(path)
    assert ckpt["num_classes"] == 5 and "roi_heads.box_predictor.cls_score.weight" in ckpt["model"]
    stamp = path.stat().st_mtime_ns

    import dafsl.detector.zoo as builder

    def must_not_run(*_a, **_k):
        raise AssertionError("the cached entry was rebuilt")

    monkeypatch.setattr(builder, "build_entry", must_not_run)
    path2, meta2 = zoo.get("detector-shapes", cfg)
    assert path2 == path and meta2["built_now"] is False and path.stat().st_mtime_ns == stamp
    assert meta2["created"] == meta["created"] and meta2["build_time_s"] == meta["build_time_s"]
    assert built(cfg) is True


def test_key_follows_architecture_not_transfer_run_settings(zoo_root):
    base = zoo.entry_dir("detector-shapes", smoke_cfg(zoo_root))
    assert zoo.entry_dir("detector-shapes", smoke_cfg(zoo_root, "detector.epochs=7",
                                                      "transfer.lr_factor=0.1")) == base
    assert zoo.entry_dir("detector-shapes", smoke_cfg(zoo_root, "detector.fpn_channels=16")) != base
    assert zoo.entry_dir("detector-shapes", smoke_cfg(zoo_root, "zoo.detector_epochs=2")) != base


def test_cli_list_and_build(zoo_root, capsys):
    rows = zoo.main(["list", "--config", SMOKE, "--set", f"zoo.dir={zoo_root}"])
    assert [r["name"] for r in rows] == list(zoo.ENTRIES)
    assert "detector-shapes" in capsys.readouterr().out
    zoo.main(["build", "detector-shapes", "--config", SMOKE, "--set", f"zoo.dir={zoo_root}",
              "--quiet"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["source_dataset"] == "shapes_tiny" and line["checkpoint"].endswith("checkpoint.pt")
    with pytest.raises(SystemExit) as exit_info:
        zoo.main(["build", "nope", "--config", SMOKE])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: zoo: unknown entry 'nope' (known: ") and "\n" not in err


def test_imagenet_source_offline_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SystemExit) as exit_info:
        pipeline_main(["--stage", "detector", "--kd", "finetune", "--config", SMOKE, "--quiet",
                       "--out", str(tmp_path / "run"), "--set", "transfer.source=imagenet",
                       "--set", "detector.backbone=resnet18"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in err


def test_corrupted_checkpoint_is_detected_and_rebuilt(tmp_path):
    cfg = smoke_cfg(tmp_path)
    path, meta = zoo.get("detector-shapes", cfg)
    assert len(meta["sha256"]) == 64
    data = path.read_bytes()
    path.write_bytes(data[:-100] + bytes(100))  # the last 100 bytes lost
    path2, meta2 = zoo.get("detector-shapes", cfg)
    assert meta2["built_now"] is True and path2 == path
    assert load_checkpoint(path2)["num_classes"] == 5
