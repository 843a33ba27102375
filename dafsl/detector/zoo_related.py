"""Zoo entry ``detector-related``: the detector architecture pretrained on a face set that
is close to the target but not the same (``zoo.detector_related_manifest``, default
``synthfaces_related``: other scene seeds, other identities, both genders balanced and
other nuisance settings), the offline stand-in for a source like the paper's ImageNet
that already knows something about the target. Select it with
``detector.zoo_entry: detector-related``.

Unlike ``detector-shapes`` it is built once with seed 0 whatever the run's seed, like a
downloaded checkpoint: a comparison over seeds then varies the target training only.
The builder is :func:`dafsl.detector.zoo.build_entry` on that manifest.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dafsl.config import thaw
from dafsl.detector import zoo as shapes_zoo

SOURCE_SEED = 0


def _as_source(cfg: dict) -> dict:
    """The config the shapes builder reads, with the related manifest as its source."""
    out = thaw(cfg)
    out["data"]["source_manifest"] = cfg["zoo"]["detector_related_manifest"]
    out["seed"] = SOURCE_SEED
    return out


def entry_key(cfg: dict) -> dict:
    return shapes_zoo.entry_key(_as_source(cfg))


def build_related(cfg: dict, out_dir: Path, device: torch.device) -> dict:
    """Pretrain the detector on the related face set; writes ``out_dir/checkpoint.pt``."""
    return {**shapes_zoo.build_entry(_as_source(cfg), out_dir, device), "seed": SOURCE_SEED}
