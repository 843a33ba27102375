"""Run directories and checkpoints: the one place that writes run state to disk.

A run directory holds::

    config.yaml        resolved configuration
    metrics.jsonl      one JSON object per stage per epoch (see :meth:`RunDir.log`)
    summary.json       {stage: final figures}, rewritten atomically
    data_split.json    the Denough/Dlack split of the training data
    checkpoints/       <stage>_last.pt, written atomically every epoch
    <stage>/           stage outputs (crops, generated faces, plots, reports)

Every write of something that must not be half-written goes through a temporary
file in the same directory followed by :func:`os.replace`, which is atomic on POSIX.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dafsl import dist
from dafsl.config import dump_config, plain
from dafsl.errors import DafslError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """``torch.save`` atomically. Only tensors and plain Python containers, so that
    :func:`load_checkpoint` can use ``weights_only=True`` (config parts are thawed)."""
    buf = io.BytesIO()
    torch.save(plain(obj), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``); problems are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise DafslError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, pickle with code objects, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DafslError(f"{path}: cannot load checkpoint ({first[:200]})") from None
    if not isinstance(obj, dict):
        raise DafslError(f"{path}: checkpoint must hold a dict, got {type(obj).__name__}")
    return obj


def rng_state() -> dict:
    """Python, NumPy and torch global RNG states, in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; CPU runs with the same seed give the same metrics."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class RunDir:
    """A run directory: resolved config, metrics log, summary, checkpoints, stage outputs."""

    def __init__(self, path: str | Path, keep: int = 0, runtime: dict | None = None):
        # Under torchrun, rank 0 writes the run directory; every other rank writes into a
        # private scratch directory inside it (removed by :meth:`close_rank`) and reads
        # rank 0's checkpoints when it resumes (:meth:`shared_checkpoint_path`).
        self.shared = Path(path)
        self.path = self.shared if dist.is_main() else self.shared / ".ranks" / str(dist.rank())
        self.path.mkdir(parents=True, exist_ok=True)
        self.keep = int(keep)  # checkpoints.keep: per-epoch weight files kept (0: none)
        self.runtime = dict(runtime or {})  # the config's runtime section (precision, prefetch)
        self.checkpoints = self.path / "checkpoints"
        self.checkpoints.mkdir(exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"

    @staticmethod
    def default_path(stage: str, mode: str, root: str | Path = "runs") -> Path:
        return Path(root) / f"{stage}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"

    def save_config(self, cfg: dict) -> None:
        dump_config(cfg, self.path / "config.yaml")

    def stage_dir(self, stage: str) -> Path:
        d = self.path / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def checkpoint_path(self, stage: str, name: str = "last") -> Path:
        return self.checkpoints / f"{stage}_{name}.pt"

    def shared_checkpoint_path(self, stage: str, name: str = "last") -> Path:
        """Rank 0's checkpoint (the same as :meth:`checkpoint_path` in one process)."""
        return self.shared / "checkpoints" / f"{stage}_{name}.pt"

    def close_rank(self) -> None:
        """Remove this rank's scratch directory (a no-op on rank 0)."""
        if self.path != self.shared:
            shutil.rmtree(self.path, ignore_errors=True)
            with contextlib.suppress(OSError):  # the last rank out removes .ranks/
                self.path.parent.rmdir()

    # -- metrics -------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append one JSON object to ``metrics.jsonl``. Required keys: ``stage``, ``mode``,
        ``epoch``, ``epoch_time_s``, ``wall_clock_s``; each loss/metric under its own name."""
        missing = {"stage", "mode", "epoch", "epoch_time_s", "wall_clock_s"} - record.keys()
        if missing:
            raise ValueError(f"metrics record lacks {sorted(missing)}")
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def read_metrics(self, stage: str | None = None) -> list[dict]:
        return read_metrics(self.metrics_path, stage)

    def truncate_metrics(self, stage: str, last_epoch: int) -> None:
        """Drop ``stage`` records after ``last_epoch`` (logged before a crash, not checkpointed)."""
        if not self.metrics_path.exists():
            return
        keep = [r for r in read_metrics(self.metrics_path)
                if r.get("stage") != stage or r.get("epoch", -1) <= last_epoch]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep).encode())

    # -- summary -------------------------------------------------------------
    def read_summary(self) -> dict:
        if not self.summary_path.exists():
            return {}
        try:
            return json.loads(self.summary_path.read_text())
        except json.JSONDecodeError:
            raise DafslError(f"{self.summary_path}: invalid JSON") from None

    def update_summary(self, stage: str, values: dict, replace: bool = False) -> dict:
        """Merge ``values`` into ``summary[stage]`` (``replace``: make them the whole
        section) and rewrite ``summary.json`` atomically."""
        summary = self.read_summary()
        if replace:
            summary[stage] = dict(values)
        else:
            summary.setdefault(stage, {}).update(values)
        atomic_write_json(self.summary_path, summary)
        return summary


def prune_checkpoints(run: RunDir, stage: str, keep: int) -> None:
    """Keep the ``keep`` newest ``<stage>_epochN.pt`` of ``run``; delete older ones."""
    found = sorted(((int(p.stem.rsplit("epoch", 1)[1]), p)
                    for p in run.checkpoints.glob(f"{stage}_epoch*.pt")
                    if p.stem.rsplit("epoch", 1)[1].isdigit()), reverse=True)
    for _, p in found[keep:]:
        p.unlink(missing_ok=True)


def read_metrics(path: str | Path, stage: str | None = None) -> list[dict]:
    """Parse a ``metrics.jsonl`` file, optionally keeping one stage."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise DafslError(f"{path}:{i}: invalid JSON line") from None
        if stage is None or rec.get("stage") == stage:
            out.append(rec)
    return out
