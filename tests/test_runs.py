import json
import os
import random

import numpy as np
import pytest
import torch

from dafsl.errors import DafslError
from dafsl.runs import (RunDir, atomic_write_bytes, load_checkpoint, rng_state,
                        save_checkpoint, set_rng_state)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    save_checkpoint({"w": torch.ones(2)}, target)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint({"w": torch.zeros(2)}, target)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(target)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_load_checkpoint_refuses_pickled_code_and_garbage(tmp_path):
    import pickle

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"f": os.getcwd}))
    with pytest.raises(DafslError, match="evil.pt: cannot load checkpoint"):
        load_checkpoint(evil)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DafslError, match="garbage.pt: cannot load checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(DafslError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint({"rng": rng_state()}, tmp_path / "r.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_metrics_log_summary_and_truncate(tmp_path):
    run = RunDir(tmp_path / "run")
    for e in range(3):
        run.log({"stage": "detector", "mode": "vanilla", "epoch": e, "epoch_time_s": 1.0,
                 "wall_clock_s": e + 1.0, "loss": 0.5})
    run.log({"stage": "augmenter", "mode": "vanilla", "epoch": 5, "epoch_time_s": 1.0,
             "wall_clock_s": 1.0})
    with pytest.raises(ValueError, match="lacks"):
        run.log({"stage": "detector", "epoch": 0})
    run.truncate_metrics("detector", 0)
    assert [(r["stage"], r["epoch"]) for r in run.read_metrics()] == [("detector", 0),
                                                                      ("augmenter", 5)]
    run.update_summary("detector", {"map50": 0.5})
    run.update_summary("detector", {"trainable_params": 3})
    assert json.loads(run.summary_path.read_text()) == {
        "detector": {"map50": 0.5, "trainable_params": 3}}


def test_atomic_write_bytes_creates_parents(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b.txt", b"x")
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"x"
